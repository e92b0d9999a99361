//! LiteLLM's `guardrails:` section: each entry's name, type (`litellm_params.guardrail`),
//! modes, `default_on` and type-specific parameters, plus the per-model
//! `litellm_params.guardrails` lists.
//!
//! A guardrail that is configured but cannot run is a compliance hole, so an unknown type
//! (another vendor's, or a Python class path) stops start-up with a message naming what this
//! build offers instead; nothing here is put on the `unsupported` list to be skipped.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{ConfigError, Reader, as_object, invalid, scalar_to_string};
use crate::secret::Secret;

/// The guardrail types this build runs (the `litellm_params.guardrail` values).
pub const GUARDRAIL_TYPES: &[&str] =
    &["litellm_content_filter", "pii_masking", "message_trimming", "prompt_limits", "generic_guardrail_api"];

/// How long a webhook guardrail may take unless `timeout` says otherwise.
pub const DEFAULT_WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// The content filter's prebuilt pattern names (LiteLLM's).
pub const PREBUILT_PATTERNS: &[&str] = &[
    "us_ssn",
    "email",
    "phone",
    "visa",
    "mastercard",
    "amex",
    "aws_access_key",
    "aws_secret_key",
    "github_token",
];

/// Every configured guardrail, in config order, and the per-model lists.
#[derive(Debug, Clone, Default)]
pub struct GuardrailsConfig {
    pub guardrails: Vec<GuardrailConfig>,
    /// `model_list[].litellm_params.guardrails`: (model_name, guardrail names) that run on
    /// every request to that model group.
    pub per_model: Vec<(String, Vec<String>)>,
}

impl GuardrailsConfig {
    pub fn is_empty(&self) -> bool {
        self.guardrails.is_empty()
    }
}

/// One `guardrails:` entry.
#[derive(Debug, Clone)]
pub struct GuardrailConfig {
    /// `guardrail_name`: what requests, keys and teams select it by.
    pub name: String,
    pub kind: GuardrailKind,
    /// `mode`: one or several (LiteLLM accepts a string or a list).
    pub modes: Vec<GuardrailMode>,
    /// `default_on`: runs on every request, unless the key or team sets
    /// `disable_global_guardrails`.
    pub default_on: bool,
    /// `guardrail_info`: free-form, echoed by `/guardrails/list`.
    pub info: Option<Value>,
    /// The `litellm_params` as written, secrets left out, for `/guardrails/list`.
    pub params_for_display: Map<String, Value>,
}

/// When a guardrail runs (LiteLLM's `mode` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GuardrailMode {
    /// On the request, before it goes upstream; may change it.
    PreCall,
    /// On the request, while the upstream call runs; a violation cancels the call.
    DuringCall,
    /// On the answer (a stream's assembled text), before the client receives it.
    PostCall,
    /// On what is logged only: the request goes upstream unchanged.
    LoggingOnly,
}

impl GuardrailMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreCall => "pre_call",
            Self::DuringCall => "during_call",
            Self::PostCall => "post_call",
            Self::LoggingOnly => "logging_only",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "pre_call" => Self::PreCall,
            "during_call" => Self::DuringCall,
            "post_call" => Self::PostCall,
            "logging_only" => Self::LoggingOnly,
            _ => return None,
        })
    }
}

/// What a guardrail does, with its parameters.
#[derive(Debug, Clone)]
pub enum GuardrailKind {
    /// `litellm_content_filter`: prebuilt and custom regex patterns and blocked words.
    ContentFilter(ContentFilterConfig),
    /// `pii_masking` (Tollgate): emails, phones, cards, IBANs, IPs and API keys, with
    /// Presidio's `pii_entities_config` and `output_parse_pii`.
    PiiMasking(PiiMaskingConfig),
    /// `message_trimming` (Tollgate): trims the conversation to the model's context window.
    MessageTrimming(TrimmingConfig),
    /// `prompt_limits` (Tollgate): maximum prompt size and `max_tokens` cap.
    PromptLimits(PromptLimitsConfig),
    /// `generic_guardrail_api`: LiteLLM's webhook contract.
    Webhook(WebhookConfig),
}

