//! The response cache end to end: hits and misses, TTLs, per-request controls, namespaces,
//! scopes, streams replayed, embeddings cached per item, the admin routes, and Redis (shared
//! by replicas, and away without failing a request) when TOLLGATE_TEST_REDIS_URL is set.

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tollgate_mock_upstream::MockUpstream;

/// The mock config with `litellm_settings` for the cache.
fn cached_config(mock: &MockUpstream, cache: &str) -> String {
    format!(
        "{}litellm_settings:\n  cache: true\n  cache_params: {cache}\n",
        mock_config(&mock.base_url(), "")
    )
}

fn question(text: &str) -> Value {
    json!({"model": "general-purpose", "messages": [{"role": "user", "content": text}]})
}

/// How many requests reached the mock on `path`.
fn upstream_calls(mock: &MockUpstream, path: &str) -> usize {
    mock.requests().iter().filter(|r| r.path == path).count()
}

async fn call(gateway: &TestGateway, key: &str, path: &str, body: Value) -> Reply {
    send(post(&gateway.url(path), Some(key), body.to_string())).await
}

async fn with_header(gateway: &TestGateway, body: Value, name: &str, value: &str) -> Reply {
    let mut request = post(&gateway.url("/v1/chat/completions"), Some(MASTER_KEY), body.to_string());
    request.headers_mut().insert(
        http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
        http::HeaderValue::from_str(value).unwrap(),
    );
    send(request).await
}

/// A namespace no other test (or run) uses.
fn unique_namespace(test: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("tollgate_test_{test}_{}_{nanos}", std::process::id())
}

#[tokio::test]
async fn a_repeated_request_is_answered_from_the_cache_at_no_cost() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&cached_config(&mock, "{namespace: litellm_cache, ttl: 86400}")).await;

    let first = chat(&gateway, question("what is a gateway?")).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let key = first.header("x-litellm-cache-key").to_owned();
    assert!(key.starts_with("litellm_cache:") && key.len() == "litellm_cache:".len() + 64, "{key}");

    let second = chat(&gateway, question("what is a gateway?")).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.json()["id"], first.json()["id"], "the same answer, from the cache");
    assert_eq!(second.json()["model"], "general-purpose", "the alias, as on a miss");
    assert_eq!(second.json()["choices"], first.json()["choices"]);
    assert_eq!(second.header("x-litellm-cache-key"), key);
    assert_eq!(second.header("x-litellm-response-cost"), "0");
    assert_eq!(second.header("x-litellm-model-group"), "general-purpose");
    assert_eq!(upstream_calls(&mock, "/v1/chat/completions"), 1, "a hit skips the upstream");

    // Another question, or another parameter that changes the answer, is a miss.
    let other = chat(&gateway, question("what is a proxy?")).await;
    assert_ne!(other.header("x-litellm-cache-key"), key);
    let mut warmer = question("what is a gateway?");
    warmer["temperature"] = json!(0.9);
    let warmer = chat(&gateway, warmer).await;
    assert_ne!(warmer.json()["id"], first.json()["id"]);
    // Fields that do not change the answer keep the key.
    let mut tagged = question("what is a gateway?");
    tagged["user"] = json!("someone");
    tagged["metadata"] = json!({"trace": 1});
    assert_eq!(chat(&gateway, tagged).await.json()["id"], first.json()["id"]);
    assert_eq!(upstream_calls(&mock, "/v1/chat/completions"), 3);
}

#[tokio::test]
async fn caching_is_off_unless_configured() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&mock_config(&mock.base_url(), "")).await;
    let first = chat(&gateway, question("q")).await;
    let second = chat(&gateway, question("q")).await;
    assert_ne!(first.json()["id"], second.json()["id"]);
    assert!(!second.headers.contains_key("x-litellm-cache-key"));
    assert_eq!(upstream_calls(&mock, "/v1/chat/completions"), 2);
    let ping = send(get(&gateway.url("/cache/ping"), Some(MASTER_KEY))).await;
    assert_error(&ping, 503);
}

