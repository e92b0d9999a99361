//! Keeps the router's board in step with every other replica's through Redis, so that all of
//! them route on the same facts: cooldowns, per-minute requests and tokens per deployment, and
//! recent latencies (see `tollgate_router::SyncRound` and `tollgate_storage::router_state`).
//!
//! Two paths, neither on a request's: a cooldown that starts here is set and announced in
//! Redis at once (one script call, spawned as it starts), and every replica applies the
//! announcement as it arrives; everything else travels in a round every [`ROUND_EVERY`]:
//! one script call hands over what this replica counted and measured since the last round
//! and brings back every replica's totals, which the board keeps beside its own counts. A
//! decision is therefore at most one round (plus its round trip) behind the other replicas.
//!
//! When a round fails (Redis away or slower than a second) the board forgets the other
//! replicas' figures and decides on its own counts (limits then hold per replica), one warning
//! is logged, and rounds go on: the first that succeeds hands over what was counted meanwhile
//! (counts are handed over by what Redis does not have yet, not by round), announces the
//! cooldowns running here again, and says so in one info line.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, MissedTickBehavior};
use tollgate_domain::board_sync::Cooldown;
use tollgate_router::HealthBoard;
use tollgate_storage::StoreError;
use tollgate_storage::router_state::RouterState;

/// How often a replica hands its counts over and reads everyone's.
pub const ROUND_EVERY: Duration = Duration::from_millis(200);

/// This replica's end of the shared router state.
pub struct RouterSync {
    state: RouterState,
    board: Arc<HealthBoard>,
    /// Whether the last round succeeded.
    shared: AtomicBool,
    /// Whether this outage (or the wait for the first connection) was logged.
    warned: AtomicBool,
    /// Whether a round ever succeeded.
    connected_once: AtomicBool,
}

impl std::fmt::Debug for RouterSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterSync").field("shared", &self.is_shared()).finish_non_exhaustive()
    }
}

impl RouterSync {
    /// Shares `board` through the Redis at `url`, under `namespace`, from now until the last
    /// handle is dropped. Connects in the background: until the first round succeeds the
    /// board decides on its own.
    pub fn start(board: &Arc<HealthBoard>, url: &str, namespace: &str) -> Result<Arc<Self>, StoreError> {
        let applying = Arc::clone(board);
        let state = RouterState::start(url, namespace, move |cooldown| applying.apply_cooldown(&cooldown))?;
        let announcements = board.share_cooldowns();
        if announcements.is_none() {
            tracing::warn!(
                "the router board is shared already; its cooldowns are announced by the first sharer"
            );
        }
        let sync = Arc::new(Self {
            state,
            board: Arc::clone(board),
            shared: AtomicBool::new(false),
            warned: AtomicBool::new(false),
            connected_once: AtomicBool::new(false),
        });
        sync.state.runtime().spawn(run(Arc::downgrade(&sync), announcements));
        Ok(sync)
    }

    /// Whether the last round reached Redis (decisions use every replica's figures).
    pub fn is_shared(&self) -> bool {
        self.shared.load(Ordering::Acquire)
    }

    async fn announce(&self, cooldown: Cooldown) {
        if let Err(error) = self.state.announce(&cooldown).await {
            // The first round after Redis returns announces every running cooldown again.
            tracing::debug!(%error, deployment = %cooldown.deployment, "redis: a cooldown was not announced");
        }
    }

    async fn round(&self) {
        let round = self.board.export();
        let sent = Instant::now();
        match self.state.round(round.deltas()).await {
            Ok(answer) => {
                let received = Instant::now();
                // Redis read its clock somewhere in the round trip; the middle is the best guess.
                self.board.set_clock(sent + received.duration_since(sent) / 2, answer.unix_ms);
                self.board.apply(round, &answer);
                if !self.shared.swap(true, Ordering::AcqRel) {
                    self.warned.store(false, Ordering::Release);
                    if self.connected_once.swap(true, Ordering::AcqRel) {
                        tracing::info!(
                            "redis: answering again; cooldowns, rpm/tpm usage and latencies are shared across replicas again"
                        );
                    } else {
                        tracing::info!(
                            "redis: cooldowns, rpm/tpm usage and latencies are shared across replicas"
                        );
                    }
                    // Cooldowns that started while nobody heard of them.
                    for cooldown in self.board.cooldowns() {
                        self.announce(cooldown).await;
                    }
                }
            }
            Err(error) => {
                if self.shared.swap(false, Ordering::AcqRel) {
                    self.board.forget_shared();
                }
                if !self.warned.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        %error,
                        "redis: cooldowns, rpm/tpm usage and latencies are per replica until redis answers"
                    );
                }
            }
        }
    }
}

/// Rounds every [`ROUND_EVERY`] and announcements as they come, until the sync is dropped.
async fn run(sync: Weak<RouterSync>, mut announcements: Option<UnboundedReceiver<Cooldown>>) {
    let mut ticks = tokio::time::interval(ROUND_EVERY);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        let announcement = async {
            match &mut announcements {
                Some(receiver) => receiver.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            cooldown = announcement => {
                let Some(cooldown) = cooldown else { return };
                let Some(sync) = sync.upgrade() else { return };
                // At once, beside a round that may be under way.
                tokio::spawn(async move { sync.announce(cooldown).await });
            }
            _ = ticks.tick() => {
                let Some(sync) = sync.upgrade() else { return };
                sync.round().await;
            }
        }
    }
}
