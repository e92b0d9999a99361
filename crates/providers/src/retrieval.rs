//! Shapes the embedding and rerank adapters (Cohere, Voyage AI, Jina AI) share: the
//! request's embedding inputs, the OpenAI embedding list they answer with, and LiteLLM's
//! rerank request and answer.
//!
//! LiteLLM's rerank follows Cohere's: `{model, query, documents, top_n, return_documents}` in,
//! `{id, results: [{index, relevance_score, document?: {text}}], meta}` out, where `meta`
//! holds what was billed (`billed_units.search_units` for Cohere, `billed_units.total_tokens`
//! and `tokens.input_tokens` for per-token rerankers), which the gateway prices.

use bytes::Bytes;
use serde_json::{Value, json};
use tollgate_domain::{Deployment, Endpoint};

use crate::{HttpClient, ProviderError, UpstreamBody, UpstreamRequest, UpstreamResponse, bearer, transport};

/// What sets one retrieval vendor (Voyage, Jina) apart: its names and how it shapes bodies.
/// [`call`] does the rest, the same for both.
pub(crate) struct Vendor {
    /// The provider prefix, in messages (`voyage`).
    pub name: &'static str,
    /// The vendor as people name it (`Voyage AI`).
    pub label: &'static str,
    pub embed_body: fn(&Value) -> Result<Value, ProviderError>,
    /// The vendor's answer and the OpenAI request, to an OpenAI embedding list.
    pub embed_answer: fn(&Value, &Value) -> Result<Value, ProviderError>,
    /// The checked rerank request and the request as sent, to the vendor's body.
    pub rerank_body: fn(&RerankRequest, &Value) -> Value,
    pub rerank_answer: fn(&Value, &RerankRequest) -> Result<Value, ProviderError>,
}

/// Embeddings or rerank through `vendor`'s `/v1/embeddings` or `/v1/rerank`.
pub(crate) async fn call(
    vendor: &Vendor,
    client: &HttpClient,
    request: UpstreamRequest<'_>,
) -> Result<UpstreamResponse, ProviderError> {
    let deployment = request.deployment;
    let body: Value = serde_json::from_slice(&request.body)
        .map_err(|e| ProviderError::BadRequest(format!("invalid JSON body: {e}")))?;
    let (op, upstream_body, rerank) = match request.endpoint {
        Endpoint::Embeddings => ("embeddings", (vendor.embed_body)(&body)?, None),
        Endpoint::Rerank => {
            let rerank = rerank_request(&body, vendor.name, &[])?;
            ("rerank", (vendor.rerank_body)(&rerank, &body), Some(rerank))
        }
        other => {
            return Err(ProviderError::BadRequest(format!(
                "model '{}' is a {} model, which serves embeddings and rerank, not {}",
                deployment.model_name,
                vendor.label,
                other.path()
            )));
        }
    };
    let upstream = bearer::json_post(deployment, v1_url(deployment, op), &upstream_body)?;
    let response = transport::exchange(client, deployment, upstream, false, bearer::detail_error).await?;
    let (answer, headers) = bearer::json_answer(response, vendor.name)?;
    let out = match rerank {
        None => (vendor.embed_answer)(&answer, &body)?,
        Some(rerank) => (vendor.rerank_answer)(&answer, &rerank)?,
    };
    Ok(UpstreamResponse { headers, body: UpstreamBody::Complete(Bytes::from(out.to_string())) })
}

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

/// `{api_base}/v1/{op}` for Voyage and Jina, whose bases end in `/v1`: a base holding a full
/// URL (`…/v1/embeddings`, as LiteLLM configs may) is cut back first, and a bare host gets
/// `/v1`.
pub(crate) fn v1_url(deployment: &Deployment, op: &str) -> String {
    let mut base = deployment.api_base.as_deref().unwrap_or_default().trim_end_matches('/');
    for suffix in ["/embeddings", "/rerank"] {
        base = base.strip_suffix(suffix).unwrap_or(base);
    }
    if base.ends_with("/v1") { format!("{base}/{op}") } else { format!("{base}/v1/{op}") }
}

/// The embeddings request's `input` as strings (a string, or a non-empty array of strings);
/// token arrays are refused, as these APIs take text.
pub(crate) fn text_inputs(openai: &Value, provider: &str) -> Result<Vec<String>, ProviderError> {
    match openai.get("input") {
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad(format!("{provider} embeddings take `input` as strings, not tokens")))
            })
            .collect(),
        _ => Err(bad("`input` must be a string or a non-empty array of strings")),
    }
}

/// `encoding_format`: whether the vectors are wanted as base64 (`false` for floats).
pub(crate) fn wants_base64(openai: &Value) -> Result<bool, ProviderError> {
    match openai.get("encoding_format") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::String(format)) if format == "float" => Ok(false),
        Some(Value::String(format)) if format == "base64" => Ok(true),
        Some(_) => Err(bad("`encoding_format` must be 'float' or 'base64'")),
    }
}

