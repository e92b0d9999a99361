//! Which `provider/` prefixes Tollgate knows, which wire format each speaks, and where each
//! lives by default: the facts LiteLLM encodes in its provider list, for the providers this
//! build can reach.

/// How a provider is spoken to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireFormat {
    /// OpenAI's REST API: `/chat/completions`, `/completions`, `/embeddings`, SSE streaming.
    OpenAi,
    /// OpenAI's API as Azure serves it: per-deployment URLs, `api-version`, `api-key` or an
    /// Entra ID bearer token.
    AzureOpenAi,
    /// Anthropic's Messages API: `/v1/messages`, named SSE events.
    Anthropic,
    /// Google AI Studio's Gemini API: `models/{model}:generateContent`, SSE with `alt=sse`.
    Gemini,
    /// Amazon Bedrock Runtime: the Converse API (`/model/{id}/converse`, binary event-stream
    /// for `converse-stream`) and `invoke` for embeddings, signed with SigV4 or a Bedrock API
    /// key.
    Bedrock,
    /// Google Cloud's Vertex AI: Gemini's `generateContent` and Anthropic's Messages API
    /// (`rawPredict`) under a project and location, with Google OAuth access tokens.
    Vertex,
    /// Ollama's native API: `/api/chat` for `ollama_chat/`, `/api/generate` for `ollama/`,
    /// `/api/embed` for both; streams are NDJSON (one JSON object per line).
    Ollama,
    /// Azure AI Foundry and its serverless endpoints: OpenAI's chat and embeddings routes at
    /// the deployment's `api_base` (`/models/…` on `*.services.ai.azure.com`), and Claude
    /// models through Anthropic's Messages API under `/anthropic`.
    AzureAi,
    /// Cohere's v2 API: `/v2/chat` (named SSE events), `/v2/embed`, `/v2/rerank`.
    Cohere,
    /// Voyage AI: `/v1/embeddings` and `/v1/rerank`, close to OpenAI's shapes but not equal.
    Voyage,
    /// Jina AI: `/v1/embeddings` and `/v1/rerank`.
    JinaAi,
    /// Answers offline from the gateway itself (`fake/…` models and `mock_response`).
    Fake,
}

/// One provider prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProviderSpec {
    pub prefix: &'static str,
    pub wire: WireFormat,
    /// Base URL used when neither `api_base` nor one of `base_env` is set. `None` means the
    /// deployment must give one.
    pub default_base: Option<&'static str>,
    /// Environment variables LiteLLM reads for the base URL, first match wins.
    pub base_env: &'static [&'static str],
    /// Environment variables LiteLLM reads for the API key, first match wins.
    pub key_env: &'static [&'static str],
}

const fn openai_compatible(
    prefix: &'static str,
    default_base: Option<&'static str>,
    base_env: &'static [&'static str],
    key_env: &'static [&'static str],
) -> ProviderSpec {
    ProviderSpec { prefix, wire: WireFormat::OpenAi, default_base, base_env, key_env }
}

