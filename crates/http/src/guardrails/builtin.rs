//! The built-in guardrails: LiteLLM's content filter (patterns and blocked words, with the
//! key's and team's own word lists), PII masking, message trimming and prompt limits.

use regex::Regex;
use serde_json::Value;
use tollgate_domain::config::{
    BlockedWord, ContentFilterConfig, FilterAction, PiiMaskingConfig, PromptLimitsConfig, TrimmingConfig,
};
use tollgate_domain::pii::{self, KindSet, Masker, PiiKind};
use tollgate_domain::{tokens, trim};

use super::{CallContext, GuardedAnswer, GuardedRequest, Guardrail, Verdict, all_texts};

/// The regex of each of LiteLLM's prebuilt content-filter patterns.
fn prebuilt(name: &str) -> Option<&'static str> {
    Some(match name {
        "us_ssn" => r"\b\d{3}-\d{2}-\d{4}\b",
        "email" => r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b",
        "phone" => r"(?:\+\d{1,3}[-.\s]?)?\(?\b\d{3}\)?[-.\s]\d{3}[-.\s]\d{4}\b",
        "visa" => r"\b4\d{3}[-\s]?\d{4}[-\s]?\d{4}[-\s]?\d{4}\b",
        "mastercard" => r"\b5[1-5]\d{2}[-\s]?\d{4}[-\s]?\d{4}[-\s]?\d{4}\b",
        "amex" => r"\b3[47]\d{2}[-\s]?\d{6}[-\s]?\d{5}\b",
        "aws_access_key" => r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
        "aws_secret_key" => r"\b[A-Za-z0-9/+]{40}\b",
        "github_token" => r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{36}\b",
        _ => return None,
    })
}

/// One compiled rule: a pattern or a blocked word.
#[derive(Debug)]
struct Rule {
    name: String,
    regex: Regex,
    action: FilterAction,
    /// What a masked match becomes.
    tag: String,
    /// A blocked word (reported as a keyword, not a pattern).
    keyword: bool,
}

/// `litellm_content_filter`.
#[derive(Debug)]
pub(super) struct ContentFilter {
    rules: Vec<Rule>,
    keyword_tag: String,
}

impl ContentFilter {
    pub(super) fn new(config: &ContentFilterConfig) -> Result<Self, String> {
        let format = config.pattern_redaction_format.as_deref().unwrap_or("[{pattern_name}_REDACTED]");
        let keyword_tag =
            config.keyword_redaction_tag.clone().unwrap_or_else(|| "[KEYWORD_REDACTED]".to_owned());
        let mut rules = Vec::new();
        for pattern in &config.patterns {
            let source = match &pattern.regex {
                Some(custom) => custom.as_str(),
                None => prebuilt(&pattern.name)
                    .ok_or_else(|| format!("unknown prebuilt pattern '{}'", pattern.name))?,
            };
            let regex = Regex::new(source)
                .map_err(|e| format!("pattern '{}' is not a valid regex: {e}", pattern.name))?;
            rules.push(Rule {
                name: pattern.name.clone(),
                regex,
                action: pattern.action,
                tag: format.replace("{pattern_name}", &pattern.name.to_uppercase()),
                keyword: false,
            });
        }
        for word in &config.blocked_words {
            rules.push(word_rule(word, &keyword_tag)?);
        }
        Ok(Self { rules, keyword_tag })
    }

    /// The words the key's and the team's metadata add (`blocked_words`).
    fn caller_rules(&self, context: &CallContext<'_>) -> Vec<Rule> {
        let mut rules = Vec::new();
        for metadata in [context.key_metadata, context.team_metadata].into_iter().flatten() {
            let Some(value) = metadata.get("blocked_words") else { continue };
            match tollgate_domain::config::blocked_words(Some(value), "metadata.blocked_words") {
                Ok(words) => {
                    rules.extend(words.iter().filter_map(|word| word_rule(word, &self.keyword_tag).ok()))
                }
                Err(error) => {
                    tracing::warn!(%error, "ignoring unreadable blocked_words in key or team metadata")
                }
            }
        }
        rules
    }

