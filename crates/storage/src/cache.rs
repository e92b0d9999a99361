//! Where the response cache keeps its entries: in process (moka, bounded, per-entry expiry),
//! or in Redis (fred) with the in-process cache as the fallback while Redis is away.
//!
//! Values are opaque bytes; what they mean is the HTTP layer's business. Keys arrive whole
//! (namespace included), so a Redis shared with other applications only ever sees `SET PX`,
//! `GET`, `MGET` and `DEL` on them, and a flush `SCAN`s one pattern and deletes what it finds,
//! never `FLUSHALL`.
//!
//! Redis never holds a request up for longer than the command timeout: a command that fails or
//! times out marks Redis down (one warning), after which lookups and writes skip it and use the
//! in-process cache, until a background probe gets an answer again (one notice). Writes to
//! Redis run on the cache's own runtime, never on the caller's.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fred::clients::WithOptions;
use fred::prelude::{Client, ClientLike, ClusterInterface, Expiration, KeysInterface, Options};
use tokio::runtime::Handle;
use tokio::sync::{Notify, oneshot};

use crate::StoreError;

/// The largest value either tier keeps; larger answers are not cached.
pub const MAX_ENTRY_BYTES: usize = 4 * 1024 * 1024;
/// The default bound of the in-process cache, in bytes of keys and values.
pub const DEFAULT_LOCAL_CAPACITY: u64 = 64 * 1024 * 1024;
/// How often a Redis marked down is probed.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Keys asked for per `SCAN` page while flushing.
const SCAN_PAGE: u32 = 1000;

#[derive(Clone)]
struct LocalEntry {
    value: Bytes,
    ttl: Option<Duration>,
}

/// Each entry lives for its own TTL (none: until evicted for room).
struct PerEntryTtl;

impl moka::Expiry<String, LocalEntry> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &String,
        value: &LocalEntry,
        _created_at: Instant,
    ) -> Option<Duration> {
        value.ttl
    }

    fn expire_after_update(
        &self,
        _key: &String,
        value: &LocalEntry,
        _updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        value.ttl
    }
}

/// The in-process tier: bounded by the bytes it holds, least recently used out first.
struct LocalCache {
    entries: moka::sync::Cache<String, LocalEntry>,
}

impl LocalCache {
    fn new(capacity_bytes: u64) -> Self {
        let entries = moka::sync::Cache::builder()
            .max_capacity(capacity_bytes)
            .weigher(|key: &String, entry: &LocalEntry| {
                u32::try_from(key.len() + entry.value.len()).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        Self { entries }
    }

    fn get(&self, key: &str) -> Option<Bytes> {
        self.entries.get(key).map(|entry| entry.value)
    }

    fn put(&self, key: String, value: Bytes, ttl: Option<Duration>) {
        self.entries.insert(key, LocalEntry { value, ttl });
    }
}

/// Whether Redis answered lately, shared by the cache and its probe task.
struct Health {
    up: AtomicBool,
    went_down: Notify,
}

/// The Redis tier: a client whose connection lives on the cache's own runtime thread.
struct RedisTier {
    client: Client,
    /// The client for every command: fail at once while disconnected, one attempt, at most
    /// the timeout.
    commands: WithOptions<Client>,
    timeout: Duration,
    health: Arc<Health>,
    on_error: Arc<dyn Fn() + Send + Sync>,
    runtime: Handle,
    /// Stops the runtime (and with it the connection and the probe) when the tier is dropped.
    _stop: oneshot::Sender<()>,
}

impl RedisTier {
    /// Notes a failed command: counted, and the first failure after a success is logged and
    /// wakes the probe.
    fn failed(&self, error: &dyn std::fmt::Display) {
        (self.on_error)();
        if self.health.up.swap(false, Ordering::AcqRel) {
            tracing::warn!(
                %error,
                "redis cache unavailable: answering from the in-process cache until it is back"
            );
            self.health.went_down.notify_one();
        }
    }

    fn is_up(&self) -> bool {
        self.health.up.load(Ordering::Acquire)
    }

    /// Runs one command under the timeout, noting failures.
    async fn run<T, F>(&self, command: F) -> Option<T>
    where
        F: Future<Output = Result<T, fred::error::Error>>,
    {
        match tokio::time::timeout(self.timeout, command).await {
            Ok(Ok(value)) => Some(value),
            Ok(Err(error)) => {
                self.failed(&error);
                None
            }
            Err(_) => {
                self.failed(&format_args!("no answer within {} ms", self.timeout.as_millis()));
                None
            }
        }
    }
}

/// How to reach Redis and how long to wait for it.
pub struct RedisOptions {
    /// `redis://[[user]:password@]host:port[/db]`, `rediss://` for TLS.
    pub url: String,
    /// The longest any one command may take before it counts as a failure.
    pub command_timeout: Duration,
    /// How long start-up waits for the first connection before going on without Redis.
    pub connect_timeout: Duration,
    /// Called on every failed or timed-out command (a metric).
    pub on_error: Arc<dyn Fn() + Send + Sync>,
}

/// The response cache's storage: the in-process tier, and Redis when configured.
pub struct CacheStore {
    local: LocalCache,
    redis: Option<RedisTier>,
}

impl std::fmt::Debug for CacheStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheStore").field("kind", &self.kind()).finish()
    }
}

