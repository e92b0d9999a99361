//! Rate-limit counters every replica shares, in Redis: requests and tokens per fixed
//! one-minute window and requests in flight, per scope (a key, user, team, organization,
//! customer, or a key's model).
//!
//! Redis holds the global counts; they only change through one Lua script, so checking a
//! request against all of its scopes and counting it happen atomically: a request is counted
//! in every scope or in none, and no two replicas can both take the last unit. A replica
//! counts ahead, not behind: it reserves requests and in-flight slots in Redis (grants) and
//! admits against its reservation locally, so a key far from its limit costs one script call
//! per many requests. A grant is at most 1/8 of the room left per live replica (and at most
//! `MAX_GRANT`), so near a limit every grant is a single request: the count is exact where it
//! matters. Reservations a replica does not use are given back after a second without
//! requests, so the global count comes back to the requests made; whatever is reserved is
//! counted, so a limit is never exceeded.
//!
//! Tokens are added after each response (they travel with the next call, within a few
//! milliseconds) and a replica checks a request against the window's tokens as of its last
//! call (at most `TOKENS_FRESH` old). Windows are minutes of the Redis server's clock (`TIME`),
//! so every replica agrees on when one ends; counters expire two minutes after it began.
//!
//! In-flight slots live in a hash per scope with one field per replica identity, and every
//! identity has a heartbeat in the sorted set `<namespace>:replicas` (30 s, renewed every
//! 10 s and by every call): a field whose identity has no heartbeat is dropped by the next
//! check, so a replica that crashed frees its slots within 30 seconds.
//!
//! No call makes a request wait longer than the command timeout. The first failure or
//! timeout makes the limiter unavailable: callers then count on their own (see
//! `LocalCounts`) without asking Redis, one warning is logged, every grant is dropped, and a
//! probe pings every half second. When Redis answers again the replica takes a new identity
//! (whatever an unanswered call reserved under the old one expires with it), adds the counts
//! it made on its own to the shared windows, and only then counts in Redis again.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use fred::prelude::{Client, ClientLike, Options, Value};
use fred::types::{ClusterHash, CustomCommand};
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::StoreError;

/// How long a call may take before the limiter counts locally, unless set otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(100);
const HEARTBEAT_EVERY: Duration = Duration::from_secs(10);
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// How long the first connection may take before the limiter warns that it counts locally.
const FIRST_CONNECTION_WAIT: Duration = Duration::from_secs(2);
/// Requests sent in one script call, at most.
const MAX_BATCH: usize = 256;
/// Script calls under way at once (pipelined on the one connection). Few, so that requests
/// arriving meanwhile gather into the next call instead of each making its own.
const MAX_CALLS_IN_FLIGHT: usize = 2;
/// How long tokens and unused reservations wait for a call to travel with, at most. Freed
/// slots go at once, when another replica may be waiting for them.
const FLUSH_EVERY: Duration = Duration::from_millis(10);
/// The most requests or slots one reservation takes.
const MAX_GRANT: u64 = 1_000;
/// A reservation takes at most this fraction (1/n) of the room left, per live replica.
const SHARE: u64 = 8;
/// Reservations unused this long are given back.
const IDLE_RETURN: Duration = Duration::from_secs(1);
const SWEEP_EVERY: Duration = Duration::from_millis(500);
/// Outage warnings after the first, at most this often.
const WARN_EVERY: Duration = Duration::from_secs(60);
/// A scope unused this long (and holding nothing) is forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(120);
/// How old the window's token count may be when a request is checked against `tpm_limit`.
const TOKENS_FRESH: Duration = Duration::from_millis(250);

/// One script for every change. KEYS[1]: the namespace (a hash tag, so every key of one
/// namespace lands in one cluster slot). ARGV[1]: this replica's identity; then operations:
///   G n (scope rpm tpm parallel want_requests want_slots)*n
///       check a request (-1: no such limit) and reserve what it wants, all or nothing
///   T n (scope tokens)*n            add responses' tokens to the current window
///   R holder n (scope slots)*n      give back slots reserved under `holder`
///   U window n (scope requests)*n   give back unused reserved requests of `window`
///   S n (scope window requests tokens)*n   add counts made while Redis was away
///   H n holder*n                    renew these identities' heartbeats
/// Returns {window, reset_ms, live replicas, one entry per operation}: for G
/// {1, (requests granted, window requests, window tokens, slots granted, in flight)*n} or
/// {0, scope index (1-based), kind (1 requests, 2 tokens, 3 parallel), used}; for T the
/// window's tokens per scope; 0 for the others.
const SCRIPT: &str = r"
local prefix = KEYS[1]
local me = ARGV[1]
local clock = redis.call('TIME')
local seconds = tonumber(clock[1])
local now_ms = seconds * 1000 + math.floor(tonumber(clock[2]) / 1000)
local window = math.floor(seconds / 60)
local reset_ms = (window + 1) * 60000 - now_ms
local replicas_key = prefix .. ':replicas'
redis.call('ZADD', replicas_key, now_ms + 30000, me)
redis.call('ZREMRANGEBYSCORE', replicas_key, '-inf', now_ms)

local function requests_key(scope, w) return prefix .. ':' .. scope .. ':' .. w .. ':r' end
local function tokens_key(scope, w) return prefix .. ':' .. scope .. ':' .. w .. ':t' end
local function flight_key(scope) return prefix .. ':' .. scope .. ':p' end
local function count(key) return tonumber(redis.call('GET', key) or '0') end
local function add(key, amount)
  local value = redis.call('INCRBY', key, amount)
  if value == amount then redis.call('EXPIRE', key, 120) end
  return value
end
local function in_flight(key)
  local fields = redis.call('HGETALL', key)
  local total = 0
  for f = 1, #fields, 2 do
    local holder = fields[f]
    if holder == me or redis.call('ZSCORE', replicas_key, holder) then
      total = total + tonumber(fields[f + 1])
    else
      redis.call('HDEL', key, holder)
    end
  end
  return total
end

