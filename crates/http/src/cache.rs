//! The response cache: exact-match answers to repeated requests, as LiteLLM's proxy caches.
//!
//! A request's key is the SHA-256 of a canonical JSON (object keys sorted, whitespace and
//! string escapes normalized) of its scope (everyone, its team or its key; see
//! [`CacheScope`]), its model group, its call type, and every top-level field of the body that
//! can change the answer: everything except `model` (the group stands for it), `stream`,
//! `stream_options`, `user`, `metadata`, the cache controls and the gateway's own routing
//! fields. With a namespace the key reads `namespace:hex`, as LiteLLM writes it, and it is
//! sent back in `x-litellm-cache-key` on hits and misses alike.
//!
//! What is kept is the upstream's answer before the gateway touches it (the alias is put in
//! on the way out): a complete JSON answer, or a stream's SSE events byte for byte, replayed
//! as one burst. A streamed and a plain request share a key: an entry of the other kind is
//! converted (events assembled into one answer, or an answer cut into chunk events).
//! Embeddings are kept per input item, so a batch with some items cached sends only the
//! others upstream. A hit costs 0 and never reaches an upstream.
//!
//! Per request, as LiteLLM: a `cache` object in the body (`no-cache`: skip the lookup,
//! `no-store`: do not keep the answer, `ttl`, `s-maxage`, `namespace`, and `use-cache` for
//! `mode: default_off`), or a `Cache-Control` header (`no-cache`, `no-store`, `max-age` /
//! `s-maxage`); the body wins where both speak.
//!
//! Admin routes: `GET /cache/ping`, `POST /cache/delete` (`{"keys": [...]}`) and
//! `POST /cache/flushall`, which clears this gateway's namespace only.

use std::borrow::Cow;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tollgate_domain::json::quote;
use tollgate_domain::pricing::Usage;
use tollgate_domain::{CacheBackend, CacheConfig, CacheScope, Deployment, ErrorKind, GatewayError};
use tollgate_providers::{ProviderError, StreamBody};
use tollgate_storage::StoreError;
use tollgate_storage::cache::{CacheStore, DEFAULT_LOCAL_CAPACITY, MAX_ENTRY_BYTES, RedisOptions};

use crate::metrics::CacheCounters;
use crate::proxy::{Attempts, Timing, add_litellm_headers};
use crate::relay::AliasRelay;
use crate::spend::{Meter, MeteredCall};
use crate::tenancy::Access;
use crate::{App, ResponseBody, json_response};

/// The response header naming the cache key, as LiteLLM sends it.
pub const CACHE_KEY_HEADER: &str = "x-litellm-cache-key";

/// Top-level request fields that never change the answer, left out of the key.
const NOT_IN_KEY: &[&str] = &[
    "model",
    "stream",
    "stream_options",
    "user",
    "metadata",
    "litellm_metadata",
    "cache",
    "caching",
    "fallbacks",
    "num_retries",
    "mock_testing_fallbacks",
    "timeout",
    "request_timeout",
    "tags",
    "litellm_session_id",
    "litellm_trace_id",
];

/// How long start-up waits for Redis before serving without it.
const REDIS_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The endpoints the cache serves, by LiteLLM's call type names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CallKind {
    Chat,
    Completions,
    Embeddings,
    Messages,
    Rerank,
}

impl CallKind {
    /// The call kind of an OpenAI endpoint.
    pub(crate) fn of(endpoint: tollgate_domain::Endpoint) -> Self {
        match endpoint {
            tollgate_domain::Endpoint::ChatCompletions => Self::Chat,
            tollgate_domain::Endpoint::Completions => Self::Completions,
            tollgate_domain::Endpoint::Embeddings => Self::Embeddings,
            tollgate_domain::Endpoint::Rerank => Self::Rerank,
        }
    }

    /// LiteLLM's names for the call type, as `supported_call_types` lists them.
    fn names(self) -> &'static [&'static str] {
        match self {
            Self::Chat => &["acompletion", "completion"],
            Self::Completions => &["atext_completion", "text_completion"],
            Self::Embeddings => &["aembedding", "embedding"],
            Self::Messages => &["anthropic_messages"],
            Self::Rerank => &["arerank", "rerank"],
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Self::Chat => "chat",
            Self::Completions => "completions",
            Self::Embeddings => "embeddings",
            Self::Messages => "messages",
            Self::Rerank => "rerank",
        }
    }
}

/// The response cache of one gateway, shared by all its workers.
pub struct ResponseCache {
    store: CacheStore,
    namespace: Option<String>,
    ttl: Option<Duration>,
    scope: CacheScope,
    default_on: bool,
    /// Which of [`CallKind`]'s endpoints are cached, in its order.
    endpoints: [bool; 5],
    /// What `/cache/ping` reports as `litellm_cache_params`.
    params: Value,
    counters: CacheCounters,
}

impl fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseCache").field("store", &self.store).field("scope", &self.scope).finish()
    }
}

impl ResponseCache {
    /// Opens the configured cache; with Redis, waits briefly for the first connection (the
    /// gateway starts without it when Redis is away, and connects when it returns).
    pub async fn open(config: &CacheConfig, counters: CacheCounters) -> Result<Self, StoreError> {
        let store = match &config.backend {
            CacheBackend::Local => CacheStore::local(DEFAULT_LOCAL_CAPACITY),
            CacheBackend::Redis { url } => {
                let errors = counters.redis_errors.clone();
                let options = RedisOptions {
                    url: url.expose().to_owned(),
                    command_timeout: config.redis_timeout,
                    connect_timeout: REDIS_CONNECT_TIMEOUT.max(config.redis_timeout),
                    on_error: Arc::new(move || {
                        errors.inc();
                    }),
                };
                CacheStore::redis(options, DEFAULT_LOCAL_CAPACITY).await?
            }
        };
        let supports = |kind: CallKind| match &config.supported_call_types {
            None => true,
            Some(listed) => listed.iter().any(|name| kind.names().contains(&name.as_str())),
        };
        let scope = match config.scope {
            CacheScope::Global => "global",
            CacheScope::Team => "team",
            CacheScope::Key => "key",
        };
        let params = json!({
            "type": store.kind(),
            "namespace": config.namespace,
            "ttl": config.ttl.map(|ttl| ttl.as_secs_f64()),
            "supported_call_types": config.supported_call_types,
            "mode": if config.default_on { "default_on" } else { "default_off" },
            "cache_scope": scope,
        });
        Ok(Self {
            store,
            namespace: config.namespace.clone(),
            ttl: config.ttl,
            scope: config.scope,
            default_on: config.default_on,
            endpoints: [
                CallKind::Chat,
                CallKind::Completions,
                CallKind::Embeddings,
                CallKind::Messages,
                CallKind::Rerank,
            ]
            .map(supports),
            params,
            counters,
        })
    }

