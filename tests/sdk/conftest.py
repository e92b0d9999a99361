"""Fixtures shared by the SDK suites: the workspace's mock upstream (OpenAI and Anthropic
wire formats) and a `tollgate` binary in front of it, both started as processes.

Binaries come from $CARGO_TARGET_DIR (or ./target), debug profile; build them first with
`cargo build --bins`.
"""

import json
import os
import pathlib
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target")) / "debug"
MASTER_KEY = "sk-sdk-master"
UPSTREAM_KEY = "sk-sdk-upstream-secret"
# Virtual keys the suites created; none of them may appear in the gateway's logs.
ISSUED_KEYS = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(port, proc, limit=10.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited with {proc.returncode}: {proc.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health/readiness", timeout=0.5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError("gateway not ready in time")


def start_gateway(args, env=None):
    port = free_port()
    proc = subprocess.Popen(
        [str(TARGET / "tollgate"), "--host", "127.0.0.1", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    wait_ready(port, proc)
    return port, proc


def stop(proc):
    proc.terminate()
    try:
        return proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


@pytest.fixture(scope="session")
def mock_upstream():
    proc = subprocess.Popen(
        [str(TARGET / "tollgate-mock-upstream"), "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip()
    assert line.startswith("listening on "), line
    yield f"http://{line.removeprefix('listening on ')}/v1"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="session")
def gateway(mock_upstream):
    config = f"""
model_list:
  - model_name: general-purpose
    litellm_params:
      model: openai/mock-model
      api_base: {mock_upstream}
      api_key: os.environ/SDK_UPSTREAM_KEY
  - model_name: text-embedding-3-small
    litellm_params:
      model: openai/text-embedding-3-small
      api_base: {mock_upstream}
      api_key: os.environ/SDK_UPSTREAM_KEY
  - model_name: local-vllm
    litellm_params:
      model: hosted_vllm/meta-llama/Llama-3.1-8B-Instruct
      api_base: {mock_upstream}
  - model_name: claude
    litellm_params:
      model: anthropic/claude-sonnet-4-5
      api_base: {mock_upstream}
      api_key: os.environ/SDK_UPSTREAM_KEY
  - model_name: gemini-flash
    litellm_params:
      model: gemini/gemini-2.5-flash
      api_base: {mock_upstream}
      api_key: os.environ/SDK_UPSTREAM_KEY
  - model_name: command
    litellm_params:
      model: cohere/command-a-03-2025
      api_base: {mock_upstream}
      api_key: os.environ/SDK_UPSTREAM_KEY
  - model_name: voyage-embed
    litellm_params:
      model: voyage/voyage-3.5
      api_base: {mock_upstream.removesuffix("/v1")}/voyage/v1
      api_key: os.environ/SDK_UPSTREAM_KEY
  - model_name: voyage-rerank
    litellm_params:
      model: voyage/rerank-2
      api_base: {mock_upstream.removesuffix("/v1")}/voyage/v1
      api_key: os.environ/SDK_UPSTREAM_KEY
general_settings:
  master_key: os.environ/LITELLM_MASTER_KEY
guardrails:
  - guardrail_name: sdk-words
    litellm_params:
      guardrail: litellm_content_filter
      mode: pre_call
      blocked_words: [{{keyword: forbidden, action: BLOCK}}]
"""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        f.write(config)
    database = tempfile.TemporaryDirectory()
    port, proc = start_gateway(
        ["--config", f.name, "--detailed_debug"],
        env={
            "LITELLM_MASTER_KEY": MASTER_KEY,
            "SDK_UPSTREAM_KEY": UPSTREAM_KEY,
            "DATABASE_URL": f"sqlite://{database.name}/sdk.db?mode=rwc",
        },
    )
    yield port
    assert stop(proc) == 0, "SIGTERM exits 0"
    logs = proc.stderr.read()
    assert UPSTREAM_KEY not in logs and MASTER_KEY not in logs, "keys never reach the logs"
    for key in ISSUED_KEYS:
        assert key not in logs, "virtual keys never reach the logs"
    os.unlink(f.name)
    database.cleanup()


def management(port, path, body=None, key=MASTER_KEY, method=None):
    """Calls the management API as curl would; returns (status, parsed JSON)."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def issue_key(port, **fields):
    status, body = management(port, "/key/generate", fields)
    assert status == 200, body
    ISSUED_KEYS.append(body["key"])
    return body["key"]


