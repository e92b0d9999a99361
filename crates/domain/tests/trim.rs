//! Trimming against every chat model's real context window from the pricing data: a long
//! conversation (system prompt, turns that grow by 15% each, tool calls with their answers)
//! is trimmed to each window, and the result must fit, keep the system prompt verbatim and
//! the newest turn, keep the order, and never split a tool call from its answer.
//!
//! The conversation reaches 16 million tokens, so its text is built from two blocks repeated
//! as content parts, and the counter remembers the tokens of those blocks: every count is the
//! tokenizer's own, taken once (a debug build tokenizes about 1 MB/s).

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Value, json};
use tollgate_domain::pricing::{PriceTable, Pricing};
use tollgate_domain::tokens::{self, Encoding};
use tollgate_domain::trim::{self, Trimmed};

const SYSTEM_PROMPT: &str =
    "You are a careful assistant. Answer in English, cite sources, and keep answers short.";

/// About 40 tokens.
fn small_block() -> String {
    "The committee reviewed the draft report and asked for clearer figures on the budget. ".repeat(2)
}

/// About 4,000 tokens.
fn big_block() -> String {
    small_block().repeat(100)
}

/// Counts with `encoding`, remembering the tokens of long texts (the repeated blocks).
struct MemoCounter {
    encoding: Encoding,
    known: RefCell<Vec<(String, u64)>>,
}

impl MemoCounter {
    fn count(&self, text: &str) -> u64 {
        if text.len() < 100 {
            return self.encoding.count(text);
        }
        if let Some((_, tokens)) =
            self.known.borrow().iter().find(|(known, _)| known.len() == text.len() && known == text)
        {
            return *tokens;
        }
        let tokens = self.encoding.count(text);
        self.known.borrow_mut().push((text.to_owned(), tokens));
        tokens
    }
}

/// The system prompt, then turns whose text grows by 15% a turn from ~40 tokens: users on
/// even turns, assistants on odd ones, every third assistant turn a tool call whose answer
/// carries the turn's text.
fn conversation(max_tokens: u64) -> Vec<Value> {
    let (small, big) = (small_block(), big_block());
    let mut messages = vec![json!({"role": "system", "content": SYSTEM_PROMPT})];
    let mut size = 40.0f64;
    let mut total = 0.0;
    let mut turn = 0;
    while total < max_tokens as f64 {
        let (block, repeats) = if size < 4_000.0 { (&small, size / 40.0) } else { (&big, size / 4_000.0) };
        let mut parts = vec![json!({"type": "text", "text": format!("turn {turn}: ")})];
        parts.extend((0..repeats.max(1.0) as usize).map(|_| json!({"type": "text", "text": block})));
        if turn % 2 == 0 {
            messages.push(json!({"role": "user", "content": parts}));
        } else if turn % 6 == 3 {
            let id = format!("call_{turn}");
            messages.push(json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": id, "type": "function", "function": {"name": "search", "arguments": "{\"q\":\"figures\"}"}}]}));
            messages.push(json!({"role": "tool", "tool_call_id": id, "content": parts}));
        } else {
            messages.push(json!({"role": "assistant", "content": parts}));
        }
        total += size;
        size *= 1.15;
        turn += 1;
    }
    messages
}

fn role(message: &Value) -> &str {
    message["role"].as_str().unwrap_or("")
}

/// Every tool message answers the assistant tool call right before it (or before its
/// sibling answers), and every tool call is answered.
fn assert_tool_pairs_intact(messages: &[Value], context: &str) {
    for (index, message) in messages.iter().enumerate() {
        if role(message) == "tool" {
            let caller = messages[..index].iter().rev().find(|m| role(m) != "tool").expect("a caller");
            let ids: Vec<&str> = caller["tool_calls"]
                .as_array()
                .unwrap_or_else(|| panic!("{context}: tool message {index} without its call"))
                .iter()
                .map(|call| call["id"].as_str().unwrap())
                .collect();
            assert!(ids.contains(&message["tool_call_id"].as_str().unwrap()), "{context}: foreign answer");
        }
        if message["tool_calls"].is_array() {
            assert_eq!(messages.get(index + 1).map(role), Some("tool"), "{context}: call {index} unanswered");
        }
    }
}

