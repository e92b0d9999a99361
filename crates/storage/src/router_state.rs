//! The router's state every replica shares, in Redis: cooldowns, each deployment's requests
//! and tokens per minute of Redis's clock, and recent latencies.
//!
//! Keys live under `{<namespace>}` (one cluster slot for all of them):
//! - `<ns>:cooldown:<deployment>`: present while the deployment cools down, its expiry the
//!   cooldown's end. Set (unless a longer one runs) and announced on `<ns>:cooldowns` in one
//!   script the moment a replica starts a cooldown; every replica applies announcements as
//!   they arrive, and reads the keys each round (so a replica that starts, or missed an
//!   announcement while reconnecting, learns them within a round).
//! - `<ns>:r:<deployment>:<minute>`, `<ns>:t:<deployment>:<minute>`: requests and tokens of a
//!   minute (minutes since the Unix epoch, by Redis's clock), added to with `INCRBY`; they
//!   expire two minutes after their first count.
//! - `<ns>:latency:<deployment>`, `<ns>:ttft:<deployment>`: the most recent measurements of
//!   every replica (`<seconds> <unix ms>`, newest first), trimmed to the routing strategy's
//!   list size, expiring after its ttl without a new one.
//!
//! A round is one script call: it adds each replica's new counts and measurements and
//! answers with the totals, the lists, the running cooldowns and Redis's clock. No request
//! waits on any of it; commands fail at once while Redis is away and never wait longer than
//! the command timeout.

use std::sync::Mutex;
use std::time::Duration;

use fred::clients::{SubscriberClient, WithOptions};
use fred::prelude::{Client, ClientLike, EventInterface, LuaInterface, Options, PubsubInterface, Value};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tollgate_domain::board_sync::{Cooldown, DeploymentDelta, DeploymentTotals, RoundAnswer, Sample};

use crate::StoreError;

/// The longest a round or an announcement may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(1);
/// A minute's counts outlive it by this much, for rounds that arrive late.
const COUNT_EXPIRY_SECS: u64 = 120;

/// One round: ARGV = n, then per deployment: id, what (1 requests, 2 tokens, 4 latency),
/// [minute delta] for requests, [minute delta] for tokens, [keep ttl_secs, then for calls
/// and first tokens: count (seconds age_ms)*count] for latency.
/// Returns {unix_ms, per deployment {cooldown pttl, [requests], [tokens], [calls], [firsts]}}.
const ROUND: &str = r"
local prefix = KEYS[1]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local function bit(value, b) return math.floor(value / b) % 2 == 1 end
local function add(key, delta)
  if delta == 0 then return tonumber(redis.call('GET', key) or '0') end
  local total = redis.call('INCRBY', key, delta)
  if total == delta then redis.call('EXPIRE', key, tonumber(ARGV[1])) end
  return total
