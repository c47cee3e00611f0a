"""A stand-in for a remote OpenAI-compatible provider, on loopback, for the remote hop.

Tests never reach the network; this tiny server answers like a provider would and
remembers what it was sent.
"""

from __future__ import annotations

import gzip
import zlib
import json
import threading
import time

import uvicorn
from fastapi import FastAPI, Request, Response

from tests.support.graph import free_port

ANSWER = "from the remote provider"
#: Asked for this model, the provider answers a gzip that inflates to BOMB_BYTES.
BOMB_MODEL = "gzip-bomb"
BOMB_BYTES = 300 * 1024 * 1024


def gzip_bomb() -> bytes:
    """About 300 KB of gzip that inflates to 300 MB of JSON-looking text, made a MB at a time."""
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    block = b"0" * (1024 * 1024)
    parts = [packer.compress(b'{"x": "')]
    parts += [packer.compress(block) for _ in range(BOMB_BYTES // len(block))]
    parts.append(packer.compress(b'"}') + packer.flush())
    return b"".join(parts)


class FakeProvider:
    """Serves ``POST /v1/chat/completions`` on 127.0.0.1 in a background thread."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.port = free_port()
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def chat(request: Request):
            body = await request.json()
            self.requests.append({"body": body, "authorization": request.headers.get("authorization")})
            if body.get("model") == BOMB_MODEL:
                return Response(gzip_bomb(), media_type="application/json", headers={"content-encoding": "gzip"})
            if body.get("stream"):
                # Gzipped, as providers behind a compressing proxy send their streams.
                chunk = {"id": "remote-1", "object": "chat.completion.chunk", "model": body.get("model"),
                         "choices": [{"index": 0, "delta": {"content": ANSWER}, "finish_reason": "stop"}]}
                events = f"data: {json.dumps(chunk)}\n\ndata: [DONE]\n\n".encode()
                return Response(gzip.compress(events), media_type="text/event-stream",
                                headers={"content-encoding": "gzip"})
            return {
                "id": "remote-1", "object": "chat.completion", "created": int(time.time()),
                "model": body.get("model"),
                "choices": [{"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9},
            }

        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> "FakeProvider":
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(5)
