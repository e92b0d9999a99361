//! Embeddings on Bedrock through `InvokeModel` (`POST /model/{id}/invoke`), in each model
//! family's own body: Amazon Titan embeds one text per call (`inputText`), Cohere a batch
//! (`texts`, `input_type`). The answers become one OpenAI embedding list with usage.

use serde_json::{Value, json};

use crate::ProviderError;

/// Titan calls made at once for one request's inputs.
pub(crate) const TITAN_CONCURRENCY: usize = 8;
/// Most texts Cohere embeds in one call on Bedrock.
pub(crate) const COHERE_BATCH: usize = 96;
/// `input_type` LiteLLM sends to Cohere when the request names none.
const COHERE_DEFAULT_INPUT_TYPE: &str = "search_document";

fn bad(message: impl Into<String>) -> ProviderError {
    ProviderError::BadRequest(message.into())
}

/// Which body an embedding model takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    /// `amazon.titan-embed-text-v1`, `-v2:0`, `amazon.titan-embed-image-v1` (text input).
    Titan { accepts_dimensions: bool },
    /// `cohere.embed-english-v3`, `cohere.embed-multilingual-v3`, `cohere.embed-v4:0`.
    Cohere,
}

/// The family of a model id (cross-region prefixes such as `us.` allowed).
pub(crate) fn family(model_id: &str) -> Result<Family, ProviderError> {
    if model_id.contains("amazon.titan-embed") {
        Ok(Family::Titan { accepts_dimensions: model_id.contains("titan-embed-text-v2") })
    } else if model_id.contains("cohere.embed") {
        Ok(Family::Cohere)
    } else {
        Err(bad(format!(
            "bedrock embeddings support the amazon.titan-embed-* and cohere.embed-* models, not '{model_id}'"
        )))
    }
}

/// The request's inputs, which must be text.
pub(crate) fn inputs(openai: &Value) -> Result<Vec<String>, ProviderError> {
    match openai.get("input") {
        Some(Value::String(text)) => Ok(vec![text.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| bad("bedrock embeddings take `input` as strings, not tokens"))
            })
            .collect(),
        _ => Err(bad("`input` must be a string or a non-empty array of strings")),
    }
}

/// Titan's body for one text.
pub(crate) fn titan_body(
    text: &str,
    openai: &Value,
    accepts_dimensions: bool,
) -> Result<Value, ProviderError> {
    let mut body = json!({"inputText": text});
    if let Some(dimensions) = openai.get("dimensions").filter(|d| !d.is_null()) {
        if !accepts_dimensions {
            return Err(bad(
                "`dimensions` is supported only by amazon.titan-embed-text-v2 among titan models",
            ));
        }
        body["dimensions"] = dimensions.clone();
    }
    Ok(body)
}

/// Titan's answer: the vector and the input's token count.
pub(crate) fn titan_answer(answer: &Value) -> Result<(Value, u64), ProviderError> {
    let embedding = answer
        .get("embedding")
        .filter(|e| e.is_array())
        .cloned()
        .ok_or_else(|| ProviderError::Protocol("bedrock titan answered without `embedding`".into()))?;
    Ok((embedding, answer.get("inputTextTokenCount").and_then(Value::as_u64).unwrap_or(0)))
}

/// Cohere's body for a batch of texts.
pub(crate) fn cohere_body(texts: &[String], openai: &Value) -> Result<Value, ProviderError> {
    if openai.get("dimensions").is_some_and(|d| !d.is_null()) {
        return Err(bad("`dimensions` is not supported by cohere models on bedrock"));
    }
    let input_type = openai.get("input_type").and_then(Value::as_str).unwrap_or(COHERE_DEFAULT_INPUT_TYPE);
    Ok(json!({"texts": texts, "input_type": input_type}))
}

/// Cohere's answer: `embeddings` as a list of vectors, or by type (`{"float": [...]}`).
pub(crate) fn cohere_answer(answer: &Value, expected: usize) -> Result<Vec<Value>, ProviderError> {
    let embeddings = answer.get("embeddings").map(|e| e.get("float").unwrap_or(e)).and_then(Value::as_array);
    match embeddings {
        Some(vectors) if vectors.len() == expected => Ok(vectors.clone()),
        Some(vectors) => Err(ProviderError::Protocol(format!(
            "bedrock cohere answered {} embeddings for {expected} texts",
            vectors.len()
        ))),
        None => Err(ProviderError::Protocol("bedrock cohere answered without `embeddings`".into())),
    }
}

/// The OpenAI embedding list.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_and_bodies() {
        assert_eq!(
            family("amazon.titan-embed-text-v2:0").unwrap(),
            Family::Titan { accepts_dimensions: true }
        );
        assert_eq!(
            family("amazon.titan-embed-text-v1").unwrap(),
            Family::Titan { accepts_dimensions: false }
        );
        assert_eq!(family("us.cohere.embed-v4:0").unwrap(), Family::Cohere);
        assert!(family("anthropic.claude-3").unwrap_err().to_string().contains("titan"));

        let openai = json!({"input": ["a", "b"], "dimensions": 256});
        assert_eq!(inputs(&openai).unwrap(), ["a", "b"]);
        assert!(inputs(&json!({"input": [1, 2]})).is_err());
        assert_eq!(titan_body("a", &openai, true).unwrap(), json!({"inputText": "a", "dimensions": 256}));
        assert!(titan_body("a", &openai, false).is_err());
        assert_eq!(
            cohere_body(&["a".into()], &json!({"input_type": "search_query"})).unwrap(),
            json!({"texts": ["a"], "input_type": "search_query"})
        );
        assert_eq!(cohere_body(&["a".into()], &json!({})).unwrap()["input_type"], COHERE_DEFAULT_INPUT_TYPE);
    }

    #[test]
    fn answers_become_an_embedding_list() {
        let (vector, tokens) =
            titan_answer(&json!({"embedding": [0.5, 0.25], "inputTextTokenCount": 3})).unwrap();
        assert_eq!((vector.clone(), tokens), (json!([0.5, 0.25]), 3));
        assert!(titan_answer(&json!({})).is_err());
        let plain =
            cohere_answer(&json!({"embeddings": [[1.0], [2.0]], "response_type": "embeddings_floats"}), 2)
                .unwrap();
        let typed = cohere_answer(&json!({"embeddings": {"float": [[1.0], [2.0]]}}), 2).unwrap();
        assert_eq!(plain, typed);
        assert!(cohere_answer(&json!({"embeddings": [[1.0]]}), 2).is_err());
        let list = embedding_list(vec![vector], "titan", 3);
        assert_eq!(list["data"][0], json!({"object": "embedding", "index": 0, "embedding": [0.5, 0.25]}));
        assert_eq!(list["usage"], json!({"prompt_tokens": 3, "total_tokens": 3}));
    }
}
