//! What the router learns about each deployment while it runs: cooldowns and failure counts,
//! the current minute's requests and tokens, requests in flight and recent latencies.
//!
//! One [`HealthBoard`] serves every worker of a process. Each deployment's state is its own
//! [`DeploymentStats`], found once when a router is built; after that the pick path reads and
//! counts with atomics only. A lock is taken only to count a failure (per deployment).
//!
//! Replicas can share the board through whoever carries [`SyncRound`]s (see `sync.rs`): then
//! each per-minute count also holds what the other replicas counted in the same minute (as of
//! the last round), windows are the minutes of the shared clock, recent latencies are every
//! replica's, and cooldowns that start here are announced at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tollgate_domain::board_sync::Cooldown;
use tollgate_domain::pricing::Usage;
use tollgate_domain::routing::{FailureClass, RouterSettings};

/// Failures, requests and tokens are counted per deployment within windows of this length.
pub(crate) const MINUTE: Duration = Duration::from_secs(60);
/// [`MINUTE`] in the tenths of a second that windows and samples are stamped with.
pub(crate) const MINUTE_TENTHS: u32 = 600;
/// The latency a timed-out attempt counts as (LiteLLM's penalty).
const TIMEOUT_PENALTY_SECS: f64 = 1000.0;

/// Cooldowns, failure counts, usage and latencies of every deployment, shared by all
/// workers of a process.
#[derive(Debug)]
pub struct HealthBoard {
    /// Where the board's clock starts; every stamp is a distance from it.
    epoch: Instant,
    /// Each deployment's state by id; locked only while a router is being built (and once
    /// per sync round).
    deployments: Mutex<HashMap<String, Arc<DeploymentStats>>>,
    /// What every deployment's state reads from the board.
    common: Arc<Common>,
}

/// The board's part of every deployment's state.
#[derive(Debug, Default)]
pub(crate) struct Common {
    /// The shared clock's minutes on the board's clock ([`Grid`], packed); 0 until a sync round
    /// has told the time: windows then start with their first count.
    grid: AtomicU64,
    /// Where cooldowns that start here are announced, once the board is shared.
    announce: OnceLock<mpsc::UnboundedSender<Cooldown>>,
}

impl Default for HealthBoard {
    fn default() -> Self {
        Self { epoch: Instant::now(), deployments: Mutex::new(HashMap::new()), common: Arc::default() }
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
        let stats = deployments.entry(id.to_owned()).or_insert_with(|| {
            Arc::new(DeploymentStats::new(id, self.epoch, Arc::clone(&self.common), latency_samples))
        });
        Arc::clone(stats)
    }

    /// Every deployment's state, in no particular order.
    pub(crate) fn all(&self) -> Vec<Arc<DeploymentStats>> {
        self.deployments.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    pub(crate) fn find(&self, id: &str) -> Option<Arc<DeploymentStats>> {
        self.deployments.lock().unwrap_or_else(PoisonError::into_inner).get(id).cloned()
    }

    pub(crate) fn epoch(&self) -> Instant {
        self.epoch
    }

    pub(crate) fn common(&self) -> &Common {
        &self.common
    }
}

impl Common {
    pub(crate) fn grid(&self) -> Grid {
        Grid(self.grid.load(Ordering::Relaxed))
    }

    pub(crate) fn set_grid(&self, grid: Grid) {
        self.grid.store(grid.0, Ordering::Relaxed);
    }

    /// Hands cooldowns that start from now on to `sender`; false if another already takes them.
    pub(crate) fn announce_to(&self, sender: mpsc::UnboundedSender<Cooldown>) -> bool {
        self.announce.set(sender).is_ok()
    }
}

/// The minutes of the shared clock laid over the board's tenths of a second: one tenth at
/// which a minute began, and that minute's number (minutes since the Unix epoch). Packed in a
/// word: the tenth plus one (0: no grid) above, the minute below.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Grid(u64);

impl Grid {
    pub(crate) fn new(anchor: u32, minute: u64) -> Self {
        Grid((u64::from(anchor.saturating_add(1)) << 32) | (minute & 0xffff_ffff))
    }

