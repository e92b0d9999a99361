//! The offline provider: `fake/…` models and any deployment with LiteLLM's `mock_response`.
//!
//! It answers in OpenAI's wire format without leaving the process, so the demo config and
//! tests work with no network and no key. Token counts are word counts: it is a stand-in,
//! not a tokenizer.

use std::collections::VecDeque;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tollgate_domain::Endpoint;

use crate::body::Chunks;
use crate::{ProviderError, UpstreamBody, UpstreamRequest, UpstreamResponse};

/// Dimensions of a fake embedding when the request does not ask for a number.
const DEFAULT_DIMENSIONS: usize = 16;
/// The most dimensions a fake embedding will produce.
const MAX_DIMENSIONS: usize = 4096;

pub struct FakeProvider;

#[async_trait::async_trait]
impl crate::Provider for FakeProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        let body: Value = serde_json::from_slice(&request.body)
            .map_err(|e| ProviderError::BadRequest(format!("invalid JSON body: {e}")))?;
        let model = body.get("model").and_then(Value::as_str).unwrap_or_default();
        let mock = request.deployment.mock_response.as_deref();
        let body = match (request.endpoint, request.stream) {
            (Endpoint::Embeddings, _) => UpstreamBody::Complete(json_bytes(&embeddings(model, &body)?)),
            (Endpoint::Rerank, _) => UpstreamBody::Complete(json_bytes(&rerank(&body)?)),
            (endpoint, false) => {
                let reply = reply_text(endpoint, &body, mock);
                UpstreamBody::Complete(json_bytes(&completion(endpoint, model, &body, &reply)))
            }
            (endpoint, true) => {
                let reply = reply_text(endpoint, &body, mock);
                UpstreamBody::Stream(Chunks(stream_events(endpoint, model, &body, &reply)).boxed())
            }
        };
        Ok(UpstreamResponse { headers: HeaderMap::new(), body })
    }
}

fn json_bytes(value: &Value) -> Bytes {
    Bytes::from(value.to_string())
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn words(text: &str) -> u64 {
    text.split_whitespace().count() as u64
}

/// Every piece of text in the prompt: message contents (strings or text parts) or `prompt`.
fn prompt_text(body: &Value) -> String {
    let mut text = String::new();
    let mut push = |s: &str| {
        text.push_str(s);
        text.push(' ');
    };
    if let Some(messages) = body.get("messages").and_then(Value::as_array) {
        for message in messages {
            match message.get("content") {
                Some(Value::String(s)) => push(s),
                Some(Value::Array(parts)) => {
                    parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).for_each(&mut push);
                }
                _ => {}
            }
        }
    }
    match body.get("prompt") {
        Some(Value::String(s)) => push(s),
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).for_each(&mut push),
        _ => {}
    }
    text
}

fn last_user_message(body: &Value) -> Option<String> {
    let messages = body.get("messages")?.as_array()?;
    let message = messages.iter().rev().find(|m| m.get("role").and_then(Value::as_str) == Some("user"))?;
    match message.get("content")? {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => Some(
            parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" "),
        ),
        _ => None,
    }
}

fn reply_text(endpoint: Endpoint, body: &Value, mock: Option<&str>) -> String {
    if let Some(mock) = mock {
        return mock.to_owned();
    }
    let heard = match endpoint {
        Endpoint::ChatCompletions => last_user_message(body),
        _ => Some(prompt_text(body)),
    };
    let heard: String = heard.unwrap_or_default().split_whitespace().take(24).collect::<Vec<_>>().join(" ");
    if heard.is_empty() {
        "Hello from Tollgate's demo model. It answers offline; point a model_name at a real provider in config.yaml for real answers.".to_owned()
    } else {
        format!("Hello from Tollgate's demo model. You said: {heard}")
    }
}

