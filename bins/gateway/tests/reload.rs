//! The `tollgate` binary reloads its config file on SIGHUP: a new model is served, a broken
//! file is refused with one error line, and the process keeps serving throughout.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn config(models: &[&str]) -> String {
    let entries: String = models
        .iter()
        .map(|name| format!("  - model_name: {name}\n    litellm_params: {{model: fake/{name}}}\n"))
        .collect();
    format!("model_list:\n{entries}")
}

/// Status code of a chat completion of `model` (no master key: the gateway is open).
fn chat_status(port: u16, model: &str) -> Option<u16> {
    let body = format!(r#"{{"model": "{model}", "messages": [{{"role": "user", "content": "hi"}}]}}"#);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.split(' ').nth(1)?.parse().ok()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < Duration::from_secs(10), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn hangup(child: &Child) {
    let status = Command::new("kill").args(["-HUP", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
#[cfg(unix)]
fn sighup_reloads_the_config_and_refuses_a_broken_one() {
    let directory = std::env::temp_dir().join(format!("tollgate-sighup-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&directory);
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join("config.yaml");
    std::fs::write(&path, config(&["first"])).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();

    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["--config", path.to_str().unwrap(), "--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--num_workers", "1"])
        .env_remove("RUST_LOG")
        .env_remove("LITELLM_MASTER_KEY")
        .env_remove("DATABASE_URL")
        .env("LITELLM_LOG", "INFO")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let lines = BufReader::new(child.stderr.take().unwrap());
    let sink = Arc::clone(&logs);
    std::thread::spawn(move || {
        for line in lines.lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    let gateway = Gateway(child);
    let logged = |needle: &str| logs.lock().unwrap().iter().filter(|line| line.contains(needle)).count();
    wait_for("the gateway to serve", || chat_status(port, "first") == Some(200));

    // The file watcher would see these writes too: SIGHUP is sent at once, and the log
    // says which of the two did the reload.
    std::fs::write(&path, config(&["first", "second"])).unwrap();
    hangup(&gateway.0);
    wait_for("the second model", || chat_status(port, "second") == Some(200));
    wait_for("the SIGHUP log line", || logged("SIGHUP received, reloading the config") == 1);

    std::fs::write(&path, "model_list:\n  - model_name: broken\n").unwrap();
    hangup(&gateway.0);
    wait_for("the refusal", || logged("config reload refused") >= 1);
    assert_eq!(chat_status(port, "first"), Some(200), "the running config stays");
    assert_eq!(chat_status(port, "second"), Some(200));
    let refusal = logs.lock().unwrap().iter().find(|line| line.contains("config reload refused")).cloned();
    assert!(refusal.unwrap().contains("litellm_params: missing"), "the line names the problem");
    drop(gateway);
}