#[tokio::test]
async fn entries_expire_after_their_ttl() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&cached_config(&mock, "{ttl: 0.4}")).await;
    let first = chat(&gateway, question("ttl")).await;
    assert_eq!(chat(&gateway, question("ttl")).await.json()["id"], first.json()["id"]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let later = chat(&gateway, question("ttl")).await;
    assert_ne!(later.json()["id"], first.json()["id"], "the configured ttl has passed");

    // A request's own ttl wins over the configured one.
    let mut short = question("own ttl");
    short["cache"] = json!({"ttl": 0.2});
    let first = chat(&gateway, short.clone()).await;
    assert_eq!(chat(&gateway, question("own ttl")).await.json()["id"], first.json()["id"]);
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert_ne!(chat(&gateway, question("own ttl")).await.json()["id"], first.json()["id"]);
}

#[tokio::test]
async fn no_cache_no_store_and_max_age_work_in_the_body_and_the_header() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&cached_config(&mock, "{}")).await;
    let first = chat(&gateway, question("controls")).await;

    // no-cache: the upstream answers, and its answer replaces the entry.
    let mut fresh = question("controls");
    fresh["cache"] = json!({"no-cache": true});
    let refreshed = chat(&gateway, fresh).await;
    assert_ne!(refreshed.json()["id"], first.json()["id"]);
    assert_eq!(chat(&gateway, question("controls")).await.json()["id"], refreshed.json()["id"]);
    let sent: Value = serde_json::from_slice(&mock.requests().last().unwrap().body).unwrap();
    assert!(sent.get("cache").is_none(), "the controls never go upstream");

    let header = with_header(&gateway, question("controls"), "cache-control", "no-cache").await;
    assert_ne!(header.json()["id"], refreshed.json()["id"]);

    // no-store: answered, never kept.
    let mut unkept = question("not kept");
    unkept["cache"] = json!({"no-store": true});
    let once = chat(&gateway, unkept).await;
    assert_ne!(chat(&gateway, question("not kept")).await.json()["id"], once.json()["id"]);
    let by_header = with_header(&gateway, question("header not kept"), "Cache-Control", "no-store").await;
    assert_ne!(chat(&gateway, question("header not kept")).await.json()["id"], by_header.json()["id"]);

    // s-maxage: an entry older than the request accepts is a miss.
    let kept = chat(&gateway, question("aged")).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut young = question("aged");
    young["cache"] = json!({"s-maxage": 1});
    assert_ne!(chat(&gateway, young).await.json()["id"], kept.json()["id"]);

    let mut bad = question("x");
    bad["cache"] = json!({"ttl": "soon"});
    let error = assert_error(&chat(&gateway, bad).await, 400);
    assert_eq!(error["param"], "cache");
}

#[tokio::test]
async fn namespaces_keep_entries_apart() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&cached_config(&mock, "{namespace: shared}")).await;
    let plain = chat(&gateway, question("ns")).await;
    assert!(plain.header("x-litellm-cache-key").starts_with("shared:"));
    let mut own = question("ns");
    own["cache"] = json!({"namespace": "mine"});
    let first = chat(&gateway, own.clone()).await;
    assert!(first.header("x-litellm-cache-key").starts_with("mine:"));
    assert_ne!(first.json()["id"], plain.json()["id"], "another namespace, another entry");
    assert_eq!(chat(&gateway, own).await.json()["id"], first.json()["id"]);
    assert_eq!(chat(&gateway, question("ns")).await.json()["id"], plain.json()["id"]);
}

