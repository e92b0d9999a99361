//! Spend shared by every replica through Redis (LiteLLM's `use_redis_transaction_buffer`).
//!
//! Each replica adds the spend it recorded to one Redis hash (`HINCRBYFLOAT`, atomic) every
//! second, and reads the hash back so its budget checks see what every replica spent within
//! about a second. One replica at a time holds a lease and moves the hash into the database
//! every `proxy_batch_write_at` seconds, in one transaction: PostgreSQL sees one writer, so
//! the replicas never queue on the same rows' locks (LiteLLM's issue #31866).
//!
//! A batch is first renamed to a second hash, which every replica keeps counting until the
//! database has it; a writer that dies mid-write leaves that hash for the next lease holder.
//! The one window left: a writer that dies after its commit and before deleting the hash
//! makes the next writer add that batch again (charging twice, never losing spend).

use std::collections::HashMap;
use std::time::Duration;

use fred::clients::WithOptions;
use fred::prelude::{Client, ClientLike, KeysInterface, LuaInterface, Options};
use sea_orm::sea_query::{Alias, Expr, ExprTrait, Query};
use tokio::runtime::Handle;

use crate::{Store, StoreError, Table};

/// No request path waits on these commands, but the writer's loop must not hang on them.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The tables whose rows carry a running `spend`.
const SPENDING: [Table; 5] = [Table::Keys, Table::Users, Table::Teams, Table::Organizations, Table::EndUsers];

/// Takes the batch to write: the one a previous writer left, else the pending hash renamed.
/// KEYS: pending, flushing.
const TAKE_BATCH: &str = r"
if redis.call('EXISTS', KEYS[2]) == 0 then
  if redis.call('EXISTS', KEYS[1]) == 0 then return {} end
  redis.call('RENAME', KEYS[1], KEYS[2])
end
return redis.call('HGETALL', KEYS[2])
";

/// Takes the writer's lease, or renews it if this replica holds it; 1 when held.
/// KEYS: lease. ARGV: replica id, lease in milliseconds.
const LEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder == false then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
elseif holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
";

/// Gives the lease up if this replica holds it. KEYS: lease. ARGV: replica id.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Adds each (field, delta) pair of ARGV to the pending hash. KEYS: pending.
const PUSH: &str = r"
for i = 1, #ARGV, 2 do redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1]) end
return 0
";

/// Both hashes, flattened one after the other. KEYS: pending, flushing.
const UNWRITTEN: &str = r"
local all = redis.call('HGETALL', KEYS[1])
for _, item in ipairs(redis.call('HGETALL', KEYS[2])) do all[#all + 1] = item end
return all
";

/// Spend deltas by the row they belong to.
pub type SpendDeltas = HashMap<(Table, String), f64>;

/// The Redis side of shared spend.
#[derive(Clone)]
pub struct SharedSpend {
    /// Commands fail at once while Redis is away and are never resent after a reconnect: a
    /// hand-over that failed is counted again by this process, so a late resend would charge
    /// it twice.
    client: WithOptions<Client>,
    pending: String,
    flushing: String,
    lease: String,
    replica: String,
}

impl std::fmt::Debug for SharedSpend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSpend").field("pending", &self.pending).finish_non_exhaustive()
    }
}

