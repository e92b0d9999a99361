//! What gateway replicas tell each other about deployments through Redis: cooldowns, the
//! requests and tokens each replica counted in the current minute, and recent latencies.
//!
//! Plain data: the router exports it from its board and applies what comes back, the storage
//! layer carries it, neither knows the other.

use std::time::Duration;

/// A deployment cooling down for `remaining` (announced by the replica that cooled it).
#[derive(Debug, Clone, PartialEq)]
pub struct Cooldown {
    pub deployment: String,
    pub remaining: Duration,
}

/// One deployment's part of a sync round: what this replica counted and measured since
/// the last round, and which shared figures it wants back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeploymentDelta {
    pub deployment: String,
    /// Requests counted here (its `rpm` is checked against every replica's).
    pub requests: Option<CounterDelta>,
    /// Tokens counted here (`tpm`, usage-based routing).
    pub tokens: Option<CounterDelta>,
    /// Latencies measured here (latency-based routing).
    pub latency: Option<LatencyDelta>,
}

/// Counts of one minute not yet added to the shared total (`delta` may be 0: the caller
/// still wants the total).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterDelta {
    /// Minutes since the Unix epoch, by the shared clock.
    pub minute: u64,
    pub delta: u64,
}

/// New latency measurements, and how many of every replica's to keep, for how long.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LatencyDelta {
    pub keep: usize,
    pub ttl: Duration,
    /// Whole calls (seconds, or seconds per completion token).
    pub calls: Vec<Sample>,
    /// Times to first token of streams.
    pub first_tokens: Vec<Sample>,
}

/// A measurement and how long ago it was taken.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub seconds: f64,
    pub age: Duration,
}

/// The shared figures of one deployment, in answer to its [`DeploymentDelta`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DeploymentTotals {
    /// What is left of a cooldown any replica announced.
    pub cooldown: Option<Duration>,
    /// Every replica's requests in the delta's minute, this one's included.
    pub requests: Option<u64>,
    pub tokens: Option<u64>,
    /// Every replica's recent latencies (whole calls, first tokens), newest first.
    pub latency: Option<(Vec<Sample>, Vec<Sample>)>,
}

/// The answer to a whole round.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RoundAnswer {
    /// The shared clock (Redis's) when the round ran, in milliseconds since the Unix epoch.
    pub unix_ms: u64,
    /// One entry per delta, in order.
    pub totals: Vec<DeploymentTotals>,
}
