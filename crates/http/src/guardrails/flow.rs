//! Guardrails on a request's path: what the handlers (`proxy.rs`, `messages.rs`) call to
//! select them, run `pre_call` ones on the body (re-encoding it only when one changed it),
//! run `during_call` ones beside the upstream call, and run `post_call` ones on a whole
//! answer or on a stream held back until its end.

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use serde_json::Value;
use tollgate_domain::config::GuardrailMode;
use tollgate_domain::json::TopLevel;
use tollgate_domain::{Endpoint, GatewayError};
use tollgate_providers::{ProviderError, StreamBody};

use super::{
    Blocked, CallContext, GuardedAnswer, GuardedRequest, Guardrails, Selection, run_on_answer, run_on_delta,
    run_on_request,
};
use crate::App;
use crate::tenancy::Access;

/// Which API's shapes the request and answer have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flavor {
    /// OpenAI chat: `messages`, answers in `choices[].message.content`, deltas in
    /// `choices[].delta.content`.
    Chat,
    /// OpenAI legacy completions: a string `prompt`, answers in `choices[].text`.
    Completions,
    /// Anthropic messages (`/v1/messages`): `messages` with content blocks; the answer is
    /// checked in the canonical (chat) shape before it is translated back.
    Anthropic,
}

impl Flavor {
    pub(crate) fn of(endpoint: Endpoint) -> Option<Self> {
        match endpoint {
            Endpoint::ChatCompletions => Some(Self::Chat),
            Endpoint::Completions => Some(Self::Completions),
            Endpoint::Embeddings | Endpoint::Rerank => None,
        }
    }
}

/// The guardrails chosen for one request and their per-request state.
pub(crate) struct Guard<'a> {
    guardrails: &'a Guardrails,
    selection: Selection,
    context: CallContext<'a>,
    metrics: &'a crate::metrics::Metrics,
    memo: http::Extensions,
    flavor: Flavor,
    /// The messages as they went upstream, for `during_call` guardrails.
    messages: Vec<Value>,
}

/// A request or answer a guardrail stopped, or a stream that broke while held back.
pub(crate) enum Stopped {
    Blocked(Blocked),
    Failed(GatewayError),
}

impl<'a> Guard<'a> {
    /// The guardrails that run on this request, if any (see [`Guardrails::select`]).
    pub(crate) fn select(
        app: &'a App,
        access: &'a Access,
        top: &TopLevel<'_>,
        model: &'a str,
        call_id: &'a str,
        flavor: Option<Flavor>,
    ) -> Result<Option<Self>, GatewayError> {
        let Some(guardrails) = app.guardrails.as_deref() else { return Ok(None) };
        let Some(selection) = guardrails.select(top, access, model)? else { return Ok(None) };
        // Embeddings and rerank carry no conversation: the names are checked, nothing runs.
        let Some(flavor) = flavor else { return Ok(None) };
        let principal = access.principal();
        let context = CallContext {
            call_id,
            model,
            context_window: app.router.context_window(model),
            encoding: app.router.encoding(model),
            key_hash: principal.map(|p| p.key.token.as_str()),
            key_alias: principal.and_then(|p| p.key.key_alias.as_deref()),
            team_id: principal.and_then(|p| p.key.team_id.as_deref()),
            key_metadata: principal.map(|p| &p.key.metadata.0),
            team_metadata: principal.and_then(|p| p.team.as_ref()).map(|team| &team.metadata.0),
        };
        Ok(Some(Self {
            guardrails,
            selection,
            context,
            metrics: &app.metrics,
            memo: http::Extensions::new(),
            flavor,
            messages: Vec::new(),
        }))
    }

    pub(crate) fn has(&self, mode: GuardrailMode) -> bool {
        self.selection.has(self.guardrails, mode)
    }