    fn anchor(self) -> Option<(u32, u64)> {
        let high = (self.0 >> 32) as u32;
        (high != 0).then(|| (high - 1, self.0 & 0xffff_ffff))
    }

    pub(crate) fn is_set(self) -> bool {
        self.anchor().is_some()
    }

    /// Where the minute holding `now` began (without a grid: `now`, so that a window begins
    /// with its first count).
    pub(crate) fn align(self, now: u32) -> u32 {
        match self.anchor() {
            None => now,
            Some((anchor, _)) => {
                let into = (i64::from(now) - i64::from(anchor)).rem_euclid(i64::from(MINUTE_TENTHS));
                now.saturating_sub(into as u32)
            }
        }
    }

    /// The minute that begins at `start` (a minute's start on this grid).
    pub(crate) fn minute_of(self, start: u32) -> Option<u64> {
        let (anchor, minute) = self.anchor()?;
        let minutes = (i64::from(start) - i64::from(anchor) + i64::from(MINUTE_TENTHS) / 2)
            .div_euclid(i64::from(MINUTE_TENTHS));
        u64::try_from(minute as i64 + minutes).ok()
    }

    /// Whether `other` lays the minutes within half a second of where this grid does (a new
    /// reading of the same clock, give or take a round trip).
    pub(crate) fn agrees(self, other: Grid) -> bool {
        // A grid is the line minute = m + (t - a) / 600; two agree when the lines nearly meet.
        let offset =
            |grid: Grid| grid.anchor().map(|(a, m)| m as i64 * i64::from(MINUTE_TENTHS) - i64::from(a));
        match (offset(self), offset(other)) {
            (Some(mine), Some(theirs)) => (mine - theirs).abs() <= 5,
            _ => false,
        }
    }
}

/// What a deployment's state is wanted for, so that a sync round carries only that.
pub(crate) mod wants {
    pub(crate) const REQUESTS: u8 = 1;
    pub(crate) const TOKENS: u8 = 2;
    pub(crate) const LATENCY: u8 = 4;
}

/// One deployment's state.
pub(crate) struct DeploymentStats {
    id: String,
    epoch: Instant,
    common: Arc<Common>,
    /// When the current cooldown ends, in milliseconds from the epoch (in the past: none).
    cooldown_until: AtomicU64,
    /// Until when the last background health check keeps it out (ms from the epoch).
    unhealthy_until: AtomicU64,
    failures: Mutex<Failures>,
    /// Requests in the current minute (`rpm`).
    pub(crate) requests: Window,
    /// Tokens in the current minute (`tpm`, usage-based routing).
    pub(crate) tokens: Window,
    /// Attempts under way (least-busy routing).
    in_flight: AtomicU64,
    /// Recent whole-call latencies, in seconds per completion token when the usage was
    /// known (latency-based routing), measured here.
    pub(crate) latency: Samples,
    /// Recent times to the first token of streams, in seconds, measured here.
    pub(crate) ttft: Samples,
    /// The other replicas' recent latencies (and this one's, once handed over).
    pub(crate) shared_latency: Samples,
    pub(crate) shared_ttft: Samples,
    /// What routers read of this state ([`wants`]), so a sync round carries only that.
    wanted: AtomicU8,
    /// How long latency-based routing keeps a measurement, in seconds.
    latency_ttl: AtomicU64,
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
    fn new(id: &str, epoch: Instant, common: Arc<Common>, latency_samples: usize) -> Self {
        Self {
            id: id.to_owned(),
            epoch,
            common,
            cooldown_until: AtomicU64::new(0),
            unhealthy_until: AtomicU64::new(0),
            failures: Mutex::new(Failures::default()),
            requests: Window::default(),
            tokens: Window::default(),
            in_flight: AtomicU64::new(0),
            latency: Samples::new(latency_samples),
            ttft: Samples::new(latency_samples),
            shared_latency: Samples::new(latency_samples),
            shared_ttft: Samples::new(latency_samples),
            wanted: AtomicU8::new(0),
            latency_ttl: AtomicU64::new(0),
        }
    }

    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    fn millis(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_millis()).unwrap_or(u64::MAX)
    }

