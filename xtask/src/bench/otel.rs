//! `cargo xtask bench --otel [--baseline PATH]`: what traces cost. The same gateway in front
//! of the same mock upstream, with traces off (metrics are always on) and with
//! `callbacks: ["otel"]` exporting every span over OTLP/HTTP to a sink on loopback that
//! answers at once; with `--baseline`, also another gateway binary (a build without this
//! observability, say) as the reference. Prints throughput and latency per setup and the
//! share of the reference's throughput each keeps (the issue asks for at least 90%).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use super::setups::{ROUNDS, Row, Setup, measure_interleaved, print_kept};
use super::{Options, start_mock};

/// The share of the reference's throughput the issue asks to keep.
const KEEP_TARGET: f64 = 0.90;

pub(super) fn run(options: &Options, release: &Path, work: &Path) -> anyhow::Result<()> {
    let sink_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
    let exported = Arc::new(AtomicU64::new(0));
    let sink = sink_runtime.block_on(start_sink(Arc::clone(&exported)))?;
    let mock = start_mock(&release.join("tollgate-mock-upstream"))?;
    let otel = format!(
        "environment_variables:\n  OTEL_EXPORTER_OTLP_ENDPOINT: http://{sink}\n  OTEL_SERVICE_NAME: tollgate-bench\nlitellm_settings:\n  callbacks: [otel]\n"
    );
    let ours = release.join("tollgate");
    let mut setups = Vec::new();
    if let Some(baseline) = &options.baseline {
        setups.push(Setup { name: "baseline", binary: baseline.clone(), extra: String::new() });
    }
    setups.push(Setup { name: "traces off", binary: ours.clone(), extra: String::new() });
    setups.push(Setup { name: "traces on", binary: ours, extra: otel });
    let rows = measure_interleaved(options, work, mock.addr, &setups)?;
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
    let reference = if options.baseline.is_some() { "baseline" } else { "traces off" };
    print_kept(rows, reference, KEEP_TARGET);
}
