//! `cargo xtask bench --spend-logs [--database-url postgres://…]`: what writing every request
//! to `LiteLLM_SpendLogs` (and its daily roll-ups) costs. The same load, master key, against a
//! gateway with `disable_spend_logs: true` and against one that logs, on SQLite and, when a
//! PostgreSQL URL is given, on PostgreSQL (a fresh schema each run). Prints the throughput with
//! logging on as a share of the throughput with it off (the Spend issue asks for ≥ 90%).
//!
//! Off and on alternate [`ROUNDS`] times per case and the round with the median share is
//! reported (with the lowest and highest): on a shared machine one pair of runs can land on
//! either side of a burst of someone else's work.

use std::path::Path;
use std::sync::Arc;

use super::{MASTER_KEY, Measurement, Options, measure, start_gateway_with, start_mock};

/// Off/on pairs measured per case.
const ROUNDS: usize = 3;

struct Row {
    database: &'static str,
    connections: usize,
    stream: bool,
    /// The round whose on/off share is the median.
    off: Measurement,
    on: Measurement,
    /// The lowest and highest on/off share over the rounds.
    shares: (f64, f64),
}

fn share(off: &Measurement, on: &Measurement) -> f64 {
    on.rps() / off.rps()
}

pub(super) fn run(options: &Options, release: &Path, work: &Path) -> anyhow::Result<()> {
    let mock = start_mock(&release.join("tollgate-mock-upstream"))?;
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let bearer: Arc<str> = MASTER_KEY.into();
    let schema = format!("tollgate_bench_{}", std::process::id());
    let mut databases: Vec<(&'static str, String)> =
        vec![("SQLite", format!("sqlite://{}/bench.db?mode=rwc", work.display()))];
    if let Some(url) = &options.database_url {
        runtime.block_on(async {
            let store = tollgate_storage::Store::connect(url).await?;
            store
                .execute_script(&format!(
                    "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE; CREATE SCHEMA \"{schema}\";"
                ))
                .await
        })?;
        let separator = if url.contains('?') { '&' } else { '?' };
        databases.push(("PostgreSQL", format!("{url}{separator}schema={schema}")));
    }
    let mut rows = Vec::new();
    for (database, url) in &databases {
        for &connections in &options.connections {
            for stream in [false, true] {
                let run = |extra: &str| -> anyhow::Result<Measurement> {
                    let (gateway, _) = start_gateway_with(
                        &release.join("tollgate"),
                        work,
                        mock.addr,
                        options.gateway_workers,
                        url,
                        extra,
                    )?;
                    runtime.block_on(measure(
                        gateway.addr,
                        &[],
                        &bearer,
                        connections,
                        stream,
                        options.duration,
                        &gateway,
                    ))
                };
                let mut rounds = Vec::with_capacity(ROUNDS);
                for _ in 0..ROUNDS {
                    let off = run("  disable_spend_logs: true\n")?;
                    let on = run("")?;
                    eprintln!(
                        "{database}, {connections} conns, {}: off {:.0} rps, on {:.0} rps ({:.0}%)",
                        if stream { "stream" } else { "non-stream" },
                        off.rps(),
                        on.rps(),
                        share(&off, &on) * 100.0
                    );
                    rounds.push((off, on));
                }
                rounds.sort_by(|a, b| share(&a.0, &a.1).total_cmp(&share(&b.0, &b.1)));
                let shares =
                    (share(&rounds[0].0, &rounds[0].1), share(&rounds[ROUNDS - 1].0, &rounds[ROUNDS - 1].1));
                let (off, on) = rounds.swap_remove(ROUNDS / 2);
                rows.push(Row { database, connections, stream, off, on, shares });
            }
        }
    }
    drop(mock);
    if options.database_url.is_some() {
        drop_schema(&runtime, options, &schema);
    }
    print_report(options, &rows);
    Ok(())
}

/// Removes the run's schema.
fn drop_schema(runtime: &tokio::runtime::Runtime, options: &Options, schema: &str) {
    let Some(url) = &options.database_url else { return };
    let dropped = runtime.block_on(async {
        let store = tollgate_storage::Store::connect(url).await?;
        store.execute_script(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE;")).await
    });
    if let Err(error) = dropped {
        eprintln!("could not drop the bench schema {schema}: {error}");
    }
}

fn print_report(options: &Options, rows: &[Row]) {
    println!("## cargo xtask bench --spend-logs\n");
    println!(
        "gateway ({} workers), mock upstream and load generator on one machine (the database server too, for PostgreSQL); {:.0} s per run after a warm-up; master key; every request a spend log row when logging is on; off and on alternate {ROUNDS} times and the median round is shown, with the range of on / off over the rounds.\n",
        options.gateway_workers,
        options.duration.as_secs_f64()
    );
    println!(
        "| database | mode | conns | off req/s | on req/s | on / off (range) | gateway CPU µs/req (off / on) | p50 µs (off / on) | errors (on) |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for row in rows {
        println!(
            "| {} | {} | {} | {:.0} | {:.0} | {:.0}% ({:.0}–{:.0}%) | {:.1} / {:.1} | {:.0} / {:.0} | {} |",
            row.database,
            if row.stream { "stream" } else { "non-stream" },
            row.connections,
            row.off.rps(),
            row.on.rps(),
            share(&row.off, &row.on) * 100.0,
            row.shares.0 * 100.0,
            row.shares.1 * 100.0,
            row.off.cpu_per_request_us(),
            row.on.cpu_per_request_us(),
            row.off.p(0.5),
            row.on.p(0.5),
            row.on.errors,
        );
    }
}
