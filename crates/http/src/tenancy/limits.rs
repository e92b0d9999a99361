//! Rate limits: requests per minute (`rpm_limit`), tokens per minute (`tpm_limit`), each over
//! a fixed minute of the clock, and requests in flight (`max_parallel_requests`), for a
//! request's key, user, team, organization and customer, and the key's and team's limits for
//! the model (`model_rpm_limit` / `model_tpm_limit` in their metadata, as LiteLLM keeps them).
//!
//! With Redis ([`Limits::connect_redis`]) the counts are global: Redis checks and counts
//! every scope of a request at once, atomically, and this process admits against what it
//! reserved there (see `tollgate_storage::redis_limits`). Without it, or while Redis does not
//! answer, this process counts on its own (limits hold per replica), and what it counted
//! alone is added to the shared counts when Redis returns. A request without any limit never
//! reaches Redis.
//!
//! Tokens are counted when a response's usage is known, so a request is refused once the
//! window's tokens reach the limit; the requests already admitted when it is crossed complete
//! (as in LiteLLM).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use tollgate_domain::{ErrorKind, GatewayError};
use tollgate_storage::redis_limits::{
    Lease, LimitKind, LimitScope, LocalCounts, RedisLimits, Refusal, Verdict, WindowCount, WindowUse,
};
use tollgate_storage::{BudgetRecord, StoreError};

use super::Principal;

/// Whose limits a request counts against: the virtual key's records, and the customer named
/// by the request's `user` with its budget row (where customer limits live).
#[derive(Debug, Clone, Copy, Default)]
pub struct Caller<'a> {
    pub principal: Option<&'a Principal>,
    pub customer: Option<(&'a str, &'a BudgetRecord)>,
}

/// One scope's counters in this process.
#[derive(Debug, Default)]
struct Counters {
    in_flight: AtomicU32,
    /// The minute (since the Unix epoch) the window counts cover. The window's fields
    /// change only under the map's lock.
    window: AtomicU64,
    window_requests: AtomicU64,
    window_tokens: AtomicU64,
}

impl Counters {
    /// Moves the window to `minute`, clearing its counts, if it is a new minute.
    fn roll(&self, minute: u64) {
        if self.window.swap(minute, Ordering::Relaxed) != minute {
            self.window_requests.store(0, Ordering::Relaxed);
            self.window_tokens.store(0, Ordering::Relaxed);
        }
    }
}

/// This process's counters by scope id.
#[derive(Debug, Default)]
struct Local {
    scopes: Mutex<HashMap<String, Arc<Counters>>>,
}

/// What a request counted against, and where.
#[derive(Debug, Default)]
pub struct Limits {
    local: Arc<Local>,
    redis: OnceLock<RedisLimits>,
}

