"""Typed errors and their one mapping to the OpenAI error envelope.

Every error a client sees has the shape ``{"error": {"message", "type", "param",
"code"}}`` and the status of the exception that caused it. Server-side failures (5xx)
never leak internal text: the client gets a generic message and the request id, the
log gets the detail. Client errors (4xx) are logged as warnings, 5xx as errors.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import re
from typing import Any, Iterator, Optional

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

logger = logging.getLogger("ray.serve")

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
    431: "invalid_request_error",
    502: "server_error",
    503: "service_unavailable_error",
}
_CODE_BY_STATUS = {
    400: "invalid_request",
    401: "invalid_api_key",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    422: "unprocessable_entity",
    429: "rate_limited",
    431: "request_headers_too_large",
    502: "model_output_invalid",
    503: "service_unavailable",
}
# Longest client-error message we pass through from an engine.
_MAX_MESSAGE_CHARS = 1000


class GraphError(Exception):
    """Base of the application's errors; subclasses fix the HTTP status."""

    status_code = 500

    def __init__(
        self,
        message: str,
        *,
        param: Optional[str] = None,
        code: Optional[str] = None,
        headers: Optional[dict[str, str]] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code or _CODE_BY_STATUS.get(self.status_code, "internal_error")
        self.headers = headers or {}


class BadRequest(GraphError):
    status_code = 400


class Unauthorized(GraphError):
    status_code = 401


class NotFound(GraphError):
    status_code = 404


class Conflict(GraphError):
    status_code = 409


class PayloadTooLarge(GraphError):
    status_code = 413


class Unprocessable(GraphError):
    status_code = 422


class RateLimited(GraphError):
    status_code = 429


class Unavailable(GraphError):
    status_code = 503


class ModelUnavailable(Unavailable):
    """A model cannot take the request now: it is still waking, failed to wake, or cannot
    fit beside the models in use. The message is ours (model ids, memory figures, what to
    do) and names no internals, so clients see it."""

    public_message = True


class ModelAsleep(ModelUnavailable):
    """The request reached an LLM replica whose engine is not running (asleep, stopped, or
    still starting). The replica answers with this, never with a 500; the dispatcher has
    the residency manager wake the model and tries once more."""

    @classmethod
    def of(cls, model_id: str, retry_after_s: int = 5) -> "ModelAsleep":
        """The error for ``model_id``, with its Retry-After."""
        return cls(f"model {model_id!r} is asleep; the next request that needs it wakes it",
                   param="model", code="model_asleep", headers={"Retry-After": str(retry_after_s)})


class BadGateway(GraphError):
    """An upstream (the remote provider) answered something the graph will not pass on."""

    status_code = 502
    public_message = True


class BadModelOutput(GraphError):
    """The model's output is not the structure the request forced (a JSON schema, a
    named tool call). The message is ours and names no internals, so clients see it."""

    status_code = 502
    public_message = True


@contextlib.contextmanager
def typed_handle_errors() -> Iterator[None]:
    """Turn Ray Serve's handle errors into the application's typed errors.

    Ray Serve installs its own plain-text handlers for these two exceptions on every
    ingress app, so they must be translated where the handle is called, not in a
    FastAPI exception handler.
    """
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    try:
        yield
    except BackPressureError as exc:
        headers = {}
        if exc.retry_after_s is not None:
            headers["Retry-After"] = str(max(math.ceil(exc.retry_after_s), 1))
        raise RateLimited(
            "the server is busy: too many requests are queued; retry later",
            code="overloaded", headers=headers,
        ) from None
    except DeploymentUnavailableError:
        raise Unavailable(
            "a deployment is not available", code="service_unavailable", headers={"Retry-After": "5"}
        ) from None


async def within(awaitable: Any, timeout_s: float, what: str) -> Any:
    """Await a handle call for at most ``timeout_s``: a stalled deployment becomes a
    503 with ``Retry-After`` (code ``timeout``) instead of a request that never ends, and
    Serve's own handle errors become typed errors (:func:`typed_handle_errors`)."""
    try:
        with typed_handle_errors():
            return await asyncio.wait_for(awaitable, timeout_s)
    except asyncio.TimeoutError:
        raise Unavailable(f"{what} did not answer within {timeout_s:g} s", code="timeout",
                          headers={"Retry-After": "5"}) from None


def errors_as_values(method):
    """For a deployment's method: a typed error is returned, not raised, so it crosses the
    handle intact (status, code, Retry-After), where a raised one would arrive wrapped in
    Ray's task error. The caller raises it again with :func:`raise_if_error`."""
    @functools.wraps(method)
    async def wrapper(self, *args, **kwargs):
        try:
            return await method(self, *args, **kwargs)
        except GraphError as exc:
            return exc
    return wrapper


def raise_if_error(value: Any) -> Any:
    """A value from a method under :func:`errors_as_values`: the typed error it carries
    is raised here; anything else is returned."""
    if isinstance(value, GraphError):
        raise value
    return value


def error_reason(exc: BaseException) -> str:
    """The first line of an exception, capped: what went wrong, not where (a database
    driver's later lines name hosts and sockets)."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]


def error_body(
    status: int, message: str, *, param: Optional[str] = None, code: Optional[str] = None
) -> dict[str, Any]:
    """The OpenAI error envelope for ``status``."""
    return {
        "error": {
            "message": message,
            "type": _TYPE_BY_STATUS.get(status, "server_error" if status >= 500 else "invalid_request_error"),
            "param": param,
            "code": code or _CODE_BY_STATUS.get(status, "internal_error"),
        }
    }


# Text that engines and Ray Serve LLM append to messages and that must not reach clients.
_INTERNAL_TAIL = re.compile(r"(,\s*)?(Internal exception|original exception|Traceback)\b.*", re.S)


def client_message(message: str) -> str:
    """A client-safe version of an engine's 4xx message (no internals, bounded)."""
    text = _INTERNAL_TAIL.sub("", str(message)).strip()
    text = text.removeprefix("Message: ").strip()
    return text[:_MAX_MESSAGE_CHARS] or "invalid request"


def _request_id(request: Request) -> str:
    return request.headers.get("x-request-id", "-")


def public_error(status: int, message: str, *, code: Optional[str], exc: Any, request_id: str, where: str) -> tuple[str, Optional[str]]:
    """Log an error and return the message and code a client may see of it.

    The one place 5xx text is scrubbed, for whole requests and for batch items alike:
    internal text (a provider's error, an exception's repr) goes to the log only.

    Args:
        where: What failed, for the log (a path, or a path and a batch index).
    """
    if status >= 500 and getattr(exc, "public_message", False):
        logger.error("request %s %s failed with %s: %s", request_id, where, status, message)
        return f"{message} (request id {request_id})", code
    if status >= 500:
        logger.error("request %s %s failed with %s: %s", request_id, where, status, message, exc_info=exc)
        if status == 503:
            return f"The service is temporarily unavailable (request id {request_id}); retry later.", code
        return f"The server could not complete the request (request id {request_id}).", "internal_error"
    logger.warning("request %s %s -> %s: %s", request_id, where, status, message)
    return message, code


def failure_envelope(exc: BaseException, *, request_id: str, where: str) -> tuple[int, dict[str, Any]]:
    """A failed item's status and error envelope (a line of a batch, a document of an
    extraction batch): its typed error as it is, a client error from vLLM as vLLM said
    it, anything else a 500 whose text is scrubbed as a request's would be."""
    from serve.kernel.ray_private import OpenAIHTTPException

    if isinstance(exc, GraphError):
        status, message, param, code = exc.status_code, exc.message, exc.param, exc.code
    elif isinstance(exc, OpenAIHTTPException) and 400 <= int(exc.status_code) < 500:
        status, message, param, code = int(exc.status_code), client_message(exc.message), None, None
    else:
        status, message, param, code = 500, repr(exc), None, None
    message, code = public_error(status, message, code=code, exc=exc, request_id=request_id, where=where)
    return status, error_body(status, message, param=param, code=code)


def error_response(request: Request, status: int, message: str, *, param=None, code=None, headers=None, exc=None) -> JSONResponse:
    """Build the envelope response, log it, and scrub 5xx text."""
    message, code = public_error(status, message, code=code, exc=exc, request_id=_request_id(request), where=request.url.path)
    return JSONResponse(
        status_code=status,
        content=error_body(status, message, param=param, code=code),
        headers=headers,
    )


#: Pydantic names the member of a union it tried in an error's location (``stop.list[str]``);
#: a client knows the field, not our type annotations.
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "list", "dict", "none", "bytes"})