    /// Runs the `pre_call` guardrails; `Ok(Some(body))` is the request re-encoded because
    /// one of them changed it.
    pub(crate) async fn pre_call(&mut self, top: &TopLevel<'_>) -> Result<Option<Vec<u8>>, Stopped> {
        // `metadata.guardrails` steers the gateway: it never goes upstream (OpenAI takes
        // only string values in `metadata`).
        let metadata = metadata_without_guardrails(top);
        let needs_messages = self.has(GuardrailMode::PreCall) || self.has(GuardrailMode::DuringCall);
        if !needs_messages {
            return Ok(metadata.map(|metadata| top.rewrite(&[("metadata", &metadata)])));
        }
        let mut prompt = Prompt::read(top, self.flavor).map_err(Stopped::Failed)?;
        prompt.metadata = metadata;
        let mut request = GuardedRequest {
            context: self.context,
            messages: &mut prompt.messages,
            max_tokens: &mut prompt.max_tokens,
            memo: &mut self.memo,
        };
        let modified = run_on_request(
            self.guardrails,
            &self.selection,
            GuardrailMode::PreCall,
            &mut request,
            self.metrics,
        )
        .await
        .map_err(Stopped::Blocked)?;
        let body = (modified || prompt.metadata.is_some()).then(|| prompt.write(top, self.flavor));
        self.messages = prompt.messages;
        Ok(body)
    }

    /// The messages as the `logging_only` guardrails leave them, for what is logged (the
    /// request goes upstream unchanged); `None` when none is selected or none changed them.
    pub(crate) async fn logged_messages(&self, top: &TopLevel<'_>) -> Option<String> {
        if !self.has(GuardrailMode::LoggingOnly) {
            return None;
        }
        let messages = Prompt::read(top, self.flavor).ok()?.messages;
        // A block here stops nothing: it only means the text is not logged at all.
        match self.on_copy(GuardrailMode::LoggingOnly, messages).await {
            (Ok(true), messages) => Some(Value::Array(messages).to_string()),
            (Ok(false), _) => None,
            (Err(_), _) => Some("\"[blocked by a logging_only guardrail]\"".to_owned()),
        }
    }

    /// The `during_call` guardrails over the messages as sent; `Err` when one blocks.
    pub(crate) async fn during_call(&self) -> Result<(), Blocked> {
        self.on_copy(GuardrailMode::DuringCall, self.messages.clone()).await.0.map(|_| ())
    }

    /// Runs the `mode` guardrails on `messages`, with no `max_tokens` and a memo of their own:
    /// nothing they change goes upstream.
    async fn on_copy(
        &self,
        mode: GuardrailMode,
        mut messages: Vec<Value>,
    ) -> (Result<bool, Blocked>, Vec<Value>) {
        let (mut max_tokens, mut memo) = (None, http::Extensions::new());
        let mut request = GuardedRequest {
            context: self.context,
            messages: &mut messages,
            max_tokens: &mut max_tokens,
            memo: &mut memo,
        };
        let outcome =
            run_on_request(self.guardrails, &self.selection, mode, &mut request, self.metrics).await;
        (outcome, messages)
    }

    /// Runs the `post_call` guardrails on a whole answer; the answer comes back re-encoded
    /// only when one of them changed it.
    pub(crate) async fn post_call(&mut self, bytes: Bytes) -> Result<Bytes, Blocked> {
        let Ok(mut answer) = serde_json::from_slice::<Value>(&bytes) else { return Ok(bytes) };
        let mut texts = answer_texts(&mut answer, self.flavor).iter().map(|text| (*text).clone()).collect();
        let mut guarded = GuardedAnswer { context: self.context, texts: &mut texts, memo: &mut self.memo };
        if !run_on_answer(self.guardrails, &self.selection, &mut guarded, self.metrics).await? {
            return Ok(bytes);
        }
        for (slot, text) in answer_texts(&mut answer, self.flavor).into_iter().zip(texts) {
            *slot = text;
        }
        Ok(Bytes::from(serde_json::to_vec(&answer).unwrap_or_else(|_| bytes.to_vec())))
    }

