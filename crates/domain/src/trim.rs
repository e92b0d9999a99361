//! Trimming a chat conversation to fit a token budget, as LiteLLM's `trim_messages` does:
//! system messages stay (all of them, where they are), the oldest turns go first, the newest
//! turn always stays, and a newest message too large on its own is cut in the middle with
//! [`TRIM_MARKER`], keeping its start and its end.
//!
//! Differences from LiteLLM's `litellm.utils.trim_messages`, on purpose:
//! - LiteLLM joins the system messages into one and may shorten it; here they are kept
//!   verbatim and in place (a conversation whose system messages alone overflow comes back
//!   with `fits: false`, for the caller to reject);
//! - an assistant message with `tool_calls` and the `tool` messages answering it are kept or
//!   dropped together, so no `tool` message is left without its call (providers reject it);
//! - after dropping, the kept turns never start with an assistant message (Anthropic and
//!   Gemini reject a conversation that does): leading assistant turns go too, unless that
//!   would drop the newest turn;
//! - LiteLLM cuts text with `..` between the halves; here the marker is `...[trimmed]...`.
//!
//! Interface: [`trim_messages`] takes the `messages` array, the request's `tools` (their
//! definitions count against the budget), the encoding and the budget; [`input_budget`]
//! turns a context window, the request's `max_tokens` and a `trim_ratio` into that budget.
//! [`Trimmed::messages`] is `None` when nothing changes, so the caller keeps its body.
//!
//! Counting is exact (the model family's BPE, through [`tokens`]) but lazy: when the text's
//! bytes alone fit (a BPE token is at least one byte) nothing is tokenized, and turns are
//! counted from the newest back only until the budget is spent, so the oldest turns of a
//! long conversation are dropped without being counted.

use serde_json::Value;

use crate::tokens::{self, Encoding};

/// LiteLLM's default share of the context window the input may use when no `max_tokens` is
/// given (`trim_ratio=0.75`).
pub const DEFAULT_TRIM_RATIO: f64 = 0.75;

/// What stands where the middle of an oversized message was cut out.
pub const TRIM_MARKER: &str = "...[trimmed]...";

/// Roles whose messages are instructions, never dropped.
const SYSTEM_ROLES: [&str; 2] = ["system", "developer"];

/// How often a cut is retried when the shortened text still counts too many tokens: each
/// retry shrinks by the measured overshoot, so two or three suffice in practice.
const CUT_ATTEMPTS: usize = 8;

/// The input budget for a deployment whose context window is `max_input_tokens`: the window
/// less the completion's `max_tokens` when the request sets one (the answer needs room), else
/// `trim_ratio` of the window, as LiteLLM's `trim_messages(messages, model, trim_ratio)`.
/// (LiteLLM's own `max_tokens` argument is the input budget itself: pass it straight to
/// [`trim_messages`].)
pub fn input_budget(max_input_tokens: u64, completion_max_tokens: Option<u64>, trim_ratio: f64) -> u64 {
    match completion_max_tokens {
        Some(reserved) => max_input_tokens.saturating_sub(reserved),
        None => (max_input_tokens as f64 * trim_ratio.clamp(0.0, 1.0)) as u64,
    }
}

/// The outcome of [`trim_messages`].
#[derive(Debug, Clone, PartialEq)]
pub struct Trimmed {
    /// The messages to send instead, or `None` when the conversation fits as it is.
    pub messages: Option<Vec<Value>>,
    /// The prompt tokens of what is sent (framing and tools included), as
    /// [`tokens::count_chat`] counts them. When `counted` is false nothing was tokenized and
    /// this is an upper bound: the text's bytes.
    pub tokens: u64,
    pub counted: bool,
    /// Messages dropped (a tool call and its answers count one each).
    pub dropped: usize,
    /// Whether the newest message's text was cut.
    pub cut: bool,
    /// Whether the result is within the budget; false when the system messages, the tools
    /// and the newest turn cannot be made to fit even with its text cut.
    pub fits: bool,
}

/// Trims `messages` (the request's `messages` array) so that they and `tools` fit `budget`
/// prompt tokens, counted with `encoding`.
pub fn trim_messages(messages: &[Value], tools: Option<&Value>, encoding: Encoding, budget: u64) -> Trimmed {
    trim_messages_with(messages, tools, &|text: &str| encoding.count(text), budget)
}

