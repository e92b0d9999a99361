//! Rate limits as clients see them: LiteLLM's 429 and `x-ratelimit-*` headers, the scopes
//! (key, organization, customer), and, with Redis, limits that hold across replicas: three
//! gateways (in-process, each on its own listener, sharing one database and one Redis)
//! count against the same windows and slots; Redis going away serves every request with
//! per-replica limits, and its return makes them global again.
//!
//! The Redis tests run when TOLLGATE_TEST_REDIS_URL is set; the replicas share a PostgreSQL
//! schema of their own when TOLLGATE_TEST_DATABASE_URL is set, else a SQLite file. Each test
//! uses its own database, which gives it its own key namespace in Redis; the outage tests
//! reach Redis through a door of their own (a TCP forwarder they can shut).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use support::{
    MASTER_KEY, Reply, TestGateway, assert_error, get, post, postgres_or_sqlite, redis_url, send,
    temp_sqlite_url,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tollgate_mock_upstream::{Behavior, MockUpstream};

/// An offline model, a mock-upstream model when `upstream` is given, a master key, the
/// database at `database_url` and Redis at `redis` when given.
fn config(database_url: &str, redis: Option<&str>, upstream: Option<&MockUpstream>) -> String {
    let mut yaml =
        String::from("model_list:\n  - model_name: gpt-4o\n    litellm_params: {model: fake/gpt-4o}\n");
    if let Some(mock) = upstream {
        yaml += &format!(
            "  - model_name: slow\n    litellm_params: {{model: openai/m, api_base: {}, api_key: k}}\n",
            mock.base_url()
        );
    }
    yaml += &format!("general_settings:\n  master_key: {MASTER_KEY}\n  database_url: \"{database_url}\"\n");
    if let Some(redis) = redis {
        yaml += &format!("router_settings:\n  redis_url: \"{redis}\"\n");
    }
    yaml
}

async fn admin(gateway: &TestGateway, path: &str, body: Value) -> Value {
    let reply = send(post(&gateway.url(path), Some(MASTER_KEY), body.to_string())).await;
    assert_eq!(reply.status, 200, "{path}: {}", String::from_utf8_lossy(&reply.body));
    reply.json()
}

async fn new_key(gateway: &TestGateway, body: Value) -> String {
    admin(gateway, "/key/generate", body).await["key"].as_str().expect("a raw key").to_owned()
}

async fn chat(gateway: &TestGateway, key: &str, model: &str) -> Reply {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    send(post(&gateway.url("/v1/chat/completions"), Some(key), body.to_string())).await
}

/// `requests` chat completions at once, dealt to the replicas in turn; their statuses.
async fn burst(replicas: &[TestGateway], key: &str, model: &str, requests: usize) -> Vec<u16> {
    let body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}).to_string();
    let sent: Vec<_> = (0..requests)
        .map(|i| {
            let request =
                post(&replicas[i % replicas.len()].url("/v1/chat/completions"), Some(key), body.clone());
            tokio::spawn(send(request))
        })
        .collect();
    let mut statuses = Vec::with_capacity(requests);
    for reply in sent {
        statuses.push(reply.await.expect("request task").status);
    }
    statuses
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|&&s| s == status).count()
}

async fn readiness(gateway: &TestGateway) -> Value {
    let reply = send(get(&gateway.url("/health/readiness"), None)).await;
    assert_eq!(reply.status, 200, "readiness stays 200 whatever redis does");
    reply.json()
}