impl GuardrailKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::ContentFilter(_) => "litellm_content_filter",
            Self::PiiMasking(_) => "pii_masking",
            Self::MessageTrimming(_) => "message_trimming",
            Self::PromptLimits(_) => "prompt_limits",
            Self::Webhook(_) => "generic_guardrail_api",
        }
    }
}

/// `BLOCK` or `MASK`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterAction {
    Block,
    Mask,
}

#[derive(Debug, Clone, Default)]
pub struct ContentFilterConfig {
    pub patterns: Vec<FilterPattern>,
    pub blocked_words: Vec<BlockedWord>,
    /// `pattern_redaction_format`, with `{pattern_name}`; default `[{pattern_name}_REDACTED]`.
    pub pattern_redaction_format: Option<String>,
    /// `keyword_redaction_tag`; default `[KEYWORD_REDACTED]`.
    pub keyword_redaction_tag: Option<String>,
}

/// One entry of `patterns`.
#[derive(Debug, Clone)]
pub struct FilterPattern {
    /// The prebuilt name, or a custom pattern's `name`.
    pub name: String,
    /// `pattern_type: prebuilt` (the regex is the gateway's) or `regex` (this one).
    pub regex: Option<String>,
    pub action: FilterAction,
}

/// One entry of `blocked_words`.
#[derive(Debug, Clone)]
pub struct BlockedWord {
    pub keyword: String,
    pub action: FilterAction,
    pub description: Option<String>,
}

#[derive(Debug, Clone)]
pub struct PiiMaskingConfig {
    /// `pii_entities_config`: entity (Presidio's name) -> action. Empty: every kind, masked.
    pub entities: Vec<(String, FilterAction)>,
    /// `output_parse_pii`: put the masked values back into the answer.
    pub output_parse_pii: bool,
}

#[derive(Debug, Clone)]
pub struct TrimmingConfig {
    /// `trim_ratio` (LiteLLM's `trim_messages` default 0.75): the share of the context
    /// window the prompt may fill.
    pub trim_ratio: f64,
    /// `max_input_tokens`: a fixed budget instead of the deployment's context window.
    pub max_input_tokens: Option<u64>,
}

#[derive(Debug, Clone, Default)]
pub struct PromptLimitsConfig {
    /// `max_prompt_chars`: the messages' text, in characters.
    pub max_prompt_chars: Option<u64>,
    /// `max_prompt_tokens`: the prompt, counted with the model family's tokenizer.
    pub max_prompt_tokens: Option<u64>,
    /// `max_tokens`: the largest `max_tokens` / `max_completion_tokens` a request may ask.
    pub max_tokens: Option<u64>,
    /// `max_tokens_action`: `clamp` (lower it to the cap, the default) or `block`.
    pub block_over_max_tokens: bool,
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// `api_base`; the request goes to `{api_base}/beta/litellm_basic_guardrail_api`.
    pub api_base: String,
    /// `api_key`: sent as `Authorization: Bearer`.
    pub api_key: Option<Secret>,
    /// `headers`: extra request headers.
    pub headers: Vec<(String, Secret)>,
    /// `timeout` in seconds (default 10).
    pub timeout: Duration,
    /// `unreachable_fallback: fail_open` lets the request through when the service does
    /// not answer in time or answers with an error; `fail_closed` (the default) blocks.
    pub fail_open: bool,
    /// `additional_provider_specific_params`, sent with every call.
    pub additional_params: Value,
}