    fn apply(&self, context: &CallContext<'_>, texts: Vec<&mut String>) -> Verdict {
        let caller = self.caller_rules(context);
        let mut modified = false;
        for text in texts {
            for rule in self.rules.iter().chain(&caller) {
                if !rule.regex.is_match(text) {
                    continue;
                }
                match rule.action {
                    FilterAction::Block if rule.keyword => {
                        return Verdict::Block(format!("blocked keyword '{}' detected", rule.name));
                    }
                    FilterAction::Block => return Verdict::Block(format!("{} pattern detected", rule.name)),
                    FilterAction::Mask => {
                        *text = rule.regex.replace_all(text, rule.tag.as_str()).into_owned();
                        modified = true;
                    }
                }
            }
        }
        if modified { Verdict::Modified } else { Verdict::Allow }
    }
}

/// A blocked word as a case-insensitive match of the whole word.
fn word_rule(word: &BlockedWord, tag: &str) -> Result<Rule, String> {
    let escaped = regex::escape(&word.keyword);
    let starts = word.keyword.chars().next().is_some_and(|c| c.is_alphanumeric() || c == '_');
    let ends = word.keyword.chars().last().is_some_and(|c| c.is_alphanumeric() || c == '_');
    let source = format!("(?i){}{escaped}{}", if starts { r"\b" } else { "" }, if ends { r"\b" } else { "" });
    Ok(Rule {
        name: word.keyword.clone(),
        regex: Regex::new(&source).map_err(|e| format!("blocked word '{}': {e}", word.keyword))?,
        action: word.action,
        tag: tag.to_owned(),
        keyword: true,
    })
}

#[async_trait::async_trait]
impl Guardrail for ContentFilter {
    async fn pre_call(&self, request: &mut GuardedRequest<'_>) -> Verdict {
        let context = request.context;
        self.apply(&context, all_texts(request.messages))
    }

    async fn post_call(&self, answer: &mut GuardedAnswer<'_>) -> Verdict {
        let context = answer.context;
        self.apply(&context, answer.texts.iter_mut().collect())
    }

    async fn on_stream_chunk(&self, context: &CallContext<'_>, delta: &str) -> Verdict {
        let mut copy = delta.to_owned();
        match self.apply(context, vec![&mut copy]) {
            blocked @ Verdict::Block(_) => blocked,
            _ => Verdict::Allow,
        }
    }
}

/// `prompt_limits`: the prompt's size in characters or tokens, and a `max_tokens` cap.
#[derive(Debug)]
pub(super) struct PromptLimits {
    config: PromptLimitsConfig,
}

impl PromptLimits {
    pub(super) fn new(config: &PromptLimitsConfig) -> Self {
        Self { config: config.clone() }
    }
}

#[async_trait::async_trait]
impl Guardrail for PromptLimits {
    async fn pre_call(&self, request: &mut GuardedRequest<'_>) -> Verdict {
        if let Some(limit) = self.config.max_prompt_chars {
            let chars: usize = all_texts(request.messages).iter().map(|text| text.chars().count()).sum();
            if chars as u64 > limit {
                return Verdict::Block(format!("the prompt is {chars} characters; the limit is {limit}"));
            }
        }
        if let Some(limit) = self.config.max_prompt_tokens {
            let messages = Value::Array(std::mem::take(request.messages));
            let count = tokens::count_chat(request.context.encoding, &messages, None);
            if let Value::Array(messages) = messages {
                *request.messages = messages;
            }
            if count > limit {
                return Verdict::Block(format!("the prompt is {count} tokens; the limit is {limit}"));
            }
        }
        let Some(cap) = self.config.max_tokens else { return Verdict::Allow };
        match *request.max_tokens {
            Some(asked) if asked <= cap => Verdict::Allow,
            Some(asked) if self.config.block_over_max_tokens => {
                Verdict::Block(format!("max_tokens {asked} is above the limit of {cap}"))
            }
            // Over the cap, or unset (the model's own default may be far larger): the cap.
            _ => {
                *request.max_tokens = Some(cap);
                Verdict::Modified
            }
        }
    }
}

/// The placeholders a PII guardrail gave, kept from the request to its answer
/// (`output_parse_pii`).
#[derive(Debug, Clone, Default)]
struct PiiVault(Vec<(String, String)>);

/// `pii_masking`: the kinds set to `BLOCK` stop the request, the others are replaced by
/// Presidio's `<ENTITY_TYPE>` placeholders; with `output_parse_pii` the answer gets the
/// originals back.
#[derive(Debug)]
pub(super) struct PiiMasking {
    block: KindSet,
    mask: KindSet,
    output_parse_pii: bool,
}