/// Every provider this build can call, by prefix.
pub const PROVIDERS: &[ProviderSpec] = &[
    openai_compatible(
        "openai",
        Some("https://api.openai.com/v1"),
        &["OPENAI_API_BASE", "OPENAI_BASE_URL"],
        &["OPENAI_API_KEY"],
    ),
    openai_compatible("custom_openai", None, &["OPENAI_API_BASE"], &["OPENAI_API_KEY"]),
    openai_compatible("openai_like", None, &[], &[]),
    openai_compatible("hosted_vllm", None, &["HOSTED_VLLM_API_BASE"], &["HOSTED_VLLM_API_KEY"]),
    openai_compatible("litellm_proxy", None, &["LITELLM_PROXY_API_BASE"], &["LITELLM_PROXY_API_KEY"]),
    // Ollama's native API, as LiteLLM speaks it: `ollama_chat/` through `/api/chat`,
    // `ollama/` through `/api/generate`.
    ProviderSpec {
        prefix: "ollama_chat",
        wire: WireFormat::Ollama,
        default_base: Some("http://localhost:11434"),
        base_env: &["OLLAMA_API_BASE"],
        key_env: &["OLLAMA_API_KEY"],
    },
    ProviderSpec {
        prefix: "ollama",
        wire: WireFormat::Ollama,
        default_base: Some("http://localhost:11434"),
        base_env: &["OLLAMA_API_BASE"],
        key_env: &["OLLAMA_API_KEY"],
    },
    openai_compatible(
        "lm_studio",
        Some("http://localhost:1234/v1"),
        &["LM_STUDIO_API_BASE"],
        &["LM_STUDIO_API_KEY"],
    ),
    openai_compatible("llamafile", Some("http://127.0.0.1:8080/v1"), &["LLAMAFILE_API_BASE"], &[]),
    openai_compatible("groq", Some("https://api.groq.com/openai/v1"), &["GROQ_API_BASE"], &["GROQ_API_KEY"]),
    openai_compatible(
        "mistral",
        Some("https://api.mistral.ai/v1"),
        &["MISTRAL_API_BASE"],
        &["MISTRAL_API_KEY"],
    ),
    openai_compatible(
        "deepseek",
        Some("https://api.deepseek.com/v1"),
        &["DEEPSEEK_API_BASE"],
        &["DEEPSEEK_API_KEY"],
    ),
    openai_compatible(
        "together_ai",
        Some("https://api.together.xyz/v1"),
        &["TOGETHER_AI_API_BASE"],
        &["TOGETHERAI_API_KEY", "TOGETHER_AI_API_KEY", "TOGETHER_API_KEY"],
    ),
    openai_compatible(
        "fireworks_ai",
        Some("https://api.fireworks.ai/inference/v1"),
        &["FIREWORKS_API_BASE"],
        &["FIREWORKS_API_KEY", "FIREWORKS_AI_API_KEY", "FIREWORKSAI_API_KEY"],
    ),
    openai_compatible(
        "openrouter",
        Some("https://openrouter.ai/api/v1"),
        &["OPENROUTER_API_BASE"],
        &["OPENROUTER_API_KEY", "OR_API_KEY"],
    ),
    openai_compatible(
        "perplexity",
        Some("https://api.perplexity.ai"),
        &["PERPLEXITY_API_BASE"],
        &["PERPLEXITYAI_API_KEY", "PERPLEXITY_API_KEY"],
    ),
    openai_compatible("xai", Some("https://api.x.ai/v1"), &["XAI_API_BASE"], &["XAI_API_KEY"]),
    openai_compatible(
        "deepinfra",
        Some("https://api.deepinfra.com/v1/openai"),
        &["DEEPINFRA_API_BASE"],
        &["DEEPINFRA_API_KEY"],
    ),
    openai_compatible(
        "cerebras",
        Some("https://api.cerebras.ai/v1"),
        &["CEREBRAS_API_BASE"],
        &["CEREBRAS_API_KEY"],
    ),
    openai_compatible(
        "nvidia_nim",
        Some("https://integrate.api.nvidia.com/v1"),
        &["NVIDIA_NIM_API_BASE"],
        &["NVIDIA_NIM_API_KEY"],
    ),
    openai_compatible(
        "sambanova",
        Some("https://api.sambanova.ai/v1"),
        &["SAMBANOVA_API_BASE"],
        &["SAMBANOVA_API_KEY"],
    ),
    openai_compatible(
        "moonshot",
        Some("https://api.moonshot.ai/v1"),
        &["MOONSHOT_API_BASE"],
        &["MOONSHOT_API_KEY"],
    ),
    openai_compatible(
        "nebius",
        Some("https://api.studio.nebius.ai/v1"),
        &["NEBIUS_API_BASE"],
        &["NEBIUS_API_KEY"],
    ),
    openai_compatible("github", Some("https://models.inference.ai.azure.com"), &[], &["GITHUB_API_KEY"]),
    ProviderSpec {
        prefix: "azure",
        wire: WireFormat::AzureOpenAi,
        default_base: None,
        base_env: &["AZURE_API_BASE", "AZURE_OPENAI_ENDPOINT"],
        key_env: &["AZURE_API_KEY", "AZURE_OPENAI_API_KEY"],
    },
    ProviderSpec {
        prefix: "azure_ai",
        wire: WireFormat::AzureAi,
        default_base: None,
        base_env: &["AZURE_AI_API_BASE"],
        key_env: &["AZURE_AI_API_KEY"],
    },
    ProviderSpec {
        prefix: "anthropic",
        wire: WireFormat::Anthropic,
        default_base: Some("https://api.anthropic.com"),
        base_env: &["ANTHROPIC_API_BASE", "ANTHROPIC_BASE_URL"],
        key_env: &["ANTHROPIC_API_KEY"],
    },
    ProviderSpec {
        prefix: "gemini",
        wire: WireFormat::Gemini,
        default_base: Some("https://generativelanguage.googleapis.com"),
        base_env: &["GEMINI_API_BASE"],
        key_env: &["GEMINI_API_KEY"],
    },
    // The base URL depends on the region (`https://bedrock-runtime.{region}.amazonaws.com`),
    // and the credentials are AWS's: the config reader resolves both for this prefix.
    ProviderSpec {
        prefix: "bedrock",
        wire: WireFormat::Bedrock,
        default_base: None,
        base_env: &[],
        key_env: &[],
    },
    // The base URL follows the location (`{location}-aiplatform.googleapis.com`), so the
    // config derives it from `vertex_location` rather than from a fixed default.
    ProviderSpec {
        prefix: "vertex_ai",
        wire: WireFormat::Vertex,
        default_base: None,
        base_env: &[],
        key_env: &[],
    },
    ProviderSpec {
        prefix: "cohere",
        wire: WireFormat::Cohere,
        default_base: Some("https://api.cohere.com"),
        base_env: &["COHERE_API_BASE"],
        key_env: &["COHERE_API_KEY", "CO_API_KEY"],
    },
    // LiteLLM's name for Cohere's chat models; the same API.
    ProviderSpec {
        prefix: "cohere_chat",
        wire: WireFormat::Cohere,
        default_base: Some("https://api.cohere.com"),
        base_env: &["COHERE_API_BASE"],
        key_env: &["COHERE_API_KEY", "CO_API_KEY"],
    },
    ProviderSpec {
        prefix: "voyage",
        wire: WireFormat::Voyage,
        default_base: Some("https://api.voyageai.com/v1"),
        base_env: &["VOYAGE_API_BASE"],
        key_env: &["VOYAGE_API_KEY", "VOYAGE_AI_API_KEY", "VOYAGE_AI_TOKEN"],
    },
    ProviderSpec {
        prefix: "jina_ai",
        wire: WireFormat::JinaAi,
        default_base: Some("https://api.jina.ai/v1"),
        base_env: &["JINA_AI_API_BASE"],
        key_env: &["JINA_AI_API_KEY", "JINA_AI_TOKEN"],
    },
    ProviderSpec { prefix: "fake", wire: WireFormat::Fake, default_base: None, base_env: &[], key_env: &[] },
];

