//! Jina AI (`jina_ai/…` models): embeddings through `POST {api_base}/embeddings` and
//! LiteLLM's rerank through `POST {api_base}/rerank`, with `Authorization: Bearer <api_key>`;
//! `api_base` is `https://api.jina.ai/v1` unless set.
//!
//! Embeddings: `input` is sent as a list of strings; `dimensions` keeps its name,
//! `encoding_format: base64` is Jina's `embedding_type: base64`; Jina's own `task`,
//! `late_chunking`, `normalized`, `truncate` and `embedding_type` pass through. Usage is
//! Jina's `prompt_tokens` (else `total_tokens`). Rerank: `top_n` and `return_documents`
//! keep their names; the answer's `usage.total_tokens` becomes the billed tokens in `meta`,
//! as LiteLLM reports them. Errors are FastAPI's `{"detail": ...}`, status kept.

use serde_json::{Value, json};

use crate::retrieval::{self, count};
use crate::{HttpClient, ProviderError, UpstreamRequest, UpstreamResponse};

/// Jina's own embedding parameters, passed through when set.
const NATIVE_EMBED_PARAMS: &[&str] = &["task", "late_chunking", "normalized", "truncate", "embedding_type"];

pub struct JinaProvider {
    client: HttpClient,
}

impl JinaProvider {
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }
}

/// Jina AI's shapes; the call itself is [`retrieval::call`].
const VENDOR: retrieval::Vendor = retrieval::Vendor {
    name: "jina_ai",
    label: "Jina AI",
    embed_body,
    embed_answer,
    rerank_body,
    rerank_answer,
};

#[async_trait::async_trait]
impl crate::Provider for JinaProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        retrieval::call(&VENDOR, &self.client, request).await
    }
}

fn embed_body(openai: &Value) -> Result<Value, ProviderError> {
    let model = openai
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::BadRequest("missing `model`".into()))?;
    let inputs = retrieval::text_inputs(openai, "jina_ai")?;
    let mut body = json!({"model": model, "input": inputs});
    if let Some(dimensions) = openai.get("dimensions").filter(|d| !d.is_null()) {
        body["dimensions"] = dimensions.clone();
    }
    if retrieval::wants_base64(openai)? {
        body["embedding_type"] = json!("base64");
    }
    retrieval::pass_through(openai, &mut body, NATIVE_EMBED_PARAMS);
    Ok(body)
}

fn embed_answer(answer: &Value, openai: &Value) -> Result<Value, ProviderError> {
    let data = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol("jina_ai answered without `data`".into()))?;
    let vectors = data
        .iter()
        .map(|item| {
            item.get("embedding")
                .cloned()
                .ok_or_else(|| ProviderError::Protocol("jina_ai answered an item without `embedding`".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let usage = answer.get("usage");
    let tokens = match usage.and_then(|u| u.get("prompt_tokens")) {
        Some(prompt) => count(Some(prompt)),
        None => count(usage.and_then(|u| u.get("total_tokens"))),
    };
    let model =
        answer.get("model").or_else(|| openai.get("model")).and_then(Value::as_str).unwrap_or_default();
    Ok(retrieval::embedding_list(vectors, model, tokens))
}

fn rerank_body(request: &retrieval::RerankRequest, _request_body: &Value) -> Value {
    let mut upstream = json!({
        "model": request.model,
        "query": request.query,
        "documents": request.documents,
        "return_documents": request.return_documents,
    });
    if let Some(top_n) = request.top_n {
        upstream["top_n"] = json!(top_n);
    }
    upstream
}

fn rerank_answer(answer: &Value, request: &retrieval::RerankRequest) -> Result<Value, ProviderError> {
    let results = answer
        .get("results")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol("jina_ai answered a rerank without `results`".into()))?;
    let ranked = results
        .iter()
        .map(|r| retrieval::ranked(r, request.documents.len(), "jina_ai"))
        .collect::<Result<Vec<_>, _>>()?;
    let meta = retrieval::token_meta(count(answer.pointer("/usage/total_tokens")));
    Ok(retrieval::rerank_answer(&uuid::Uuid::new_v4().to_string(), ranked, request, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_map_to_jina_fields_and_back() {
        let openai = json!({"model": "jina-embeddings-v3", "input": "a", "dimensions": 256, "encoding_format": "base64", "task": "retrieval.query", "late_chunking": false});
        assert_eq!(
            embed_body(&openai).unwrap(),
            json!({"model": "jina-embeddings-v3", "input": ["a"], "dimensions": 256, "embedding_type": "base64", "task": "retrieval.query", "late_chunking": false})
        );
        let answer = json!({"model": "jina-embeddings-v3", "object": "list", "usage": {"total_tokens": 9, "prompt_tokens": 8}, "data": [{"object": "embedding", "index": 0, "embedding": "AAAA"}]});
        let list = embed_answer(&answer, &openai).unwrap();
        assert_eq!(list["data"][0]["embedding"], "AAAA");
        assert_eq!(list["usage"], json!({"prompt_tokens": 8, "total_tokens": 8}));
        let total_only = json!({"data": [{"embedding": [0.5]}], "usage": {"total_tokens": 3}});
        assert_eq!(embed_answer(&total_only, &openai).unwrap()["usage"]["prompt_tokens"], 3);
    }

    #[test]
    fn rerank_keeps_top_n_and_reads_documents() {
        let body = json!({"model": "jina-reranker-v2-base-multilingual", "query": "q", "documents": ["zero", "one"], "top_n": 1, "return_documents": false});
        let request = retrieval::rerank_request(&body, "jina_ai", &[]).unwrap();
        assert_eq!(
            rerank_body(&request, &Value::Null),
            json!({"model": "jina-reranker-v2-base-multilingual", "query": "q", "documents": ["zero", "one"], "return_documents": false, "top_n": 1})
        );
        let with_docs = retrieval::rerank_request(
            &json!({"model": "m", "query": "q", "documents": ["zero", "one"]}),
            "jina_ai",
            &[],
        )
        .unwrap();
        let answer = json!({"model": "m", "usage": {"total_tokens": 50}, "results": [{"index": 0, "document": {"text": "zero"}, "relevance_score": 0.23}]});
        let out = rerank_answer(&answer, &with_docs).unwrap();
        assert_eq!(
            out["results"],
            json!([{"index": 0, "relevance_score": 0.23, "document": {"text": "zero"}}])
        );
        assert_eq!(out["meta"]["billed_units"], json!({"total_tokens": 50}));
    }
}
