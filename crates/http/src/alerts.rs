//! Alerts to Slack (`alerting: ["slack"]`, `SLACK_WEBHOOK_URL`) and to a generic webhook
//! (`alerting: ["webhook"]`, `WEBHOOK_URL`, LiteLLM's webhook event JSON): a key or team
//! crossing its budget or its soft budget, a deployment cooling down, and a provider failing
//! often within a short window (an outage). Each alert is sent once per subject within its
//! window (`alerting_args.budget_alert_ttl`, `outage_alert_ttl`), so a crossing is one alert,
//! not one per request after it.
//!
//! Raising an alert only queues it: a sender task on the runtime that built the gateway
//! posts it, and a failed post is logged (without the URL, which is a credential for Slack)
//! and counted, never retried into a flood.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tollgate_domain::Deployment;
use tollgate_domain::config::AlertingConfig;

use crate::metrics::Metrics;
use crate::tenancy::Principal;

/// Alerts waiting for the sender; past this, new ones are dropped (and counted).
const QUEUE: usize = 1024;
/// How long one post may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// Dedup entries kept before old ones are swept.
const MAX_REMEMBERED: usize = 10_000;

/// One alert, as both channels send it.
#[derive(Debug, Clone)]
struct Alert {
    /// LiteLLM's `alert_types` name: `budget_alerts`, `cooldown_deployment`, `outage_alerts`.
    alert_type: &'static str,
    /// The one line Slack shows.
    text: String,
    /// The webhook's JSON.
    event: Value,
}

/// The alerting of one gateway.
pub struct Alerts {
    config: AlertingConfig,
    queue: mpsc::Sender<Alert>,
    /// When each subject was last alerted on.
    sent: Mutex<HashMap<String, Instant>>,
    /// Upstream failures per provider within the outage window.
    failures: Mutex<HashMap<String, (Instant, u32)>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Alerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Alerts")
    }
}

impl Alerts {
    /// Starts the sender on the current runtime.
    pub fn start(config: AlertingConfig, metrics: Arc<Metrics>) -> Arc<Self> {
        let (queue, receiver) = mpsc::channel(QUEUE);
        tokio::spawn(send_all(config.clone(), receiver, Arc::clone(&metrics)));
        Arc::new(Self { config, queue, sent: Mutex::default(), failures: Mutex::default(), metrics })
    }

    /// Checks a key's and its team's budgets after a request that spent: an alert for each
    /// budget or soft budget that its spend has reached.
    pub(crate) fn budgets(&self, principal: &Principal, key_spend: Option<f64>, team_spend: Option<f64>) {
        if !self.config.wants("budget_alerts") {
            return;
        }
        let key = &principal.key;
        let key_name = key.key_alias.clone().unwrap_or_else(|| key.key_name.clone().unwrap_or_default());
        if let Some(spend) = key_spend {
            for (event, limit) in
                [("budget_crossed", key.max_budget), ("soft_budget_crossed", principal.key_soft_budget())]
            {
                let Some(limit) = limit.filter(|limit| spend >= *limit) else { continue };
                let subject = format!("{event}:key:{}", key.token);
                let label = if event == "budget_crossed" { "Budget Crossed" } else { "Soft Budget Crossed" };
                self.raise(
                    &subject,
                    self.config.budget_alert_ttl,
                    Alert {
                        alert_type: "budget_alerts",
                        text: format!(
                            "Key {label}: key '{key_name}' has spent ${spend:.4} of its {} ${limit:.4}",
                            if event == "budget_crossed" { "budget" } else { "soft budget" }
                        ),
                        event: json!({
                            "spend": spend,
                            "max_budget": key.max_budget,
                            "soft_budget": principal.key_soft_budget(),
                            "token": key.token,
                            "user_id": key.user_id,
                            "team_id": key.team_id,
                            "team_alias": principal.team.as_ref().and_then(|t| t.team_alias.clone()),
                            "user_email": principal.user.as_ref().and_then(|u| u.user_email.clone()),
                            "key_alias": key.key_alias,
                            "projected_exceeded_date": null,
                            "projected_spend": null,
                            "event": event,
                            "event_group": "key",
                            "event_message": format!("Key {label}"),
                        }),
                    },
                );
            }
        }
        if let (Some(spend), Some(team)) = (team_spend, &principal.team) {
            for (event, limit) in
                [("budget_crossed", team.max_budget), ("soft_budget_crossed", team.soft_budget)]
            {
                let Some(limit) = limit.filter(|limit| spend >= *limit) else { continue };
                let subject = format!("{event}:team:{}", team.team_id);
                let label = if event == "budget_crossed" { "Budget Crossed" } else { "Soft Budget Crossed" };
                let name = team.team_alias.clone().unwrap_or_else(|| team.team_id.clone());
                self.raise(
                    &subject,
                    self.config.budget_alert_ttl,
                    Alert {
                        alert_type: "budget_alerts",
                        text: format!(
                            "Team {label}: team '{name}' has spent ${spend:.4} of its {} ${limit:.4}",
                            if event == "budget_crossed" { "budget" } else { "soft budget" }
                        ),
                        event: json!({
                            "spend": spend,
                            "max_budget": team.max_budget,
                            "soft_budget": team.soft_budget,
                            "token": null,
                            "user_id": null,
                            "team_id": team.team_id,
                            "team_alias": team.team_alias,
                            "user_email": null,
                            "key_alias": null,
                            "projected_exceeded_date": null,
                            "projected_spend": null,
                            "event": event,
                            "event_group": "team",
                            "event_message": format!("Team {label}"),
                        }),
                    },
                );
            }
        }
    }