    /// `local` or `redis`.
    pub fn kind(&self) -> &'static str {
        self.store.kind()
    }

    /// Whether the cache's Redis answers; `None` for the in-process cache.
    pub fn redis_status(&self) -> Option<bool> {
        self.store.redis_up()
    }

    fn serves(&self, call: CallKind) -> bool {
        self.endpoints[call as usize]
    }

    /// The cache's part in a request, or `None` when it takes none (call type not cached,
    /// opt-in mode without `use-cache`, or both `no-cache` and `no-store`).
    pub(crate) fn plan(
        &self,
        call: CallKind,
        controls: &Controls,
        access: &Access,
        model: &str,
        body: &[u8],
    ) -> Result<Option<Plan>, GatewayError> {
        let Some(decision) = self.decide(call, controls) else { return Ok(None) };
        let mut digest = self.key_digest(call, access, model);
        let fields = top_level(body)?;
        write_object(
            fields.into_iter().filter(|(name, _)| !NOT_IN_KEY.contains(&name.as_ref())),
            &mut digest,
        )?;
        Ok(Some(decision.plan(self.full_key(digest, controls))))
    }

    fn decide(&self, call: CallKind, controls: &Controls) -> Option<Decision> {
        if !self.serves(call) || (!self.default_on && !controls.use_cache) {
            return None;
        }
        let decision = Decision {
            lookup: !controls.no_cache,
            store: !controls.no_store,
            ttl: controls.ttl.or(self.ttl),
            max_age: controls.max_age,
        };
        (decision.lookup || decision.store).then_some(decision)
    }

    /// A digest holding what every key of this request starts with: format, call type,
    /// scope and model group.
    fn key_digest(&self, call: CallKind, access: &Access, model: &str) -> Sha256Writer {
        let mut digest = Sha256Writer(Sha256::new());
        digest.0.update(b"tollgate-cache-1\0");
        digest.0.update(call.tag().as_bytes());
        digest.0.update(b"\0");
        match (self.scope, access) {
            (CacheScope::Global, _) | (_, Access::Open) => {}
            (_, Access::Master) => digest.0.update(b"master"),
            (CacheScope::Team, Access::Key(principal)) => match &principal.key.team_id {
                Some(team) => {
                    digest.0.update(b"team:");
                    digest.0.update(team.as_bytes());
                }
                None => {
                    digest.0.update(b"key:");
                    digest.0.update(principal.key.token.as_bytes());
                }
            },
            (CacheScope::Key, Access::Key(principal)) => {
                digest.0.update(b"key:");
                digest.0.update(principal.key.token.as_bytes());
            }
        }
        digest.0.update(b"\0");
        digest.0.update(model.as_bytes());
        digest.0.update(b"\0");
        digest
    }

    /// `namespace:hex` (the request's namespace first), or the bare hex.
    fn full_key(&self, digest: Sha256Writer, controls: &Controls) -> String {
        let hash = digest.0.finalize();
        let namespace = controls.namespace.as_deref().or(self.namespace.as_deref());
        let mut key = String::with_capacity(namespace.map_or(0, |n| n.len() + 1) + 64);
        if let Some(namespace) = namespace {
            key.push_str(namespace);
            key.push(':');
        }
        for byte in hash.iter() {
            key.push(char::from(HEX[usize::from(byte >> 4)]));
            key.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        key
    }

    /// The entry for `plan`, if it is to be looked up, present, and young enough.
    pub(crate) async fn lookup(&self, plan: &Plan) -> Option<Entry> {
        if !plan.lookup {
            return None;
        }
        let entry = self.store.get(&plan.key).await.and_then(|value| Entry::decode(value, plan.max_age));
        match &entry {
            Some(_) => self.counters.hits.inc(),
            None => self.counters.misses.inc(),
        };
        entry
    }

    /// Keeps an upstream answer under `plan`'s key, unless the request said `no-store`.
    pub(crate) fn store(&self, plan: &Plan, kind: EntryKind, payload: &[u8]) {
        if plan.store && payload.len() + HEADER_LEN <= MAX_ENTRY_BYTES {
            self.store.put(plan.key.clone(), Entry::encode(kind, payload), plan.ttl);
        }
    }

    /// Wraps an upstream stream so that, once it ends cleanly, its events are kept.
    pub(crate) fn record(self: &Arc<Self>, plan: &Plan, upstream: StreamBody) -> StreamBody {
        if !plan.store {
            return upstream;
        }
        Recorder {
            upstream,
            recording: Some(BytesMut::new()),
            cache: Arc::clone(self),
            key: plan.key.clone(),
            ttl: plan.ttl,
        }
        .boxed()
    }

    /// The per-item plan of an embeddings request, its cached items already looked up;
    /// `None` when the cache takes no part or the input is not a list of items it can key.
    pub(crate) async fn embeddings(
        &self,
        controls: &Controls,
        access: &Access,
        model: &str,
        body: &[u8],
    ) -> Result<Option<EmbeddingSplit>, GatewayError> {
        let Some(decision) = self.decide(CallKind::Embeddings, controls) else { return Ok(None) };
        let fields = top_level(body)?;
        let Some(input) = fields.iter().find(|(name, _)| name == "input").map(|(_, raw)| *raw) else {
            return Ok(None);
        };
        let Some((items, listed)) = input_items(input) else { return Ok(None) };
        let mut digest = self.key_digest(CallKind::Embeddings, access, model);
        let rest =
            fields.into_iter().filter(|(name, _)| name != "input" && !NOT_IN_KEY.contains(&name.as_ref()));
        write_object(rest, &mut digest)?;
        digest.0.update(b"\0");
        let mut keys = Vec::with_capacity(items.len());
        for item in &items {
            let mut item_digest = Sha256Writer(digest.0.clone());
            write_canonical(item, &mut item_digest)?;
            keys.push(self.full_key(item_digest, controls));
        }
        let cached: Vec<Option<CachedEmbedding>> = if decision.lookup {
            let found: Vec<Option<CachedEmbedding>> = self
                .store
                .get_many(&keys)
                .await
                .into_iter()
                .map(|value| {
                    value
                        .and_then(|v| Entry::decode(v, decision.max_age))
                        .and_then(CachedEmbedding::from_entry)
                })
                .collect();
            let hits = found.iter().filter(|f| f.is_some()).count() as u64;
            self.counters.hits.inc_by(hits);
            self.counters.misses.inc_by(found.len() as u64 - hits);
            found
        } else {
            vec![None; keys.len()]
        };
        let items = items.into_iter().map(|raw| raw.get().to_owned()).collect();
        Ok(Some(EmbeddingSplit { keys, items, listed, cached, store: decision.store, ttl: decision.ttl }))
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// What the configuration and the request's controls decided, before the key is known.
struct Decision {
    lookup: bool,
    store: bool,
    ttl: Option<Duration>,
    max_age: Option<Duration>,
}

impl Decision {
    fn plan(self, key: String) -> Plan {
        Plan { key, lookup: self.lookup, store: self.store, ttl: self.ttl, max_age: self.max_age }
    }
}

/// The cache's part in one request.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The full key, namespace included: what `x-litellm-cache-key` says.
    pub(crate) key: String,
    lookup: bool,
    store: bool,
    ttl: Option<Duration>,
    max_age: Option<Duration>,
}

impl Plan {
    /// The `x-litellm-cache-key` header.
    pub(crate) fn header(&self) -> Option<HeaderValue> {
        HeaderValue::from_str(&self.key).ok()
    }
}

/// A request's cache controls: its body's `cache` object, else its `Cache-Control` header.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Controls {
    no_cache: bool,
    no_store: bool,
    use_cache: bool,
    ttl: Option<Duration>,
    max_age: Option<Duration>,
    namespace: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheField {
    #[serde(rename = "no-cache")]
    no_cache: Option<bool>,
    #[serde(rename = "no-store")]
    no_store: Option<bool>,
    #[serde(rename = "use-cache")]
    use_cache: Option<bool>,
    ttl: Option<f64>,
    #[serde(rename = "s-maxage", alias = "s-max-age")]
    max_age: Option<f64>,
    namespace: Option<String>,
}

impl Controls {
    /// Reads the `cache` field (raw JSON, if the body has one) over the `Cache-Control` header.
    pub(crate) fn read(cache_field: Option<&str>, headers: &HeaderMap) -> Result<Self, GatewayError> {
        let mut controls = Self::default();
        for directive in headers
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
        {
            let directive = directive.trim().to_ascii_lowercase();
            match directive.split_once('=') {
                None if directive == "no-cache" => controls.no_cache = true,
                None if directive == "no-store" => controls.no_store = true,
                Some(("max-age" | "s-maxage", secs)) => {
                    controls.max_age =
                        secs.trim().trim_matches('"').parse::<u64>().ok().map(Duration::from_secs);
                }
                _ => {}
            }
        }
        let Some(raw) = cache_field.filter(|raw| raw.trim() != "null") else { return Ok(controls) };
        let invalid = |reason: String| {
            GatewayError::bad_request(format!("invalid value for `cache`: {reason}")).with_param("cache")
        };
        let field: CacheField = serde_json::from_str(raw).map_err(|e| invalid(e.to_string()))?;
        let seconds = |value: Option<f64>, name: &str| -> Result<Option<Duration>, GatewayError> {
            value
                .map(|secs| {
                    Duration::try_from_secs_f64(secs)
                        .map_err(|_| invalid(format!("`{name}` must be a non-negative number of seconds")))
                })
                .transpose()
        };
        if let Some(no_cache) = field.no_cache {
            controls.no_cache = no_cache;
        }
        if let Some(no_store) = field.no_store {
            controls.no_store = no_store;
        }
        controls.use_cache = field.use_cache.unwrap_or(false);
        if let Some(ttl) = seconds(field.ttl, "ttl")? {
            if ttl.is_zero() {
                return Err(invalid("`ttl` must be greater than 0".into()));
            }
            controls.ttl = Some(ttl);
        }
        if let Some(max_age) = seconds(field.max_age, "s-maxage")? {
            controls.max_age = Some(max_age);
        }
        controls.namespace = field.namespace.filter(|n| !n.is_empty());
        Ok(controls)
    }
}

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum EntryKind {
    /// A complete JSON answer.
    Complete,
    /// A stream's SSE events, as the upstream sent them.
    Stream,
    /// One embedding: its prompt tokens and its `embedding` value.
    Embedding,
}

/// `TGc1`, the kind, the time it was stored (ms since the epoch, little endian), the payload.
const MAGIC: &[u8; 4] = b"TGc1";
const HEADER_LEN: usize = 13;

/// A cached value, decoded.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) kind: EntryKind,
    pub(crate) payload: Bytes,
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl Entry {
    fn encode(kind: EntryKind, payload: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len());
        out.extend_from_slice(MAGIC);
        out.push(match kind {
            EntryKind::Complete => b'C',
            EntryKind::Stream => b'S',
            EntryKind::Embedding => b'E',
        });
        out.extend_from_slice(&now_millis().to_le_bytes());
        out.extend_from_slice(payload);
        Bytes::from(out)
    }

    /// The entry in `value`, unless it is not one of ours or older than `max_age`.
    fn decode(value: Bytes, max_age: Option<Duration>) -> Option<Self> {
        if value.len() < HEADER_LEN || &value[..4] != MAGIC {
            return None;
        }
        let kind = match value[4] {
            b'C' => EntryKind::Complete,
            b'S' => EntryKind::Stream,
            b'E' => EntryKind::Embedding,
            _ => return None,
        };
        let stored = u64::from_le_bytes(value[5..HEADER_LEN].try_into().ok()?);
        if let Some(max_age) = max_age
            && now_millis().saturating_sub(stored) > u64::try_from(max_age.as_millis()).unwrap_or(u64::MAX)
        {
            return None;
        }
        Some(Self { kind, payload: value.slice(HEADER_LEN..) })
    }
}

