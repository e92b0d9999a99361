//! Cohere's v2 API (`cohere/…` and `cohere_chat/…` models): chat through `POST /v2/chat`
//! (named SSE events when streaming), embeddings through `POST /v2/embed`, and LiteLLM's
//! rerank through `POST /v2/rerank`, each with `Authorization: Bearer <api_key>`.
//!
//! `api_base` is Cohere's host (`https://api.cohere.com`); a base that already ends in a
//! version or an operation (`…/v2`, `…/v1/chat`, as LiteLLM configs often hold) is cut back
//! to the host first.
//!
//! Errors are Cohere's `{"id", "message"}` bodies: the status is kept (401 for a bad key, 429
//! for a rate limit, 422 for an invalid body), a 400 saying "too many tokens" gets the code
//! `context_length_exceeded`, and 498 (a blocked token in the request or answer) becomes a
//! 400 with code `content_filter`. A generation that ends with `ERROR` or `TIMEOUT` is a 500
//! or a 408, or a final error event in a stream.

pub(crate) mod chat;
mod embed;

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tollgate_domain::{Deployment, Endpoint};

use crate::body::TranslatedStream;
use crate::retrieval::{self, RerankRequest};
use crate::{HttpClient, ProviderError, UpstreamBody, UpstreamRequest, UpstreamResponse, bearer, transport};

pub struct CohereProvider {
    client: HttpClient,
}

impl CohereProvider {
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }
}

#[async_trait::async_trait]
impl crate::Provider for CohereProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        let deployment = request.deployment;
        let openai: Value = serde_json::from_slice(&request.body)
            .map_err(|e| ProviderError::BadRequest(format!("invalid JSON body: {e}")))?;
        let model = openai
            .get("model")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::BadRequest("missing `model`".into()))?
            .to_owned();
        match request.endpoint {
            Endpoint::ChatCompletions => self.chat(deployment, &openai, &model, request.stream).await,
            Endpoint::Embeddings => self.embed(deployment, &openai, &model).await,
            Endpoint::Rerank => self.rerank(deployment, &openai).await,
            Endpoint::Completions => Err(ProviderError::BadRequest(format!(
                "model '{}' is a Cohere model, which serves chat completions, embeddings and rerank, not /completions",
                deployment.model_name
            ))),
        }
    }
}

impl CohereProvider {
    async fn chat(
        &self,
        deployment: &Deployment,
        openai: &Value,
        model: &str,
        stream: bool,
    ) -> Result<UpstreamResponse, ProviderError> {
        let include_usage =
            openai.pointer("/stream_options/include_usage").and_then(Value::as_bool) == Some(true);
        let body = chat::to_chat_request(openai, model, stream)?;
        let upstream = bearer::json_post(deployment, url(deployment, "chat"), &body)?;
        let response = transport::exchange(&self.client, deployment, upstream, stream, read_error).await?;
        let created = unix_now();
        let body = match response.body {
            UpstreamBody::Complete(bytes) => {
                let answer: Value = serde_json::from_slice(&bytes).map_err(|e| {
                    ProviderError::Protocol(format!("cohere answered with invalid JSON: {e}"))
                })?;
                UpstreamBody::Complete(Bytes::from(
                    chat::to_chat_completion(&answer, model, created)?.to_string(),
                ))
            }
            UpstreamBody::Stream(events) => {
                let translator = chat::Translator::new(model.to_owned(), created, include_usage);
                UpstreamBody::Stream(TranslatedStream::new(events, translator).boxed())
            }
        };
        Ok(UpstreamResponse { headers: response.headers, body })
    }

    async fn embed(
        &self,
        deployment: &Deployment,
        openai: &Value,
        model: &str,
    ) -> Result<UpstreamResponse, ProviderError> {
        let inputs = retrieval::text_inputs(openai, "cohere")?;
        let kind = embed::kind(&inputs)?;
        let base64 = retrieval::wants_base64(openai)?;
        let mut vectors = Vec::with_capacity(inputs.len());
        let mut tokens = 0;
        let mut headers = http::HeaderMap::new();
        for batch in inputs.chunks(kind.batch()) {
            let body = embed::body(model, batch, kind, openai)?;
            let (answer, answer_headers) = self.call_json(deployment, "embed", &body).await?;
            let (batch_vectors, batch_tokens) = embed::answer(&answer, batch.len(), base64)?;
            vectors.extend(batch_vectors);
            tokens += batch_tokens;
            headers = answer_headers;
        }
        let list = retrieval::embedding_list(vectors, model, tokens);
        Ok(UpstreamResponse { headers, body: UpstreamBody::Complete(Bytes::from(list.to_string())) })
    }

    async fn rerank(&self, deployment: &Deployment, body: &Value) -> Result<UpstreamResponse, ProviderError> {
        let request = retrieval::rerank_request(body, "cohere", &["max_tokens_per_doc"])?;
        let upstream_body = rerank_body(&request, body);
        let (answer, headers) = self.call_json(deployment, "rerank", &upstream_body).await?;
        let answer = rerank_answer(&answer, &request)?;
        Ok(UpstreamResponse { headers, body: UpstreamBody::Complete(Bytes::from(answer.to_string())) })
    }