impl Reader<'_> {
    /// The top-level `guardrails:` list (also read from `litellm_settings.guardrails`, where
    /// LiteLLM's examples sometimes put it), and each model's `litellm_params.guardrails`.
    pub(super) fn guardrails(
        &mut self,
        root: &Map<String, Value>,
        litellm_settings: &Map<String, Value>,
    ) -> Result<GuardrailsConfig, ConfigError> {
        let mut config = GuardrailsConfig::default();
        for (path, value) in [
            ("guardrails", root.get("guardrails")),
            ("litellm_settings.guardrails", litellm_settings.get("guardrails")),
        ] {
            let entries = match value {
                None | Some(Value::Null) => continue,
                Some(Value::Array(entries)) => entries,
                Some(_) => return Err(invalid(path, "must be a list of {guardrail_name, litellm_params}")),
            };
            for (i, entry) in entries.iter().enumerate() {
                let at = format!("{path}[{i}]");
                let guardrail = self.guardrail(entry, &at)?;
                if config.guardrails.iter().any(|other| other.name == guardrail.name) {
                    return Err(invalid(
                        &format!("{at}.guardrail_name"),
                        format!("duplicate guardrail_name '{}'", guardrail.name),
                    ));
                }
                config.guardrails.push(guardrail);
            }
        }
        if let Some(Value::Array(models)) = root.get("model_list") {
            for (i, entry) in models.iter().enumerate() {
                let Some(names) = entry.get("litellm_params").and_then(|params| params.get("guardrails"))
                else {
                    continue;
                };
                let at = format!("model_list[{i}].litellm_params.guardrails");
                let names = names_list(names, &at)?;
                for name in &names {
                    if !config.guardrails.iter().any(|g| &g.name == name) {
                        return Err(invalid(&at, format!("'{name}' is no guardrail_name in guardrails")));
                    }
                }
                let model = entry.get("model_name").and_then(Value::as_str).unwrap_or_default().to_owned();
                match config.per_model.iter_mut().find(|(group, _)| *group == model) {
                    Some((_, existing)) => existing.extend(
                        names.into_iter().filter(|name| !existing.contains(name)).collect::<Vec<_>>(),
                    ),
                    None => config.per_model.push((model, names)),
                }
            }
        }
        Ok(config)
    }

    fn guardrail(&mut self, entry: &Value, path: &str) -> Result<GuardrailConfig, ConfigError> {
        let entry = as_object(entry, path)?;
        let name = self
            .string(entry, "guardrail_name", path)?
            .filter(|name| !name.is_empty())
            .ok_or_else(|| invalid(&format!("{path}.guardrail_name"), "missing"))?;
        self.verdicts.classify(
            entry,
            path,
            &["guardrail_name", "litellm_params", "guardrail_info", "guardrail_id"],
            &[],
        );
        let params_path = format!("{path}.litellm_params");
        let params = match entry.get("litellm_params") {
            None | Some(Value::Null) => return Err(invalid(&params_path, "missing")),
            Some(value) => as_object(value, &params_path)?,
        };
        let kind_name = self
            .string(params, "guardrail", &params_path)?
            .ok_or_else(|| invalid(&format!("{params_path}.guardrail"), "missing"))?;
        let modes = match params.get("mode") {
            None | Some(Value::Null) => return Err(invalid(&format!("{params_path}.mode"), "missing")),
            Some(value) => modes(value, &format!("{params_path}.mode"))?,
        };
        let default_on = self.flag(params, "default_on", &params_path)?.unwrap_or(false);
        let common = ["guardrail", "mode", "default_on"];
        let kind = match kind_name.as_str() {
            "litellm_content_filter" => {
                self.known(
                    params,
                    &params_path,
                    &common,
                    &["patterns", "blocked_words", "pattern_redaction_format", "keyword_redaction_tag"],
                );
                GuardrailKind::ContentFilter(self.content_filter(params, &params_path)?)
            }
            "pii_masking" => {
                self.known(params, &params_path, &common, &["pii_entities_config", "output_parse_pii"]);
                GuardrailKind::PiiMasking(self.pii_masking(params, &params_path)?)
            }
            "message_trimming" => {
                self.known(params, &params_path, &common, &["trim_ratio", "max_input_tokens"]);
                let trim_ratio = self.number(params, "trim_ratio", &params_path)?.unwrap_or(0.75);
                if !(trim_ratio > 0.0 && trim_ratio <= 1.0) {
                    return Err(invalid(
                        &format!("{params_path}.trim_ratio"),
                        "must be above 0 and at most 1",
                    ));
                }
                let max_input_tokens = self.unsigned(params, "max_input_tokens", &params_path)?;
                GuardrailKind::MessageTrimming(TrimmingConfig { trim_ratio, max_input_tokens })
            }
            "prompt_limits" => {
                self.known(
                    params,
                    &params_path,
                    &common,
                    &["max_prompt_chars", "max_prompt_tokens", "max_tokens", "max_tokens_action"],
                );
                let block_over_max_tokens =
                    match self.string(params, "max_tokens_action", &params_path)?.as_deref() {
                        None | Some("clamp") => false,
                        Some("block") => true,
                        Some(other) => {
                            return Err(invalid(
                                &format!("{params_path}.max_tokens_action"),
                                format!("'{other}' is neither clamp nor block"),
                            ));
                        }
                    };
                let limits = PromptLimitsConfig {
                    max_prompt_chars: self.unsigned(params, "max_prompt_chars", &params_path)?,
                    max_prompt_tokens: self.unsigned(params, "max_prompt_tokens", &params_path)?,
                    max_tokens: self.unsigned(params, "max_tokens", &params_path)?,
                    block_over_max_tokens,
                };
                if limits.max_prompt_chars.is_none()
                    && limits.max_prompt_tokens.is_none()
                    && limits.max_tokens.is_none()
                {
                    return Err(invalid(
                        &params_path,
                        "prompt_limits needs max_prompt_chars, max_prompt_tokens or max_tokens",
                    ));
                }
                GuardrailKind::PromptLimits(limits)
            }
            "generic_guardrail_api" => {
                self.known(
                    params,
                    &params_path,
                    &common,
                    &[
                        "api_base",
                        "api_key",
                        "headers",
                        "timeout",
                        "unreachable_fallback",
                        "additional_provider_specific_params",
                    ],
                );
                GuardrailKind::Webhook(self.webhook(params, &params_path)?)
            }
            other if other.contains('.') => {
                return Err(invalid(
                    &format!("{params_path}.guardrail"),
                    format!(
                        "'{other}' is a Python class; Tollgate cannot load Python guardrails. For message trimming \
                         use `guardrail: message_trimming`; for anything else run it as a service behind \
                         `guardrail: generic_guardrail_api`, or register a Rust `Guardrail` with the \
                         embedding API (refusing to start rather than run without it)"
                    ),
                ));
            }
            other => {
                return Err(invalid(
                    &format!("{params_path}.guardrail"),
                    format!(
                        "guardrail type '{other}' is not supported (supported: {}); a vendor with an HTTP API \
                         can be reached through generic_guardrail_api (refusing to start rather than run \
                         without the guardrail)",
                        GUARDRAIL_TYPES.join(", ")
                    ),
                ));
            }
        };
        let params_for_display = params
            .iter()
            .filter(|(key, _)| !matches!(key.as_str(), "api_key" | "headers"))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect();
        Ok(GuardrailConfig {
            name,
            kind,
            modes,
            default_on,
            info: entry.get("guardrail_info").filter(|value| !value.is_null()).cloned(),
            params_for_display,
        })
    }

    fn known(&mut self, params: &Map<String, Value>, path: &str, common: &[&str], own: &[&str]) {
        let known: Vec<&str> = common.iter().chain(own).copied().collect();
        self.verdicts.classify(params, path, &known, &[]);
    }

    fn content_filter(
        &self,
        params: &Map<String, Value>,
        path: &str,
    ) -> Result<ContentFilterConfig, ConfigError> {
        let mut config = ContentFilterConfig {
            pattern_redaction_format: self.string(params, "pattern_redaction_format", path)?,
            keyword_redaction_tag: self.string(params, "keyword_redaction_tag", path)?,
            ..ContentFilterConfig::default()
        };
        if let Some(format) = &config.pattern_redaction_format
            && !format.contains("{pattern_name}")
        {
            return Err(invalid(&format!("{path}.pattern_redaction_format"), "must contain {pattern_name}"));
        }
        for (i, entry) in list(params.get("patterns"), &format!("{path}.patterns"))?.iter().enumerate() {
            let at = format!("{path}.patterns[{i}]");
            let entry = as_object(entry, &at)?;
            let action = action(entry.get("action"), &format!("{at}.action"))?;
            let kind = self.string(entry, "pattern_type", &at)?.unwrap_or_else(|| "prebuilt".to_owned());
            let pattern = match kind.as_str() {
                "prebuilt" => {
                    let name = self
                        .string(entry, "pattern_name", &at)?
                        .ok_or_else(|| invalid(&format!("{at}.pattern_name"), "missing"))?;
                    if !PREBUILT_PATTERNS.contains(&name.as_str()) {
                        return Err(invalid(
                            &format!("{at}.pattern_name"),
                            format!(
                                "unknown prebuilt pattern '{name}' (known: {})",
                                PREBUILT_PATTERNS.join(", ")
                            ),
                        ));
                    }
                    FilterPattern { name, regex: None, action }
                }
                "regex" => {
                    let regex = self
                        .string(entry, "pattern", &at)?
                        .ok_or_else(|| invalid(&format!("{at}.pattern"), "missing"))?;
                    let name = self.string(entry, "name", &at)?.unwrap_or_else(|| "custom".to_owned());
                    FilterPattern { name, regex: Some(regex), action }
                }
                other => {
                    return Err(invalid(
                        &format!("{at}.pattern_type"),
                        format!("'{other}' is neither prebuilt nor regex"),
                    ));
                }
            };
            config.patterns.push(pattern);
        }
        config.blocked_words = blocked_words(params.get("blocked_words"), &format!("{path}.blocked_words"))?;
        if params.contains_key("categories") {
            return Err(invalid(
                &format!("{path}.categories"),
                "harmful-content categories are not supported: list words and patterns instead (refusing to start without them)",
            ));
        }
        if params.contains_key("blocked_words_file") {
            return Err(invalid(
                &format!("{path}.blocked_words_file"),
                "not supported: list the words under blocked_words (refusing to start without them)",
            ));
        }
        Ok(config)
    }

    fn pii_masking(&self, params: &Map<String, Value>, path: &str) -> Result<PiiMaskingConfig, ConfigError> {
        let mut entities = Vec::new();
        if let Some(value) = params.get("pii_entities_config").filter(|value| !value.is_null()) {
            let at = format!("{path}.pii_entities_config");
            for (entity, value) in as_object(value, &at)? {
                if let Err(unknown) = entity.parse::<crate::pii::PiiKind>() {
                    return Err(invalid(&format!("{at}.{entity}"), unknown.to_string()));
                }
                entities.push((entity.clone(), action(Some(value), &format!("{at}.{entity}"))?));
            }
        }
        let output_parse_pii = self.flag(params, "output_parse_pii", path)?.unwrap_or(false);
        Ok(PiiMaskingConfig { entities, output_parse_pii })
    }

    fn webhook(&self, params: &Map<String, Value>, path: &str) -> Result<WebhookConfig, ConfigError> {
        let api_base = self
            .string(params, "api_base", path)?
            .filter(|base| base.starts_with("http://") || base.starts_with("https://"))
            .ok_or_else(|| invalid(&format!("{path}.api_base"), "missing, or not an http(s) URL"))?;
        let api_key = self.string(params, "api_key", path)?.filter(|key| !key.is_empty()).map(Secret::new);
        let mut headers = Vec::new();
        if let Some(value) = params.get("headers").filter(|value| !value.is_null()) {
            let at = format!("{path}.headers");
            let map = as_object(value, &at)?;
            for name in map.keys() {
                let value = self.string(map, name, &at)?.unwrap_or_default();
                headers.push((name.clone(), Secret::new(value)));
            }
        }
        let timeout = self.seconds(params, "timeout", path)?.unwrap_or(DEFAULT_WEBHOOK_TIMEOUT);
        let fail_open = match self.string(params, "unreachable_fallback", path)?.as_deref() {
            None | Some("fail_closed") => false,
            Some("fail_open") => true,
            Some(other) => {
                return Err(invalid(
                    &format!("{path}.unreachable_fallback"),
                    format!("'{other}' is neither fail_open nor fail_closed"),
                ));
            }
        };
        let additional_params = params
            .get("additional_provider_specific_params")
            .filter(|value| !value.is_null())
            .cloned()
            .unwrap_or_else(|| Value::Object(Map::new()));
        Ok(WebhookConfig { api_base, api_key, headers, timeout, fail_open, additional_params })
    }
}