/// [`trim_messages`] with any text counter (`count` must be additive over a message's
/// texts, as a tokenizer is).
pub fn trim_messages_with(
    messages: &[Value],
    tools: Option<&Value>,
    count: &dyn Fn(&str) -> u64,
    budget: u64,
) -> Trimmed {
    let bytes = |text: &str| text.len() as u64;
    let upper_bound = tokens::REPLY_PRIMING
        + tokens::count_tools_with(&bytes, tools)
        + messages.iter().map(|message| tokens::count_message_with(&bytes, message)).sum::<u64>();
    if upper_bound <= budget {
        return Trimmed {
            messages: None,
            tokens: upper_bound,
            counted: false,
            dropped: 0,
            cut: false,
            fits: true,
        };
    }

    let is_system: Vec<bool> = messages.iter().map(|message| SYSTEM_ROLES.contains(&role(message))).collect();
    let units = turns(messages, &is_system);
    let mut total = tokens::REPLY_PRIMING
        + tokens::count_tools_with(count, tools)
        + messages
            .iter()
            .zip(&is_system)
            .filter(|(_, system)| **system)
            .map(|(message, _)| tokens::count_message_with(count, message))
            .sum::<u64>();
    let Some(newest) = units.last() else {
        return Trimmed {
            messages: None,
            tokens: total,
            counted: true,
            dropped: 0,
            cut: false,
            fits: total <= budget,
        };
    };

    // Keep turns from the newest back while they fit; the newest always.
    let mut unit_costs = Vec::with_capacity(units.len());
    let mut first_kept = units.len();
    for (index, unit) in units.iter().enumerate().rev() {
        let cost: u64 =
            messages[unit.clone()].iter().map(|message| tokens::count_message_with(count, message)).sum();
        if index + 1 < units.len() && total + cost > budget {
            break;
        }
        unit_costs.push(cost);
        total += cost;
        first_kept = index;
    }
    unit_costs.reverse();
    if first_kept == 0 && total <= budget {
        return Trimmed { messages: None, tokens: total, counted: true, dropped: 0, cut: false, fits: true };
    }
    // Dropping must not leave an assistant turn first.
    if first_kept > 0 {
        while first_kept + 1 < units.len() && role(&messages[units[first_kept].start]) == "assistant" {
            total -= unit_costs.remove(0);
            first_kept += 1;
        }
    }

    let mut cut = None;
    if total > budget {
        let last = newest.end - 1;
        let before = tokens::count_message_with(count, &messages[last]);
        let allowed = before.saturating_sub(total - budget);
        let shortened = cut_message(&messages[last], allowed, count);
        let after = tokens::count_message_with(count, &shortened);
        total = total - before + after;
        cut = Some((last, shortened));
    }

    let keep_from = units[first_kept].start;
    let mut kept = Vec::with_capacity(messages.len() - keep_from + is_system.iter().filter(|s| **s).count());
    let mut dropped = 0;
    for (index, message) in messages.iter().enumerate() {
        if !is_system[index] && index < keep_from {
            dropped += 1;
            continue;
        }
        match &mut cut {
            Some((at, shortened)) if *at == index => kept.push(std::mem::take(shortened)),
            _ => kept.push(message.clone()),
        }
    }
    Trimmed {
        messages: Some(kept),
        tokens: total,
        counted: true,
        dropped,
        cut: cut.is_some(),
        fits: total <= budget,
    }
}

fn role(message: &Value) -> &str {
    message.get("role").and_then(Value::as_str).unwrap_or("")
}

/// The non-system messages as turns that are dropped whole: an assistant message with
/// `tool_calls` together with the `tool` messages right after it; any other message alone.
fn turns(messages: &[Value], is_system: &[bool]) -> Vec<std::ops::Range<usize>> {
    let mut units = Vec::new();
    let mut index = 0;
    while index < messages.len() {
        if is_system[index] {
            index += 1;
            continue;
        }
        let calls_tools = messages[index]
            .get("tool_calls")
            .and_then(Value::as_array)
            .is_some_and(|calls| !calls.is_empty());
        let mut end = index + 1;
        if calls_tools {
            while end < messages.len() && role(&messages[end]) == "tool" {
                end += 1;
            }
        }
        units.push(index..end);
        index = end;
    }
    units
}