impl PiiMasking {
    pub(super) fn new(config: &PiiMaskingConfig) -> Result<Self, String> {
        let (mut block, mut mask) = (KindSet::EMPTY, KindSet::EMPTY);
        if config.entities.is_empty() {
            mask = KindSet::ALL;
        }
        for (entity, action) in &config.entities {
            let kind: PiiKind = entity.parse().map_err(|e: pii::UnknownPiiKind| e.to_string())?;
            match action {
                FilterAction::Block => block.insert(kind),
                FilterAction::Mask => mask.insert(kind),
            }
        }
        Ok(Self { block, mask, output_parse_pii: config.output_parse_pii })
    }

    /// Blocks on a `BLOCK` kind, else masks the others; the placeholders go to `vault`.
    fn apply(&self, texts: Vec<&mut String>, vault: Option<&mut PiiVault>) -> Verdict {
        let mut masker = Masker::new(self.mask);
        let mut modified = false;
        for text in texts {
            if !self.block.is_empty()
                && let Some(finding) = pii::find(text, self.block).first()
            {
                return Verdict::Block(format!("{} detected", finding.kind));
            }
            if !self.mask.is_empty()
                && let Some(masked) = masker.mask(text)
            {
                *text = masked;
                modified = true;
            }
        }
        if let Some(vault) = vault {
            vault.0.extend(masker.into_tokens());
        }
        if modified { Verdict::Modified } else { Verdict::Allow }
    }
}

#[async_trait::async_trait]
impl Guardrail for PiiMasking {
    async fn pre_call(&self, request: &mut GuardedRequest<'_>) -> Verdict {
        let vault =
            if self.output_parse_pii { Some(request.memo.get_or_insert_default::<PiiVault>()) } else { None };
        self.apply(all_texts(request.messages), vault)
    }

    /// With `output_parse_pii`, the originals back in place of the placeholders; without,
    /// the answer's own PII blocked or masked like the request's.
    async fn post_call(&self, answer: &mut GuardedAnswer<'_>) -> Verdict {
        if !self.output_parse_pii {
            return self.apply(answer.texts.iter_mut().collect(), None);
        }
        let Some(vault) = answer.memo.get::<PiiVault>().filter(|vault| !vault.0.is_empty()) else {
            return Verdict::Allow;
        };
        let mut modified = false;
        for text in answer.texts.iter_mut() {
            let unmasked = pii::unmask(text, &vault.0);
            if unmasked != *text {
                *text = unmasked;
                modified = true;
            }
        }
        if modified { Verdict::Modified } else { Verdict::Allow }
    }
}

/// `message_trimming`: the conversation cut to the model's context window as LiteLLM's
/// `trim_messages` cuts it (system messages and the newest turn kept, the oldest turns
/// dropped first, an oversized newest message cut in the middle with a marker).
#[derive(Debug)]
pub(super) struct Trimming {
    config: TrimmingConfig,
}

impl Trimming {
    pub(super) fn new(config: &TrimmingConfig) -> Self {
        Self { config: config.clone() }
    }
}

#[async_trait::async_trait]
impl Guardrail for Trimming {
    async fn pre_call(&self, request: &mut GuardedRequest<'_>) -> Verdict {
        let budget = match (self.config.max_input_tokens, request.context.context_window) {
            // A fixed budget is LiteLLM's `trim_messages(max_tokens=…)`: the input budget itself.
            (Some(budget), _) => budget,
            (None, Some(window)) => trim::input_budget(window, *request.max_tokens, self.config.trim_ratio),
            (None, None) => {
                tracing::debug!(model = request.context.model, "no context window known: nothing to trim to");
                return Verdict::Allow;
            }
        };
        let trimmed = trim::trim_messages(request.messages, None, request.context.encoding, budget);
        if !trimmed.fits {
            return Verdict::Block(format!(
                "the system prompt and the newest message do not fit {budget} prompt tokens even trimmed"
            ));
        }
        match trimmed.messages {
            Some(messages) => {
                tracing::debug!(dropped = trimmed.dropped, cut = trimmed.cut, budget, "conversation trimmed");
                *request.messages = messages;
                Verdict::Modified
            }
            None => Verdict::Allow,
        }
    }
}
