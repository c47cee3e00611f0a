"""The optional last hop: a remote OpenAI-compatible provider.

Off unless ``LLMGRAPH_FALLBACK_URL`` is set. It is tried only for ``auto`` traffic, only
after every local model failed before its first byte, and its failures before the first
byte become a 503 like any other; a stream that has started is never replayed.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Optional

import httpx

from serve.config import LLMSpec
from serve.errors import Unavailable
from serve.limits import apply_generation_limits

REMOTE_HOP = "remote"


def remote_payload(original: Any, spec: LLMSpec) -> dict[str, Any]:
    """The body sent to the provider: the client's request under the routed model's limits.

    The provider bills by the token and is not bound by our engines' limits, so the
    request it gets carries the same ``max_tokens`` (defaulted when the client set none),
    ``n`` and logprob bounds the local model would have applied. Engine-only fields
    (chat template arguments, thinking budgets) are not added: a provider may refuse them.
    """
    body = original.model_copy(deep=True)
    apply_generation_limits(body, spec)
    return body.model_dump(exclude_unset=True)


async def forward_remote(
    payload: dict[str, Any], call_method: str, *, url: str, api_key: str, model: str, timeout_s: float
) -> tuple[Optional[dict[str, Any]], Optional[AsyncIterator[bytes]]]:
    """POST ``payload`` to the provider's chat or completions endpoint.

    Returns:
        The provider's JSON reply, or (for ``stream``) its SSE bytes, decoded: the
        provider may gzip its stream, and the client gets no Content-Encoding from us.

    Raises:
        Unavailable: the provider could not be reached or did not answer 200 with JSON.
    """
    path = "/chat/completions" if call_method == "chat" else "/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {**payload, "model": model or payload.get("model")}
    client = httpx.AsyncClient(timeout=timeout_s)
    try:
        request = client.build_request("POST", url.rstrip("/") + path, json=body, headers=headers)
        response = await client.send(request, stream=bool(body.get("stream")))
    except httpx.HTTPError as exc:
        await client.aclose()
        raise Unavailable(f"remote provider unreachable: {exc!r}", code="service_unavailable") from None
    if response.status_code != 200:
        await response.aclose()
        await client.aclose()
        raise Unavailable(f"remote provider answered {response.status_code}", code="service_unavailable")
    if body.get("stream"):

        async def stream() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_bytes():
                    yield chunk
            finally:
                await response.aclose()
                await client.aclose()

        return None, stream()
    try:
        return response.json(), None
    except ValueError:
        raise Unavailable("remote provider answered a body that is not JSON", code="service_unavailable") from None
    finally:
        await response.aclose()
        await client.aclose()