impl CacheStore {
    /// An in-process cache holding at most `capacity_bytes` of keys and values.
    pub fn local(capacity_bytes: u64) -> Self {
        Self { local: LocalCache::new(capacity_bytes), redis: None }
    }

    /// Redis in front of an in-process fallback. Waits up to the connect timeout for the first
    /// connection; without one the gateway starts anyway, on the in-process tier, and the
    /// probe connects when Redis appears.
    pub async fn redis(options: RedisOptions, local_capacity_bytes: u64) -> Result<Self, StoreError> {
        let mut builder = crate::redis::builder(&options.url, options.connect_timeout)?;
        builder.with_connection_config(|connection| {
            connection.internal_command_timeout = options.command_timeout.max(Duration::from_secs(1));
            connection.max_command_attempts = 1;
        });
        let client = builder.build().map_err(|error| StoreError::InvalidUrl(format!("redis: {error}")))?;
        let (runtime, stop) = crate::redis::own_runtime("tollgate-cache")?;
        let health = Arc::new(Health { up: AtomicBool::new(false), went_down: Notify::new() });
        let command_options = Options {
            max_attempts: Some(1),
            fail_fast: true,
            timeout: Some(options.command_timeout),
            ..Options::default()
        };
        let connecting = client.clone();
        let connected = runtime.spawn(async move {
            // The connection task runs on this runtime; reconnects happen there too.
            let _connection = connecting.connect();
            connecting.wait_for_connect().await
        });
        let url = crate::redact(&options.url);
        match tokio::time::timeout(options.connect_timeout, connected).await {
            Ok(Ok(Ok(()))) => {
                health.up.store(true, Ordering::Release);
                tracing::info!(redis = %url, "redis cache connected");
            }
            Ok(Ok(Err(error))) => tracing::warn!(
                redis = %url,
                %error,
                "redis cache not reachable yet: using the in-process cache until it is"
            ),
            Ok(Err(_)) | Err(_) => tracing::warn!(
                redis = %url,
                "redis cache not reachable yet: using the in-process cache until it is"
            ),
        }
        runtime.spawn(probe(client.clone(), Arc::clone(&health), options.command_timeout));
        let tier = RedisTier {
            commands: client.with_options(&command_options),
            client,
            timeout: options.command_timeout,
            health,
            on_error: options.on_error,
            runtime,
            _stop: stop,
        };
        Ok(Self { local: LocalCache::new(local_capacity_bytes), redis: Some(tier) })
    }

