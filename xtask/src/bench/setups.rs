//! Gateways that differ by one setting, measured turn by turn: each runs throughout, and
//! within each cell (mode × connections) the setups take turns for several rounds, the
//! median kept. On a shared machine, load that comes and goes then weighs on every setup
//! alike instead of on whichever ran at that moment. Used by `--otel` and `--guardrails`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

use super::{MASTER_KEY, Measurement, Options, measure, start_gateway_with};

/// Runs per setup and cell; the median is reported.
pub(super) const ROUNDS: usize = 3;

/// One gateway: its binary and the config lines added to the bench config.
pub(super) struct Setup {
    pub(super) name: &'static str,
    pub(super) binary: PathBuf,
    pub(super) extra: String,
}

pub(super) struct Row {
    pub(super) setup: &'static str,
    pub(super) connections: usize,
    pub(super) stream: bool,
    pub(super) measured: Measurement,
}

/// Measures every setup in every cell, interleaved; one row per setup and cell.
pub(super) fn measure_interleaved(
    options: &Options,
    work: &Path,
    mock: SocketAddr,
    setups: &[Setup],
) -> anyhow::Result<Vec<Row>> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bearer: Arc<str> = MASTER_KEY.into();
    let mut gateways = Vec::new();
    for setup in setups {
        let dir = work.join(setup.name.replace(' ', "-"));
        std::fs::create_dir_all(&dir)?;
        let database_url = format!("sqlite://{}/bench.db?mode=rwc", dir.display());
        let (gateway, _) = start_gateway_with(
            &setup.binary,
            &dir,
            mock,
            options.gateway_workers,
            &database_url,
            &setup.extra,
        )
        .with_context(|| format!("starting the {} gateway ({})", setup.name, setup.binary.display()))?;
        gateways.push((setup.name, gateway));
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
    Ok(rows)
}

/// The table of `rows`, each with the share of the `reference` setup's throughput it
/// keeps, and the cells below `target`.
pub(super) fn print_kept(rows: &[Row], reference: &str, target: f64) {
    println!("| setup | mode | conns | rps | p50 µs | p99 µs | CPU µs/req | kept |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut short = Vec::new();
    for row in rows {
        let base = rows
            .iter()
            .find(|r| r.setup == reference && r.connections == row.connections && r.stream == row.stream)
            .map(|r| r.measured.rps());
        let kept = base.filter(|b| *b > 0.0).map(|b| row.measured.rps() / b);
        if let Some(kept) = kept.filter(|k| *k < target) {
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
        println!("\nEvery setup keeps at least {:.0}% of the {reference} throughput.", target * 100.0);
    } else {
        println!("\nBelow {:.0}% of the {reference} throughput: {}", target * 100.0, short.join("; "));
    }
}
