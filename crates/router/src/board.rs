//! What the router learns about each deployment while it runs: cooldowns and failure counts,
//! the current minute's requests and tokens, requests in flight and recent latencies.
//!
//! One [`HealthBoard`] serves every worker of a process. Each deployment's state is its own
//! [`DeploymentStats`], found once when a router is built; after that the pick path reads and
//! counts with atomics only. A lock is taken only to count a failure (per deployment).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tollgate_domain::pricing::Usage;
use tollgate_domain::routing::{FailureClass, RouterSettings};

/// Failures, requests and tokens are counted per deployment within windows of this length.
pub(crate) const MINUTE: Duration = Duration::from_secs(60);
/// [`MINUTE`] in the tenths of a second that windows and samples are stamped with.
const MINUTE_TENTHS: u32 = 600;
/// The latency a timed-out attempt counts as (LiteLLM's penalty).
const TIMEOUT_PENALTY_SECS: f64 = 1000.0;

/// Cooldowns, failure counts, usage and latencies of every deployment, shared by all
/// workers of a process.
#[derive(Debug)]
pub struct HealthBoard {
    /// Where the board's clock starts; every stamp is a distance from it.
    epoch: Instant,
    /// Each deployment's state by id; locked only while a router is being built.
    deployments: Mutex<HashMap<String, Arc<DeploymentStats>>>,
}

impl Default for HealthBoard {
    fn default() -> Self {
        Self { epoch: Instant::now(), deployments: Mutex::new(HashMap::new()) }
    }
}

impl HealthBoard {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The state of deployment `id`, created on first request with room for
    /// `latency_samples` recent latencies.
    pub(crate) fn stats(&self, id: &str, latency_samples: usize) -> Arc<DeploymentStats> {
        let mut deployments = self.deployments.lock().unwrap_or_else(PoisonError::into_inner);
        let stats = deployments
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(DeploymentStats::new(id, self.epoch, latency_samples)));
        Arc::clone(stats)
    }
}

/// One deployment's state.
pub(crate) struct DeploymentStats {
    id: String,
    epoch: Instant,
    /// When the current cooldown ends, in milliseconds from the epoch (in the past: none).
    cooldown_until: AtomicU64,
    failures: Mutex<Failures>,
    /// Requests in the current minute (`rpm`).
    pub(crate) requests: Window,
    /// Tokens in the current minute (`tpm`, usage-based routing).
    pub(crate) tokens: Window,
    /// Attempts under way (least-busy routing).
    in_flight: AtomicU64,
    /// Recent whole-call latencies, in seconds per completion token when the usage was
    /// known (latency-based routing).
    latency: Samples,
    /// Recent times to the first token of streams, in seconds.
    ttft: Samples,
}

impl std::fmt::Debug for DeploymentStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeploymentStats")
            .field("id", &self.id)
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// Failures within the current minute, per [`FailureClass`] (the last slot: no class).
#[derive(Debug, Default)]
struct Failures {
    window_start: Option<Instant>,
    counts: [u32; FailureClass::ALL.len() + 1],
}

