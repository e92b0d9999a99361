//! LiteLLM's router settings: the routing strategy, retries and their per-error policies,
//! fallbacks, cooldowns, pre-call checks and model group aliases, as read from
//! `router_settings` (and, for the older keys, the same keys in `litellm_settings`).

use std::time::Duration;

use crate::{ErrorKind, GatewayError};

/// LiteLLM's default `allowed_fails`: failures within a minute before a cooldown.
pub const DEFAULT_ALLOWED_FAILS: u32 = 3;
/// LiteLLM's default `cooldown_time`.
pub const DEFAULT_COOLDOWN: Duration = Duration::from_secs(5);
/// LiteLLM's default `max_fallbacks`.
pub const DEFAULT_MAX_FALLBACKS: usize = 5;
/// LiteLLM's default `routing_strategy_args.ttl` for latency-based routing: one hour.
pub const DEFAULT_LATENCY_TTL: Duration = Duration::from_secs(3600);
/// LiteLLM's default `routing_strategy_args.max_latency_list_size`.
pub const DEFAULT_LATENCY_SAMPLES: usize = 10;
/// LiteLLM's default `general_settings.health_check_interval`.
pub const DEFAULT_HEALTH_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// How a deployment is chosen among the available ones of a group (`routing_strategy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RoutingStrategy {
    /// A random pick weighted by `weight`, else `rpm`, else `tpm`.
    #[default]
    SimpleShuffle,
    /// The deployment with the fewest requests in flight.
    LeastBusy,
    /// The deployment with the lowest recent latency (time to first token for streams).
    LatencyBased,
    /// The deployment that used the fewest tokens this minute, within its rpm and tpm.
    UsageBased,
    /// The deployment with the lowest price per token.
    CostBased,
}

impl RoutingStrategy {
    /// The names `routing_strategy` accepts, as LiteLLM spells them.
    pub const NAMES: &[&str] = &[
        "simple-shuffle",
        "least-busy",
        "latency-based-routing",
        "usage-based-routing-v2",
        "usage-based-routing",
        "cost-based-routing",
    ];

    /// The strategy LiteLLM calls `name`. LiteLLM's older `usage-based-routing` is served
    /// by the same rules as `usage-based-routing-v2`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "simple-shuffle" => Self::SimpleShuffle,
            "least-busy" => Self::LeastBusy,
            "latency-based-routing" => Self::LatencyBased,
            "usage-based-routing-v2" | "usage-based-routing" => Self::UsageBased,
            "cost-based-routing" => Self::CostBased,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::SimpleShuffle => "simple-shuffle",
            Self::LeastBusy => "least-busy",
            Self::LatencyBased => "latency-based-routing",
            Self::UsageBased => "usage-based-routing-v2",
            Self::CostBased => "cost-based-routing",
        }
    }
}

/// `routing_strategy_args` (read by latency-based routing).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StrategyArgs {
    /// Deployments whose latency is within this fraction above the lowest share the traffic
    /// (`0.5`: up to 50 % slower than the fastest).
    pub lowest_latency_buffer: f64,
    /// How long a latency sample counts.
    pub ttl: Duration,
    /// How many recent samples per deployment are averaged.
    pub max_latency_list_size: usize,
}

impl Default for StrategyArgs {
    fn default() -> Self {
        Self {
            lowest_latency_buffer: 0.0,
            ttl: DEFAULT_LATENCY_TTL,
            max_latency_list_size: DEFAULT_LATENCY_SAMPLES,
        }
    }
}

/// The kinds of failure `retry_policy` and `allowed_fails_policy` distinguish, named after
/// LiteLLM's exception classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureClass {
    /// A 400-range answer that says the request is wrong (`BadRequestError`), including a
    /// prompt too long for the model.
    BadRequest,
    /// 401 from the provider (`AuthenticationError`).
    Authentication,
    /// No answer within the deployment's timeout, or a 408 (`Timeout`).
    Timeout,
    /// 429 from the provider (`RateLimitError`).
    RateLimit,
    /// The provider's content filter refused (`ContentPolicyViolationError`).
    ContentPolicyViolation,
    /// A 5xx from the provider (`InternalServerError`).
    InternalServer,
}