    /// `at` in tenths of a second from a minute before the epoch (so that the minute holding
    /// the epoch begins after 0): the stamp of windows and samples.
    pub(crate) fn tenths(&self, at: Instant) -> u32 {
        u32::try_from(self.millis(at) / 100).unwrap_or(u32::MAX).saturating_add(MINUTE_TENTHS)
    }

    /// The moment `tenths` stands for.
    pub(crate) fn instant(&self, tenths: u32) -> Instant {
        self.epoch + Duration::from_millis(u64::from(tenths.saturating_sub(MINUTE_TENTHS)) * 100)
    }

    pub(crate) fn grid(&self) -> Grid {
        self.common.grid()
    }

    /// Notes what a router reads of this deployment (`latency_ttl` with [`wants::LATENCY`]).
    pub(crate) fn want(&self, what: u8, latency_ttl: Duration) {
        self.wanted.fetch_or(what, Ordering::Relaxed);
        if what & wants::LATENCY != 0 {
            self.latency_ttl.fetch_max(latency_ttl.as_secs().max(1), Ordering::Relaxed);
        }
    }

    pub(crate) fn wanted(&self) -> u8 {
        self.wanted.load(Ordering::Relaxed)
    }

    pub(crate) fn latency_ttl(&self) -> Duration {
        Duration::from_secs(self.latency_ttl.load(Ordering::Relaxed))
    }

    /// When the deployment's cooldown ends, if it is cooling at `now`.
    pub(crate) fn cooling_until(&self, now: Instant) -> Option<Instant> {
        let until = self.cooldown_until.load(Ordering::Relaxed);
        (until > self.millis(now)).then(|| self.epoch + Duration::from_millis(until))
    }

    /// Cools the deployment down until `until` unless it already cools longer; whether it
    /// was not cooling before.
    pub(crate) fn cool_until(&self, until: Instant, now: Instant) -> bool {
        let before = self.cooldown_until.fetch_max(self.millis(until), Ordering::Relaxed);
        before <= self.millis(now)
    }

    /// Whether the last background health check keeps the deployment out at `now`.
    pub(crate) fn unhealthy(&self, now: Instant) -> bool {
        self.unhealthy_until.load(Ordering::Relaxed) > self.millis(now)
    }