fn usage(body: &Value, reply: &str) -> Value {
    let prompt = words(&prompt_text(body)).max(1);
    let completion = words(reply);
    json!({"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion})
}

fn completion(endpoint: Endpoint, model: &str, body: &Value, reply: &str) -> Value {
    let id = uuid::Uuid::new_v4().simple();
    match endpoint {
        Endpoint::Completions => json!({
            "id": format!("cmpl-{id}"),
            "object": "text_completion",
            "created": now(),
            "model": model,
            "choices": [{"index": 0, "text": reply, "logprobs": null, "finish_reason": "stop"}],
            "usage": usage(body, reply),
        }),
        _ => json!({
            "id": format!("chatcmpl-{id}"),
            "object": "chat.completion",
            "created": now(),
            "model": model,
            "system_fingerprint": null,
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": reply, "refusal": null},
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": usage(body, reply),
        }),
    }
}

/// The reply as SSE events: one per word, a closing chunk with the finish reason, a usage
/// chunk when `stream_options.include_usage` asks for one, then `[DONE]`.
fn stream_events(endpoint: Endpoint, model: &str, body: &Value, reply: &str) -> VecDeque<Bytes> {
    let id = uuid::Uuid::new_v4().simple();
    let created = now();
    let chat = endpoint == Endpoint::ChatCompletions;
    let (id, object) = if chat {
        (format!("chatcmpl-{id}"), "chat.completion.chunk")
    } else {
        (format!("cmpl-{id}"), "text_completion")
    };
    let include_usage =
        body.pointer("/stream_options/include_usage").and_then(Value::as_bool).unwrap_or(false);
    let event = |choices: Value, usage: Value| {
        let mut chunk =
            json!({"id": id, "object": object, "created": created, "model": model, "choices": choices});
        if include_usage {
            chunk["usage"] = usage;
        }
        Bytes::from(format!("data: {chunk}\n\n"))
    };
    let choice = |text: &str, finish: Value| {
        if chat {
            json!([{"index": 0, "delta": {"content": text}, "logprobs": null, "finish_reason": finish}])
        } else {
            json!([{"index": 0, "text": text, "logprobs": null, "finish_reason": finish}])
        }
    };

    let mut events = VecDeque::new();
    if chat {
        events.push_back(event(
            json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]),
            Value::Null,
        ));
    }
    for word in reply.split_inclusive(' ') {
        events.push_back(event(choice(word, Value::Null), Value::Null));
    }
    events.push_back(event(choice("", json!("stop")), Value::Null));
    if include_usage {
        events.push_back(event(json!([]), usage(body, reply)));
    }
    events.push_back(Bytes::from_static(b"data: [DONE]\n\n"));
    events
}

/// A deterministic ranking: each document scores the share of the query's words it holds.
fn rerank(body: &Value) -> Result<Value, ProviderError> {
    let request = crate::retrieval::rerank_request(body, "fake", &["max_tokens_per_doc"])?;
    let words = |text: &str| -> Vec<String> { text.split_whitespace().map(str::to_lowercase).collect() };
    let query = words(&request.query);
    let mut ranked: Vec<crate::retrieval::Ranked> = request
        .documents
        .iter()
        .enumerate()
        .map(|(index, document)| {
            let held = words(document);
            let shared = query.iter().filter(|word| held.contains(word)).count();
            let relevance_score = if query.is_empty() { 0.0 } else { shared as f64 / query.len() as f64 };
            crate::retrieval::Ranked { index: index as u64, relevance_score, document: None }
        })
        .collect();
    // Stable: equal scores keep the documents' order.
    ranked.sort_by(|a, b| b.relevance_score.total_cmp(&a.relevance_score));
    ranked.truncate(request.top_n.map_or(usize::MAX, |n| n as usize));
    let id = uuid::Uuid::new_v4().to_string();
    Ok(crate::retrieval::rerank_answer(&id, ranked, &request, json!({"billed_units": {"search_units": 1}})))
}

/// A deterministic unit vector per input, so equal texts embed equally.
fn embeddings(model: &str, body: &Value) -> Result<Value, ProviderError> {
    let inputs: Vec<String> = match body.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .collect(),
        _ => return Err(ProviderError::BadRequest("'input' must be a non-empty string or array".to_owned())),
    };
    let dimensions = match body.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(v) => {
            v.as_u64().map(|n| n as usize).filter(|n| (1..=MAX_DIMENSIONS).contains(n)).ok_or_else(|| {
                ProviderError::BadRequest(format!("'dimensions' must be between 1 and {MAX_DIMENSIONS}"))
            })?
        }
    };
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": unit_vector(text, dimensions)}))
        .collect();
    let tokens: u64 = inputs.iter().map(|t| words(t).max(1)).sum();
    Ok(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
}

