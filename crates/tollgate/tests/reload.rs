//! Config reload while serving: the file rewritten under load (once to an invalid config)
//! loses no request, serves new models after each good reload and keeps the old config
//! after the bad one; a stream in flight finishes on the config it started with.

mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::*;
use tollgate::Reloader;
use tollgate_mock_upstream::{Behavior, MockUpstream};

fn hello(model: &str, stream: bool) -> Value {
    json!({"model": model, "stream": stream, "messages": [{"role": "user", "content": "hello"}]})
}

/// The test config with these extra aliases on the mock.
fn config_with(base_url: &str, extra: &[&str]) -> String {
    let mut yaml = mock_config(base_url, "");
    let models: String = extra
        .iter()
        .map(|name| {
            format!(
                "  - model_name: {name}\n    litellm_params:\n      model: openai/mock-model\n      api_base: {base_url}\n      api_key: {UPSTREAM_KEY}\n"
            )
        })
        .collect();
    yaml = yaml.replacen("general_settings:", &format!("{models}general_settings:"), 1);
    yaml
}

fn temp_config(name: &str, yaml: &str) -> PathBuf {
    let directory = std::env::temp_dir().join(format!("tollgate-reload-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("config.yaml");
    std::fs::write(&path, yaml).unwrap();
    path
}

/// Writes the file as editors do: a new file renamed over the old one.
fn replace(path: &Path, yaml: &str) {
    let next = path.with_extension("yaml.tmp");
    std::fs::write(&next, yaml).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// Starts a gateway on two worker threads from the file at `path`, watching it.
async fn start_watching(path: &Path) -> (TestGateway, Reloader) {
    let yaml = std::fs::read_to_string(path).unwrap();
    let mut reloader = None;
    let gateway = TestGateway::start_with(&yaml, |gateway| {
        reloader = Some(gateway.reloader());
        gateway.with_workers(2)
    })
    .await;
    let reloader = reloader.unwrap();
    tokio::spawn(reloader.clone().watch_file(path.to_path_buf()));
    (gateway, reloader)
}

/// Calls `model` until it answers 200; returns how long that took.
async fn until_served(gateway: &TestGateway, model: &str) -> Duration {
    let started = Instant::now();
    loop {
        if chat(gateway, hello(model, false)).await.status == 200 {
            return started.elapsed();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "{model} not served within 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_loses_no_request() {
    let mock = MockUpstream::start().await;
    let path = temp_config("load", &config_with(&mock.base_url(), &[]));
    let (gateway, _reloader) = start_watching(&path).await;
    let gateway = Arc::new(gateway);

    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..6)
        .map(|index| {
            let (gateway, stop, served, failed) =
                (Arc::clone(&gateway), Arc::clone(&stop), Arc::clone(&served), Arc::clone(&failed));
            tokio::spawn(async move {
                // One client per task: its connections are kept alive across the reloads.
                let http = client();
                let mut round = 0usize;
                // Bounded: at most 2000 requests per client.
                while !stop.load(Ordering::Relaxed) && round < 2000 {
                    round += 1;
                    let stream = (index + round).is_multiple_of(2);
                    let body = hello("general-purpose", stream).to_string();
                    let reply =
                        send_on(&http, post(&gateway.url("/v1/chat/completions"), Some(MASTER_KEY), body))
                            .await;
                    let complete = reply.status == 200
                        && if stream {
                            reply.events().last().map(String::as_str) == Some("[DONE]")
                        } else {
                            reply.json()["choices"][0]["message"]["content"].is_string()
                        };
                    if complete {
                        served.fetch_add(1, Ordering::Relaxed);
                    } else {
                        failed.fetch_add(1, Ordering::Relaxed);
                        eprintln!("failed: {} {:?}", reply.status, String::from_utf8_lossy(&reply.body));
                    }
                }
            })
        })
        .collect();

    let mut reload_times = Vec::new();
    for round in 1..=3 {
        let name = format!("added-{round}");
        let extra: Vec<String> = (1..=round).map(|n| format!("added-{n}")).collect();
        let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
        replace(&path, &config_with(&mock.base_url(), &extra));
        reload_times.push(until_served(&gateway, &name).await);
        if round == 2 {
            // A broken file: refused, and everything served before still is.
            replace(&path, "model_list: [\n  - model_name: broken\n");
            tokio::time::sleep(Duration::from_millis(600)).await;
            for model in ["general-purpose", "added-1", "added-2"] {
                assert_eq!(
                    chat(&gateway, hello(model, false)).await.status,
                    200,
                    "{model} after a bad config"
                );
            }
        }
    }
    // The model removed by a reload is no longer served.
    replace(&path, &config_with(&mock.base_url(), &["added-3"]));
    let started = Instant::now();
    while chat(&gateway, hello("added-1", false)).await.status == 200 {
        assert!(started.elapsed() < Duration::from_secs(5), "added-1 still served");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(chat(&gateway, hello("added-3", false)).await.status, 200);
    // The deployment-state metric follows the reloaded list.
    let info = send(get(&gateway.url("/model/info"), Some(MASTER_KEY))).await.json();
    let added = info["data"].as_array().unwrap().iter().find(|m| m["model_name"] == "added-3").cloned();
    let id = added.expect("added-3 listed")["model_info"]["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    loop {
        let metrics = send(get(&gateway.url("/metrics"), Some(MASTER_KEY))).await;
        let text = String::from_utf8_lossy(&metrics.body).into_owned();
        if text.lines().any(|line| line.starts_with("litellm_deployment_state") && line.contains(&id)) {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(3), "added-3 not in the deployment-state metric");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let (served, failed) = (served.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    eprintln!(
        "served {served} requests during 5 reloads (one refused); reload to first answer: {:?}",
        reload_times
    );
    assert_eq!(failed, 0, "requests lost during reloads");
    assert!(served > 50, "the load ran: {served}");
}

#[tokio::test]
async fn a_stream_in_flight_finishes_after_its_model_is_reloaded_away() {
    let mock = MockUpstream::start().await;
    let path = temp_config("stream", &config_with(&mock.base_url(), &["leaving"]));
    let (gateway, reloader) = start_watching(&path).await;
    mock.push(Behavior::SlowStream { chunk_delay: Duration::from_millis(100), chunks: 8 });
    let incoming = open_stream(&gateway, "leaving").await;

    // Swapped through the embedder's API this time, while the stream runs.
    let without = tollgate::GatewayConfig::from_yaml(
        &config_with(&mock.base_url(), &[]),
        &std::collections::HashMap::<String, String>::new(),
    )
    .unwrap();
    reloader.reload(without);
    assert_error(&chat(&gateway, hello("leaving", false)).await, 400);

    let mut bytes = Vec::new();
    read_rest(incoming, &mut bytes).await;
    let events = sse_events(&bytes);
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "{events:?}");
    let text: String = events
        .iter()
        .filter_map(|event| serde_json::from_str::<Value>(event).ok())
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str().map(str::to_owned))
        .collect();
    assert!(!text.is_empty(), "the stream carried its content: {events:?}");
}

#[tokio::test]
async fn a_bad_config_file_is_refused_and_named() {
    let mock = MockUpstream::start().await;
    let path = temp_config("refused", &config_with(&mock.base_url(), &[]));
    let (gateway, reloader) = start_watching(&path).await;
    std::fs::write(&path, "model_list:\n  - model_name: a\n    litellm_params: {api_key: x}\n").unwrap();
    let error = reloader.reload_file(&path).expect_err("refused");
    assert_eq!(error.to_string(), "model_list[0].litellm_params.model: missing");
    assert_eq!(chat(&gateway, hello("general-purpose", false)).await.status, 200);
    let missing = path.with_file_name("nowhere.yaml");
    assert!(reloader.reload_file(&missing).is_err());
    assert_eq!(chat(&gateway, hello("general-purpose", false)).await.status, 200);
}
