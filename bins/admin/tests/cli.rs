//! The built binary: `check-config` on the seeds' configs (tests/fixtures); against a real
//! gateway started in-process, management commands, their tables and JSON and error exits;
//! `migrate` on fresh and unreachable databases.

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
    let second =
        ok(&run(vec!["migrate".into(), "--database-url".into(), url.clone()]).await, "migrate again");
    assert_eq!(second.trim(), "migrations applied: 0");

    // A newer Tollgate migrated it (a rollback): nothing to do, said on stderr, exit 0.
    let store = tollgate_storage::Store::connect(&url).await.unwrap();
    store
        .execute_script(
            "INSERT INTO tollgate_migrations (version, applied_at) VALUES ('m20991231_000001_future', 0)",
        )
        .await
        .unwrap();
    drop(store);
    let older = run(vec!["migrate".into(), "--database-url".into(), url]).await;
    assert_eq!(ok(&older, "migrate a newer database").trim(), "migrations applied: 0");
    assert!(
        stderr(&older).contains("the database was migrated by a newer Tollgate; nothing to do"),
        "{}",
        stderr(&older)
    );

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

/// The fixtures: the seeds' configs (tests/fixtures/*.yaml).
fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// Runs `check-config` with exactly `env` as its environment, so nothing the caller
/// exported (a provider key, REDIS_HOST, CONFIG_FILE_PATH) changes the verdicts.
fn check_config(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate-admin"))
        .arg("check-config")
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// The status and reason the table gives `path`.
fn verdict(table: &str, path: &str) -> (String, String) {
    let line = table
        .lines()
        .find(|line| line.split_whitespace().next() == Some(path))
        .unwrap_or_else(|| panic!("no row for {path}:\n{table}"));
    let rest = line[path.len()..].trim_start();
    let (status, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    (status.to_owned(), reason.trim().to_owned())
}

fn assert_verdict(table: &str, path: &str, status: &str, reason: &str) {
    assert_eq!(verdict(table, path), (status.to_owned(), reason.to_owned()), "{path} in:\n{table}");
}

/// The last line: `N settings: S supported, I ignored, U unknown`.
fn summary(table: &str) -> &str {
    table.lines().last().unwrap_or_default()
}

#[test]
fn check_config_reads_seed_002_models_and_names_a_missing_key() {
    let env = [
        ("AZURE_API_KEY", "az"),
        ("AZURE_API_BASE", "https://example.openai.azure.com"),
        ("ANTHROPIC_API_KEY", "an"),
        ("GEMINI_API_KEY", "ge"),
    ];
    let out = check_config(&[&fixture("seed-002.yaml"), "--strict"], &env);
    let table = ok(&out, "seed 002");
    assert!(
        table.lines().any(|line| line
            .trim_start()
            .starts_with("gpt-4o -> azure/gpt-4o at https://example.openai.azure.com")),
        "{table}"
    );
    assert!(table.contains("master key: NOT SET"), "{table}");
    assert_verdict(&table, "model_list", "supported", "-");
    assert_verdict(&table, "model_list[0].litellm_params.model", "supported", "-");
    assert_verdict(&table, "model_list[2].litellm_params.api_key", "supported", "-");
    assert_eq!(summary(&table), "13 settings: 13 supported, 0 ignored, 0 unknown");

    // Without the Secret mounted: invalid, with the exact path, as `tollgate` would stop.
    let out = check_config(&[&fixture("seed-002.yaml")], &[]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(
        stderr(&out).ends_with(
            "seed-002.yaml: model_list[0].litellm_params.api_key: environment variable AZURE_API_KEY is not set\n"
        ),
        "{}",
        stderr(&out)
    );
    let out = check_config(&[&fixture("seed-002.yaml"), "--json"], &[]);
    assert_eq!(out.status.code(), Some(64));
    let report: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(report["valid"], false);
    assert_eq!(report["error"]["path"], "model_list[0].litellm_params.api_key", "{report}");
}

#[test]
fn check_config_reads_seed_003_callbacks_and_cache() {
    let env = [("VERTEXAI_PROJECT", "p"), ("LANGFUSE_PUBLIC_KEY", "pk"), ("LANGFUSE_SECRET_KEY", "sk")];
    // The runbook's cache names no host: without REDIS_HOST that is an error at its path.
    let out = check_config(&[&fixture("seed-003.yaml")], &env);
    assert_eq!(out.status.code(), Some(64), "{}", stdout(&out));
    assert!(
        stderr(&out).contains(
            "litellm_settings.cache_params.host: missing: a redis cache needs host (or REDIS_HOST or REDIS_URL)"
        ),
        "{}",
        stderr(&out)
    );

    let env =
        [env.as_slice(), &[("REDIS_HOST", "valkey-master.hyperplane-valkey.svc.cluster.local")]].concat();
    let table = ok(&check_config(&[&fixture("seed-003.yaml"), "--strict"], &env), "seed 003");
    assert_verdict(&table, "model_list[0].litellm_params.vertex_project", "supported", "-");
    assert_verdict(&table, "litellm_settings.success_callback", "supported", "-");
    assert_verdict(&table, "litellm_settings.langfuse_host", "supported", "-");
    assert_verdict(&table, "litellm_settings.cache_params.ttl", "supported", "-");
    assert_verdict(
        &table,
        "litellm_settings.cache_params.max_in_memory_cache_size",
        "ignored",
        "the in-process cache holds up to 64 MiB, not a number of entries",
    );
    assert!(summary(&table).ends_with(" 1 ignored, 0 unknown"), "{table}");

    let report = json(&check_config(&[&fixture("seed-003.yaml"), "--json"], &env), "seed 003 --json");
    assert_eq!(report["valid"], true);
    assert_eq!(report["models"][0]["model"], "vertex_ai/gemini-2.0-flash", "{report}");
    let ignored: Vec<&Value> =
        report["settings"].as_array().unwrap().iter().filter(|s| s["status"] == "ignored").collect();
    assert_eq!(ignored.len(), 1, "{report}");
    assert_eq!(ignored[0]["path"], "litellm_settings.cache_params.max_in_memory_cache_size");
    assert_eq!(report["summary"]["ignored"], 1);
    assert_eq!(report["summary"]["unknown"], 0);

    let table = ok(
        &check_config(&[&fixture("seed-003-prometheus.yaml")], &[("VERTEXAI_PROJECT", "p")]),
        "prometheus",
    );
    assert_verdict(&table, "litellm_settings.failure_callback", "supported", "-");
    assert!(summary(&table).ends_with(" 0 ignored, 0 unknown"), "{table}");
}

#[test]
fn check_config_reads_seed_001_redis_and_database() {
    let env = [
        ("OPENAI_API_KEY", "o"),
        ("ANTHROPIC_API_KEY", "a"),
        ("LITELLM_MASTER_KEY", "sk-m"),
        ("DATABASE_URL", "postgresql://litellm:pw@db:5432/app?schema=litellm"),
    ];
    let table = ok(&check_config(&["-c", &fixture("seed-001.yaml"), "--strict"], &env), "seed 001");
    assert!(table.contains("master key: set"), "{table}");
    assert_verdict(&table, "router_settings.num_retries", "supported", "-");
    assert_verdict(&table, "router_settings.redis_host", "supported", "-");
    assert_verdict(&table, "litellm_settings.cache_params.namespace", "supported", "-");
    assert_verdict(&table, "general_settings.database_url", "supported", "-");
    assert_verdict(
        &table,
        "litellm_settings.cache_params.redis_flush_size",
        "ignored",
        "cache writes are not batched",
    );
    // Rows follow the file's sections: the router's before litellm_settings.
    let position = |path: &str| table.find(&format!("\n{path} ")).unwrap_or_else(|| panic!("{path}"));
    assert!(position("router_settings.num_retries") < position("litellm_settings.cache"), "{table}");
}

#[test]
fn check_config_refuses_seed_004s_python_guardrail_and_reads_its_tollgate_form() {
    let env = [
        ("CA_VLLM_LOCAL_API_KEY", "v"),
        ("PROXY_MASTER_KEY", "sk-m"),
        ("DATABASE_URL", "postgresql://litellm:pw@cloudnative-pg-cluster-rw/litellm"),
    ];
    // A guardrail that cannot run must not be skipped silently: the config is invalid.
    let python = check_config(&[&fixture("seed-004.yaml")], &env);
    assert_eq!(python.status.code(), Some(64), "{}", stderr(&python));
    let message = stderr(&python);
    assert!(message.contains("guardrails[0].litellm_params.guardrail"), "{message}");
    assert!(message.contains("`guardrail: message_trimming`"), "{message}");
    let table = ok(&check_config(&[&fixture("seed-004-tollgate.yaml"), "--strict"], &env), "seed 004");
    assert_verdict(&table, "guardrails", "supported", "-");
    assert_verdict(&table, "guardrails[0].litellm_params.guardrail", "supported", "-");
    assert_verdict(&table, "model_list[0].litellm_params.guardrails", "supported", "-");
    assert_verdict(
        &table,
        "model_list[0].model_info.description",
        "ignored",
        "metadata returned by /model/info, not acted on",
    );
    assert_eq!(summary(&table), "17 settings: 16 supported, 1 ignored, 0 unknown");
}

#[test]
fn check_config_finds_seed_000_fully_supported() {
    let env = [("LLM_PROVIDER_OPENAI_API_KEY", "o"), ("LITELLM_MASTER_KEY", "sk-m")];
    let table = ok(&check_config(&[&fixture("seed-000.yaml"), "--strict"], &env), "seed 000");
    assert_verdict(&table, "model_list[2].model_info.mode", "supported", "-");
    assert_verdict(&table, "general_settings.master_key", "supported", "-");
    assert_eq!(summary(&table), "21 settings: 21 supported, 0 ignored, 0 unknown");
}

#[test]
fn check_config_strict_fails_only_on_unknown_settings() {
    let path = fixture("unknown.yaml");
    let table = ok(&check_config(&[&path], &[]), "unknown settings without --strict");
    assert_verdict(&table, "routing_settings", "unknown", "-");
    assert_verdict(&table, "model_list[0].litellm_params.temprature", "unknown", "-");
    assert_verdict(
        &table,
        "litellm_settings.set_verbose",
        "ignored",
        "deprecated in LiteLLM; use LITELLM_LOG or --debug",
    );
    assert_verdict(&table, "litellm_settings.drop_params", "supported", "-");
    assert!(summary(&table).ends_with(" 1 ignored, 2 unknown"), "{table}");

    let strict = check_config(&[&path, "--strict"], &[]);
    assert_eq!(strict.status.code(), Some(65), "{}", stderr(&strict));
    assert!(
        stderr(&strict).ends_with("unknown.yaml: 2 unknown settings (--strict)\n"),
        "{}",
        stderr(&strict)
    );
    assert_eq!(stdout(&strict), table, "the report is printed all the same");

    // CONFIG_FILE_PATH, as `tollgate` reads it, names the file too.
    let from_env = check_config(&["--json"], &[("CONFIG_FILE_PATH", &path)]);
    let report = json(&from_env, "CONFIG_FILE_PATH");
    let typo = report["settings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|setting| setting["path"] == "model_list[0].litellm_params.temprature")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!((&typo["status"], &typo["reason"]), (&Value::from("unknown"), &Value::Null));

    let none = check_config(&[], &[]);
    assert_eq!(none.status.code(), Some(64));
    assert!(stderr(&none).contains("check-config needs a config file"), "{}", stderr(&none));
    let missing = check_config(&[&fixture("no-such.yaml")], &[]);
    assert_eq!(missing.status.code(), Some(64));
    assert!(stderr(&missing).contains("no-such.yaml"), "{}", stderr(&missing));
}
