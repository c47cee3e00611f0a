"""The optional last hop: a remote OpenAI-compatible provider.

Off unless ``LLMGRAPH_FALLBACK_URL`` is set. It is tried only for ``auto`` traffic, only
after every local model failed before its first byte, and its failures before the first
byte become a 503 like any other; a stream that has started is never replayed.
"""

from __future__ import annotations

import json
import zlib
from typing import Any, AsyncIterator, Optional

import httpx

from serve.kernel.config import LLMSpec
from serve.kernel.errors import BadGateway, Unavailable
from serve.kernel.limits import apply_generation_limits

REMOTE_HOP = "remote"
#: Bytes of decoded reply taken from the provider per decompression step: a compressed
#: reply is inflated a step at a time, never all at once (a 300 KB gzip can hold 300 MB).
INFLATE_STEP = 64 * 1024


async def bounded_body(response: httpx.Response, limit: int) -> AsyncIterator[bytes]:
    """The provider's reply, decoded, in pieces; at most ``limit`` bytes of it.

    The encoding is undone here, a bounded step at a time (httpx would inflate each
    network chunk whole). Only gzip and deflate are asked for and accepted.

    Raises:
        BadGateway: the decoded reply is longer than ``limit``, or in an encoding not asked for.
    """
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("identity", "", "gzip", "deflate"):
        raise BadGateway(f"the remote provider answered in an encoding not asked for ({encoding[:20]})",
                         code="remote_reply_invalid")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32) if encoding in ("gzip", "deflate") else None
    taken = 0

    def counted(piece: bytes) -> bytes:
        nonlocal taken
        taken += len(piece)
        if taken > limit:
            raise BadGateway(f"the remote provider's reply is longer than {limit} bytes", code="remote_reply_too_large")
        return piece

    async for raw in response.aiter_raw():
        if inflater is None:
            yield counted(raw)
            continue
        pending = raw
        while pending:
            try:
                piece = inflater.decompress(pending, INFLATE_STEP)
            except zlib.error:
                raise BadGateway("the remote provider's compressed reply is corrupt", code="remote_reply_invalid") from None
            pending = inflater.unconsumed_tail
            if piece:
                yield counted(piece)


def remote_payload(original: Any, spec: LLMSpec) -> dict[str, Any]:
    """The body sent to the provider: the client's request under the routed model's limits.

    The provider bills by the token and is not bound by our engines' limits, so the
    request it gets carries the same ``max_tokens`` (defaulted when the client set none),
    ``n`` and logprob bounds the local model would have applied. Engine-only fields
    (chat template arguments, thinking budgets) are not added, and vLLM's scheduling
    ``priority`` (a batch line's) is left out: a provider may refuse them.
    """
    body = original.model_copy(deep=True)
    apply_generation_limits(body, spec)
    return body.model_dump(exclude_unset=True, exclude={"priority"})


async def forward_remote(
    payload: dict[str, Any], call_method: str, *, url: str, api_key: str, model: str, timeout_s: float,
    max_reply_bytes: int = 8 * 1024 * 1024,
) -> tuple[Optional[dict[str, Any]], Optional[AsyncIterator[bytes]]]:
    """POST ``payload`` to the provider's chat or completions endpoint.

    Returns:
        The provider's JSON reply, or (for ``stream``) its SSE bytes, decoded: the
        provider may gzip its stream, and the client gets no Content-Encoding from us.

    Raises:
        Unavailable: the provider could not be reached or did not answer 200 with JSON.
        BadGateway: its reply, decoded, is longer than ``max_reply_bytes`` (a stream that
            has started ends there instead).
    """
    path = "/chat/completions" if call_method == "chat" else "/completions"
    headers = {"Accept-Encoding": "gzip, deflate"}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    body = {**payload, "model": model or payload.get("model")}
    client = httpx.AsyncClient(timeout=timeout_s)
    try:
        request = client.build_request("POST", url.rstrip("/") + path, json=body, headers=headers)
        response = await client.send(request, stream=True)
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
                async for chunk in bounded_body(response, max_reply_bytes):
                    yield chunk
            except BadGateway:
                return  # the stream has started: it ends at the limit, it is never replayed
            finally:
                await response.aclose()
                await client.aclose()

        return None, stream()
    try:
        text = b"".join([piece async for piece in bounded_body(response, max_reply_bytes)])
        return json.loads(text), None
    except ValueError:
        raise Unavailable("remote provider answered a body that is not JSON", code="service_unavailable") from None
    except httpx.HTTPError as exc:
        raise Unavailable(f"remote provider's reply broke off: {exc!r}", code="service_unavailable") from None
    finally:
        await response.aclose()
        await client.aclose()