/// Waits until the replica's readiness says `redis: <state>`.
async fn wait_for_redis(gateway: &TestGateway, connected: bool) {
    let started = Instant::now();
    loop {
        let ready = readiness(gateway).await;
        let state = ready["redis"].as_str().unwrap_or_default().to_owned();
        if (state == "connected") == connected && !state.is_empty() {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "redis never became {connected}: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sleeps into the next minute when this one ends within `needed`, so counts made now stay
/// in one window (Redis runs on this machine: its clock is ours).
async fn room_in_this_minute(needed: Duration) {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let left = Duration::from_secs(60 - now.as_secs() % 60)
        .saturating_sub(Duration::from_nanos(now.subsec_nanos().into()));
    if left < needed {
        tokio::time::sleep(left + Duration::from_millis(200)).await;
    }
}

/// Three replicas of one deployment: one database, one Redis.
async fn replicas(database_url: &str, redis: &str, upstream: Option<&MockUpstream>) -> Vec<TestGateway> {
    let yaml = config(database_url, Some(redis), upstream);
    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(TestGateway::start(&yaml).await);
    }
    for replica in &replicas {
        wait_for_redis(replica, true).await;
    }
    replicas
}

/// A TCP forwarder in front of Redis that can be shut (every connection dropped, new ones
/// closed at once, as a stopped Redis) and opened again. It counts the requests the rate
/// limiter asks Redis about: the `G` operations of its script calls (a one-byte bulk string
/// `G`, which nothing else the gateway sends contains; heartbeats are `H`).
struct Door {
    addr: SocketAddr,
    open: watch::Sender<bool>,
    asks: Arc<AtomicUsize>,
}

impl Door {
    async fn start(redis: &str) -> Self {
        let target = redis_addr(redis);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (open, watcher) = watch::channel(true);
        let asks = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&asks);
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if !*watcher.borrow() {
                    continue; // dropped: the client sees the connection closed
                }
                tokio::spawn(forward(client, target.clone(), watcher.clone(), Arc::clone(&counted)));
            }
        });
        Self { addr, open, asks }
    }

    /// The Redis URL through this door.
    fn url(&self, redis: &str) -> String {
        let rest = redis.strip_prefix("redis://").expect("a redis:// url");
        let (credentials, rest) = rest.rsplit_once('@').map_or(("", rest), |(c, r)| (c, r));
        let path = rest.find('/').map_or("", |at| &rest[at..]);
        let credentials = if credentials.is_empty() { String::new() } else { format!("{credentials}@") };
        format!("redis://{credentials}{}{path}", self.addr)
    }

    fn shut(&self) {
        self.open.send_replace(false);
    }

    fn open(&self) {
        self.open.send_replace(true);
    }

    fn asks(&self) -> usize {
        self.asks.load(Ordering::SeqCst)
    }
}

fn redis_addr(redis: &str) -> String {
    let rest = redis.strip_prefix("redis://").expect("a redis:// url");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split('/').next().unwrap().to_owned()
}

async fn forward(client: TcpStream, target: String, mut open: watch::Receiver<bool>, asks: Arc<AtomicUsize>) {
    let Ok(server) = TcpStream::connect(&target).await else { return };
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let up = async {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = client_read.read(&mut buffer).await.unwrap_or(0);
            if read == 0 {
                return;
            }
            let chunk = &buffer[..read];
            const ASK: &[u8] = b"\r\n$1\r\nG\r\n";
            let calls = chunk.windows(ASK.len()).filter(|w| *w == ASK).count();
            asks.fetch_add(calls, Ordering::SeqCst);
            if server_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    let down = tokio::io::copy(&mut server_read, &mut client_write);
    tokio::select! {
        () = up => {}
        _ = down => {}
        _ = open.wait_for(|open| !*open) => {}
    }
}

#[tokio::test]
async fn a_limited_request_gets_litellms_429_and_headers() {
    let gateway = TestGateway::start(&config(&temp_sqlite_url(), None, None)).await;
    room_in_this_minute(Duration::from_secs(5)).await;
    let key = new_key(&gateway, json!({"rpm_limit": 2, "tpm_limit": 1000})).await;
    let first = chat(&gateway, &key, "gpt-4o").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit-requests"), "2");
    assert_eq!(first.header("x-ratelimit-remaining-requests"), "1");
    assert!(first.header("x-ratelimit-reset-requests").ends_with('s'));
    assert_eq!(first.header("x-ratelimit-limit-tokens"), "1000");
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.header("x-ratelimit-remaining-requests"), "0");

    let limited = chat(&gateway, &key, "gpt-4o").await;
    let error = assert_error(&limited, 429);
    let message = error["message"].as_str().unwrap();
    assert!(message.starts_with("Rate limit exceeded for api_key: "), "{message}");
    assert!(
        message.contains(". Limit type: requests. Current limit: 2, Remaining: 0. Limit resets at: "),
        "{message}"
    );
    assert!(message.ends_with(" UTC"), "{message}");
    assert_eq!((error["type"].as_str(), error["code"].as_str()), (Some("None"), Some("429")));
    let retry_after: u64 = limited.header("retry-after").parse().unwrap();
    assert!((1..=60).contains(&retry_after));
    assert_eq!(limited.header("x-ratelimit-remaining-requests"), "0");
    assert_eq!(limited.header("x-ratelimit-limit-requests"), "2");

    // A key without limits gets none of these headers.
    let free = new_key(&gateway, json!({})).await;
    let reply = chat(&gateway, &free, "gpt-4o").await;
    assert_eq!(reply.status, 200);
    assert!(reply.headers.get("x-ratelimit-limit-requests").is_none());
}

