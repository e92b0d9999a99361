//! Guardrails: checks and rewrites of a request's messages and of its answer, selected per
//! request, key, team and model as LiteLLM selects them, run in LiteLLM's modes.
//!
//! Every guardrail, built in or registered by an embedder, is a [`Guardrail`]; the
//! [`Guardrails`] registry holds them with their names, modes and `default_on`. A request
//! that names none, on a gateway with no `default_on` or per-model guardrail and a key whose
//! metadata names none, costs one check of a few fields here: no JSON beyond the top level
//! is decoded.

mod builtin;
pub mod endpoints;
pub(crate) mod flow;
mod webhook;

use std::sync::Arc;

use serde_json::Value;
use tollgate_domain::config::{GuardrailKind, GuardrailMode, GuardrailsConfig};
use tollgate_domain::json::TopLevel;
use tollgate_domain::tokens::Encoding;
use tollgate_domain::{ErrorKind, GatewayError};
use tollgate_providers::HttpClient;

use crate::tenancy::Access;

pub use tollgate_domain::config::GuardrailMode as Mode;

/// What a guardrail decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing to do.
    Allow,
    /// The guardrail changed what it was given (messages, `max_tokens` or answer texts).
    Modified,
    /// The request (or answer) must not go on; the reason is told to the client.
    Block(String),
}

/// Who is calling and what about, for a guardrail's decision.
#[derive(Debug, Clone, Copy)]
pub struct CallContext<'a> {
    pub call_id: &'a str,
    /// The model group the client asked for (after key aliases).
    pub model: &'a str,
    /// The smallest context window of the group's deployments, when known.
    pub context_window: Option<u64>,
    /// The tokenizer of the group's model family.
    pub encoding: Encoding,
    /// The SHA-256 of the virtual key, its alias, its team.
    pub key_hash: Option<&'a str>,
    pub key_alias: Option<&'a str>,
    pub team_id: Option<&'a str>,
    pub key_metadata: Option<&'a Value>,
    pub team_metadata: Option<&'a Value>,
}

/// A request as guardrails see it: the chat messages (a completions `prompt` appears as one
/// user message) and the requested `max_tokens`, both writable.
#[derive(Debug)]
pub struct GuardedRequest<'a> {
    pub context: CallContext<'a>,
    pub messages: &'a mut Vec<Value>,
    pub max_tokens: &'a mut Option<u64>,
    /// Per-request state a guardrail keeps from its pre-call to its post-call run (the PII
    /// guardrail's masked values).
    pub memo: &'a mut http::Extensions,
}

/// An answer as guardrails see it: each choice's text (a stream's assembled text), writable.
#[derive(Debug)]
pub struct GuardedAnswer<'a> {
    pub context: CallContext<'a>,
    pub texts: &'a mut Vec<String>,
    pub memo: &'a mut http::Extensions,
}

/// A guardrail. The built-ins implement it; a service embedding Tollgate registers its own
/// with `Gateway::with_guardrail` and selects it by name like a configured one. Each method
/// runs only in the modes the guardrail is registered for; the defaults let everything by.
#[async_trait::async_trait]
pub trait Guardrail: Send + Sync {
    /// The request before it goes upstream (`pre_call`, `during_call` and, on a copy of
    /// the messages, `logging_only`). Changes are sent upstream when the verdict is
    /// `Modified` (a `during_call` guardrail's changes are not: the call is already under way).
    async fn pre_call(&self, _request: &mut GuardedRequest<'_>) -> Verdict {
        Verdict::Allow
    }

    /// The answer before the client receives it (`post_call`); for a stream, its assembled text.
    async fn post_call(&self, _answer: &mut GuardedAnswer<'_>) -> Verdict {
        Verdict::Allow
    }

    /// Each text delta of a streamed answer as it arrives (`post_call` guardrails, while the
    /// stream is held back), so a violation can end the upstream call early.
    async fn on_stream_chunk(&self, _context: &CallContext<'_>, _delta: &str) -> Verdict {
        Verdict::Allow
    }
}

