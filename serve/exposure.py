"""Refuse to serve beyond loopback without API keys.

``serve_config.yaml`` binds to 127.0.0.1. Someone who changes that to ``0.0.0.0`` (or
deploys to a cluster) without configuring keys would publish free LLM inference to their
network; the graph refuses to start instead, unless told explicitly that this is wanted.
"""

from __future__ import annotations

import ipaddress
import logging
from typing import Optional

from serve.kernel.settings import Settings

logger = logging.getLogger("ray.serve")


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_problem(host: Optional[str], settings: Settings) -> Optional[str]:
    """Why serving on ``host`` with ``settings`` is refused (None when it is fine).

    Fails closed: when the bind address could not be read (``host`` None), only keys or
    an explicit ``LLMGRAPH_ALLOW_UNAUTHENTICATED`` let the graph start.
    """
    if settings.api_key_set or settings.allow_unauthenticated:
        return None
    if host is None:
        return ("the HTTP proxy's bind address could not be read, so the graph cannot tell that it listens on "
                "loopback only, and no API keys are configured: set LLMGRAPH_API_KEYS or LLMGRAPH_API_KEYS_FILE, "
                "or set LLMGRAPH_ALLOW_UNAUTHENTICATED=true")
    if is_loopback(host):
        return None
    return (
        f"the HTTP proxy listens on {host!r}, beyond loopback, but no API keys are "
        "configured: set LLMGRAPH_API_KEYS or LLMGRAPH_API_KEYS_FILE, or set "
        "LLMGRAPH_ALLOW_UNAUTHENTICATED=true to serve without authentication"
    )


def serve_http_host() -> Optional[str]:
    """The host Serve's HTTP proxies bind to, asked of the running Serve controller."""
    from serve.kernel.ray_private import serve_http_options

    try:
        return str(serve_http_options().host)
    except Exception as exc:  # noqa: BLE001 - unknown: exposure_problem fails closed on None
        logger.warning("could not read Serve's HTTP options: %r", exc)
        return None