fn unit_vector(text: &str, dimensions: usize) -> Vec<f64> {
    // xorshift seeded by FNV-1a of the text: cheap, deterministic, spread over [-1, 1].
    let mut state = text
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
        | 1;
    let mut values: Vec<f64> = (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect();
    let norm = values.iter().map(|v| v * v).sum::<f64>().sqrt().max(f64::MIN_POSITIVE);
    values.iter_mut().for_each(|v| *v /= norm);
    values
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Provider;
    use std::collections::HashMap;
    use tollgate_domain::{Deployment, GatewayConfig};

    fn deployment(mock: Option<&str>) -> Deployment {
        let mock = mock.map(|m| format!(", mock_response: '{m}'")).unwrap_or_default();
        let yaml =
            format!("model_list:\n  - model_name: demo\n    litellm_params: {{model: fake/demo{mock}}}\n");
        GatewayConfig::from_yaml(&yaml, &HashMap::new()).unwrap().deployments.remove(0)
    }

    async fn call(endpoint: Endpoint, body: Value, stream: bool, mock: Option<&str>) -> Bytes {
        let deployment = deployment(mock);
        let request = UpstreamRequest { endpoint, deployment: &deployment, body: json_bytes(&body), stream };
        match FakeProvider.call(request).await.unwrap().body {
            UpstreamBody::Complete(bytes) => bytes,
            UpstreamBody::Stream(body) => body.collect().await.unwrap().to_bytes(),
        }
    }

    #[tokio::test]
    async fn chat_answers_with_the_mock_response() {
        let out = call(
            Endpoint::ChatCompletions,
            json!({"model": "demo", "messages": [{"role": "user", "content": "hi there"}]}),
            false,
            Some("canned"),
        )
        .await;
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(out["object"], "chat.completion");
        assert_eq!(out["choices"][0]["message"]["content"], "canned");
        assert_eq!(out["usage"], json!({"prompt_tokens": 2, "completion_tokens": 1, "total_tokens": 3}));
    }

    #[tokio::test]
    async fn stream_spells_the_reply_and_ends_with_done() {
        let out = call(
            Endpoint::ChatCompletions,
            json!({"model": "demo", "messages": [{"role": "user", "content": "ping"}], "stream_options": {"include_usage": true}}),
            true,
            None,
        )
        .await;
        let text = std::str::from_utf8(&out).unwrap();
        let events: Vec<&str> = text.split("\n\n").filter(|e| !e.is_empty()).collect();
        assert_eq!(*events.last().unwrap(), "data: [DONE]");
        let mut content = String::new();
        let mut usage = Value::Null;
        for event in &events[..events.len() - 1] {
            let chunk: Value = serde_json::from_str(event.strip_prefix("data: ").unwrap()).unwrap();
            if let Some(piece) = chunk.pointer("/choices/0/delta/content").and_then(Value::as_str) {
                content.push_str(piece);
            }
            if !chunk["usage"].is_null() {
                usage = chunk["usage"].clone();
            }
        }
        assert_eq!(content, "Hello from Tollgate's demo model. You said: ping");
        assert_eq!(usage["completion_tokens"], 8);
    }

    #[tokio::test]
    async fn embeddings_are_deterministic_unit_vectors() {
        let out = call(
            Endpoint::Embeddings,
            json!({"model": "e", "input": ["a", "b", "a"], "dimensions": 8}),
            false,
            None,
        )
        .await;
        let out: Value = serde_json::from_slice(&out).unwrap();
        let vector = |i: usize| {
            out["data"][i]["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(vector(0).len(), 8);
        assert_eq!(vector(0), vector(2));
        assert_ne!(vector(0), vector(1));
        assert!((vector(1).iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn rerank_scores_shared_words() {
        let body = json!({"model": "r", "query": "capital of France", "documents": ["Berlin is big", "Paris is the capital of France", "the capital"], "top_n": 2});
        let out: Value = serde_json::from_slice(&call(Endpoint::Rerank, body, false, None).await).unwrap();
        let results = out["results"].as_array().unwrap();
        assert_eq!(results.len(), 2);
        assert_eq!(
            (results[0]["index"].as_u64(), results[0]["relevance_score"].as_f64()),
            (Some(1), Some(1.0))
        );
        assert_eq!(results[0]["document"]["text"], "Paris is the capital of France");
        assert_eq!(results[1]["index"], 2);
        assert_eq!(out["meta"]["billed_units"]["search_units"], 1);
    }

    #[tokio::test]
    async fn embeddings_reject_missing_input() {
        let deployment = deployment(None);
        let request = UpstreamRequest {
            endpoint: Endpoint::Embeddings,
            deployment: &deployment,
            body: Bytes::from_static(b"{\"model\":\"e\"}"),
            stream: false,
        };
        assert!(matches!(FakeProvider.call(request).await, Err(ProviderError::BadRequest(_))));
    }
}
