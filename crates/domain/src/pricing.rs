//! What a request costs: per-token prices by model (and per search unit for rerank models),
//! from the table in `data/` (derived from LiteLLM's) or from a deployment's own
//! `input_cost_per_token` / `output_cost_per_token` / `input_cost_per_query`, applied to the
//! usage the upstream reported.

use serde::Deserialize;

/// Prices in US dollars per token (per second or per image where a model is priced so).
#[derive(Clone, Copy, Debug, Default, PartialEq, Deserialize)]
pub struct Pricing {
    #[serde(default)]
    pub input: f64,
    #[serde(default)]
    pub output: f64,
    /// Cached prompt tokens read; the input price when the table has none.
    #[serde(default)]
    pub cache_read: Option<f64>,
    /// Prompt tokens written to the provider's cache; the input price when absent.
    #[serde(default)]
    pub cache_creation: Option<f64>,
    /// Reasoning tokens, when priced apart from output.
    #[serde(default)]
    pub reasoning: Option<f64>,
    /// One search unit of a rerank model (LiteLLM's `input_cost_per_query`).
    #[serde(default)]
    pub per_query: Option<f64>,
    #[serde(default)]
    pub max_input_tokens: Option<u64>,
    #[serde(default)]
    pub max_output_tokens: Option<u64>,
}

/// Token counts of one request, as OpenAI's `usage` reports them: `prompt_tokens` includes
/// cached and cache-written tokens, `completion_tokens` includes reasoning tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cache_creation_tokens: u64,
    pub reasoning_tokens: u64,
    /// Search units a rerank call was billed (Cohere's `meta.billed_units.search_units`).
    pub search_units: u64,
}

impl Usage {
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens + self.completion_tokens
    }

    /// Reads an OpenAI `usage` object (`prompt_tokens_details.cached_tokens`,
    /// `completion_tokens_details.reasoning_tokens`, and Anthropic-style
    /// `cache_creation_input_tokens` when a provider passes it through); `None` without
    /// `prompt_tokens`. A count that is not a whole number counts 0.
    pub fn from_json(usage: &serde_json::Value) -> Option<Usage> {
        WireUsage::deserialize(usage).ok()?.counts()
    }

    /// [`Usage::from_json`] straight from the object's bytes: every answer is read for its
    /// usage, so this skips building a JSON tree.
    pub fn from_slice(usage: &[u8]) -> Option<Usage> {
        serde_json::from_slice::<WireUsage>(usage).ok()?.counts()
    }
}

/// The `usage` fields Tollgate reads; the rest are skipped unparsed.
#[derive(Deserialize)]
struct WireUsage {
    prompt_tokens: Option<serde_json::Number>,
    completion_tokens: Option<serde_json::Number>,
    cache_creation_input_tokens: Option<serde_json::Number>,
    prompt_tokens_details: Option<WireDetails>,
    completion_tokens_details: Option<WireDetails>,
}

#[derive(Deserialize)]
struct WireDetails {
    cached_tokens: Option<serde_json::Number>,
    reasoning_tokens: Option<serde_json::Number>,
}

impl WireUsage {
    fn counts(self) -> Option<Usage> {
        let count = |number: Option<serde_json::Number>| number.and_then(|n| n.as_u64()).unwrap_or(0);
        let prompt = self.prompt_tokens?;
        Some(Usage {
            prompt_tokens: count(Some(prompt)),
            completion_tokens: count(self.completion_tokens),
            cached_tokens: count(self.prompt_tokens_details.and_then(|details| details.cached_tokens)),
            cache_creation_tokens: count(self.cache_creation_input_tokens),
            reasoning_tokens: count(
                self.completion_tokens_details.and_then(|details| details.reasoning_tokens),
            ),
            search_units: 0,
        })
    }
}

impl Pricing {
    /// The cost of `usage` in US dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let written = usage.cache_creation_tokens.min(usage.prompt_tokens - cached);
        let fresh = usage.prompt_tokens - cached - written;
        let reasoning = usage.reasoning_tokens.min(usage.completion_tokens);
        let (reasoning_price, answer_tokens) = match self.reasoning {
            Some(price) => (price, usage.completion_tokens - reasoning),
            None => (self.output, usage.completion_tokens),
        };
        let reasoning_cost = if self.reasoning.is_some() { reasoning as f64 * reasoning_price } else { 0.0 };
        fresh as f64 * self.input
            + cached as f64 * self.cache_read.unwrap_or(self.input)
            + written as f64 * self.cache_creation.unwrap_or(self.input)
            + answer_tokens as f64 * self.output
            + reasoning_cost
            + usage.search_units as f64 * self.per_query.unwrap_or(0.0)
    }
}