/// What answering a request from the cache needs to know about it.
pub(crate) struct Hit<'a> {
    pub(crate) app: &'a App,
    pub(crate) access: &'a Access,
    /// LiteLLM's call type, for the spend log row.
    pub(crate) call_type: &'static str,
    /// The model the client named (the alias the answer carries) and the group it resolved to.
    pub(crate) requested: &'a str,
    pub(crate) model: &'a str,
    pub(crate) end_user: Option<&'a str>,
    pub(crate) call_id: &'a str,
    pub(crate) started: Instant,
    pub(crate) stream: bool,
    /// The client asked for the usage chunk (`stream_options.include_usage`).
    pub(crate) client_wants_usage: bool,
    pub(crate) progress: Option<&'a Arc<crate::observe::Progress>>,
}

impl Hit<'_> {
    /// A meter that charges nothing and logs a cache hit, with the group's first deployment
    /// standing for the answer's origin; `None` when the group no longer exists.
    pub(crate) fn meter(&self) -> Option<(Meter, Arc<Deployment>)> {
        let deployment = Arc::clone(self.app.router.group(self.model)?.first()?);
        let call = MeteredCall {
            call_id: self.call_id,
            call_type: self.call_type,
            started: self.started,
            progress: self.progress,
        };
        let meter =
            Meter::new(self.app, self.access, self.model, self.end_user, &deployment, &call).cache_hit();
        Some((meter, deployment))
    }

    /// A chat or text completion answer from `entry`, converted when the entry is of the
    /// other kind (a stream for a plain request, or the reverse); `None` when it cannot be.
    pub(crate) fn answer(&self, entry: Entry, key: Option<HeaderValue>) -> Option<Response<ResponseBody>> {
        let (mut meter, deployment) = self.meter()?;
        let alias = alias_json(self.requested);
        let response = match (entry.kind, self.stream) {
            (EntryKind::Complete, false) => self.complete(entry.payload, &mut meter, &alias),
            (EntryKind::Stream, false) => {
                self.complete(stream_to_complete(&entry.payload)?, &mut meter, &alias)
            }
            (EntryKind::Stream, true) => self.stream(entry.payload, meter, alias),
            (EntryKind::Complete, true) => self.stream(complete_to_stream(&entry.payload)?, meter, alias),
            (EntryKind::Embedding, _) => return None,
        };
        Some(self.finish(response, &deployment, key))
    }

    fn complete(&self, answer: Bytes, meter: &mut Meter, alias: &str) -> Response<ResponseBody> {
        if let Some(usage) = crate::spend::usage_in(&answer) {
            meter.record(&usage);
        }
        json_response(StatusCode::OK, crate::proxy::with_alias(answer, alias))
    }

    fn stream(&self, events: Bytes, meter: Meter, alias: String) -> Response<ResponseBody> {
        let relay = AliasRelay::new(replay(events), alias).metered(meter, !self.client_wants_usage);
        crate::proxy::sse_response(relay.boxed_unsync())
    }

    /// The answer to an embeddings request whose every item was cached.
    pub(crate) fn answer_embeddings(&self, split: &EmbeddingSplit) -> Option<Response<ResponseBody>> {
        let (mut meter, deployment) = self.meter()?;
        let (answer, usage) = split.cached_answer(&alias_json(self.requested));
        meter.record(&usage);
        let response = json_response(StatusCode::OK, answer);
        Some(self.finish(response, &deployment, split.header()))
    }

    /// LiteLLM's headers on a hit: no upstream time, no retries, cost 0, the cache key.
    pub(crate) fn finish(
        &self,
        mut response: Response<ResponseBody>,
        deployment: &Deployment,
        key: Option<HeaderValue>,
    ) -> Response<ResponseBody> {
        let timing = Timing { total: self.started.elapsed(), upstream: Duration::ZERO };
        let headers = response.headers_mut();
        add_litellm_headers(
            headers,
            self.call_id,
            self.model,
            deployment,
            timing,
            Attempts::default(),
            &HeaderMap::new(),
        );
        hit_headers(headers, key);
        if let Some(spend) =
            self.app.tenancy.as_ref().zip(self.access.principal()).map(|(t, p)| t.key_spend(p))
            && let Ok(value) = HeaderValue::from_str(&spend.to_string())
        {
            headers.insert("x-litellm-key-spend", value);
        }
        response
    }
}

