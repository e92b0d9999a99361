//! Watches the router's deployment board for cooldowns, a few times a second: a cooldown
//! that begins sets `litellm_deployment_state` to 2, counts `litellm_deployment_cooled_down`
//! and raises a `cooldown_deployment` alert; one that ends puts the state back.
//!
//! The watcher reads the board only through [`tollgate_router::Router::cooling_down`], so the router keeps
//! its internals (and its own way of sharing cooldowns between replicas) to itself. A
//! cooldown shorter than one look is missed; cooldowns last seconds (`cooldown_time`).

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tollgate_domain::Deployment;

use crate::alerts::Alerts;
use crate::live::Apps;
use crate::metrics::Metrics;

/// How often the board is looked at.
pub const WATCH_EVERY: Duration = Duration::from_millis(250);

/// Keeps the watcher running; dropping it stops the watcher at its next look.
#[derive(Debug)]
pub struct Watching {
    _alive: Arc<()>,
}

/// Starts watching the board of the routers `apps` hands out on the current runtime; the
/// deployments of each new configuration (reload, database models) are registered as it
/// comes.
pub fn spawn(apps: Arc<Apps>, metrics: Arc<Metrics>, alerts: Option<Arc<Alerts>>) -> Watching {
    let alive = Arc::new(());
    tokio::spawn(watch(Arc::downgrade(&alive), apps, metrics, alerts));
    Watching { _alive: alive }
}

async fn watch(alive: Weak<()>, apps: Arc<Apps>, metrics: Arc<Metrics>, alerts: Option<Arc<Alerts>>) {
    let mut cooling: HashMap<String, Arc<Deployment>> = HashMap::new();
    let mut registered = None;
    let mut ticks = tokio::time::interval(WATCH_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if alive.strong_count() == 0 {
            return;
        }
        let app = apps.current();
        if registered != Some(app.generation) {
            for deployment in app.router.deployments() {
                metrics.register_deployment(deployment);
            }
            registered = Some(app.generation);
        }
        let now: HashMap<String, (Arc<Deployment>, Duration)> = app
            .router
            .cooling_down()
            .into_iter()
            .map(|(deployment, remaining)| (deployment.id.clone(), (deployment, remaining)))
            .collect();
        for (id, (deployment, remaining)) in &now {
            if !cooling.contains_key(id) {
                metrics.record_cooldown(deployment, true);
                if let Some(alerts) = &alerts {
                    alerts.cooldown(deployment, *remaining);
                }
            }
        }
        for (id, deployment) in &cooling {
            if !now.contains_key(id) {
                metrics.record_cooldown(deployment, false);
            }
        }
        cooling = now.into_iter().map(|(id, (deployment, _))| (id, deployment)).collect();
    }
}