    /// A background health check failed (`Some`: out until then) or passed (`None`).
    pub(crate) fn set_unhealthy(&self, until: Option<Instant>) {
        self.unhealthy_until.store(until.map_or(0, |until| self.millis(until)), Ordering::Relaxed);
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The requests (every replica's, as of the last sync round) of the minute under way.
    #[cfg(test)]
    pub(crate) fn requests_used(&self, now: Instant) -> u64 {
        self.requests.used(self.tenths(now), self.grid())
    }

    /// Counts one request if the minute's requests stay within `rpm`; else says when the
    /// minute ends.
    pub(crate) fn take_request(&self, rpm: u64, now: Instant) -> Result<(), Instant> {
        self.requests.take(1, rpm, self.tenths(now), self.grid()).map_err(|end| self.instant(end))
    }

    /// The tokens (every replica's, as of the last sync round) of the minute under way, and
    /// when it ends.
    pub(crate) fn tokens_used(&self, now: Instant) -> (u64, Instant) {
        let (tenths, grid) = (self.tenths(now), self.grid());
        (self.tokens.used(tenths, grid), self.instant(self.tokens.end(tenths, grid)))
    }

    pub(crate) fn add_tokens(&self, tokens: u64, now: Instant) {
        self.tokens.add(tokens, self.tenths(now), self.grid());
    }

    /// The average recent latency to rank this deployment by for a request (time to first
    /// token for a stream, when streams were measured); `None` before any was measured.
    /// Measurements of other replicas count as this one's do.
    pub(crate) fn latency(&self, stream: bool, now: Instant, ttl: Duration) -> Option<f64> {
        let (now, ttl) = (self.tenths(now), u32::try_from(ttl.as_millis() / 100).unwrap_or(u32::MAX));
        let ttft = if stream { Samples::average(&[&self.ttft, &self.shared_ttft], now, ttl) } else { None };
        ttft.or_else(|| Samples::average(&[&self.latency, &self.shared_latency], now, ttl))
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
            self.cooldown_until.fetch_max(self.millis(now + cooldown), Ordering::Relaxed);
            *failures = Failures::default();
            drop(failures);
            tracing::warn!(deployment = %self.id, cooldown_secs = cooldown.as_secs_f64(), "deployment cooling down");
            if let Some(announce) = self.common.announce.get() {
                // The receiver is gone only when sharing stopped: nothing to tell then.
                let _ = announce.send(Cooldown { deployment: self.id.clone(), remaining: cooldown });
            }
        }
    }
}

/// A count within fixed one-minute windows: without a [`Grid`] each starts with the first
/// count after the previous one ended, with one each is a minute of the shared clock. Each
/// word packs a window's start (in tenths of a second) and a count, so that checking and
/// counting is one compare-and-swap.
#[derive(Debug, Default)]
pub(crate) struct Window {
    /// What this replica counted.
    here: AtomicU64,
    /// What the other replicas counted, as of the last sync round.
    others: AtomicU64,
    /// How much of `here` the shared total holds.
    handed: AtomicU64,
}

impl Window {
    fn unpack(word: u64, now: u32, grid: Grid) -> (u32, u32) {
        let (start, count) = ((word >> 32) as u32, word as u32);
        if word == 0 || now.wrapping_sub(start) >= MINUTE_TENTHS {
            (grid.align(now), 0)
        } else if grid.align(start) != start {
            // Begun before the grid was known (or moved): its count goes on in the minute
            // under way, which may only refuse early.
            (grid.align(now), count)
        } else {
            (start, count)
        }
    }

    fn pack(start: u32, count: u32) -> u64 {
        (u64::from(start) << 32) | u64::from(count)
    }

    /// What `word` (a start and a count) holds for the window beginning at `start`.
    fn count_for(word: u64, start: u32) -> u64 {
        if word != 0 && (word >> 32) as u32 == start { u64::from(word as u32) } else { 0 }
    }

    /// The window under way at `now` and this replica's count in it.
    pub(crate) fn here(&self, now: u32, grid: Grid) -> (u32, u64) {
        let (start, count) = Self::unpack(self.here.load(Ordering::Relaxed), now, grid);
        (start, u64::from(count))
    }

    /// Every replica's count of the window under way at `now`.
    pub(crate) fn used(&self, now: u32, grid: Grid) -> u64 {
        let (start, count) = self.here(now, grid);
        count + Self::count_for(self.others.load(Ordering::Relaxed), start)
    }

    /// When the window under way at `now` ends.
    pub(crate) fn end(&self, now: u32, grid: Grid) -> u32 {
        self.here(now, grid).0.saturating_add(MINUTE_TENTHS)
    }

    /// Counts `n` if every replica's count stays within `limit`; else says when the window ends.
    pub(crate) fn take(&self, n: u64, limit: u64, now: u32, grid: Grid) -> Result<(), u32> {
        let others = self.others.load(Ordering::Relaxed);
        let mut word = self.here.load(Ordering::Relaxed);
        loop {
            let (start, count) = Self::unpack(word, now, grid);
            if u64::from(count) + Self::count_for(others, start) + n > limit {
                return Err(start.saturating_add(MINUTE_TENTHS));
            }
            let next = Self::pack(start, count.saturating_add(u32::try_from(n).unwrap_or(u32::MAX)));
            match self.here.compare_exchange_weak(word, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return Ok(()),
                Err(actual) => word = actual,
            }
        }
    }

    /// Counts `n` whatever the limit (tokens are known only once spent).
    pub(crate) fn add(&self, n: u64, now: u32, grid: Grid) {
        let _ = self.take(n, u64::MAX, now, grid);
    }