/// Copies the fields of `openai` named in `names` that are set (not null) into `body`: a
/// provider's own parameters, which LiteLLM passes through.
pub(crate) fn pass_through(openai: &Value, body: &mut Value, names: &[&str]) {
    for name in names {
        if let Some(value) = openai.get(*name).filter(|v| !v.is_null()) {
            body[*name] = value.clone();
        }
    }
}

/// The OpenAI embedding list for `vectors` (arrays of floats, or base64 strings).
pub(crate) fn embedding_list(vectors: Vec<Value>, model: &str, prompt_tokens: u64) -> Value {
    let data: Vec<Value> = vectors
        .into_iter()
        .enumerate()
        .map(|(index, embedding)| json!({"object": "embedding", "index": index, "embedding": embedding}))
        .collect();
    json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    })
}

/// A whole number an API sent, possibly written as a float (`"input_tokens": 12.0`).
pub(crate) fn count(value: Option<&Value>) -> u64 {
    match value {
        Some(Value::Number(n)) => {
            n.as_u64().or_else(|| n.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64)).unwrap_or(0)
        }
        _ => 0,
    }
}

/// LiteLLM's rerank request, checked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct RerankRequest {
    pub model: String,
    pub query: String,
    /// The documents as text (a document object contributes its `text`).
    pub documents: Vec<String>,
    pub top_n: Option<u64>,
    /// Whether each result carries its document; LiteLLM's default is yes.
    pub return_documents: bool,
}

/// Reads LiteLLM's rerank body. Parameters of Cohere's v1 rerank that `provider` lacks
/// (`rank_fields`, `max_chunks_per_doc`, and `max_tokens_per_doc` unless listed in
/// `accepted`) are refused when set, rather than silently dropped.
pub(crate) fn rerank_request(
    body: &Value,
    provider: &str,
    accepted: &[&str],
) -> Result<RerankRequest, ProviderError> {
    let model = body.get("model").and_then(Value::as_str).ok_or_else(|| bad("missing `model`"))?.to_owned();
    let query = match body.get("query") {
        Some(Value::String(query)) => query.clone(),
        _ => return Err(bad("`query` must be a string")),
    };
    let documents = match body.get("documents") {
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Object(fields) => match fields.get("text") {
                    Some(Value::String(text)) => Ok(text.clone()),
                    _ => Err(bad(format!(
                        "documents[{i}]: {provider} ranks text; give a string or {{\"text\": \"...\"}}"
                    ))),
                },
                _ => Err(bad(format!("documents[{i}] must be a string or {{\"text\": \"...\"}}"))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        _ => return Err(bad("`documents` must be a non-empty array")),
    };
    for name in ["rank_fields", "max_chunks_per_doc", "max_tokens_per_doc"] {
        if !accepted.contains(&name) && body.get(name).is_some_and(|v| !v.is_null()) {
            return Err(bad(format!("`{name}` is not supported by {provider} rerank models")));
        }
    }
    let top_n = match body.get("top_n") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(n) if n >= 1 => Some(n),
            _ => return Err(bad("`top_n` must be a positive integer")),
        },
    };
    let return_documents = match body.get("return_documents") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(wanted)) => *wanted,
        Some(_) => return Err(bad("`return_documents` must be true or false")),
    };
    Ok(RerankRequest { model, query, documents, top_n, return_documents })
}

/// One ranked document as an upstream reported it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ranked {
    pub index: u64,
    pub relevance_score: f64,
    /// The document's text when the upstream returned it.
    pub document: Option<String>,
}

/// Reads one result (`{index, relevance_score, document?}`, the document a string or
/// `{"text": ...}`) of Cohere's, Voyage's or Jina's answer.
pub(crate) fn ranked(result: &Value, documents: usize, provider: &str) -> Result<Ranked, ProviderError> {
    let index =
        result.get("index").and_then(Value::as_u64).filter(|i| (*i as usize) < documents).ok_or_else(
            || ProviderError::Protocol(format!("{provider} ranked a document that was not sent")),
        )?;
    let relevance_score = result
        .get("relevance_score")
        .and_then(Value::as_f64)
        .ok_or_else(|| ProviderError::Protocol(format!("{provider} answered a result without a score")))?;
    let document = match result.get("document") {
        Some(Value::String(text)) => Some(text.clone()),
        Some(object) => object.get("text").and_then(Value::as_str).map(str::to_owned),
        None => None,
    };
    Ok(Ranked { index, relevance_score, document })
}

/// LiteLLM's rerank answer. With `return_documents`, each result carries its document as
/// `{"text": ...}`: the upstream's copy, else the request's own (Cohere's v2 API returns none).
pub(crate) fn rerank_answer(id: &str, ranked: Vec<Ranked>, request: &RerankRequest, meta: Value) -> Value {
    let results: Vec<Value> = ranked
        .into_iter()
        .map(|r| {
            let mut result = json!({"index": r.index, "relevance_score": r.relevance_score});
            if request.return_documents {
                let text = r.document.unwrap_or_else(|| request.documents[r.index as usize].clone());
                result["document"] = json!({"text": text});
            }
            result
        })
        .collect();
    json!({"id": id, "results": results, "meta": meta})
}

