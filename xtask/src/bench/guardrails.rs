//! `cargo xtask bench --guardrails`: what guardrails cost. The same gateway in front of the
//! same mock upstream, without guardrails and with message trimming and PII masking on
//! every request (`default_on`, `pre_call`), setups interleaved. Prints throughput and
//! latency per setup and the share of the unguarded throughput the guarded one keeps (the
//! issue asks for at least 85%).

use std::path::Path;

use super::setups::{ROUNDS, Setup, measure_interleaved, print_kept};
use super::{Options, start_mock};

/// The share of the unguarded throughput the issue asks to keep.
const KEEP_TARGET: f64 = 0.85;

/// Trimming to a fixed budget (the mock's model has no known context window) and masking
/// every PII kind, on every request.
const GUARDRAILS: &str = "guardrails:
  - guardrail_name: trim
    litellm_params: {guardrail: message_trimming, mode: pre_call, default_on: true, max_input_tokens: 100000}
  - guardrail_name: pii
    litellm_params: {guardrail: pii_masking, mode: pre_call, default_on: true}
";

pub(super) fn run(options: &Options, release: &Path, work: &Path) -> anyhow::Result<()> {
    let mock = start_mock(&release.join("tollgate-mock-upstream"))?;
    let ours = release.join("tollgate");
    let setups = [
        Setup { name: "guardrails off", binary: ours.clone(), extra: String::new() },
        Setup { name: "guardrails on", binary: ours, extra: GUARDRAILS.to_owned() },
    ];
    let rows = measure_interleaved(options, work, mock.addr, &setups)?;
    drop(mock);
    println!("\n## Guardrails: throughput with trimming and PII masking on and off\n");
    println!(
        "Median of {ROUNDS} runs of {} s (after a 1 s warm-up each), setups interleaved, gateways with {} workers.\n",
        options.duration.as_secs_f64(),
        options.gateway_workers
    );
    print_kept(&rows, "guardrails off", KEEP_TARGET);
    Ok(())
}
