//! `cargo xtask bench --cache [--redis URL]`: what a response cache hit costs. Three gateways
//! in front of the same mock upstream: one without a cache, one with the in-process cache,
//! one with the cache in Redis (under a namespace of its own, flushed afterwards). The same
//! request is sent over and over, so after the warm-up every request on a cached gateway is
//! a hit: the latency measured is the gateway's whole answer from its cache.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::{MASTER_KEY, Measurement, Options, Server, measure, start_gateway_with, start_mock};

const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";
/// What the issue asks of a hit through Redis on loopback.
const REDIS_HIT_P50_TARGET_US: f64 = 300.0;

struct Row {
    cache: &'static str,
    connections: usize,
    measured: Measurement,
}

pub(super) fn run(options: &Options, release: &Path, work: &Path) -> anyhow::Result<()> {
    let redis = options.redis.clone().unwrap_or_else(|| DEFAULT_REDIS.to_owned());
    let redis_reachable = super::redis_reachable(&redis);
    if !redis_reachable {
        eprintln!("redis at {redis} does not answer: only the in-process cache is measured (--redis URL)");
    }
    let namespace = format!("tollgate_bench_{}", std::process::id());
    let mock = start_mock(&release.join("tollgate-mock-upstream"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bearer: Arc<str> = MASTER_KEY.into();
    let mut rows = Vec::new();
    let redis_params = format!("{{type: redis, url: \"{redis}\", namespace: {namespace}, ttl: 600}}");
    let setups: [(&'static str, Option<&str>); 3] =
        [("none", None), ("in process", Some("{ttl: 600}")), ("redis", Some(&redis_params))];
    for (cache, params) in setups {
        if cache == "redis" && !redis_reachable {
            continue;
        }
        let dir = work.join(cache.replace(' ', "-"));
        std::fs::create_dir_all(&dir)?;
        let gateway =
            start_with_cache(&release.join("tollgate"), &dir, mock.addr, options.gateway_workers, params)?;
        if params.is_some() {
            cache_ready(gateway.addr, cache == "redis")?;
        }
        for &connections in &options.connections {
            let measured = runtime.block_on(measure(
                gateway.addr,
                &[],
                &bearer,
                connections,
                false,
                options.duration,
                &gateway,
            ))?;
            eprintln!(
                "cache {cache}, {connections} conns: {:.0} rps, p50 {:.0} µs",
                measured.rps(),
                measured.p(0.5)
            );
            rows.push(Row { cache, connections, measured });
        }
        if cache == "redis" {
            flush(gateway.addr);
        }
    }
    drop(mock);
    print_report(options, &rows);
    Ok(())
}

/// A gateway like the main bench's, with `litellm_settings.cache` when `cache_params` are given.
fn start_with_cache(
    binary: &Path,
    work: &Path,
    mock: SocketAddr,
    workers: usize,
    cache_params: Option<&str>,
) -> anyhow::Result<Server> {
    let database_url = format!("sqlite://{}/bench.db?mode=rwc", work.display());
    let extra = cache_params
        .map(|params| format!("litellm_settings:\n  cache: true\n  cache_params: {params}\n"))
        .unwrap_or_default();
    Ok(start_gateway_with(binary, work, mock, workers, &database_url, &extra)?.0)
}

/// One blocking request to the gateway with the master key; the whole answer as text.
fn admin_request(addr: SocketAddr, method: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {MASTER_KEY}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    Ok(answer)
}

/// Waits until `/cache/ping` answers healthy (and, for Redis, that Redis answered).
fn cache_ready(addr: SocketAddr, redis: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let answer = admin_request(addr, "GET", "/cache/ping")?;
        if answer.contains(r#""status":"healthy""#) && (!redis || answer.contains(r#""ping_response":true"#))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the gateway's cache was not ready within 10 s")
}

/// Removes what the run left in Redis (its namespace only).
fn flush(addr: SocketAddr) {
    if let Err(error) = admin_request(addr, "POST", "/cache/flushall") {
        eprintln!("could not flush the bench's cache namespace: {error}");
    }
}

fn print_report(options: &Options, rows: &[Row]) {
    println!("## cargo xtask bench --cache\n");
    println!(
        "gateway ({} workers) and mock upstream on one machine; {:.0} s per run after a warm-up; the same non-streaming chat completion every time, so on a cached gateway every measured request is a hit.\n",
        options.gateway_workers,
        options.duration.as_secs_f64()
    );
    println!("| cache | conns | req/s | p50 µs | p90 µs | p99 µs | errors | CPU µs/req |");
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        let m = &row.measured;
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {:.1} |",
            row.cache,
            row.connections,
            m.rps(),
            m.p(0.5),
            m.p(0.9),
            m.p(0.99),
            m.errors,
            m.cpu_per_request_us()
        );
    }
    if let Some(one) = rows.iter().find(|row| row.cache == "redis" && row.connections == 1) {
        let p50 = one.measured.p(0.5);
        println!(
            "\nHit through Redis, 1 connection: p50 {p50:.0} µs (target ≤ {REDIS_HIT_P50_TARGET_US:.0} µs): {}",
            if p50 <= REDIS_HIT_P50_TARGET_US { "met" } else { "NOT met" }
        );
    }
}