#[tokio::test]
async fn organization_and_customer_limits_hold() {
    let gateway = TestGateway::start(&config(&temp_sqlite_url(), None, None)).await;
    room_in_this_minute(Duration::from_secs(5)).await;
    let organization =
        admin(&gateway, "/organization/new", json!({"organization_alias": "research", "rpm_limit": 2})).await;
    let organization_id = organization["organization_id"].as_str().unwrap().to_owned();
    // Two keys of the organization share its two requests a minute.
    let one = new_key(&gateway, json!({"organization_id": organization_id})).await;
    let two = new_key(&gateway, json!({"organization_id": organization_id})).await;
    assert_eq!(chat(&gateway, &one, "gpt-4o").await.status, 200);
    assert_eq!(chat(&gateway, &two, "gpt-4o").await.status, 200);
    let error = assert_error(&chat(&gateway, &one, "gpt-4o").await, 429);
    let expected = format!("Rate limit exceeded for organization: {organization_id}. Limit type: requests.");
    assert!(error["message"].as_str().unwrap().starts_with(&expected), "{error}");

    // A customer's limits live in its budget row and bind whoever names it, the master key too.
    admin(&gateway, "/customer/new", json!({"user_id": "rate-limited-customer", "rpm_limit": 1})).await;
    let as_customer = json!({"model": "gpt-4o", "user": "rate-limited-customer", "messages": [{"role": "user", "content": "hi"}]});
    let first =
        send(post(&gateway.url("/v1/chat/completions"), Some(MASTER_KEY), as_customer.to_string())).await;
    assert_eq!(first.status, 200);
    let second =
        send(post(&gateway.url("/v1/chat/completions"), Some(MASTER_KEY), as_customer.to_string())).await;
    let error = assert_error(&second, 429);
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .starts_with("Rate limit exceeded for end_user: rate-limited-customer."),
        "{error}"
    );
}

#[tokio::test]
async fn three_replicas_share_one_rpm_limit_exactly() {
    let Some(redis) = redis_url("three_replicas_share_one_rpm_limit_exactly") else { return };
    let database = postgres_or_sqlite("rate_limits_rpm").await;
    let replicas = replicas(&database, &redis, None).await;
    let key = new_key(&replicas[0], json!({"rpm_limit": 30})).await;
    room_in_this_minute(Duration::from_secs(15)).await;
    let statuses = burst(&replicas, &key, "gpt-4o", 90).await;
    assert_eq!((count(&statuses, 200), count(&statuses, 429)), (30, 60), "{statuses:?}");
    // Each replica turned some away: the count is shared, not 30 each.
    for (index, replica) in replicas.iter().enumerate() {
        let reply = chat(replica, &key, "gpt-4o").await;
        assert_eq!(reply.status, 429, "replica {index}");
        assert_eq!(reply.header("x-ratelimit-remaining-requests"), "0");
    }
    // A larger limit is reserved in larger parts, and still every unit is used exactly once.
    let larger = new_key(&replicas[0], json!({"rpm_limit": 200})).await;
    let statuses = burst(&replicas, &larger, "gpt-4o", 450).await;
    assert_eq!((count(&statuses, 200), count(&statuses, 429)), (200, 250));
}

#[tokio::test]
async fn three_replicas_admit_at_most_four_in_flight() {
    let Some(redis) = redis_url("three_replicas_admit_at_most_four_in_flight") else { return };
    let mock = MockUpstream::start().await;
    let database = postgres_or_sqlite("rate_limits_parallel").await;
    let replicas = replicas(&database, &redis, Some(&mock)).await;
    let key = new_key(&replicas[0], json!({"max_parallel_requests": 4})).await;
    // Every replica knows the key before the burst, so the burst is only admissions.
    for replica in &replicas {
        assert_eq!(chat(replica, &key, "gpt-4o").await.status, 200);
    }
    for _ in 0..12 {
        mock.push(Behavior::Delay(Duration::from_millis(1_500)));
    }
    let statuses = burst(&replicas, &key, "slow", 12).await;
    assert_eq!((count(&statuses, 200), count(&statuses, 429)), (4, 8), "{statuses:?}");
    assert_eq!(mock.requests().len(), 4, "the upstream saw four requests, never more");

    // Finished requests give their slots back to every replica.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let statuses = burst(&replicas, &key, "gpt-4o", 4).await;
    assert_eq!(count(&statuses, 200), 4, "{statuses:?}");
}

#[tokio::test]
async fn tokens_are_counted_from_usage_across_replicas() {
    let Some(redis) = redis_url("tokens_are_counted_from_usage_across_replicas") else { return };
    let mock = MockUpstream::start().await;
    let database = postgres_or_sqlite("rate_limits_tokens").await;
    let replicas = replicas(&database, &redis, Some(&mock)).await;
    let tokens = tollgate_mock_upstream::PROMPT_TOKENS + tollgate_mock_upstream::COMPLETION_TOKENS;
    let key = new_key(&replicas[0], json!({"tpm_limit": tokens})).await;
    room_in_this_minute(Duration::from_secs(10)).await;
    let first = chat(&replicas[0], &key, "slow").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.header("x-ratelimit-limit-tokens"), tokens.to_string());
    assert_eq!(
        first.header("x-ratelimit-remaining-tokens"),
        tokens.to_string(),
        "counted after the response"
    );
    // The response's usage reaches Redis without the client waiting for it; soon after,
    // another replica sees the window full.
    let started = Instant::now();
    loop {
        let reply = chat(&replicas[1], &key, "slow").await;
        if reply.status == 429 {
            let error = assert_error(&reply, 429);
            assert!(error["message"].as_str().unwrap().contains("Limit type: tokens"), "{error}");
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "the tokens never reached the other replica");
    }
}

