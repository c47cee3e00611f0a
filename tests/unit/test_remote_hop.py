"""The remote hop against a loopback stand-in for an OpenAI-compatible provider."""

from __future__ import annotations

import asyncio

import pytest

from serve.kernel.errors import Unavailable
from serve.kernel.remote import forward_remote
from tests.support.fake_provider import ANSWER, FakeProvider
from tests.support.graph import free_port


@pytest.fixture(scope="module")
def provider():
    fake = FakeProvider().start()
    yield fake
    fake.stop()


def test_forwards_body_key_and_model(provider):
    payload = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
    reply, stream = asyncio.run(forward_remote(payload, "chat", url=provider.url, api_key="k", model="remote-model", timeout_s=10))
    assert stream is None
    assert reply["choices"][0]["message"]["content"] == ANSWER
    sent = provider.requests[-1]
    assert sent["authorization"] == "Bearer k"
    assert sent["body"]["model"] == "remote-model" and sent["body"]["messages"] == payload["messages"]


def test_unreachable_or_failing_provider_is_unavailable(provider):
    closed = f"http://127.0.0.1:{free_port()}/v1"
    with pytest.raises(Unavailable):
        asyncio.run(forward_remote({"model": "auto"}, "chat", url=closed, api_key="", model="", timeout_s=5))
    with pytest.raises(Unavailable, match="answered 404"):
        asyncio.run(forward_remote({"model": "auto"}, "completions", url=provider.url, api_key="", model="", timeout_s=5))


def test_the_provider_gets_the_routed_models_generation_limits():
    """A request without max_tokens must not reach a paid provider unbounded."""
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    from serve.kernel.config import load_profile
    from serve.kernel.errors import BadRequest
    from serve.kernel.remote import remote_payload
    from tests.support.models import PROFILE

    spec = load_profile(PROFILE).extractor
    original = ChatCompletionRequest(model="auto", messages=[{"role": "user", "content": "hi"}])
    payload = remote_payload(original, spec)
    assert payload["max_tokens"] == spec.max_tokens_limit
    assert payload["messages"] == [{"role": "user", "content": "hi"}]
    assert "chat_template_kwargs" not in payload and "thinking_token_budget" not in payload
    assert original.max_tokens is None  # the client's request itself is left as it was
    bulk = ChatCompletionRequest(model="auto", messages=[{"role": "user", "content": "hi"}], priority=10)
    assert "priority" not in remote_payload(bulk, spec), "vLLM's scheduling priority stays with the local engines"
    with pytest.raises(BadRequest):
        remote_payload(ChatCompletionRequest(model="auto", messages=[{"role": "user", "content": "hi"}], n=99), spec)


def test_a_gzipped_provider_stream_reaches_the_client_decoded(provider):
    payload = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": True}

    async def collect() -> bytes:
        reply, stream = await forward_remote(payload, "chat", url=provider.url, api_key="", model="m", timeout_s=10)
        assert reply is None
        return b"".join([chunk async for chunk in stream])

    body = asyncio.run(collect())
    assert body.startswith(b"data: ") and ANSWER.encode() in body and b"[DONE]" in body


def test_a_gzip_bomb_is_cut_at_the_limit_with_a_502_and_memory_stays_flat(provider):
    import tracemalloc

    from serve.kernel.errors import BadGateway
    from tests.support.fake_provider import BOMB_MODEL

    limit = 8 * 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(BadGateway) as cut:
            asyncio.run(forward_remote({"messages": []}, "chat", url=provider.url, api_key="", model=BOMB_MODEL,
                                       timeout_s=60, max_reply_bytes=limit))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert cut.value.status_code == 502 and cut.value.code == "remote_reply_too_large"
    assert peak < 4 * limit, f"{peak / 2**20:.0f} MiB held while reading a reply cut at {limit / 2**20:.0f} MiB"


def test_a_gzipped_stream_still_arrives_decoded(provider):
    async def read():
        _, stream = await forward_remote({"messages": [], "stream": True}, "chat", url=provider.url, api_key="",
                                         model="m", timeout_s=10)
        return b"".join([chunk async for chunk in stream])

    text = asyncio.run(read())
    assert ANSWER.encode() in text and text.endswith(b"data: [DONE]\n\n")
