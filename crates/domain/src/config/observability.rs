//! The observability settings of `config.yaml` and the environment: `callbacks` (Prometheus,
//! OpenTelemetry, Langfuse), the OTLP exporter's `OTEL_*` variables, `json_logs`, and
//! `general_settings.alerting` with its Slack and webhook URLs.

use std::time::Duration;

use serde_json::{Map, Value};

use super::{ConfigError, Reader, invalid, string_list};
use crate::secret::Secret;

/// Where Langfuse lives when neither `langfuse_host` nor `LANGFUSE_HOST` says.
pub const DEFAULT_LANGFUSE_HOST: &str = "https://cloud.langfuse.com";
/// The OTLP/HTTP collector of the OpenTelemetry defaults.
const DEFAULT_OTLP_HTTP: &str = "http://localhost:4318";
/// The OTLP/gRPC collector of the OpenTelemetry defaults.
const DEFAULT_OTLP_GRPC: &str = "http://localhost:4317";

/// Metrics, traces, request logs and alerts.
#[derive(Debug, Clone, Default)]
pub struct ObservabilityConfig {
    /// `callbacks: ["otel"]`: spans to an OTLP collector, per the `OTEL_*` variables.
    pub otel: Option<OtlpConfig>,
    /// `success_callback: ["langfuse"]` (or `langfuse_otel`): spans to Langfuse's OTLP endpoint.
    pub langfuse: Option<OtlpConfig>,
    /// `litellm_settings.json_logs` or `JSON_LOGS=true`: log lines as JSON.
    pub json_logs: bool,
    /// Whether prompts and answers go into spans (off with
    /// `litellm_settings.turn_off_message_logging: true`).
    pub log_messages: bool,
    /// `general_settings.alerting`.
    pub alerting: Option<AlertingConfig>,
}

/// One OTLP trace exporter.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector: for HTTP the full traces URL (`…/v1/traces`), for gRPC its origin.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Extra request headers (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_HEADERS`); values are
    /// credentials as often as not.
    pub headers: Vec<(String, Secret)>,
    /// HTTP basic credentials (Langfuse's public and secret key).
    pub basic_auth: Option<(String, Secret)>,
    /// `service.name` of the spans' resource.
    pub service_name: String,
    /// `OTEL_RESOURCE_ATTRIBUTES`, as `key=value` pairs.
    pub resource: Vec<(String, String)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// `http/protobuf`
    HttpProtobuf,
    /// `grpc`
    Grpc,
}

/// `general_settings.alerting` and its companions.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    /// `alerting: ["slack"]` with `SLACK_WEBHOOK_URL` (or `ALERTING_WEBHOOK_URL`).
    pub slack: Option<Secret>,
    /// `alerting: ["webhook"]` with `WEBHOOK_URL`: LiteLLM's webhook event JSON.
    pub webhook: Option<Secret>,
    /// `alert_types`: the kinds sent; `None` sends every kind.
    pub alert_types: Option<Vec<String>>,
    /// `alerting_args.budget_alert_ttl`: one budget alert per key or team within this.
    pub budget_alert_ttl: Duration,
    /// `alerting_args.outage_alert_ttl`: one cooldown or outage alert per deployment or
    /// provider within this, and the window outage failures are counted in.
    pub outage_alert_ttl: Duration,
    /// `alerting_args.minor_outage_alert_threshold`: failures of one provider within the
    /// window that raise a (minor) outage alert.
    pub minor_outage_threshold: u32,
    /// `alerting_args.major_outage_alert_threshold`.
    pub major_outage_threshold: u32,
}

/// The alert kinds Tollgate sends, by LiteLLM's `alert_types` names.
pub const ALERT_TYPES: &[&str] = &["budget_alerts", "cooldown_deployment", "outage_alerts"];

impl AlertingConfig {
    /// Whether `kind` (one of [`ALERT_TYPES`]) is to be sent.
    pub fn wants(&self, kind: &str) -> bool {
        self.alert_types.as_ref().is_none_or(|types| types.iter().any(|t| t == kind))
    }
}