/// A guardrail with what selects and schedules it.
#[derive(Clone)]
pub struct Registered {
    pub name: String,
    pub modes: Vec<GuardrailMode>,
    pub default_on: bool,
    /// The `guardrail` type (`litellm_content_filter`, …; `custom` for an embedder's).
    pub kind: String,
    /// `litellm_params` and `guardrail_info` for `/guardrails/list`.
    pub params: serde_json::Map<String, Value>,
    pub info: Option<Value>,
    pub guardrail: Arc<dyn Guardrail>,
}

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("name", &self.name)
            .field("modes", &self.modes)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
#[error("guardrail '{name}': {reason}")]
pub struct BuildError {
    pub name: String,
    pub reason: String,
}

/// Every guardrail of a gateway, in config order, and the per-model lists.
#[derive(Debug, Clone, Default)]
pub struct Guardrails {
    entries: Vec<Registered>,
    per_model: Vec<(String, Vec<usize>)>,
    /// Whether any request can be guarded without naming a guardrail itself.
    any_default: bool,
}

impl Guardrails {
    /// The configured guardrails; webhook guardrails call out through `client`.
    pub fn from_config(config: &GuardrailsConfig, client: &HttpClient) -> Result<Self, BuildError> {
        let mut guardrails = Self::default();
        for entry in &config.guardrails {
            let guardrail: Arc<dyn Guardrail> = match &entry.kind {
                GuardrailKind::ContentFilter(filter) => Arc::new(
                    builtin::ContentFilter::new(filter)
                        .map_err(|reason| BuildError { name: entry.name.clone(), reason })?,
                ),
                GuardrailKind::PiiMasking(pii) => Arc::new(
                    builtin::PiiMasking::new(pii)
                        .map_err(|reason| BuildError { name: entry.name.clone(), reason })?,
                ),
                GuardrailKind::MessageTrimming(trim) => Arc::new(builtin::Trimming::new(trim)),
                GuardrailKind::PromptLimits(limits) => Arc::new(builtin::PromptLimits::new(limits)),
                GuardrailKind::Webhook(hook) => Arc::new(webhook::Webhook::new(hook, client.clone())),
            };
            let mut modes = entry.modes.clone();
            // Putting the originals back is the answer's step, whatever the mode says.
            if matches!(&entry.kind, GuardrailKind::PiiMasking(pii) if pii.output_parse_pii)
                && !modes.contains(&GuardrailMode::PostCall)
            {
                modes.push(GuardrailMode::PostCall);
            }
            guardrails.entries.push(Registered {
                name: entry.name.clone(),
                modes,
                default_on: entry.default_on,
                kind: entry.kind.type_name().to_owned(),
                params: entry.params_for_display.clone(),
                info: entry.info.clone(),
                guardrail,
            });
        }
        for (model, names) in &config.per_model {
            let indexes = names.iter().filter_map(|name| guardrails.index(name)).collect();
            guardrails.per_model.push((model.clone(), indexes));
        }
        guardrails.refresh();
        Ok(guardrails)
    }

    /// Adds an embedder's guardrail (replacing a configured one of the same name).
    pub fn register(&mut self, registered: Registered) {
        match self.index(&registered.name) {
            Some(at) => self.entries[at] = registered,
            None => self.entries.push(registered),
        }
        self.refresh();
    }