    /// `local` or `redis`, as LiteLLM's `/cache/ping` names the type.
    pub fn kind(&self) -> &'static str {
        if self.redis.is_some() { "redis" } else { "local" }
    }

    /// Whether Redis is answering; `None` without Redis.
    pub fn redis_up(&self) -> Option<bool> {
        self.redis.as_ref().map(RedisTier::is_up)
    }

    /// The value under `key`, from Redis while it answers, else from the in-process tier.
    pub async fn get(&self, key: &str) -> Option<Bytes> {
        match &self.redis {
            Some(redis) if redis.is_up() => {
                let command = redis.commands.get::<Option<Bytes>, _>(key);
                match redis.run(command).await {
                    Some(value) => value,
                    None => self.local.get(key),
                }
            }
            _ => self.local.get(key),
        }
    }

    /// The values under `keys`, in order (one `MGET` with Redis).
    pub async fn get_many(&self, keys: &[String]) -> Vec<Option<Bytes>> {
        if let Some(redis) = &self.redis
            && redis.is_up()
            && !keys.is_empty()
        {
            let command = redis.commands.mget::<Vec<Option<Bytes>>, _>(keys.to_vec());
            if let Some(values) = redis.run(command).await
                && values.len() == keys.len()
            {
                return values;
            }
        }
        keys.iter().map(|key| self.local.get(key)).collect()
    }

    /// Keeps `value` under `key` for `ttl` (none: no expiry in Redis, eviction only in
    /// process). Never waits: the Redis write runs on the cache's runtime.
    pub fn put(&self, key: String, value: Bytes, ttl: Option<Duration>) {
        self.put_many(vec![(key, value)], ttl);
    }

    /// [`CacheStore::put`] for several entries, sent to Redis in one pipeline.
    pub fn put_many(&self, entries: Vec<(String, Bytes)>, ttl: Option<Duration>) {
        let entries: Vec<(String, Bytes)> =
            entries.into_iter().filter(|(_, value)| value.len() <= MAX_ENTRY_BYTES).collect();
        for (key, value) in &entries {
            self.local.put(key.clone(), value.clone(), ttl);
        }
        let Some(redis) = &self.redis else { return };
        if !redis.is_up() || entries.is_empty() {
            return;
        }
        let client = redis.client.clone();
        let timeout = redis.timeout;
        let health = Arc::clone(&redis.health);
        let on_error = Arc::clone(&redis.on_error);
        let expire = ttl.map(|ttl| Expiration::PX(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX).max(1)));
        redis.runtime.spawn(async move {
            let pipeline = client.pipeline();
            for (key, value) in entries {
                let _: Result<(), _> = pipeline.set(key, value, expire.clone(), None, false).await;
            }
            let outcome = tokio::time::timeout(timeout, pipeline.all::<Vec<fred::types::Value>>()).await;
            let error = match outcome {
                Ok(Ok(_)) => return,
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {} ms", timeout.as_millis()),
            };
            on_error();
            if health.up.swap(false, Ordering::AcqRel) {
                tracing::warn!(
                    %error,
                    "redis cache unavailable: answering from the in-process cache until it is back"
                );
                health.went_down.notify_one();
            }
        });
    }

    /// Deletes `keys` from both tiers; returns how many Redis removed (or the in-process
    /// tier, without Redis).
    pub async fn delete(&self, keys: &[String]) -> Result<u64, StoreError> {
        let mut removed = 0;
        for key in keys {
            if self.local.entries.remove(key.as_str()).is_some() {
                removed += 1;
            }
        }
        let Some(redis) = &self.redis else { return Ok(removed) };
        if keys.is_empty() {
            return Ok(0);
        }
        let command = redis.commands.del::<u64, _>(keys.to_vec());
        redis.run(command).await.ok_or_else(|| StoreError::Redis("the delete did not reach redis".into()))
    }

    /// Deletes every entry whose key matches the glob `pattern` (`litellm_cache:*`): all of
    /// the in-process tier, and in Redis what a `SCAN MATCH` finds, page by page.
    pub async fn flush(&self, pattern: &str) -> Result<u64, StoreError> {
        let local = self.local.entries.entry_count();
        self.local.entries.invalidate_all();
        let Some(redis) = &self.redis else { return Ok(local) };
        let unreachable = || StoreError::Redis("the flush did not reach redis".into());
        // A cluster scans each primary on its own, and deletes key by key (keys of one page
        // may sit in different slots).
        let nodes: Vec<Option<fred::types::config::Server>> = if redis.client.is_clustered() {
            let state = redis.client.cached_cluster_state().ok_or_else(unreachable)?;
            state.unique_primary_nodes().into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        let mut removed = 0;
        for node in nodes {
            let options = Options { cluster_node: node.clone(), ..redis.commands.options().clone() };
            let client = redis.client.with_options(&options);
            let mut cursor = String::from("0");
            loop {
                let page = client.scan_page::<(String, Vec<String>), _, _>(
                    cursor.clone(),
                    pattern,
                    Some(SCAN_PAGE),
                    None,
                );
                let (next, keys) = redis.run(page).await.ok_or_else(unreachable)?;
                if node.is_some() {
                    for key in keys {
                        removed +=
                            redis.run(redis.commands.del::<u64, _>(key)).await.ok_or_else(unreachable)?;
                    }
                } else if !keys.is_empty() {
                    removed += redis.run(client.del::<u64, _>(keys)).await.ok_or_else(unreachable)?;
                }
                if next == "0" {
                    break;
                }
                cursor = next;
            }
        }
        Ok(removed)
    }

    /// Pings Redis (and notes the outcome); always fine without Redis.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let Some(redis) = &self.redis else { return Ok(()) };
        let command = redis.commands.ping::<String>(None);
        match redis.run(command).await {
            Some(_) => {
                if !redis.health.up.swap(true, Ordering::AcqRel) {
                    tracing::info!("redis cache reachable again");
                }
                Ok(())
            }
            None => Err(StoreError::Redis("redis did not answer PING".into())),
        }
    }
}

