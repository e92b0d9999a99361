//! `cargo xtask bench --rate-limits [--redis URL]`: what rate limiting costs. Two gateways in
//! front of the same mock upstream, one counting limits in its own process and one counting
//! them in Redis; on each, the same load with a virtual key without limits and with one whose
//! `rpm_limit`, `tpm_limit` and `max_parallel_requests` it never reaches, so every check,
//! count, slot given back and token count is on the measured path and nothing is refused.
//! Prints both runs and the limited key's share of the unlimited key's throughput.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::{Measurement, Options, Server, cpu_time, generate_key, measure, start_gateway_with, start_mock};

const DEFAULT_REDIS: &str = "redis://127.0.0.1:6379";
/// Limits far above what a run can reach: counted on every request, never refusing.
const LIMITED_KEY: &str = r#"{"models": ["bench"], "key_alias": "bench-limited", "rpm_limit": 1000000000, "tpm_limit": 1000000000000, "max_parallel_requests": 100000}"#;
const FREE_KEY: &str = r#"{"models": ["bench"], "key_alias": "bench-free"}"#;
/// Runs per key and connection count, alternating between the keys.
const ROUNDS: usize = 3;

struct Row {
    counting: &'static str,
    connections: usize,
    free: Measurement,
    limited: Measurement,
    /// redis-server's CPU µs per request (no limits, limited), when it runs on this machine.
    redis_cpu: Option<(f64, f64)>,
}

pub(super) fn run(options: &Options, release: &Path, work: &Path) -> anyhow::Result<()> {
    let redis = options.redis.clone().unwrap_or_else(|| DEFAULT_REDIS.to_owned());
    let redis_reachable = super::redis_reachable(&redis);
    if !redis_reachable {
        eprintln!("redis at {redis} does not answer: only in-process counting is measured (--redis URL)");
    }
    let mock = start_mock(&release.join("tollgate-mock-upstream"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let mut rows = Vec::new();
    let setups: [(&'static str, Option<&str>); 2] = [("in process", None), ("redis", Some(&redis))];
    for (counting, redis_url) in setups {
        if redis_url.is_some() && !redis_reachable {
            continue;
        }
        let dir = work.join(counting.replace(' ', "-"));
        std::fs::create_dir_all(&dir)?;
        let gateway =
            start_with_redis(&release.join("tollgate"), &dir, mock.addr, options.gateway_workers, redis_url)?;
        if redis_url.is_some() {
            wait_for_redis(gateway.addr)?;
        }
        let free_key: Arc<str> = runtime.block_on(generate_key(gateway.addr, FREE_KEY))?.into();
        let limited_key: Arc<str> = runtime.block_on(generate_key(gateway.addr, LIMITED_KEY))?.into();
        // Redis works for the gateway: its CPU is reported beside the gateway's (when it runs here).
        let redis_pid = redis_url.and_then(|_| local_redis_pid());
        for &connections in &options.connections {
            let run = |key: &Arc<str>| -> anyhow::Result<(Measurement, Option<f64>)> {
                let before = redis_pid.map(|pid| cpu_time(&[pid]));
                let started = Instant::now();
                let measured = runtime.block_on(measure(
                    gateway.addr,
                    &[],
                    key,
                    connections,
                    false,
                    options.duration,
                    &gateway,
                ))?;
                // Over the warm-up too, at about the measured rate.
                let redis_per_request = before.zip(redis_pid).map(|(before, pid)| {
                    let used = cpu_time(&[pid]).saturating_sub(before);
                    used.as_secs_f64() * 1e6 / (measured.rps() * started.elapsed().as_secs_f64()).max(1.0)
                });
                Ok((measured, redis_per_request))
            };
            // Rounds alternate the two keys, so noise from the rest of the machine (which on
            // a shared box is large) falls on both alike.
            let (mut free_runs, mut limited_runs) = (Vec::new(), Vec::new());
            for _ in 0..ROUNDS {
                free_runs.push(run(&free_key)?);
                limited_runs.push(run(&limited_key)?);
            }
            let (free, free_redis) = combine(free_runs)?;
            let (limited, limited_redis) = combine(limited_runs)?;
            eprintln!(
                "{counting}, {connections} conns: no limits {:.0} rps, limited {:.0} rps ({:.0}%)",
                free.rps(),
                limited.rps(),
                limited.rps() / free.rps() * 100.0
            );
            rows.push(Row { counting, connections, free, limited, redis_cpu: free_redis.zip(limited_redis) });
        }
    }
    drop(mock);
    print_report(options, &rows);
    Ok(())
}

/// One measurement out of several rounds: their requests over their time, their latencies
/// together, and the mean of redis-server's CPU per request.
fn combine(runs: Vec<(Measurement, Option<f64>)>) -> anyhow::Result<(Measurement, Option<f64>)> {
    let rounds = runs.len() as f64;
    let mut redis = Some(0.0);
    let mut total: Option<Measurement> = None;
    for (run, redis_cpu) in runs {
        redis = redis.zip(redis_cpu).map(|(sum, cpu)| sum + cpu / rounds);
        total = Some(match total {
            None => run,
            Some(mut total) => {
                total.requests += run.requests;
                total.errors += run.errors;
                total.elapsed += run.elapsed;
                total.cpu += run.cpu;
                total.latency_us.add(run.latency_us)?;
                total
            }
        });
    }
    Ok((total.context("no rounds were run")?, redis))
}

/// The pid of a `redis-server` on this machine, if one runs.
fn local_redis_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let name = std::fs::read_to_string(entry.path().join("comm")).ok()?;
        (name.trim() == "redis-server").then_some(pid)
    })
}

/// A gateway like the main bench's, with `router_settings.redis_url` when given.
fn start_with_redis(
    binary: &Path,
    work: &Path,
    mock: SocketAddr,
    workers: usize,
    redis: Option<&str>,
) -> anyhow::Result<Server> {
    let database_url = format!("sqlite://{}/bench.db?mode=rwc", work.display());
    let extra =
        redis.map(|redis| format!("router_settings:\n  redis_url: \"{redis}\"\n")).unwrap_or_default();
    Ok(start_gateway_with(binary, work, mock, workers, &database_url, &extra)?.0)
}

/// Waits until the gateway's readiness says its rate limits are counted in Redis.
fn wait_for_redis(addr: SocketAddr) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        let mut stream = std::net::TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(1)))?;
        stream.write_all(b"GET /health/readiness HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        if answer.contains(r#""redis":"connected""#) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("the gateway did not connect to redis within 10 s")
}