/// A gateway with virtual keys: two keys of team `a`, one of team `b`.
async fn three_keys(gateway: &TestGateway) -> (String, String, String) {
    for team in ["a", "b"] {
        let reply = call(gateway, MASTER_KEY, "/team/new", json!({"team_id": team})).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    let mut keys = Vec::new();
    for team in ["a", "a", "b"] {
        let reply = call(gateway, MASTER_KEY, "/key/generate", json!({"team_id": team})).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        keys.push(reply.json()["key"].as_str().unwrap().to_owned());
    }
    (keys.remove(0), keys.remove(0), keys.remove(0))
}

async fn id_for(gateway: &TestGateway, key: &str, text: &str) -> Value {
    let reply = call(gateway, key, "/v1/chat/completions", question(text)).await;
    assert_eq!(reply.status, 200, "{:?}", reply.body);
    reply.json()["id"].clone()
}

#[tokio::test]
async fn scopes_decide_who_shares_entries() {
    let mock = MockUpstream::start().await;
    // global (the default): every key shares.
    let gateway = TestGateway::start(&cached_config(&mock, "{}")).await;
    let (a1, a2, b) = three_keys(&gateway).await;
    let first = id_for(&gateway, &a1, "scoped").await;
    assert_eq!(id_for(&gateway, &b, "scoped").await, first);

    let gateway = TestGateway::start(&cached_config(&mock, "{cache_scope: team}")).await;
    let (a1, a2_team, b) = three_keys(&gateway).await;
    let first = id_for(&gateway, &a1, "scoped").await;
    assert_eq!(id_for(&gateway, &a2_team, "scoped").await, first, "one team shares");
    assert_ne!(id_for(&gateway, &b, "scoped").await, first, "another team does not");

    let gateway = TestGateway::start(&cached_config(&mock, "{cache_scope: key}")).await;
    let (a1, a2_key, _) = three_keys(&gateway).await;
    let first = id_for(&gateway, &a1, "scoped").await;
    assert_eq!(id_for(&gateway, &a1, "scoped").await, first, "a key shares with itself");
    assert_ne!(id_for(&gateway, &a2_key, "scoped").await, first, "not with its teammate");
    drop(a2);
}

#[tokio::test]
async fn a_stream_is_replayed_with_identical_content() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&cached_config(&mock, "{}")).await;
    let mut streamed = question("stream me");
    streamed["stream"] = json!(true);
    let first = chat(&gateway, streamed.clone()).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("content-type"), "text/event-stream");
    let second = chat(&gateway, streamed.clone()).await;
    assert_eq!(second.header("content-type"), "text/event-stream");
    assert_eq!(second.body, first.body, "the same events, byte for byte");
    assert_eq!(second.events().last().map(String::as_str), Some("[DONE]"));
    assert!(second.events().iter().all(|e| !e.contains("\"usage\":{")), "no usage chunk nobody asked for");
    assert_eq!(upstream_calls(&mock, "/v1/chat/completions"), 1);

    // A client that asks for usage gets it from the replay too.
    let mut with_usage = streamed.clone();
    with_usage["stream_options"] = json!({"include_usage": true});
    let replayed = chat(&gateway, with_usage).await;
    assert!(replayed.events().iter().any(|e| e.contains("\"usage\":{")));

    // A plain request for the same question is answered from the stream's entry.
    let plain = chat(&gateway, question("stream me")).await;
    let content: String = first
        .events()
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(plain.json()["object"], "chat.completion");
    assert_eq!(plain.json()["choices"][0]["message"]["content"], content);
    assert_eq!(plain.json()["model"], "general-purpose");
    assert_eq!(upstream_calls(&mock, "/v1/chat/completions"), 1);
}

#[tokio::test]
async fn embeddings_are_cached_per_item() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&cached_config(&mock, "{}")).await;
    let embed = |input: Value| {
        let gateway = &gateway;
        async move {
            let body = json!({"model": "text-embedding-3-small", "input": input});
            let reply = send(post(&gateway.url("/v1/embeddings"), Some(MASTER_KEY), body.to_string())).await;
            assert_eq!(reply.status, 200, "{:?}", reply.body);
            reply
        }
    };
    let first = embed(json!(["alpha", "beta"])).await.json();
    let second = embed(json!(["beta", "gamma"])).await;
    let sent: Value = serde_json::from_slice(&mock.requests().last().unwrap().body).unwrap();
    assert_eq!(sent["input"], json!(["gamma"]), "only the miss goes upstream");
    let second = second.json();
    assert_eq!(second["data"][0]["embedding"], first["data"][1]["embedding"], "beta from the cache");
    assert_eq!(second["data"][1]["index"], 1);
    assert_eq!(second["model"], "text-embedding-3-small");
    assert_eq!(
        second["usage"]["prompt_tokens"],
        tollgate_mock_upstream::EMBEDDING_TOKENS_PER_INPUT,
        "charged for the one item sent"
    );

    let all = embed(json!(["gamma", "alpha", "beta"])).await;
    assert_eq!(all.header("x-litellm-response-cost"), "0");
    let all = all.json();
    assert_eq!(all["data"].as_array().unwrap().len(), 3);
    assert_eq!(all["data"][0]["embedding"], second["data"][1]["embedding"]);
    assert_eq!(all["data"][1]["embedding"], first["data"][0]["embedding"]);
    let single = embed(json!("alpha")).await;
    assert!(!single.header("x-litellm-cache-key").is_empty());
    assert_eq!(single.json()["data"][0]["embedding"], first["data"][0]["embedding"]);
    assert_eq!(upstream_calls(&mock, "/v1/embeddings"), 2);
}

