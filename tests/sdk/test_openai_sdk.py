"""The official OpenAI Python SDK against a running `tollgate` binary.

The gateway (fixtures in conftest.py) serves models on the workspace's mock upstream, and a
second gateway runs the built-in demo config, exactly as the README's first command starts it.
"""

import json
import subprocess

import openai
import pytest

from conftest import MASTER_KEY, start_gateway, stop

@pytest.fixture
def client(gateway):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{gateway}/v1", api_key=MASTER_KEY, max_retries=0)


def test_chat_completion(client):
    response = client.chat.completions.create(
        model="general-purpose", messages=[{"role": "user", "content": "hello"}]
    )
    assert response.model == "general-purpose"
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content
    assert response.usage.total_tokens > 0


def test_chat_with_raw_headers(client):
    raw = client.chat.completions.with_raw_response.create(
        model="local-vllm", messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["x-litellm-model-group"] == "local-vllm"
    assert len(raw.headers["x-litellm-call-id"]) == 36
    assert float(raw.headers["x-litellm-overhead-duration-ms"]) >= 0
    assert raw.parse().model == "local-vllm"


def test_stream_with_usage(client):
    stream = client.chat.completions.create(
        model="general-purpose",
        messages=[{"role": "user", "content": "stream please"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert all(c.model == "general-purpose" for c in chunks)
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0


def test_embeddings(client):
    response = client.embeddings.create(model="text-embedding-3-small", input=["one", "two"])
    assert len(response.data) == 2
    assert len(response.data[0].embedding) > 0
    assert response.model == "text-embedding-3-small"


def test_legacy_completions(client):
    response = client.completions.create(model="general-purpose", prompt="say hi")
    assert response.choices[0].text
    assert response.model == "general-purpose"


def test_models_list(client):
    ids = [m.id for m in client.models.list()]
    assert ids == [
        "general-purpose",
        "text-embedding-3-small",
        "local-vllm",
        "claude",
        "gemini-flash",
        "command",
        "voyage-embed",
        "voyage-rerank",
    ]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}}},
    },
}


def test_anthropic_model_through_the_openai_sdk(client):
    answer = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "hello"}]
    )
    assert answer.model == "claude"
    assert answer.choices[0].message.content == "mock reply"
    assert answer.choices[0].finish_reason == "stop"

    called = client.chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL]
    )
    call = called.choices[0].message.tool_calls[0]
    assert called.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"location": "Paris"}


def test_anthropic_stream_through_the_openai_sdk(client):
    chunks = list(
        client.chat.completions.create(
            model="claude",
            messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER_TOOL],
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    arguments = "".join(
        c.choices[0].delta.tool_calls[0].function.arguments or ""
        for c in chunks
        if c.choices and c.choices[0].delta.tool_calls
    )
    assert text.startswith("tok0")
    assert json.loads(arguments) == {"location": "Paris"}
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]


def test_wrong_key_is_authentication_error(gateway):
    bad = openai.OpenAI(base_url=f"http://127.0.0.1:{gateway}/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as error:
        bad.models.list()
    assert error.value.status_code == 401


def test_unknown_model_is_bad_request_naming_valid_models(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert "general-purpose" in str(error.value)
    assert error.value.body["code"] == "400"


def test_demo_config_as_the_readme_runs_it():
    port, proc = start_gateway([])
    try:
        demo = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="anything", max_retries=0)
        answer = demo.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hi"}])
        assert answer.choices[0].message.content.startswith("Hello from Tollgate")
        streamed = "".join(
            c.choices[0].delta.content or ""
            for c in demo.chat.completions.create(
                model="demo", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            if c.choices
        )
        assert streamed == answer.choices[0].message.content
    finally:
        assert stop(proc) == 0


def test_curl_as_the_readme_shows_it():
    port, proc = start_gateway([])
    try:
        out = subprocess.run(
            [
                "curl", "-sS", f"http://127.0.0.1:{port}/v1/chat/completions",
                "-H", "Content-Type: application/json",
                "-d", '{"model": "demo", "messages": [{"role": "user", "content": "Hello!"}]}',
            ],
            capture_output=True, text=True, timeout=10, check=True,
        ).stdout
        assert '"content":"Hello from Tollgate' in out
    finally:
        stop(proc)


def test_gemini_model_through_the_openai_sdk(client):
    reply = client.chat.completions.create(
        model="gemini-flash", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.model == "gemini-flash"
    assert reply.choices[0].message.content
    assert reply.choices[0].finish_reason == "stop"
    text = "".join(
        chunk.choices[0].delta.content or ""
        for chunk in client.chat.completions.create(
            model="gemini-flash", messages=[{"role": "user", "content": "hello"}], stream=True
        )
        if chunk.choices
    )
    assert text == reply.choices[0].message.content


def test_cohere_model_through_the_openai_sdk(client):
    reply = client.chat.completions.create(
        model="command", messages=[{"role": "user", "content": "hello"}], max_tokens=50
    )
    assert reply.model == "command"
    assert reply.choices[0].finish_reason == "stop"
    chunks = list(
        client.chat.completions.create(
            model="command",
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert chunks[-1].usage is not None and chunks[-1].usage.prompt_tokens > 0


def test_voyage_embeddings_through_the_openai_sdk(client):
    # The SDK asks for base64 by default; Voyage's own base64 comes back and decodes.
    response = client.embeddings.create(model="voyage-embed", input=["one", "two"], dimensions=256)
    assert [item.index for item in response.data] == [0, 1]
    assert len(response.data[1].embedding) == 256
    assert response.usage.prompt_tokens > 0


def test_rerank_as_a_plain_http_client_calls_it(gateway):
    # The OpenAI SDK has no rerank; LiteLLM's clients post JSON to /v1/rerank.
    from conftest import management

    status, body = management(
        gateway,
        "/v1/rerank",
        {"model": "voyage-rerank", "query": "capital of France", "documents": ["Berlin", "Paris is the capital of France"], "top_n": 1},
    )
    assert status == 200, body
    assert [r["index"] for r in body["results"]] == [1]
    assert body["results"][0]["document"] == {"text": "Paris is the capital of France"}
    assert body["meta"]["billed_units"]["total_tokens"] > 0


def test_guardrail_named_per_request_blocks_with_a_bad_request(client):
    # The SDK sends LiteLLM's `guardrails` field through extra_body; it never goes upstream.
    allowed = client.chat.completions.create(
        model="general-purpose",
        messages=[{"role": "user", "content": "hello"}],
        extra_body={"guardrails": ["sdk-words"]},
    )
    assert allowed.choices[0].message.content
    with pytest.raises(openai.BadRequestError) as blocked:
        client.chat.completions.create(
            model="general-purpose",
            messages=[{"role": "user", "content": "the forbidden word"}],
            extra_body={"guardrails": ["sdk-words"]},
        )
    assert blocked.value.status_code == 400
    assert "sdk-words" in blocked.value.message and "forbidden" in blocked.value.message
    with pytest.raises(openai.BadRequestError) as unknown:
        client.chat.completions.create(
            model="general-purpose",
            messages=[{"role": "user", "content": "hello"}],
            extra_body={"guardrails": ["no-such-guardrail"]},
        )
    assert "no-such-guardrail" in unknown.value.message