    /// One whole JSON exchange with `/v2/{op}`.
    async fn call_json(
        &self,
        deployment: &Deployment,
        op: &str,
        body: &Value,
    ) -> Result<(Value, http::HeaderMap), ProviderError> {
        let upstream = bearer::json_post(deployment, url(deployment, op), body)?;
        let response = transport::exchange(&self.client, deployment, upstream, false, read_error).await?;
        bearer::json_answer(response, "cohere")
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `{host}/v2/{op}`, where the host is `api_base` without a version or operation it ends in.
fn url(deployment: &Deployment, op: &str) -> String {
    let mut base = deployment.api_base.as_deref().unwrap_or_default().trim_end_matches('/');
    for version in ["/v1", "/v2"] {
        for suffix in ["/chat", "/embed", "/rerank", ""] {
            if let Some(host) = base.strip_suffix(&format!("{version}{suffix}") as &str) {
                base = host;
            }
        }
    }
    format!("{base}/v2/{op}")
}

/// LiteLLM's rerank request as a `/v2/rerank` body (strings only: v2 ranks text).
fn rerank_body(request: &RerankRequest, body: &Value) -> Value {
    let mut upstream =
        json!({"model": request.model, "query": request.query, "documents": request.documents});
    if let Some(top_n) = request.top_n {
        upstream["top_n"] = json!(top_n);
    }
    retrieval::pass_through(body, &mut upstream, &["max_tokens_per_doc", "priority"]);
    upstream
}

/// `/v2/rerank`'s answer (`{id, results, meta}`, already LiteLLM's shape) with documents
/// added when asked for; `meta` is kept, for its `billed_units.search_units`.
fn rerank_answer(answer: &Value, request: &RerankRequest) -> Result<Value, ProviderError> {
    let results = answer
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol("cohere answered a rerank without `results`".into()))?;
    let ranked = results
        .iter()
        .map(|r| retrieval::ranked(r, request.documents.len(), "cohere"))
        .collect::<Result<Vec<_>, _>>()?;
    let id = match answer.get("id").and_then(Value::as_str) {
        Some(id) => id.to_owned(),
        None => uuid::Uuid::new_v4().to_string(),
    };
    Ok(retrieval::rerank_answer(&id, ranked, request, answer.get("meta").cloned().unwrap_or(json!({}))))
}

/// Cohere's error body, `{"id": ..., "message": ...}`, as an error.
fn read_error(status: u16, body: &[u8], deployment: &Deployment) -> ProviderError {
    let json: Option<Value> = serde_json::from_slice(body).ok();
    let message = json
        .as_ref()
        .and_then(|j| j.get("message"))
        .and_then(Value::as_str)
        .map(str::to_owned)
        .unwrap_or_else(|| transport::quote_body(status, body));
    if status == 498 {
        return ProviderError::Upstream {
            status: 400,
            message: transport::redact(deployment, message),
            error_type: None,
            param: None,
            code: Some("content_filter".to_owned()),
            retry_after: None,
        };
    }
    bearer::upstream_error(status, message, deployment)
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;
    use crate::body::Chunks;

    fn deployment(base: &str) -> Deployment {
        tollgate_domain::GatewayConfig::from_yaml(
            &format!("model_list:\n  - model_name: c\n    litellm_params: {{model: cohere/command-a-03-2025, api_key: co-secret, api_base: \"{base}\"}}\n"),
            &std::collections::HashMap::new(),
        )
        .unwrap()
        .deployments
        .remove(0)
    }

    #[test]
    fn urls_reach_v2_whatever_the_base_ends_in() {
        for base in [
            "https://api.cohere.com",
            "https://api.cohere.com/",
            "https://api.cohere.com/v2",
            "https://api.cohere.com/v1",
            "https://api.cohere.com/v1/chat",
            "https://api.cohere.com/v2/rerank/",
        ] {
            assert_eq!(url(&deployment(base), "embed"), "https://api.cohere.com/v2/embed", "{base}");
        }
        assert_eq!(
            url(&deployment("http://127.0.0.1:9/proxy/cohere"), "chat"),
            "http://127.0.0.1:9/proxy/cohere/v2/chat"
        );
    }

    #[test]
    fn errors_keep_cohere_messages_and_map_status() {
        let d = deployment("https://api.cohere.com");
        let error = |status: u16, body: &str| match read_error(status, body.as_bytes(), &d) {
            ProviderError::Upstream { status, message, code, .. } => (status, message, code),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            error(401, r#"{"id":"a1","message":"invalid api token"}"#),
            (401, "invalid api token".into(), None)
        );
        let long = r#"{"id":"a2","message":"too many tokens: total number of tokens in the prompt cannot exceed 128000 - received 200000. Try using a shorter prompt."}"#;
        assert_eq!(error(400, long).2.as_deref(), Some("context_length_exceeded"));
        let limited = r#"{"id":"a3","message":"You are using a Trial key, which is limited to 20 API calls / minute."}"#;
        assert_eq!(error(429, limited).0, 429);
        assert_eq!(
            error(498, r#"{"message":"blocked"}"#),
            (400, "blocked".into(), Some("content_filter".into()))
        );
        assert_eq!(error(500, r#"{"message":"key co-secret failed"}"#).1, "key [redacted] failed");
        assert_eq!(error(503, "").1, "upstream returned status 503 with an empty body");
    }

    #[test]
    fn rerank_bodies_and_answers() {
        let body = json!({"model": "rerank-v3.5", "query": "capital?", "documents": ["Paris", {"text": "Berlin"}], "top_n": 1, "max_tokens_per_doc": 512, "return_documents": true});
        let request = retrieval::rerank_request(&body, "cohere", &["max_tokens_per_doc"]).unwrap();
        assert_eq!(
            rerank_body(&request, &body),
            json!({"model": "rerank-v3.5", "query": "capital?", "documents": ["Paris", "Berlin"], "top_n": 1, "max_tokens_per_doc": 512})
        );
        let answer = json!({"id": "07734bd2", "results": [{"index": 1, "relevance_score": 0.999}], "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}});
        assert_eq!(
            rerank_answer(&answer, &request).unwrap(),
            json!({"id": "07734bd2", "results": [{"index": 1, "relevance_score": 0.999, "document": {"text": "Berlin"}}],
                   "meta": {"api_version": {"version": "2"}, "billed_units": {"search_units": 1}}})
        );
        assert!(rerank_answer(&json!({"id": "x"}), &request).is_err());
    }

    /// A text stream with a multi-byte character, so splits fall inside UTF-8 sequences too.
    const TEXT_STREAM: &str = concat!(
        "event: message-start\ndata: {\"id\":\"29f1\",\"type\":\"message-start\",\"delta\":{\"message\":{\"role\":\"assistant\"}}}\n\n",
        "event: content-start\ndata: {\"type\":\"content-start\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"type\":\"text\",\"text\":\"\"}}}}\n\n",
        "event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"caf\u{e9} \"}}}}\n\n",
        "event: content-delta\ndata: {\"type\":\"content-delta\",\"index\":0,\"delta\":{\"message\":{\"content\":{\"text\":\"\u{2615} au lait\"}}}}\n\n",
        "event: content-end\ndata: {\"type\":\"content-end\",\"index\":0}\n\n",
        "event: message-end\ndata: {\"type\":\"message-end\",\"delta\":{\"finish_reason\":\"COMPLETE\",\"usage\":{\"billed_units\":{\"input_tokens\":5,\"output_tokens\":4},\"tokens\":{\"input_tokens\":71,\"output_tokens\":4}}}}\n\n",
    );

    async fn translate_split(pieces: Vec<Bytes>) -> Result<String, ProviderError> {
        let upstream = Chunks(VecDeque::from(pieces)).boxed();
        let translated = TranslatedStream::new(upstream, chat::Translator::new("command-a".into(), 7, true));
        let bytes = translated.collect().await?.to_bytes();
        Ok(String::from_utf8(bytes.to_vec()).expect("the translation is UTF-8"))
    }

    #[tokio::test]
    async fn a_stream_split_at_any_byte_translates_the_same() {
        let whole = translate_split(vec![Bytes::from_static(TEXT_STREAM.as_bytes())]).await.unwrap();
        assert!(whole.contains("\"content\":\"café \""), "{whole}");
        assert!(whole.contains("\"content\":\"☕ au lait\""), "{whole}");
        assert!(whole.contains("\"finish_reason\":\"stop\""));
        assert!(whole.contains("\"total_tokens\":75"));
        assert!(whole.ends_with("data: [DONE]\n\n"));
        let bytes = TEXT_STREAM.as_bytes();
        // Two pieces cut at every byte, then pieces of every small size.
        for cut in 1..bytes.len() {
            let pieces = vec![Bytes::copy_from_slice(&bytes[..cut]), Bytes::copy_from_slice(&bytes[cut..])];
            assert_eq!(translate_split(pieces).await.unwrap(), whole, "cut at {cut}");
        }
        for size in 1..=9 {
            let pieces = bytes.chunks(size).map(Bytes::copy_from_slice).collect();
            assert_eq!(translate_split(pieces).await.unwrap(), whole, "pieces of {size}");
        }
    }

    #[tokio::test]
    async fn a_stream_cut_before_message_end_is_an_error() {
        let cut = TEXT_STREAM.find("event: message-end").unwrap();
        let error =
            translate_split(vec![Bytes::copy_from_slice(&TEXT_STREAM.as_bytes()[..cut])]).await.unwrap_err();
        assert_eq!(error.to_string(), "litellm.APIError: cohere stream ended before its last event");
    }
}
