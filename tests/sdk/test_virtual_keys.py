"""Virtual keys as applications meet them: made with the management API (as the seeds'
curl does), then used through the official OpenAI and Anthropic SDKs."""

import anthropic
import openai
import pytest

from conftest import issue_key, management


def openai_client(port, key):
    return openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, max_retries=0)


def test_a_key_works_only_for_its_models_and_stops_when_deleted(gateway):
    key = issue_key(
        gateway,
        models=["general-purpose"],
        max_budget=100,
        budget_duration="monthly",
        metadata={"team": "risk-team", "environment": "prod"},
    )
    client = openai_client(gateway, key)
    reply = client.chat.completions.create(
        model="general-purpose", messages=[{"role": "user", "content": "hello"}]
    )
    assert reply.choices[0].message.content

    with pytest.raises(openai.PermissionDeniedError) as denied:
        client.chat.completions.create(model="local-vllm", messages=[{"role": "user", "content": "hi"}])
    assert denied.value.status_code == 403
    assert denied.value.body["type"] == "key_model_access_denied"

    status, info = management(gateway, "/key/info", {"key": key})
    assert status == 200 and info["info"]["models"] == ["general-purpose"]
    status, listed = management(gateway, "/key/list")
    assert status == 200 and listed["total_count"] >= 1

    status, deleted = management(gateway, "/key/delete", {"keys": [key]}, method="DELETE")
    assert status == 200 and deleted == {"deleted_keys": [key]}
    with pytest.raises(openai.AuthenticationError) as refused:
        client.chat.completions.create(model="general-purpose", messages=[{"role": "user", "content": "hi"}])
    assert refused.value.body["type"] == "token_not_found_in_db"


def test_a_spent_budget_is_refused_with_budget_exceeded(gateway):
    key = issue_key(gateway, max_budget=1)
    status, _ = management(gateway, "/key/update", {"key": key, "spend": 2})
    assert status == 200
    with pytest.raises(openai.UnprocessableEntityError) as spent:
        openai_client(gateway, key).chat.completions.create(
            model="general-purpose", messages=[{"role": "user", "content": "hi"}]
        )
    assert spent.value.body["type"] == "budget_exceeded"


def test_anthropic_sdk_sends_the_virtual_key_as_x_api_key(gateway):
    key = issue_key(gateway, models=["claude"])
    client = anthropic.Anthropic(base_url=f"http://127.0.0.1:{gateway}", api_key=key, max_retries=0)
    message = client.messages.create(
        model="claude", max_tokens=32, messages=[{"role": "user", "content": "hello"}]
    )
    assert message.content[0].text
    with pytest.raises(anthropic.PermissionDeniedError):
        client.messages.create(
            model="general-purpose", max_tokens=32, messages=[{"role": "user", "content": "hello"}]
        )


def test_a_non_admin_key_cannot_use_admin_routes(gateway):
    key = issue_key(gateway)
    status, body = management(gateway, "/team/new", {"team_alias": "x"}, key=key)
    assert status == 403
    assert "Only proxy admin" in body["error"]["message"]