def _union_member(part: Any) -> bool:
    return isinstance(part, str) and (part in _TYPE_TAGS or ("[" in part and part.endswith("]")))


def validation_problem(errors: list[dict[str, Any]], prefix: str = "") -> tuple[str, Optional[str]]:
    """The message and ``param`` of the first pydantic error, its location under ``prefix``.

    The one formatting of validation errors for the request body and for the parts the
    ingress validates itself (``retrieval``, a batch's ``documents[i]``).
    """
    if not errors:
        return "invalid request body", prefix or None
    first = errors[0]
    if first.get("type") == "json_invalid":
        return "request body is not valid JSON", None
    loc = [str(p) for p in first.get("loc", ()) if p != "body" and not _union_member(p)]
    param = ".".join(filter(None, [prefix, *loc])) or None
    msg = str(first.get("msg", "invalid value"))
    return (f"{param}: {msg}" if param else msg), param


def _validation_message(exc: RequestValidationError) -> tuple[str, Optional[str]]:
    return validation_problem(exc.errors())


def install_error_handlers(app: FastAPI) -> None:
    """Map every exception reaching ``app`` to the OpenAI envelope."""
    from serve.kernel.ray_private import OpenAIHTTPException

    @app.exception_handler(GraphError)
    async def _graph_error(request: Request, exc: GraphError):
        return error_response(
            request, exc.status_code, exc.message, param=exc.param, code=exc.code,
            headers=exc.headers, exc=exc,
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return error_response(request, 400, message, param=param)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):
        return error_response(request, exc.status_code, str(exc.detail), headers=getattr(exc, "headers", None), exc=exc)

    @app.exception_handler(OpenAIHTTPException)
    async def _engine_error(request: Request, exc: OpenAIHTTPException):
        # Errors the engine returned (vLLM's validation, timeouts): keep the status,
        # pass only the client-safe part of the message.
        status = int(exc.status_code)
        return error_response(request, status, client_message(exc.message), exc=exc)

    from ray.exceptions import RayActorError

    try:
        from vllm.exceptions import GenerationError, VLLMClientError
    except ImportError:  # pragma: no cover - vllm is part of both install profiles
        GenerationError = VLLMClientError = None

    if GenerationError is not None:

        @app.exception_handler(GenerationError)
        async def _generation_failed(request: Request, exc: Exception):
            # The engine ended the generation itself (e.g. its grammar could not continue
            # a forced structure): the model's output failed, not the server.
            failure = BadModelOutput("the engine stopped the generation: the model's output could not continue "
                                     "the structure the request forces; retry, or relax the schema or max_tokens")
            return error_response(request, failure.status_code, failure.message, code=failure.code, exc=failure)

    if VLLMClientError is not None:

        @app.exception_handler(VLLMClientError)
        async def _engine_validation(request: Request, exc: Exception):
            # vLLM's request validation raised while preparing the request: a client error.
            message = exc.args[0] if exc.args else str(exc)
            return error_response(request, 400, client_message(message), param=getattr(exc, "parameter", None))

    @app.exception_handler(RayActorError)
    async def _replica_died(request: Request, exc: RayActorError):
        # The replica serving this request died (crash, OOM, kill). Serve restarts it
        # through health checks; the request itself is safe to retry.
        return error_response(request, 503, repr(exc), code="service_unavailable", headers={"Retry-After": "5"}, exc=exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        return error_response(request, 500, repr(exc), exc=exc)
