//! LiteLLM's router settings: retries, fallbacks, cooldowns and model group aliases, as
//! read from `router_settings` (and the same keys in `litellm_settings`).

use std::time::Duration;

/// LiteLLM's default `allowed_fails`: failures within a minute before a cooldown.
pub const DEFAULT_ALLOWED_FAILS: u32 = 3;
/// LiteLLM's default `cooldown_time`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);
/// LiteLLM's default `max_fallbacks`.
pub const DEFAULT_MAX_FALLBACKS: usize = 5;

/// Which failure a fallback list answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FallbackKind {
    /// Any failure the deployment could be blamed for (`fallbacks`, `default_fallbacks`).
    General,
    /// The prompt did not fit (`context_window_fallbacks`).
    ContextWindow,
    /// The provider's content filter refused (`content_policy_fallbacks`).
    ContentPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RouterSettings {
    /// Extra attempts within a model group after a retryable failure, on another deployment
    /// when the group has one.
    pub num_retries: u32,
    /// Failures of one deployment within a minute that it may have before a cooldown.
    pub allowed_fails: u32,
    pub cooldown_time: Duration,
    /// How many fallback groups one request may try.
    pub max_fallbacks: usize,
    /// `{group: [fallback groups]}` lists, in config order.
    pub fallbacks: Vec<(String, Vec<String>)>,
    pub context_window_fallbacks: Vec<(String, Vec<String>)>,
    pub content_policy_fallbacks: Vec<(String, Vec<String>)>,
    /// Fallbacks for any group without its own entry in `fallbacks`.
    pub default_fallbacks: Vec<String>,
    /// `model_group_alias`: a name clients may use for a group, and whether `/models`
    /// hides it.
    pub model_group_alias: Vec<ModelGroupAlias>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelGroupAlias {
    pub alias: String,
    pub group: String,
    pub hidden: bool,
}

impl Default for RouterSettings {
    fn default() -> Self {
        Self {
            num_retries: 0,
            allowed_fails: DEFAULT_ALLOWED_FAILS,
            cooldown_time: DEFAULT_COOLDOWN,
            max_fallbacks: DEFAULT_MAX_FALLBACKS,
            fallbacks: Vec::new(),
            context_window_fallbacks: Vec::new(),
            content_policy_fallbacks: Vec::new(),
            default_fallbacks: Vec::new(),
            model_group_alias: Vec::new(),
        }
    }
}

impl RouterSettings {
    /// The groups to fall back to, in order, when `group` failed with a failure of `kind`.
    /// A context-window or content-policy failure without its own list uses the general one.
    pub fn fallbacks_for(&self, group: &str, kind: FallbackKind) -> &[String] {
        let specific = match kind {
            FallbackKind::General => None,
            FallbackKind::ContextWindow => find_list(&self.context_window_fallbacks, group),
            FallbackKind::ContentPolicy => find_list(&self.content_policy_fallbacks, group),
        };
        specific.or_else(|| find_list(&self.fallbacks, group)).unwrap_or(&self.default_fallbacks)
    }
}

fn find_list<'s>(lists: &'s [(String, Vec<String>)], group: &str) -> Option<&'s [String]> {
    lists.iter().find(|(from, _)| from == group).map(|(_, to)| to.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specific_lists_win_then_general_then_default() {
        let settings = RouterSettings {
            fallbacks: vec![("a".into(), vec!["b".into()])],
            context_window_fallbacks: vec![("a".into(), vec!["a-long".into()])],
            default_fallbacks: vec!["z".into()],
            ..RouterSettings::default()
        };
        assert_eq!(settings.fallbacks_for("a", FallbackKind::ContextWindow), ["a-long"]);
        assert_eq!(settings.fallbacks_for("a", FallbackKind::ContentPolicy), ["b"]);
        assert_eq!(settings.fallbacks_for("a", FallbackKind::General), ["b"]);
        assert_eq!(settings.fallbacks_for("q", FallbackKind::General), ["z"]);
    }
}