/// Holds the in-flight slots a request took, here or in Redis; dropping it gives them back.
/// It also carries the `x-ratelimit-*` values the response reports.
#[derive(Debug, Default)]
pub struct Permit {
    held: Vec<Arc<Counters>>,
    _lease: Option<Lease>,
    report: Option<Box<Report>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        for counters in &self.held {
            counters.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What a key and its team have left of their rpm and tpm limits this minute (requests,
/// tokens), after the request that holds the permit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Remaining {
    /// The tightest of the key's own limits and its limits for the model.
    pub key: (Option<u64>, Option<u64>),
    /// The tightest of the team's limits and its limits for the model.
    pub team: (Option<u64>, Option<u64>),
}

impl Permit {
    /// What the key and its team have left, when either has a limit.
    pub fn remaining(&self) -> Option<Remaining> {
        self.report.as_ref().map(|report| report.remaining).filter(|r| *r != Remaining::default())
    }

    /// Adds `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` for the tightest scope
    /// with an rpm (tpm) limit; nothing when the request had none.
    pub fn add_headers(&self, headers: &mut HeaderMap) {
        if let Some(report) = &self.report {
            report.write(headers);
        }
    }
}

/// The tightest rpm and tpm scopes of a request, as `(limit, remaining)`.
#[derive(Debug)]
struct Report {
    requests: Option<(u64, u64)>,
    tokens: Option<(u64, u64)>,
    reset: Duration,
    remaining: Remaining,
}

impl Report {
    fn new(scopes: &[Scope<'_>], used: &[WindowUse], reset: Duration) -> Option<Box<Self>> {
        let tightest = |limit: fn(&Scope<'_>) -> Option<u64>, counted: fn(&WindowUse) -> u64| {
            scopes
                .iter()
                .zip(used)
                .filter_map(|(scope, used)| {
                    limit(scope).map(|limit| (limit, limit.saturating_sub(counted(used))))
                })
                .min_by_key(|&(_, remaining)| remaining)
        };
        let requests = tightest(|scope| scope.rpm, |used| used.requests);
        let tokens = tightest(|scope| scope.tpm, |used| used.tokens);
        // Per owner: the key (and its per-model limits), the team (and its).
        let left =
            |kinds: [&str; 2], limit: fn(&Scope<'_>) -> Option<u64>, counted: fn(&WindowUse) -> u64| {
                scopes
                    .iter()
                    .zip(used)
                    .filter(|(scope, _)| kinds.contains(&scope.kind))
                    .filter_map(|(scope, used)| limit(scope).map(|limit| limit.saturating_sub(counted(used))))
                    .min()
            };
        let remaining = Remaining {
            key: (
                left(["api_key", "model_per_key"], |s| s.rpm, |u| u.requests),
                left(["api_key", "model_per_key"], |s| s.tpm, |u| u.tokens),
            ),
            team: (
                left(["team", "model_per_team"], |s| s.rpm, |u| u.requests),
                left(["team", "model_per_team"], |s| s.tpm, |u| u.tokens),
            ),
        };
        (requests.is_some() || tokens.is_some())
            .then(|| Box::new(Self { requests, tokens, reset, remaining }))
    }

    fn write(&self, headers: &mut HeaderMap) {
        let reset = HeaderValue::from_str(&reset_text(self.reset)).ok();
        for (values, [limit, remaining, reset_name]) in
            [(self.requests, REQUEST_HEADERS), (self.tokens, TOKEN_HEADERS)]
        {
            if let Some((limit_value, remaining_value)) = values {
                headers.insert(limit, HeaderValue::from(limit_value));
                headers.insert(remaining, HeaderValue::from(remaining_value));
                if let Some(reset) = &reset {
                    headers.insert(reset_name, reset.clone());
                }
            }
        }
    }
}

/// `x-ratelimit-{limit,remaining,reset}-requests`, named once (not parsed per response).
const REQUEST_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-requests"),
    HeaderName::from_static("x-ratelimit-remaining-requests"),
    HeaderName::from_static("x-ratelimit-reset-requests"),
];
const TOKEN_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static("x-ratelimit-limit-tokens"),
    HeaderName::from_static("x-ratelimit-remaining-tokens"),
    HeaderName::from_static("x-ratelimit-reset-tokens"),
];

/// Time until a window resets in OpenAI's header format (`250ms`, `17s`).
fn reset_text(reset: Duration) -> String {
    if reset < Duration::from_secs(1) {
        format!("{}ms", reset.as_millis().max(1))
    } else {
        format!("{}s", reset.as_secs() + u64::from(reset.subsec_nanos() > 0))
    }
}

/// One scope's limits, named as LiteLLM names its rate-limit descriptors.
#[derive(Debug)]
struct Scope<'a> {
    kind: &'static str,
    value: Cow<'a, str>,
    rpm: Option<u64>,
    tpm: Option<u64>,
    parallel: Option<u64>,
}

impl Scope<'_> {
    fn id(&self) -> String {
        format!("{}:{}", self.kind, self.value)
    }

    fn limited(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.parallel.is_some()
    }
}

/// A configured limit; a negative one (meaningless) refuses everything, like 0.
fn limit(value: Option<i64>) -> Option<u64> {
    value.map(|v| u64::try_from(v).unwrap_or(0))
}

/// Every scope of `caller` with a limit, in LiteLLM's order.
fn scopes<'a>(caller: &Caller<'a>, model: &str) -> Vec<Scope<'a>> {
    let mut scopes = Vec::new();
    if let Some(principal) = caller.principal {
        let key = &principal.key;
        scopes.push(Scope {
            kind: "api_key",
            value: Cow::Borrowed(&key.token),
            rpm: limit(key.rpm_limit),
            tpm: limit(key.tpm_limit),
            parallel: limit(key.max_parallel_requests.map(i64::from)),
        });
        if let Some(user) = &principal.user {
            scopes.push(Scope {
                kind: "user",
                value: Cow::Borrowed(&user.user_id),
                rpm: limit(user.rpm_limit),
                tpm: limit(user.tpm_limit),
                parallel: limit(user.max_parallel_requests.map(i64::from)),
            });
        }
        if let Some(team) = &principal.team {
            scopes.push(Scope {
                kind: "team",
                value: Cow::Borrowed(&team.team_id),
                rpm: limit(team.rpm_limit),
                tpm: limit(team.tpm_limit),
                parallel: limit(team.max_parallel_requests.map(i64::from)),
            });
        }
        if let Some((organization, Some(budget))) = &principal.organization {
            scopes.push(budget_scope("organization", &organization.organization_id, budget));
        }
    }
    if let Some((id, budget)) = caller.customer {
        scopes.push(budget_scope("end_user", id, budget));
    }
    if let Some(principal) = caller.principal {
        let key = &principal.key;
        if let Some(scope) = model_scope("model_per_key", &key.token, &key.metadata.0, model) {
            scopes.push(scope);
        }
        if let Some(team) = &principal.team
            && let Some(scope) = model_scope("model_per_team", &team.team_id, &team.metadata.0, model)
        {
            scopes.push(scope);
        }
    }
    scopes.retain(Scope::limited);
    scopes
}

