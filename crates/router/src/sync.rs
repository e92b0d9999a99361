//! Sharing the board between replicas, without I/O: whoever carries the state (the HTTP
//! crate, through Redis) asks the board for a [`SyncRound`], sends its deltas, and gives the
//! answer back to [`HealthBoard::apply`]; cooldowns travel apart and at once
//! ([`HealthBoard::share_cooldowns`], [`HealthBoard::apply_cooldown`]).
//!
//! A round carries, per deployment, the requests and tokens this replica counted in the
//! current minute and has not handed over yet (for deployments with an `rpm` or `tpm`, or
//! under usage-based routing), and the latencies it measured since the last round (under
//! latency-based routing). The answer holds every replica's totals: the board keeps the others'
//! part beside its own count, so the pick path adds one atomic load and never waits for the
//! round. A round that fails hands nothing over: its counts go with the next one.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tollgate_domain::board_sync::{
    Cooldown, CounterDelta, DeploymentDelta, LatencyDelta, RoundAnswer, Sample,
};

use crate::board::{DeploymentStats, Grid, HealthBoard, MINUTE_TENTHS, wants};

/// What one round tells the other replicas, and what it needs to apply their answer.
#[derive(Debug)]
pub struct SyncRound {
    deltas: Vec<DeploymentDelta>,
    entries: Vec<Entry>,
}

/// What a round handed over for one deployment: each window's start and this replica's
/// count in it, and the latency samples sent (to forget once the others have them).
#[derive(Debug)]
struct Entry {
    stats: Arc<DeploymentStats>,
    requests: Option<(u32, u64)>,
    tokens: Option<(u32, u64)>,
    calls: Vec<(usize, u64)>,
    first_tokens: Vec<(usize, u64)>,
}

impl SyncRound {
    /// One delta per deployment on the board, in the order the answer must follow.
    pub fn deltas(&self) -> &[DeploymentDelta] {
        &self.deltas
    }
}

fn tenths_to_duration(tenths: u32) -> Duration {
    Duration::from_millis(u64::from(tenths) * 100)
}

fn duration_to_tenths(duration: Duration) -> u32 {
    u32::try_from(duration.as_millis() / 100).unwrap_or(u32::MAX)
}