/// While Redis is marked down, pings it every [`PROBE_INTERVAL`] and marks it up again on
/// the first answer.
async fn probe(client: Client, health: Arc<Health>, timeout: Duration) {
    let options =
        Options { max_attempts: Some(1), fail_fast: true, timeout: Some(timeout), ..Options::default() };
    loop {
        if health.up.load(Ordering::Acquire) {
            health.went_down.notified().await;
            continue;
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
        let client = client.with_options(&options);
        if let Ok(Ok(_)) = tokio::time::timeout(timeout, client.ping::<String>(None)).await
            && !health.up.swap(true, Ordering::AcqRel)
        {
            tracing::info!("redis cache reachable again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn local_entries_expire_on_their_own_ttl() {
        let store = CacheStore::local(DEFAULT_LOCAL_CAPACITY);
        store.put("short".into(), Bytes::from_static(b"a"), Some(Duration::from_millis(30)));
        store.put("long".into(), Bytes::from_static(b"b"), Some(Duration::from_secs(60)));
        store.put("forever".into(), Bytes::from_static(b"c"), None);
        assert_eq!(store.get("short").await.as_deref(), Some(&b"a"[..]));
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(store.get("short").await.is_none(), "expired");
        assert_eq!(store.get("long").await.as_deref(), Some(&b"b"[..]));
        assert_eq!(
            store.get_many(&["forever".into(), "short".into()]).await,
            [Some(Bytes::from_static(b"c")), None]
        );
        assert_eq!(store.delete(&["long".into(), "nope".into()]).await.unwrap(), 1);
        assert!(store.get("long").await.is_none());
        store.flush("*").await.unwrap();
        assert!(store.get("forever").await.is_none());
        assert_eq!(store.kind(), "local");
        assert!(store.ping().await.is_ok());
    }

    #[tokio::test]
    async fn oversized_values_are_not_kept() {
        let store = CacheStore::local(DEFAULT_LOCAL_CAPACITY);
        store.put("big".into(), Bytes::from(vec![0u8; MAX_ENTRY_BYTES + 1]), None);
        assert!(store.get("big").await.is_none());
    }

    #[tokio::test]
    async fn an_unreachable_redis_costs_no_more_than_the_timeout() {
        // Nothing listens on port 1: the first connection fails and the local tier answers.
        let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = Arc::clone(&errors);
        let options = RedisOptions {
            url: "redis://127.0.0.1:1".into(),
            command_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(100),
            on_error: Arc::new(move || {
                counted.fetch_add(1, Ordering::Relaxed);
            }),
        };
        let store = CacheStore::redis(options, DEFAULT_LOCAL_CAPACITY).await.unwrap();
        assert_eq!(store.redis_up(), Some(false));
        store.put("k".into(), Bytes::from_static(b"v"), Some(Duration::from_secs(5)));
        let started = Instant::now();
        assert_eq!(store.get("k").await.as_deref(), Some(&b"v"[..]), "served from the in-process tier");
        assert!(started.elapsed() < Duration::from_millis(50));
        let started = Instant::now();
        assert!(store.ping().await.is_err());
        assert!(started.elapsed() < Duration::from_millis(500), "{:?}", started.elapsed());
        assert!(errors.load(Ordering::Relaxed) >= 1);
    }
}