    fn refresh(&mut self) {
        self.any_default = self.entries.iter().any(|entry| entry.default_on) || !self.per_model.is_empty();
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn entries(&self) -> &[Registered] {
        &self.entries
    }

    fn index(&self, name: &str) -> Option<usize> {
        self.entries.iter().position(|entry| entry.name == name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Registered> {
        self.index(name).map(|at| &self.entries[at])
    }

    /// The guardrails that run on this request, in config order: `default_on` ones (unless
    /// the key or team sets `disable_global_guardrails`), the model's, the key's and team's
    /// (`metadata.guardrails`), and those the request names (`guardrails`, or
    /// `metadata.guardrails`). `None` when none does. A name nobody configured is a 400; a
    /// request naming guardrails when its team forbids it (`metadata.guardrails.modify_guardrails:
    /// false`) is a 403.
    pub(crate) fn select(
        &self,
        top: &TopLevel<'_>,
        access: &Access,
        model: &str,
    ) -> Result<Option<Selection>, GatewayError> {
        let principal = access.principal();
        let key_metadata = principal.map(|p| &p.key.metadata.0);
        let team_metadata = principal.and_then(|p| p.team.as_ref()).map(|team| &team.metadata.0);
        let requested = requested_names(top)?;
        let from_key = key_metadata.and_then(|m| m.get("guardrails")).filter(|v| v.is_array());
        let from_team = team_metadata.and_then(|m| m.get("guardrails")).filter(|v| v.is_array());
        if !self.any_default && requested.is_empty() && from_key.is_none() && from_team.is_none() {
            return Ok(None);
        }
        if !requested.is_empty()
            && team_metadata
                .and_then(|m| m.get("guardrails"))
                .and_then(|g| g.get("modify_guardrails"))
                .and_then(Value::as_bool)
                == Some(false)
        {
            return Err(GatewayError::new(
                ErrorKind::Forbidden,
                "Your team does not have permission to modify guardrails.",
            )
            .with_param("guardrails"));
        }
        let opted_out = [key_metadata, team_metadata]
            .into_iter()
            .flatten()
            .any(|m| m.get("disable_global_guardrails").and_then(Value::as_bool) == Some(true));
        let mut chosen = vec![false; self.entries.len()];
        if !opted_out {
            for (at, entry) in self.entries.iter().enumerate() {
                chosen[at] |= entry.default_on;
            }
        }
        if let Some((_, indexes)) = self.per_model.iter().find(|(group, _)| group == model) {
            for &at in indexes {
                chosen[at] = true;
            }
        }
        let stored = [from_key, from_team]
            .into_iter()
            .flatten()
            .flat_map(|list| list.as_array().into_iter().flatten());
        for name in stored.filter_map(Value::as_str) {
            let at = self.index(name).ok_or_else(|| {
                GatewayError::bad_request(format!(
                    "guardrail '{name}' set on this key or team is not configured on the gateway"
                ))
            })?;
            chosen[at] = true;
        }
        for name in &requested {
            let at = self.index(name).ok_or_else(|| {
                GatewayError::bad_request(format!(
                    "guardrail '{name}' is not configured; configured guardrails: {}",
                    self.entries.iter().map(|e| e.name.as_str()).collect::<Vec<_>>().join(", ")
                ))
                .with_param("guardrails")
            })?;
            chosen[at] = true;
        }
        let indexes: Vec<usize> =
            chosen.iter().enumerate().filter(|(_, on)| **on).map(|(at, _)| at).collect();
        Ok((!indexes.is_empty()).then_some(Selection { indexes }))
    }
}

/// The names a request gives in `guardrails` (strings, or LiteLLM's `{name: {...}}` objects)
/// and in `metadata.guardrails`.
fn requested_names(top: &TopLevel<'_>) -> Result<Vec<String>, GatewayError> {
    let mut names = Vec::new();
    let mut read = |value: &Value, field: &str| -> Result<(), GatewayError> {
        let items = value.as_array().ok_or_else(|| {
            GatewayError::bad_request(format!("`{field}` must be a list of guardrail names"))
                .with_param(field)
        })?;
        for item in items {
            match item {
                Value::String(name) => names.push(name.clone()),
                Value::Object(map) => names.extend(map.keys().cloned()),
                _ => {
                    return Err(GatewayError::bad_request(format!(
                        "`{field}` must be a list of guardrail names"
                    ))
                    .with_param(field));
                }
            }
        }
        Ok(())
    };
    if let Some(raw) = top.get("guardrails").filter(|raw| raw.get() != "null") {
        let value: Value = serde_json::from_str(raw.get())
            .map_err(|e| GatewayError::bad_request(format!("invalid `guardrails`: {e}")))?;
        read(&value, "guardrails")?;
    }
    // `metadata` is decoded only when it mentions guardrails at all.
    if let Some(raw) =
        top.get("metadata").filter(|raw| memchr::memmem::find(raw.get().as_bytes(), b"guardrails").is_some())
    {
        let metadata: Value = serde_json::from_str(raw.get())
            .map_err(|e| GatewayError::bad_request(format!("invalid `metadata`: {e}")))?;
        if let Some(value) = metadata.get("guardrails").filter(|v| !v.is_null()) {
            read(value, "metadata.guardrails")?;
        }
    }
    Ok(names)
}

/// The guardrails chosen for one request (indexes into the registry).
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    indexes: Vec<usize>,
}

/// A request a guardrail stopped.
#[derive(Debug, Clone)]
pub struct Blocked {
    pub guardrail: String,
    pub mode: GuardrailMode,
    pub reason: String,
}

impl Blocked {
    /// The client's 400: LiteLLM's "Violated guardrail policy" with the guardrail's name
    /// and its reason.
    pub fn to_error(&self) -> GatewayError {
        GatewayError::bad_request(format!(
            "Violated guardrail policy: guardrail '{}' ({}) blocked the request: {}",
            self.guardrail,
            self.mode.as_str(),
            self.reason
        ))
        .with_type("guardrail_violation")
    }
}

impl Selection {
    /// The chosen guardrails that run in `mode`.
    pub(crate) fn in_mode<'g>(
        &'g self,
        guardrails: &'g Guardrails,
        mode: GuardrailMode,
    ) -> impl Iterator<Item = &'g Registered> {
        self.indexes
            .iter()
            .map(|&at| &guardrails.entries[at])
            .filter(move |entry| entry.modes.contains(&mode))
    }