impl Reader<'_> {
    /// Reads the observability settings; `callbacks` names nothing else than what is built,
    /// anything else is reported as unsupported.
    pub(super) fn observability(
        &mut self,
        litellm_settings: &Map<String, Value>,
        general_settings: &Map<String, Value>,
    ) -> Result<ObservabilityConfig, ConfigError> {
        let mut otel = false;
        let mut langfuse = false;
        for key in ["callbacks", "success_callback", "failure_callback"] {
            let path = format!("litellm_settings.{key}");
            if let Some(value) = litellm_settings.get(key).filter(|v| !v.is_null()) {
                for name in string_list(value, &path)? {
                    match name.as_str() {
                        // Metrics are always on.
                        "prometheus" => {}
                        "otel" => otel = true,
                        "langfuse" | "langfuse_otel" => langfuse = true,
                        _ => {
                            self.verdicts.ignored(format!("{path}={name}"), "no such callback in this build")
                        }
                    }
                }
            }
        }
        let flag = |key: &str| -> Result<Option<bool>, ConfigError> {
            match litellm_settings.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(on)) => Ok(Some(*on)),
                Some(_) => Err(invalid(&format!("litellm_settings.{key}"), "must be true or false")),
            }
        };
        let json_logs = match flag("json_logs")? {
            Some(on) => on,
            None => self.env.var("JSON_LOGS").is_some_and(|v| is_true(&v)),
        };
        let log_messages = !flag("turn_off_message_logging")?.unwrap_or(false);
        let otel = if otel { Some(self.otel_exporter()?) } else { None };
        let langfuse = if langfuse { Some(self.langfuse_exporter(litellm_settings)?) } else { None };
        let alerting = self.alerting(general_settings)?;
        Ok(ObservabilityConfig { otel, langfuse, json_logs, log_messages, alerting })
    }

    /// The OTLP exporter from LiteLLM's `OTEL_EXPORTER` / `OTEL_ENDPOINT` / `OTEL_HEADERS`,
    /// else the standard `OTEL_EXPORTER_OTLP_*` variables.
    fn otel_exporter(&self) -> Result<OtlpConfig, ConfigError> {
        let var = |name: &str| self.env.var(name).filter(|v| !v.trim().is_empty());
        let protocol = match (
            var("OTEL_EXPORTER"),
            var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"),
            var("OTEL_EXPORTER_OTLP_PROTOCOL"),
        ) {
            (Some(exporter), _, _) => match exporter.as_str() {
                "otlp_http" | "otlp" => OtlpProtocol::HttpProtobuf,
                "otlp_grpc" | "grpc" => OtlpProtocol::Grpc,
                other => {
                    return Err(invalid(
                        "OTEL_EXPORTER",
                        format!("'{other}' is not supported (use otlp_http or otlp_grpc)"),
                    ));
                }
            },
            (None, Some(protocol), _) | (None, None, Some(protocol)) => match protocol.as_str() {
                "http/protobuf" => OtlpProtocol::HttpProtobuf,
                "grpc" => OtlpProtocol::Grpc,
                other => {
                    return Err(invalid(
                        "OTEL_EXPORTER_OTLP_PROTOCOL",
                        format!("'{other}' is not supported (use http/protobuf or grpc)"),
                    ));
                }
            },
            (None, None, None) => OtlpProtocol::HttpProtobuf,
        };
        // A traces endpoint is the URL itself; a general one is the collector's base.
        let endpoint = match (
            var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            var("OTEL_ENDPOINT"),
            var("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(traces), _, _) => traces,
            (None, Some(base), _) | (None, None, Some(base)) => traces_url(&base, protocol),
            (None, None, None) => match protocol {
                OtlpProtocol::HttpProtobuf => traces_url(DEFAULT_OTLP_HTTP, protocol),
                OtlpProtocol::Grpc => DEFAULT_OTLP_GRPC.to_owned(),
            },
        };
        check_url(&endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT")?;
        let mut headers = Vec::new();
        for name in ["OTEL_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"] {
            if let Some(list) = var(name) {
                headers.extend(header_list(&list, name)?);
            }
        }
        Ok(OtlpConfig {
            endpoint,
            protocol,
            headers,
            basic_auth: None,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "litellm".to_owned()),
            resource: var("OTEL_RESOURCE_ATTRIBUTES").map(|list| resource_list(&list)).unwrap_or_default(),
        })
    }

    /// Langfuse's OTLP endpoint (`<host>/api/public/otel/v1/traces`) with its keys as basic
    /// credentials.
    fn langfuse_exporter(&self, litellm_settings: &Map<String, Value>) -> Result<OtlpConfig, ConfigError> {
        let setting = |key: &str, variable: &str| -> Result<Option<String>, ConfigError> {
            Ok(self
                .string(litellm_settings, key, "litellm_settings")?
                .or_else(|| self.env.var(variable))
                .filter(|v| !v.trim().is_empty()))
        };
        let host = setting("langfuse_host", "LANGFUSE_HOST")?
            .or_else(|| self.env.var("LANGFUSE_OTEL_HOST"))
            .unwrap_or_else(|| DEFAULT_LANGFUSE_HOST.to_owned());
        let host = if host.contains("://") { host } else { format!("https://{host}") };
        check_url(&host, "litellm_settings.langfuse_host")?;
        let missing = |key: &str, variable: &str| {
            invalid(
                &format!("litellm_settings.{key}"),
                format!("langfuse needs it: set {key} or the {variable} environment variable"),
            )
        };
        let public = setting("langfuse_public_key", "LANGFUSE_PUBLIC_KEY")?
            .ok_or_else(|| missing("langfuse_public_key", "LANGFUSE_PUBLIC_KEY"))?;
        let secret = setting("langfuse_secret_key", "LANGFUSE_SECRET_KEY")?
            .ok_or_else(|| missing("langfuse_secret_key", "LANGFUSE_SECRET_KEY"))?;
        Ok(OtlpConfig {
            endpoint: format!("{}/api/public/otel/v1/traces", host.trim_end_matches('/')),
            protocol: OtlpProtocol::HttpProtobuf,
            headers: Vec::new(),
            basic_auth: Some((public, Secret::new(secret))),
            service_name: self.env.var("OTEL_SERVICE_NAME").unwrap_or_else(|| "litellm".to_owned()),
            resource: Vec::new(),
        })
    }

    fn alerting(
        &mut self,
        general_settings: &Map<String, Value>,
    ) -> Result<Option<AlertingConfig>, ConfigError> {
        let Some(value) = general_settings.get("alerting").filter(|v| !v.is_null()) else { return Ok(None) };
        let mut slack = None;
        let mut webhook = None;
        let url = |names: &[&str]| {
            names.iter().find_map(|name| self.env.var(name).filter(|v| !v.trim().is_empty()))
        };
        for name in string_list(value, "general_settings.alerting")? {
            match name.as_str() {
                "slack" => {
                    let found = url(&["SLACK_WEBHOOK_URL", "ALERTING_WEBHOOK_URL"]).ok_or_else(|| {
                        invalid("general_settings.alerting", "slack alerts need SLACK_WEBHOOK_URL")
                    })?;
                    check_url(&found, "SLACK_WEBHOOK_URL")?;
                    slack = Some(Secret::new(found));
                }
                "webhook" => {
                    let found = url(&["WEBHOOK_URL"]).ok_or_else(|| {
                        invalid("general_settings.alerting", "webhook alerts need WEBHOOK_URL")
                    })?;
                    check_url(&found, "WEBHOOK_URL")?;
                    webhook = Some(Secret::new(found));
                }
                other => self
                    .verdicts
                    .ignored(format!("general_settings.alerting={other}"), "only slack and webhook alerts"),
            }
        }
        let alert_types = match general_settings.get("alert_types").filter(|v| !v.is_null()) {
            None => None,
            Some(value) => {
                let types = string_list(value, "general_settings.alert_types")?;
                for kind in &types {
                    if !ALERT_TYPES.contains(&kind.as_str()) {
                        self.verdicts.ignored(
                            format!("general_settings.alert_types={kind}"),
                            "this build sends budget_alerts, cooldown_deployment and outage_alerts",
                        );
                    }
                }
                Some(types)
            }
        };
        let empty = Map::new();
        let args = match general_settings.get("alerting_args") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(args)) => args,
            Some(_) => return Err(invalid("general_settings.alerting_args", "must be a mapping")),
        };
        let path = "general_settings.alerting_args";
        let budget_alert_ttl =
            self.seconds(args, "budget_alert_ttl", path)?.unwrap_or(Duration::from_secs(86_400));
        let outage_alert_ttl =
            self.seconds(args, "outage_alert_ttl", path)?.unwrap_or(Duration::from_secs(60));
        let count = |key: &str, default: u32| -> Result<u32, ConfigError> {
            match self.number(args, key, path)? {
                None => Ok(default),
                Some(n) if n >= 1.0 && n.fract() == 0.0 && n <= f64::from(u32::MAX) => Ok(n as u32),
                Some(_) => Err(invalid(&format!("{path}.{key}"), "must be a whole number of at least 1")),
            }
        };
        let minor_outage_threshold = count("minor_outage_alert_threshold", 5)?;
        let major_outage_threshold = count("major_outage_alert_threshold", 10)?.max(minor_outage_threshold);
        self.verdicts.classify(
            args,
            path,
            &[
                "budget_alert_ttl",
                "outage_alert_ttl",
                "minor_outage_alert_threshold",
                "major_outage_alert_threshold",
            ],
            &[],
        );
        if slack.is_none() && webhook.is_none() {
            return Ok(None);
        }
        Ok(Some(AlertingConfig {
            slack,
            webhook,
            alert_types,
            budget_alert_ttl,
            outage_alert_ttl,
            minor_outage_threshold,
            major_outage_threshold,
        }))
    }
}

