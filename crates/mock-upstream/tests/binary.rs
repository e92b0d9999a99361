//! Tests of the `tollgate-mock-upstream` binary as the benchmark runs it: the port line on
//! stdout, serving, exit 0 on SIGTERM, exit 64 on bad arguments.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const BIN: &str = env!("CARGO_BIN_EXE_tollgate-mock-upstream");
const LIMIT: Duration = Duration::from_secs(5);

/// Kills the child if a test fails halfway, so no stray server outlives the test run.
struct Reaper(Child);

impl Drop for Reaper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits for the child to exit, polling, at most `LIMIT`.
fn wait_exit(child: &mut Child) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + LIMIT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

#[tokio::test]
async fn prints_port_serves_and_exits_zero_on_sigterm() {
    let child = Command::new(BIN)
        .args(["--port", "0", "--workers", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn the binary");
    let mut child = Reaper(child);

    // Read the first line on a thread so a silent binary fails the test instead of hanging it.
    let stdout = child.0.stdout.take().expect("piped stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(LIMIT).expect("port line in time");
    let addr = line
        .trim_end()
        .strip_prefix("listening on 127.0.0.1:")
        .map(|port| format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"));

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let request = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .body(Full::new(Bytes::from_static(br#"{"model":"bench","messages":[]}"#)))
        .expect("valid request");
    let response = tokio::time::timeout(LIMIT, client.request(request))
        .await
        .expect("answer in time")
        .expect("request ok");
    assert_eq!(response.status(), http::StatusCode::OK);
    let body = response.into_body().collect().await.expect("body").to_bytes();
    let value: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(value["model"], "bench");

    let killed = Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().expect("run kill");
    assert!(killed.success());
    let status = wait_exit(&mut child.0).expect("exits after sigterm");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn bad_arguments_exit_64() {
    for args in [&["--port", "nope"][..], &["--workers", "0"], &["--bogus"]] {
        let output = Command::new(BIN)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .expect("run the binary");
        assert_eq!(output.status.code(), Some(64), "{args:?}");
        assert!(!output.stderr.is_empty(), "{args:?} explains itself on stderr");
    }
}
