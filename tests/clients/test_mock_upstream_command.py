"""`spendgate mock-upstream` serves the fake provider from the command line."""

from __future__ import annotations

import subprocess

import httpx

from tests.support import SPENDGATE, free_port


def test_mock_upstream_command_serves_openai_and_anthropic_shapes() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [SPENDGATE, "mock-upstream", "--port", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        assert f"listening on http://127.0.0.1:{port}" in proc.stdout.readline()
        base = f"http://127.0.0.1:{port}"
        chat = httpx.post(
            base + "/v1/chat/completions",
            headers={"Authorization": "Bearer sk-test"},
            json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert chat.status_code == 200 and chat.json()["usage"]["completion_tokens"] == 16
        message = httpx.post(
            base + "/v1/messages",
            headers={"x-api-key": "sk-ant-test", "anthropic-version": "2023-06-01"},
            json={
                "model": "claude-sonnet-4-6",
                "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
            },
        )
        assert message.json()["usage"]["output_tokens"] == 5
        recorded = httpx.get(base + "/_mock/requests").json()
        assert [r["path"] for r in recorded] == ["/v1/chat/completions", "/v1/messages"]
    finally:
        proc.terminate()
        proc.communicate(timeout=10)
    assert proc.returncode == 0