/// Forwards an upstream stream and keeps a copy; a stream that ends cleanly (not cut off by
/// an error or a client going away, not larger than an entry may be) is stored.
struct Recorder {
    upstream: StreamBody,
    recording: Option<BytesMut>,
    cache: Arc<ResponseCache>,
    key: String,
    ttl: Option<Duration>,
}

impl Body for Recorder {
    type Data = Bytes;
    type Error = ProviderError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ProviderError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.upstream).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(recording)) = (frame.data_ref(), this.recording.as_mut()) {
                    if recording.len() + data.len() + HEADER_LEN > MAX_ENTRY_BYTES {
                        this.recording = None;
                    } else {
                        recording.extend_from_slice(data);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => this.recording = None,
            Poll::Ready(None) => {
                if let Some(events) = this.recording.take().filter(|events| !events.is_empty()) {
                    let value = Entry::encode(EntryKind::Stream, &events);
                    this.cache.store.put(std::mem::take(&mut this.key), value, this.ttl);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.upstream.is_end_stream()
    }
}

/// Stored events as an upstream stream again, in one frame.
pub(crate) fn replay(events: Bytes) -> StreamBody {
    http_body_util::Full::new(events).map_err(|never: Infallible| match never {}).boxed()
}

/// A complete chat or text completion as the SSE events a stream of it would have been:
/// one chunk with the whole message, one with the finish reason, the usage chunk, `[DONE]`.
pub(crate) fn complete_to_stream(answer: &[u8]) -> Option<Bytes> {
    let answer: Value = serde_json::from_slice(answer).ok()?;
    let chat = answer.get("object").and_then(Value::as_str) != Some("text_completion");
    let choices = answer.get("choices")?.as_array()?;
    let mut head = Map::new();
    for name in ["id", "created", "model", "system_fingerprint"] {
        if let Some(value) = answer.get(name) {
            head.insert(name.into(), value.clone());
        }
    }
    head.insert("object".into(), json!(if chat { "chat.completion.chunk" } else { "text_completion" }));
    let chunk = |choices: Vec<Value>| {
        let mut chunk = head.clone();
        chunk.insert("choices".into(), Value::Array(choices));
        Value::Object(chunk)
    };
    let mut content = Vec::new();
    let mut finish = Vec::new();
    for (position, choice) in choices.iter().enumerate() {
        let index = choice.get("index").cloned().unwrap_or(json!(position));
        let finish_reason = choice.get("finish_reason").cloned().unwrap_or(Value::Null);
        if chat {
            let mut delta = choice.get("message").and_then(Value::as_object).cloned().unwrap_or_default();
            if let Some(Value::Array(calls)) = delta.get_mut("tool_calls") {
                for (position, call) in calls.iter_mut().enumerate() {
                    if let Some(call) = call.as_object_mut() {
                        call.entry("index").or_insert(json!(position));
                    }
                }
            }
            content.push(json!({"index": index, "delta": delta, "finish_reason": null}));
            finish.push(json!({"index": index, "delta": {}, "finish_reason": finish_reason}));
        } else {
            let text = choice.get("text").cloned().unwrap_or(json!(""));
            content.push(json!({"index": index, "text": text, "logprobs": null, "finish_reason": null}));
            finish
                .push(json!({"index": index, "text": "", "logprobs": null, "finish_reason": finish_reason}));
        }
    }
    let mut events = Vec::new();
    let mut push = |value: &Value| {
        events.extend_from_slice(b"data: ");
        events.extend_from_slice(value.to_string().as_bytes());
        events.extend_from_slice(b"\n\n");
    };
    push(&chunk(content));
    push(&chunk(finish));
    if let Some(usage) = answer.get("usage").filter(|usage| usage.is_object()) {
        let mut last = chunk(Vec::new());
        last["usage"] = usage.clone();
        push(&last);
    }
    events.extend_from_slice(b"data: [DONE]\n\n");
    Some(Bytes::from(events))
}

/// A stream's chunk events assembled into the complete answer (`chat.completion` or
/// `text_completion`) a plain request would have had.
pub(crate) fn stream_to_complete(events: &[u8]) -> Option<Bytes> {
    let text = std::str::from_utf8(events).ok()?;
    let mut head: Option<Map<String, Value>> = None;
    let mut chat = true;
    let mut usage = Value::Null;
    // Per choice index: role, content, reasoning, tool calls (by their index), finish reason.
    let mut choices: Vec<(u64, AssembledChoice)> = Vec::new();
    for data in text.lines().filter_map(|line| line.strip_prefix("data:")).map(str::trim) {
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(data).ok()?;
        if chunk.get("error").is_some() {
            return None;
        }
        if head.is_none() {
            chat = chunk.get("object").and_then(Value::as_str) != Some("text_completion");
            let mut fields = Map::new();
            for name in ["id", "created", "model", "system_fingerprint"] {
                if let Some(value) = chunk.get(name) {
                    fields.insert(name.into(), value.clone());
                }
            }
            head = Some(fields);
        }
        if let Some(found) = chunk.get("usage").filter(|u| u.is_object()) {
            usage = found.clone();
        }
        for choice in chunk.get("choices").and_then(Value::as_array).into_iter().flatten() {
            let index = choice.get("index").and_then(Value::as_u64).unwrap_or(0);
            let position = match choices.iter().position(|(i, _)| *i == index) {
                Some(position) => position,
                None => {
                    choices.push((index, AssembledChoice::default()));
                    choices.len() - 1
                }
            };
            choices[position].1.add(choice, chat);
        }
    }
    let mut answer = head?;
    answer.insert("object".into(), json!(if chat { "chat.completion" } else { "text_completion" }));
    choices.sort_by_key(|(index, _)| *index);
    let choices = choices.into_iter().map(|(index, choice)| choice.finish(index, chat)).collect();
    answer.insert("choices".into(), Value::Array(choices));
    if !usage.is_null() {
        answer.insert("usage".into(), usage);
    }
    Some(Bytes::from(Value::Object(answer).to_string()))
}

#[derive(Default)]
struct AssembledChoice {
    role: Option<Value>,
    content: String,
    reasoning: String,
    /// By tool call index: id, name, arguments.
    tool_calls: Vec<(u64, Value, Value, String)>,
    finish_reason: Value,
}

impl AssembledChoice {
    fn add(&mut self, choice: &Value, chat: bool) {
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            self.finish_reason = reason.clone();
        }
        if !chat {
            self.content.push_str(choice.get("text").and_then(Value::as_str).unwrap_or_default());
            return;
        }
        let Some(delta) = choice.get("delta") else { return };
        if let Some(role) = delta.get("role").filter(|r| !r.is_null()) {
            self.role = Some(role.clone());
        }
        self.content.push_str(delta.get("content").and_then(Value::as_str).unwrap_or_default());
        self.reasoning.push_str(delta.get("reasoning_content").and_then(Value::as_str).unwrap_or_default());
        for call in delta.get("tool_calls").and_then(Value::as_array).into_iter().flatten() {
            let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
            let arguments = call.pointer("/function/arguments").and_then(Value::as_str).unwrap_or_default();
            match self.tool_calls.iter_mut().find(|(i, ..)| *i == index) {
                Some((_, _, _, so_far)) => so_far.push_str(arguments),
                None => self.tool_calls.push((
                    index,
                    call.get("id").cloned().unwrap_or(Value::Null),
                    call.pointer("/function/name").cloned().unwrap_or(Value::Null),
                    arguments.to_owned(),
                )),
            }
        }
    }

    fn finish(self, index: u64, chat: bool) -> Value {
        if !chat {
            return json!({"index": index, "text": self.content, "logprobs": null, "finish_reason": self.finish_reason});
        }
        let mut message = json!({"role": self.role.unwrap_or(json!("assistant")), "content": self.content});
        if !self.reasoning.is_empty() {
            message["reasoning_content"] = json!(self.reasoning);
        }
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = self
                .tool_calls
                .into_iter()
                .map(|(_, id, name, arguments)| {
                    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
                })
                .collect();
        }
        json!({"index": index, "message": message, "finish_reason": self.finish_reason})
    }
}

