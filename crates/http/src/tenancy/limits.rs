//! Per-key, per-user and per-team rate limits inside this process: requests per minute
//! (`rpm_limit`) and tokens per minute (`tpm_limit`), each over a fixed one-minute window,
//! and requests in flight (`max_parallel_requests`). Tokens are counted when a response's
//! usage is known, so a request is refused once the window's tokens reach the limit (the
//! request that crosses it completes, as in LiteLLM). Shared across replicas they need
//! Redis (the Redis issue).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tollgate_domain::{ErrorKind, GatewayError};

use super::Principal;

#[derive(Debug, Default)]
struct Counters {
    in_flight: AtomicU32,
    /// The minute (since the process epoch) `window_requests` counts.
    window: AtomicU64,
    window_requests: AtomicU32,
    window_tokens: AtomicU64,
}

impl Counters {
    /// Moves the window to `minute`, clearing its counts, if it is a new minute.
    fn roll(&self, minute: u64) {
        if self.window.swap(minute, Ordering::AcqRel) != minute {
            self.window_requests.store(0, Ordering::Release);
            self.window_tokens.store(0, Ordering::Release);
        }
    }
}

#[derive(Debug)]
pub struct Limits {
    epoch: Instant,
    scopes: Mutex<HashMap<String, Arc<Counters>>>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { epoch: Instant::now(), scopes: Mutex::default() }
    }
}

/// Holds the in-flight slots a request took; dropping it gives them back.
#[derive(Debug, Default)]
pub struct Permit {
    held: Vec<Arc<Counters>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        for counters in &self.held {
            counters.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

struct Scope<'a> {
    kind: &'static str,
    id: Cow<'a, str>,
    rpm: Option<i64>,
    tpm: Option<i64>,
    parallel: Option<i32>,
}

/// The key's, its user's and its team's limits, and the key's limits for `model`
/// (`model_rpm_limit` / `model_tpm_limit` in its metadata, as LiteLLM keeps them).
fn scopes<'a>(principal: &'a Principal, model: &str) -> Vec<Scope<'a>> {
    let key = &principal.key;
    let per_model =
        |field: &str| key.metadata.0.get(field).and_then(|limits| limits.get(model)).and_then(|v| v.as_i64());
    let mut scopes = vec![Scope {
        kind: "api_key",
        id: Cow::Borrowed(&key.token),
        rpm: key.rpm_limit,
        tpm: key.tpm_limit,
        parallel: key.max_parallel_requests,
    }];
    if let Some(user) = &principal.user {
        scopes.push(Scope {
            kind: "user",
            id: Cow::Borrowed(&user.user_id),
            rpm: user.rpm_limit,
            tpm: user.tpm_limit,
            parallel: user.max_parallel_requests,
        });
    }
    if let Some(team) = &principal.team {
        scopes.push(Scope {
            kind: "team",
            id: Cow::Borrowed(&team.team_id),
            rpm: team.rpm_limit,
            tpm: team.tpm_limit,
            parallel: team.max_parallel_requests,
        });
    }
    let (model_rpm, model_tpm) = (per_model("model_rpm_limit"), per_model("model_tpm_limit"));
    if model_rpm.is_some() || model_tpm.is_some() {
        scopes.push(Scope {
            kind: "model_per_key",
            id: Cow::Owned(format!("{}:{model}", key.token)),
            rpm: model_rpm,
            tpm: model_tpm,
            parallel: None,
        });
    }
    scopes.retain(|scope| scope.rpm.is_some() || scope.tpm.is_some() || scope.parallel.is_some());
    scopes
}

impl Limits {
    /// Counts the request against every scope with a limit, or refuses it with a 429 that
    /// says which limit was hit. A refused request takes nothing.
    pub fn acquire(&self, principal: &Principal, model: &str) -> Result<Permit, GatewayError> {
        let scopes = scopes(principal, model);
        if scopes.is_empty() {
            return Ok(Permit::default());
        }
        let minute = self.minute();
        let counters = self.counters(&scopes);
        for (scope, counters) in scopes.iter().zip(&counters) {
            if let Some(limit) = scope.tpm {
                counters.roll(minute);
                let used = counters.window_tokens.load(Ordering::Acquire);
                if i64::try_from(used).unwrap_or(i64::MAX) >= limit {
                    return Err(refused(scope, "tokens", limit));
                }
            }
        }
        let mut permit = Permit::default();
        let mut counted: Vec<&Counters> = Vec::new();
        for (scope, counters) in scopes.iter().zip(&counters) {
            if let Some(limit) = scope.parallel {
                let limit = u32::try_from(limit).unwrap_or(0);
                if counters.in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
                    counters.in_flight.fetch_sub(1, Ordering::AcqRel);
                    undo(&counted);
                    return Err(refused(scope, "max_parallel_requests", limit.into()));
                }
                permit.held.push(Arc::clone(counters));
            }
            if let Some(limit) = scope.rpm {
                counters.roll(minute);
                let used = counters.window_requests.fetch_add(1, Ordering::AcqRel);
                if i64::from(used) >= limit {
                    counters.window_requests.fetch_sub(1, Ordering::AcqRel);
                    undo(&counted);
                    return Err(refused(scope, "requests", limit));
                }
                counted.push(counters);
            }
        }
        Ok(permit)
    }

    /// Counts a finished request's tokens against every scope with a `tpm_limit`.
    pub fn add_tokens(&self, principal: &Principal, model: &str, tokens: u64) {
        let scopes: Vec<Scope<'_>> =
            scopes(principal, model).into_iter().filter(|scope| scope.tpm.is_some()).collect();
        if scopes.is_empty() || tokens == 0 {
            return;
        }
        let minute = self.minute();
        for counters in self.counters(&scopes) {
            counters.roll(minute);
            counters.window_tokens.fetch_add(tokens, Ordering::AcqRel);
        }
    }

    fn minute(&self) -> u64 {
        self.epoch.elapsed().as_secs() / 60
    }

    fn counters(&self, scopes: &[Scope<'_>]) -> Vec<Arc<Counters>> {
        let mut map = self.scopes.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        scopes
            .iter()
            .map(|scope| Arc::clone(map.entry(format!("{}:{}", scope.kind, scope.id)).or_default()))
            .collect()
    }
}

/// Gives back the minute-window counts a refused request took in earlier scopes.
fn undo(counted: &[&Counters]) {
    for counters in counted {
        counters.window_requests.fetch_sub(1, Ordering::AcqRel);
    }
}

fn refused(scope: &Scope<'_>, limit_type: &str, limit: i64) -> GatewayError {
    let mut error = GatewayError::new(
        ErrorKind::RateLimited,
        format!(
            "Rate limit exceeded for {}: {}. Limit type: {limit_type}. Current limit: {limit}, Remaining: 0.",
            scope.kind, scope.id
        ),
    );
    if limit_type != "max_parallel_requests" {
        error.retry_after = Some(std::time::Duration::from_secs(60));
    }
    error
}