#[tokio::test]
async fn keys_without_limits_never_reach_redis() {
    let Some(redis) = redis_url("keys_without_limits_never_reach_redis") else { return };
    let door = Door::start(&redis).await;
    let gateway = TestGateway::start(&config(&temp_sqlite_url(), Some(&door.url(&redis)), None)).await;
    wait_for_redis(&gateway, true).await;
    let free = new_key(&gateway, json!({})).await;
    let before = door.asks();
    let statuses = burst(std::slice::from_ref(&gateway), &free, "gpt-4o", 20).await;
    assert_eq!(count(&statuses, 200), 20);
    assert_eq!(door.asks(), before, "nothing asked of redis for a key without limits");

    let limited = new_key(&gateway, json!({"rpm_limit": 100})).await;
    assert_eq!(chat(&gateway, &limited, "gpt-4o").await.status, 200);
    assert!(door.asks() > before, "a limited key is counted in redis");
}

#[tokio::test]
async fn redis_going_away_serves_every_request_and_its_return_makes_limits_global_again() {
    let Some(redis) =
        redis_url("redis_going_away_serves_every_request_and_its_return_makes_limits_global_again")
    else {
        return;
    };
    let door = Door::start(&redis).await;
    let database = postgres_or_sqlite("rate_limits_outage").await;
    let replicas = replicas(&database, &door.url(&redis), None).await;
    let busy = new_key(&replicas[0], json!({"rpm_limit": 10_000})).await;
    let small = new_key(&replicas[0], json!({"rpm_limit": 2})).await;
    let synced = new_key(&replicas[0], json!({"rpm_limit": 4})).await;
    room_in_this_minute(Duration::from_secs(20)).await;
    let statuses = burst(&replicas, &busy, "gpt-4o", 30).await;
    assert_eq!(count(&statuses, 200), 30, "{statuses:?}");

    // Redis stops mid-run: every request is served, none waits on it.
    door.shut();
    for round in 0..3 {
        let started = Instant::now();
        let statuses = burst(&replicas, &busy, "gpt-4o", 30).await;
        assert_eq!(count(&statuses, 200), 30, "round {round}: {statuses:?}");
        assert!(started.elapsed() < Duration::from_secs(2), "round {round} took {:?}", started.elapsed());
    }
    for replica in &replicas {
        wait_for_redis(replica, false).await;
    }
    // Meanwhile each replica holds the limit on its own: two each.
    let statuses = burst(&replicas, &small, "gpt-4o", 9).await;
    assert_eq!(count(&statuses, 200), 6, "{statuses:?}");
    // And what a replica counted alone is handed to Redis when it returns.
    assert_eq!(chat(&replicas[0], &synced, "gpt-4o").await.status, 200);
    assert_eq!(chat(&replicas[0], &synced, "gpt-4o").await.status, 200);

    door.open();
    for replica in &replicas {
        wait_for_redis(replica, true).await;
    }
    let statuses = burst(&replicas, &synced, "gpt-4o", 9).await;
    assert_eq!(count(&statuses, 200), 2, "two of four were used during the outage: {statuses:?}");
    let fresh = new_key(&replicas[0], json!({"rpm_limit": 5})).await;
    let statuses = burst(&replicas, &fresh, "gpt-4o", 15).await;
    assert_eq!(count(&statuses, 200), 5, "global again: {statuses:?}");
}

#[tokio::test]
async fn a_closed_redis_port_leaves_limits_per_replica() {
    // Nothing listens on a port just released; a gateway pointed there starts and serves.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let yaml = config(&temp_sqlite_url(), Some(&format!("redis://127.0.0.1:{port}")), None);
    let gateway = TestGateway::start(&yaml).await;
    let ready = readiness(&gateway).await;
    assert_eq!(ready["redis"], "unavailable: rate limits are per replica", "{ready}");
    room_in_this_minute(Duration::from_secs(5)).await;
    let key = new_key(&gateway, json!({"rpm_limit": 2})).await;
    let started = Instant::now();
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200);
    assert_eq!(chat(&gateway, &key, "gpt-4o").await.status, 200);
    assert_error(&chat(&gateway, &key, "gpt-4o").await, 429);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "no request waited on redis: {:?}",
        started.elapsed()
    );
}
