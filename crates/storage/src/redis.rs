//! Redis through fred: how every client connects ([`builder`]), and a pub/sub channel on
//! which every replica announces the virtual keys, teams and customers it changed, so the
//! others drop them from their caches at once instead of at their next reload.

use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::prelude::{Builder, Client, ClientLike, Config, EventInterface, PubsubInterface, ReconnectPolicy};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::StoreError;

/// How every Redis client of the gateway connects: the URL (standalone, `rediss://` for TLS,
/// `redis-cluster://…?node=…`, `redis-sentinel://…?sentinelServiceName=…`, as the config reader
/// writes them), a first connection that is retried like a lost one rather than given up on,
/// reconnects backing off to two seconds, and `connect_timeout` per attempt.
pub fn builder(url: &str, connect_timeout: Duration) -> Result<Builder, StoreError> {
    let mut config = Config::from_url(url)
        .map_err(|error| StoreError::InvalidUrl(format!("redis url {}: {error}", crate::redact(url))))?;
    config.fail_fast = false;
    let mut builder = Builder::from_config(config);
    builder.set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
    builder.with_connection_config(|connection| connection.connection_timeout = connect_timeout);
    Ok(builder)
}

/// A one-thread runtime on a thread of its own (named `name`) for Redis connections and the
/// tasks that use them, so that they never share a gateway worker; it stops when the sender
/// is dropped.
pub(crate) fn own_runtime(name: &str) -> Result<(Handle, oneshot::Sender<()>), StoreError> {
    let (stop, stopped) = oneshot::channel::<()>();
    let (handle_tx, handle_rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(error) => {
                    let _ = handle_tx.send(Err(error.to_string()));
                    return;
                }
            };
            let _ = handle_tx.send(Ok(runtime.handle().clone()));
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })
        .map_err(|error| StoreError::Redis(format!("cannot start the {name} thread: {error}")))?;
    match handle_rx.recv() {
        Ok(Ok(handle)) => Ok((handle, stop)),
        Ok(Err(error)) => Err(StoreError::Redis(format!("cannot start the {name} runtime: {error}"))),
        Err(_) => Err(StoreError::Stopped),
    }
}

/// The channel change announcements travel on.
pub const CHANGES_CHANNEL: &str = "tollgate:tenancy-changes";

/// Publishes change announcements and hands those of every replica (this one included) to
/// a callback. Connections are made and kept (with reconnects) in the background: Redis
/// being away only slows propagation down to the database reload.
#[derive(Clone)]
pub struct ChangeBus {
    publisher: Client,
    runtime: Handle,
}

impl std::fmt::Debug for ChangeBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChangeBus")
    }
}

/// What a lagging subscriber hands the callback: it missed messages, so everything changed.
pub const EVERYTHING: &str = "*";

impl ChangeBus {
    /// Connects to `url` (`redis://[:password@]host:port[/db]`, `rediss://` for TLS) on
    /// `runtime`; `on_change` gets each announcement's text.
    pub fn start(
        url: &str,
        runtime: &Handle,
        on_change: impl Fn(&str) + Send + Sync + 'static,
    ) -> Result<ChangeBus, StoreError> {
        let builder = builder(url, Duration::from_secs(5))?;
        let publisher = builder.build().map_err(|error| StoreError::InvalidUrl(format!("redis: {error}")))?;
        let subscriber: SubscriberClient = builder
            .build_subscriber_client()
            .map_err(|error| StoreError::InvalidUrl(format!("redis: {error}")))?;
        let _enter = runtime.enter();
        let (first, second) = (publisher.clone(), subscriber.clone());
        runtime.spawn(async move {
            if let Err(error) = first.init().await {
                tracing::warn!(%error, "redis: publisher not connected yet; retrying in the background");
            }
        });
        runtime.spawn(async move {
            if let Err(error) = second.init().await {
                tracing::warn!(%error, "redis: subscriber not connected yet; retrying in the background");
            }
            // Subscriptions are renewed after every reconnect.
            let _renewals = second.manage_subscriptions();
            if let Err(error) = second.subscribe(CHANGES_CHANNEL).await {
                tracing::warn!(%error, "redis: could not subscribe to change announcements");
            }
            let mut messages = second.message_rx();
            loop {
                match messages.recv().await {
                    Ok(message) => {
                        if let Some(text) = message.value.as_str() {
                            on_change(&text);
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => on_change(EVERYTHING),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(ChangeBus { publisher, runtime: runtime.clone() })
    }

    /// Announces a change; never waits, and a failure only costs speed (the reload catches up).
    pub fn announce(&self, change: String) {
        let publisher = self.publisher.clone();
        self.runtime.spawn(async move {
            if let Err(error) = publisher.publish::<(), _, _>(CHANGES_CHANNEL, change).await {
                tracing::debug!(%error, "redis: a change announcement was not sent");
            }
        });
    }
}
