//! Voyage AI's and Jina AI's embedding and rerank APIs, served under a prefix each so their
//! paths do not collide with OpenAI's `/v1/embeddings`: `POST /voyage/v1/embeddings`,
//! `/voyage/v1/rerank`, `/jina/v1/embeddings`, `/jina/v1/rerank` (a test's `api_base` is
//! `http://<mock>/voyage/v1`; below the prefix each path is the provider's own).
//!
//! Checked against Voyage's OpenAPI specification (`/embeddings`: `input`, `input_type`,
//! `truncation`, `output_dimension`, `output_dtype`, `encoding_format`; `/rerank`: `top_k`,
//! `return_documents`, `truncation`; answers `{object, data, model, usage: {total_tokens}}`)
//! and Jina's API reference (`/v1/embeddings`: `input`, `task`, `dimensions`,
//! `embedding_type`, `late_chunking`, `normalized`, `truncate`; `/v1/rerank`: `top_n`,
//! `return_documents`; answers with `usage` and `results[].document.text`). Both APIs answer
//! errors as FastAPI does, `{"detail": ...}`. Unknown request fields are refused, so a
//! gateway that leaks OpenAI-only fields is caught.

use bytes::Bytes;
use http::{HeaderMap, Response, StatusCode};
use serde_json::{Map, Value, json};

use crate::body::MockBody;
use crate::cohere::rank;
use crate::handler::{self, Api};
use crate::wire::{EMBEDDING_DIMENSIONS, EMBEDDING_TOKENS_PER_INPUT, embedding_vector};

/// Most inputs one Voyage embeddings call takes.
pub const VOYAGE_MAX_INPUTS: usize = 1000;
const VOYAGE_DIMENSIONS: &[u64] = &[256, 512, 1024, 2048];
const JINA_TASKS: &[&str] = &[
    "retrieval.query",
    "retrieval.passage",
    "text-matching",
    "classification",
    "separation",
    "code.query",
    "code.passage",
];

/// Whose API a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Vendor {
    Voyage,
    Jina,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Embeddings,
    Rerank,
}

/// `/voyage/v1/{embeddings,rerank}` and `/jina/v1/{embeddings,rerank}`.
pub(crate) fn route(path: &str) -> Option<(Vendor, Op)> {
    let (vendor, rest) = if let Some(rest) = path.strip_prefix("/voyage/v1/") {
        (Vendor::Voyage, rest)
    } else {
        (Vendor::Jina, path.strip_prefix("/jina/v1/")?)
    };
    let op = match rest {
        "embeddings" => Op::Embeddings,
        "rerank" => Op::Rerank,
        _ => return None,
    };
    Some((vendor, op))
}

/// Whether `path` is under either prefix, so an unknown one gets FastAPI's 404.
pub(crate) fn is_retrieval_path(path: &str) -> bool {
    path.starts_with("/voyage/") || path.starts_with("/jina/")
}

/// FastAPI's error body, `{"detail": ...}`.
pub(crate) fn detail_body(detail: &str) -> Bytes {
    Bytes::from(json!({"detail": detail}).to_string())
}

fn error(request_id: u64, status: StatusCode, detail: &str) -> Response<MockBody> {
    handler::json(Api::Retrieval, request_id, status, detail_body(detail))
}

/// Answers once the behaviour has been applied: any non-empty bearer key is accepted.
pub(crate) fn call(
    vendor: Vendor,
    op: Op,
    headers: &HeaderMap,
    body: &[u8],
    request_id: u64,
) -> Response<MockBody> {
    if !handler::has_bearer(headers) {
        let detail = match vendor {
            Vendor::Voyage => "No API key provided. You can set your API key with the Authorization header.",
            Vendor::Jina => "Unauthorized: an API key is required in the Authorization header.",
        };
        return error(request_id, StatusCode::UNAUTHORIZED, detail);
    }
    let request: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                request_id,
                StatusCode::BAD_REQUEST,
                &format!("Request body is not valid JSON: {e}"),
            );
        }
    };
    let answer = match (vendor, op) {
        (Vendor::Voyage, Op::Embeddings) => voyage_embeddings(&request),
        (Vendor::Voyage, Op::Rerank) => voyage_rerank(&request),
        (Vendor::Jina, Op::Embeddings) => jina_embeddings(&request),
        (Vendor::Jina, Op::Rerank) => jina_rerank(&request),
    };
    match answer {
        Ok(answer) => {
            handler::json(Api::Retrieval, request_id, StatusCode::OK, Bytes::from(answer.to_string()))
        }
        Err(detail) => error(request_id, StatusCode::BAD_REQUEST, &detail),
    }
}

fn check_fields(request: &Map<String, Value>, allowed: &[&str]) -> Result<String, String> {
    if let Some(unknown) = request.keys().find(|key| !allowed.contains(&key.as_str())) {
        return Err(format!("Unrecognized argument: {unknown}"));
    }
    match request.get("model").and_then(Value::as_str) {
        Some(model) if !model.is_empty() => Ok(model.to_owned()),
        _ => Err("Field 'model' is required.".into()),
    }
}

