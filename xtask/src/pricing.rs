//! `cargo xtask pricing [--from FILE]`: rewrites `crates/domain/data/model_prices.json`, the
//! gateway's pricing and context-window table, from LiteLLM's
//! `model_prices_and_context_window.json` (MIT), keeping the per-token prices and limits
//! the gateway uses and dropping the rest.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, bail};
use serde_json::{Map, Value, json};

/// The fields kept, under the names the gateway reads.
const FIELDS: &[(&str, &str)] = &[
    ("litellm_provider", "provider"),
    ("mode", "mode"),
    ("input_cost_per_token", "input"),
    ("output_cost_per_token", "output"),
    ("cache_read_input_token_cost", "cache_read"),
    ("cache_creation_input_token_cost", "cache_creation"),
    ("output_cost_per_reasoning_token", "reasoning"),
    ("input_cost_per_second", "input_per_second"),
    ("output_cost_per_second", "output_per_second"),
    ("input_cost_per_image", "per_image"),
    ("input_cost_per_query", "per_query"),
    ("max_input_tokens", "max_input_tokens"),
    ("max_output_tokens", "max_output_tokens"),
];

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let root = crate::workspace_root();
    let from = match args {
        [] => root.join("../shared/reference/litellm/model_prices_and_context_window.json"),
        [flag, path] if flag == "--from" => PathBuf::from(path),
        _ => bail!("usage: cargo xtask pricing [--from model_prices_and_context_window.json]"),
    };
    let text = std::fs::read_to_string(&from).with_context(|| format!("reading {}", from.display()))?;
    let source: Map<String, Value> = serde_json::from_str(&text).context("the table is not a JSON object")?;
    let mut table = BTreeMap::new();
    for (model, entry) in &source {
        // `sample_spec` documents the format; it is not a model.
        let Some(entry) = entry.as_object().filter(|_| model != "sample_spec") else { continue };
        let priced = [
            "input_cost_per_token",
            "output_cost_per_token",
            "input_cost_per_second",
            "input_cost_per_image",
        ]
        .iter()
        .any(|field| entry.get(*field).is_some_and(Value::is_number));
        if !priced {
            continue;
        }
        let mut kept = Map::new();
        for (from, to) in FIELDS {
            let numeric = !matches!(*to, "provider" | "mode");
            if let Some(value) =
                entry.get(*from).filter(|v| if numeric { v.is_number() } else { v.is_string() })
            {
                kept.insert((*to).to_owned(), value.clone());
            }
        }
        table.insert(model.clone(), Value::Object(kept));
    }
    let out = root.join("crates/domain/data/model_prices.json");
    let mut text = String::from("{\n");
    let count = table.len();
    for (i, (model, entry)) in table.into_iter().enumerate() {
        // One model per line keeps diffs of a refresh readable.
        text.push_str(&format!("{}: {}{}\n", json!(model), entry, if i + 1 < count { "," } else { "" }));
    }
    text.push_str("}\n");
    std::fs::write(&out, text).with_context(|| format!("writing {}", out.display()))?;
    println!("{}: {count} priced models from {}", out.display(), from.display());
    Ok(())
}