fn print_report(options: &Options, rows: &[Row]) {
    println!("## cargo xtask bench --rate-limits\n");
    println!(
        "gateway ({} workers), mock upstream and Redis on one machine; {ROUNDS} rounds of {:.0} s per key after a warm-up each, alternating; non-streaming chat completions; the limited key has rpm_limit, tpm_limit and max_parallel_requests, never reached. CPU per request: the gateway's, and redis-server's (over the warm-up too) when it runs here.\n",
        options.gateway_workers,
        options.duration.as_secs_f64()
    );
    println!(
        "| limits counted | conns | no limits req/s | limited req/s | limited / no limits | p50 µs (no limits / limited) | p99 µs (no limits / limited) | errors (limited) | gateway CPU µs/req (no limits / limited) | redis CPU µs/req (no limits / limited) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.0}% | {:.0} / {:.0} | {:.0} / {:.0} | {} | {:.1} / {:.1} | {} |",
            row.counting,
            row.connections,
            row.free.rps(),
            row.limited.rps(),
            row.limited.rps() / row.free.rps() * 100.0,
            row.free.p(0.5),
            row.limited.p(0.5),
            row.free.p(0.99),
            row.limited.p(0.99),
            row.limited.errors,
            row.free.cpu_per_request_us(),
            row.limited.cpu_per_request_us(),
            row.redis_cpu.map_or("–".to_owned(), |(free, limited)| format!("{free:.1} / {limited:.1}")),
        );
    }
}
