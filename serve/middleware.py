"""ASGI middleware of the ingress: API keys, body-size limit, last-resort error envelope.

They are plain ASGI classes (no BaseHTTPMiddleware) so streaming responses pass through
untouched and a rejected request is answered before its body is read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from typing import Callable, Iterable, Optional

from starlette.exceptions import HTTPException as StarletteHTTPException

from serve.kernel.errors import error_body

logger = logging.getLogger("ray.serve")

# Paths anyone may call: liveness must work for probes that hold no key.
PUBLIC_PATHS = frozenset({"/healthz"})


async def _send_error(send, status: int, message: str, *, code: str | None = None, headers: Iterable[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(error_body(status, message, code=code)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def is_admin_route(method: str, path: str) -> bool:
    """Operator actions: with keys configured they need an admin key (a keys-file line
    ``<key> admin``, or the only key). Putting a model to sleep or waking it (a model id
    may hold slashes: ``/v1/models/{model:path}/sleep``) and dropping a collection."""
    if method == "POST" and path.startswith("/v1/models/"):
        return path.endswith(("/sleep", "/wake"))
    if method == "DELETE" and path.startswith("/v1/collections/"):
        return "/" not in path[len("/v1/collections/"):]
    return False


KeySource = frozenset[str] | Callable[[], frozenset[str]]


#: Where a request's owner (a digest of its API key) is kept in ``request.state``.
KEY_OWNER = "key_owner"


def key_owner(token: bytes) -> str:
    """Who owns what a request stores (stored responses): a digest of its API key, so the
    key itself is never stored; "" on a graph without keys."""
    return hashlib.sha256(b"llmgraph-owner:" + token).hexdigest()[:32] if token else ""


class ApiKeyMiddleware:
    """Requires ``Authorization: Bearer <key>`` when keys are configured, and an admin
    key for the routes of :func:`is_admin_route` (403 ``admin_required`` otherwise).

    Args:
        keys: The keys, or a function that reads them. The ingress passes the function,
            so the keys are read inside the replica on its first request and are never
            part of the pickled app.
        admins: The admin keys, likewise; None: the only key when there is one.
    """

    def __init__(self, app, *, keys: KeySource, admins: KeySource | None = None) -> None:
        self.app = app
        self._source = keys
        self._admin_source = admins
        self._loaded: tuple[tuple[bytes, ...], tuple[bytes, ...]] | None = None

    def _load(self) -> tuple[tuple[bytes, ...], tuple[bytes, ...]]:
        if self._loaded is None:
            keys = self._source() if callable(self._source) else self._source
            if self._admin_source is None:
                admins = keys if len(keys) == 1 else frozenset()
            else:
                admins = self._admin_source() if callable(self._admin_source) else self._admin_source
            self._loaded = (tuple(k.encode() for k in keys), tuple(k.encode() for k in admins))
        return self._loaded

    @property
    def _keys(self) -> tuple[bytes, ...]:
        return self._load()[0]

    @staticmethod
    def _matches(token: bytes, keys: tuple[bytes, ...]) -> bool:
        # Compare against every key so timing does not reveal which one nearly matched.
        ok = False
        for key in keys:
            ok |= secrets.compare_digest(token, key)
        return ok

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self._keys or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        token = b""
        for name, value in scope.get("headers", []):
            if name.lower() == b"authorization" and value[:7].lower() == b"bearer ":
                token = value[7:].strip()
            elif name.lower() == b"x-api-key" and not token:  # what Anthropic clients send
                token = value.strip()
        keys, admins = self._load()
        if not self._matches(token, keys):
            return await _send_error(
                send, 401, "missing or invalid API key (send Authorization: Bearer <key>, or x-api-key: <key>)",
                headers=[(b"www-authenticate", b"Bearer")],
            )
        scope.setdefault("state", {})[KEY_OWNER] = key_owner(token)
        if is_admin_route(scope.get("method", ""), scope["path"]) and not self._matches(token, admins):
            return await _send_error(
                send, 403, "this operator action needs an admin key (a keys-file line '<key> admin')",
                code="admin_required",
            )
        return await self.app(scope, receive, send)


#: Total request header bytes accepted (nginx's default buffers hold 32 KiB).
MAX_HEADER_BYTES = 32 * 1024


class HeaderLimitMiddleware:
    """Answers 431 when the request's headers total more than ``max_bytes``.

    Serve's proxy passes headers of any size on; every one of them is copied into each
    hop's request context and logs, so an oversized set is refused at the door.
    """

    def __init__(self, app, *, max_bytes: int) -> None:
        self.app = app
        self._max = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            size = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
            if size > self._max:
                return await _send_error(send, 431, f"request headers total {size} bytes; the limit is {self._max}")
        return await self.app(scope, receive, send)


class _BodyTooLarge(StarletteHTTPException):
    """Raised while the body streams in; an HTTPException so FastAPI's body parser
    passes it on (it turns other errors into a generic 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds the limit of {limit} bytes")


class BodyLimitMiddleware:
    """Answers 413 for bodies over ``max_bytes``, declared or streamed; the paths in
    ``larger`` (an exact path: the file upload) have a limit of their own."""

    def __init__(self, app, *, max_bytes: int, larger: Optional[dict[str, int]] = None) -> None:
        self.app = app
        self._default = max_bytes
        self._larger = dict(larger or {})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self._larger.get(scope.get("path", ""), self._default)
        for name, value in scope.get("headers", []):
            if name.lower() == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    return await _send_error(send, 400, "invalid Content-Length header")
                if declared > limit:
                    return await self._reject(send, limit)
        seen = 0
        started = False

        async def limited_receive():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(limit)
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send, limit)

    @staticmethod
    async def _reject(send, limit: int):
        await _send_error(send, 413, f"request body exceeds the limit of {limit} bytes")


class CatchAllMiddleware:
    """Last resort: an exception no handler took becomes a scrubbed 500 envelope."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # noqa: BLE001 - this is the boundary; log and answer
            request_id = dict(scope.get("headers", [])).get(b"x-request-id", b"-").decode(errors="replace")
            logger.exception("unhandled error in request %s %s", request_id, scope.get("path"))
            if not started:
                await _send_error(
                    send, 500,
                    f"The server could not complete the request (request id {request_id}).",
                    code="internal_error",
                )