impl HealthBoard {
    /// Cooldowns that start on this board from now on, to announce to the other replicas;
    /// `None` when something else takes them already.
    pub fn share_cooldowns(&self) -> Option<mpsc::UnboundedReceiver<Cooldown>> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.common().announce_to(sender).then_some(receiver)
    }

    /// Another replica cooled a deployment down: it cools here too, for what is left (a
    /// cooldown already running longer stays as it is).
    pub fn apply_cooldown(&self, cooldown: &Cooldown) {
        let Some(stats) = self.find(&cooldown.deployment) else { return };
        let now = Instant::now();
        if stats.cool_until(now + cooldown.remaining, now) {
            tracing::info!(
                deployment = %cooldown.deployment,
                cooldown_secs = cooldown.remaining.as_secs_f64(),
                "deployment cooling down (announced by another replica)"
            );
        }
    }

    /// The cooldowns running on this board, with what is left of each (to announce again
    /// after Redis was away).
    pub fn cooldowns(&self) -> Vec<Cooldown> {
        let now = Instant::now();
        self.all()
            .into_iter()
            .filter_map(|stats| {
                let until = stats.cooling_until(now)?;
                Some(Cooldown { deployment: stats.id().to_owned(), remaining: until - now })
            })
            .collect()
    }

    /// The shared clock read `unix_ms` at `at`: minute windows follow its minutes from now
    /// on. A reading within half a second of the last changes nothing (round trips jitter).
    pub fn set_clock(&self, at: Instant, unix_ms: u64) {
        let millis =
            u64::try_from(at.saturating_duration_since(self.epoch()).as_millis()).unwrap_or(u64::MAX);
        let tenths = u32::try_from(millis / 100).unwrap_or(u32::MAX).saturating_add(MINUTE_TENTHS);
        let into = u32::try_from((unix_ms % 60_000) / 100).unwrap_or(0);
        let grid = Grid::new(tenths.saturating_sub(into), unix_ms / 60_000);
        let old = self.common().grid();
        if !old.agrees(grid) {
            if old.is_set() {
                tracing::info!("the shared clock moved; minute windows follow it");
            }
            self.common().set_grid(grid);
        }
    }

    /// What this replica has to hand over now. Counts go only once the shared clock is known
    /// ([`HealthBoard::set_clock`]), so that every replica counts the same minutes.
    pub fn export(&self) -> SyncRound {
        let now = Instant::now();
        let grid = self.common().grid();
        let stats = self.all();
        let mut deltas = Vec::with_capacity(stats.len());
        let mut entries = Vec::with_capacity(stats.len());
        for stats in stats {
            let tenths = stats.tenths(now);
            let wanted = stats.wanted();
            let counter = |want: u8, window: &crate::board::Window| {
                if wanted & want == 0 || !grid.is_set() {
                    return None;
                }
                let (start, count) = window.here(tenths, grid);
                let minute = grid.minute_of(start)?;
                Some(((start, count), CounterDelta { minute, delta: window.unhanded(start, count) }))
            };
            let requests = counter(wants::REQUESTS, &stats.requests);
            let tokens = counter(wants::TOKENS, &stats.tokens);
            let mut entry = Entry {
                stats: Arc::clone(&stats),
                requests: requests.map(|(held, _)| held),
                tokens: tokens.map(|(held, _)| held),
                calls: Vec::new(),
                first_tokens: Vec::new(),
            };
            let latency = (wanted & wants::LATENCY != 0).then(|| {
                let samples = |ring: &crate::board::Samples, sent: &mut Vec<(usize, u64)>| {
                    ring.held(tenths)
                        .into_iter()
                        .map(|(slot, seconds, age)| {
                            sent.push(slot);
                            Sample { seconds, age: tenths_to_duration(age) }
                        })
                        .collect()
                };
                LatencyDelta {
                    keep: stats.latency.capacity(),
                    ttl: stats.latency_ttl(),
                    calls: samples(&stats.latency, &mut entry.calls),
                    first_tokens: samples(&stats.ttft, &mut entry.first_tokens),
                }
            });
            deltas.push(DeploymentDelta {
                deployment: stats.id().to_owned(),
                requests: requests.map(|(_, delta)| delta),
                tokens: tokens.map(|(_, delta)| delta),
                latency,
            });
            entries.push(entry);
        }
        SyncRound { deltas, entries }
    }

    /// Applies every replica's figures, the answer to `round`: cooldowns announced while
    /// this replica was not listening, the other replicas' counts of the minute, and the
    /// shared latencies (which now hold what this replica measured, so its own copy goes).
    pub fn apply(&self, round: SyncRound, answer: &RoundAnswer) {
        let now = Instant::now();
        for (entry, totals) in round.entries.iter().zip(&answer.totals) {
            let stats = &entry.stats;
            if let Some(remaining) = totals.cooldown {
                self.apply_cooldown(&Cooldown { deployment: stats.id().to_owned(), remaining });
            }
            if let (Some((start, ours)), Some(total)) = (entry.requests, totals.requests) {
                stats.requests.settle(start, ours, total);
            }
            if let (Some((start, ours)), Some(total)) = (entry.tokens, totals.tokens) {
                stats.tokens.settle(start, ours, total);
            }
            if let Some((calls, first_tokens)) = &totals.latency {
                let (tenths, ttl) = (stats.tenths(now), stats.latency_ttl());
                // Older than the ttl: worth nothing, and older than this board can stamp.
                let stamped = |samples: &[Sample]| -> Vec<(f64, u32)> {
                    samples
                        .iter()
                        .filter(|sample| sample.age <= ttl)
                        .map(|sample| (sample.seconds, tenths.saturating_sub(duration_to_tenths(sample.age))))
                        .collect()
                };
                stats.shared_latency.replace(stamped(calls));
                stats.shared_ttft.replace(stamped(first_tokens));
                stats.latency.forget(&entry.calls);
                stats.ttft.forget(&entry.first_tokens);
            }
        }
    }

    /// The other replicas are out of reach: decide on this replica's own counts and
    /// measurements until a round succeeds again.
    pub fn forget_shared(&self) {
        for stats in self.all() {
            stats.requests.forget_others();
            stats.tokens.forget_others();
            stats.shared_latency.replace([]);
            stats.shared_ttft.replace([]);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tollgate_domain::board_sync::DeploymentTotals;
    use tollgate_domain::pricing::Usage;

    use super::*;
    use crate::tests::{router, upstream};
    use crate::{RequestOptions, Router, RouterError};

    /// What Redis does with rounds, in a map: counts summed per deployment and minute,
    /// latencies kept newest first, cooldowns until a time. The clock starts at 12:00:30.
    struct Shared {
        started: Instant,
        counts: HashMap<(String, u64, bool), u64>,
        latencies: HashMap<(String, bool), Vec<(f64, u64)>>,
        cooldowns: HashMap<String, u64>,
    }

    impl Shared {
        fn new() -> Self {
            Self {
                started: Instant::now(),
                counts: HashMap::new(),
                latencies: HashMap::new(),
                cooldowns: HashMap::new(),
            }
        }

        fn unix_ms(&self) -> u64 {
            1_800_000_030_000 - 1_800_000_030_000 % 60_000
                + 30_000
                + u64::try_from(Instant::now().duration_since(self.started).as_millis()).unwrap()
        }

        fn answer(&mut self, deltas: &[DeploymentDelta]) -> RoundAnswer {
            let now = self.unix_ms();
            let totals = deltas
                .iter()
                .map(|delta| {
                    let id = &delta.deployment;
                    let mut count = |counter: Option<CounterDelta>, tokens: bool| {
                        counter.map(|c| {
                            let total = self.counts.entry((id.clone(), c.minute, tokens)).or_default();
                            *total += c.delta;
                            *total
                        })
                    };
                    let requests = count(delta.requests, false);
                    let tokens = count(delta.tokens, true);
                    let latency = delta.latency.as_ref().map(|latency| {
                        let mut list = |samples: &[Sample], first: bool| {
                            let kept = self.latencies.entry((id.clone(), first)).or_default();
                            for sample in samples {
                                kept.insert(0, (sample.seconds, now - sample.age.as_millis() as u64));
                            }
                            kept.truncate(latency.keep);
                            kept.iter()
                                .map(|(seconds, at)| Sample {
                                    seconds: *seconds,
                                    age: Duration::from_millis(now - at),
                                })
                                .collect::<Vec<_>>()
                        };
                        (list(&latency.calls, false), list(&latency.first_tokens, true))
                    });
                    let cooldown = self
                        .cooldowns
                        .get(id)
                        .filter(|until| **until > now)
                        .map(|until| Duration::from_millis(until - now));
                    DeploymentTotals { cooldown, requests, tokens, latency }
                })
                .collect();
            RoundAnswer { unix_ms: now, totals }
        }

        /// One round of `board` against this store.
        fn round(&mut self, board: &HealthBoard) {
            let round = board.export();
            let answer = self.answer(round.deltas());
            board.set_clock(Instant::now(), answer.unix_ms);
            board.apply(round, &answer);
        }
    }

    const ONE_RPM3: &str = "model_list:
  - {model_name: gp, litellm_params: {model: fake/a, rpm: 3}, model_info: {id: a}}
";

    fn select(router: &Router) -> Result<String, RouterError> {
        router.select("gp", &RequestOptions::default()).map(|s| s.deployment.id.clone())
    }

    #[tokio::test(start_paused = true)]
    async fn an_rpm_limit_holds_across_replicas_as_of_the_last_round() {
        let mut shared = Shared::new();
        let (one, two) = (router(ONE_RPM3), router(ONE_RPM3));
        for replica in [&one, &two] {
            shared.round(replica.health());
        }
        assert_eq!(select(&one).as_deref(), Ok("a"));
        assert_eq!(select(&one).as_deref(), Ok("a"));
        shared.round(one.health());
        shared.round(two.health());
        assert_eq!(select(&two).as_deref(), Ok("a"), "the third of the minute");
        assert!(matches!(select(&two), Err(RouterError::NoDeployments { .. })), "the limit is global");
        shared.round(two.health());
        shared.round(one.health());
        let Err(RouterError::NoDeployments { retry_in, .. }) = select(&one) else { panic!("one sees two's") };
        assert_eq!(retry_in, Duration::from_secs(30), "the shared minute ends in 30 s");
        assert_eq!(shared.counts[&("a".to_owned(), 30_000_000, false)], 3, "each request counted once");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(select(&one).as_deref(), Ok("a"), "a new minute");
        shared.round(one.health());
        assert_eq!(shared.counts[&("a".to_owned(), 30_000_001, false)], 1);
    }

    #[tokio::test(start_paused = true)]
    async fn counts_of_a_round_that_failed_go_with_the_next() {
        let mut shared = Shared::new();
        let one = router(ONE_RPM3);
        shared.round(one.health());
        select(&one).unwrap();
        let lost = one.health().export();
        assert_eq!(lost.deltas()[0].requests.map(|c| c.delta), Some(1));
        drop(lost);
        select(&one).unwrap();
        shared.round(one.health());
        shared.round(one.health());
        assert_eq!(shared.counts[&("a".to_owned(), 30_000_000, false)], 2, "sent once, not lost");
        let round = one.health().export();
        assert_eq!(round.deltas()[0].requests.map(|c| c.delta), Some(0), "nothing left to hand over");
        one.health().forget_shared();
        assert_eq!(one.health().find("a").unwrap().requests_used(Instant::now()), 2, "its own count stays");
    }

    const TWO: &str = "model_list:
  - {model_name: gp, litellm_params: {model: fake/a, order: 1}, model_info: {id: a}}
  - {model_name: gp, litellm_params: {model: fake/b, order: 2}, model_info: {id: b}}
router_settings: {cooldown_time: 30}
";

    #[tokio::test(start_paused = true)]
    async fn cooldowns_are_announced_at_once_and_applied_elsewhere() {
        let (one, two) = (router(TWO), router(TWO));
        let mut announced = one.health().share_cooldowns().expect("the first taker");
        assert!(one.health().share_cooldowns().is_none(), "one taker only");
        let failed = one
            .route("gp", &RequestOptions::default(), |s| {
                let result = if s.deployment.id == "a" { Err(upstream(429)) } else { Ok(()) };
                async move { result }
            })
            .await;
        assert!(failed.is_err(), "no retries configured");
        let cooldown = announced.try_recv().expect("announced as it started");
        assert_eq!(cooldown, Cooldown { deployment: "a".into(), remaining: Duration::from_secs(30) });
        assert_eq!(select(&two).as_deref(), Ok("a"), "not heard of yet");
        two.health().apply_cooldown(&cooldown);
        for _ in 0..5 {
            assert_eq!(select(&two).as_deref(), Ok("b"));
        }
        two.health().apply_cooldown(&Cooldown { deployment: "a".into(), remaining: Duration::from_secs(1) });
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(select(&two).as_deref(), Ok("b"), "a shorter cooldown does not end a longer one");
        let running = two.health().cooldowns();
        assert_eq!(running.len(), 1);
        assert_eq!((running[0].deployment.as_str(), running[0].remaining), ("a", Duration::from_secs(28)));
        two.health()
            .apply_cooldown(&Cooldown { deployment: "unknown".into(), remaining: Duration::from_secs(1) });
        tokio::time::advance(Duration::from_secs(28)).await;
        assert_eq!(select(&two).as_deref(), Ok("a"), "over");
    }

    #[tokio::test(start_paused = true)]
    async fn a_replica_that_starts_late_learns_the_running_cooldowns_from_a_round() {
        let mut shared = Shared::new();
        let late = router(TWO);
        shared.cooldowns.insert("a".into(), shared.unix_ms() + 10_000);
        shared.round(late.health());
        assert_eq!(select(&late).as_deref(), Ok("b"));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(select(&late).as_deref(), Ok("a"));
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_spent_through_one_replica_count_against_tpm_and_usage_on_the_other() {
        let spent = |router: &Router, tokens: u64| {
            router.health().find("a").unwrap().add_tokens(tokens, Instant::now());
        };
        let usage = "model_list:
  - {model_name: gp, litellm_params: {model: fake/a}, model_info: {id: a}}
  - {model_name: gp, litellm_params: {model: fake/b}, model_info: {id: b}}
router_settings: {routing_strategy: usage-based-routing-v2}
";
        let mut shared = Shared::new();
        let (one, two) = (router(usage), router(usage));
        shared.round(two.health());
        spent(&one, 600);
        shared.round(one.health());
        shared.round(one.health());
        shared.round(two.health());
        for _ in 0..5 {
            assert_eq!(select(&two).as_deref(), Ok("b"), "a used 600 tokens (through one), b none");
        }

        // a before b by order, unless a is past its tpm.
        let limited = "model_list:
  - {model_name: gp, litellm_params: {model: fake/a, tpm: 1000, order: 1}, model_info: {id: a}}
  - {model_name: gp, litellm_params: {model: fake/b, order: 2}, model_info: {id: b}}
";
        let mut shared = Shared::new();
        let (one, two) = (router(limited), router(limited));
        for replica in [&one, &two] {
            shared.round(replica.health());
        }
        spent(&one, 600);
        spent(&two, 500);
        assert_eq!(select(&one).as_deref(), Ok("a"), "600 of 1000 on its own");
        assert_eq!(select(&two).as_deref(), Ok("a"), "500 of 1000 on its own");
        shared.round(one.health());
        shared.round(two.health());
        shared.round(one.health());
        for replica in [&one, &two] {
            assert_eq!(replica.health().find("a").unwrap().tokens_used(Instant::now()).0, 1100);
            assert_eq!(select(replica).as_deref(), Ok("b"), "1100 of 1000 across both replicas");
        }
        assert_eq!(shared.counts[&("a".to_owned(), 30_000_000, true)], 1100);
    }

    #[tokio::test(start_paused = true)]
    async fn latencies_measured_anywhere_rank_deployments_everywhere() {
        let config = "model_list:
  - {model_name: gp, litellm_params: {model: fake/a}, model_info: {id: a}}
  - {model_name: gp, litellm_params: {model: fake/b}, model_info: {id: b}}
router_settings: {routing_strategy: latency-based-routing}
";
        let mut shared = Shared::new();
        let (one, two) = (router(config), router(config));
        for _ in 0..4 {
            let routed = one
                .route("gp", &RequestOptions::default(), |s| {
                    let delay = if s.deployment.id == "a" { 2000 } else { 100 };
                    async move {
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        Ok(())
                    }
                })
                .await
                .unwrap();
            routed.ticket.finish(Some(&Usage { prompt_tokens: 1, completion_tokens: 1, ..Usage::default() }));
        }
        let a = one.health().find("a").unwrap();
        let before = a.latency(false, Instant::now(), Duration::from_secs(3600));
        assert!(before.is_some(), "one measured a");
        shared.round(one.health());
        assert!(a.latency.held(a.tenths(Instant::now())).is_empty(), "handed over, no longer kept apart");
        assert_eq!(a.latency(false, Instant::now(), Duration::from_secs(3600)), before, "the same figures");
        // A measurement older than the ttl (3600 s) that Redis still holds counts for nothing.
        let ancient = shared.unix_ms() - 4_000_000;
        shared.latencies.get_mut(&("b".to_owned(), false)).unwrap().insert(0, (999.0, ancient));
        shared.round(two.health());
        for _ in 0..10 {
            assert_eq!(select(&two).as_deref(), Ok("b"), "two never called a, but one found it slow");
        }
        two.health().forget_shared();
        let picks: Vec<String> = (0..40).map(|_| select(&two).unwrap()).collect();
        assert!(picks.iter().any(|id| id == "a"), "on its own, two knows nothing of a: {picks:?}");
    }
}