#[test]
fn every_chat_model_window_is_respected() {
    let data: serde_json::Map<String, Value> =
        serde_json::from_str(include_str!("../data/model_prices.json")).expect("the pricing data is JSON");
    let mut windows: BTreeMap<(bool, u64), Vec<&str>> = BTreeMap::new();
    for (model, entry) in &data {
        if entry["mode"] != "chat" {
            continue;
        }
        // Each entry read as the pricing module reads it (a lookup per model would search the
        // whole file each time). A few entries list a window of 0: unknown, as if absent.
        let pricing = Pricing::deserialize(entry).expect("an entry the pricing module reads");
        let window = pricing.max_input_tokens.filter(|window| *window > 0);
        let Some(window) = window else { continue };
        let o200k = Encoding::for_model(model) == Encoding::O200kBase;
        windows.entry((o200k, window)).or_default().push(model);
    }
    let models: usize = windows.values().map(Vec::len).sum();
    assert!(models > 3_000, "the pricing data lists {models} chat models with a window");

    let largest = windows.keys().map(|(_, window)| *window).max().unwrap();
    let messages = conversation(largest * 2);
    let system = messages[0].clone();
    tokens::warm();

    for encoding in [Encoding::Cl100kBase, Encoding::O200kBase] {
        let counter = MemoCounter { encoding, known: RefCell::new(Vec::new()) };
        let count = |text: &str| counter.count(text);
        // Tokens up to and including each message, to pick each window's conversation.
        let mut running = tokens::REPLY_PRIMING;
        let cumulative: Vec<u64> = messages
            .iter()
            .map(|message| {
                running += tokens::count_message_with(&count, message);
                running
            })
            .collect();

        let groups = windows.iter().filter(|((o200k, _), _)| *o200k == (encoding == Encoding::O200kBase));
        for ((_, window), models) in groups {
            let window = *window;
            // The conversation so far, half again larger than the window, ending with a user turn.
            let newest = (1..messages.len())
                .find(|&index| role(&messages[index]) == "user" && cumulative[index] > window + window / 2)
                .expect("the conversation outgrows every window");
            let history = &messages[..=newest];
            let context =
                format!("{encoding:?} window {window} ({} models, e.g. {})", models.len(), models[0]);

            let Trimmed { messages: kept, tokens: kept_tokens, counted, dropped, cut, fits } =
                trim::trim_messages_with(history, None, &count, window);
            let kept = kept.unwrap_or_else(|| {
                panic!("{context}: a conversation of {} tokens was left alone", cumulative[newest])
            });
            assert!(fits && counted && !cut && dropped > 0, "{context}: {fits} {counted} {cut} {dropped}");

            let recount = tokens::REPLY_PRIMING
                + kept.iter().map(|message| tokens::count_message_with(&count, message)).sum::<u64>();
            assert_eq!(recount, kept_tokens, "{context}: the reported count is the real one");
            assert!(kept_tokens <= window, "{context}: {kept_tokens} tokens");
            assert!(kept_tokens > window / 2, "{context}: only {kept_tokens} tokens kept, too much dropped");
            if window <= 4_096 {
                let exact = tokens::count_chat(encoding, &Value::Array(kept.clone()), None);
                assert_eq!(exact, kept_tokens, "{context}: the remembered counts are the tokenizer's");
            }

            assert_eq!(kept[0], system, "{context}: system prompt verbatim");
            assert_eq!(kept.last(), history.last(), "{context}: newest turn kept");
            assert_eq!(role(&kept[1]), "user", "{context}: the kept turns start with a user turn");
            // Order kept, and what is kept is the most recent stretch of the conversation.
            assert_eq!(&kept[1..], &history[history.len() - (kept.len() - 1)..], "{context}: order");
            assert_eq!(dropped, history.len() - kept.len(), "{context}: dropped count");
            assert_tool_pairs_intact(&kept, &context);
        }
    }
}