    /// What of this replica's `count` in the window beginning at `start` the shared total
    /// does not hold yet.
    pub(crate) fn unhanded(&self, start: u32, count: u64) -> u64 {
        count.saturating_sub(Self::count_for(self.handed.load(Ordering::Relaxed), start))
    }

    /// The shared total of the window beginning at `start` is `total`, `ours` of it this
    /// replica's.
    pub(crate) fn settle(&self, start: u32, ours: u64, total: u64) {
        let clamp = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        // Others first: for a moment this replica's count may be seen twice (refusing
        // early), never not at all.
        self.others.store(Self::pack(start, clamp(total.saturating_sub(ours))), Ordering::Relaxed);
        self.handed.store(Self::pack(start, clamp(ours)), Ordering::Relaxed);
    }

    /// Forgets the other replicas' counts (the shared total is out of reach).
    pub(crate) fn forget_others(&self) {
        self.others.store(0, Ordering::Relaxed);
    }
}

/// The last few measurements of something, each stamped with when it was taken, in a ring
/// that writers fill without a lock: a slot packs the stamp (tenths of a second from the
/// epoch, plus one so that 0 is an empty slot) and the value as an `f32`.
pub(crate) struct Samples {
    next: AtomicUsize,
    slots: Box<[AtomicU64]>,
}

impl Samples {
    fn new(len: usize) -> Self {
        Self { next: AtomicUsize::new(0), slots: (0..len.max(1)).map(|_| AtomicU64::new(0)).collect() }
    }

    fn pack(value: f64, at: u32) -> u64 {
        (u64::from(at.saturating_add(1)) << 32) | u64::from((value as f32).to_bits())
    }

    fn record(&self, value: f64, now: u32) {
        let slot = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.slots[slot].store(Self::pack(value, now), Ordering::Relaxed);
    }

    pub(crate) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The mean of the samples of `rings` at most `ttl` old.
    fn average(rings: &[&Samples], now: u32, ttl: u32) -> Option<f64> {
        let (mut sum, mut count) = (0.0, 0u32);
        for slot in rings.iter().flat_map(|ring| ring.slots.iter()) {
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

    /// Every sample held, as (slot, word) to [`Samples::forget`] once handed over, with its
    /// value and age in tenths at `now`.
    pub(crate) fn held(&self, now: u32) -> Vec<((usize, u64), f64, u32)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, word)| {
                let word = word.load(Ordering::Relaxed);
                let stamp = (word >> 32) as u32;
                (stamp != 0).then(|| {
                    ((slot, word), f64::from(f32::from_bits(word as u32)), now.saturating_sub(stamp - 1))
                })
            })
            .collect()
    }