    /// A deployment began cooling down for `remaining`.
    pub(crate) fn cooldown(&self, deployment: &Deployment, remaining: Duration) {
        if !self.config.wants("cooldown_deployment") {
            return;
        }
        let subject = format!("cooldown:{}", deployment.id);
        let model = deployment.litellm_model();
        self.raise(&subject, self.config.outage_alert_ttl, Alert {
            alert_type: "cooldown_deployment",
            text: format!(
                "Deployment cooling down: '{model}' (model group '{}', id {}) gets no requests for {:.0}s",
                deployment.model_name,
                deployment.id,
                remaining.as_secs_f64().ceil()
            ),
            event: json!({
                "event": "cooldown_deployment",
                "event_group": "deployment",
                "event_message": "Deployment cooling down",
                "model_group": deployment.model_name,
                "litellm_model_name": model,
                "model_id": deployment.id,
                "api_provider": deployment.provider_prefix(),
                "cooldown_seconds": remaining.as_secs_f64(),
            }),
        });
    }

    /// An upstream call on `deployment` failed with `status`: a provider whose failures
    /// within the outage window reach the minor (then the major) threshold raises an alert.
    pub(crate) fn upstream_failure(&self, deployment: &Deployment, status: u16) {
        // Only failures that say the provider is in trouble: its 5xx, timeouts.
        if !(status >= 500 || status == 408) || !self.config.wants("outage_alerts") {
            return;
        }
        let provider = deployment.api_base.clone().unwrap_or_else(|| deployment.provider_prefix().to_owned());
        let window = self.config.outage_alert_ttl;
        let count = {
            let mut failures = self.failures.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let entry = failures.entry(provider.clone()).or_insert((now, 0));
            if now.duration_since(entry.0) >= window {
                *entry = (now, 0);
            }
            entry.1 += 1;
            entry.1
        };
        let level = if count == self.config.major_outage_threshold {
            "major"
        } else if count == self.config.minor_outage_threshold {
            "minor"
        } else {
            return;
        };
        let subject = format!("outage:{level}:{provider}");
        self.raise(&subject, window, Alert {
            alert_type: "outage_alerts",
            text: format!(
                "{} outage: provider '{}' ({provider_name}) failed {count} times within {:.0}s, last with status {status}",
                if level == "major" { "Major" } else { "Minor" },
                deployment.provider_prefix(),
                window.as_secs_f64(),
                provider_name = deployment.model_name,
            ),
            event: json!({
                "event": format!("{level}_outage"),
                "event_group": "proxy",
                "event_message": format!("{} outage", if level == "major" { "Major" } else { "Minor" }),
                "api_provider": deployment.provider_prefix(),
                "api_base": deployment.api_base,
                "model_group": deployment.model_name,
                "failures": count,
                "window_seconds": window.as_secs_f64(),
                "last_status": status,
            }),
        });
    }

    /// Queues `alert` unless `subject` was alerted on within `window`.
    fn raise(&self, subject: &str, window: Duration, alert: Alert) {
        {
            let mut sent = self.sent.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            if sent.get(subject).is_some_and(|at| now.duration_since(*at) < window) {
                return;
            }
            if sent.len() >= MAX_REMEMBERED {
                sent.retain(|_, at| now.duration_since(*at) < window);
            }
            sent.insert(subject.to_owned(), now);
        }
        tracing::warn!(alert_type = alert.alert_type, "{}", alert.text);
        if self.queue.try_send(alert.clone()).is_err() {
            self.metrics.record_alert(alert.alert_type, "dropped");
        }
    }
}

/// Posts queued alerts to each configured channel, one at a time.
async fn send_all(config: AlertingConfig, mut queue: mpsc::Receiver<Alert>, metrics: Arc<Metrics>) {
    let client = tollgate_providers::build_http_client();
    while let Some(alert) = queue.recv().await {
        if let Some(url) = &config.slack {
            let body = json!({"text": alert.text});
            post(&client, url.expose(), &body, "slack").await;
            metrics.record_alert(alert.alert_type, "slack");
        }
        if let Some(url) = &config.webhook {
            post(&client, url.expose(), &alert.event, "webhook").await;
            metrics.record_alert(alert.alert_type, "webhook");
        }
    }
}

async fn post(client: &tollgate_providers::HttpClient, url: &str, body: &Value, channel: &str) {
    let request = http::Request::post(url)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())));
    let Ok(request) = request else {
        tracing::warn!(channel, "the alert URL is not a valid URL");
        return;
    };
    match tokio::time::timeout(POST_TIMEOUT, client.request(request)).await {
        Ok(Ok(response)) if response.status().is_success() => {
            let _ = response.into_body().collect().await;
        }
        Ok(Ok(response)) => tracing::warn!(channel, status = response.status().as_u16(), "alert refused"),
        Ok(Err(error)) => tracing::warn!(channel, %error, "could not send an alert"),
        Err(_) => tracing::warn!(channel, "sending an alert timed out"),
    }
}