#[test]
fn litellm_budget_rules_apply_to_a_real_window() {
    let table = PriceTable::load();
    let window = table.lookup("openai", "gpt-4o").and_then(|pricing| pricing.max_input_tokens).unwrap();
    let messages = conversation(window * 2);
    let newest = messages.len() - 1 - messages.iter().rev().position(|m| role(m) == "user").unwrap();
    let history = &messages[..=newest];
    let encoding = Encoding::for_model("gpt-4o");
    let counter = MemoCounter { encoding, known: RefCell::new(Vec::new()) };
    let count = |text: &str| counter.count(text);

    // trim_ratio 0.75 of the window when the request sets no max_tokens
    let ratio_budget = trim::input_budget(window, None, trim::DEFAULT_TRIM_RATIO);
    let by_ratio = trim::trim_messages_with(history, None, &count, ratio_budget);
    assert!(by_ratio.fits && by_ratio.tokens <= window * 3 / 4);

    // the window less the completion's max_tokens when it does
    let headroom_budget = trim::input_budget(window, Some(16_384), trim::DEFAULT_TRIM_RATIO);
    let by_headroom = trim::trim_messages_with(history, None, &count, headroom_budget);
    assert!(by_headroom.fits && by_headroom.tokens + 16_384 <= window);
    assert!(by_headroom.tokens > by_ratio.tokens, "16k of headroom leaves more than a quarter");

    // Tools count against the budget too.
    let tools = json!([{"type": "function", "function": {"name": "search", "description": small_block().repeat(20)}}]);
    let with_tools = trim::trim_messages_with(history, Some(&tools), &count, headroom_budget);
    let tool_tokens = tokens::count_tools_with(&count, Some(&tools));
    assert!(with_tools.fits && with_tools.tokens <= headroom_budget);
    let kept = with_tools.messages.unwrap();
    let message_tokens: u64 = kept.iter().map(|m| tokens::count_message_with(&count, m)).sum();
    assert_eq!(with_tools.tokens, tokens::REPLY_PRIMING + tool_tokens + message_tokens);
}

/// `cargo test --release -p tollgate-domain --test trim -- --ignored --nocapture`: what a
/// check costs when the request fits (the usual case: nothing is tokenized) and when a
/// 200,000-token conversation must be trimmed to gpt-4o's window less 4,096 for the answer.
#[test]
#[ignore = "a timing probe: run in release by hand"]
fn trim_speed() {
    let cpu_nanos = || -> u128 {
        std::fs::read_to_string("/proc/thread-self/schedstat")
            .ok()
            .and_then(|stat| stat.split_whitespace().next()?.parse().ok())
            .unwrap_or(0)
    };
    tokens::warm();
    let short = vec![
        json!({"role": "system", "content": SYSTEM_PROMPT}),
        json!({"role": "user", "content": small_block().repeat(12)}),
    ];
    // Many rounds: the kernel updates a running thread's CPU time only every few milliseconds.
    let rounds = 2_000_000;
    let before = cpu_nanos();
    for _ in 0..rounds {
        let trimmed = trim::trim_messages(std::hint::black_box(&short), None, Encoding::O200kBase, 96_000);
        assert!(trimmed.messages.is_none());
    }
    println!("a 2 KB request that fits: {} ns", (cpu_nanos() - before) / rounds);

    let long = conversation(200_000);
    let budget = trim::input_budget(128_000, Some(4_096), trim::DEFAULT_TRIM_RATIO);
    let rounds = 5;
    let before = cpu_nanos();
    for _ in 0..rounds {
        let trimmed = trim::trim_messages(std::hint::black_box(&long), None, Encoding::O200kBase, budget);
        assert!(trimmed.fits && trimmed.messages.is_some());
    }
    println!("a 200k-token conversation trimmed to {budget}: {} µs", (cpu_nanos() - before) / rounds / 1_000);
}