#[tokio::test]
async fn supported_call_types_limit_what_is_cached() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&cached_config(&mock, "{supported_call_types: [aembedding]}")).await;
    let first = chat(&gateway, question("uncached"));
    let first = first.await;
    assert!(!first.headers.contains_key("x-litellm-cache-key"));
    assert_ne!(chat(&gateway, question("uncached")).await.json()["id"], first.json()["id"]);
}

#[tokio::test]
async fn anthropic_messages_are_cached_and_translated() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&cached_config(&mock, "{}")).await;
    let body = json!({"model": "general-purpose", "max_tokens": 64, "messages": [{"role": "user", "content": "hola"}]});
    let first = call(&gateway, MASTER_KEY, "/v1/messages", body.clone()).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    let second = call(&gateway, MASTER_KEY, "/v1/messages", body.clone()).await;
    assert_eq!(second.json(), first.json());
    assert_eq!(second.header("x-litellm-response-cost"), "0");
    let mut streamed = body;
    streamed["stream"] = json!(true);
    let stream = call(&gateway, MASTER_KEY, "/v1/messages", streamed).await;
    let text = String::from_utf8_lossy(&stream.body);
    assert!(text.contains("event: message_start") && text.contains("event: message_stop"), "{text}");
    assert_eq!(upstream_calls(&mock, "/v1/chat/completions"), 1);
}

#[tokio::test]
async fn a_hit_is_logged_as_a_cache_hit_that_cost_nothing() {
    let mock = MockUpstream::start().await;
    let url = temp_sqlite_url();
    let yaml = format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: openai/gpt-4o, api_base: {}, api_key: k}}\ngeneral_settings:\n  master_key: {MASTER_KEY}\n  database_url: \"{url}\"\n  proxy_batch_write_at: 1\nlitellm_settings:\n  cache: true\n",
        mock.base_url()
    );
    let gateway = TestGateway::start(&yaml).await;
    let key = call(&gateway, MASTER_KEY, "/key/generate", json!({})).await.json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "log me"}]});
    let miss = call(&gateway, &key, "/v1/chat/completions", body.clone()).await;
    let hit = call(&gateway, &key, "/v1/chat/completions", body).await;
    assert_eq!(hit.json()["id"], miss.json()["id"]);
    let store = tollgate_storage::Store::connect(&url).await.unwrap();
    let row = |reply| support::spend_log_row(&store, reply);
    let miss_row = row(&miss).await;
    assert!(miss_row.spend > 0.0);
    assert_eq!(miss_row.cache_hit.as_deref(), Some("False"));
    let hit_row = row(&hit).await;
    assert_eq!(hit_row.spend, 0.0);
    assert_eq!(hit_row.cache_hit.as_deref(), Some("True"));
    assert_eq!(hit_row.prompt_tokens, miss_row.prompt_tokens, "the cached answer's tokens are logged");
    assert_eq!(
        hit.header("x-litellm-key-spend"),
        miss.header("x-litellm-key-spend"),
        "the hit added nothing to the key's spend"
    );
}