/// One cached embedding: the prompt tokens it cost and its raw `embedding` JSON.
#[derive(Clone, Debug)]
pub(crate) struct CachedEmbedding {
    tokens: u32,
    embedding: Bytes,
}

impl CachedEmbedding {
    fn from_entry(entry: Entry) -> Option<Self> {
        if entry.kind != EntryKind::Embedding || entry.payload.len() < 4 {
            return None;
        }
        let tokens = u32::from_le_bytes(entry.payload[..4].try_into().ok()?);
        Some(Self { tokens, embedding: entry.payload.slice(4..) })
    }
}

/// An embeddings request cut into its input items, each with its key and, when cached,
/// its embedding.
#[derive(Debug)]
pub(crate) struct EmbeddingSplit {
    keys: Vec<String>,
    /// Each item's raw JSON (a string, or an array of token ids).
    items: Vec<String>,
    /// Whether `input` was a list of items (else one string or one token array).
    listed: bool,
    cached: Vec<Option<CachedEmbedding>>,
    store: bool,
    ttl: Option<Duration>,
}

#[derive(serde::Deserialize)]
struct EmbeddingAnswer<'a> {
    #[serde(borrow)]
    data: Vec<EmbeddingItem<'a>>,
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

#[derive(serde::Deserialize)]
struct EmbeddingItem<'a> {
    index: Option<usize>,
    #[serde(borrow)]
    embedding: &'a RawValue,
}

impl EmbeddingSplit {
    /// Every item was cached: nothing goes upstream.
    pub(crate) fn all_cached(&self) -> bool {
        self.cached.iter().all(Option::is_some)
    }

    /// The key to name in `x-litellm-cache-key`: a one-item request's.
    pub(crate) fn header(&self) -> Option<HeaderValue> {
        match self.keys.as_slice() {
            [only] => HeaderValue::from_str(only).ok(),
            _ => None,
        }
    }

    /// The `input` to send upstream when some items are cached and others not: the missing
    /// ones, in order.
    pub(crate) fn upstream_input(&self) -> Option<String> {
        if !self.listed || self.cached.iter().all(Option::is_none) || self.all_cached() {
            return None;
        }
        let mut input = String::from("[");
        for (item, _) in self.items.iter().zip(&self.cached).filter(|(_, cached)| cached.is_none()) {
            if input.len() > 1 {
                input.push(',');
            }
            input.push_str(item);
        }
        input.push(']');
        Some(input)
    }

