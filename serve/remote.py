"""The optional last hop: a remote OpenAI-compatible provider.

Off unless ``LLMGRAPH_FALLBACK_URL`` is set. It is tried only for ``auto`` traffic, only
after every local model failed before its first byte, and its failures before the first
byte become a 503 like any other; a stream that has started is never replayed.
"""

from __future__ import annotations

from typing import Any

import httpx
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.background import BackgroundTask

from serve.errors import Unavailable

REMOTE_HOP = "remote"


async def forward_remote(
    payload: dict[str, Any], call_method: str, *, url: str, api_key: str, model: str, timeout_s: float
) -> Response:
    """POST ``payload`` to the provider's chat or completions endpoint.

    Raises:
        Unavailable: the provider could not be reached or did not answer 200.
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

        async def close():
            await response.aclose()
            await client.aclose()

        return StreamingResponse(response.aiter_raw(), media_type="text/event-stream", background=BackgroundTask(close))
    data = response.json()
    await response.aclose()
    await client.aclose()
    return JSONResponse(data)