#[tokio::test]
async fn the_admin_routes_ping_delete_and_flush() {
    let mock = MockUpstream::start().await;
    let gateway = TestGateway::start(&cached_config(&mock, "{namespace: admin_ns}")).await;
    let ping = send(get(&gateway.url("/cache/ping"), Some(MASTER_KEY))).await;
    assert_eq!(ping.status, 200);
    assert_eq!(ping.json()["status"], "healthy");
    assert_eq!(ping.json()["cache_type"], "local");

    let first = chat(&gateway, question("delete me")).await;
    let key = first.header("x-litellm-cache-key").to_owned();
    let deleted = call(&gateway, MASTER_KEY, "/cache/delete", json!({"keys": [key]})).await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.json()["status"], "success");
    let after = chat(&gateway, question("delete me")).await;
    assert_ne!(after.json()["id"], first.json()["id"]);
    assert_error(&call(&gateway, MASTER_KEY, "/cache/delete", json!({"key": "x"})).await, 400);

    assert_eq!(chat(&gateway, question("delete me")).await.json()["id"], after.json()["id"]);
    let flushed = send(post(&gateway.url("/cache/flushall"), Some(MASTER_KEY), "")).await;
    assert_eq!(flushed.status, 200);
    assert_ne!(chat(&gateway, question("delete me")).await.json()["id"], after.json()["id"]);

    let user = call(&gateway, MASTER_KEY, "/key/generate", json!({})).await.json()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_error(&send(get(&gateway.url("/cache/ping"), Some(&user))).await, 403);
    assert_error(&send(post(&gateway.url("/cache/flushall"), Some(&user), "")).await, 403);
    assert_error(&send(post(&gateway.url("/cache/flushall"), None, "")).await, 401);
}

/// One command to Redis in RESP, its reply as raw text.
async fn redis_command(url: &str, args: &[&str]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = url.trim_start_matches("redis://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(address).await.expect("redis reachable");
    let mut command = format!("*{}\r\n", args.len());
    for arg in args {
        command.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
    }
    stream.write_all(command.as_bytes()).await.unwrap();
    let mut reply = vec![0u8; 4096];
    let read = stream.read(&mut reply).await.unwrap();
    String::from_utf8_lossy(&reply[..read]).into_owned()
}

#[tokio::test]
async fn replicas_share_entries_through_redis() {
    let Some(redis) = redis_url("replicas_share_entries_through_redis") else { return };
    let namespace = unique_namespace("share");
    let mock = MockUpstream::start().await;
    let yaml =
        cached_config(&mock, &format!("{{type: redis, url: \"{redis}\", namespace: {namespace}, ttl: 60}}"));
    let one = TestGateway::start(&yaml).await;
    let two = TestGateway::start(&yaml).await;

    let first = chat(&one, question("shared")).await;
    let key = first.header("x-litellm-cache-key").to_owned();
    assert!(key.starts_with(&format!("{namespace}:")));
    // The write to Redis runs in the background: wait for it to land.
    let started = Instant::now();
    while redis_command(&redis, &["EXISTS", &key]).await != ":1\r\n" {
        assert!(started.elapsed() < Duration::from_secs(2), "the entry never reached redis");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ttl: i64 =
        redis_command(&redis, &["PTTL", &key]).await.trim().trim_start_matches(':').parse().unwrap();
    assert!((50_000..=60_000).contains(&ttl), "SET with PX: {ttl}");
    let second = chat(&two, question("shared")).await;
    assert_eq!(second.json()["id"], first.json()["id"], "the other replica answers from redis");
    assert_eq!(upstream_calls(&mock, "/v1/chat/completions"), 1);

    let mut streamed = question("shared stream");
    streamed["stream"] = json!(true);
    let streamed_first = chat(&one, streamed.clone()).await;
    let stream_key = streamed_first.header("x-litellm-cache-key").to_owned();
    let started = Instant::now();
    while redis_command(&redis, &["EXISTS", &stream_key]).await != ":1\r\n" {
        assert!(started.elapsed() < Duration::from_secs(2), "the stream never reached redis");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let replay = chat(&two, streamed).await;
    assert_eq!(replay.body, streamed_first.body, "the other replica replays the same events");

    let ping = send(get(&one.url("/cache/ping"), Some(MASTER_KEY))).await;
    assert_eq!(
        (ping.json()["cache_type"].as_str(), ping.json()["ping_response"].as_bool()),
        (Some("redis"), Some(true))
    );

    // flushall removes this namespace only.
    let bystander = format!("{namespace}_bystander");
    assert_eq!(redis_command(&redis, &["SET", &bystander, "keep"]).await, "+OK\r\n");
    let flushed = send(post(&one.url("/cache/flushall"), Some(MASTER_KEY), "")).await;
    assert_eq!(flushed.status, 200, "{:?}", flushed.body);
    assert_eq!(redis_command(&redis, &["EXISTS", &key]).await, ":0\r\n");
    assert_eq!(redis_command(&redis, &["EXISTS", &bystander]).await, ":1\r\n");
    redis_command(&redis, &["DEL", &bystander]).await;
}

#[tokio::test]
async fn a_redis_that_is_away_never_fails_or_stalls_a_request() {
    // Nothing listens on port 1; the timeout is short so the test says what it promises.
    let mock = MockUpstream::start().await;
    let yaml = cached_config(&mock, "{type: redis, host: 127.0.0.1, port: 1, socket_timeout: 0.2}");
    let gateway = TestGateway::start(&yaml).await;
    let started = Instant::now();
    let first = chat(&gateway, question("no redis")).await;
    assert_eq!(first.status, 200);
    let second = chat(&gateway, question("no redis")).await;
    assert_eq!(second.json()["id"], first.json()["id"], "the in-process cache stands in");
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    let ping = send(get(&gateway.url("/cache/ping"), Some(MASTER_KEY))).await;
    assert_error(&ping, 503);
}

/// A TCP relay to Redis that can be told to stop passing bytes on, as a Redis that hangs.
struct StallingRelay {
    addr: std::net::SocketAddr,
    stalled: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl StallingRelay {
    async fn start(redis: &str) -> Self {
        use std::sync::atomic::Ordering;
        let target = redis.trim_start_matches("redis://").trim_end_matches('/').to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stalled = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stalled);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&target).await else { continue };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                for (mut from, mut to) in [(client_read, server_write), (server_read, client_write)] {
                    let flag = std::sync::Arc::clone(&flag);
                    tokio::spawn(async move {
                        use tokio::io::{AsyncReadExt, AsyncWriteExt};
                        let mut buffer = vec![0u8; 16 * 1024];
                        while let Ok(read) = from.read(&mut buffer).await {
                            if read == 0 {
                                return;
                            }
                            while flag.load(Ordering::Relaxed) {
                                tokio::time::sleep(Duration::from_millis(5)).await;
                            }
                            if to.write_all(&buffer[..read]).await.is_err() {
                                return;
                            }
                        }
                    });
                }
            }
        });
        Self { addr, stalled }
    }

    fn stall(&self, stalled: bool) {
        self.stalled.store(stalled, std::sync::atomic::Ordering::Relaxed);
    }
}