end
local results = {now}
local i = 3
for d = 1, tonumber(ARGV[2]) do
  local id, what = ARGV[i], tonumber(ARGV[i + 1])
  i = i + 2
  local answer = {redis.call('PTTL', prefix .. ':cooldown:' .. id)}
  for _, kind in ipairs({{1, ':r:'}, {2, ':t:'}}) do
    if bit(what, kind[1]) then
      answer[#answer + 1] = add(prefix .. kind[2] .. id .. ':' .. ARGV[i], tonumber(ARGV[i + 1]))
      i = i + 2
    end
  end
  if bit(what, 4) then
    local keep, ttl = tonumber(ARGV[i]), tonumber(ARGV[i + 1])
    i = i + 2
    for _, name in ipairs({':latency:', ':ttft:'}) do
      local key = prefix .. name .. id
      local count = tonumber(ARGV[i])
      i = i + 1
      for s = 1, count do
        redis.call('LPUSH', key, ARGV[i] .. ' ' .. (now - tonumber(ARGV[i + 1])))
        i = i + 2
      end
      if count > 0 then
        redis.call('LTRIM', key, 0, keep - 1)
        redis.call('EXPIRE', key, ttl)
      end
      answer[#answer + 1] = redis.call('LRANGE', key, 0, -1)
    end
  end
  results[#results + 1] = answer
end
return results
";

/// Starts a cooldown unless a longer one runs, and announces it.
/// ARGV: deployment, milliseconds, channel.
const ANNOUNCE: &str = r"
local key = KEYS[1] .. ':cooldown:' .. ARGV[1]
local ms = tonumber(ARGV[2])
if redis.call('PTTL', key) < ms then redis.call('SET', key, '1', 'PX', ms) end
redis.call('PUBLISH', ARGV[3], ARGV[2] .. ' ' .. ARGV[1])
return 0
";

/// The Redis side of the router's shared state.
pub struct RouterState {
    /// One attempt, failing at once while disconnected: a round is repeated anyway.
    client: WithOptions<Client>,
    /// `{namespace}`.
    prefix: String,
    channel: String,
    runtime: Handle,
    /// The round script's hash, once Redis told it.
    sha: Mutex<Option<String>>,
    /// Stops the runtime (the connections, the subscriber and whatever runs there) on drop.
    _stop: oneshot::Sender<()>,
}

impl std::fmt::Debug for RouterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterState").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl RouterState {
    /// Connects to `url` in the background, on a runtime thread of its own; keys live under
    /// `namespace`. `on_cooldown` gets every announced cooldown (this replica's too).
    pub fn start(
        url: &str,
        namespace: &str,
        on_cooldown: impl Fn(Cooldown) + Send + Sync + 'static,
    ) -> Result<Self, StoreError> {
        let builder = crate::redis::builder(url, Duration::from_secs(2))?;
        let client = builder.build().map_err(|error| StoreError::InvalidUrl(format!("redis: {error}")))?;
        let subscriber: SubscriberClient = builder
            .build_subscriber_client()
            .map_err(|error| StoreError::InvalidUrl(format!("redis: {error}")))?;
        let (runtime, stop) = crate::redis::own_runtime("tollgate-router-state")?;
        let prefix = format!("{{{namespace}}}");
        let channel = format!("{prefix}:cooldowns");
        let connecting = client.clone();
        runtime.spawn(async move {
            if let Err(error) = connecting.init().await {
                tracing::debug!(%error, "redis: router state not connected yet; retrying in the background");
            }
        });
        let listening = channel.clone();
        runtime.spawn(async move {
            if let Err(error) = subscriber.init().await {
                tracing::debug!(%error, "redis: cooldown subscriber not connected yet; retrying in the background");
            }
            // Subscriptions are renewed after every reconnect.
            let _renewals = subscriber.manage_subscriptions();
            if let Err(error) = subscriber.subscribe(listening.as_str()).await {
                tracing::warn!(%error, "redis: could not subscribe to cooldown announcements");
            }
            let mut messages = subscriber.message_rx();
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        if let Some(cooldown) = message.value.as_str().and_then(|text| parse_announcement(&text)) {
                            on_cooldown(cooldown);
                        }
                    }
                    // Missed announcements are read back from their keys by the next round.
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        let options = Options {
            max_attempts: Some(1),
            timeout: Some(COMMAND_TIMEOUT),
            fail_fast: true,
            ..Options::default()
        };
        Ok(Self {
            client: client.with_options(&options),
            prefix,
            channel,
            runtime,
            sha: Mutex::default(),
            _stop: stop,
        })
    }

    /// The runtime the connections live on, where their callers' loops belong too.
    pub fn runtime(&self) -> &Handle {
        &self.runtime
    }

    /// Cooldown announcements travel on this channel.
    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// Starts `cooldown` in Redis (unless a longer one runs) and announces it, in one call.
    pub async fn announce(&self, cooldown: &Cooldown) -> Result<(), StoreError> {
        let millis = u64::try_from(cooldown.remaining.as_millis()).unwrap_or(u64::MAX).max(1);
        let args = vec![cooldown.deployment.clone(), millis.to_string(), self.channel.clone()];
        let _: i64 = bounded(self.client.eval(ANNOUNCE, vec![self.prefix.clone()], args)).await?;
        Ok(())
    }

    /// Hands `deltas` over and answers with every replica's figures, one entry per delta.
    pub async fn round(&self, deltas: &[DeploymentDelta]) -> Result<RoundAnswer, StoreError> {
        let args = round_args(deltas);
        let keys = vec![self.prefix.clone()];
        let known = self.sha.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let answer: Value = match known {
            Some(sha) => match bounded(self.client.evalsha(sha, keys.clone(), args.clone())).await {
                Err(StoreError::Redis(message)) if message.contains("NOSCRIPT") => {
                    self.eval_round(keys, args).await?
                }
                other => other?,
            },
            None => self.eval_round(keys, args).await?,
        };
        parse_round(answer, deltas)
    }

    /// Runs the round script by its text, then learns its hash for the next rounds.
    async fn eval_round(&self, keys: Vec<String>, args: Vec<String>) -> Result<Value, StoreError> {
        let answer = bounded(self.client.eval(ROUND, keys, args)).await?;
        if let Ok(sha) = bounded(self.client.script_load::<String, _>(ROUND)).await {
            *self.sha.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sha);
        }
        Ok(answer)
    }
}

/// The round script's arguments for `deltas`.
fn round_args(deltas: &[DeploymentDelta]) -> Vec<String> {
    let mut args = vec![COUNT_EXPIRY_SECS.to_string(), deltas.len().to_string()];
    for delta in deltas {
        let what = u8::from(delta.requests.is_some())
            | (u8::from(delta.tokens.is_some()) << 1)
            | (u8::from(delta.latency.is_some()) << 2);
        args.extend([delta.deployment.clone(), what.to_string()]);
        for counter in [delta.requests, delta.tokens].into_iter().flatten() {
            args.extend([counter.minute.to_string(), counter.delta.to_string()]);
        }
        if let Some(latency) = &delta.latency {
            args.extend([latency.keep.max(1).to_string(), latency.ttl.as_secs().max(1).to_string()]);
            for samples in [&latency.calls, &latency.first_tokens] {
                // Oldest first, so that the newest ends up at the head of the list.
                let mut samples: Vec<&Sample> = samples.iter().filter(|s| s.seconds.is_finite()).collect();
                samples.sort_by_key(|sample| std::cmp::Reverse(sample.age));
                args.push(samples.len().to_string());
                for sample in samples {
                    args.extend([sample.seconds.to_string(), sample.age.as_millis().to_string()]);
                }
            }
        }
    }
    args
}

fn unexpected(what: &str) -> StoreError {
    StoreError::Redis(format!("the router state script answered {what} in an unexpected shape"))
}

/// Reads the round script's answer, one entry per delta.
fn parse_round(answer: Value, deltas: &[DeploymentDelta]) -> Result<RoundAnswer, StoreError> {
    let Value::Array(entries) = answer else { return Err(unexpected("the round")) };
    let mut entries = entries.into_iter();
    let unix_ms = entries.next().and_then(|value| value.as_u64()).ok_or_else(|| unexpected("the clock"))?;
    let mut totals = Vec::with_capacity(deltas.len());
    for delta in deltas {
        let Some(Value::Array(fields)) = entries.next() else { return Err(unexpected("a deployment")) };
        let mut fields = fields.into_iter();
        let mut number =
            || fields.next().and_then(|value| value.as_i64()).ok_or_else(|| unexpected("a count"));
        let cooldown = number()?;
        let requests = delta.requests.map(|_| number()).transpose()?;
        let tokens = delta.tokens.map(|_| number()).transpose()?;
        let mut list = || match fields.next() {
            Some(Value::Array(items)) => {
                Ok(items.iter().filter_map(|item| parse_sample(item, unix_ms)).collect())
            }
            _ => Err(unexpected("a latency list")),
        };
        let latency = match delta.latency {
            Some(_) => Some((list()?, list()?)),
            None => None,
        };
        totals.push(DeploymentTotals {
            // PTTL: -2 without the key, -1 without an expiry (never set so by a replica).
            cooldown: u64::try_from(cooldown).ok().filter(|ms| *ms > 0).map(Duration::from_millis),
            requests: requests.map(|n| u64::try_from(n).unwrap_or(0)),
            tokens: tokens.map(|n| u64::try_from(n).unwrap_or(0)),
            latency,
        });
    }
    Ok(RoundAnswer { unix_ms, totals })
}

/// `<seconds> <unix ms>` into a sample aged as of `now_ms`.
fn parse_sample(item: &Value, now_ms: u64) -> Option<Sample> {
    let text = item.as_str()?;
    let (seconds, at) = text.split_once(' ')?;
    let seconds = seconds.parse::<f64>().ok().filter(|s| s.is_finite())?;
    let at = at.parse::<u64>().ok()?;
    Some(Sample { seconds, age: Duration::from_millis(now_ms.saturating_sub(at)) })
}

/// `<milliseconds> <deployment>` (the id last: it may hold spaces).
fn parse_announcement(text: &str) -> Option<Cooldown> {
    let (millis, deployment) = text.split_once(' ')?;
    let millis = millis.parse::<u64>().ok()?;
    Some(Cooldown { deployment: deployment.to_owned(), remaining: Duration::from_millis(millis) })
}

/// A command with its timeout enforced here too, whatever state the connection is in.
async fn bounded<T>(command: impl Future<Output = Result<T, fred::error::Error>>) -> Result<T, StoreError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(result) => result.map_err(|error| StoreError::Redis(error.to_string())),
        Err(_) => Err(StoreError::Redis(format!("no answer within {COMMAND_TIMEOUT:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use tollgate_domain::board_sync::{CounterDelta, LatencyDelta};

    use super::*;

    #[test]
    fn announcements_keep_ids_with_spaces() {
        assert_eq!(
            parse_announcement("1500 my deployment"),
            Some(Cooldown { deployment: "my deployment".into(), remaining: Duration::from_millis(1500) })
        );
        assert_eq!(parse_announcement("soon a"), None);
        assert_eq!(parse_announcement("1500"), None);
    }

    fn delta(id: &str, requests: u64, latency: Vec<Sample>) -> DeploymentDelta {
        DeploymentDelta {
            deployment: id.into(),
            requests: Some(CounterDelta { minute: 29_000_000, delta: requests }),
            tokens: None,
            latency: Some(LatencyDelta {
                keep: 3,
                ttl: Duration::from_secs(60),
                calls: latency,
                first_tokens: Vec::new(),
            }),
        }
    }

    fn sample(seconds: f64, age_ms: u64) -> Sample {
        Sample { seconds, age: Duration::from_millis(age_ms) }
    }

    /// Two replicas against the test Redis: counts add up, latencies are everyone's, the
    /// newest kept; a cooldown is set, announced and read back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_share_counts_latencies_and_cooldowns() {
        let Ok(url) = std::env::var("TOLLGATE_TEST_REDIS_URL") else {
            eprintln!(
                "not run: replicas_share_counts_latencies_and_cooldowns (TOLLGATE_TEST_REDIS_URL is not set)"
            );
            return;
        };
        let namespace = format!("tollgate-test:router:{}", uuid::Uuid::new_v4().simple());
        let (heard, mut hearing) = tokio::sync::mpsc::unbounded_channel();
        let one = RouterState::start(&url, &namespace, move |cooldown| {
            let _ = heard.send(cooldown);
        })
        .unwrap();
        let two = RouterState::start(&url, &namespace, |_| {}).unwrap();
        let started = std::time::Instant::now();
        while one.round(&[]).await.is_err() || two.round(&[]).await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(5), "redis never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let first = one.round(&[delta("a b", 2, vec![sample(0.5, 10), sample(0.25, 2_000)])]).await.unwrap();
        assert_eq!(first.totals[0].requests, Some(2));
        let answer = two.round(&[delta("a b", 1, vec![sample(1.0, 0), sample(2.0, 50)])]).await.unwrap();
        let totals = &answer.totals[0];
        assert_eq!(totals.requests, Some(3), "both replicas' requests");
        assert!(answer.unix_ms.abs_diff(first.unix_ms) < 5_000, "{} {}", answer.unix_ms, first.unix_ms);
        let (calls, firsts) = totals.latency.clone().unwrap();
        let seconds: Vec<f64> = calls.iter().map(|s| s.seconds).collect();
        assert_eq!(seconds, [1.0, 2.0, 0.5], "the three newest of both, newest first");
        assert!(calls[2].age >= Duration::from_millis(10), "{:?}", calls[2].age);
        assert!(firsts.is_empty());
        assert_eq!(totals.cooldown, None);

        tokio::time::timeout(Duration::from_secs(5), async {
            // The subscription may still be on its way: announce until one arrives.
            loop {
                two.announce(&Cooldown { deployment: "a b".into(), remaining: Duration::from_secs(30) })
                    .await
                    .unwrap();
                if let Ok(Some(heard)) =
                    tokio::time::timeout(Duration::from_millis(200), hearing.recv()).await
                {
                    assert_eq!(
                        heard,
                        Cooldown { deployment: "a b".into(), remaining: Duration::from_secs(30) }
                    );
                    return;
                }
            }
        })
        .await
        .expect("the announcement arrived");
        two.announce(&Cooldown { deployment: "a b".into(), remaining: Duration::from_secs(1) })
            .await
            .unwrap();
        let answer = one
            .round(&[DeploymentDelta { deployment: "a b".into(), ..DeploymentDelta::default() }])
            .await
            .unwrap();
        let left = answer.totals[0].cooldown.expect("still cooling");
        assert!(left > Duration::from_secs(25), "a shorter cooldown does not shorten it: {left:?}");
        assert_eq!(answer.totals[0].requests, None, "not asked for");
        // A script Redis forgot (a restart, a failover) is sent again by its text.
        *one.sha.lock().unwrap() = Some("0".repeat(40));
        let again = one.round(&[delta("a b", 0, Vec::new())]).await.unwrap();
        assert_eq!(again.totals[0].requests, Some(3));
        assert_ne!(one.sha.lock().unwrap().as_deref(), Some("0".repeat(40).as_str()));
    }
}