    /// Holds a stream back to its end (checking each text delta on the way), runs the
    /// `post_call` guardrails on the assembled text, and gives back a stream of the same
    /// events, whose text is replaced when a guardrail changed it: the first event of each
    /// choice carries the new text, the later ones none.
    pub(crate) async fn post_call_stream(&mut self, mut stream: StreamBody) -> Result<StreamBody, Stopped> {
        let mut held = BytesMut::new();
        let mut scanned = 0;
        let mut texts: Vec<String> = Vec::new();
        while let Some(frame) = stream.frame().await {
            let frame = frame.map_err(|error| Stopped::Failed(GatewayError::from(error)))?;
            let Ok(data) = frame.into_data() else { continue };
            held.extend_from_slice(&data);
            // Whole lines only: an event may be split across frames.
            let Some(end) = held[scanned..].iter().rposition(|&b| b == b'\n').map(|at| scanned + at + 1)
            else {
                continue;
            };
            for line in held[scanned..end].split(|&b| b == b'\n') {
                for (index, delta) in deltas(line, self.flavor) {
                    run_on_delta(self.guardrails, &self.selection, &self.context, &delta, self.metrics)
                        .await
                        .map_err(Stopped::Blocked)?;
                    if texts.len() <= index {
                        texts.resize(index + 1, String::new());
                    }
                    texts[index].push_str(&delta);
                }
            }
            scanned = end;
        }
        let mut guarded = GuardedAnswer { context: self.context, texts: &mut texts, memo: &mut self.memo };
        let modified = run_on_answer(self.guardrails, &self.selection, &mut guarded, self.metrics)
            .await
            .map_err(Stopped::Blocked)?;
        let held = if modified { rewrite_stream(&held, self.flavor, &texts) } else { held.freeze() };
        Ok(http_body_util::Full::new(held)
            .map_err(|never: std::convert::Infallible| -> ProviderError { match never {} })
            .boxed())
    }
}

/// A request's conversation, decoded for guardrails.
struct Prompt {
    messages: Vec<Value>,
    max_tokens: Option<u64>,
    /// Which field held `max_tokens` (`max_completion_tokens` when the request used it).
    max_field: &'static str,
    asked_max_tokens: Option<u64>,
    /// The request's `metadata` re-encoded without `guardrails`, when it had them.
    metadata: Option<String>,
}

impl Prompt {
    fn read(top: &TopLevel<'_>, flavor: Flavor) -> Result<Self, GatewayError> {
        let bad = |field: &str, e: serde_json::Error| {
            GatewayError::bad_request(format!("invalid value for `{field}`: {e}")).with_param(field)
        };
        let messages = match flavor {
            Flavor::Chat | Flavor::Anthropic => {
                top.decode::<Vec<Value>>("messages").map_err(|e| bad("messages", e))?.unwrap_or_default()
            }
            // A prompt that is not one string (token ids, a batch) is left as it is.
            Flavor::Completions => match top.decode::<Value>("prompt").map_err(|e| bad("prompt", e))? {
                Some(Value::String(prompt)) => vec![serde_json::json!({"role": "user", "content": prompt})],
                _ => Vec::new(),
            },
        };
        let max_field =
            if top.contains("max_completion_tokens") { "max_completion_tokens" } else { "max_tokens" };
        let max_tokens = top.decode::<u64>(max_field).map_err(|e| bad(max_field, e))?;
        Ok(Self { messages, max_tokens, max_field, asked_max_tokens: max_tokens, metadata: None })
    }

    fn write(&self, top: &TopLevel<'_>, flavor: Flavor) -> Vec<u8> {
        let messages = match flavor {
            Flavor::Completions => {
                let prompt =
                    self.messages.first().and_then(|m| m.get("content")).cloned().unwrap_or_default();
                ("prompt", prompt.to_string())
            }
            _ => ("messages", Value::Array(self.messages.clone()).to_string()),
        };
        let max_tokens = self.max_tokens.map(|n| n.to_string());
        let mut replacements = vec![messages];
        if let Some(metadata) = &self.metadata {
            replacements.push(("metadata", metadata.clone()));
        }
        if let Some(n) = &max_tokens
            && self.max_tokens != self.asked_max_tokens
        {
            replacements.push((self.max_field, n.clone()));
        }
        let replacements: Vec<(&str, &str)> = replacements.iter().map(|(k, v)| (*k, v.as_str())).collect();
        top.rewrite(&replacements)
    }
}