#[tokio::test]
async fn a_redis_that_hangs_costs_at_most_its_timeout_and_comes_back() {
    let Some(redis) = redis_url("a_redis_that_hangs_costs_at_most_its_timeout_and_comes_back") else {
        return;
    };
    let namespace = unique_namespace("hang");
    let mock = MockUpstream::start().await;
    let relay = StallingRelay::start(&redis).await;
    let yaml = cached_config(
        &mock,
        &format!(
            "{{type: redis, url: \"redis://{}\", namespace: {namespace}, socket_timeout: 0.1}}",
            relay.addr
        ),
    );
    let gateway = TestGateway::start(&yaml).await;
    let before = chat(&gateway, question("before the hang")).await;
    assert_eq!(before.status, 200);

    relay.stall(true);
    for round in 0..3 {
        let started = Instant::now();
        let reply = chat(&gateway, question("during the hang")).await;
        assert_eq!(reply.status, 200);
        assert!(started.elapsed() < Duration::from_millis(350), "round {round}: {:?}", started.elapsed());
    }
    let during = chat(&gateway, question("during the hang")).await;
    assert_eq!(
        chat(&gateway, question("during the hang")).await.json()["id"],
        during.json()["id"],
        "the in-process cache answers while redis hangs"
    );

    relay.stall(false);
    // The probe finds Redis again; new entries reach it once more.
    let started = Instant::now();
    loop {
        let reply =
            chat(&gateway, question(&format!("after the hang {}", started.elapsed().as_millis()))).await;
        let key = reply.header("x-litellm-cache-key").to_owned();
        tokio::time::sleep(Duration::from_millis(50)).await;
        if redis_command(&redis, &["EXISTS", &key]).await == ":1\r\n" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(5), "redis was never used again");
    }
    let metrics = send(get(&gateway.url("/metrics"), Some(MASTER_KEY))).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines().any(|l| l.starts_with("tollgate_cache_redis_errors_total ") && !l.ends_with(" 0")),
        "{text}"
    );
}
