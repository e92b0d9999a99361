//! The accept loop: one tokio task per connection, hyper-util's auto builder (HTTP/1.1
//! or HTTP/2 by preface or ALPN), and graceful shutdown that drains in-flight work.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tollgate_http::App;

/// A TLS handshake that takes longer than this is abandoned.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that has not sent a full request head within this is disconnected.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

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

pub(crate) async fn serve(
    app: Arc<App>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);

    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
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
        spawn_connection(stream, Arc::clone(&app), tls.clone(), Arc::clone(&builder), &graceful);
    }

    drop(listener);
    let open = graceful.count();
    if open > 0 {
        tracing::info!(connections = open, grace_secs = grace.as_secs_f64(), "draining in-flight requests");
    }
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(grace) => tracing::warn!("shutdown grace elapsed with connections still open; closing them"),
    }
}

fn spawn_connection(
    stream: TcpStream,
    app: Arc<App>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    builder: Arc<Builder<TokioExecutor>>,
    graceful: &GracefulShutdown,
) {
    let watcher = graceful.watcher();
    let service = service_fn(move |request| Arc::clone(&app).serve(request));
    tokio::spawn(async move {
        let result = match tls {
            None => {
                let connection = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                watcher.watch(connection.into_owned()).await
            }
            Some(acceptor) => {
                let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
                {
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