/// The request's `metadata` without its `guardrails`, re-encoded; `None` when it has none.
fn metadata_without_guardrails(top: &TopLevel<'_>) -> Option<String> {
    let raw = top
        .get("metadata")
        .filter(|raw| memchr::memmem::find(raw.get().as_bytes(), b"guardrails").is_some())?;
    let mut metadata: serde_json::Map<String, Value> = serde_json::from_str(raw.get()).ok()?;
    metadata.remove("guardrails")?;
    Some(Value::Object(metadata).to_string())
}

/// Where each choice holds its text: a whole answer's message, or a stream chunk's delta.
fn text_pointer(flavor: Flavor, delta: bool) -> &'static str {
    match (flavor, delta) {
        (Flavor::Completions, _) => "/text",
        (_, false) => "/message/content",
        (_, true) => "/delta/content",
    }
}

/// The answer's texts, in order: each choice's message (or text). `/v1/messages` answers
/// are checked in the canonical chat shape, before they are translated back.
fn answer_texts(answer: &mut Value, flavor: Flavor) -> Vec<&mut String> {
    let pointer = text_pointer(flavor, false);
    answer
        .get_mut("choices")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter_map(|choice| match choice.pointer_mut(pointer) {
            Some(Value::String(text)) => Some(text),
            _ => None,
        })
        .collect()
}

/// The text deltas of one SSE line: (choice index, text).
pub(super) fn deltas(line: &[u8], flavor: Flavor) -> Vec<(usize, String)> {
    let Some(payload) = line.strip_prefix(b"data:") else { return Vec::new() };
    let payload = payload.trim_ascii();
    if payload.is_empty() || payload == b"[DONE]" {
        return Vec::new();
    }
    let Ok(event) = serde_json::from_slice::<Value>(payload) else { return Vec::new() };
    event
        .get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|choice| {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
            let text = choice.pointer(text_pointer(flavor, true));
            text.and_then(Value::as_str).filter(|text| !text.is_empty()).map(|text| (index, text.to_owned()))
        })
        .collect()
}

/// The held stream with each choice's text replaced by `texts`: the first delta of a
/// choice carries its whole new text, the later deltas an empty one.
pub(super) fn rewrite_stream(held: &[u8], flavor: Flavor, texts: &[String]) -> Bytes {
    let mut written = vec![false; texts.len()];
    let mut out = Vec::with_capacity(held.len());
    for (i, line) in held.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        let rewritten = line
            .strip_prefix(b"data:")
            .map(<[u8]>::trim_ascii)
            .filter(|payload| !deltas(line, flavor).is_empty() && *payload != b"[DONE]")
            .and_then(|payload| serde_json::from_slice::<Value>(payload).ok())
            .map(|mut event| {
                let mut slots: Vec<(usize, &mut Value)> = event
                    .get_mut("choices")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                    .filter_map(|choice| {
                        let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0) as usize;
                        let slot = choice.pointer_mut(text_pointer(flavor, true));
                        slot.filter(|slot| slot.as_str().is_some_and(|text| !text.is_empty()))
                            .map(|slot| (index, slot))
                    })
                    .collect();
                for (index, slot) in &mut slots {
                    let text = match written.get_mut(*index) {
                        Some(done) if !*done => {
                            *done = true;
                            texts[*index].clone()
                        }
                        _ => String::new(),
                    };
                    **slot = Value::String(text);
                }
                event
            });
        match rewritten {
            Some(event) => {
                out.extend_from_slice(b"data: ");
                out.extend_from_slice(event.to_string().as_bytes());
            }
            None => out.extend_from_slice(line),
        }
    }
    Bytes::from(out)
}