impl DeploymentStats {
    fn new(id: &str, epoch: Instant, latency_samples: usize) -> Self {
        Self {
            id: id.to_owned(),
            epoch,
            cooldown_until: AtomicU64::new(0),
            failures: Mutex::new(Failures::default()),
            requests: Window::default(),
            tokens: Window::default(),
            in_flight: AtomicU64::new(0),
            latency: Samples::new(latency_samples),
            ttft: Samples::new(latency_samples),
        }
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// `at` in tenths of a second from the epoch: the stamp of windows and samples.
    pub(crate) fn tenths(&self, at: Instant) -> u32 {
        u32::try_from(self.millis(at) / 100).unwrap_or(u32::MAX)
    }

    /// The moment `tenths` stands for.
    pub(crate) fn instant(&self, tenths: u32) -> Instant {
        self.epoch + Duration::from_millis(u64::from(tenths) * 100)
    }

    /// When the deployment's cooldown ends, if it is cooling at `now`.
    pub(crate) fn cooling_until(&self, now: Instant) -> Option<Instant> {
        let until = self.cooldown_until.load(Ordering::Relaxed);
        (until > self.millis(now)).then(|| self.epoch + Duration::from_millis(until))
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The average recent latency to rank this deployment by for a request (time to first
    /// token for a stream, when streams were measured); `None` before any was measured.
    pub(crate) fn latency(&self, stream: bool, now: Instant, ttl: Duration) -> Option<f64> {
        let (now, ttl) = (self.tenths(now), u32::try_from(ttl.as_millis() / 100).unwrap_or(u32::MAX));
        let ttft = if stream { self.ttft.average(now, ttl) } else { None };
        ttft.or_else(|| self.latency.average(now, ttl))
    }

    fn record_latency(&self, seconds: f64, now: Instant) {
        self.latency.record(seconds, self.tenths(now));
    }

    /// An attempt that timed out counts as a very slow one (its first token too, for a
    /// stream), so that latency-based routing moves away from a deployment that stopped
    /// answering.
    pub(crate) fn record_timeout(&self, stream: bool, now: Instant) {
        self.latency.record(TIMEOUT_PENALTY_SECS, self.tenths(now));
        if stream {
            self.ttft.record(TIMEOUT_PENALTY_SECS, self.tenths(now));
        }
    }

    /// Counts a failure of `class`; cools the deployment down for `cooldown_time` (or the
    /// upstream's longer `retry_after`) when it is `immediate` or one failure too many.
    /// `allowed_fails_policy` sets the allowance of a class it names (and takes away the
    /// immediate cooldown of 401 and 429 for it); other failures share `allowed_fails`.
    pub(crate) fn record_failure(
        &self,
        class: Option<FailureClass>,
        immediate: bool,
        retry_after: Option<Duration>,
        settings: &RouterSettings,
        may_cool: bool,
    ) {
        let now = Instant::now();
        let policy = &settings.allowed_fails_policy;
        let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
        if failures.window_start.is_none_or(|start| now.duration_since(start) >= MINUTE) {
            *failures = Failures { window_start: Some(now), ..Failures::default() };
        }
        let slot = class.map_or(FailureClass::ALL.len(), FailureClass::index);
        failures.counts[slot] += 1;
        let allowance = class.and_then(|class| policy.get(class));
        let too_many = match allowance {
            Some(allowed) => failures.counts[slot] > allowed,
            None => {
                let shared: u32 = FailureClass::ALL
                    .iter()
                    .filter(|class| policy.get(**class).is_none())
                    .map(|class| failures.counts[class.index()])
                    .sum::<u32>()
                    + failures.counts[FailureClass::ALL.len()];
                shared > settings.allowed_fails
            }
        };
        let immediate = immediate && allowance.is_none();
        if may_cool && (immediate || too_many) {
            let cooldown =
                retry_after.map_or(settings.cooldown_time, |after| after.max(settings.cooldown_time));
            self.cooldown_until.store(self.millis(now + cooldown), Ordering::Relaxed);
            *failures = Failures::default();
            tracing::warn!(deployment = %self.id, cooldown_secs = cooldown.as_secs_f64(), "deployment cooling down");
        }
    }
}

/// A count within fixed one-minute windows, each starting with the first count after the
/// previous one ended: the window's start (tenths of a second from the epoch) and its count
/// packed into one word, so that checking and counting is one compare-and-swap.
#[derive(Debug, Default)]
pub(crate) struct Window(AtomicU64);

impl Window {
    fn unpack(word: u64, now: u32) -> (u32, u32) {
        let (start, count) = ((word >> 32) as u32, word as u32);
        if word == 0 || now.wrapping_sub(start) >= MINUTE_TENTHS { (now, 0) } else { (start, count) }
    }

    fn pack(start: u32, count: u32) -> u64 {
        (u64::from(start) << 32) | u64::from(count)
    }

    /// The count of the window under way at `now` (0 when none is).
    pub(crate) fn current(&self, now: u32) -> u64 {
        u64::from(Self::unpack(self.0.load(Ordering::Relaxed), now).1)
    }

    /// When the window under way at `now` ends.
    pub(crate) fn end(&self, now: u32) -> u32 {
        Self::unpack(self.0.load(Ordering::Relaxed), now).0.saturating_add(MINUTE_TENTHS)
    }

    /// Counts `n` if the window's count stays within `limit`; else says when it ends.
    pub(crate) fn take(&self, n: u64, limit: u64, now: u32) -> Result<(), u32> {
        let mut word = self.0.load(Ordering::Relaxed);
        loop {
            let (start, count) = Self::unpack(word, now);
            if u64::from(count) + n > limit {
                return Err(start.saturating_add(MINUTE_TENTHS));
            }
            let next = Self::pack(start, count.saturating_add(u32::try_from(n).unwrap_or(u32::MAX)));
            match self.0.compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => word = actual,
            }
        }
    }

    /// Counts `n` whatever the limit (tokens are known only once spent).
    pub(crate) fn add(&self, n: u64, now: u32) {
        let _ = self.take(n, u64::MAX, now);
    }
}

/// The last few measurements of something, each stamped with when it was taken, in a ring
/// that writers fill without a lock: a slot packs the stamp (tenths of a second from the
/// epoch, plus one so that 0 is an empty slot) and the value as an `f32`.
struct Samples {
    next: AtomicUsize,
    slots: Box<[AtomicU64]>,
}

impl Samples {
    fn new(len: usize) -> Self {
        Self { next: AtomicUsize::new(0), slots: (0..len.max(1)).map(|_| AtomicU64::new(0)).collect() }
    }

    fn record(&self, value: f64, now: u32) {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let stamp = u64::from(now.saturating_add(1)) << 32;
        self.slots[slot].store(stamp | u64::from((value as f32).to_bits()), Ordering::Relaxed);
    }

    /// The mean of the samples at most `ttl` old.
    fn average(&self, now: u32, ttl: u32) -> Option<f64> {
        let (mut sum, mut count) = (0.0, 0u32);
        for slot in &*self.slots {
            let word = slot.load(Ordering::Relaxed);
            let stamp = (word >> 32) as u32;
            if stamp == 0 || now.saturating_sub(stamp - 1) > ttl {
                continue;
            }
            sum += f64::from(f32::from_bits(word as u32));
            count += 1;
        }
        (count > 0).then(|| sum / f64::from(count))
    }
}

/// One routed call's link back to the router: tells it, when the call is over, what the
/// call used and how long it took. Dropping it unfinished only ends the call's time in flight.
///
/// A ticket tracks only what the routing strategy and the deployment's limits need; under
/// `simple-shuffle` with no `tpm` limit it tracks nothing and costs nothing.
#[derive(Debug, Default)]
pub struct Ticket {
    tracked: Option<Tracked>,
}

#[derive(Debug)]
struct Tracked {
    stats: Arc<DeploymentStats>,
    in_flight: bool,
    latency: bool,
    tokens: bool,
    stream: bool,
    started: Instant,
    /// When the upstream's answer (a whole body, or a stream's head) arrived.
    answered: Option<Instant>,
    first_token: Option<Instant>,
}

/// What a ticket keeps track of.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Tracking {
    pub(crate) in_flight: bool,
    pub(crate) latency: bool,
    pub(crate) tokens: bool,
}

impl Ticket {
    pub(crate) fn start(stats: &Arc<DeploymentStats>, tracking: Tracking, stream: bool) -> Self {
        if !(tracking.in_flight || tracking.latency || tracking.tokens) {
            return Self::default();
        }
        if tracking.in_flight {
            stats.in_flight.fetch_add(1, Ordering::Relaxed);
        }
        Self {
            tracked: Some(Tracked {
                stats: Arc::clone(stats),
                in_flight: tracking.in_flight,
                latency: tracking.latency,
                tokens: tracking.tokens,
                stream,
                started: Instant::now(),
                answered: None,
                first_token: None,
            }),
        }
    }