    /// Empties the slots that still hold what [`Samples::held`] saw in them.
    pub(crate) fn forget(&self, held: &[(usize, u64)]) {
        for &(slot, word) in held {
            let _ = self.slots[slot].compare_exchange(word, 0, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Holds exactly `samples` (value, stamp), newest first, as many as fit.
    pub(crate) fn replace(&self, samples: impl IntoIterator<Item = (f64, u32)>) {
        let mut samples = samples.into_iter();
        for slot in &*self.slots {
            slot.store(samples.next().map_or(0, |(value, at)| Self::pack(value, at)), Ordering::Relaxed);
        }
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
            stats.add_tokens(usage.total_tokens(), now);
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

    const LOCAL: Grid = Grid(0);

    #[test]
    fn a_window_counts_within_its_limit_and_restarts_after_a_minute() {
        let window = Window::default();
        assert_eq!(window.take(2, 3, 10, LOCAL), Ok(()));
        assert_eq!(window.take(2, 3, 20, LOCAL), Err(610), "the window began at the first count");
        assert_eq!(window.take(1, 3, 20, LOCAL), Ok(()));
        assert_eq!(window.used(609, LOCAL), 3);
        assert_eq!(window.used(610, LOCAL), 0, "a minute later it is over");
        window.add(5, 700, LOCAL);
        assert_eq!((window.used(700, LOCAL), window.end(700, LOCAL)), (5, 1300));
    }

    #[test]
    fn on_a_grid_windows_are_the_shared_minutes_and_hold_the_others_counts() {
        // Minute 1000 of the shared clock began at tenth 650.
        let grid = Grid::new(650, 1000);
        assert_eq!((grid.align(700), grid.align(1249), grid.align(1250)), (650, 650, 1250));
        assert_eq!(
            (grid.minute_of(650), grid.minute_of(1250), grid.minute_of(50)),
            (Some(1000), Some(1001), Some(999))
        );
        let window = Window::default();
        assert_eq!(window.take(1, 3, 700, grid), Ok(()));
        assert_eq!(window.end(700, grid), 1250, "the window ends with the shared minute");
        // Other replicas counted 1 more in this minute: 3 in all, so one more fits.
        window.settle(650, 1, 2);
        assert_eq!(window.used(800, grid), 2);
        assert_eq!(window.take(1, 3, 800, grid), Ok(()));
        assert_eq!(window.take(1, 3, 800, grid), Err(1250));
        assert_eq!(window.unhanded(650, window.here(800, grid).1), 1, "one was handed over, one not");
        // The next minute owes nothing to the last one's others.
        assert_eq!((window.used(1250, grid), window.take(3, 3, 1250, grid)), (0, Ok(())));
        window.forget_others();
        assert_eq!(window.used(1260, grid), 3);
    }

    #[test]
    fn a_window_begun_before_the_grid_goes_on_in_the_shared_minute() {
        let window = Window::default();
        window.add(4, 100, LOCAL);
        let grid = Grid::new(650, 7);
        assert_eq!(window.here(300, grid), (50, 4), "the count stays, in the minute under way");
        assert_eq!(window.end(300, grid), 650);
        window.add(1, 300, grid);
        assert_eq!(window.here(660, grid), (650, 0));
    }

    #[test]
    fn grids_agree_within_half_a_second() {
        let grid = Grid::new(650, 1000);
        assert!(grid.agrees(Grid::new(653, 1000)));
        assert!(grid.agrees(Grid::new(1250, 1001)), "the same line, anchored a minute later");
        assert!(grid.agrees(Grid::new(1248, 1001)));
        assert!(!grid.agrees(Grid::new(660, 1000)));
        assert!(!grid.agrees(Grid::new(650, 1001)));
        assert!(!LOCAL.agrees(grid));
    }

    #[test]
    fn samples_average_the_recent_ones_and_forget_the_old() {
        let samples = Samples::new(3);
        assert_eq!(Samples::average(&[&samples], 0, 100), None);
        samples.record(1.0, 0);
        samples.record(3.0, 50);
        assert_eq!(Samples::average(&[&samples], 60, 100), Some(2.0));
        assert_eq!(Samples::average(&[&samples], 120, 100), Some(3.0), "the first is older than the ttl");
        for value in [5.0, 5.0, 5.0] {
            samples.record(value, 130);
        }
        assert_eq!(Samples::average(&[&samples], 130, 100), Some(5.0), "only the last three are kept");
    }

    #[test]
    fn held_samples_are_forgotten_unless_overwritten_meanwhile() {
        let (mine, shared) = (Samples::new(3), Samples::new(3));
        mine.record(1.0, 10);
        mine.record(2.0, 20);
        let held = mine.held(30);
        assert_eq!(
            held.iter().map(|(_, value, age)| (*value, *age)).collect::<Vec<_>>(),
            [(1.0, 20), (2.0, 10)]
        );
        mine.record(4.0, 25);
        mine.record(8.0, 26);
        let slots: Vec<(usize, u64)> = held.iter().map(|(slot, ..)| *slot).collect();
        mine.forget(&slots);
        shared.replace([(1.0, 10), (2.0, 20)]);
        // The first slot was written again (8.0) and stays; 2.0 was handed over; 4.0 is new.
        assert_eq!(Samples::average(&[&mine, &shared], 30, 100), Some(15.0 / 4.0));
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
        assert_eq!(stats.tokens_used(Instant::now()).0, 10);
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