    /// The answer from cached items alone (all of them cached), `model` being the alias.
    pub(crate) fn cached_answer(&self, alias_json: &str) -> (Bytes, Usage) {
        let mut out = Vec::new();
        out.extend_from_slice(br#"{"object":"list","data":["#);
        let mut tokens = 0u64;
        for (index, cached) in self.cached.iter().flatten().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(
                format!(r#"{{"object":"embedding","index":{index},"embedding":"#).as_bytes(),
            );
            out.extend_from_slice(&cached.embedding);
            out.push(b'}');
            tokens += u64::from(cached.tokens);
        }
        out.extend_from_slice(br#"],"model":"#);
        out.extend_from_slice(alias_json.as_bytes());
        out.extend_from_slice(
            format!(r#","usage":{{"prompt_tokens":{tokens},"total_tokens":{tokens}}}}}"#).as_bytes(),
        );
        let usage = Usage { prompt_tokens: tokens, ..Usage::default() };
        (Bytes::from(out), usage)
    }

    /// Keeps each embedding the upstream computed, and returns the answer the client gets:
    /// the upstream's as it came when nothing was cached, else the cached and new items
    /// merged in the request's order (the usage being what the upstream charged).
    pub(crate) fn merge_and_store(
        &self,
        cache: &ResponseCache,
        upstream: Bytes,
    ) -> Result<Bytes, GatewayError> {
        let misses: Vec<usize> = (0..self.items.len()).filter(|&i| self.cached[i].is_none()).collect();
        let partial = misses.len() < self.items.len();
        let mismatch = || {
            GatewayError::new(
                ErrorKind::Upstream(502),
                "the upstream answered with a different number of embeddings than inputs",
            )
        };
        let answer: EmbeddingAnswer<'_> = match serde_json::from_slice(&upstream) {
            Ok(answer) => answer,
            Err(_) if !partial => return Ok(upstream),
            Err(error) => {
                return Err(GatewayError::new(
                    ErrorKind::Upstream(502),
                    format!("the upstream answered with invalid JSON: {error}"),
                ));
            }
        };
        if answer.data.len() != misses.len() {
            return if partial { Err(mismatch()) } else { Ok(upstream) };
        }
        let mut fresh: Vec<Option<&RawValue>> = vec![None; misses.len()];
        for (position, item) in answer.data.iter().enumerate() {
            let at = item.index.unwrap_or(position);
            match fresh.get_mut(at) {
                Some(slot @ None) => *slot = Some(item.embedding),
                _ => return if partial { Err(mismatch()) } else { Ok(upstream) },
            }
        }
        if self.store {
            let prompt_tokens = crate::spend::usage_in(&upstream).map_or(0, |usage| usage.prompt_tokens);
            let count = misses.len() as u64;
            let entries = misses
                .iter()
                .zip(&fresh)
                .enumerate()
                .filter_map(|(position, (&item, embedding))| {
                    // Split the batch's tokens evenly, the remainder going to the first items.
                    let share = prompt_tokens / count + u64::from((position as u64) < prompt_tokens % count);
                    let embedding = (*embedding)?.get();
                    let mut payload = Vec::with_capacity(4 + embedding.len());
                    payload.extend_from_slice(&u32::try_from(share).unwrap_or(u32::MAX).to_le_bytes());
                    payload.extend_from_slice(embedding.as_bytes());
                    Some((self.keys[item].clone(), Entry::encode(EntryKind::Embedding, &payload)))
                })
                .collect();
            cache.store.put_many(entries, self.ttl);
        }
        if !partial {
            return Ok(upstream);
        }
        let mut fresh = fresh.into_iter();
        let mut out = Vec::with_capacity(upstream.len() * 2);
        out.extend_from_slice(br#"{"object":"list","data":["#);
        for (index, cached) in self.cached.iter().enumerate() {
            if index > 0 {
                out.push(b',');
            }
            out.extend_from_slice(
                format!(r#"{{"object":"embedding","index":{index},"embedding":"#).as_bytes(),
            );
            match cached {
                Some(cached) => out.extend_from_slice(&cached.embedding),
                None => out.extend_from_slice(fresh.next().flatten().ok_or_else(mismatch)?.get().as_bytes()),
            }
            out.push(b'}');
        }
        out.extend_from_slice(br#"],"model":"#);
        out.extend_from_slice(answer.model.map_or("null", RawValue::get).as_bytes());
        if let Some(usage) = answer.usage {
            out.extend_from_slice(br#","usage":"#);
            out.extend_from_slice(usage.get().as_bytes());
        }
        out.push(b'}');
        Ok(Bytes::from(out))
    }
}

/// The items of an embeddings `input`: one string, one token array, or a list of either.
fn input_items(input: &RawValue) -> Option<(Vec<&RawValue>, bool)> {
    let text = input.get().trim_start();
    match text.as_bytes().first()? {
        b'"' => Some((vec![input], false)),
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_str(input.get()).ok()?;
            let first = items.first()?.get().trim_start().as_bytes().first().copied()?;
            if first == b'-' || first.is_ascii_digit() {
                Some((vec![input], false))
            } else {
                Some((items, true))
            }
        }
        _ => None,
    }
}

/// A SHA-256 that serde_json can write into.
struct Sha256Writer(Sha256);

impl std::io::Write for Sha256Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn bad_json(error: serde_json::Error) -> GatewayError {
    GatewayError::bad_request(format!("Invalid JSON in request body: {error}"))
}

/// The top-level fields of a request body, values undecoded.
fn top_level(body: &[u8]) -> Result<Vec<(Cow<'_, str>, &RawValue)>, GatewayError> {
    let text = std::str::from_utf8(body)
        .map_err(|e| GatewayError::bad_request(format!("request body is not UTF-8: {e}")))?;
    Ok(serde_json::from_str::<Fields<'_>>(text).map_err(bad_json)?.0)
}

/// Writes the fields as one canonical object: keys sorted (the last of duplicates wins, as
/// a JSON parser reads them), values canonical.
fn write_object<'a>(
    fields: impl Iterator<Item = (Cow<'a, str>, &'a RawValue)>,
    out: &mut Sha256Writer,
) -> Result<(), GatewayError> {
    let mut fields: Vec<(Cow<'a, str>, &'a RawValue)> = fields.collect();
    fields.sort_by(|a, b| a.0.cmp(&b.0));
    out.0.update(b"{");
    let mut first = true;
    for (position, (name, value)) in fields.iter().enumerate() {
        if fields.get(position + 1).is_some_and(|(next, _)| next == name) {
            continue;
        }
        if !first {
            out.0.update(b",");
        }
        first = false;
        serde_json::to_writer(&mut *out, name.as_ref()).map_err(bad_json)?;
        out.0.update(b":");
        write_canonical(value, out)?;
    }
    out.0.update(b"}");
    Ok(())
}

/// Writes `raw` canonically: objects with sorted keys, no insignificant whitespace, strings
/// re-escaped the one way serde_json escapes; numbers are kept as written.
fn write_canonical(raw: &RawValue, out: &mut Sha256Writer) -> Result<(), GatewayError> {
    let text = raw.get().trim();
    match text.as_bytes().first() {
        Some(b'{') => {
            write_object(serde_json::from_str::<Fields<'_>>(text).map_err(bad_json)?.0.into_iter(), out)
        }
        Some(b'[') => {
            let items: Vec<&RawValue> = serde_json::from_str(text).map_err(bad_json)?;
            out.0.update(b"[");
            for (position, item) in items.into_iter().enumerate() {
                if position > 0 {
                    out.0.update(b",");
                }
                write_canonical(item, out)?;
            }
            out.0.update(b"]");
            Ok(())
        }
        Some(b'"') => {
            let text: Text<'_> = serde_json::from_str(text).map_err(bad_json)?;
            serde_json::to_writer(&mut *out, text.0.as_ref()).map_err(bad_json)
        }
        _ => {
            out.0.update(text.as_bytes());
            Ok(())
        }
    }
}

/// An object's fields in order, keys borrowed when they have no escapes.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(key) = map.next_key::<Text<'de>>()? {
                    fields.push((key.0, map.next_value::<&'de RawValue>()?));
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

/// A string, borrowed when it has no escapes.
struct Text<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(TextVisitor)
    }
}

/// `GET /cache/ping`: LiteLLM's answer, `{"status": "healthy", "cache_type": …}`.
pub(crate) async fn ping(app: &App, access: &Access) -> Response<ResponseBody> {
    let cache = match admin_cache(app, access) {
        Ok(cache) => cache,
        Err(error) => return crate::errors::error_response(&error, None),
    };
    match cache.store.ping().await {
        Ok(()) => {
            let mut body = json!({
                "status": "healthy",
                "cache_type": cache.kind(),
                "litellm_cache_params": cache.params,
            });
            if cache.store.redis_up().is_some() {
                body["ping_response"] = json!(true);
            }
            json_response(StatusCode::OK, body.to_string())
        }
        Err(error) => crate::errors::error_response(
            &GatewayError::new(ErrorKind::StoreUnavailable, format!("Service Unhealthy ({error})")),
            None,
        ),
    }
}

#[derive(serde::Deserialize)]
struct DeleteRequest {
    keys: Vec<String>,
}

/// `POST /cache/delete` with `{"keys": ["…"]}`: the keys `x-litellm-cache-key` named.
pub(crate) async fn delete(app: &App, access: &Access, body: &[u8]) -> Response<ResponseBody> {
    let outcome = async {
        let cache = admin_cache(app, access)?;
        let request: DeleteRequest = serde_json::from_slice(body).map_err(|e| {
            GatewayError::bad_request(format!("expected {{\"keys\": [\"<cache key>\", …]}}: {e}"))
                .with_param("keys")
        })?;
        cache.store.delete(&request.keys).await.map_err(|error| {
            GatewayError::new(ErrorKind::StoreUnavailable, format!("Cache Delete Failed ({error})"))
        })
    };
    match outcome.await {
        Ok(_) => json_response(StatusCode::OK, r#"{"status":"success"}"#),
        Err(error) => crate::errors::error_response(&error, None),
    }
}

/// `POST /cache/flushall`: every entry of the configured namespace (the bare 64-hex keys
/// without one), never the rest of a shared Redis.
pub(crate) async fn flushall(app: &App, access: &Access) -> Response<ResponseBody> {
    let outcome = async {
        let cache = admin_cache(app, access)?;
        let pattern = match &cache.namespace {
            Some(namespace) => format!("{}:*", glob_escape(namespace)),
            None => "[0-9a-f]".repeat(64),
        };
        cache.store.flush(&pattern).await.map_err(|error| {
            GatewayError::new(ErrorKind::StoreUnavailable, format!("Service Unhealthy ({error})"))
        })
    };
    match outcome.await {
        Ok(_) => json_response(StatusCode::OK, r#"{"status":"success"}"#),
        Err(error) => crate::errors::error_response(&error, None),
    }
}

/// The cache, for an admin; LiteLLM's 503 when caching is off.
fn admin_cache<'a>(app: &'a App, access: &Access) -> Result<&'a ResponseCache, GatewayError> {
    if !access.is_admin() {
        return Err(GatewayError::new(ErrorKind::Forbidden, "only an admin may manage the cache"));
    }
    app.cache.as_deref().ok_or_else(|| {
        GatewayError::new(
            ErrorKind::StoreUnavailable,
            "Cache not initialized: set litellm_settings.cache: true",
        )
    })
}

/// `text` with Redis glob characters escaped.
fn glob_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A hit's `x-litellm-response-cost` (always 0) and `x-litellm-cache-key`.
pub(crate) fn hit_headers(headers: &mut HeaderMap, key: Option<HeaderValue>) {
    headers.insert("x-litellm-response-cost", HeaderValue::from_static("0"));
    if let Some(key) = key {
        headers.insert(CACHE_KEY_HEADER, key);
    }
}

/// The quoted alias, for answers built from the cache.
pub(crate) fn alias_json(alias: &str) -> String {
    quote(alias)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_of(cache: &ResponseCache, body: &str) -> String {
        cache
            .plan(CallKind::Chat, &Controls::default(), &Access::Open, "gp", body.as_bytes())
            .unwrap()
            .unwrap()
            .key
    }

    async fn local(namespace: Option<&str>) -> ResponseCache {
        let config = CacheConfig {
            backend: CacheBackend::Local,
            namespace: namespace.map(str::to_owned),
            ttl: Some(Duration::from_secs(60)),
            supported_call_types: None,
            scope: CacheScope::Global,
            default_on: true,
            redis_timeout: Duration::from_millis(100),
        };
        ResponseCache::open(&config, CacheCounters::default()).await.unwrap()
    }

    #[tokio::test]
    async fn keys_ignore_formatting_order_and_non_output_fields() {
        let cache = local(Some("litellm_cache")).await;
        let key =
            key_of(&cache, r#"{"model":"a","messages":[{"role":"user","content":"hi"}],"temperature":0.2}"#);
        assert!(key.starts_with("litellm_cache:") && key.len() == "litellm_cache:".len() + 64, "{key}");
        let same = [
            r#"{ "temperature" : 0.2, "messages": [ {"content":"hi","role":"user"} ], "model":"b" }"#,
            r#"{"model":"a","messages":[{"role":"user","content":"\u0068i"}],"temperature":0.2,"stream":true,"user":"u","metadata":{"x":1},"cache":{"ttl":5}}"#,
        ];
        for body in same {
            assert_eq!(key_of(&cache, body), key, "{body}");
        }
        let different = [
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.3}"#,
            r#"{"messages":[{"role":"user","content":"hi "}],"temperature":0.2}"#,
            r#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.2,"max_tokens":5}"#,
        ];
        for body in different {
            assert_ne!(key_of(&cache, body), key, "{body}");
        }
        let other_group = cache
            .plan(
                CallKind::Chat,
                &Controls::default(),
                &Access::Open,
                "other",
                br#"{"messages":[{"role":"user","content":"hi"}],"temperature":0.2}"#,
            )
            .unwrap()
            .unwrap();
        assert_ne!(other_group.key, key);
    }

    #[test]
    fn controls_come_from_the_body_over_the_header() {
        let mut headers = HeaderMap::new();
        headers.insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store, max-age=30"));
        let controls = Controls::read(None, &headers).unwrap();
        assert!(controls.no_store && !controls.no_cache);
        assert_eq!(controls.max_age, Some(Duration::from_secs(30)));
        let controls = Controls::read(
            Some(r#"{"no-store": false, "no-cache": true, "ttl": 1.5, "s-maxage": 10, "namespace": "ns"}"#),
            &headers,
        )
        .unwrap();
        assert!(!controls.no_store && controls.no_cache);
        assert_eq!(
            (controls.ttl, controls.max_age),
            (Some(Duration::from_millis(1500)), Some(Duration::from_secs(10)))
        );
        assert_eq!(controls.namespace.as_deref(), Some("ns"));
        for bad in [r#"{"ttl": -1}"#, r#"{"no-cache": "yes"}"#, r#"[1]"#, r#"{"nocache": true}"#] {
            let error = Controls::read(Some(bad), &HeaderMap::new()).unwrap_err();
            assert_eq!((error.status(), error.param.as_deref()), (400, Some("cache")), "{bad}");
        }
    }

    #[test]
    fn entries_round_trip_and_age() {
        let value = Entry::encode(EntryKind::Stream, b"data: x\n\n");
        let entry = Entry::decode(value.clone(), Some(Duration::from_secs(5))).unwrap();
        assert_eq!((entry.kind, &entry.payload[..]), (EntryKind::Stream, &b"data: x\n\n"[..]));
        let mut old = value.to_vec();
        old[5..13].copy_from_slice(&(now_millis() - 10_000).to_le_bytes());
        assert!(Entry::decode(Bytes::from(old.clone()), Some(Duration::from_secs(5))).is_none());
        assert!(Entry::decode(Bytes::from(old), None).is_some());
        assert!(Entry::decode(Bytes::from_static(b"something else entirely"), None).is_none());
    }

    #[test]
    fn answers_and_streams_convert_both_ways() {
        let answer = br#"{"id":"c1","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello there","tool_calls":[{"id":"t1","type":"function","function":{"name":"f","arguments":"{\"a\":1}"}}]},"finish_reason":"tool_calls"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}"#;
        let events = complete_to_stream(answer).unwrap();
        let text = std::str::from_utf8(&events).unwrap();
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert!(text.contains(r#""object":"chat.completion.chunk""#));
        let back: Value = serde_json::from_slice(&stream_to_complete(&events).unwrap()).unwrap();
        let original: Value = serde_json::from_slice(answer).unwrap();
        assert_eq!(back["choices"], original["choices"]);
        assert_eq!(back["usage"], original["usage"]);
        assert_eq!((back["id"].as_str(), back["object"].as_str()), (Some("c1"), Some("chat.completion")));

        let stream = concat!(
            "data: {\"id\":\"t\",\"object\":\"text_completion\",\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"Hel\",\"finish_reason\":null}]}\n\n",
            "data: {\"id\":\"t\",\"object\":\"text_completion\",\"model\":\"m\",\"choices\":[{\"index\":0,\"text\":\"lo\",\"finish_reason\":\"stop\"}]}\n\n",
            "data: [DONE]\n\n"
        );
        let text: Value = serde_json::from_slice(&stream_to_complete(stream.as_bytes()).unwrap()).unwrap();
        assert_eq!(text["choices"][0]["text"], "Hello");
        assert_eq!(text["choices"][0]["finish_reason"], "stop");
        assert!(stream_to_complete(b"data: {\"error\":{\"message\":\"x\"}}\n\n").is_none());
    }

    #[tokio::test]
    async fn embedding_items_are_keyed_one_by_one() {
        let cache = local(None).await;
        let body = br#"{"model":"e","input":["a","b","c"]}"#;
        let split = cache.embeddings(&Controls::default(), &Access::Open, "e", body).await.unwrap().unwrap();
        assert_eq!(split.keys.len(), 3);
        assert!(split.cached.iter().all(Option::is_none));
        assert!(split.upstream_input().is_none(), "nothing cached: the request goes as it is");
        let upstream = Bytes::from_static(br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.1]},{"object":"embedding","index":1,"embedding":[0.2]},{"object":"embedding","index":2,"embedding":[0.3]}],"model":"u","usage":{"prompt_tokens":7,"total_tokens":7}}"#);
        assert_eq!(split.merge_and_store(&cache, upstream.clone()).unwrap(), upstream);

        let body = br#"{"model":"e","input":["c","x","a"]}"#;
        let split = cache.embeddings(&Controls::default(), &Access::Open, "e", body).await.unwrap().unwrap();
        assert_eq!(split.cached.iter().map(Option::is_some).collect::<Vec<_>>(), [true, false, true]);
        assert_eq!(split.upstream_input().as_deref(), Some(r#"["x"]"#));
        let upstream = Bytes::from_static(br#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[0.9]}],"model":"u","usage":{"prompt_tokens":2,"total_tokens":2}}"#);
        let merged: Value =
            serde_json::from_slice(&split.merge_and_store(&cache, upstream).unwrap()).unwrap();
        let vectors: Vec<&Value> =
            merged["data"].as_array().unwrap().iter().map(|d| &d["embedding"]).collect();
        assert_eq!(vectors, [&json!([0.3]), &json!([0.9]), &json!([0.1])]);
        assert_eq!(merged["data"][2]["index"], 2);
        assert_eq!(merged["usage"]["prompt_tokens"], 2, "the usage is what the upstream charged");

        let split = cache
            .embeddings(&Controls::default(), &Access::Open, "e", br#"{"input":["a","x"]}"#)
            .await
            .unwrap()
            .unwrap();
        assert!(split.all_cached());
        let (answer, usage) = split.cached_answer("\"alias\"");
        let answer: Value = serde_json::from_slice(&answer).unwrap();
        assert_eq!(answer["model"], "alias");
        assert_eq!(answer["data"][1]["embedding"], json!([0.9]));
        assert_eq!(usage.prompt_tokens, 3 + 2, "a's share of 7 over 3 items, and x's 2");
        assert!(
            input_items(&serde_json::from_str::<Box<RawValue>>("[1,2,3]").unwrap())
                .is_some_and(|(i, l)| i.len() == 1 && !l)
        );
    }
}
