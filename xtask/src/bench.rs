//! `cargo xtask bench`: builds release binaries, starts the mock upstream and the gateway
//! (and a plain nginx proxy hop when nginx is installed) on loopback, drives each with a
//! closed-loop HTTP/1.1 load generator at several connection counts, non-streaming and
//! streaming, and prints throughput, latency percentiles, the gateway's added latency and
//! CPU time per request, its memory, and its start-up time.
//!
//! Every run is bounded in time; all traffic goes to 127.0.0.1.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

mod cache;
mod guardrails;
mod otel;
mod rate_limits;
mod setups;
mod spend_logs;

const MASTER_KEY: &str = "sk-bench-master";
const WARMUP: Duration = Duration::from_secs(1);

struct Options {
    duration: Duration,
    connections: Vec<usize>,
    build: bool,
    nginx: bool,
    gateway_workers: usize,
    /// Send a virtual key (made through /key/generate) instead of the master key, so the
    /// key cache and admission checks are on the measured path.
    virtual_key: bool,
    /// Instead of the usual runs: a key with rpm, tpm and parallel limits against one
    /// without, counted in process and in Redis (see `rate_limits`).
    rate_limits: bool,
    /// The Redis for `--rate-limits` and `--cache` (default redis://127.0.0.1:6379).
    redis: Option<String>,
    /// Instead of the usual runs: cache hits, with no cache, the in-process cache and Redis
    /// (see `cache`).
    cache: bool,
    /// Instead of the usual runs: spend logs off against on, on SQLite and on the PostgreSQL
    /// of `--database-url` (see `spend_logs`).
    spend_logs: bool,
    database_url: Option<String>,
    /// Instead of the usual runs: traces off against on (see `otel`).
    otel: bool,
    /// For `--otel`: another gateway binary measured as the reference.
    baseline: Option<PathBuf>,
    /// Instead of the usual runs: trimming and PII masking off against on (see `guardrails`).
    guardrails: bool,
}

fn parse(args: &[String]) -> anyhow::Result<Options> {
    let mut options = Options {
        duration: Duration::from_secs(5),
        connections: vec![1, 32, 256],
        build: true,
        nginx: true,
        gateway_workers: 2,
        virtual_key: false,
        rate_limits: false,
        redis: None,
        cache: false,
        spend_logs: false,
        database_url: None,
        otel: false,
        baseline: None,
        guardrails: false,
    };
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--duration" => {
                let secs: f64 = args.next().context("--duration needs seconds")?.parse()?;
                if !(0.5..=120.0).contains(&secs) {
                    bail!("--duration must be between 0.5 and 120 seconds");
                }
                options.duration = Duration::from_secs_f64(secs);
            }
            "--connections" => {
                options.connections = args
                    .next()
                    .context("--connections needs a list")?
                    .split(',')
                    .map(|n| n.trim().parse::<usize>().context("connection counts are numbers"))
                    .collect::<Result<_, _>>()?;
                if options.connections.iter().any(|&n| n == 0 || n > 1024) {
                    bail!("connection counts must be between 1 and 1024");
                }
            }
            "--gateway-workers" => {
                options.gateway_workers = args.next().context("--gateway-workers needs a number")?.parse()?;
            }
            "--no-build" => options.build = false,
            "--no-nginx" => options.nginx = false,
            "--virtual-key" => options.virtual_key = true,
            "--rate-limits" => options.rate_limits = true,
            "--cache" => options.cache = true,
            "--spend-logs" => options.spend_logs = true,
            "--otel" => options.otel = true,
            "--guardrails" => options.guardrails = true,
            "--baseline" => {
                options.baseline = Some(PathBuf::from(args.next().context("--baseline needs a binary")?))
            }
            "--database-url" => {
                options.database_url = Some(args.next().context("--database-url needs a url")?.clone())
            }
            "--redis" => options.redis = Some(args.next().context("--redis needs a url")?.clone()),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(options)
}