/// `input` as texts: a string or a non-empty list of strings (Jina also takes `{"text"}`).
fn texts(request: &Map<String, Value>, objects: bool) -> Result<Vec<String>, String> {
    match request.get("input") {
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Object(fields) if objects => fields
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| "input items need text".into()),
                _ => Err("Field 'input' must be a string or a list of strings.".to_owned()),
            })
            .collect(),
        _ => Err("Field 'input' must be a string or a non-empty list of strings.".into()),
    }
}

fn base64_vector(vector: &[f32]) -> Value {
    use base64::Engine as _;
    let bytes: Vec<u8> = vector.iter().flat_map(|v| v.to_le_bytes()).collect();
    json!(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn embedding_items(count: usize, dimensions: usize, base64: bool) -> Vec<Value> {
    (0..count)
        .map(|index| {
            let vector = embedding_vector(index, dimensions);
            let embedding = if base64 { base64_vector(&vector) } else { json!(vector) };
            json!({"object": "embedding", "embedding": embedding, "index": index})
        })
        .collect()
}

fn documents(request: &Map<String, Value>, objects: bool) -> Result<Vec<String>, String> {
    match request.get("documents").and_then(Value::as_array) {
        Some(items) if !items.is_empty() && items.len() <= 1000 => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(text.clone()),
                Value::Object(fields) if objects => fields
                    .get("text")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| "documents need text".into()),
                _ => Err("Field 'documents' must be a list of strings.".to_owned()),
            })
            .collect(),
        _ => Err("Field 'documents' must hold between 1 and 1000 documents.".into()),
    }
}

fn positive(request: &Map<String, Value>, name: &str) -> Result<Option<u64>, String> {
    match request.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value
            .as_u64()
            .filter(|n| *n >= 1)
            .map(Some)
            .ok_or_else(|| format!("Field '{name}' must be a positive integer.")),
    }
}

/// Tokens of a rerank: the query once per document, plus each document.
fn rerank_tokens(documents: usize) -> u64 {
    2 * EMBEDDING_TOKENS_PER_INPUT * documents as u64
}

fn voyage_embeddings(request: &Map<String, Value>) -> Result<Value, String> {
    let model = check_fields(
        request,
        &[
            "input",
            "model",
            "input_type",
            "truncation",
            "output_dimension",
            "output_dtype",
            "encoding_format",
        ],
    )?;
    let inputs = texts(request, false)?;
    if inputs.len() > VOYAGE_MAX_INPUTS {
        return Err(format!("The max allowed number of inputs is {VOYAGE_MAX_INPUTS}."));
    }
    match request.get("input_type") {
        None | Some(Value::Null) => {}
        Some(Value::String(kind)) if kind == "query" || kind == "document" => {}
        Some(_) => return Err("Field 'input_type' must be one of: null, 'query', 'document'.".into()),
    }
    let dimensions = match request.get("output_dimension") {
        None | Some(Value::Null) => EMBEDDING_DIMENSIONS,
        Some(d) => {
            d.as_u64()
                .filter(|d| VOYAGE_DIMENSIONS.contains(d))
                .ok_or("Field 'output_dimension' must be one of 256, 512, 1024, 2048.")? as usize
        }
    };
    if request.get("output_dtype").is_some_and(|t| !t.is_null() && t != "float") {
        return Err("The mock serves output_dtype 'float' only.".into());
    }
    let base64 = match request.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(format)) if format == "base64" => true,
        Some(_) => return Err("Field 'encoding_format' must be null or 'base64'.".into()),
    };
    Ok(json!({
        "object": "list",
        "data": embedding_items(inputs.len(), dimensions, base64),
        "model": model,
        "usage": {"total_tokens": EMBEDDING_TOKENS_PER_INPUT * inputs.len() as u64},
    }))
}

fn voyage_rerank(request: &Map<String, Value>) -> Result<Value, String> {
    let model =
        check_fields(request, &["query", "documents", "model", "top_k", "return_documents", "truncation"])?;
    let query = request.get("query").and_then(Value::as_str).ok_or("Field 'query' is required.")?;
    let documents = documents(request, false)?;
    let top = positive(request, "top_k")?;
    let with_documents = request.get("return_documents").and_then(Value::as_bool).unwrap_or(false);
    let data: Vec<Value> = rank(query, &documents, top)
        .into_iter()
        .map(|(index, score)| {
            let mut item = json!({"relevance_score": score, "index": index});
            if with_documents {
                item["document"] = json!(documents[index]);
            }
            item
        })
        .collect();
    Ok(
        json!({"object": "list", "data": data, "model": model, "usage": {"total_tokens": rerank_tokens(documents.len())}}),
    )
}