fn budget_scope<'a>(kind: &'static str, id: &'a str, budget: &BudgetRecord) -> Scope<'a> {
    Scope {
        kind,
        value: Cow::Borrowed(id),
        rpm: limit(budget.rpm_limit),
        tpm: limit(budget.tpm_limit),
        parallel: limit(budget.max_parallel_requests.map(i64::from)),
    }
}

/// `model_rpm_limit` / `model_tpm_limit` (`{model: limit}`) in a key's or team's metadata.
fn model_scope(
    kind: &'static str,
    owner: &str,
    metadata: &serde_json::Value,
    model: &str,
) -> Option<Scope<'static>> {
    let per_model = |field: &str| limit(metadata.get(field)?.get(model)?.as_i64());
    let (rpm, tpm) = (per_model("model_rpm_limit"), per_model("model_tpm_limit"));
    (rpm.is_some() || tpm.is_some()).then(|| Scope {
        kind,
        value: Cow::Owned(format!("{owner}:{model}")),
        rpm,
        tpm,
        parallel: None,
    })
}

/// The current minute since the Unix epoch, and the time left in it.
fn clock() -> (u64, Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    let minute = now.as_secs() / 60;
    let reset = Duration::from_secs((minute + 1) * 60).saturating_sub(now);
    (minute, reset)
}

impl Limits {
    /// Counts limits in Redis at `url` from now on, shared with every replica that uses the
    /// same `namespace`. Connects in the background on `runtime`; until it answers, and
    /// whenever it does not, this process counts on its own.
    pub fn connect_redis(
        &self,
        url: &str,
        namespace: &str,
        runtime: &tokio::runtime::Handle,
    ) -> Result<(), StoreError> {
        let redis = RedisLimits::start(url, namespace, runtime)?;
        redis.set_local_counts(OutageCounts(Arc::clone(&self.local)));
        let _ = self.redis.set(redis);
        Ok(())
    }

    /// The longest a request waits on Redis before counting locally (100 ms by default).
    pub fn set_redis_timeout(&self, timeout: Duration) {
        if let Some(redis) = self.redis.get() {
            redis.set_timeout(timeout);
        }
    }

    /// `None` without Redis; else whether limits are counted there now (true) or per
    /// replica because it does not answer (false).
    pub fn redis_status(&self) -> Option<bool> {
        self.redis.get().map(RedisLimits::is_available)
    }

    /// Counts the request against every scope with a limit, or refuses it with LiteLLM's
    /// 429. A refused request takes nothing.
    pub async fn acquire(&self, caller: &Caller<'_>, model: &str) -> Result<Permit, GatewayError> {
        let scopes = scopes(caller, model);
        if scopes.is_empty() {
            return Ok(Permit::default());
        }
        if let Some(redis) = self.redis.get() {
            let asked = scopes
                .iter()
                .map(|scope| LimitScope {
                    id: scope.id(),
                    rpm: scope.rpm,
                    tpm: scope.tpm,
                    parallel: scope.parallel,
                })
                .collect();
            match redis.acquire(asked).await {
                Some(Verdict::Admitted(admission)) => {
                    return Ok(Permit {
                        held: Vec::new(),
                        report: Report::new(&scopes, &admission.used, admission.reset),
                        _lease: admission.lease,
                    });
                }
                Some(Verdict::Refused(refusal)) => return Err(refused(&scopes, &refusal)),
                // Redis is away or slow: this request is decided here.
                None => {}
            }
        }
        self.local.acquire(&scopes).map_err(|refusal| refused(&scopes, &refusal))
    }