impl SharedSpend {
    /// Connects to `url` in the background on `runtime`; `prefix` namespaces the keys
    /// (`tollgate:spend` in production, one per test).
    pub fn start(url: &str, prefix: &str, runtime: &Handle) -> Result<Self, StoreError> {
        let client = crate::redis::builder(url, Duration::from_secs(5))?
            .build()
            .map_err(|error| StoreError::InvalidUrl(format!("redis: {error}")))?;
        let _enter = runtime.enter();
        let connecting = client.clone();
        runtime.spawn(async move {
            if let Err(error) = connecting.init().await {
                tracing::warn!(%error, "redis: shared spend not connected yet; retrying in the background");
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
            // One hash tag: the scripts touch these keys together, so on a Redis Cluster
            // they must live in one slot.
            pending: format!("{{{prefix}}}:pending"),
            flushing: format!("{{{prefix}}}:flushing"),
            lease: format!("{{{prefix}}}:writer"),
            replica: format!("{:032x}", rand_id()),
        })
    }

    /// Adds this replica's deltas to the shared pending spend, in one round trip.
    pub async fn push(&self, deltas: &SpendDeltas) -> Result<(), StoreError> {
        if deltas.is_empty() {
            return Ok(());
        }
        let args: Vec<String> =
            deltas.iter().flat_map(|((table, id), delta)| [field(*table, id), delta.to_string()]).collect();
        let _: i64 = bounded(self.client.eval(PUSH, vec![self.pending.clone()], args)).await?;
        Ok(())
    }

    /// Whether Redis answers (asked before handing spend over again after an outage).
    pub async fn ping(&self) -> Result<(), StoreError> {
        let _: String = bounded(self.client.ping(None)).await?;
        Ok(())
    }

    /// Spend every replica recorded that the database does not have yet.
    pub async fn unwritten(&self) -> Result<SpendDeltas, StoreError> {
        let flat: Vec<String> = bounded(self.client.eval(
            UNWRITTEN,
            vec![self.pending.clone(), self.flushing.clone()],
            Vec::<String>::new(),
        ))
        .await?;
        Ok(sum_pairs(&flat))
    }

    /// Whether this replica is (still) the writer; the lease outlives a missed round or two.
    pub async fn lead(&self, lease: Duration) -> Result<bool, StoreError> {
        let millis = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
        let held: i64 = bounded(self.client.eval(
            LEASE,
            vec![self.lease.clone()],
            vec![self.replica.clone(), millis.to_string()],
        ))
        .await?;
        Ok(held == 1)
    }

    /// Lets another replica take the writer's lease at once (this one is shutting down)
    /// instead of when it expires.
    pub async fn release(&self) -> Result<(), StoreError> {
        let _: i64 =
            bounded(self.client.eval(RELEASE, vec![self.lease.clone()], vec![self.replica.clone()])).await?;
        Ok(())
    }

    /// The batch to write to the database (see the module comment); empty when nothing is due.
    pub async fn take_batch(&self) -> Result<SpendDeltas, StoreError> {
        let flat: Vec<String> = bounded(self.client.eval(
            TAKE_BATCH,
            vec![self.pending.clone(), self.flushing.clone()],
            Vec::<String>::new(),
        ))
        .await?;
        Ok(sum_pairs(&flat))
    }

    /// Forgets the batch the database now has.
    pub async fn finish_batch(&self) -> Result<(), StoreError> {
        let _: i64 = bounded(self.client.del(&self.flushing)).await?;
        Ok(())
    }
}

impl Store {
    /// Adds every delta to its row's `spend` in one transaction, rows in a fixed order so two
    /// writers could never deadlock.
    pub async fn add_spend_many(&self, deltas: &SpendDeltas) -> Result<(), StoreError> {
        let mut rows: Vec<(&(Table, String), &f64)> = deltas.iter().collect();
        rows.sort_by(|a, b| (a.0.0.name(), &a.0.1).cmp(&(b.0.0.name(), &b.0.1)));
        let backend = self.backend();
        let statements: Vec<_> = rows
            .into_iter()
            .filter(|(_, delta)| delta.is_finite() && **delta != 0.0)
            .map(|((table, id), delta)| {
                let mut update = Query::update();
                update
                    .table(Alias::new(table.name()))
                    .value(Alias::new("spend"), Expr::col(Alias::new("spend")).add(*delta))
                    .and_where(Expr::col(Alias::new(table.id_column())).eq(id.as_str()));
                backend.build(&update)
            })
            .collect();
        if statements.is_empty() {
            return Ok(());
        }
        self.run(|db| async move {
            use sea_orm::{ConnectionTrait, TransactionTrait};
            let transaction = db.begin().await?;
            for statement in statements {
                transaction.execute_raw(statement).await?;
            }
            transaction.commit().await
        })
        .await
    }
}

/// `<table>:<id>`: ids may hold anything, so the table comes first and ends at the first colon.
fn field(table: Table, id: &str) -> String {
    format!("{}:{id}", table.name())
}

/// Sums a flattened `HGETALL` (field, value, field, value…) by row.
fn sum_pairs(flat: &[String]) -> SpendDeltas {
    let mut total = SpendDeltas::new();
    for pair in flat.chunks_exact(2) {
        if let (Some(row), Ok(delta)) = (parse_field(&pair[0]), pair[1].parse::<f64>()) {
            *total.entry(row).or_insert(0.0) += delta;
        }
    }
    total
}

fn parse_field(field: &str) -> Option<(Table, String)> {
    let (name, id) = field.split_once(':')?;
    let table = SPENDING.into_iter().find(|table| table.name() == name)?;
    Some((table, id.to_owned()))
}

fn redis_error(error: fred::error::Error) -> StoreError {
    StoreError::Redis(error.to_string())
}

/// A command with its timeout enforced here too, whatever state the connection is in.
async fn bounded<T>(command: impl Future<Output = Result<T, fred::error::Error>>) -> Result<T, StoreError> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(result) => result.map_err(redis_error),
        Err(_) => Err(StoreError::Redis(format!("no answer within {COMMAND_TIMEOUT:?}"))),
    }
}