    pub(crate) fn has(&self, guardrails: &Guardrails, mode: GuardrailMode) -> bool {
        self.in_mode(guardrails, mode).next().is_some()
    }
}

/// Runs the `mode` guardrails of `selection` on a request in order; each sees what the one
/// before it left. `Ok(true)` when one of them changed the request.
pub(crate) async fn run_on_request(
    guardrails: &Guardrails,
    selection: &Selection,
    mode: GuardrailMode,
    request: &mut GuardedRequest<'_>,
    metrics: &crate::metrics::Metrics,
) -> Result<bool, Blocked> {
    let mut modified = false;
    for entry in selection.in_mode(guardrails, mode) {
        let verdict = entry.guardrail.pre_call(request).await;
        modified |= outcome(entry, mode, verdict, metrics)?;
    }
    Ok(modified)
}

/// Runs the `post_call` guardrails of `selection` on an answer in order.
pub(crate) async fn run_on_answer(
    guardrails: &Guardrails,
    selection: &Selection,
    answer: &mut GuardedAnswer<'_>,
    metrics: &crate::metrics::Metrics,
) -> Result<bool, Blocked> {
    let mut modified = false;
    for entry in selection.in_mode(guardrails, GuardrailMode::PostCall) {
        let verdict = entry.guardrail.post_call(answer).await;
        modified |= outcome(entry, GuardrailMode::PostCall, verdict, metrics)?;
    }
    Ok(modified)
}

/// Runs the `post_call` guardrails' stream check on one delta.
pub(crate) async fn run_on_delta(
    guardrails: &Guardrails,
    selection: &Selection,
    context: &CallContext<'_>,
    delta: &str,
    metrics: &crate::metrics::Metrics,
) -> Result<(), Blocked> {
    for entry in selection.in_mode(guardrails, GuardrailMode::PostCall) {
        let verdict = entry.guardrail.on_stream_chunk(context, delta).await;
        if matches!(verdict, Verdict::Block(_)) {
            outcome(entry, GuardrailMode::PostCall, verdict, metrics)?;
        }
    }
    Ok(())
}

fn outcome(
    entry: &Registered,
    mode: GuardrailMode,
    verdict: Verdict,
    metrics: &crate::metrics::Metrics,
) -> Result<bool, Blocked> {
    let (label, result) = match verdict {
        Verdict::Allow => ("allowed", Ok(false)),
        Verdict::Modified => ("modified", Ok(true)),
        Verdict::Block(reason) => {
            tracing::info!(guardrail = %entry.name, mode = mode.as_str(), %reason, "guardrail blocked a request");
            ("blocked", Err(Blocked { guardrail: entry.name.clone(), mode, reason }))
        }
    };
    metrics.record_guardrail(&entry.name, label);
    result
}

/// The text of a message's `content`: a string, or the text parts of a parts list.
pub(crate) fn content_texts(message: &mut Value) -> Vec<&mut String> {
    match message.get_mut("content") {
        Some(Value::String(text)) => vec![text],
        Some(Value::Array(parts)) => parts
            .iter_mut()
            .filter_map(|part| match part.get_mut("text") {
                Some(Value::String(text)) => Some(text),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Every text of every message, in order.
pub(crate) fn all_texts(messages: &mut [Value]) -> Vec<&mut String> {
    messages.iter_mut().flat_map(content_texts).collect()
}

#[cfg(test)]
mod tests;