    /// Counts a finished request's tokens against every scope with a `tpm_limit`.
    pub fn add_tokens(&self, caller: &Caller<'_>, model: &str, tokens: u64) {
        if tokens == 0 {
            return;
        }
        let scopes: Vec<Scope<'_>> =
            scopes(caller, model).into_iter().filter(|scope| scope.tpm.is_some()).collect();
        if scopes.is_empty() {
            return;
        }
        if let Some(redis) = self.redis.get()
            && redis.add_tokens(&scopes.iter().map(Scope::id).collect::<Vec<_>>(), tokens)
        {
            return;
        }
        self.local.add_tokens(&scopes, tokens);
    }
}

impl Local {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Counters>>> {
        self.scopes.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks every scope, then counts in every scope, under one lock: all or nothing.
    fn acquire(&self, scopes: &[Scope<'_>]) -> Result<Permit, Refusal> {
        let (minute, reset) = clock();
        let mut map = self.lock();
        let counters: Vec<Arc<Counters>> =
            scopes.iter().map(|scope| Arc::clone(map.entry(scope.id()).or_default())).collect();
        for (index, (scope, counters)) in scopes.iter().zip(&counters).enumerate() {
            counters.roll(minute);
            let refusal = |kind, used| Refusal { scope: index, kind, used, reset };
            let requests = counters.window_requests.load(Ordering::Relaxed);
            if scope.rpm.is_some_and(|limit| requests >= limit) {
                return Err(refusal(LimitKind::Requests, requests));
            }
            let tokens = counters.window_tokens.load(Ordering::Relaxed);
            if scope.tpm.is_some_and(|limit| tokens >= limit) {
                return Err(refusal(LimitKind::Tokens, tokens));
            }
            let in_flight = u64::from(counters.in_flight.load(Ordering::Acquire));
            if scope.parallel.is_some_and(|limit| in_flight >= limit) {
                return Err(refusal(LimitKind::Parallel, in_flight));
            }
        }
        let mut held = Vec::new();
        let mut used = Vec::with_capacity(scopes.len());
        for (scope, counters) in scopes.iter().zip(counters) {
            let requests = match scope.rpm {
                Some(_) => counters.window_requests.fetch_add(1, Ordering::Relaxed) + 1,
                None => 0,
            };
            let tokens = if scope.tpm.is_some() { counters.window_tokens.load(Ordering::Relaxed) } else { 0 };
            used.push(WindowUse { requests, tokens });
            if scope.parallel.is_some() {
                counters.in_flight.fetch_add(1, Ordering::AcqRel);
                held.push(counters);
            }
        }
        drop(map);
        Ok(Permit { held, _lease: None, report: Report::new(scopes, &used, reset) })
    }

    fn add_tokens(&self, scopes: &[Scope<'_>], tokens: u64) {
        let (minute, _) = clock();
        let mut map = self.lock();
        for scope in scopes {
            let counters = map.entry(scope.id()).or_default();
            counters.roll(minute);
            counters.window_tokens.fetch_add(tokens, Ordering::Relaxed);
        }
    }
}

/// Hands the counts this process made alone back to Redis when it returns.
struct OutageCounts(Arc<Local>);

impl LocalCounts for OutageCounts {
    fn outage_counts(&self) -> Vec<WindowCount> {
        let (minute, _) = clock();
        self.0
            .lock()
            .iter()
            .filter(|(_, counters)| counters.window.load(Ordering::Relaxed) == minute)
            .map(|(scope, counters)| WindowCount {
                scope: scope.clone(),
                window: minute,
                requests: counters.window_requests.load(Ordering::Relaxed),
                tokens: counters.window_tokens.load(Ordering::Relaxed),
            })
            .filter(|count| count.requests > 0 || count.tokens > 0)
            .collect()
    }

    fn forget_outage_counts(&self) {
        let mut map = self.0.lock();
        for counters in map.values() {
            counters.window_requests.store(0, Ordering::Relaxed);
            counters.window_tokens.store(0, Ordering::Relaxed);
        }
        // Scopes with nothing in flight are only kept for their windows.
        map.retain(|_, counters| counters.in_flight.load(Ordering::Acquire) > 0);
    }
}

/// LiteLLM's 429: its message, its type (`None`: LiteLLM raises an HTTP exception without
/// one), `Retry-After`, and the refused limit's `x-ratelimit-*` headers.
fn refused(scopes: &[Scope<'_>], refusal: &Refusal) -> GatewayError {
    let Some(scope) = scopes.get(refusal.scope) else {
        return GatewayError::internal("rate limit refused by an unknown scope");
    };
    let (limit_type, limit, headers) = match refusal.kind {
        LimitKind::Requests => (
            "requests",
            scope.rpm,
            Some([
                "x-ratelimit-limit-requests",
                "x-ratelimit-remaining-requests",
                "x-ratelimit-reset-requests",
            ]),
        ),
        LimitKind::Tokens => (
            "tokens",
            scope.tpm,
            Some(["x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"]),
        ),
        LimitKind::Parallel => ("max_parallel_requests", scope.parallel, None),
    };
    let limit = limit.unwrap_or(0);
    let resets_at = chrono::Utc::now() + chrono::Duration::from_std(refusal.reset).unwrap_or_default();
    let mut error = GatewayError::new(
        ErrorKind::RateLimited,
        format!(
            "Rate limit exceeded for {}: {}. Limit type: {limit_type}. Current limit: {limit}, Remaining: {}. Limit resets at: {}",
            scope.kind,
            scope.value,
            limit.saturating_sub(refusal.used),
            resets_at.format("%Y-%m-%d %H:%M:%S UTC"),
        ),
    )
    .with_type("None")
    .with_param("None");
    match headers {
        Some([limit_name, remaining_name, reset_name]) => {
            // Whole seconds, rounded up, so a client that waits is in the next window.
            error.retry_after =
                Some(Duration::from_secs(refusal.reset.as_secs() + 1).min(Duration::from_secs(60)));
            error = error
                .with_header(limit_name, limit.to_string())
                .with_header(remaining_name, "0")
                .with_header(reset_name, reset_text(refusal.reset));
        }
        // A slot frees when some request of the scope ends; there is no window to wait for.
        None => error.retry_after = Some(Duration::from_secs(1)),
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(
        kind: &'static str,
        rpm: Option<u64>,
        tpm: Option<u64>,
        parallel: Option<u64>,
    ) -> Scope<'static> {
        Scope { kind, value: Cow::Borrowed("x"), rpm, tpm, parallel }
    }

    #[test]
    fn local_counts_are_all_or_nothing_and_slots_come_back() {
        let local = Local::default();
        let scopes = [scope("api_key", Some(2), None, Some(1)), scope("team", Some(1), None, None)];
        let first = local.acquire(&scopes).unwrap();
        let refusal = local.acquire(&scopes).unwrap_err();
        assert_eq!((refusal.scope, refusal.kind), (0, LimitKind::Parallel));
        drop(first);
        let refusal = local.acquire(&scopes).unwrap_err();
        assert_eq!((refusal.scope, refusal.kind, refusal.used), (1, LimitKind::Requests, 1));
        // The team refused the last one, so the key's window still has room for one.
        let key_only = local.acquire(&scopes[..1]).unwrap();
        let mut headers = HeaderMap::new();
        key_only.add_headers(&mut headers);
        assert_eq!(headers["x-ratelimit-limit-requests"], "2");
        assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
        assert!(headers["x-ratelimit-reset-requests"].to_str().unwrap().ends_with('s'));
        assert!(headers.get("x-ratelimit-limit-tokens").is_none());
    }

    #[test]
    fn tokens_refuse_once_the_window_reaches_the_limit_and_outage_counts_are_reported() {
        let local = Arc::new(Local::default());
        let scopes = [scope("user", None, Some(10), None)];
        local.acquire(&scopes).unwrap();
        local.add_tokens(&scopes, 10);
        let refusal = local.acquire(&scopes).unwrap_err();
        assert_eq!((refusal.kind, refusal.used), (LimitKind::Tokens, 10));
        let error = refused(&scopes, &refusal);
        assert_eq!(error.status(), 429);
        assert!(error.message.starts_with("Rate limit exceeded for user: x. Limit type: tokens. Current limit: 10, Remaining: 0. Limit resets at: "), "{}", error.message);
        let headers = error.headers.as_deref().unwrap();
        assert!(headers.contains(&("x-ratelimit-remaining-tokens", "0".to_owned())));
        assert!(
            error
                .retry_after
                .is_some_and(|after| after >= Duration::from_secs(1) && after <= Duration::from_secs(60))
        );

        let outage = OutageCounts(Arc::clone(&local));
        let counts = outage.outage_counts();
        assert_eq!(counts.len(), 1);
        assert_eq!((counts[0].scope.as_str(), counts[0].tokens), ("user:x", 10));
        outage.forget_outage_counts();
        assert!(outage.outage_counts().is_empty());
        assert!(local.acquire(&scopes).is_ok(), "forgotten counts no longer refuse");
    }

    #[test]
    fn resets_read_like_openai_headers() {
        assert_eq!(reset_text(Duration::from_millis(250)), "250ms");
        assert_eq!(reset_text(Duration::from_millis(16_200)), "17s");
        assert_eq!(reset_text(Duration::from_secs(60)), "60s");
    }
}
