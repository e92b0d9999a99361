//! Embeddings through Cohere's `/v2/embed`: texts in batches of 96 (images, given as data
//! URLs, one per call), `input_type` as the request says or LiteLLM's default, and the
//! vectors by type (`float`, or `base64` for `encoding_format: base64`) read back into one
//! OpenAI embedding list.

use serde_json::{Value, json};

use crate::ProviderError;
use crate::retrieval::{count, pass_through, wants_base64};

/// Most texts one `/v2/embed` call takes.
pub(crate) const TEXT_BATCH: usize = 96;
/// Most images one call takes.
pub(crate) const IMAGE_BATCH: usize = 1;
/// `input_type` LiteLLM sends when the request names none.
pub(crate) const DEFAULT_INPUT_TYPE: &str = "search_document";
/// Cohere's own embed parameters, passed through when set.
const NATIVE_PARAMS: &[&str] = &["truncate", "max_tokens", "priority"];

/// What is embedded: texts, or images as data URLs (LiteLLM sends base64 images so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Texts,
    Images,
}

impl Kind {
    pub(crate) fn batch(self) -> usize {
        match self {
            Kind::Texts => TEXT_BATCH,
            Kind::Images => IMAGE_BATCH,
        }
    }
}

/// Whether `inputs` are texts or images; a mix is refused.
pub(crate) fn kind(inputs: &[String]) -> Result<Kind, ProviderError> {
    let is_image = |input: &String| input.starts_with("data:image/") && input.contains(";base64,");
    match (inputs.iter().all(is_image), inputs.iter().any(is_image)) {
        (true, _) => Ok(Kind::Images),
        (false, false) => Ok(Kind::Texts),
        (false, true) => {
            Err(ProviderError::BadRequest("cohere embeds texts or images in one request, not both".into()))
        }
    }
}

/// The `/v2/embed` body for one batch.
pub(crate) fn body(
    model: &str,
    batch: &[String],
    kind: Kind,
    openai: &Value,
) -> Result<Value, ProviderError> {
    let embedding_type = if wants_base64(openai)? { "base64" } else { "float" };
    let default_type = match kind {
        Kind::Texts => DEFAULT_INPUT_TYPE,
        Kind::Images => "image",
    };
    let input_type = openai.get("input_type").and_then(Value::as_str).unwrap_or(default_type);
    let field = match kind {
        Kind::Texts => "texts",
        Kind::Images => "images",
    };
    let mut body =
        json!({"model": model, field: batch, "input_type": input_type, "embedding_types": [embedding_type]});
    match openai.get("dimensions") {
        None | Some(Value::Null) => {}
        Some(dimensions) if dimensions.as_u64().is_some() => body["output_dimension"] = dimensions.clone(),
        Some(_) => return Err(ProviderError::BadRequest("`dimensions` must be a positive integer".into())),
    }
    pass_through(openai, &mut body, NATIVE_PARAMS);
    Ok(body)
}

/// One call's vectors (as many as were sent) and its billed input: tokens, plus one per image.
pub(crate) fn answer(
    answer: &Value,
    expected: usize,
    base64: bool,
) -> Result<(Vec<Value>, u64), ProviderError> {
    let wanted = if base64 { "base64" } else { "float" };
    let vectors = answer
        .pointer(&format!("/embeddings/{wanted}"))
        .and_then(Value::as_array)
        .ok_or_else(|| ProviderError::Protocol(format!("cohere answered without `embeddings.{wanted}`")))?;
    if vectors.len() != expected {
        return Err(ProviderError::Protocol(format!(
            "cohere answered {} embeddings for {expected} inputs",
            vectors.len()
        )));
    }
    let billed = answer.pointer("/meta/billed_units");
    let tokens =
        count(billed.and_then(|b| b.get("input_tokens"))) + count(billed.and_then(|b| b.get("images")));
    Ok((vectors.clone(), tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_follow_litellm_defaults() {
        let texts = ["a".to_owned(), "b".to_owned()];
        assert_eq!(
            body("embed-v4.0", &texts, Kind::Texts, &json!({"dimensions": 256, "truncate": "END"})).unwrap(),
            json!({"model": "embed-v4.0", "texts": ["a", "b"], "input_type": "search_document", "embedding_types": ["float"], "output_dimension": 256, "truncate": "END"})
        );
        let query = body(
            "m",
            &texts,
            Kind::Texts,
            &json!({"input_type": "search_query", "encoding_format": "base64"}),
        )
        .unwrap();
        assert_eq!(
            (query["input_type"].as_str(), query["embedding_types"][0].as_str()),
            (Some("search_query"), Some("base64"))
        );
        let images = ["data:image/png;base64,iVBO".to_owned()];
        assert_eq!(kind(&images).unwrap(), Kind::Images);
        assert_eq!(body("m", &images, Kind::Images, &json!({})).unwrap()["input_type"], "image");
        assert!(kind(&["text".to_owned(), images[0].clone()]).is_err());
        assert!(body("m", &texts, Kind::Texts, &json!({"dimensions": "big"})).is_err());
    }

    #[test]
    fn answers_give_vectors_and_billed_input() {
        let by_type = json!({
            "id": "da6e", "texts": ["a", "b"], "response_type": "embeddings_by_type",
            "embeddings": {"float": [[0.1, 0.2], [0.3, 0.4]]},
            "meta": {"api_version": {"version": "2"}, "billed_units": {"input_tokens": 2}}
        });
        let (vectors, tokens) = answer(&by_type, 2, false).unwrap();
        assert_eq!((vectors, tokens), (vec![json!([0.1, 0.2]), json!([0.3, 0.4])], 2));
        assert!(answer(&by_type, 3, false).is_err(), "a count that does not match");
        assert!(answer(&by_type, 2, true).unwrap_err().to_string().contains("embeddings.base64"));
    }
}
