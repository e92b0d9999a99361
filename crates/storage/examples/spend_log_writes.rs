//! Writes synthetic spend-log batches the way the gateway's writer does, for profiling the
//! write path alone: `cargo run --release -p tollgate-storage --example spend_log_writes --
//! <database url> [rows] [batch]`, under `valgrind --tool=callgrind` for instruction counts.

use std::time::Instant;

use chrono::Utc;
use tollgate_storage::{SpendLogRow, Store};

fn row(index: usize) -> SpendLogRow {
    let now = Utc::now().naive_utc();
    let request_id =
        format!("chatcmpl-{:032x}", (index as u128).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834));
    SpendLogRow {
        request_id: request_id.into(),
        call_type: "acompletion",
        api_key: format!("{:064x}", index % 50).into(),
        spend: 0.000_375,
        prompt_tokens: 100,
        completion_tokens: 50,
        start_time: now,
        end_time: now,
        model: "gpt-4o-2024-08-06".into(),
        model_group: "gpt-4o".into(),
        model_id: "5f0e1c9a2b".into(),
        custom_llm_provider: "openai".into(),
        api_base: "http://127.0.0.1:9000/v1".into(),
        team_id: Some(format!("team-{}", index % 5).into()),
        key_alias: Some(format!("service-{}", index % 50).into()),
        user_id: Some(format!("user-{}", index % 50).into()),
        tags: vec!["bench".into()],
        status: "success",
        ..Default::default()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url = args.next().ok_or("usage: spend_log_writes <database url> [rows] [batch]")?;
    let rows: usize = args.next().map_or(Ok(20_000), |n| n.parse())?;
    let batch: usize = args.next().map_or(Ok(5_000), |n| n.parse())?;
    let store = Store::connect(&url).await?;
    store.migrate().await?;
    let offset = Utc::now().timestamp_micros() as usize;
    let batches: Vec<std::sync::Arc<[SpendLogRow]>> = (0..rows)
        .map(|index| row(offset + index))
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(Into::into)
        .collect();
    let started = Instant::now();
    for batch in &batches {
        store.insert_spend_logs(batch.clone()).await?;
    }
    let elapsed = started.elapsed();
    println!("{rows} rows in {elapsed:?}: {:.1} µs per row", elapsed.as_secs_f64() * 1e6 / rows as f64);
    Ok(())
}
