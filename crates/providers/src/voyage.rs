//! Voyage AI (`voyage/…` models): embeddings through `POST {api_base}/embeddings` and
//! LiteLLM's rerank through `POST {api_base}/rerank`, with `Authorization: Bearer <api_key>`;
//! `api_base` is `https://api.voyageai.com/v1` unless set.
//!
//! Embeddings: `dimensions` is Voyage's `output_dimension`, `encoding_format: base64` its
//! `encoding_format`; `input_type` (`query` / `document`), `truncation` and `output_dtype`
//! pass through. Voyage's `usage.total_tokens` becomes `prompt_tokens` and `total_tokens`.
//! Rerank: `top_n` is Voyage's `top_k`; the answer's `data` becomes `results` and its
//! `usage.total_tokens` the billed tokens in `meta`, as LiteLLM reports them. Errors are
//! FastAPI's `{"detail": ...}`, status kept.

use serde_json::{Value, json};

use crate::retrieval::{self, count};
use crate::{HttpClient, ProviderError, UpstreamRequest, UpstreamResponse};

/// Voyage's own embedding parameters, passed through when set.
const NATIVE_EMBED_PARAMS: &[&str] = &["input_type", "truncation", "output_dtype"];

pub struct VoyageProvider {
    client: HttpClient,
}

impl VoyageProvider {
    pub fn new(client: HttpClient) -> Self {
        Self { client }
    }
}

/// Voyage AI's shapes; the call itself is [`retrieval::call`].
const VENDOR: retrieval::Vendor = retrieval::Vendor {
    name: "voyage",
    label: "Voyage AI",
    embed_body,
    embed_answer,
    rerank_body,
    rerank_answer,
};

#[async_trait::async_trait]
impl crate::Provider for VoyageProvider {
    async fn call(&self, request: UpstreamRequest<'_>) -> Result<UpstreamResponse, ProviderError> {
        retrieval::call(&VENDOR, &self.client, request).await
    }
}

fn embed_body(openai: &Value) -> Result<Value, ProviderError> {
    let model = openai
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| ProviderError::BadRequest("missing `model`".into()))?;
    let inputs = retrieval::text_inputs(openai, "voyage")?;
    let mut body = json!({"model": model, "input": inputs});
    if let Some(dimensions) = openai.get("dimensions").filter(|d| !d.is_null()) {
        body["output_dimension"] = dimensions.clone();
    }
    if retrieval::wants_base64(openai)? {
        body["encoding_format"] = json!("base64");
    }
    retrieval::pass_through(openai, &mut body, NATIVE_EMBED_PARAMS);
    Ok(body)
}

fn embed_answer(answer: &Value, openai: &Value) -> Result<Value, ProviderError> {
    let data = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol("voyage answered without `data`".into()))?;
    let vectors = data
        .iter()
        .map(|item| {
            item.get("embedding")
                .cloned()
                .ok_or_else(|| ProviderError::Protocol("voyage answered an item without `embedding`".into()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let model =
        answer.get("model").or_else(|| openai.get("model")).and_then(Value::as_str).unwrap_or_default();
    Ok(retrieval::embedding_list(vectors, model, count(answer.pointer("/usage/total_tokens"))))
}

fn rerank_body(request: &retrieval::RerankRequest, body: &Value) -> Value {
    let mut upstream = json!({
        "model": request.model,
        "query": request.query,
        "documents": request.documents,
        "return_documents": request.return_documents,
    });
    if let Some(top_n) = request.top_n {
        upstream["top_k"] = json!(top_n);
    }
    retrieval::pass_through(body, &mut upstream, &["truncation"]);
    upstream
}

fn rerank_answer(answer: &Value, request: &retrieval::RerankRequest) -> Result<Value, ProviderError> {
    let data = answer
        .get("data")
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol("voyage answered a rerank without `data`".into()))?;
    let ranked = data
        .iter()
        .map(|r| retrieval::ranked(r, request.documents.len(), "voyage"))
        .collect::<Result<Vec<_>, _>>()?;
    let meta = retrieval::token_meta(count(answer.pointer("/usage/total_tokens")));
    Ok(retrieval::rerank_answer(&uuid::Uuid::new_v4().to_string(), ranked, request, meta))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embeddings_map_to_voyage_fields_and_back() {
        let openai = json!({"model": "voyage-3.5", "input": ["a", "b"], "dimensions": 512, "encoding_format": "base64", "input_type": "query", "truncation": false, "user": "u"});
        assert_eq!(
            embed_body(&openai).unwrap(),
            json!({"model": "voyage-3.5", "input": ["a", "b"], "output_dimension": 512, "encoding_format": "base64", "input_type": "query", "truncation": false})
        );
        let answer = json!({"object": "list", "data": [{"object": "embedding", "embedding": [0.1], "index": 0}, {"object": "embedding", "embedding": [0.2], "index": 1}], "model": "voyage-3.5", "usage": {"total_tokens": 10}});
        let list = embed_answer(&answer, &openai).unwrap();
        assert_eq!(list["data"][1], json!({"object": "embedding", "index": 1, "embedding": [0.2]}));
        assert_eq!(list["usage"], json!({"prompt_tokens": 10, "total_tokens": 10}));
        assert!(embed_body(&json!({"model": "m", "input": [[1, 2]]})).is_err());
    }

    #[test]
    fn rerank_uses_top_k_and_data() {
        let body = json!({"model": "rerank-2", "query": "q", "documents": ["zero", "one"], "top_n": 1, "truncation": true});
        let request = retrieval::rerank_request(&body, "voyage", &[]).unwrap();
        assert_eq!(
            rerank_body(&request, &body),
            json!({"model": "rerank-2", "query": "q", "documents": ["zero", "one"], "return_documents": true, "top_k": 1, "truncation": true})
        );
        let answer = json!({"object": "list", "data": [{"relevance_score": 0.4375, "index": 1, "document": "one"}], "model": "rerank-2", "usage": {"total_tokens": 26}});
        let out = rerank_answer(&answer, &request).unwrap();
        assert_eq!(
            out["results"],
            json!([{"index": 1, "relevance_score": 0.4375, "document": {"text": "one"}}])
        );
        assert_eq!(out["meta"]["billed_units"]["total_tokens"], 26);
        assert_eq!(out["meta"]["tokens"]["input_tokens"], 26);
        assert!(out["id"].as_str().is_some_and(|id| !id.is_empty()));
    }
}
