"""The remote hop against a loopback stand-in for an OpenAI-compatible provider."""

from __future__ import annotations

import asyncio
import json

import pytest

from serve.errors import Unavailable
from serve.remote import forward_remote
from tests.support.fake_provider import ANSWER, FakeProvider
from tests.support.graph import free_port


@pytest.fixture(scope="module")
def provider():
    fake = FakeProvider().start()
    yield fake
    fake.stop()


def test_forwards_body_key_and_model(provider):
    payload = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    response = asyncio.run(forward_remote(payload, "chat", url=provider.url, api_key="k", model="remote-model", timeout_s=10))
    assert response.status_code == 200
    assert json.loads(response.body)["choices"][0]["message"]["content"] == ANSWER
    sent = provider.requests[-1]
    assert sent["authorization"] == "Bearer k"
    assert sent["body"]["model"] == "remote-model" and sent["body"]["messages"] == payload["messages"]


def test_unreachable_or_failing_provider_is_unavailable(provider):
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(Unavailable):
        asyncio.run(forward_remote({"model": "auto"}, "chat", url=closed, api_key="", model="", timeout_s=5))
    with pytest.raises(Unavailable, match="answered 404"):
        asyncio.run(forward_remote({"model": "auto"}, "completions", url=provider.url, api_key="", model="", timeout_s=5))