/// A child process killed when dropped, so an error never leaves servers behind.
struct Server {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    /// SIGTERM first, so nginx's master takes its workers down with it; SIGKILL after 3 s.
    fn drop(&mut self) {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// CPU time (user + system) a process has used so far.
fn cpu_time(pids: &[u32]) -> Duration {
    let ticks_per_sec = 100.0; // CLK_TCK on Linux
    let mut ticks = 0u64;
    for pid in pids {
        // /proc/PID/task/*/stat would miss exited threads; the process line sums them all.
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            && let Some((_, after_name)) = stat.rsplit_once(')')
        {
            let fields: Vec<&str> = after_name.split_whitespace().collect();
            // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the name.
            ticks += fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
            ticks += fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_sec)
}

/// Resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Samples a process's resident memory every 20 ms on its own thread, keeping the peak.
struct RssSampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl RssSampler {
    fn start(pid: u32) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid));
                std::thread::sleep(Duration::from_millis(20));
            }
            peak
        });
        Self { stop, thread }
    }

    fn stop(self) -> u64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap_or(0)
    }
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target"))
}

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let options = parse(args)?;
    let root = crate::workspace_root();
    if options.build {
        eprintln!("building release binaries…");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&root)
            .args(["build", "--release", "-p", "tollgate-gateway", "-p", "tollgate-mock-upstream"])
            .status()?;
        if !status.success() {
            bail!("release build failed");
        }
    }
    let release = target_dir().join("release");
    let work = std::env::temp_dir().join(format!("tollgate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    if options.cache {
        let result = cache::run(&options, &release, &work);
        let _ = std::fs::remove_dir_all(&work);
        return result;
    }
    if options.otel {
        let result = otel::run(&options, &release, &work);
        let _ = std::fs::remove_dir_all(&work);
        return result;
    }
    if options.guardrails {
        let result = guardrails::run(&options, &release, &work);
        let _ = std::fs::remove_dir_all(&work);
        return result;
    }
    if options.spend_logs {
        let result = spend_logs::run(&options, &release, &work);
        let _ = std::fs::remove_dir_all(&work);
        return result;
    }
    if options.rate_limits {
        let result = rate_limits::run(&options, &release, &work);
        let _ = std::fs::remove_dir_all(&work);
        return result;
    }

    let mock = start_mock(&release.join("tollgate-mock-upstream"))?;
    let (gateway, ready_ms) =
        start_gateway(&release.join("tollgate"), &work, mock.addr, options.gateway_workers)?;
    let idle_rss = rss_kib(gateway.pid());
    let nginx = if options.nginx { start_nginx(&work, mock.addr)? } else { None };

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bearer: Arc<str> = if options.virtual_key {
        runtime.block_on(virtual_key(gateway.addr))?.into()
    } else {
        MASTER_KEY.into()
    };
    let mut rows = Vec::new();
    let sampler = RssSampler::start(gateway.pid());
    for stream in [false, true] {
        for &connections in &options.connections {
            let mut row = Row { connections, stream, direct: None, gateway: None, nginx: None };
            row.direct = Some(runtime.block_on(measure(
                mock.addr,
                &[],
                &bearer,
                connections,
                stream,
                options.duration,
                &mock,
            ))?);
            row.gateway = Some(runtime.block_on(measure(
                gateway.addr,
                &[],
                &bearer,
                connections,
                stream,
                options.duration,
                &gateway,
            ))?);
            if let Some(nginx) = &nginx {
                let pids = nginx_pids(nginx);
                row.nginx = Some(runtime.block_on(measure(
                    nginx.addr,
                    &pids,
                    &bearer,
                    connections,
                    stream,
                    options.duration,
                    nginx,
                ))?);
            }
            eprintln!("{}", row.summary());
            rows.push(row);
        }
    }
    let peak_rss = sampler.stop().max(idle_rss);
    drop(nginx);
    drop(gateway);
    drop(mock);
    let _ = std::fs::remove_dir_all(&work);

    print_report(&options, &rows, ready_ms, idle_rss, peak_rss);
    Ok(())
}

