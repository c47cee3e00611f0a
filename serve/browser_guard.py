"""Keep web pages away from a keyless graph on loopback.

With no API keys, anything that can reach 127.0.0.1 may call the graph: that includes a
web page open in the user's browser. A page cannot read our answers (we send no CORS
headers), but it can *send* "simple" requests, a form-encoded or bodiless POST among them
(sleep a model, write a collection), and through DNS rebinding it can make its own
hostname resolve to 127.0.0.1 and read answers as a same-origin page.

So, while no keys are configured, the graph refuses:

* a request whose ``Origin`` is not a loopback page (a foreign web page);
* a request whose ``Host`` is not a loopback name or address (DNS rebinding), unless
  the operator chose keyless exposure (``LLMGRAPH_ALLOW_UNAUTHENTICATED``), where other
  hostnames are expected;
* a POST that a browser could send without asking first: no JSON ``Content-Type`` and
  no header a page cannot set without a CORS preflight (``Authorization``, ``x-...``).
  Every client library sends JSON; ``curl -X POST`` needs ``-H 'Content-Type: application/json'``.

With keys, the key is the guard (a page does not have it) and this middleware stands aside.
"""

from __future__ import annotations

from typing import Callable, Optional
from urllib.parse import urlsplit

from serve.exposure import is_loopback
from serve.middleware import _send_error

#: Headers a page may send without a preflight are few; these prove there was none.
_PREFLIGHTED = (b"authorization", b"x-api-key")
#: ``x-`` headers that prove nothing: Ray Serve's proxy adds ``x-request-id`` to every
#: request before the ingress sees it (``RequestIdMiddleware``).
_ADDED_BY_PROXY = (b"x-request-id",)


def _host_of(value: bytes) -> Optional[str]:
    """The hostname in a ``Host`` header or an ``Origin`` URL (None when unreadable)."""
    text = value.decode("latin-1").strip()
    try:
        return urlsplit(text if "//" in text else f"//{text}").hostname
    except ValueError:
        return None


def _json_media_type(value: bytes) -> bool:
    media = value.split(b";", 1)[0].strip().lower()
    return media == b"application/json" or media.endswith(b"+json")


class BrowserGuardMiddleware:
    """The checks above, while no API keys are configured.

    Args:
        keys: The API-key source of :class:`~serve.middleware.ApiKeyMiddleware` (a
            function read inside the replica, or a set).
        any_host: Keyless exposure was chosen: accept any ``Host``.
    """

    def __init__(self, app, *, keys: frozenset[str] | Callable[[], frozenset[str]], any_host: bool) -> None:
        self.app = app
        self._source = keys
        self._any_host = any_host
        self._keyless: Optional[bool] = None

    def _guarding(self) -> bool:
        if self._keyless is None:
            keys = self._source() if callable(self._source) else self._source
            self._keyless = not keys
        return self._keyless

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or not self._guarding():
            return await self.app(scope, receive, send)
        refusal = self._refusal(scope)
        if refusal is not None:
            status, code, message = refusal
            return await _send_error(send, status, message, code=code)
        return await self.app(scope, receive, send)

    def _refusal(self, scope) -> Optional[tuple[int, str, str]]:
        headers = scope.get("headers", [])
        origin = host = content_type = None
        preflighted = False
        for name, value in headers:
            name = name.lower()
            if name == b"origin":
                origin = value
            elif name == b"host":
                host = value
            elif name == b"content-type":
                content_type = value
            elif name in _PREFLIGHTED or (name.startswith(b"x-") and name not in _ADDED_BY_PROXY):
                preflighted = True
        if origin is not None and origin.strip() != b"null" and not is_loopback(_host_of(origin) or ""):
            return 403, "foreign_origin", "requests from web pages of other sites are refused (the graph has no API keys)"
        if origin is not None and origin.strip() == b"null":
            return 403, "foreign_origin", "requests from sandboxed or file pages are refused (the graph has no API keys)"
        if not self._any_host and host is not None and not is_loopback(_host_of(host) or ""):
            return 403, "foreign_host", "the Host header does not name this server on loopback (the graph has no API keys)"
        if scope.get("method") == "POST" and not preflighted and not (content_type and _json_media_type(content_type)):
            return 415, "json_required", ("a POST needs Content-Type: application/json (or an x- header) while the "
                                          "graph has no API keys; e.g. curl -H 'Content-Type: application/json'")
        return None