impl FailureClass {
    pub const ALL: [Self; 6] = [
        Self::BadRequest,
        Self::Authentication,
        Self::Timeout,
        Self::RateLimit,
        Self::ContentPolicyViolation,
        Self::InternalServer,
    ];

    /// The class of `error`, or `None` for failures no policy names (a connection that
    /// could not be made, 403, 404, the gateway's own refusals).
    pub fn of(error: &GatewayError) -> Option<Self> {
        if matches!(error.upstream_code.as_deref(), Some("content_filter" | "content_policy_violation")) {
            return Some(Self::ContentPolicyViolation);
        }
        match error.kind {
            ErrorKind::Timeout | ErrorKind::Upstream(408) => Some(Self::Timeout),
            ErrorKind::Upstream(401) => Some(Self::Authentication),
            ErrorKind::Upstream(429) => Some(Self::RateLimit),
            ErrorKind::Upstream(403 | 404) => None,
            ErrorKind::Upstream(400..=499) | ErrorKind::BadRequest => Some(Self::BadRequest),
            ErrorKind::Upstream(500..) => Some(Self::InternalServer),
            _ => None,
        }
    }

    /// The prefix of the policy keys: `BadRequest` in `BadRequestErrorRetries`.
    pub fn litellm_name(self) -> &'static str {
        match self {
            Self::BadRequest => "BadRequest",
            Self::Authentication => "Authentication",
            Self::Timeout => "Timeout",
            Self::RateLimit => "RateLimit",
            Self::ContentPolicyViolation => "ContentPolicyViolation",
            Self::InternalServer => "InternalServer",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

/// A number per [`FailureClass`], each optional: `retry_policy` (`…ErrorRetries`) and
/// `allowed_fails_policy` (`…ErrorAllowedFails`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FailurePolicy([Option<u32>; 6]);

impl FailurePolicy {
    pub fn get(&self, class: FailureClass) -> Option<u32> {
        self.0[class.index()]
    }

    pub fn set(&mut self, class: FailureClass, value: u32) {
        self.0[class.index()] = Some(value);
    }

    /// The entry for `error`'s class, when the policy has one.
    pub fn for_error(&self, error: &GatewayError) -> Option<u32> {
        FailureClass::of(error).and_then(|class| self.get(class))
    }

    pub fn is_empty(&self) -> bool {
        self.0.iter().all(Option::is_none)
    }
}

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
    /// How a deployment is chosen within a group (`routing_strategy`).
    pub routing_strategy: RoutingStrategy,
    /// `routing_strategy_args`.
    pub strategy_args: StrategyArgs,
    /// Extra attempts within a model group after a retryable failure, on another deployment
    /// when the group has one.
    pub num_retries: u32,
    /// Retries per kind of failure, in place of `num_retries` for that kind (`retry_policy`).
    pub retry_policy: FailurePolicy,
    /// `model_group_retry_policy`: a group's own policy, used instead of `retry_policy`.
    pub model_group_retry_policy: Vec<(String, FailurePolicy)>,
    /// The least time to wait before a retry (`retry_after`).
    pub retry_after: Duration,
    /// Failures of one deployment within a minute that it may have before a cooldown.
    pub allowed_fails: u32,
    /// `allowed_fails` per kind of failure (`allowed_fails_policy`).
    pub allowed_fails_policy: FailurePolicy,
    pub cooldown_time: Duration,
    /// Skip deployments whose context window cannot hold the prompt
    /// (`enable_pre_call_checks`); the prompt's tokens are counted only when this is on.
    pub enable_pre_call_checks: bool,
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
    /// What background health checks do to routing (`general_settings`).
    pub health_check_routing: HealthCheckRouting,
}

/// LiteLLM's health-check driven routing (`general_settings.enable_health_check_routing`,
/// `health_check_staleness_threshold`, `health_check_ignore_transient_errors`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthCheckRouting {
    /// Deployments whose last background check failed are left out while others are
    /// available (or, with an `allowed_fails_policy`, the failures count towards cooldowns).
    pub enabled: bool,
    /// How long a failed check keeps a deployment out when no later check says otherwise.
    pub staleness: Duration,
    /// A 429 or a timeout from a check changes nothing.
    pub ignore_transient_errors: bool,
}