    /// Whether the router wants to hear about this call at all.
    pub fn is_tracked(&self) -> bool {
        self.tracked.is_some()
    }

    /// Whether the call's usage matters to the router (its tokens count against a `tpm`
    /// limit or usage-based routing, or its latency is measured per token).
    pub fn wants_usage(&self) -> bool {
        self.tracked.as_ref().is_some_and(|t| t.tokens || t.latency)
    }

    pub(crate) fn answered(&mut self) {
        if let Some(tracked) = &mut self.tracked {
            tracked.answered = Some(Instant::now());
        }
    }

    /// Marks the first token of a stream (the first event that reached the client).
    pub fn first_token(&mut self) {
        if let Some(tracked) = &mut self.tracked {
            tracked.first_token.get_or_insert_with(Instant::now);
        }
    }

    /// Ends the call: its tokens count for the current minute, and its latency (per
    /// completion token when `usage` says how many) joins the deployment's samples.
    pub fn finish(mut self, usage: Option<&Usage>) {
        let Some(tracked) = self.tracked.take() else { return };
        let stats = &tracked.stats;
        let now = Instant::now();
        if tracked.tokens
            && let Some(usage) = usage
        {
            stats.tokens.add(usage.total_tokens(), stats.tenths(now));
        }
        if tracked.latency {
            let completion = usage.map(|u| u.completion_tokens).filter(|n| *n > 0);
            let per_token = |elapsed: Duration| {
                completion.map_or(elapsed.as_secs_f64(), |n| elapsed.as_secs_f64() / n as f64)
            };
            if tracked.stream {
                let first = tracked.first_token.or(tracked.answered).unwrap_or(now);
                stats.ttft.record(first.duration_since(tracked.started).as_secs_f64(), stats.tenths(now));
                stats.record_latency(per_token(now.duration_since(tracked.started)), now);
            } else {
                let answered = tracked.answered.unwrap_or(now);
                stats.record_latency(per_token(answered.duration_since(tracked.started)), now);
            }
        }
        if tracked.in_flight {
            stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(tracked) = self.tracked.take()
            && tracked.in_flight
        {
            tracked.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_counts_within_its_limit_and_restarts_after_a_minute() {
        let window = Window::default();
        assert_eq!(window.take(2, 3, 10), Ok(()));
        assert_eq!(window.take(2, 3, 20), Err(610), "the window began at the first count");
        assert_eq!(window.take(1, 3, 20), Ok(()));
        assert_eq!(window.current(609), 3);
        assert_eq!(window.current(610), 0, "a minute later it is over");
        window.add(5, 700);
        assert_eq!((window.current(700), window.end(700)), (5, 1300));
    }

    #[test]
    fn samples_average_the_recent_ones_and_forget_the_old() {
        let samples = Samples::new(3);
        assert_eq!(samples.average(0, 100), None);
        samples.record(1.0, 0);
        samples.record(3.0, 50);
        assert_eq!(samples.average(60, 100), Some(2.0));
        assert_eq!(samples.average(120, 100), Some(3.0), "the first is older than the ttl");
        for value in [5.0, 5.0, 5.0] {
            samples.record(value, 130);
        }
        assert_eq!(samples.average(130, 100), Some(5.0), "only the last three are kept");
    }

    #[tokio::test(start_paused = true)]
    async fn a_ticket_counts_in_flight_until_it_ends_either_way() {
        let board = HealthBoard::new();
        let stats = board.stats("a", 10);
        let tracking = Tracking { in_flight: true, latency: false, tokens: true };
        let first = Ticket::start(&stats, tracking, false);
        let second = Ticket::start(&stats, tracking, false);
        assert_eq!(stats.in_flight(), 2);
        drop(first);
        let usage = Usage { prompt_tokens: 7, completion_tokens: 3, ..Usage::default() };
        second.finish(Some(&usage));
        assert_eq!(stats.in_flight(), 0);
        assert_eq!(stats.tokens.current(stats.tenths(Instant::now())), 10);
        assert!(Arc::ptr_eq(&stats, &board.stats("a", 10)), "one state per deployment");
        assert!(!Ticket::start(&stats, Tracking::default(), false).is_tracked());
    }

    #[tokio::test(start_paused = true)]
    async fn latency_is_per_completion_token_and_streams_keep_their_first_token() {
        let stats = HealthBoard::new().stats("a", 10);
        let tracking = Tracking { latency: true, ..Tracking::default() };
        let mut call = Ticket::start(&stats, tracking, false);
        tokio::time::advance(Duration::from_secs(2)).await;
        call.answered();
        let usage = Usage { prompt_tokens: 1, completion_tokens: 4, ..Usage::default() };
        call.finish(Some(&usage));
        let ttl = Duration::from_secs(60);
        assert_eq!(stats.latency(false, Instant::now(), ttl), Some(0.5));

        let mut stream = Ticket::start(&stats, tracking, true);
        tokio::time::advance(Duration::from_millis(300)).await;
        stream.first_token();
        tokio::time::advance(Duration::from_secs(5)).await;
        stream.finish(None);
        let ttft = stats.latency(true, Instant::now(), ttl).unwrap();
        assert!((ttft - 0.3).abs() < 1e-6, "{ttft}");
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(stats.latency(true, Instant::now(), ttl), None, "older than the ttl");
    }
}