/// The built-in table: model name (with or without its provider prefix, as LiteLLM keys
/// it) to prices. The data file holds one model per line (`cargo xtask pricing` writes it
/// so), so a lookup finds its line and parses only that: the ~4,000 entries are never all
/// held in memory.
#[derive(Debug, Clone, Copy)]
pub struct PriceTable(&'static str);

impl PriceTable {
    pub fn load() -> PriceTable {
        PriceTable(include_str!("../data/model_prices.json"))
    }

    /// The prices for a deployment's `provider/model`: the full name first (as
    /// `azure/gpt-4o` or `gemini/gemini-2.5-flash` are listed), then the bare model name.
    pub fn lookup(&self, provider: &str, model: &str) -> Option<Pricing> {
        self.entry(&format!("{provider}/{model}")).or_else(|| self.entry(model))
    }

    fn entry(&self, model: &str) -> Option<Pricing> {
        let needle = format!("\n{}: ", serde_json::Value::from(model));
        let start = self.0.find(&needle)? + needle.len();
        let line = self.0[start..].lines().next()?;
        serde_json::from_str(line.trim_end().trim_end_matches(',')).ok()
    }

    /// How many models the table prices.
    pub fn len(&self) -> usize {
        self.0.lines().filter(|line| line.starts_with('"')).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_prices_listed_models() {
        let table = PriceTable::load();
        let gpt = table.lookup("openai", "gpt-4o").expect("gpt-4o is listed");
        assert_eq!((gpt.input, gpt.output), (2.5e-6, 1e-5));
        assert_eq!(table.lookup("gemini", "gemini-2.5-flash").unwrap().input, 3e-7);
        assert!(table.lookup("anthropic", "claude-sonnet-4-5").unwrap().cache_creation.is_some());
        assert!(table.lookup("openai", "no-such-model").is_none());
        assert!(table.len() > 1000);
    }

    #[test]
    fn every_line_of_the_table_parses() {
        let text = include_str!("../data/model_prices.json");
        let all: std::collections::HashMap<String, Pricing> = serde_json::from_str(text).unwrap();
        assert_eq!(all.len(), PriceTable::load().len(), "one model per line, as the lookup expects");
        let table = PriceTable::load();
        for (name, pricing) in all.iter().take(200) {
            assert_eq!(table.entry(name), Some(*pricing), "{name}");
        }
    }

    #[test]
    fn costs_follow_the_table_exactly() {
        let gpt = PriceTable::load().lookup("openai", "gpt-4o").unwrap();
        let usage = Usage { prompt_tokens: 1_000, completion_tokens: 500, ..Usage::default() };
        assert!((gpt.cost(&usage) - (1_000.0 * 2.5e-6 + 500.0 * 1e-5)).abs() < 1e-12);
        let cached = Usage { cached_tokens: 400, ..usage };
        let expected = 600.0 * 2.5e-6 + 400.0 * 1.25e-6 + 500.0 * 1e-5;
        assert!((gpt.cost(&cached) - expected).abs() < 1e-12);
    }

    #[test]
    fn rerank_models_are_priced_per_search_unit() {
        let table = PriceTable::load();
        let cohere = table.lookup("cohere", "rerank-v3.5").expect("rerank-v3.5 is listed");
        assert_eq!((cohere.input, cohere.per_query), (0.0, Some(0.002)));
        let usage = Usage { prompt_tokens: 40, search_units: 2, ..Usage::default() };
        assert!((cohere.cost(&usage) - 0.004).abs() < 1e-12);
        // Voyage's and Jina's rerankers are priced per token, like any model.
        let voyage = table.lookup("voyage", "rerank-2").unwrap();
        assert_eq!(voyage.per_query, None);
        assert!((voyage.cost(&usage) - 40.0 * 5e-8).abs() < 1e-15);
    }

    #[test]
    fn usage_reads_openai_details() {
        let usage = Usage::from_json(&serde_json::json!({
            "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 2}
        }))
        .unwrap();
        assert_eq!((usage.cached_tokens, usage.reasoning_tokens, usage.total_tokens()), (4, 2, 15));
        assert!(Usage::from_json(&serde_json::json!(null)).is_none());
        let bytes = br#"{"prompt_tokens": 10, "completion_tokens": 5.5, "prompt_tokens_details": null,
            "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0},
            "cache_creation_input_tokens": 3, "server_tool_use": {"web_search_requests": 1}}"#;
        let from_bytes = Usage::from_slice(bytes).unwrap();
        assert_eq!(
            (from_bytes.prompt_tokens, from_bytes.completion_tokens, from_bytes.reasoning_tokens),
            (10, 0, 2),
            "unknown fields are skipped; a fractional count counts 0"
        );
        assert_eq!((from_bytes.cached_tokens, from_bytes.cache_creation_tokens), (0, 3));
        assert!(Usage::from_slice(br#"{"completion_tokens": 5}"#).is_none(), "no prompt_tokens, no usage");
    }
}