/// `mode`: one of LiteLLM's mode names, or a list of them.
fn modes(value: &Value, path: &str) -> Result<Vec<GuardrailMode>, ConfigError> {
    let names = names_list(value, path)?;
    if names.is_empty() {
        return Err(invalid(path, "must name at least one mode"));
    }
    let mut modes = Vec::new();
    for name in names {
        let mode = GuardrailMode::parse(&name).ok_or_else(|| {
            invalid(path, format!("'{name}' is not a mode (pre_call, during_call, post_call, logging_only)"))
        })?;
        if !modes.contains(&mode) {
            modes.push(mode);
        }
    }
    Ok(modes)
}

/// A string or a list of strings.
fn names_list(value: &Value, path: &str) -> Result<Vec<String>, ConfigError> {
    match value {
        Value::String(one) => Ok(vec![one.clone()]),
        Value::Array(items) => items
            .iter()
            .map(|item| item.as_str().map(str::to_owned).ok_or_else(|| invalid(path, "must hold names")))
            .collect(),
        _ => Err(invalid(path, "must be a name or a list of names")),
    }
}

fn list<'v>(value: Option<&'v Value>, path: &str) -> Result<&'v [Value], ConfigError> {
    match value {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(invalid(path, "must be a list")),
    }
}

fn action(value: Option<&Value>, path: &str) -> Result<FilterAction, ConfigError> {
    match value {
        None | Some(Value::Null) => Ok(FilterAction::Block),
        Some(value) => match scalar_to_string(value, path)?.to_ascii_uppercase().as_str() {
            "BLOCK" => Ok(FilterAction::Block),
            "MASK" => Ok(FilterAction::Mask),
            other => Err(invalid(path, format!("'{other}' is neither BLOCK nor MASK"))),
        },
    }
}

