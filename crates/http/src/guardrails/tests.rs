//! Unit tests of the built-ins and of the stream helpers.

use serde_json::{Value, json};
use tollgate_domain::GatewayConfig;
use tollgate_domain::config::GuardrailKind;
use tollgate_domain::tokens::Encoding;

use super::builtin::{ContentFilter, PiiMasking, PromptLimits};
use super::flow::{Flavor, deltas, rewrite_stream};
use super::{CallContext, GuardedAnswer, GuardedRequest, Guardrail, Verdict};

fn kind(yaml_params: &str) -> GuardrailKind {
    let yaml = format!("guardrails:\n  - guardrail_name: g\n    litellm_params: {{{yaml_params}}}\n");
    let config = GatewayConfig::from_yaml(&yaml, &std::collections::HashMap::new()).unwrap();
    config.guardrails.guardrails[0].kind.clone()
}

fn context<'a>(key_metadata: Option<&'a Value>) -> CallContext<'a> {
    CallContext {
        call_id: "c",
        model: "m",
        context_window: None,
        encoding: Encoding::Cl100kBase,
        key_hash: None,
        key_alias: None,
        team_id: None,
        key_metadata,
        team_metadata: None,
    }
}

async fn run(
    guardrail: &dyn Guardrail,
    text: &str,
    key_metadata: Option<&Value>,
) -> (Verdict, String, Option<u64>) {
    let mut messages = vec![json!({"role": "user", "content": [{"type": "text", "text": text}]})];
    let mut max_tokens = Some(500);
    let mut memo = http::Extensions::new();
    let mut request = GuardedRequest {
        context: context(key_metadata),
        messages: &mut messages,
        max_tokens: &mut max_tokens,
        memo: &mut memo,
    };
    let verdict = guardrail.pre_call(&mut request).await;
    (verdict, messages[0]["content"][0]["text"].as_str().unwrap().to_owned(), max_tokens)
}

#[tokio::test]
async fn content_filter_blocks_masks_and_reads_the_keys_words() {
    let GuardrailKind::ContentFilter(config) = kind(
        "guardrail: litellm_content_filter, mode: pre_call, pattern_redaction_format: '<<{pattern_name}>>',
         patterns: [{pattern_type: prebuilt, pattern_name: email, action: MASK},
                    {pattern_type: regex, pattern: 'PROJ-[0-9]+', name: project, action: BLOCK}],
         blocked_words: [{keyword: c++, action: MASK}]",
    ) else {
        panic!("content filter")
    };
    let filter = ContentFilter::new(&config).unwrap();
    let (verdict, text, _) = run(&filter, "mail a@b.io about c++ code", None).await;
    assert_eq!((verdict, text.as_str()), (Verdict::Modified, "mail <<EMAIL>> about [KEYWORD_REDACTED] code"));
    let (verdict, _, _) = run(&filter, "see PROJ-42", None).await;
    assert_eq!(verdict, Verdict::Block("project pattern detected".to_owned()));
    // Whole words only: `classified` is not `class`.
    let metadata = json!({"blocked_words": ["class"]});
    assert_eq!(run(&filter, "classified", Some(&metadata)).await.0, Verdict::Allow);
    assert!(matches!(run(&filter, "a CLASS act", Some(&metadata)).await.0, Verdict::Block(_)));
    // A custom regex that does not compile is a start-up error naming it.
    let GuardrailKind::ContentFilter(bad) = kind(
        "guardrail: litellm_content_filter, mode: pre_call, patterns: [{pattern_type: regex, pattern: '(', name: broken}]",
    ) else {
        panic!("content filter")
    };
    assert!(ContentFilter::new(&bad).unwrap_err().contains("'broken'"));
}

#[tokio::test]
async fn prompt_limits_clamp_or_block() {
    let GuardrailKind::PromptLimits(clamp) =
        kind("guardrail: prompt_limits, mode: pre_call, max_tokens: 100")
    else {
        panic!("limits")
    };
    assert_eq!(run(&PromptLimits::new(&clamp), "hi", None).await.2, Some(100));
    let GuardrailKind::PromptLimits(block) = kind(
        "guardrail: prompt_limits, mode: pre_call, max_tokens: 100, max_tokens_action: block, max_prompt_tokens: 20",
    ) else {
        panic!("limits")
    };
    let limits = PromptLimits::new(&block);
    assert!(
        matches!(run(&limits, &"word ".repeat(40), None).await.0, Verdict::Block(r) if r.contains("tokens"))
    );
    assert!(matches!(run(&limits, "hi", None).await.0, Verdict::Block(r) if r.contains("max_tokens 500")));
}

#[tokio::test]
async fn pii_placeholders_come_back_in_the_answer() {
    let GuardrailKind::PiiMasking(config) =
        kind("guardrail: pii_masking, mode: pre_call, output_parse_pii: true")
    else {
        panic!("pii")
    };
    let pii = PiiMasking::new(&config).unwrap();
    let mut messages = vec![json!({"role": "user", "content": "call +44 20 7946 0958 or x@y.org"})];
    let (mut max_tokens, mut memo) = (None, http::Extensions::new());
    let mut request = GuardedRequest {
        context: context(None),
        messages: &mut messages,
        max_tokens: &mut max_tokens,
        memo: &mut memo,
    };
    assert_eq!(pii.pre_call(&mut request).await, Verdict::Modified);
    assert_eq!(messages[0]["content"], "call <PHONE_NUMBER> or <EMAIL_ADDRESS>");
    let mut texts = vec!["I'll mail <EMAIL_ADDRESS>.".to_owned()];
    let mut answer = GuardedAnswer { context: context(None), texts: &mut texts, memo: &mut memo };
    assert_eq!(pii.post_call(&mut answer).await, Verdict::Modified);
    assert_eq!(texts[0], "I'll mail x@y.org.");
}

#[test]
fn streams_are_read_and_rewritten_by_choice() {
    let held = concat!(
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"my mail: \"}}]}\n\n",
        "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"a@b.io\"}}]}\n\n",
        "data: [DONE]\n\n"
    );
    assert_eq!(
        deltas(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"x\"}}]}", Flavor::Chat),
        [(0, "x".to_owned())]
    );
    assert!(deltas(b"data: [DONE]", Flavor::Chat).is_empty());
    let rewritten = rewrite_stream(held.as_bytes(), Flavor::Chat, &["my mail: <EMAIL>".to_owned()]);
    let text = String::from_utf8(rewritten.to_vec()).unwrap();
    let contents: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|payload| serde_json::from_str::<Value>(payload).ok())
        .map(|event| event["choices"][0]["delta"]["content"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(contents, ["", "my mail: <EMAIL>", ""]);
    assert!(text.ends_with("data: [DONE]\n\n"));
}