fn read_listening_line(child: &mut Child, name: &str) -> anyhow::Result<SocketAddr> {
    let stdout = child.stdout.take().context("child stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let addr =
        line.trim().strip_prefix("listening on ").with_context(|| format!("{name} printed {line:?}"))?;
    Ok(addr.parse()?)
}

fn start_mock(binary: &Path) -> anyhow::Result<Server> {
    let mut child = Command::new(binary)
        .args(["--port", "0", "--workers", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let addr = read_listening_line(&mut child, "mock upstream")?;
    Ok(Server { name: "mock", child, addr })
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts the gateway and times exec to its first 200 from /health/readiness.
fn start_gateway(
    binary: &Path,
    work: &Path,
    mock: SocketAddr,
    workers: usize,
) -> anyhow::Result<(Server, f64)> {
    let database_url = format!("sqlite://{}/bench.db?mode=rwc", work.display());
    start_gateway_with(binary, work, mock, workers, &database_url, "")
}

/// [`start_gateway`] on the database at `database_url`, with `extra` appended to the config
/// (more `general_settings` lines, indented, or further sections).
fn start_gateway_with(
    binary: &Path,
    work: &Path,
    mock: SocketAddr,
    workers: usize,
    database_url: &str,
    extra: &str,
) -> anyhow::Result<(Server, f64)> {
    let config = work.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "model_list:\n  - model_name: bench\n    litellm_params:\n      model: openai/mock-model\n      api_base: http://{mock}/v1\n      api_key: sk-bench-upstream\ngeneral_settings:\n  master_key: {MASTER_KEY}\n  database_url: \"{database_url}\"\n{extra}"
        ),
    )?;
    let port = free_port()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let started = Instant::now();
    let child = Command::new(binary)
        .arg("--config")
        .arg(&config)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--num_workers", &workers.to_string()])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    let server = Server { name: "gateway", child, addr };
    let deadline = started + Duration::from_secs(10);
    while Instant::now() < deadline {
        if readiness_ok(addr) {
            return Ok((server, started.elapsed().as_secs_f64() * 1000.0));
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    bail!("the gateway was not ready within 10 s")
}

/// Whether something accepts connections at a `redis://` URL's host and port.
fn redis_reachable(redis: &str) -> bool {
    use std::net::ToSocketAddrs;
    let rest = redis.trim_start_matches("redis://");
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    let host_port = rest.split('/').next().unwrap_or_default();
    host_port
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok())
}

/// One blocking GET /health/readiness; true on a 200.
fn readiness_ok(addr: SocketAddr) -> bool {
    use std::io::Read;
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    if stream.write_all(b"GET /health/readiness HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

fn start_nginx(work: &Path, mock: SocketAddr) -> anyhow::Result<Option<Server>> {
    let Some(binary) =
        ["/usr/sbin/nginx", "/usr/bin/nginx"].into_iter().map(PathBuf::from).find(|p| p.exists())
    else {
        eprintln!(
            "nginx not found: skipping the nginx comparison (apt-get install nginx-light to include it)"
        );
        return Ok(None);
    };
    let port = free_port()?;
    let conf = work.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 2;\ndaemon off;\nmaster_process on;\npid {pid};\nerror_log {work}/nginx-error.log warn;\nevents {{ worker_connections 4096; }}\nhttp {{\n  access_log off;\n  client_body_temp_path {work};\n  proxy_temp_path {work};\n  upstream mock {{ server {mock}; keepalive 512; keepalive_requests 1000000; }}\n  server {{\n    listen 127.0.0.1:{port};\n    keepalive_requests 1000000;\n    location / {{\n      proxy_pass http://mock;\n      proxy_http_version 1.1;\n      proxy_set_header Connection \"\";\n      proxy_buffering off;\n    }}\n  }}\n}}\n",
            pid = work.join("nginx.pid").display(),
            work = work.display(),
        ),
    )?;
    let child =
        Command::new(binary).arg("-c").arg(&conf).arg("-p").arg(work).stderr(Stdio::null()).spawn()?;
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            bail!("nginx did not start");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Some(Server { name: "nginx", child, addr }))
}

/// nginx's master and its workers: the workers do the proxying.
fn nginx_pids(nginx: &Server) -> Vec<u32> {
    let mut pids = vec![nginx.pid()];
    if let Ok(children) = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", nginx.pid())) {
        pids.extend(children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
    }
    pids
}

struct Measurement {
    requests: u64,
    errors: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
    cpu: Duration,
}

impl Measurement {
    fn rps(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn p(&self, q: f64) -> f64 {
        self.latency_us.value_at_quantile(q) as f64
    }
    fn cpu_per_request_us(&self) -> f64 {
        if self.requests == 0 { 0.0 } else { self.cpu.as_secs_f64() * 1e6 / self.requests as f64 }
    }
}

struct Row {
    connections: usize,
    stream: bool,
    direct: Option<Measurement>,
    gateway: Option<Measurement>,
    nginx: Option<Measurement>,
}

impl Row {
    fn summary(&self) -> String {
        let fmt = |name: &str, m: &Option<Measurement>| match m {
            Some(m) => format!("{name} {:.0} rps p50 {:.0}µs", m.rps(), m.p(0.5)),
            None => String::new(),
        };
        format!(
            "{} conns {}: {} | {} | {}",
            self.connections,
            if self.stream { "stream" } else { "non-stream" },
            fmt("direct", &self.direct),
            fmt("gateway", &self.gateway),
            fmt("nginx", &self.nginx)
        )
    }
}

fn request_body(stream: bool) -> Bytes {
    let stream = if stream { r#","stream":true"# } else { "" };
    Bytes::from(format!(
        r#"{{"model":"bench","messages":[{{"role":"system","content":"You are a helpful assistant."}},{{"role":"user","content":"Write one sentence about gateways."}}],"max_tokens":64{stream}}}"#
    ))
}

/// A fresh virtual key for the bench model, made with the master key.
async fn virtual_key(gateway: SocketAddr) -> anyhow::Result<String> {
    generate_key(gateway, r#"{"models": ["bench"], "key_alias": "bench"}"#).await
}

/// A virtual key made with the master key from a `/key/generate` body.
async fn generate_key(gateway: SocketAddr, body: &'static str) -> anyhow::Result<String> {
    let stream = tokio::net::TcpStream::connect(gateway).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let connection = tokio::spawn(connection);
    let request = http::Request::post("/key/generate")
        .header(http::header::HOST, "127.0.0.1")
        .header(http::header::AUTHORIZATION, format!("Bearer {MASTER_KEY}"))
        .body(Full::new(Bytes::from_static(body.as_bytes())))?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    let answer = response.into_body().collect().await?.to_bytes();
    connection.abort();
    if !status.is_success() {
        bail!("/key/generate answered {status}: {}", String::from_utf8_lossy(&answer));
    }
    let answer: serde_json::Value = serde_json::from_slice(&answer)?;
    Ok(answer["key"].as_str().context("no key in /key/generate's answer")?.to_owned())
}

/// Drives `connections` closed-loop clients at `addr` for a warm-up and then `duration`.
async fn measure(
    addr: SocketAddr,
    extra_pids: &[u32],
    bearer: &Arc<str>,
    connections: usize,
    stream: bool,
    duration: Duration,
    server: &Server,
) -> anyhow::Result<Measurement> {
    let body = request_body(stream);
    // Warm-up: connections, pools and caches settle before anything counts.
    drive(addr, bearer, connections, body.clone(), WARMUP).await?;
    let pids: Vec<u32> = if extra_pids.is_empty() { vec![server.pid()] } else { extra_pids.to_vec() };
    let cpu_before = cpu_time(&pids);
    let started = Instant::now();
    let (requests, errors, latency_us) = drive(addr, bearer, connections, body, duration).await?;
    let elapsed = started.elapsed();
    let cpu = cpu_time(&pids).saturating_sub(cpu_before);
    if requests == 0 {
        bail!("{}: no request completed", server.name);
    }
    Ok(Measurement { requests, errors, elapsed, latency_us, cpu })
}

async fn drive(
    addr: SocketAddr,
    bearer: &Arc<str>,
    connections: usize,
    body: Bytes,
    duration: Duration,
) -> anyhow::Result<(u64, u64, Histogram<u64>)> {
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::with_capacity(connections);
    for _ in 0..connections {
        tasks.push(tokio::spawn(client(addr, Arc::clone(bearer), body.clone(), deadline)));
    }
    let mut total = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut requests, mut errors) = (0, 0);
    for task in tasks {
        let (done, failed, histogram) = task.await??;
        requests += done;
        errors += failed;
        total.add(histogram)?;
    }
    Ok((requests, errors, total))
}

/// One keep-alive connection sending requests back to back until the deadline; a connection
/// the server closes counts one error and is opened again.
async fn client(
    addr: SocketAddr,
    bearer: Arc<str>,
    body: Bytes,
    deadline: tokio::time::Instant,
) -> anyhow::Result<(u64, u64, Histogram<u64>)> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut done, mut failed) = (0u64, 0u64);
    while tokio::time::Instant::now() < deadline {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        let connection = tokio::spawn(connection);
        while tokio::time::Instant::now() < deadline {
            if sender.ready().await.is_err() {
                failed += 1;
                break;
            }
            let request = http::Request::post("/v1/chat/completions")
                .header(http::header::HOST, "127.0.0.1")
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(http::header::AUTHORIZATION, format!("Bearer {bearer}"))
                .body(Full::new(body.clone()))?;
            let started = Instant::now();
            let limit =
                deadline.saturating_duration_since(tokio::time::Instant::now()) + Duration::from_secs(5);
            let outcome = tokio::time::timeout(limit, async {
                let response = sender.send_request(request).await?;
                let ok = response.status().is_success();
                response.into_body().collect().await?;
                anyhow::Ok(ok)
            })
            .await;
            match outcome {
                Ok(Ok(true)) => {
                    done += 1;
                    histogram.record(started.elapsed().as_micros().max(1) as u64)?;
                }
                Ok(Ok(false)) => failed += 1,
                Ok(Err(_)) | Err(_) => {
                    failed += 1;
                    break;
                }
            }
        }
        connection.abort();
    }
    Ok((done, failed, histogram))
}

fn print_report(options: &Options, rows: &[Row], ready_ms: f64, idle_rss: u64, peak_rss: u64) {
    let date = Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("## cargo xtask bench, {date}\n");
    println!(
        "{cpus} CPUs; load generator (1 thread), mock upstream (1 worker), gateway ({} workers){} on one machine; {:.0} s per run after a {:.0} s warm-up; HTTP/1.1 keep-alive, POST /v1/chat/completions with the {}.\n",
        options.gateway_workers,
        if rows.iter().any(|r| r.nginx.is_some()) { " and nginx (2 worker processes)" } else { "" },
        options.duration.as_secs_f64(),
        WARMUP.as_secs_f64(),
        if options.virtual_key { "virtual key (cache, model and budget checks)" } else { "master key" }
    );
    println!("| mode | conns | target | req/s | p50 µs | p90 µs | p99 µs | errors | CPU µs/req |");
    println!("|---|---:|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let mode = if row.stream { "stream" } else { "non-stream" };
        for (name, m) in
            [("direct to mock", &row.direct), ("tollgate", &row.gateway), ("nginx hop", &row.nginx)]
        {
            if let Some(m) = m {
                println!(
                    "| {mode} | {} | {name} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} |",
                    row.connections,
                    m.rps(),
                    m.p(0.5),
                    m.p(0.9),
                    m.p(0.99),
                    m.errors,
                    if name == "direct to mock" {
                        "–".to_owned()
                    } else {
                        format!("{:.1}", m.cpu_per_request_us())
                    }
                );
            }
        }
    }
    println!(
        "\n| mode | conns | tollgate / direct throughput | tollgate added p50 µs | nginx / direct throughput | nginx added p50 µs | tollgate CPU / nginx CPU |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let (Some(direct), Some(gateway)) = (&row.direct, &row.gateway) else { continue };
        let mode = if row.stream { "stream" } else { "non-stream" };
        let (nginx_ratio, nginx_added, cpu_ratio) = match &row.nginx {
            Some(n) => (
                format!("{:.0}%", n.rps() / direct.rps() * 100.0),
                format!("{:.0}", n.p(0.5) - direct.p(0.5)),
                format!(
                    "{:.2}×",
                    gateway.cpu_per_request_us() / n.cpu_per_request_us().max(f64::MIN_POSITIVE)
                ),
            ),
            None => ("–".into(), "–".into(), "–".into()),
        };
        println!(
            "| {mode} | {} | {:.0}% | {:.0} | {nginx_ratio} | {nginx_added} | {cpu_ratio} |",
            row.connections,
            gateway.rps() / direct.rps() * 100.0,
            gateway.p(0.5) - direct.p(0.5),
        );
    }
    println!("\nGateway start-up, exec to first 200 from /health/readiness: {ready_ms:.1} ms");
    println!(
        "Gateway RSS: {:.1} MiB idle, {:.1} MiB peak under load",
        idle_rss as f64 / 1024.0,
        peak_rss as f64 / 1024.0
    );
}