/// `blocked_words`: `{keyword, action, description}` entries or plain strings (blocked).
/// Also used for the `blocked_words` a key's or team's metadata holds.
pub fn blocked_words(value: Option<&Value>, path: &str) -> Result<Vec<BlockedWord>, ConfigError> {
    let mut words = Vec::new();
    for (i, entry) in list(value, path)?.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let word = match entry {
            Value::String(keyword) => {
                BlockedWord { keyword: keyword.clone(), action: FilterAction::Block, description: None }
            }
            Value::Object(fields) => BlockedWord {
                keyword: fields
                    .get("keyword")
                    .and_then(Value::as_str)
                    .ok_or_else(|| invalid(&format!("{at}.keyword"), "missing"))?
                    .to_owned(),
                action: action(fields.get("action"), &format!("{at}.action"))?,
                description: fields.get("description").and_then(Value::as_str).map(str::to_owned),
            },
            _ => return Err(invalid(&at, "must be a word or {keyword, action}")),
        };
        if word.keyword.is_empty() {
            return Err(invalid(&at, "empty keyword"));
        }
        words.push(word);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::GatewayConfig;

    fn load(yaml: &str) -> Result<GatewayConfig, ConfigError> {
        let env: HashMap<String, String> = [("HOOK_KEY".to_owned(), "hk-1".to_owned())].into();
        GatewayConfig::from_yaml(yaml, &env)
    }

    const MODEL: &str =
        "model_list:\n  - model_name: m\n    litellm_params: {model: fake/m, guardrails: [trim]}\n";

    #[test]
    fn every_builtin_is_read_with_litellms_names() {
        let config = load(&format!(
            "{MODEL}guardrails:
  - guardrail_name: words
    litellm_params:
      guardrail: litellm_content_filter
      mode: [pre_call, post_call]
      default_on: true
      patterns:
        - {{pattern_type: prebuilt, pattern_name: email, action: MASK}}
        - {{pattern_type: regex, pattern: 'PROJ-\\d+', name: project, action: BLOCK}}
      blocked_words: [{{keyword: secret, action: BLOCK}}, confidential]
  - guardrail_name: pii
    litellm_params: {{guardrail: pii_masking, mode: pre_call, pii_entities_config: {{CREDIT_CARD: BLOCK}}, output_parse_pii: true}}
  - guardrail_name: trim
    litellm_params: {{guardrail: message_trimming, mode: pre_call}}
  - guardrail_name: caps
    litellm_params: {{guardrail: prompt_limits, mode: pre_call, max_tokens: 100}}
  - guardrail_name: hook
    litellm_params:
      guardrail: generic_guardrail_api
      mode: during_call
      api_base: http://127.0.0.1:9
      api_key: os.environ/HOOK_KEY
      timeout: 0.5
      unreachable_fallback: fail_open
    guardrail_info: {{owner: security}}
"
        ))
        .unwrap();
        assert!(config.unsupported.is_empty(), "{:?}", config.unsupported);
        let guardrails = &config.guardrails.guardrails;
        assert_eq!(guardrails.len(), 5);
        assert_eq!(guardrails[0].modes, [GuardrailMode::PreCall, GuardrailMode::PostCall]);
        assert!(guardrails[0].default_on);
        let GuardrailKind::ContentFilter(filter) = &guardrails[0].kind else { panic!("content filter") };
        assert_eq!(filter.patterns.len(), 2);
        assert_eq!(filter.patterns[1].regex.as_deref(), Some("PROJ-\\d+"));
        assert_eq!(filter.blocked_words[1].keyword, "confidential");
        assert_eq!(filter.blocked_words[1].action, FilterAction::Block);
        let GuardrailKind::PiiMasking(pii) = &guardrails[1].kind else { panic!("pii") };
        assert_eq!(pii.entities, [("CREDIT_CARD".to_owned(), FilterAction::Block)]);
        assert!(pii.output_parse_pii);
        let GuardrailKind::MessageTrimming(trim) = &guardrails[2].kind else { panic!("trim") };
        assert_eq!(trim.trim_ratio, 0.75);
        let GuardrailKind::Webhook(hook) = &guardrails[4].kind else { panic!("webhook") };
        assert_eq!(hook.api_key.as_ref().map(Secret::expose), Some("hk-1"));
        assert_eq!(hook.timeout, Duration::from_millis(500));
        assert!(hook.fail_open);
        assert!(!guardrails[4].params_for_display.contains_key("api_key"));
        assert_eq!(config.guardrails.per_model, [("m".to_owned(), vec!["trim".to_owned()])]);
    }

    #[test]
    fn guardrails_that_cannot_run_stop_start_up() {
        let python = load(&format!(
            "{MODEL}guardrails:\n  - guardrail_name: trim\n    litellm_params: {{guardrail: custom_guardrails.message_overflow.MessageOverflowGuardrail, mode: pre_call}}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(python.contains("Python class") && python.contains("message_trimming"), "{python}");
        let vendor = load("guardrails:\n  - guardrail_name: a\n    litellm_params: {guardrail: aporia, mode: during_call}\n")
            .unwrap_err()
            .to_string();
        assert!(
            vendor.starts_with("guardrails[0].litellm_params.guardrail:")
                && vendor.contains("generic_guardrail_api"),
            "{vendor}"
        );
        let mode = load("guardrails:\n  - guardrail_name: a\n    litellm_params: {guardrail: prompt_limits, mode: sometimes, max_tokens: 1}\n")
            .unwrap_err()
            .to_string();
        assert!(mode.contains("'sometimes' is not a mode"), "{mode}");
        let missing = load(MODEL).unwrap_err().to_string();
        assert!(missing.contains("'trim' is no guardrail_name"), "{missing}");
        let prebuilt = load("guardrails:\n  - guardrail_name: a\n    litellm_params: {guardrail: litellm_content_filter, mode: pre_call, patterns: [{pattern_type: prebuilt, pattern_name: dna}]}\n")
            .unwrap_err()
            .to_string();
        assert!(prebuilt.contains("unknown prebuilt pattern 'dna'"), "{prebuilt}");
    }
}
