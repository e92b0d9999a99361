//! Test harness: a real gateway on 127.0.0.1:0 and a real HTTP client to call it.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tollgate::{Gateway, GatewayConfig};

pub const MASTER_KEY: &str = "sk-test-master";
pub const UPSTREAM_KEY: &str = "sk-upstream-secret-42";

pub struct TestGateway {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<Result<(), tollgate::Error>>>,
}

impl TestGateway {
    pub async fn start(yaml: &str) -> Self {
        Self::start_with(yaml, |g| g).await
    }

    pub async fn start_with(yaml: &str, adjust: impl FnOnce(Gateway) -> Gateway) -> Self {
        Self::start_env(yaml, &HashMap::new(), adjust).await
    }

    /// Starts a gateway whose config reads these environment variables.
    pub async fn start_env(
        yaml: &str,
        env: &HashMap<String, String>,
        adjust: impl FnOnce(Gateway) -> Gateway,
    ) -> Self {
        let mut config = GatewayConfig::from_yaml(yaml, env).expect("test config is valid");
        // Each gateway keeps its virtual keys in a database of its own, not in the repo.
        if config.master_key.is_some() && config.database_url.is_none() {
            config.database_url = Some(tollgate_domain::Secret::new(temp_sqlite_url()));
        }
        let gateway = adjust(Gateway::from_config(config).await.expect("gateway builds"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(gateway.serve(listener, async {
            let _ = rx.await;
        }));
        Self { addr, shutdown: Some(tx), task: Some(task) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Begins graceful shutdown and returns the serve task to await.
    pub fn begin_shutdown(&mut self) -> JoinHandle<Result<(), tollgate::Error>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().expect("shutdown once")
    }
}

/// A fresh SQLite file under the system temp directory.
pub fn temp_sqlite_url() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("tollgate-test-{}-{n}.db", std::process::id()));
    let _ = std::fs::remove_file(&path);
    format!("sqlite://{}?mode=rwc", path.display())
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

/// The config used by most tests: one alias on the mock upstream, a master key.
pub fn mock_config(base_url: &str, extra_params: &str) -> String {
    format!(
        "model_list:
  - model_name: general-purpose
    litellm_params:
      model: openai/mock-model
      api_base: {base_url}
      api_key: {UPSTREAM_KEY}
      {extra_params}
  - model_name: text-embedding-3-small
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: {base_url}
      api_key: {UPSTREAM_KEY}
general_settings:
  master_key: {MASTER_KEY}
"
    )
}

pub type TestClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_else(|| panic!("no header {name}"))
    }

    /// The `data:` payloads of an SSE body, in order.
    pub fn events(&self) -> Vec<String> {
        sse_events(&self.body)
    }
}

pub fn sse_events(body: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(body)
        .split("\n\n")
        .filter_map(|event| event.trim().strip_prefix("data:").map(|d| d.trim().to_owned()))
        .collect()
}

pub async fn send(request: http::Request<Full<Bytes>>) -> Reply {
    send_on(&client(), request).await
}

/// Sends on `http`, whose pool keeps connections alive between requests.
pub async fn send_on(http: &TestClient, request: http::Request<Full<Bytes>>) -> Reply {
    let response = tokio::time::timeout(Duration::from_secs(10), http.request(request))
        .await
        .expect("gateway answered in time")
        .expect("request sent");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("body read").to_bytes();
    Reply { status: parts.status.as_u16(), headers: parts.headers, body }
}

pub fn post(url: &str, key: Option<&str>, body: impl Into<Bytes>) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::post(url).header("content-type", "application/json");
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    builder.body(Full::new(body.into())).unwrap()
}

pub fn get(url: &str, key: Option<&str>) -> http::Request<Full<Bytes>> {
    let mut builder = http::Request::get(url);
    if let Some(key) = key {
        builder = builder.header("authorization", format!("Bearer {key}"));
    }
    builder.body(Full::new(Bytes::new())).unwrap()
}

pub async fn chat(gateway: &TestGateway, body: Value) -> Reply {
    send(post(&gateway.url("/v1/chat/completions"), Some(MASTER_KEY), body.to_string())).await
}

/// Asserts an OpenAI-shaped error body with this status, returning the error object.
pub fn assert_error(reply: &Reply, status: u16) -> Value {
    assert_eq!(reply.status, status, "body: {}", String::from_utf8_lossy(&reply.body));
    assert_eq!(reply.header("content-type"), "application/json");
    let body = reply.json();
    let error = body["error"].clone();
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    assert!(error["code"].is_string(), "code must be a string: {body}");
    assert!(error.get("type").is_some() && error.get("param").is_some(), "{body}");
    error
}

/// Starts a streamed chat completion of `model` and returns its body, still arriving.
pub async fn open_stream(gateway: &TestGateway, model: &str) -> hyper::body::Incoming {
    let body = serde_json::json!({"model": model, "stream": true, "messages": [{"role": "user", "content": "hello"}]});
    let response = client()
        .request(post(&gateway.url("/v1/chat/completions"), Some(MASTER_KEY), body.to_string()))
        .await
        .expect("stream request sent");
    assert_eq!(response.status(), 200);
    response.into_body()
}

/// Appends the rest of a streaming body to `bytes`.
pub async fn read_rest(mut incoming: hyper::body::Incoming, bytes: &mut Vec<u8>) {
    while let Some(frame) = incoming.frame().await {
        bytes.extend_from_slice(&frame.expect("frame").into_data().expect("data frame"));
    }
}

/// The test environment's Redis (`TOLLGATE_TEST_REDIS_URL`), or `None` and a note that
/// `test` did not run.
pub fn redis_url(test: &str) -> Option<String> {
    let url = std::env::var("TOLLGATE_TEST_REDIS_URL").ok().filter(|url| !url.is_empty());
    if url.is_none() {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "not run: {test} (TOLLGATE_TEST_REDIS_URL is not set)");
    }
    url
}

/// The test environment's PostgreSQL (`TOLLGATE_TEST_DATABASE_URL`) with a fresh schema
/// named after `test`, or `None` and a note that `test` did not run there.
pub async fn postgres_url(test: &str) -> Option<String> {
    let Some(url) = std::env::var("TOLLGATE_TEST_DATABASE_URL").ok().filter(|url| !url.is_empty()) else {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "not run: {test} on PostgreSQL (TOLLGATE_TEST_DATABASE_URL is not set)"
        );
        return None;
    };
    let store =
        tollgate_storage::Store::connect(&url).await.expect("TOLLGATE_TEST_DATABASE_URL is unreachable");
    let schema = format!("tollgate_gateway_{test}");
    store
        .execute_script(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\";"))
        .await
        .expect("a fresh schema");
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(format!("{url}{separator}schema={schema}"))
}

/// [`postgres_url`], else a fresh SQLite file.
pub async fn postgres_or_sqlite(test: &str) -> String {
    match postgres_url(test).await {
        Some(url) => url,
        None => temp_sqlite_url(),
    }
}

/// The spend log row of the request `reply` answered, once the background writer has it
/// (waits up to 5 s).
pub async fn spend_log_row(
    store: &tollgate_storage::Store,
    reply: &Reply,
) -> tollgate_storage::SpendLogRecord {
    let id = reply.header("x-litellm-call-id");
    let started = std::time::Instant::now();
    loop {
        if let Some(row) = store
            .get::<tollgate_storage::SpendLogRecord>(tollgate_storage::Table::SpendLogs, id)
            .await
            .expect("the spend log is readable")
        {
            return row;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "no spend log row for {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