fn is_true(value: &str) -> bool {
    matches!(value.trim().to_ascii_lowercase().as_str(), "1" | "true" | "yes")
}

/// The traces URL of a collector at `base`: `/v1/traces` added for HTTP unless present.
fn traces_url(base: &str, protocol: OtlpProtocol) -> String {
    let base = base.trim().trim_end_matches('/');
    match protocol {
        OtlpProtocol::Grpc => base.to_owned(),
        OtlpProtocol::HttpProtobuf if base.ends_with("/v1/traces") => base.to_owned(),
        OtlpProtocol::HttpProtobuf => format!("{base}/v1/traces"),
    }
}

fn check_url(url: &str, path: &str) -> Result<(), ConfigError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        // The URL may hold a token (Slack's do): name the setting, not the value.
        Err(invalid(path, "must be an http:// or https:// URL"))
    }
}

/// `name=value,name2=value2` (W3C baggage style, as the OTLP variables use), values
/// percent-decoded.
fn header_list(list: &str, path: &str) -> Result<Vec<(String, Secret)>, ConfigError> {
    list.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| invalid(path, "must be name=value pairs separated by commas"))?;
            Ok((name.trim().to_owned(), Secret::new(percent_decode(value.trim()))))
        })
        .collect()
}

fn resource_list(list: &str) -> Vec<(String, String)> {
    list.split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(name, value)| (name.trim().to_owned(), percent_decode(value.trim())))
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use crate::config::GatewayConfig;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn the_seeds_langfuse_settings_read_the_keys_from_the_environment() {
        let yaml = "litellm_settings:
  success_callback: [\"langfuse\"]
  failure_callback: [\"langfuse\"]
  langfuse_host: https://langfuse.example.internal/
  langfuse_public_key: os.environ/LANGFUSE_PUBLIC_KEY
  langfuse_secret_key: os.environ/LANGFUSE_SECRET_KEY
";
        let config = GatewayConfig::from_yaml(
            yaml,
            &env(&[("LANGFUSE_PUBLIC_KEY", "pk-lf-1"), ("LANGFUSE_SECRET_KEY", "sk-lf-2")]),
        )
        .unwrap();
        assert!(config.unsupported.is_empty(), "{:?}", config.unsupported);
        let langfuse = config.observability.langfuse.unwrap();
        assert_eq!(langfuse.endpoint, "https://langfuse.example.internal/api/public/otel/v1/traces");
        let (public, secret) = langfuse.basic_auth.unwrap();
        assert_eq!((public.as_str(), secret.expose()), ("pk-lf-1", "sk-lf-2"));
        assert!(config.observability.otel.is_none());

        let missing = GatewayConfig::from_yaml("litellm_settings: {success_callback: [langfuse]}", &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("LANGFUSE_PUBLIC_KEY"), "{missing}");
    }

    #[test]
    fn otel_reads_litellm_and_standard_variables() {
        let yaml = "litellm_settings: {callbacks: [otel, prometheus]}";
        let litellm = GatewayConfig::from_yaml(
            yaml,
            &env(&[
                ("OTEL_EXPORTER", "otlp_grpc"),
                ("OTEL_ENDPOINT", "http://collector:4317"),
                ("OTEL_HEADERS", "x-token=a%3Db,tenant=t1"),
            ]),
        )
        .unwrap();
        let otel = litellm.observability.otel.unwrap();
        assert_eq!((otel.protocol, otel.endpoint.as_str()), (OtlpProtocol::Grpc, "http://collector:4317"));
        let headers: Vec<(&str, &str)> = otel.headers.iter().map(|(n, v)| (n.as_str(), v.expose())).collect();
        assert_eq!(headers, [("x-token", "a=b"), ("tenant", "t1")]);
        assert_eq!(otel.service_name, "litellm");

        let standard = GatewayConfig::from_yaml(
            yaml,
            &env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://tempo:4318/"), ("OTEL_SERVICE_NAME", "gateway")]),
        )
        .unwrap();
        let otel = standard.observability.otel.unwrap();
        assert_eq!(otel.endpoint, "http://tempo:4318/v1/traces");
        assert_eq!((otel.protocol, otel.service_name.as_str()), (OtlpProtocol::HttpProtobuf, "gateway"));

        let wrong = GatewayConfig::from_yaml(yaml, &env(&[("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")]));
        assert!(wrong.unwrap_err().to_string().contains("http/json"));
    }

    #[test]
    fn alerting_needs_its_urls_and_reads_litellms_args() {
        let yaml = "general_settings:
  alerting: [slack, webhook]
  alert_types: [budget_alerts, daily_reports]
  alerting_args: {budget_alert_ttl: 600, outage_alert_ttl: 30, minor_outage_alert_threshold: 3}
";
        let config = GatewayConfig::from_yaml(
            yaml,
            &env(&[
                ("SLACK_WEBHOOK_URL", "https://hooks.slack.example/T/B/x"),
                ("WEBHOOK_URL", "http://127.0.0.1:9/hook"),
            ]),
        )
        .unwrap();
        let alerting = config.observability.alerting.unwrap();
        assert_eq!(alerting.slack.unwrap().expose(), "https://hooks.slack.example/T/B/x");
        assert_eq!(alerting.budget_alert_ttl, Duration::from_secs(600));
        assert_eq!(alerting.outage_alert_ttl, Duration::from_secs(30));
        assert_eq!((alerting.minor_outage_threshold, alerting.major_outage_threshold), (3, 10));
        assert!(alerting.alert_types.as_ref().is_some_and(|t| t.len() == 2));
        assert_eq!(
            config.unsupported,
            [
                "general_settings.alert_types=daily_reports (this build sends budget_alerts, cooldown_deployment and outage_alerts)"
            ]
        );

        let no_url = GatewayConfig::from_yaml("general_settings: {alerting: [slack]}", &env(&[]));
        assert!(no_url.unwrap_err().to_string().contains("SLACK_WEBHOOK_URL"));
    }

    #[test]
    fn json_logs_from_the_config_or_the_environment() {
        let on = GatewayConfig::from_yaml("litellm_settings: {json_logs: true}", &env(&[])).unwrap();
        assert!(on.observability.json_logs && on.observability.log_messages);
        let from_env = GatewayConfig::from_yaml("", &env(&[("JSON_LOGS", "True")])).unwrap();
        assert!(from_env.observability.json_logs);
        let quiet = GatewayConfig::from_yaml("litellm_settings: {turn_off_message_logging: true}", &env(&[]))
            .unwrap();
        assert!(!quiet.observability.log_messages);
    }
}