/// Prefixes LiteLLM accepts that this build cannot call yet (native wire formats that
/// arrive with the Providers issue). Named so a config using them gets a precise message.
pub const NOT_YET_SUPPORTED: &[&str] = &["huggingface", "watsonx", "sagemaker", "databricks", "replicate"];

/// Ollama's runtime options (its Modelfile parameters) and request fields that LiteLLM
/// passes through when they are written in `litellm_params` (`num_ctx: 8192`) or sent in a
/// request: the options go in the request's `options`, `keep_alive` and `think` at its top.
pub const OLLAMA_PARAMS: &[&str] = &[
    "num_ctx",
    "num_keep",
    "num_predict",
    "num_batch",
    "num_gpu",
    "main_gpu",
    "num_thread",
    "num_gqa",
    "mirostat",
    "mirostat_eta",
    "mirostat_tau",
    "repeat_last_n",
    "repeat_penalty",
    "presence_penalty",
    "frequency_penalty",
    "penalize_newline",
    "tfs_z",
    "top_k",
    "top_p",
    "min_p",
    "typical_p",
    "temperature",
    "seed",
    "stop",
    "numa",
    "low_vram",
    "vocab_only",
    "use_mmap",
    "use_mlock",
    "keep_alive",
    "think",
];

/// The provider-specific `litellm_params` a prefix sends upstream with every call.
pub fn provider_params(prefix: &str) -> &'static [&'static str] {
    match prefix {
        "ollama" | "ollama_chat" => OLLAMA_PARAMS,
        _ => &[],
    }
}

/// A Bedrock model id without LiteLLM's route prefix: `bedrock/converse/<id>` and
/// `bedrock/invoke/<id>` name the API to use, not the model.
pub fn bedrock_model_id(model: &str) -> &str {
    model.strip_prefix("converse/").or_else(|| model.strip_prefix("invoke/")).unwrap_or(model)
}

pub fn lookup(prefix: &str) -> Option<&'static ProviderSpec> {
    PROVIDERS.iter().find(|p| p.prefix == prefix)
}

/// The provider LiteLLM assumes for a model written without a prefix (`gpt-4o`).
pub fn infer_prefix(model: &str) -> Option<&'static str> {
    const OPENAI: &[&str] = &[
        "gpt-",
        "chatgpt-",
        "o1",
        "o3",
        "o4",
        "text-embedding-",
        "davinci",
        "babbage",
        "omni-moderation",
        "text-moderation",
        "ft:gpt-",
    ];
    if OPENAI.iter().any(|p| model.starts_with(p)) {
        Some("openai")
    } else if model.starts_with("claude") {
        Some("anthropic")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_unique_and_disjoint_from_the_unsupported_list() {
        for (i, p) in PROVIDERS.iter().enumerate() {
            assert!(PROVIDERS[i + 1..].iter().all(|q| q.prefix != p.prefix), "{}", p.prefix);
            assert!(!NOT_YET_SUPPORTED.contains(&p.prefix), "{}", p.prefix);
        }
    }

    #[test]
    fn infers_openai_for_bare_openai_names() {
        assert_eq!(infer_prefix("gpt-4o"), Some("openai"));
        assert_eq!(infer_prefix("text-embedding-3-small"), Some("openai"));
        assert_eq!(infer_prefix("claude-3-5-sonnet"), Some("anthropic"));
        assert_eq!(infer_prefix("llama3"), None);
    }

    #[test]
    fn bedrock_route_prefixes_are_not_part_of_the_model_id() {
        assert_eq!(
            bedrock_model_id("converse/anthropic.claude-3-haiku-20240307-v1:0"),
            "anthropic.claude-3-haiku-20240307-v1:0"
        );
        assert_eq!(bedrock_model_id("invoke/amazon.titan-embed-text-v2:0"), "amazon.titan-embed-text-v2:0");
        assert_eq!(bedrock_model_id("us.amazon.nova-pro-v1:0"), "us.amazon.nova-pro-v1:0");
    }
}
