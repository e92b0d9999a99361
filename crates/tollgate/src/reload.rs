//! Config reload while serving: on SIGHUP and when the config file changes, the file is read
//! and checked again; a valid one swaps in (model list, router settings), an invalid one is
//! refused with one error line and the running config stays. Requests in flight finish on
//! the config they started with (see `tollgate_http::live`).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tollgate_domain::GatewayConfig;
use tollgate_domain::config::ProcessEnv;
use tollgate_http::live::LiveConfig;

use crate::Error;

/// How long the file must stay quiet after a change before it is read: editors and
/// `kubectl` write, rename and touch in bursts.
const SETTLE: Duration = Duration::from_millis(200);

/// Swaps a new config into a running gateway ([`crate::Gateway::reloader`]). Cheap to clone.
#[derive(Clone)]
pub struct Reloader {
    live: Arc<LiveConfig>,
}

impl Reloader {
    pub(crate) fn new(live: Arc<LiveConfig>) -> Self {
        Self { live }
    }

    /// Swaps in `config`: its model list, router settings, deployment defaults and
    /// `require_auth_for_metrics_endpoint`. Settings that need a restart keep their running
    /// value and are named in one warning line.
    pub fn reload(&self, config: GatewayConfig) {
        let models = config.deployments.len();
        if !config.unsupported.is_empty() {
            tracing::warn!(
                settings = %config.unsupported.join(", "),
                "config settings this build of tollgate does not support yet are ignored"
            );
        }
        let needs_restart = self.live.replace_file_config(config);
        if !needs_restart.is_empty() {
            tracing::warn!(
                settings = %needs_restart.join(", "),
                "config reloaded, but these changed settings take effect only after a restart"
            );
        }
        tracing::info!(models, generation = self.live.generation(), "config reloaded");
    }

    /// Reads and checks the file at `path`, then swaps it in. A file that cannot be read or
    /// is not a valid config is refused: one error line names the problem, the running
    /// config stays, and the error comes back.
    pub fn reload_file(&self, path: &Path) -> Result<(), Error> {
        let read = std::fs::read_to_string(path)
            .map_err(Error::from)
            .and_then(|text| GatewayConfig::from_yaml(&text, &ProcessEnv).map_err(Error::from));
        match read {
            Ok(config) => {
                self.reload(config);
                Ok(())
            }
            Err(error) => {
                tracing::error!(path = %path.display(), %error, "config reload refused; the running config stays");
                Err(error)
            }
        }
    }

    /// Reloads `path` on every SIGHUP and every change to the file (or to its directory,
    /// so that an editor's or a Kubernetes ConfigMap's replace-by-rename is seen) while the
    /// returned future runs. The watch and the SIGHUP handler start at this call, so a
    /// change made right after it is not missed. A change that leaves the file's text as it
    /// was is no reload.
    pub fn watch_file(self, path: PathBuf) -> impl Future<Output = ()> + Send + 'static {
        let (changed, mut changes) = tokio::sync::mpsc::unbounded_channel::<()>();
        // notify calls back on a thread of its own: hand the news to the task.
        let watcher = start_watcher(&path, move || {
            let _ = changed.send(());
        });
        let mut hangups = tokio::runtime::Handle::try_current().ok().and_then(|_| hangup_signals());
        let mut applied = std::fs::read_to_string(&path).ok();
        async move {
            let _watcher = watcher;
            loop {
                let signalled = tokio::select! {
                    Some(()) = changes.recv() => false,
                    Some(()) = next_hangup(&mut hangups) => true,
                    else => return,
                };
                if signalled {
                    tracing::info!(path = %path.display(), "SIGHUP received, reloading the config");
                } else {
                    // Let the burst of events of one save settle.
                    while let Ok(Some(())) = tokio::time::timeout(SETTLE, changes.recv()).await {}
                    let text = std::fs::read_to_string(&path).ok();
                    if text.is_none() || text == applied {
                        continue;
                    }
                    tracing::info!(path = %path.display(), "config file changed, reloading");
                }
                applied = std::fs::read_to_string(&path).ok();
                let _ = self.reload_file(&path);
            }
        }
    }
}

/// Watches the directory holding `path` (a file replaced by rename stays seen); `None`
/// (logged) when the platform refuses, SIGHUP then still works.
fn start_watcher(path: &Path, on_change: impl Fn() + Send + 'static) -> Option<notify::RecommendedWatcher> {
    use notify::Watcher;
    let directory = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if event.is_ok_and(|event| !event.kind.is_access()) {
            on_change();
        }
    });
    let started = watcher.and_then(|mut watcher| {
        watcher.watch(&directory, notify::RecursiveMode::NonRecursive).map(|()| watcher)
    });
    match started {
        Ok(watcher) => Some(watcher),
        Err(error) => {
            tracing::warn!(%error, path = %directory.display(), "cannot watch the config file; reload with SIGHUP");
            None
        }
    }
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

fn hangup_signals() -> Hangups {
    #[cfg(unix)]
    {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .inspect_err(|error| tracing::warn!(%error, "cannot listen for SIGHUP"))
            .ok()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    if let Some(signal) = hangups {
        return signal.recv().await;
    }
    let _ = hangups;
    std::future::pending().await
}
