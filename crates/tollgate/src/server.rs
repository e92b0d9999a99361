//! The accept loop and the connections: hyper-util's auto builder (HTTP/1.1 or HTTP/2 by
//! preface or ALPN), one task per connection, graceful shutdown that drains in-flight work.
//!
//! Connections run either as tasks on the caller's runtime ([`serve_here`]) or on worker
//! threads, each a single-threaded runtime with its own `App` and upstream pool
//! ([`serve_on_workers`]), to which the acceptor deals connections in turn. Each request
//! takes the `App` in force when it arrives ([`Apps::current`]), so a reload reaches the
//! next request on every connection, kept-alive ones included, and none in flight.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tollgate_http::live::Apps;

/// A TLS handshake that takes longer than this is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not sent a full request head within this is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone)]
pub(crate) struct Options {
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) shutdown_grace: Duration,
}

/// Completes on SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// Serves every connection as a task on the current runtime.
pub(crate) async fn serve_here(
    apps: Arc<Apps>,
    options: Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Connections::new(apps, options.tls.clone());
    accept_until(listener, shutdown, |stream| connections.spawn(stream)).await;
    connections.drain(options.shutdown_grace).await;
    tracing::info!("all connections closed");
}

/// Serves connections on one thread per `apps` entry, each a single-threaded runtime of its
/// own running the `Apps` that entry builds.
pub(crate) async fn serve_on_workers<A>(
    apps: Vec<A>,
    options: Options,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    A: FnOnce() -> Arc<Apps> + Send + 'static,
{
    let mut queues = Vec::with_capacity(apps.len());
    let mut finished = Vec::with_capacity(apps.len());
    for (index, app) in apps.into_iter().enumerate() {
        let (queue, incoming) = mpsc::unbounded_channel::<std::net::TcpStream>();
        let (done, done_rx) = oneshot::channel::<()>();
        let options = options.clone();
        std::thread::Builder::new().name(format!("tollgate-worker-{index}")).spawn(move || {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(worker(app, options, incoming)),
                Err(error) => tracing::error!(%error, worker = index, "cannot start a worker runtime"),
            }
            let _ = done.send(());
        })?;
        queues.push(queue);
        finished.push(done_rx);
    }

    let mut next = 0;
    accept_until(listener, shutdown, |stream| match stream.into_std() {
        Ok(mut stream) => {
            // A worker whose thread died is skipped; the others keep serving.
            for _ in 0..queues.len() {
                let queue = &queues[next];
                next = (next + 1) % queues.len();
                match queue.send(stream) {
                    Ok(()) => return,
                    Err(mpsc::error::SendError(back)) => stream = back,
                }
            }
            tracing::error!("no worker is running; connection dropped");
        }
        Err(error) => tracing::warn!(%error, "cannot hand a connection to a worker"),
    })
    .await;
    // Closing the queues tells each worker to drain and stop.
    drop(queues);
    for done in finished {
        let _ = done.await;
    }
    tracing::info!("all connections closed");
    Ok(())
}

async fn worker(
    apps: impl FnOnce() -> Arc<Apps>,
    options: Options,
    mut incoming: mpsc::UnboundedReceiver<std::net::TcpStream>,
) {
    let connections = Connections::new(apps(), options.tls.clone());
    while let Some(stream) = incoming.recv().await {
        match TcpStream::from_std(stream) {
            Ok(stream) => connections.spawn(stream),
            Err(error) => tracing::warn!(%error, "cannot register a connection"),
        }
    }
    connections.drain(options.shutdown_grace).await;
}

/// Accepts until `shutdown` completes, handing each connection to `serve`.
async fn accept_until(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    mut serve: impl FnMut(TcpStream),
) {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: back off rather than spin.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        serve(stream);
    }
    drop(listener);
    tracing::info!("stopped accepting connections; draining in-flight requests");
}

/// The connections of one runtime: how they are served and how they are drained.
struct Connections {
    apps: Arc<Apps>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<Builder<TokioExecutor>>,
    graceful: GracefulShutdown,
}

impl Connections {
    fn new(apps: Arc<Apps>, tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let mut builder = Builder::new(TokioExecutor::new());
        builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
        builder.http2().timer(TokioTimer::new());
        Self { apps, tls, builder: Arc::new(builder), graceful: GracefulShutdown::new() }
    }

    fn spawn(&self, stream: TcpStream) {
        let watcher = self.graceful.watcher();
        let apps = Arc::clone(&self.apps);
        let service = service_fn(move |request| apps.current().serve(request));
        let (tls, builder) = (self.tls.clone(), Arc::clone(&self.builder));
        tokio::spawn(async move {
            let result = match tls {
                None => {
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(error)) => {
                                tracing::debug!(%error, "tls handshake failed");
                                return;
                            }
                            Err(_) => {
                                tracing::debug!("tls handshake timed out");
                                return;
                            }
                        };
                    let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                    watcher.watch(connection.into_owned()).await
                }
            };
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
        });
    }

    /// Asks every connection to finish its in-flight requests and close, waiting at most `grace`.
    async fn drain(self, grace: Duration) {
        tokio::select! {
            () = self.graceful.shutdown() => {}
            () = tokio::time::sleep(grace) => {
                tracing::warn!(grace_secs = grace.as_secs_f64(), "shutdown grace elapsed with connections still open; closing them");
            }
        }
    }
}
