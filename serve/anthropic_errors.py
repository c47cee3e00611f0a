"""Errors of the Anthropic routes in Anthropic's shape.

The graph's errors are made once, in the OpenAI envelope (``serve/kernel/errors.py``).
Anthropic clients read ``{"type": "error", "error": {"type": ..., "message": ...}}``,
so this middleware rewrites the envelope of every error answer under ``/v1/messages``,
those of the other middleware (authentication, body limits) included. Status codes and
headers (``Retry-After``) are kept; the message was already scrubbed.
"""

from __future__ import annotations

import json

ANTHROPIC_PATHS = ("/v1/messages",)

#: Anthropic's error types by status.
ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error",
}


def anthropic_error(status: int, body: bytes) -> bytes:
    """The Anthropic error body for an OpenAI envelope ``body`` sent with ``status``."""
    try:
        message = json.loads(body)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = "the request failed"
    kind = ERROR_TYPES.get(status, "invalid_request_error" if 400 <= status < 500 else "api_error")
    return json.dumps({"type": "error", "error": {"type": kind, "message": message}}).encode()


class AnthropicErrorMiddleware:
    """Rewrites error answers of the Anthropic routes (non-error answers pass untouched)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not scope["path"].startswith(ANTHROPIC_PATHS):
            return await self.app(scope, receive, send)
        start: dict = {}
        chunks: list[bytes] = []

        async def rewrite(message):
            if message["type"] == "http.response.start" and message["status"] >= 400:
                start.update(message)
                return
            if not start:
                return await send(message)
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = anthropic_error(start["status"], b"".join(chunks))
                headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
                await send({**start, "headers": headers + [(b"content-length", str(len(body)).encode())]})
                await send({"type": "http.response.body", "body": body})

        return await self.app(scope, receive, rewrite)