local results = {window, reset_ms, redis.call('ZCARD', replicas_key)}
local i = 2
while i <= #ARGV do
  local op = ARGV[i]
  if op == 'G' then
    local n = tonumber(ARGV[i + 1])
    local first = i + 2
    local seen = {}
    local refused = nil
    for s = 0, n - 1 do
      local at = first + s * 6
      local scope = ARGV[at]
      local rpm, tpm, parallel = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
      local want_requests, want_slots = tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5])
      local state = {requests = 0, tokens = 0, flight = 0}
      if want_requests > 0 then
        state.requests = count(requests_key(scope, window))
        if state.requests >= rpm then refused = {0, s + 1, 1, state.requests} break end
      end
      if tpm >= 0 then
        state.tokens = count(tokens_key(scope, window))
        if state.tokens >= tpm then refused = {0, s + 1, 2, state.tokens} break end
      end
      if want_slots > 0 then
        state.flight = in_flight(flight_key(scope))
        if state.flight >= parallel then refused = {0, s + 1, 3, state.flight} break end
      end
      seen[s] = state
    end
    if refused then
      results[#results + 1] = refused
    else
      local answer = {1}
      for s = 0, n - 1 do
        local at = first + s * 6
        local scope = ARGV[at]
        local rpm, parallel = tonumber(ARGV[at + 1]), tonumber(ARGV[at + 3])
        local want_requests, want_slots = tonumber(ARGV[at + 4]), tonumber(ARGV[at + 5])
        local state = seen[s]
        local requests, slots = 0, 0
        if want_requests > 0 then
          requests = math.min(want_requests, rpm - state.requests)
          state.requests = add(requests_key(scope, window), requests)
        end
        if want_slots > 0 then
          slots = math.min(want_slots, parallel - state.flight)
          local key = flight_key(scope)
          if redis.call('HINCRBY', key, me, slots) == slots then redis.call('EXPIRE', key, 86400) end
          state.flight = state.flight + slots
        end
        answer[#answer + 1] = requests
        answer[#answer + 1] = state.requests
        answer[#answer + 1] = state.tokens
        answer[#answer + 1] = slots
        answer[#answer + 1] = state.flight
      end
      results[#results + 1] = answer
    end
    i = first + n * 6
  elseif op == 'T' then
    local n = tonumber(ARGV[i + 1])
    local totals = {}
    for s = 0, n - 1 do
      local at = i + 2 + s * 2
      totals[#totals + 1] = add(tokens_key(ARGV[at], window), tonumber(ARGV[at + 1]))
    end
    results[#results + 1] = totals
    i = i + 2 + n * 2
  elseif op == 'R' then
    local holder, n = ARGV[i + 1], tonumber(ARGV[i + 2])
    for s = 0, n - 1 do
      local at = i + 3 + s * 2
      local key = flight_key(ARGV[at])
      -- A field at 0 stays (the next slot is one command, not two); below 0 it was freed.
      if redis.call('HINCRBY', key, holder, -tonumber(ARGV[at + 1])) < 0 then redis.call('HDEL', key, holder) end
    end
    results[#results + 1] = 0
    i = i + 3 + n * 2
  elseif op == 'U' then
    local w, n = ARGV[i + 1], tonumber(ARGV[i + 2])
    for s = 0, n - 1 do
      local at = i + 3 + s * 2
      local key = requests_key(ARGV[at], w)
      local left = count(key)
      if left > 0 then redis.call('DECRBY', key, math.min(left, tonumber(ARGV[at + 1]))) end
    end
    results[#results + 1] = 0
    i = i + 3 + n * 2
  elseif op == 'H' then
    local n = tonumber(ARGV[i + 1])
    for s = 1, n do redis.call('ZADD', replicas_key, now_ms + 30000, ARGV[i + 1 + s]) end
    results[#results + 1] = 0
    i = i + 2 + n
  elseif op == 'S' then
    local n = tonumber(ARGV[i + 1])
    for s = 0, n - 1 do
      local at = i + 2 + s * 4
      local requests, tokens = tonumber(ARGV[at + 2]), tonumber(ARGV[at + 3])
      if requests > 0 then add(requests_key(ARGV[at], ARGV[at + 1]), requests) end
      if tokens > 0 then add(tokens_key(ARGV[at], ARGV[at + 1]), tokens) end
    end
    results[#results + 1] = 0
    i = i + 2 + n * 4
  else
    return redis.error_reply('tollgate limiter: unknown operation ' .. tostring(op))
  end
end
return results
";

/// One scope's limits for a request; `id` names the scope (`api_key:<hash>`, `team:<id>`, …).
#[derive(Debug, Clone)]
pub struct LimitScope {
    pub id: String,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub parallel: Option<u64>,
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitKind {
    Requests,
    Tokens,
    Parallel,
}

/// What the shared counts decided for a request.
#[derive(Debug)]
pub enum Verdict {
    Admitted(Admission),
    Refused(Refusal),
}

/// A request counted in every one of its scopes.
#[derive(Debug)]
pub struct Admission {
    /// Per scope, in the order asked: the window's requests so far, this one included (as of
    /// this replica's last call, without what it reserved and has not used; 0 without an rpm
    /// limit), and its tokens (0 without a tpm limit).
    pub used: Vec<WindowUse>,
    /// Time left in the window.
    pub reset: Duration,
    /// The in-flight slots taken, when a scope has a parallel limit; dropping it gives them back.
    pub lease: Option<Lease>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowUse {
    pub requests: u64,
    pub tokens: u64,
}

/// A request refused, and by which scope (index into the scopes asked) and limit.
#[derive(Debug, Clone, Copy)]
pub struct Refusal {
    pub scope: usize,
    pub kind: LimitKind,
    /// What that scope had used: requests or tokens in the window, or requests in flight.
    pub used: u64,
    pub reset: Duration,
}

/// Counts a replica made on its own while Redis was away, for one scope and window
/// (`window`: minutes since the Unix epoch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowCount {
    pub scope: String,
    pub window: u64,
    pub requests: u64,
    pub tokens: u64,
}

/// The caller's own counters, which the limiter hands back to Redis when it returns.
pub trait LocalCounts: Send + Sync + 'static {
    /// What was counted locally since Redis went away, in windows still open.
    fn outage_counts(&self) -> Vec<WindowCount>;
    /// Redis has them now.
    fn forget_outage_counts(&self);
}

/// A replica identity: the field under which its in-flight slots are counted.
#[derive(Debug)]
struct Holder {
    id: String,
}

/// In-flight slots held by one request; dropping it gives them back to this replica's
/// reservation (and what the replica no longer needs to Redis, without waiting).
#[derive(Debug)]
pub struct Lease {
    inner: Arc<Inner>,
    holder: Arc<Holder>,
    /// Scope id and its `max_parallel_requests`.
    scopes: Vec<(String, u64)>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.inner.release(&self.holder, &self.scopes);
    }
}

/// What this replica knows of, and holds in, one scope.
#[derive(Debug)]
struct Grant {
    /// The identity its slots are reserved under.
    holder: Arc<Holder>,
    /// The Redis window its request and token figures are about, and when it ends here.
    window: u64,
    expires: Instant,
    /// When the token figure was read; `None`: never in this window.
    tokens_read: Option<Instant>,
    requests_left: u64,
    requests_seen: u64,
    requests_returning: u64,
    tokens_seen: u64,
    tokens_unsent: u64,
    tokens_sending: u64,
    slots_held: u64,
    slots_returning: u64,
    in_flight: u64,
    in_flight_seen: u64,
    replicas: u64,
    /// Asks for requests (slots) under way: a request asking meanwhile asks for itself only,
    /// so a burst does not reserve one share per request.
    requests_asked: u32,
    slots_asked: u32,
    last_used: Instant,
}

impl Grant {
    fn new(holder: &Arc<Holder>, now: Instant) -> Self {
        Self {
            holder: Arc::clone(holder),
            window: 0,
            expires: now,
            tokens_read: None,
            requests_left: 0,
            requests_seen: 0,
            requests_returning: 0,
            tokens_seen: 0,
            tokens_unsent: 0,
            tokens_sending: 0,
            slots_held: 0,
            slots_returning: 0,
            in_flight: 0,
            in_flight_seen: 0,
            replicas: 1,
            requests_asked: 0,
            slots_asked: 0,
            last_used: now,
        }
    }

    /// Forgets the window's figures once it has ended (reserved requests die with it).
    fn roll(&mut self, now: Instant) {
        if self.expires <= now {
            self.requests_left = 0;
            self.requests_seen = 0;
            self.tokens_seen = 0;
            self.tokens_read = None;
        }
    }

    fn tokens(&self) -> u64 {
        self.tokens_seen + self.tokens_unsent + self.tokens_sending
    }

    /// How much to reserve: a share of the room left, so replicas do not starve each other.
    fn share(&self, limit: u64, seen: u64) -> u64 {
        (limit.saturating_sub(seen) / (SHARE * self.replicas.max(1))).clamp(1, MAX_GRANT)
    }

    /// Free slots kept after a request ends: none when the limit is small, so a slot is
    /// never idle here while another replica needs it.
    fn spare_slots(&self, limit: u64) -> u64 {
        (limit / (SHARE * self.replicas.max(1))).min(MAX_GRANT)
    }
}

#[derive(Debug, Default)]
struct State {
    grants: HashMap<String, Grant>,
    /// Scopes with tokens to send or reservations to give back.
    dirty: HashSet<String>,
}

/// One scope's part of a request that needs Redis.
#[derive(Debug)]
struct Ask {
    index: usize,
    id: String,
    rpm: Option<u64>,
    tpm: Option<u64>,
    parallel: Option<u64>,
    want_requests: u64,
    want_slots: u64,
}

/// A request waiting on Redis: its scopes, what it took from grants, what it asks.
#[derive(Debug)]
struct Request {
    scopes: Vec<LimitScope>,
    taken: Vec<Taken>,
    asks: Vec<Ask>,
}

/// What every answer of one script call shares.
#[derive(Debug)]
struct Answered {
    holder: Arc<Holder>,
    window: u64,
    reset: Duration,
    replicas: u64,
    at: Instant,
}

#[derive(Debug)]
enum Outcome {
    /// Per ask: requests granted, window requests, window tokens, slots granted, in flight.
    Granted(Vec<[u64; 5]>),
    Refused {
        ask: usize,
        kind: LimitKind,
        used: u64,
    },
}

enum Op {
    Ask {
        request: Request,
        reply: oneshot::Sender<Verdict>,
    },
    /// Something waits to be sent while the batching task sleeps.
    Wake,
}

/// The shared limiter. Cloning shares one connection and one batching task.
#[derive(Clone)]
pub struct RedisLimits {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisLimits").field("prefix", &self.inner.prefix).finish_non_exhaustive()
    }
}

struct Inner {
    client: Client,
    runtime: Handle,
    ops: mpsc::UnboundedSender<Op>,
    /// Whether the batching task sleeps with nothing to send (then a flush must wake it).
    parked: Arc<AtomicBool>,
    /// Whether what waits should go now (freed slots of a small limit), not within the
    /// flush interval.
    urgent: Arc<AtomicBool>,
    /// `{namespace}`: braces make it the cluster hash tag of every key.
    prefix: String,
    timeout_ms: AtomicU64,
    available: AtomicBool,
    holder: Mutex<Arc<Holder>>,
    /// Earlier identities that requests still in flight hold slots under.
    earlier: Mutex<Vec<Weak<Holder>>>,
    state: Mutex<State>,
    sha: Mutex<Option<String>>,
    local: OnceLock<Box<dyn LocalCounts>>,
    /// When the last outage warning was logged.
    warned: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inner").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let client = self.client.clone();
        self.runtime.spawn(async move {
            let _ = client.quit().await;
        });
    }
}

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl RedisLimits {
    /// Connects to `url` in the background on `runtime` (the store's); keys live under
    /// `namespace` (one per database, so replicas of one deployment share them).
    pub fn start(url: &str, namespace: &str, runtime: &Handle) -> Result<Self, StoreError> {
        let client = crate::redis::builder(url, Duration::from_secs(2))?
            .build()
            .map_err(|error| StoreError::InvalidUrl(format!("redis: {error}")))?;
        let (ops, batches) = mpsc::unbounded_channel();
        let parked = Arc::new(AtomicBool::new(false));
        let urgent = Arc::new(AtomicBool::new(false));
        let inner = Arc::new(Inner {
            client: client.clone(),
            runtime: runtime.clone(),
            ops,
            parked: Arc::clone(&parked),
            urgent: Arc::clone(&urgent),
            prefix: format!("{{{namespace}}}"),
            timeout_ms: AtomicU64::new(DEFAULT_TIMEOUT.as_millis() as u64),
            // Until the first connection, each replica counts on its own.
            available: AtomicBool::new(false),
            holder: Mutex::new(Arc::new(Holder { id: new_holder_id() })),
            earlier: Mutex::default(),
            state: Mutex::default(),
            sha: Mutex::default(),
            local: OnceLock::new(),
            warned: Mutex::default(),
        });
        let _enter = runtime.enter();
        runtime.spawn(first_connection(Arc::downgrade(&inner), client));
        runtime.spawn(run_batches(Arc::downgrade(&inner), batches, parked, urgent));
        runtime.spawn(keep_alive(Arc::downgrade(&inner)));
        runtime.spawn(sweep(Arc::downgrade(&inner)));
        Ok(Self { inner })
    }

    /// Where the limiter finds the caller's own counts when Redis comes back.
    pub fn set_local_counts(&self, local: impl LocalCounts) {
        let _ = self.inner.local.set(Box::new(local));
    }

    /// The longest a call may take before the caller counts locally.
    pub fn set_timeout(&self, timeout: Duration) {
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
        self.inner.timeout_ms.store(millis, Ordering::Relaxed);
    }

    /// Whether limits are counted in Redis now (connected, and no failure since).
    pub fn is_available(&self) -> bool {
        self.inner.available.load(Ordering::Acquire) && self.inner.client.is_connected()
    }

    /// Checks and counts a request in every scope at once, from this replica's reservations
    /// when they cover it, else with one script call. `None` when Redis did not answer within
    /// the timeout or is known to be away: the caller decides locally.
    pub async fn acquire(&self, scopes: Vec<LimitScope>) -> Option<Verdict> {
        let inner = &self.inner;
        if !inner.available.load(Ordering::Acquire) {
            return None;
        }
        let holder = inner.holder();
        let decision = inner.decide(&mut locked(&inner.state), &scopes, &holder, Instant::now());
        let (asks, taken) = match decision {
            Decision::Done(verdict) => return Some(verdict),
            Decision::Ask { asks, taken } => (asks, taken),
        };
        let (reply, verdict) = oneshot::channel();
        inner.ops.send(Op::Ask { request: Request { scopes, taken, asks }, reply }).ok()?;
        match tokio::time::timeout(inner.timeout(), verdict).await {
            Ok(Ok(verdict)) => Some(verdict),
            // The call failed (the batch has made Redis unavailable already).
            Ok(Err(_)) => None,
            Err(_) => {
                // A slow Redis is treated as an absent one: nobody else waits on it either.
                inner.fail(&"a rate-limit call took longer than the timeout");
                None
            }
        }
    }

    /// Adds a finished response's tokens to each scope's window; never waits (they travel
    /// with the next call). Returns false when Redis is away (the caller counts them itself).
    pub fn add_tokens(&self, scopes: &[String], amount: u64) -> bool {
        if !self.inner.available.load(Ordering::Acquire) {
            return false;
        }
        if amount == 0 || scopes.is_empty() {
            return true;
        }
        let now = Instant::now();
        {
            let mut state = locked(&self.inner.state);
            let holder = self.inner.holder();
            for scope in scopes {
                let grant = match state.grants.get_mut(scope.as_str()) {
                    Some(grant) => grant,
                    None => state.grants.entry(scope.clone()).or_insert_with(|| Grant::new(&holder, now)),
                };
                grant.tokens_unsent += amount;
                grant.last_used = now;
                if !state.dirty.contains(scope.as_str()) {
                    state.dirty.insert(scope.clone());
                }
            }
        }
        self.inner.wake();
        true
    }
}

/// What a request needs, decided from this replica's grants.
enum Decision {
    Done(Verdict),
    /// Redis must answer `asks`; the scopes in `taken` were served from grants meanwhile.
    Ask {
        asks: Vec<Ask>,
        taken: Vec<Taken>,
    },
}

/// What a request took from a grant before asking Redis for the rest.
#[derive(Debug, Clone, Copy)]
struct Taken {
    index: usize,
    request: bool,
    slot: bool,
}

impl Inner {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.load(Ordering::Relaxed))
    }

    fn holder(&self) -> Arc<Holder> {
        Arc::clone(&locked(&self.holder))
    }

    /// Wakes the batching task if it sleeps, so waiting tokens and give-backs go out.
    fn wake(&self) {
        if self.parked.swap(false, Ordering::SeqCst) {
            let _ = self.ops.send(Op::Wake);
        }
    }

    /// The identities whose heartbeat must go on: the current one and those still held.
    fn live_holders(&self) -> Vec<Arc<Holder>> {
        let mut earlier = locked(&self.earlier);
        earlier.retain(|holder| holder.strong_count() > 0);
        let mut live: Vec<Arc<Holder>> = earlier.iter().filter_map(Weak::upgrade).collect();
        live.push(self.holder());
        live
    }

    fn new_holder(&self) {
        let fresh = Arc::new(Holder { id: new_holder_id() });
        let old = std::mem::replace(&mut *locked(&self.holder), fresh);
        locked(&self.earlier).push(Arc::downgrade(&old));
    }

    /// Serves the request from grants, refuses it from what is known, or says what to ask.
    fn decide(
        self: &Arc<Self>,
        state: &mut State,
        scopes: &[LimitScope],
        holder: &Arc<Holder>,
        now: Instant,
    ) -> Decision {
        let mut asks = Vec::new();
        let mut taken = Vec::new();
        for (index, scope) in scopes.iter().enumerate() {
            let grant = match state.grants.get_mut(scope.id.as_str()) {
                Some(grant) => grant,
                None => state.grants.entry(scope.id.clone()).or_insert_with(|| Grant::new(holder, now)),
            };
            grant.roll(now);
            if !Arc::ptr_eq(&grant.holder, holder) {
                // Reserved under an identity given up: those slots are Redis's to expire.
                grant.holder = Arc::clone(holder);
                grant.slots_held = 0;
                grant.slots_returning = 0;
                grant.in_flight = 0;
            }
            grant.last_used = now;
            let fresh_tokens = grant.tokens_read.is_some_and(|read| now.duration_since(read) < TOKENS_FRESH);
            if let Some(tpm) = scope.tpm
                && grant.tokens_read.is_some()
                && grant.tokens() >= tpm
            {
                // Tokens only grow within a window: what is known to be full is full.
                let used = grant.tokens();
                let reset = grant.expires.saturating_duration_since(now);
                give_back(state, scopes, &taken);
                abandon(state, &asks);
                return Decision::Done(Verdict::Refused(Refusal {
                    scope: index,
                    kind: LimitKind::Tokens,
                    used,
                    reset,
                }));
            }
            let mut took = Taken { index, request: false, slot: false };
            let mut want_requests = 0;
            let mut want_slots = 0;
            if let Some(rpm) = scope.rpm {
                if grant.requests_left > 0 {
                    grant.requests_left -= 1;
                    took.request = true;
                } else {
                    want_requests =
                        if grant.requests_asked > 0 { 1 } else { grant.share(rpm, grant.requests_seen) };
                    grant.requests_asked += 1;
                }
            }
            if let Some(parallel) = scope.parallel {
                if grant.in_flight < grant.slots_held {
                    grant.in_flight += 1;
                    took.slot = true;
                } else {
                    want_slots =
                        if grant.slots_asked > 0 { 1 } else { grant.share(parallel, grant.in_flight_seen) };
                    grant.slots_asked += 1;
                }
            }
            taken.push(took);
            let stale_tokens = scope.tpm.is_some() && !fresh_tokens;
            if want_requests > 0 || want_slots > 0 || stale_tokens {
                asks.push(Ask {
                    index,
                    id: scope.id.clone(),
                    rpm: scope.rpm,
                    tpm: scope.tpm,
                    parallel: scope.parallel,
                    want_requests,
                    want_slots,
                });
            }
        }
        if asks.is_empty() {
            return Decision::Done(Verdict::Admitted(self.admission(state, scopes, holder, now)));
        }
        Decision::Ask { asks, taken }
    }

    /// Applies Redis's answer to one request: the grants made and what Redis saw go into
    /// this replica's grants, and the request takes its part. A refused request is admitted
    /// after all when grants made meanwhile (for requests asking at the same time) cover it.
    fn settle(
        self: &Arc<Self>,
        state: &mut State,
        request: &Request,
        answered: &Answered,
        outcome: Outcome,
    ) -> Verdict {
        let Request { scopes, taken, asks } = request;
        abandon(state, asks);
        let reset = answered.reset;
        let granted = match outcome {
            Outcome::Refused { ask, kind, used } => {
                give_back(state, scopes, taken);
                return match self.decide(state, scopes, &answered.holder, answered.at) {
                    Decision::Done(verdict) => verdict,
                    Decision::Ask { taken, asks } => {
                        give_back(state, scopes, &taken);
                        abandon(state, &asks);
                        Verdict::Refused(Refusal { scope: ask, kind, used, reset })
                    }
                };
            }
            Outcome::Granted(granted) => granted,
        };
        let expires = answered.at + reset;
        for (ask, [requests, requests_seen, tokens_seen, slots, in_flight_seen]) in asks.iter().zip(granted) {
            let Some(scope) = scopes.get(ask.index) else { continue };
            let Some(grant) = state.grants.get_mut(scope.id.as_str()) else { continue };
            if !Arc::ptr_eq(&grant.holder, &answered.holder) {
                grant.holder = Arc::clone(&answered.holder);
                grant.slots_held = 0;
                grant.slots_returning = 0;
                grant.in_flight = 0;
            }
            if grant.window != answered.window {
                // Requests reserved in another window count for nothing in this one.
                grant.window = answered.window;
                grant.requests_left = 0;
            }
            grant.expires = expires;
            grant.replicas = answered.replicas.max(1);
            if ask.want_requests > 0 {
                grant.requests_seen = requests_seen;
                // One of the granted requests is this one.
                grant.requests_left += requests.saturating_sub(1);
            }
            if scope.tpm.is_some() {
                grant.tokens_seen = tokens_seen;
                grant.tokens_read = Some(answered.at);
            }
            if ask.want_slots > 0 {
                grant.in_flight_seen = in_flight_seen;
                grant.slots_held += slots;
                grant.in_flight += 1;
            }
        }
        Verdict::Admitted(self.admission(state, scopes, &answered.holder, answered.at))
    }

    /// An admission nobody waits for any more: its request goes back to the grants (its
    /// slots go back when its lease drops).
    fn unclaim(&self, scopes: &[LimitScope], admission: Admission) {
        let mut state = locked(&self.state);
        for scope in scopes.iter().filter(|scope| scope.rpm.is_some()) {
            if let Some(grant) = state.grants.get_mut(scope.id.as_str()) {
                grant.requests_left += 1;
            }
        }
        drop(state);
        drop(admission);
    }

    /// The admission of a request whose every scope is counted: figures for its headers, and
    /// the lease on its slots.
    fn admission(
        self: &Arc<Self>,
        state: &State,
        scopes: &[LimitScope],
        holder: &Arc<Holder>,
        now: Instant,
    ) -> Admission {
        let mut reset = Duration::from_secs(60);
        let used = scopes
            .iter()
            .map(|scope| {
                let Some(grant) = state.grants.get(scope.id.as_str()) else { return WindowUse::default() };
                reset = reset.min(grant.expires.saturating_duration_since(now));
                WindowUse {
                    requests: if scope.rpm.is_some() {
                        grant.requests_seen.saturating_sub(grant.requests_left)
                    } else {
                        0
                    },
                    tokens: if scope.tpm.is_some() { grant.tokens() } else { 0 },
                }
            })
            .collect();
        let parallel: Vec<(String, u64)> =
            scopes.iter().filter_map(|scope| Some((scope.id.clone(), scope.parallel?))).collect();
        let lease = (!parallel.is_empty()).then(|| Lease {
            inner: Arc::clone(self),
            holder: Arc::clone(holder),
            scopes: parallel,
        });
        Admission { used, reset, lease }
    }

    /// A request ended: its slots go back to the grant, and what the grant no longer needs
    /// goes back to Redis with the next call.
    fn release(&self, holder: &Arc<Holder>, scopes: &[(String, u64)]) {
        let now = Instant::now();
        let mut returning = false;
        let mut urgent = false;
        {
            let mut state = locked(&self.state);
            for (id, limit) in scopes {
                let Some(grant) = state.grants.get_mut(id.as_str()) else { continue };
                if !Arc::ptr_eq(&grant.holder, holder) {
                    continue;
                }
                grant.in_flight = grant.in_flight.saturating_sub(1);
                grant.last_used = now;
                let free = grant.slots_held.saturating_sub(grant.in_flight);
                let keep = grant.spare_slots(*limit);
                if keep == 0 && free > 0 {
                    // A small limit: another replica may be waiting for this very slot.
                    urgent = true;
                }
                if free > keep {
                    grant.slots_held -= free - keep;
                    grant.slots_returning += free - keep;
                    if !state.dirty.contains(id.as_str()) {
                        state.dirty.insert(id.clone());
                    }
                    returning = true;
                }
            }
        }
        if urgent {
            self.urgent.store(true, Ordering::Release);
            self.parked.store(false, Ordering::SeqCst);
            let _ = self.ops.send(Op::Wake);
        } else if returning {
            self.wake();
        }
    }

    fn options(&self) -> Options {
        Options {
            timeout: Some(self.timeout()),
            // Two: a cluster's first write to a node can be spent on routing (fred counts a
            // redirected write as an attempt); a retried script errs on the side of counting.
            max_attempts: Some(2),
            fail_fast: true,
            ..Options::default()
        }
    }

    /// Runs the script with `args` (after KEYS), by its hash when Redis knows it.
    async fn call(&self, args: Vec<Value>) -> Result<Value, fred::error::Error> {
        let client = self.client.with_options(&self.options());
        let known = locked(&self.sha).clone();
        let head = |first: Value| -> Vec<Value> {
            let mut all = Vec::with_capacity(args.len() + 3);
            all.extend([first, Value::Integer(1), Value::from(self.prefix.as_str())]);
            all.extend(args.iter().cloned());
            all
        };
        if let Some(sha) = known {
            let command = CustomCommand::new_static("EVALSHA", ClusterHash::Offset(2), false);
            match client.custom::<Value, Value>(command, head(Value::from(sha))).await {
                Err(error) if error.details().starts_with("NOSCRIPT") => {}
                answer => return answer,
            }
        }
        let command = CustomCommand::new_static("EVAL", ClusterHash::Offset(2), false);
        let answer = client.custom::<Value, Value>(command, head(Value::from(SCRIPT))).await?;
        // EVAL cached the script; learn its hash so the next calls send 40 bytes, not the script.
        let load = CustomCommand::new_static("SCRIPT", ClusterHash::Random, false);
        if let Ok(sha) = client.custom::<String, Value>(load, vec!["LOAD".into(), SCRIPT.into()]).await {
            *locked(&self.sha) = Some(sha);
        }
        Ok(answer)
    }

    /// Marks Redis as away after `error`: warns once, drops every grant, starts the probe.
    fn fail(self: &Arc<Self>, error: &dyn std::fmt::Display) {
        if self.available.swap(false, Ordering::AcqRel) {
            // One warning per outage; a Redis that keeps coming and going warns once a minute.
            let now = Instant::now();
            let mut warned = locked(&self.warned);
            if warned.is_none_or(|at| now.duration_since(at) >= WARN_EVERY) {
                *warned = Some(now);
                tracing::warn!(
                    %error,
                    "redis: rate limits are counted by each replica on its own until redis answers again"
                );
            } else {
                tracing::debug!(%error, "redis: rate limits are counted locally again");
            }
            drop(warned);
            *locked(&self.state) = State::default();
            let inner = Arc::downgrade(self);
            self.runtime.spawn(async move {
                // A Redis that failed just now gets a moment before it is trusted again.
                tokio::time::sleep(PROBE_EVERY).await;
                recover(inner, "redis: answering again; rate limits are global across replicas again").await;
            });
        }
    }

    /// Takes what waits to be sent (tokens, give-backs) as script operations, and the token
    /// amounts sent per scope (to settle with the answer).
    fn take_pending(&self, args: &mut Vec<Value>) -> Vec<(String, u64)> {
        let mut state = locked(&self.state);
        if state.dirty.is_empty() {
            return Vec::new();
        }
        let dirty: Vec<String> = state.dirty.drain().collect();
        let mut tokens = Vec::new();
        let mut slots: HashMap<String, Vec<(String, u64)>> = HashMap::new();
        let mut requests: HashMap<u64, Vec<(String, u64)>> = HashMap::new();
        for id in dirty {
            let Some(grant) = state.grants.get_mut(id.as_str()) else { continue };
            if grant.tokens_unsent > 0 {
                grant.tokens_sending += grant.tokens_unsent;
                tokens.push((id.clone(), std::mem::take(&mut grant.tokens_unsent)));
            }
            if grant.slots_returning > 0 {
                let returning = std::mem::take(&mut grant.slots_returning);
                slots.entry(grant.holder.id.clone()).or_default().push((id.clone(), returning));
            }
            if grant.requests_returning > 0 {
                let returning = std::mem::take(&mut grant.requests_returning);
                requests.entry(grant.window).or_default().push((id, returning));
            }
        }
        drop(state);
        if !tokens.is_empty() {
            args.extend([Value::from("T"), count_of(&tokens)]);
            for (id, amount) in &tokens {
                args.extend([Value::from(id.as_str()), int(*amount)]);
            }
        }
        for (holder, scopes) in slots {
            args.extend([Value::from("R"), Value::from(holder), count_of(&scopes)]);
            for (id, count) in scopes {
                args.extend([Value::from(id), int(count)]);
            }
        }
        for (window, scopes) in requests {
            args.extend([Value::from("U"), int(window), count_of(&scopes)]);
            for (id, count) in scopes {
                args.extend([Value::from(id), int(count)]);
            }
        }
        tokens
    }

    /// Runs one batch (what waits to be sent, then the asks) in one script call and answers
    /// the asks.
    async fn run(self: &Arc<Self>, batch: Vec<Op>) {
        let holder = self.holder();
        let mut args: Vec<Value> = vec![Value::from(holder.id.as_str())];
        let sent_tokens = self.take_pending(&mut args);
        let mut waiting = Vec::new();
        for op in batch {
            if let Op::Ask { request, reply } = op {
                encode_asks(&mut args, &request.asks);
                waiting.push((request, reply));
            }
        }
        if args.len() == 1 {
            return;
        }
        let answer = match self.call(args).await {
            Ok(Value::Array(answer)) => answer,
            Ok(other) => {
                self.fail(&format!("unexpected answer from the limiter script: {other:?}"));
                return;
            }
            Err(error) => {
                self.fail(&error);
                return;
            }
        };
        let at = Instant::now();
        let mut entries = answer.into_iter();
        let header: Vec<u64> = entries.by_ref().take(3).map(|value| unsigned(&value)).collect();
        let [window, reset_ms, replicas] = header[..] else {
            self.fail(&"the limiter script answered without its header");
            return;
        };
        let answered = Answered { holder, window, reset: Duration::from_millis(reset_ms), replicas, at };
        let mut entries = entries.collect::<Vec<Value>>().into_iter();
        if !sent_tokens.is_empty() {
            let totals: Vec<u64> = match entries.next() {
                Some(Value::Array(totals)) => totals.iter().map(unsigned).collect(),
                _ => Vec::new(),
            };
            self.settle_tokens(&sent_tokens, &totals, window, at + answered.reset, at);
        }
        // Give-backs answer 0 each; the asks' answers follow them, in order.
        let skip = entries.len().saturating_sub(waiting.len());
        let mut entries = entries.skip(skip);
        let mut verdicts = Vec::with_capacity(waiting.len());
        {
            let mut state = locked(&self.state);
            for (request, reply) in waiting {
                let Some(outcome) = entries.next().and_then(|value| parse_outcome(&request.asks, value))
                else {
                    drop(state);
                    self.fail(&"the limiter script answered a request in an unexpected shape");
                    return;
                };
                let verdict = self.settle(&mut state, &request, &answered, outcome);
                verdicts.push((request.scopes, verdict, reply));
            }
        }
        for (scopes, verdict, reply) in verdicts {
            // Nobody waits any more (timed out, or the client left).
            if let Err(Verdict::Admitted(admission)) = reply.send(verdict) {
                self.unclaim(&scopes, admission);
            }
        }
    }

    fn settle_tokens(
        &self,
        sent: &[(String, u64)],
        totals: &[u64],
        window: u64,
        expires: Instant,
        at: Instant,
    ) {
        let mut state = locked(&self.state);
        for ((id, amount), total) in sent.iter().zip(totals) {
            let Some(grant) = state.grants.get_mut(id.as_str()) else { continue };
            grant.tokens_sending = grant.tokens_sending.saturating_sub(*amount);
            if grant.window == window {
                grant.tokens_seen = *total;
                grant.tokens_read = Some(at);
                grant.expires = expires;
            }
        }
    }

    async fn ping(&self) -> bool {
        let command = CustomCommand::new_static("PING", ClusterHash::Random, false);
        self.client.with_options(&self.options()).custom::<Value, Value>(command, Vec::new()).await.is_ok()
    }

    /// Brings Redis back into use: a new identity, the local counts; then callers count in
    /// Redis again.
    async fn resume(self: &Arc<Self>) -> Result<(), fred::error::Error> {
        self.new_holder();
        let holder = self.holder();
        let counts = self.local.get().map(|local| local.outage_counts()).unwrap_or_default();
        let mut args: Vec<Value> = vec![Value::from(holder.id.as_str())];
        if !counts.is_empty() {
            args.extend([Value::from("S"), count_of(&counts)]);
            for count in &counts {
                args.extend([
                    Value::from(count.scope.as_str()),
                    int(count.window),
                    int(count.requests),
                    int(count.tokens),
                ]);
            }
        }
        self.call(args).await?;
        *locked(&self.state) = State::default();
        self.available.store(true, Ordering::Release);
        if let Some(local) = self.local.get() {
            local.forget_outage_counts();
        }
        Ok(())
    }

    /// Gives back reservations unused for `IDLE_RETURN` and forgets long-unused scopes.
    fn sweep(&self, now: Instant) {
        let mut returning = false;
        {
            let mut state = locked(&self.state);
            let State { grants, dirty } = &mut *state;
            grants.retain(|id, grant| {
                let idle = now.duration_since(grant.last_used);
                if idle < IDLE_RETURN {
                    return true;
                }
                grant.roll(now);
                let spare = grant.slots_held.saturating_sub(grant.in_flight);
                if grant.requests_left > 0 || spare > 0 {
                    grant.requests_returning += std::mem::take(&mut grant.requests_left);
                    grant.slots_held -= spare;
                    grant.slots_returning += spare;
                    dirty.insert(id.clone());
                    returning = true;
                }
                let pending = grant.tokens_unsent
                    + grant.tokens_sending
                    + grant.slots_returning
                    + grant.requests_returning
                    + grant.in_flight;
                idle < FORGET_AFTER || pending > 0
            });
        }
        if returning {
            self.wake();
        }
    }
}

/// Asks answered (or never sent) are no longer under way.
fn abandon(state: &mut State, asks: &[Ask]) {
    for ask in asks {
        if let Some(grant) = state.grants.get_mut(ask.id.as_str()) {
            grant.requests_asked = grant.requests_asked.saturating_sub(u32::from(ask.want_requests > 0));
            grant.slots_asked = grant.slots_asked.saturating_sub(u32::from(ask.want_slots > 0));
        }
    }
}

/// Undoes what a refused request took from grants.
fn give_back(state: &mut State, scopes: &[LimitScope], taken: &[Taken]) {
    for took in taken {
        let Some(grant) = scopes.get(took.index).and_then(|scope| state.grants.get_mut(scope.id.as_str()))
        else {
            continue;
        };
        if took.request {
            grant.requests_left += 1;
        }
        if took.slot {
            grant.in_flight = grant.in_flight.saturating_sub(1);
        }
    }
}

fn unsigned(value: &Value) -> u64 {
    value.as_i64().map_or(0, |n| u64::try_from(n).unwrap_or(0))
}

fn parse_outcome(asks: &[Ask], value: Value) -> Option<Outcome> {
    let Value::Array(items) = value else { return None };
    let numbers: Vec<u64> = items.iter().map(unsigned).collect();
    match numbers.as_slice() {
        [1, rest @ ..] if rest.len() == asks.len() * 5 => {
            Some(Outcome::Granted(rest.chunks(5).map(|c| [c[0], c[1], c[2], c[3], c[4]]).collect()))
        }
        [0, ask, kind, used] => {
            let kind = match kind {
                1 => LimitKind::Requests,
                2 => LimitKind::Tokens,
                _ => LimitKind::Parallel,
            };
            let ask = asks.get(usize::try_from(*ask).ok()?.checked_sub(1)?)?;
            Some(Outcome::Refused { ask: ask.index, kind, used: *used })
        }
        _ => None,
    }
}

fn int(n: u64) -> Value {
    Value::Integer(i64::try_from(n).unwrap_or(i64::MAX))
}

fn limit(n: Option<u64>) -> Value {
    n.map_or(Value::Integer(-1), int)
}

fn count_of<T>(items: &[T]) -> Value {
    Value::Integer(i64::try_from(items.len()).unwrap_or(i64::MAX))
}

fn encode_asks(args: &mut Vec<Value>, asks: &[Ask]) {
    args.extend([Value::from("G"), count_of(asks)]);
    for ask in asks {
        args.extend([
            Value::from(ask.id.as_str()),
            limit(ask.rpm),
            limit(ask.tpm),
            limit(ask.parallel),
            int(ask.want_requests),
            int(ask.want_slots),
        ]);
    }
}

/// A replica identity no other replica (or earlier identity of this one) uses.
fn new_holder_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    hasher.write_u64(NEXT.fetch_add(1, Ordering::Relaxed));
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    format!("{:016x}", hasher.finish())
}

/// Gathers the requests that need Redis as they arrive and sends each gathering, with what
/// waits to be sent (tokens, give-backs), in one script call; those go out within
/// `FLUSH_EVERY` even when no request needs Redis. While Redis is away nothing is sent.
async fn run_batches(
    inner: Weak<Inner>,
    mut ops: mpsc::UnboundedReceiver<Op>,
    parked: Arc<AtomicBool>,
    urgent: Arc<AtomicBool>,
) {
    let calls = Arc::new(Semaphore::new(MAX_CALLS_IN_FLIGHT));
    let mut batch = Vec::with_capacity(MAX_BATCH);
    loop {
        // Waiting for a free call first lets requests pile up meanwhile.
        let Ok(permit) = Arc::clone(&calls).acquire_owned().await else { return };
        let pending = match inner.upgrade() {
            Some(inner) => !locked(&inner.state).dirty.is_empty(),
            None => return,
        };
        if !pending {
            parked.store(true, Ordering::SeqCst);
            // Something made dirty before `parked` was set sent no wake: look again.
            let dirty = inner.upgrade().is_some_and(|inner| !locked(&inner.state).dirty.is_empty());
            if !dirty && ops.recv_many(&mut batch, MAX_BATCH).await == 0 {
                return;
            }
            parked.store(false, Ordering::SeqCst);
        }
        if !batch.iter().any(|op| matches!(op, Op::Ask { .. })) && !urgent.swap(false, Ordering::AcqRel) {
            // Only tokens and give-backs wait: give requests the flush interval to come and
            // carry them, so a trickle of requests makes a call every interval, not each.
            if let Ok(0) = tokio::time::timeout(FLUSH_EVERY, ops.recv_many(&mut batch, MAX_BATCH)).await {
                return;
            }
        }
        let ready: Vec<Op> = batch.drain(..).filter(|op| matches!(op, Op::Ask { .. })).collect();
        let Some(inner) = inner.upgrade() else { return };
        if !inner.available.load(Ordering::Acquire) {
            // Requests asking now get no answer: they decide locally.
            continue;
        }
        tokio::spawn(async move {
            inner.run(ready).await;
            drop(permit);
        });
    }
}

/// Renews the heartbeat of every identity with slots in flight, so long streams keep theirs.
async fn keep_alive(inner: Weak<Inner>) {
    let mut every = tokio::time::interval(HEARTBEAT_EVERY);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if !inner.available.load(Ordering::Acquire) || !inner.client.is_connected() {
            continue;
        }
        // The script renews the current identity; earlier ones still held ride along. Its
        // clock is Redis's, so replicas' clocks never matter.
        let holders = inner.live_holders();
        let mut args: Vec<Value> = vec![Value::from(inner.holder().id.as_str())];
        args.extend([Value::from("H"), count_of(&holders)]);
        args.extend(holders.iter().map(|holder| Value::from(holder.id.as_str())));
        if let Err(error) = inner.call(args).await {
            inner.fail(&error);
        }
    }
}

/// Gives back unused reservations now and then.
async fn sweep(inner: Weak<Inner>) {
    let mut every = tokio::time::interval(SWEEP_EVERY);
    loop {
        every.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        if inner.available.load(Ordering::Acquire) {
            inner.sweep(Instant::now());
        }
    }
}

/// Connects, then brings the limiter into use; warns once if Redis does not answer at first
/// (fred keeps reconnecting in the background, and the probe notices when it does).
async fn first_connection(inner: Weak<Inner>, client: Client) {
    let _connection = client.connect();
    match tokio::time::timeout(FIRST_CONNECTION_WAIT, client.wait_for_connect()).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => tracing::warn!(
            %error,
            "redis: not reachable; rate limits are counted by each replica on its own until it answers"
        ),
        Err(_) => tracing::warn!(
            "redis: no connection yet; rate limits are counted by each replica on its own until it answers"
        ),
    }
    recover(inner, "redis: connected; rate limits are global across replicas").await;
}

/// Pings until Redis answers, then resumes counting there.
async fn recover(inner: Weak<Inner>, resumed: &'static str) {
    loop {
        {
            let Some(inner) = inner.upgrade() else { return };
            if inner.ping().await {
                match inner.resume().await {
                    Ok(()) => {
                        tracing::info!("{resumed}");
                        return;
                    }
                    Err(error) => tracing::debug!(%error, "redis: not back yet"),
                }
            }
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis_url() -> Option<String> {
        let url = std::env::var("TOLLGATE_TEST_REDIS_URL").ok();
        if url.is_none() {
            eprintln!("not run: TOLLGATE_TEST_REDIS_URL is not set");
        }
        url
    }

    fn scope(id: &str, rpm: Option<u64>, tpm: Option<u64>, parallel: Option<u64>) -> LimitScope {
        LimitScope { id: id.to_owned(), rpm, tpm, parallel }
    }

    async fn admitted(limits: &RedisLimits, scopes: Vec<LimitScope>) -> Admission {
        match limits.acquire(scopes).await {
            Some(Verdict::Admitted(admission)) => admission,
            other => panic!("expected an admission, got {other:?}"),
        }
    }

    async fn refused(limits: &RedisLimits, scopes: Vec<LimitScope>) -> Refusal {
        match limits.acquire(scopes).await {
            Some(Verdict::Refused(refusal)) => refusal,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn minute_and_second() -> (u64, u64) {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        (now / 60, now % 60)
    }

    /// A limiter in use (connected) in a namespace of its own, early enough in a minute that
    /// the test's counts stay in one window.
    async fn connected(url: &str, test: &str) -> RedisLimits {
        let namespace = format!("tollgate-test:{test}:{}", new_holder_id());
        let limits = RedisLimits::start(url, &namespace, &Handle::current()).unwrap();
        limits.set_timeout(Duration::from_secs(2));
        let started = Instant::now();
        while !limits.is_available() {
            assert!(started.elapsed() < Duration::from_secs(5), "redis never connected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let (_, second) = minute_and_second();
        if second >= 54 {
            tokio::time::sleep(Duration::from_secs(61 - second)).await;
        }
        limits
    }

    async fn redis_number(limits: &RedisLimits, key: String) -> i64 {
        let get = CustomCommand::new_static("GET", ClusterHash::FirstKey, false);
        let value: Option<i64> = limits.inner.client.custom(get, vec![Value::from(key)]).await.unwrap();
        value.unwrap_or(0)
    }

    #[tokio::test]
    async fn near_a_limit_requests_are_counted_one_by_one_in_every_scope_or_in_none() {
        let Some(url) = redis_url() else { return };
        let limits = connected(&url, "all-or-none").await;
        let key = || scope("api_key:k", Some(3), None, None);
        let team = || scope("team:t", Some(2), None, None);
        let first = admitted(&limits, vec![key(), team()]).await;
        assert_eq!(first.used, [WindowUse { requests: 1, tokens: 0 }, WindowUse { requests: 1, tokens: 0 }]);
        assert!(first.reset <= Duration::from_secs(60) && first.lease.is_none());
        admitted(&limits, vec![key(), team()]).await;
        let refusal = refused(&limits, vec![key(), team()]).await;
        assert_eq!((refusal.scope, refusal.kind, refusal.used), (1, LimitKind::Requests, 2));
        // The refused request took nothing from the key: one more fits there on its own.
        let alone = admitted(&limits, vec![key()]).await;
        assert_eq!(alone.used[0].requests, 3);
        assert_eq!(refused(&limits, vec![key()]).await.scope, 0);
    }

    #[tokio::test]
    async fn far_from_a_limit_one_call_reserves_many_and_unused_reservations_come_back() {
        let Some(url) = redis_url() else { return };
        let limits = connected(&url, "grants").await;
        let big = || vec![scope("api_key:big", Some(1_000_000), None, Some(100_000))];
        for _ in 0..50 {
            drop(admitted(&limits, big()).await);
        }
        let (minute, _) = minute_and_second();
        let requests = format!("{}:api_key:big:{minute}:r", limits.inner.prefix);
        let reserved = redis_number(&limits, requests.clone()).await;
        assert!(reserved > 50, "requests are reserved ahead: {reserved}");
        // A second without requests: what was not used goes back, and the count is the truth.
        let started = Instant::now();
        while redis_number(&limits, requests.clone()).await != 50 {
            assert!(started.elapsed() < Duration::from_secs(4), "unused reservations stayed");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let slots = format!("{}:api_key:big:p", limits.inner.prefix);
        let hget = CustomCommand::new_static("HGET", ClusterHash::FirstKey, false);
        let holder = limits.inner.holder().id.clone();
        let held: Option<i64> =
            limits.inner.client.custom(hget, vec![Value::from(slots), Value::from(holder)]).await.unwrap();
        assert_eq!(held.unwrap_or(0), 0, "spare slots went back too");
    }

    #[tokio::test]
    async fn in_flight_slots_are_given_back_and_dead_replicas_do_not_hold_them() {
        let Some(url) = redis_url() else { return };
        let limits = connected(&url, "parallel").await;
        let slot = || vec![scope("api_key:p", None, None, Some(2))];
        let one = admitted(&limits, slot()).await;
        let two = admitted(&limits, slot()).await;
        let refusal = refused(&limits, slot()).await;
        assert_eq!((refusal.kind, refusal.used), (LimitKind::Parallel, 2));
        drop(one);
        // The give-back goes out with the next call, ahead of it.
        let three = admitted(&limits, slot()).await;
        drop((two, three));

        // A replica that crashed with slots held: its field stays, its heartbeat does not.
        let key = format!("{}:api_key:p:p", limits.inner.prefix);
        let hset = CustomCommand::new_static("HSET", ClusterHash::FirstKey, false);
        let args: Vec<Value> = vec![key.into(), "crashed-replica".into(), Value::Integer(2)];
        limits.inner.client.custom::<Value, Value>(hset, args).await.unwrap();
        let a = admitted(&limits, slot()).await;
        let b = admitted(&limits, slot()).await;
        assert!(a.lease.is_some() && b.lease.is_some());
        assert_eq!(refused(&limits, slot()).await.used, 2, "only this replica's two slots count");
    }

    #[tokio::test]
    async fn tokens_count_after_the_response_and_outage_counts_are_added_back() {
        let Some(url) = redis_url() else { return };
        let limits = connected(&url, "tokens").await;
        let tokens = || vec![scope("user:u", None, Some(100), None)];
        assert_eq!(admitted(&limits, tokens()).await.used[0].tokens, 0);
        assert!(limits.add_tokens(&["user:u".to_owned()], 60));
        assert_eq!(admitted(&limits, tokens()).await.used[0].tokens, 60);
        assert!(limits.add_tokens(&["user:u".to_owned()], 40));
        let refusal = refused(&limits, tokens()).await;
        assert_eq!((refusal.kind, refusal.used), (LimitKind::Tokens, 100));
        // The tokens reached Redis, for the other replicas.
        let (minute, _) = minute_and_second();
        let key = format!("{}:user:u:{minute}:t", limits.inner.prefix);
        let started = Instant::now();
        while redis_number(&limits, key.clone()).await != 100 {
            assert!(started.elapsed() < Duration::from_secs(2), "tokens never reached redis");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Counts a replica made alone during an outage join the shared window on recovery.
        struct Outage(Mutex<Vec<WindowCount>>);
        impl LocalCounts for Arc<Outage> {
            fn outage_counts(&self) -> Vec<WindowCount> {
                self.0.lock().unwrap().clone()
            }
            fn forget_outage_counts(&self) {
                self.0.lock().unwrap().clear();
            }
        }
        let outage = Arc::new(Outage(Mutex::new(vec![WindowCount {
            scope: "team:o".to_owned(),
            window: minute,
            requests: 4,
            tokens: 0,
        }])));
        limits.set_local_counts(Arc::clone(&outage));
        limits.inner.fail(&"simulated outage");
        assert!(limits.acquire(vec![scope("team:o", Some(5), None, None)]).await.is_none(), "no waiting");
        let started = Instant::now();
        while !limits.is_available() {
            assert!(started.elapsed() < Duration::from_secs(5), "the probe never brought redis back");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(outage.0.lock().unwrap().is_empty(), "forgotten once redis has them");
        let admission = admitted(&limits, vec![scope("team:o", Some(5), None, None)]).await;
        assert_eq!(admission.used[0].requests, 5, "{admission:?}");
        assert!(
            limits
                .acquire(vec![scope("team:o", Some(5), None, None)])
                .await
                .is_some_and(|v| matches!(v, Verdict::Refused(_)))
        );
    }
}
