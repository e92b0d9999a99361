//! `cargo xtask bench --otel [--baseline PATH]`: what traces cost. The same gateway in front
//! of the same mock upstream, with traces off (metrics are always on) and with
//! `callbacks: ["otel"]` exporting every span over OTLP/HTTP to a sink on loopback that
//! answers at once; with `--baseline`, also another gateway binary (a build without this
//! observability, say) as the reference. Prints throughput and latency per setup and the
//! share of the reference's throughput each keeps (the issue asks for at least 90%).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::{MASTER_KEY, Measurement, Options, measure, start_gateway_with, start_mock};

/// The share of the reference's throughput the issue asks to keep.
const KEEP_TARGET: f64 = 0.90;
/// Runs per setup and cell; the median is reported.
const ROUNDS: usize = 3;

struct Row {
    setup: &'static str,
    connections: usize,
    stream: bool,
    measured: Measurement,
}

pub(super) fn run(options: &Options, release: &Path, work: &Path) -> anyhow::Result<()> {
    let sink_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let exported = Arc::new(AtomicU64::new(0));
    let sink = sink_runtime.block_on(start_sink(Arc::clone(&exported)))?;
    let mock = start_mock(&release.join("tollgate-mock-upstream"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bearer: Arc<str> = MASTER_KEY.into();
    let otel = format!(
        "environment_variables:\n  OTEL_EXPORTER_OTLP_ENDPOINT: http://{sink}\n  OTEL_SERVICE_NAME: tollgate-bench\nlitellm_settings:\n  callbacks: [otel]\n"
    );
    let ours = release.join("tollgate");
    let mut setups: Vec<(&'static str, PathBuf, String)> = Vec::new();
    if let Some(baseline) = &options.baseline {
        setups.push(("baseline", baseline.clone(), String::new()));
    }
    setups.push(("traces off", ours.clone(), String::new()));
    setups.push(("traces on", ours, otel));
    // Every gateway runs throughout and the setups take turns within each cell, several
    // rounds, medians kept: on a shared machine, load that comes and goes then weighs on
    // all setups alike instead of on whichever ran at that moment.
    let mut gateways = Vec::new();
    for (setup, binary, extra) in &setups {
        let dir = work.join(setup.replace(' ', "-"));
        std::fs::create_dir_all(&dir)?;
        let database_url = format!("sqlite://{}/bench.db?mode=rwc", dir.display());
        let (gateway, _) =
            start_gateway_with(binary, &dir, mock.addr, options.gateway_workers, &database_url, extra)
                .with_context(|| format!("starting the {setup} gateway ({})", binary.display()))?;
        gateways.push((*setup, gateway));
    }
    let mut rows = Vec::new();
    for stream in [false, true] {
        for &connections in &options.connections {
            let mut runs: Vec<Vec<Measurement>> = gateways.iter().map(|_| Vec::new()).collect();
            for _ in 0..ROUNDS {
                for ((_, gateway), runs) in gateways.iter().zip(&mut runs) {
                    runs.push(runtime.block_on(measure(
                        gateway.addr,
                        &[],
                        &bearer,
                        connections,
                        stream,
                        options.duration,
                        gateway,
                    ))?);
                }
            }
            for ((setup, _), mut runs) in gateways.iter().zip(runs) {
                runs.sort_by(|a, b| a.rps().total_cmp(&b.rps()));
                let measured = runs.swap_remove(runs.len() / 2);
                eprintln!(
                    "{setup}, {connections} conns {}: median {:.0} rps, p50 {:.0} µs, {:.1} µs CPU/request",
                    if stream { "stream" } else { "non-stream" },
                    measured.rps(),
                    measured.p(0.5),
                    measured.cpu_per_request_us()
                );
                rows.push(Row { setup, connections, stream, measured });
            }
        }
    }
    drop(gateways);
    drop(mock);
    print_report(options, &rows, exported.load(Ordering::Relaxed));
    drop(sink_runtime);
    Ok(())
}

/// An OTLP/HTTP receiver that reads each export and answers 200 at once, counting exports.
async fn start_sink(exported: Arc<AtomicU64>) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let exported = Arc::clone(&exported);
            tokio::spawn(async move {
                let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
                    let exported = Arc::clone(&exported);
                    async move {
                        let _ = request.into_body().collect().await;
                        exported.fetch_add(1, Ordering::Relaxed);
                        let mut response = http::Response::new(Full::new(Bytes::new()));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("application/x-protobuf"),
                        );
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn print_report(options: &Options, rows: &[Row], exports: u64) {
    println!("\n## Traces: throughput with OTLP export on and off\n");
    println!(
        "Median of {ROUNDS} runs of {} s (after a 1 s warm-up each), setups interleaved, gateways with {} workers; spans exported to a loopback sink ({exports} exports received).\n",
        options.duration.as_secs_f64(),
        options.gateway_workers
    );
    println!("| setup | mode | conns | rps | p50 µs | p99 µs | CPU µs/req | kept |");
    println!("|---|---|---|---|---|---|---|---|");
    let reference = if options.baseline.is_some() { "baseline" } else { "traces off" };
    let mut short = Vec::new();
    for row in rows {
        let base = rows
            .iter()
            .find(|r| r.setup == reference && r.connections == row.connections && r.stream == row.stream)
            .map(|r| r.measured.rps());
        let kept = base.filter(|b| *b > 0.0).map(|b| row.measured.rps() / b);
        if let Some(kept) = kept.filter(|k| *k < KEEP_TARGET) {
            short.push(format!(
                "{} {} conns {}: {:.0}%",
                row.setup,
                row.connections,
                row.stream,
                kept * 100.0
            ));
        }
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {} |",
            row.setup,
            if row.stream { "stream" } else { "non-stream" },
            row.connections,
            row.measured.rps(),
            row.measured.p(0.5),
            row.measured.p(0.99),
            row.measured.cpu_per_request_us(),
            kept.map_or("–".to_owned(), |k| format!("{:.0}%", k * 100.0)),
        );
    }
    if short.is_empty() {
        println!("\nEvery setup keeps at least {:.0}% of the {reference} throughput.", KEEP_TARGET * 100.0);
    } else {
        println!("\nBelow {:.0}% of the {reference} throughput: {}", KEEP_TARGET * 100.0, short.join("; "));
    }
}
