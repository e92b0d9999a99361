//! Redis Cluster and Redis Sentinel, as LiteLLM configures them (`redis_startup_nodes`;
//! `service_name` with `sentinel_nodes`): real `redis-server` processes on loopback, started
//! by the test, with two gateways sharing the response cache, one key's rate limit and a
//! deployment's cooldown.
//! Without a `redis-server` binary the tests say they did not run.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{MASTER_KEY, Reply, TestGateway, post, send, temp_sqlite_url};
use tollgate_mock_upstream::MockUpstream;

/// Redis processes that die with the test.
struct Servers {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Drop for Servers {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn redis_server() -> Option<PathBuf> {
    ["/usr/bin/redis-server", "/usr/local/bin/redis-server"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tollgate-{name}-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spawn(binary: &Path, dir: &Path, args: &[&str]) -> Child {
    Command::new(binary)
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts")
}

/// Sends one inline command and returns the reply's text, or `None` if nothing answers.
fn ask(port: u16, command: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream =
        std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200))
            .ok()?;
    stream.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    stream.write_all(format!("{command}\r\n").as_bytes()).ok()?;
    let mut reply = vec![0u8; 4096];
    let read = stream.read(&mut reply).ok()?;
    Some(String::from_utf8_lossy(&reply[..read]).into_owned())
}

fn wait_for(what: &str, ready: impl Fn() -> bool) {
    let started = Instant::now();
    while !ready() {
        assert!(started.elapsed() < Duration::from_secs(15), "{what} never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Three masters sharing the 16,384 slots; returns the servers and their ports.
fn start_cluster(binary: &Path) -> (Servers, Vec<u16>) {
    let dir = scratch_dir("cluster");
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut servers = Servers { children: Vec::new(), dir: dir.clone() };
    for port in &ports {
        let port = port.to_string();
        let conf = format!("nodes-{port}.conf");
        servers.children.push(spawn(
            binary,
            &dir,
            &[
                "--port",
                &port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                &conf,
                "--save",
                "",
                "--appendonly",
                "no",
            ],
        ));
    }
    for port in &ports {
        wait_for("a cluster node", || ask(*port, "PING").is_some_and(|r| r.contains("PONG")));
    }
    // Slots by hand (what `redis-cli --cluster create` does), then the nodes meet.
    let slots = [(0, 5460), (5461, 10922), (10923, 16383)];
    for (port, (first, last)) in ports.iter().zip(slots) {
        let reply = ask(*port, &format!("CLUSTER ADDSLOTSRANGE {first} {last}")).unwrap_or_default();
        assert!(reply.contains("OK"), "ADDSLOTSRANGE: {reply}");
    }
    for port in &ports[1..] {
        ask(ports[0], &format!("CLUSTER MEET 127.0.0.1 {port}"));
    }
    for port in &ports {
        wait_for("the cluster", || {
            ask(*port, "CLUSTER INFO").is_some_and(|r| r.contains("cluster_state:ok"))
        });
    }
    (servers, ports)
}

/// A primary and one sentinel watching it as `mymaster`; returns the sentinel's port.
fn start_sentinel(binary: &Path) -> (Servers, u16) {
    let dir = scratch_dir("sentinel");
    let (primary, sentinel) = (free_port(), free_port());
    let mut servers = Servers { children: Vec::new(), dir: dir.clone() };
    servers.children.push(spawn(
        binary,
        &dir,
        &["--port", &primary.to_string(), "--save", "", "--appendonly", "no"],
    ));
    wait_for("the primary", || ask(primary, "PING").is_some_and(|r| r.contains("PONG")));
    let conf = dir.join("sentinel.conf");
    std::fs::write(&conf, format!("port {sentinel}\nsentinel monitor mymaster 127.0.0.1 {primary} 1\n"))
        .unwrap();
    servers.children.push(spawn(binary, &dir, &[conf.to_str().unwrap(), "--sentinel"]));
    wait_for("the sentinel", || {
        ask(sentinel, "SENTINEL get-master-addr-by-name mymaster")
            .is_some_and(|r| r.contains(&primary.to_string()))
    });
    (servers, sentinel)
}

fn config(mock: &MockUpstream, cooling: &MockUpstream, database_url: &str, cache_params: &str) -> String {
    format!(
        "model_list:
  - model_name: gpt-4o
    litellm_params: {{model: openai/gpt-4o, api_base: {}, api_key: k}}
  - model_name: pair
    litellm_params: {{model: openai/pair-a, api_base: {}, api_key: k, order: 1}}
    model_info: {{id: pair-a}}
  - model_name: pair
    litellm_params: {{model: openai/pair-b, api_base: {}, api_key: k, order: 2}}
    model_info: {{id: pair-b}}
router_settings:
  cooldown_time: 60
general_settings:
  master_key: {MASTER_KEY}
  database_url: \"{database_url}\"
litellm_settings:
  cache: true
  cache_params: {cache_params}
",
        mock.base_url(),
        cooling.base_url(),
        mock.base_url()
    )
}

async fn chat(gateway: &TestGateway, key: &str, text: &str) -> Reply {
    chat_with(gateway, key, "gpt-4o", text).await
}

async fn chat_with(gateway: &TestGateway, key: &str, model: &str, text: &str) -> Reply {
    let body = json!({"model": model, "messages": [{"role": "user", "content": text}]});
    send(post(&gateway.url("/v1/chat/completions"), Some(key), body.to_string())).await
}

/// Waits until the gateway shares its routing state through Redis.
async fn wait_router_shared(gateway: &TestGateway) {
    let started = Instant::now();
    loop {
        let ready = send(support::get(&gateway.url("/health/readiness"), None)).await.json();
        if ready["router_redis"] == "connected" {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(15), "routing state never shared: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Two gateways on one topology: an answer cached by one is a hit on the other, and a key
/// with `rpm_limit: 3` gets three requests in all, whichever gateway serves them.
async fn two_gateways_share_cache_and_limits(cache_params: &str) {
    let (mock, cooling) = (MockUpstream::start().await, MockUpstream::start().await);
    let yaml = config(&mock, &cooling, &temp_sqlite_url(), cache_params);
    let one = TestGateway::start(&yaml).await;
    let two = TestGateway::start(&yaml).await;

    let first = chat(&one, MASTER_KEY, "shared question").await;
    assert_eq!(first.status, 200, "{}", String::from_utf8_lossy(&first.body));
    let started = Instant::now();
    let hit = loop {
        let reply = chat(&two, MASTER_KEY, "shared question").await;
        if reply.header("x-litellm-response-cost") == "0" || started.elapsed() > Duration::from_secs(5) {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(hit.json()["id"], first.json()["id"], "the other gateway answered from Redis");
    // /cache/flushall reaches every node: the next ask is a miss on both gateways.
    let flushed = send(post(&two.url("/cache/flushall"), Some(MASTER_KEY), "{}")).await;
    assert_eq!(flushed.status, 200, "{}", String::from_utf8_lossy(&flushed.body));
    let after = chat(&one, MASTER_KEY, "shared question").await;
    assert_ne!(after.json()["id"], first.json()["id"], "flushed from Redis");

    let generated =
        send(post(&one.url("/key/generate"), Some(MASTER_KEY), json!({"rpm_limit": 3}).to_string())).await;
    let key = generated.json()["key"].as_str().expect("a key").to_owned();
    // Let both gateways' limiters connect before counting.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut statuses = Vec::new();
    for (n, gateway) in [&one, &two, &one, &two, &one].into_iter().enumerate() {
        statuses.push(chat(gateway, &key, &format!("question {n}")).await.status);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429], "three requests a minute across both gateways");

    // A cooldown that starts on one gateway is announced to the other.
    wait_router_shared(&one).await;
    wait_router_shared(&two).await;
    cooling.push(tollgate_mock_upstream::Behavior::Error { status: 429, body: "{}".into() });
    assert_eq!(chat_with(&one, MASTER_KEY, "pair", "cool").await.status, 429);
    let started = Instant::now();
    // A new question each time: an answer from the cache would say nothing about routing.
    for attempt in 0..500 {
        let reply = chat_with(&two, MASTER_KEY, "pair", &format!("routed {attempt}")).await;
        if reply.header("x-litellm-model-id") == "pair-b" {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(2), "the other gateway kept sending to pair-a");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_serves_cache_and_limits() {
    let Some(binary) = redis_server() else {
        eprintln!("not run: redis_cluster_serves_cache_and_limits (no redis-server binary)");
        return;
    };
    let (_servers, ports) = start_cluster(&binary);
    let nodes: Vec<Value> = ports.iter().map(|port| json!({"host": "127.0.0.1", "port": port})).collect();
    let params = format!("{{type: redis, namespace: topo, redis_startup_nodes: {}}}", Value::Array(nodes));
    two_gateways_share_cache_and_limits(&params).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_serves_cache_and_limits() {
    let Some(binary) = redis_server() else {
        eprintln!("not run: redis_sentinel_serves_cache_and_limits (no redis-server binary)");
        return;
    };
    let (_servers, sentinel) = start_sentinel(&binary);
    let params = format!(
        "{{type: redis, namespace: topo, service_name: mymaster, sentinel_nodes: [[127.0.0.1, {sentinel}]]}}"
    );
    two_gateways_share_cache_and_limits(&params).await;
}