impl Default for HealthCheckRouting {
    fn default() -> Self {
        Self { enabled: false, staleness: 2 * DEFAULT_HEALTH_CHECK_INTERVAL, ignore_transient_errors: false }
    }
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
            routing_strategy: RoutingStrategy::default(),
            strategy_args: StrategyArgs::default(),
            num_retries: 0,
            retry_policy: FailurePolicy::default(),
            model_group_retry_policy: Vec::new(),
            retry_after: Duration::ZERO,
            allowed_fails: DEFAULT_ALLOWED_FAILS,
            allowed_fails_policy: FailurePolicy::default(),
            cooldown_time: DEFAULT_COOLDOWN,
            enable_pre_call_checks: false,
            max_fallbacks: DEFAULT_MAX_FALLBACKS,
            fallbacks: Vec::new(),
            context_window_fallbacks: Vec::new(),
            content_policy_fallbacks: Vec::new(),
            default_fallbacks: Vec::new(),
            model_group_alias: Vec::new(),
            health_check_routing: HealthCheckRouting::default(),
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

    /// The retry policy of `group`: its own in `model_group_retry_policy`, else `retry_policy`.
    pub fn retry_policy_for(&self, group: &str) -> &FailurePolicy {
        self.model_group_retry_policy
            .iter()
            .find(|(name, _)| name == group)
            .map_or(&self.retry_policy, |(_, policy)| policy)
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

    #[test]
    fn strategies_go_by_litellm_names() {
        for name in RoutingStrategy::NAMES {
            let strategy = RoutingStrategy::from_name(name).unwrap();
            assert!(name.starts_with(strategy.name().trim_end_matches("-v2")), "{name}");
        }
        assert_eq!(RoutingStrategy::from_name("usage-based-routing"), Some(RoutingStrategy::UsageBased));
        assert_eq!(RoutingStrategy::from_name("round-robin"), None);
    }

    #[test]
    fn failures_fall_into_litellm_classes() {
        let upstream = |status| GatewayError::new(ErrorKind::Upstream(status), "x");
        assert_eq!(FailureClass::of(&upstream(400)), Some(FailureClass::BadRequest));
        assert_eq!(FailureClass::of(&upstream(401)), Some(FailureClass::Authentication));
        assert_eq!(FailureClass::of(&upstream(429)), Some(FailureClass::RateLimit));
        assert_eq!(FailureClass::of(&upstream(503)), Some(FailureClass::InternalServer));
        assert_eq!(FailureClass::of(&upstream(404)), None);
        assert_eq!(
            FailureClass::of(&GatewayError::new(ErrorKind::Timeout, "t")),
            Some(FailureClass::Timeout)
        );
        assert_eq!(FailureClass::of(&GatewayError::new(ErrorKind::UpstreamConnection, "c")), None);
        let mut refused = upstream(400);
        refused.upstream_code = Some("content_policy_violation".into());
        assert_eq!(FailureClass::of(&refused), Some(FailureClass::ContentPolicyViolation));
    }

    #[test]
    fn a_group_policy_replaces_the_global_one() {
        let mut global = FailurePolicy::default();
        global.set(FailureClass::RateLimit, 4);
        let mut own = FailurePolicy::default();
        own.set(FailureClass::Timeout, 1);
        let settings = RouterSettings {
            retry_policy: global,
            model_group_retry_policy: vec![("gp".into(), own)],
            ..RouterSettings::default()
        };
        assert_eq!(settings.retry_policy_for("gp").get(FailureClass::RateLimit), None);
        assert_eq!(settings.retry_policy_for("gp").get(FailureClass::Timeout), Some(1));
        assert_eq!(settings.retry_policy_for("other").get(FailureClass::RateLimit), Some(4));
        assert!(FailurePolicy::default().is_empty() && !global.is_empty());
    }
}
