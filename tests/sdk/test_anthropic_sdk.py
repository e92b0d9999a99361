"""The official Anthropic Python SDK against a running `tollgate` binary: the
`/v1/messages` front door, for an OpenAI-compatible model and for an `anthropic/` one.
"""

import anthropic
import pytest

from conftest import MASTER_KEY

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Current weather for a city",
    "input_schema": {"type": "object", "properties": {"location": {"type": "string"}}},
}


@pytest.fixture
def claude(gateway):
    return anthropic.Anthropic(base_url=f"http://127.0.0.1:{gateway}", api_key=MASTER_KEY, max_retries=0)


@pytest.mark.parametrize("model", ["general-purpose", "claude"])
def test_message(claude, model):
    message = claude.messages.create(
        model=model,
        max_tokens=64,
        system="You are terse.",
        messages=[{"role": "user", "content": "hello"}],
    )
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == model
    assert message.content[0].type == "text"
    assert message.content[0].text == "mock reply"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0


def test_tool_use_round_trip_through_an_anthropic_model(claude):
    first = claude.messages.create(
        model="claude",
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "weather in Paris?"}],
    )
    assert first.stop_reason == "tool_use"
    tool_use = next(block for block in first.content if block.type == "tool_use")
    assert tool_use.name == "get_weather"
    assert tool_use.input == {"location": "Paris"}
    second = claude.messages.create(
        model="claude",
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[
            {"role": "user", "content": "weather in Paris?"},
            {"role": "assistant", "content": first.content},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": tool_use.id, "content": "18C"}]},
        ],
    )
    assert second.stop_reason == "end_turn"


@pytest.mark.parametrize("model", ["general-purpose", "claude"])
def test_stream(claude, model):
    with claude.messages.stream(
        model=model, max_tokens=64, messages=[{"role": "user", "content": "stream please"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.startswith("tok0")
    assert final.model == model
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_stream_with_tool_use(claude):
    with claude.messages.stream(
        model="claude",
        max_tokens=64,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        final = stream.get_final_message()
    assert final.stop_reason == "tool_use"
    tool_use = next(block for block in final.content if block.type == "tool_use")
    assert tool_use.input == {"location": "Paris"}


def test_errors_are_anthropic_errors(gateway, claude):
    bad_key = anthropic.Anthropic(base_url=f"http://127.0.0.1:{gateway}", api_key="sk-wrong", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad_key.messages.create(model="claude", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError) as error:
        claude.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])
    assert error.value.body["error"]["type"] == "invalid_request_error"