/// A replica id: unique enough to tell lease holders apart.
fn rand_id() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos(),
    );
    hasher.write_u32(std::process::id());
    let high = u128::from(hasher.finish());
    hasher.write_u8(1);
    (high << 64) | u128::from(hasher.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole round against the test Redis: two replicas hand spend over, both read the
    /// sum, one takes the lease and the batch, and until it finishes the batch is still
    /// counted; then only what came after.
    #[tokio::test]
    async fn replicas_hand_over_and_one_writer_takes_each_batch_once() {
        let Ok(url) = std::env::var("TOLLGATE_TEST_REDIS_URL") else {
            eprintln!(
                "not run: replicas_hand_over_and_one_writer_takes_each_batch_once (TOLLGATE_TEST_REDIS_URL is not set)"
            );
            return;
        };
        let prefix = format!("tollgate-test:spend:{:x}", rand_id());
        let one = SharedSpend::start(&url, &prefix, &Handle::current()).unwrap();
        let two = SharedSpend::start(&url, &prefix, &Handle::current()).unwrap();
        let started = std::time::Instant::now();
        while one.ping().await.is_err() || two.ping().await.is_err() {
            assert!(started.elapsed() < Duration::from_secs(5), "redis never answered");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let key = (Table::Keys, "hash-a".to_owned());
        let team = (Table::Teams, "team:1".to_owned());
        one.push(&SpendDeltas::from([(key.clone(), 0.25), (team.clone(), 0.25)])).await.unwrap();
        two.push(&SpendDeltas::from([(key.clone(), 0.5)])).await.unwrap();
        let seen = two.unwritten().await.unwrap();
        assert_eq!((seen[&key], seen[&team]), (0.75, 0.25));

        let lease = Duration::from_secs(5);
        assert!(one.lead(lease).await.unwrap());
        assert!(!two.lead(lease).await.unwrap(), "one writer at a time");
        assert!(one.lead(lease).await.unwrap(), "the holder renews");
        let batch = one.take_batch().await.unwrap();
        assert_eq!(batch[&key], 0.75);
        two.push(&SpendDeltas::from([(key.clone(), 1.0)])).await.unwrap();
        assert_eq!(two.unwritten().await.unwrap()[&key], 1.75, "a batch being written still counts");
        assert_eq!(
            one.take_batch().await.unwrap(),
            batch,
            "an unfinished batch is taken again, not a new one"
        );
        one.finish_batch().await.unwrap();
        assert_eq!(two.unwritten().await.unwrap()[&key], 1.0);
        assert_eq!(one.take_batch().await.unwrap()[&key], 1.0);
        one.finish_batch().await.unwrap();
        assert!(one.take_batch().await.unwrap().is_empty());
        two.release().await.unwrap();
        assert!(!two.lead(lease).await.unwrap(), "only the holder can give the lease up");
        one.release().await.unwrap();
        assert!(two.lead(lease).await.unwrap(), "a released lease is free at once");
    }

    #[test]
    fn fields_name_their_row_and_survive_colons_in_ids() {
        let name = field(Table::EndUsers, "team:a:b");
        assert_eq!(parse_field(&name), Some((Table::EndUsers, "team:a:b".to_owned())));
        assert_eq!(parse_field("LiteLLM_SpendLogs:x"), None);
        assert_eq!(parse_field("no-colon"), None);
    }
}