/// `meta` for a reranker billed by tokens (Voyage, Jina), as LiteLLM reports it.
pub(crate) fn token_meta(total_tokens: u64) -> Value {
    json!({
        "billed_units": {"total_tokens": total_tokens},
        "tokens": {"input_tokens": total_tokens, "output_tokens": 0},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(base: &str) -> Deployment {
        tollgate_domain::GatewayConfig::from_yaml(
            &format!("model_list:\n  - model_name: v\n    litellm_params: {{model: voyage/voyage-3.5, api_base: \"{base}\"}}\n"),
            &std::collections::HashMap::new(),
        )
        .unwrap()
        .deployments
        .remove(0)
    }

    #[test]
    fn urls_end_in_v1_and_the_operation() {
        let url = |base: &str, op: &str| v1_url(&deployment(base), op);
        assert_eq!(url("https://api.voyageai.com/v1", "rerank"), "https://api.voyageai.com/v1/rerank");
        assert_eq!(url("https://api.jina.ai/v1/embeddings", "rerank"), "https://api.jina.ai/v1/rerank");
        assert_eq!(
            url("http://127.0.0.1:9/voyage/", "embeddings"),
            "http://127.0.0.1:9/voyage/v1/embeddings"
        );
    }

    #[test]
    fn inputs_must_be_text() {
        assert_eq!(text_inputs(&json!({"input": "a"}), "x").unwrap(), ["a"]);
        assert_eq!(text_inputs(&json!({"input": ["a", "b"]}), "x").unwrap(), ["a", "b"]);
        assert!(text_inputs(&json!({"input": [1, 2]}), "voyage").unwrap_err().to_string().contains("voyage"));
        assert!(text_inputs(&json!({"input": []}), "x").is_err());
        assert!(wants_base64(&json!({"encoding_format": "base64"})).unwrap());
        assert!(!wants_base64(&json!({"encoding_format": "float"})).unwrap());
        assert!(wants_base64(&json!({"encoding_format": "int8"})).is_err());
        assert_eq!(count(Some(&json!(12.0))), 12);
        assert_eq!(count(Some(&json!(-1))), 0);
    }

    #[test]
    fn rerank_requests_are_checked() {
        let body = json!({"model": "m", "query": "q", "documents": ["a", {"text": "b"}], "top_n": 1});
        let request = rerank_request(&body, "cohere", &[]).unwrap();
        assert_eq!(request.documents, ["a", "b"]);
        assert_eq!((request.top_n, request.return_documents), (Some(1), true));
        let error = |body: Value| rerank_request(&body, "jina_ai", &[]).unwrap_err().to_string();
        assert!(error(json!({"model": "m", "query": "q", "documents": []})).contains("non-empty"));
        assert!(error(json!({"model": "m", "documents": ["a"]})).contains("`query`"));
        assert!(
            error(json!({"model": "m", "query": "q", "documents": [{"title": "t"}]}))
                .contains("documents[0]")
        );
        assert!(error(json!({"model": "m", "query": "q", "documents": ["a"], "top_n": 0})).contains("top_n"));
        assert_eq!(
            error(json!({"model": "m", "query": "q", "documents": ["a"], "rank_fields": ["x"]})),
            "`rank_fields` is not supported by jina_ai rerank models"
        );
        let cohere = json!({"model": "m", "query": "q", "documents": ["a"], "max_tokens_per_doc": 4, "return_documents": false});
        assert!(!rerank_request(&cohere, "cohere", &["max_tokens_per_doc"]).unwrap().return_documents);
    }

    #[test]
    fn answers_carry_documents_when_asked() {
        let request =
            rerank_request(&json!({"model": "m", "query": "q", "documents": ["zero", "one"]}), "x", &[])
                .unwrap();
        let upstream = [
            json!({"index": 1, "relevance_score": 0.9}),
            json!({"index": 0, "relevance_score": 0.1, "document": {"text": "ZERO"}}),
        ];
        let results: Vec<Ranked> = upstream.iter().map(|r| ranked(r, 2, "x").unwrap()).collect();
        let answer = rerank_answer("r-1", results.clone(), &request, token_meta(7));
        assert_eq!(
            answer,
            json!({"id": "r-1", "results": [
                {"index": 1, "relevance_score": 0.9, "document": {"text": "one"}},
                {"index": 0, "relevance_score": 0.1, "document": {"text": "ZERO"}}
            ], "meta": {"billed_units": {"total_tokens": 7}, "tokens": {"input_tokens": 7, "output_tokens": 0}}})
        );
        let bare = RerankRequest { return_documents: false, ..request };
        assert!(rerank_answer("r", results, &bare, json!({}))["results"][0].get("document").is_none());
        assert!(
            ranked(&json!({"index": 5, "relevance_score": 0.1}), 2, "x").is_err(),
            "an index past the documents"
        );
    }
}