/// `message` with its text cut so that the whole message counts at most `allowed` tokens:
/// the largest text (the string content, or the largest text part) is cut first.
fn cut_message(message: &Value, allowed: u64, count: &dyn Fn(&str) -> u64) -> Value {
    let mut shortened = message.clone();
    for _ in 0..CUT_ATTEMPTS {
        let current = tokens::count_message_with(count, &shortened);
        if current <= allowed {
            break;
        }
        let Some(text) = largest_text(&mut shortened) else { break };
        if text.as_str() == TRIM_MARKER {
            break;
        }
        let text_tokens = count(text);
        let target = text_tokens.saturating_sub(current - allowed);
        *text = cut_text(text, target, count);
    }
    shortened
}

/// The message's longest text: its string `content`, or the longest `text` part.
fn largest_text(message: &mut Value) -> Option<&mut String> {
    match message.get_mut("content")? {
        Value::String(text) => Some(text),
        Value::Array(parts) => parts
            .iter_mut()
            .filter_map(|part| match part.get_mut("text") {
                Some(Value::String(text)) if text != TRIM_MARKER => Some(text),
                _ => None,
            })
            .max_by_key(|text| text.len()),
        _ => None,
    }
}

/// `text` cut to at most `target` tokens: its start, [`TRIM_MARKER`], its end, in equal
/// shares. The cut is sized from the measured tokens per byte and re-measured.
pub fn cut_text(text: &str, target: u64, count: &dyn Fn(&str) -> u64) -> String {
    let current = count(text);
    if current <= target {
        return text.to_owned();
    }
    let marker = count(TRIM_MARKER);
    let mut keep_share = target.saturating_sub(marker) as f64 / current as f64;
    for _ in 0..CUT_ATTEMPTS {
        let keep = (text.len() as f64 * keep_share) as usize;
        if keep == 0 {
            break;
        }
        let head = text.floor_char_boundary(keep / 2);
        let tail = text.ceil_char_boundary(text.len() - keep / 2);
        let candidate = format!("{}{TRIM_MARKER}{}", &text[..head], &text[tail..]);
        let tokens = count(&candidate);
        if tokens <= target {
            return candidate;
        }
        // Token boundaries moved at the seams: shrink by the overshoot, and a little more.
        keep_share *=
            target.saturating_sub(marker) as f64 / tokens.saturating_sub(marker).max(1) as f64 * 0.97;
    }
    TRIM_MARKER.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text_of(message: &Value) -> &str {
        message["content"].as_str().unwrap()
    }

    #[test]
    fn budgets_leave_room_for_the_answer() {
        assert_eq!(input_budget(128_000, Some(4_000), DEFAULT_TRIM_RATIO), 124_000);
        assert_eq!(input_budget(128_000, None, DEFAULT_TRIM_RATIO), 96_000);
        assert_eq!(input_budget(1_000, Some(5_000), DEFAULT_TRIM_RATIO), 0);
        assert_eq!(input_budget(1_000, None, 7.0), 1_000, "the ratio is at most the whole window");
    }

    #[test]
    fn a_fitting_conversation_is_left_alone_without_counting() {
        let messages = [json!({"role": "user", "content": "hello"})];
        let trimmed = trim_messages(&messages, None, Encoding::Cl100kBase, 1_000);
        assert_eq!(trimmed.messages, None);
        assert!(trimmed.fits && !trimmed.counted);
    }

    #[test]
    fn the_oldest_turns_go_first_and_system_stays_in_place() {
        let turn = "word ".repeat(200);
        let messages = vec![
            json!({"role": "system", "content": "be brief"}),
            json!({"role": "user", "content": format!("one {turn}")}),
            json!({"role": "assistant", "content": format!("two {turn}")}),
            json!({"role": "system", "content": "mid-conversation instruction"}),
            json!({"role": "user", "content": format!("three {turn}")}),
            json!({"role": "assistant", "content": format!("four {turn}")}),
            json!({"role": "user", "content": "five"}),
        ];
        let encoding = Encoding::O200kBase;
        let budget = 300;
        let trimmed = trim_messages(&messages, None, encoding, budget);
        let kept = trimmed.messages.clone().unwrap();
        assert!(trimmed.fits && !trimmed.cut);
        assert_eq!(trimmed.tokens, tokens::count_chat(encoding, &Value::Array(kept.clone()), None));
        assert!(trimmed.tokens <= budget);
        let texts: Vec<&str> = kept.iter().map(text_of).collect();
        // "four" fits but would open the kept turns with an assistant message.
        assert_eq!(texts, ["be brief", "mid-conversation instruction", "five"]);
        assert_eq!(trimmed.dropped, 4);
    }

    #[test]
    fn an_oversized_newest_message_is_cut_in_the_middle() {
        let long = format!("START {} END", "lorem ipsum dolor sit amet ".repeat(2_000));
        let messages =
            vec![json!({"role": "system", "content": "sys"}), json!({"role": "user", "content": long})];
        let trimmed = trim_messages(&messages, None, Encoding::Cl100kBase, 300);
        let kept = trimmed.messages.unwrap();
        assert!(trimmed.cut && trimmed.fits);
        assert!(trimmed.tokens <= 300);
        assert!(trimmed.tokens >= 250, "the cut keeps most of what fits: {}", trimmed.tokens);
        let text = text_of(&kept[1]);
        assert!(text.starts_with("START ") && text.ends_with(" END") && text.contains(TRIM_MARKER));
        assert_eq!(text_of(&kept[0]), "sys");
    }

    #[test]
    fn parts_arrays_cut_their_largest_text() {
        let long = "abc def ghi ".repeat(3_000);
        let messages = vec![json!({"role": "user", "content": [
            {"type": "text", "text": "look at this:"},
            {"type": "image_url", "image_url": {"url": "https://example.com/a.png", "detail": "low"}},
            {"type": "text", "text": long},
        ]})];
        let trimmed = trim_messages(&messages, None, Encoding::O200kBase, 400);
        let kept = trimmed.messages.unwrap();
        assert!(trimmed.cut && trimmed.fits && trimmed.tokens <= 400);
        let parts = kept[0]["content"].as_array().unwrap();
        assert_eq!(parts[0]["text"], "look at this:");
        assert_eq!(parts[1]["type"], "image_url");
        assert!(parts[2]["text"].as_str().unwrap().contains(TRIM_MARKER));
    }

    #[test]
    fn tool_calls_and_their_answers_go_together() {
        let big = "data ".repeat(400);
        let messages = vec![
            json!({"role": "user", "content": "weather?"}),
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}]}),
            json!({"role": "tool", "tool_call_id": "c1", "content": big}),
            json!({"role": "user", "content": "and tomorrow?"}),
        ];
        let trimmed = trim_messages(&messages, None, Encoding::Cl100kBase, 100);
        let kept = trimmed.messages.unwrap();
        assert_eq!(kept.len(), 1, "the tool answer does not fit, so its call goes too: {kept:?}");
        assert_eq!(text_of(&kept[0]), "and tomorrow?");

        // The newest turn is a tool answer: its call stays with it, cut to fit.
        let newest_tool = &messages[..3];
        let trimmed = trim_messages(newest_tool, None, Encoding::Cl100kBase, 120);
        let kept = trimmed.messages.unwrap();
        assert_eq!(kept.iter().map(role).collect::<Vec<_>>(), ["assistant", "tool"]);
        assert!(trimmed.cut && trimmed.fits);
    }

    #[test]
    fn system_messages_too_large_are_reported_not_cut() {
        let messages = vec![
            json!({"role": "system", "content": "rule ".repeat(500)}),
            json!({"role": "user", "content": "hi"}),
        ];
        let trimmed = trim_messages(&messages, None, Encoding::Cl100kBase, 100);
        assert!(!trimmed.fits);
        let kept = trimmed.messages.unwrap_or_else(|| messages.clone());
        assert_eq!(kept[0], messages[0]);
    }

    #[test]
    fn odd_messages_and_budgets_never_panic() {
        let odd = vec![
            json!("not an object"),
            json!({"content": "no role"}),
            json!({"role": "user", "content": 42}),
            json!({"role": "assistant", "tool_calls": []}),
            json!({"role": "tool", "content": "an answer without its call"}),
            json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}),
        ];
        for budget in [0, 1, 5, 50, 5_000] {
            let trimmed = trim_messages(&odd, None, Encoding::Cl100kBase, budget);
            assert_eq!(trimmed.fits, trimmed.tokens <= budget, "budget {budget}");
            if let Some(kept) = &trimmed.messages {
                assert_eq!(kept.last(), odd.last(), "an image cannot be cut, so it stays");
            }
        }
        assert_eq!(trim_messages(&[], None, Encoding::O200kBase, 0).messages, None);
    }

    #[test]
    fn cutting_respects_multibyte_characters() {
        let text = "héllo wörld ñ 日本語 ".repeat(300);
        let count = |t: &str| Encoding::Cl100kBase.count(t);
        let cut = cut_text(&text, 50, &count);
        assert!(count(&cut) <= 50);
        assert!(cut.contains(TRIM_MARKER));
    }
}