fn jina_embeddings(request: &Map<String, Value>) -> Result<Value, String> {
    let model = check_fields(
        request,
        &[
            "model",
            "input",
            "task",
            "dimensions",
            "late_chunking",
            "embedding_type",
            "normalized",
            "truncate",
        ],
    )?;
    let inputs = texts(request, true)?;
    if let Some(task) = request.get("task").filter(|t| !t.is_null())
        && !task.as_str().is_some_and(|t| JINA_TASKS.contains(&t))
    {
        return Err(format!("Field 'task' must be one of {}.", JINA_TASKS.join(", ")));
    }
    let dimensions = positive(request, "dimensions")?.map_or(EMBEDDING_DIMENSIONS, |d| d as usize).min(4096);
    let base64 = match request.get("embedding_type") {
        None | Some(Value::Null) => false,
        Some(Value::String(kind)) if kind == "float" => false,
        Some(Value::String(kind)) if kind == "base64" => true,
        Some(_) => return Err("The mock serves embedding_type 'float' and 'base64' only.".into()),
    };
    let tokens = EMBEDDING_TOKENS_PER_INPUT * inputs.len() as u64;
    Ok(json!({
        "model": model,
        "object": "list",
        "usage": {"total_tokens": tokens, "prompt_tokens": tokens},
        "data": embedding_items(inputs.len(), dimensions, base64),
    }))
}

fn jina_rerank(request: &Map<String, Value>) -> Result<Value, String> {
    let model = check_fields(request, &["model", "query", "documents", "top_n", "return_documents"])?;
    let query = request.get("query").and_then(Value::as_str).ok_or("Field 'query' is required.")?;
    let documents = documents(request, true)?;
    let top = positive(request, "top_n")?;
    let with_documents = request.get("return_documents").and_then(Value::as_bool).unwrap_or(true);
    let results: Vec<Value> = rank(query, &documents, top)
        .into_iter()
        .map(|(index, score)| {
            let mut item = json!({"index": index, "relevance_score": score});
            if with_documents {
                item["document"] = json!({"text": documents[index]});
            }
            item
        })
        .collect();
    Ok(json!({"model": model, "usage": {"total_tokens": rerank_tokens(documents.len())}, "results": results}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn routes_carry_the_vendor() {
        assert_eq!(route("/voyage/v1/embeddings"), Some((Vendor::Voyage, Op::Embeddings)));
        assert_eq!(route("/jina/v1/rerank"), Some((Vendor::Jina, Op::Rerank)));
        assert_eq!(route("/v1/embeddings"), None);
        assert_eq!(route("/jina/v1/other"), None);
    }

    #[test]
    fn voyage_answers_and_refusals() {
        let out = voyage_embeddings(&request(json!({"model": "voyage-3.5", "input": ["a", "b"], "input_type": "query", "output_dimension": 256}))).unwrap();
        assert_eq!(out["data"][1]["embedding"].as_array().unwrap().len(), 256);
        assert_eq!(out["usage"], json!({"total_tokens": 2 * EMBEDDING_TOKENS_PER_INPUT}));
        assert!(
            voyage_embeddings(&request(json!({"model": "m", "input": "a", "dimensions": 8})))
                .unwrap_err()
                .contains("dimensions")
        );
        assert!(
            voyage_embeddings(&request(json!({"model": "m", "input": "a", "encoding_format": "float"})))
                .is_err()
        );
        let ranked = voyage_rerank(&request(json!({"model": "rerank-2", "query": "capital of France", "documents": ["Berlin", "Paris is the capital of France"], "top_k": 1, "return_documents": true}))).unwrap();
        assert_eq!(
            ranked["data"],
            json!([{"relevance_score": ranked["data"][0]["relevance_score"], "index": 1, "document": "Paris is the capital of France"}])
        );
        assert!(
            voyage_rerank(&request(json!({"model": "m", "query": "q", "documents": ["a"], "top_n": 1})))
                .unwrap_err()
                .contains("top_n")
        );
    }

    #[test]
    fn jina_answers_and_refusals() {
        let out = jina_embeddings(&request(json!({"model": "jina-embeddings-v3", "input": ["a"], "task": "retrieval.query", "embedding_type": "base64"}))).unwrap();
        assert!(out["data"][0]["embedding"].is_string());
        assert_eq!(out["usage"]["prompt_tokens"], EMBEDDING_TOKENS_PER_INPUT);
        assert!(jina_embeddings(&request(json!({"model": "m", "input": ["a"], "task": "search"}))).is_err());
        let ranked =
            jina_rerank(&request(json!({"model": "m", "query": "q", "documents": ["q", "x"]}))).unwrap();
        assert_eq!(ranked["results"][0]["document"], json!({"text": "q"}));
        assert_eq!(ranked["usage"]["total_tokens"], rerank_tokens(2));
        let bare = jina_rerank(&request(
            json!({"model": "m", "query": "q", "documents": ["q"], "return_documents": false}),
        ))
        .unwrap();
        assert!(bare["results"][0].get("document").is_none());
    }
}
