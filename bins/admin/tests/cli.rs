//! The built binary against a real gateway started in-process: management commands, their
//! tables and JSON, error exits, and `migrate` on fresh and unreachable databases.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::Value;

const MASTER_KEY: &str = "sk-admin-test";

/// A database file no other test (or earlier run) uses.
fn temp_db(name: &str) -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or_default();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("tollgate-admin-{name}-{}-{nanos}-{n}.db", std::process::id()))
}

/// Starts a gateway on a fresh database; returns its address and the database file.
async fn start_gateway() -> (SocketAddr, PathBuf) {
    let db_path = temp_db("gateway");
    let yaml = format!(
        "model_list:\n  - model_name: gpt-4o\n    litellm_params: {{model: fake/gpt-4o}}\ngeneral_settings:\n  master_key: {MASTER_KEY}\n  database_url: \"sqlite://{}?mode=rwc\"\n",
        db_path.display()
    );
    let config =
        tollgate::GatewayConfig::from_yaml(&yaml, &std::collections::HashMap::<String, String>::new())
            .unwrap();
    let gateway = tollgate::Gateway::from_config(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(gateway.serve(listener, std::future::pending()));
    (addr, db_path)
}

/// Runs the binary with `args`, off the runtime so the gateway keeps serving meanwhile.
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tollgate-admin"))
            .args(&args)
            // The caller's environment must not pick the gateway or key for us.
            .env_remove("TOLLGATE_URL")
            .env_remove("LITELLM_MASTER_KEY")
            .env_remove("TOLLGATE_MASTER_KEY")
            .env_remove("DATABASE_URL")
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// Runs a management command against the gateway at `addr` with `key`.
async fn admin_as(addr: SocketAddr, key: &str, args: &[&str]) -> Output {
    let mut all: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
    all.extend(["--url".to_owned(), format!("http://{addr}"), "--master-key".to_owned(), key.to_owned()]);
    run(all).await
}

async fn admin(addr: SocketAddr, args: &[&str]) -> Output {
    admin_as(addr, MASTER_KEY, args).await
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Asserts success and returns stdout.
fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what}: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        stdout(output),
        stderr(output)
    );
    stdout(output)
}

fn json(output: &Output, what: &str) -> Value {
    let text = ok(output, what);
    serde_json::from_str(&text).unwrap_or_else(|error| panic!("{what}: not JSON ({error}): {text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manages_teams_keys_users_and_budgets() {
    let (addr, db_path) = start_gateway().await;

    let out = ok(&admin(addr, &["team", "create", "--team-id", "t1", "--alias", "T1"]).await, "team create");
    assert!(out.lines().any(|line| line.starts_with("t1") && line.contains("T1")), "{out}");

    let out = admin(
        addr,
        &["key", "create", "--alias", "a1", "--team-id", "t1", "--models", "gpt-4o", "--max-budget", "5"],
    )
    .await;
    let out = ok(&out, "key create");
    let key = out
        .lines()
        .find_map(|line| line.strip_prefix("key: "))
        .unwrap_or_else(|| panic!("no key line: {out}"))
        .trim()
        .to_owned();
    assert!(key.starts_with("sk-"), "{out}");
    assert!(
        out.lines().any(|line| line.contains("a1") && line.contains("t1") && line.contains("gpt-4o")),
        "{out}"
    );

    let list = json(&admin(addr, &["key", "list", "--json"]).await, "key list --json");
    assert_eq!(list["total_count"], 1, "{list}");
    assert_eq!(list["keys"][0]["key_alias"], "a1", "{list}");
    assert_eq!(list["keys"][0]["max_budget"], 5.0, "{list}");

    let table = ok(&admin(addr, &["key", "list"]).await, "key list");
    assert!(table.starts_with("key_name"), "{table}");
    assert!(table.lines().any(|line| line.contains("a1")), "{table}");

    ok(&admin(addr, &["key", "block", &key]).await, "key block");
    let info = json(&admin(addr, &["key", "info", &key, "--json"]).await, "key info --json");
    assert_eq!(info["info"]["blocked"], true, "{info}");

    let out = ok(
        &admin(addr, &["key", "update", &key, "--set", "key_alias=renamed", "--rpm-limit", "7"]).await,
        "key update",
    );
    assert!(out.contains("renamed"), "{out}");

    ok(&admin(addr, &["key", "delete", &key]).await, "key delete");
    let gone = admin(addr, &["key", "info", &key]).await;
    assert_eq!(gone.status.code(), Some(1), "{}", stderr(&gone));
    assert!(stderr(&gone).starts_with("tollgate-admin: 404 "), "{}", stderr(&gone));

    ok(
        &admin(addr, &["user", "create", "--user-id", "u1", "--email", "u1@example.com"]).await,
        "user create",
    );
    let users = ok(&admin(addr, &["user", "list"]).await, "user list");
    assert!(users.lines().any(|line| line.starts_with("u1") && line.contains("u1@example.com")), "{users}");

    ok(&admin(addr, &["budget", "create", "--budget-id", "b1", "--max-budget", "3"]).await, "budget create");
    let budgets = ok(&admin(addr, &["budget", "list"]).await, "budget list");
    assert!(budgets.lines().any(|line| line.starts_with("b1") && line.contains("3.0")), "{budgets}");

    let refused = admin_as(addr, "sk-wrong", &["key", "list"]).await;
    assert_eq!(refused.status.code(), Some(1), "{}", stderr(&refused));
    assert!(stderr(&refused).contains("401"), "{}", stderr(&refused));
    // Best effort: a leftover file in the temp dir harms nothing.
    let _ = std::fs::remove_file(db_path);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_an_unreachable_gateway() {
    // A port that was free a moment ago: nothing listens there now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let out = admin(addr, &["team", "list"]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains(&format!("http://{addr}/team/list")), "{}", stderr(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_once_and_fails_cleanly() {
    let db_path = temp_db("migrate");
    let url = format!("sqlite://{}?mode=rwc", db_path.display());
    let first = ok(&run(vec!["migrate".into(), "--database-url".into(), url.clone()]).await, "migrate");
    assert_eq!(first.trim(), "migrations applied: 3");
    let second = ok(&run(vec!["migrate".into(), "--database-url".into(), url]).await, "migrate again");
    assert_eq!(second.trim(), "migrations applied: 0");

    let failed = run(vec![
        "migrate".into(),
        "--database-url".into(),
        "postgres://nobody:hunter2@127.0.0.1:1/x".into(),
    ])
    .await;
    assert_eq!(failed.status.code(), Some(1), "{}", stderr(&failed));
    let message = stderr(&failed);
    assert!(message.contains("127.0.0.1:1"), "{message}");
    assert!(!message.contains("hunter2"), "the password leaked: {message}");
    let _ = std::fs::remove_file(db_path);
}
