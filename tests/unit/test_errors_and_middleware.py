"""The error envelope, scrubbing, API keys and the body limit, on a small FastAPI app."""

from __future__ import annotations

from typing import Union

import pytest
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient
from pydantic import BaseModel

from serve.kernel.errors import BadRequest, Unavailable, client_message, install_error_handlers
from serve.middleware import ApiKeyMiddleware, BodyLimitMiddleware, CatchAllMiddleware


class Body(BaseModel):
    n: int


class Stops(BaseModel):
    stop: Union[str, list[str]]


def make_app(keys=frozenset(), max_bytes=1024, larger=None) -> TestClient:
    from serve.kernel.ray_private import OpenAIHTTPException

    app = FastAPI()
    install_error_handlers(app)
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_bytes, larger=larger)
    app.add_middleware(ApiKeyMiddleware, keys=keys)
    app.add_middleware(CatchAllMiddleware)

    @app.post("/echo")
    async def echo(body: Body):
        return {"n": body.n}

    @app.post("/upload")
    async def upload(request: Request):
        return {"bytes": len(await request.body())}

    @app.get("/bad")
    async def bad():
        raise BadRequest("k must be positive", param="k")

    @app.get("/engine-400")
    async def engine_400():
        raise OpenAIHTTPException(400, "Message: prompt too long, Internal exception: secret/path.py line 3", type="BadRequestError")

    @app.get("/engine-500")
    async def engine_500():
        raise OpenAIHTTPException(500, "CUDA error at /opt/secret/kernel.cu")

    @app.get("/crash")
    async def crash():
        raise RuntimeError("database password is hunter2")

    @app.get("/busy")
    async def busy():
        raise Unavailable("warming up", headers={"Retry-After": "5"})

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return TestClient(app, raise_server_exceptions=False)


def envelope(response):
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


def test_typed_error_maps_status_type_param():
    r = make_app().get("/bad")
    assert r.status_code == 400
    assert envelope(r) == {"message": "k must be positive", "type": "invalid_request_error", "param": "k", "code": "invalid_request"}


def test_validation_error_is_400_naming_the_field():
    r = make_app().post("/echo", json={"n": "many"})
    assert r.status_code == 400
    error = envelope(r)
    assert error["param"] == "n" and error["message"].startswith("n:")


def test_a_union_field_is_named_as_the_client_wrote_it():
    app = FastAPI()
    install_error_handlers(app)

    @app.post("/stops")
    async def stops(body: Stops):
        return {}

    error = envelope(TestClient(app).post("/stops", json={"stop": 5}))
    assert error["param"] == "stop", "pydantic's union member tags (str, list[str]) are not the client's field"


def test_invalid_json_is_400():
    r = make_app().post("/echo", content=b"{", headers={"content-type": "application/json"})
    assert r.status_code == 400 and envelope(r)["message"] == "request body is not valid JSON"


def test_engine_client_errors_are_scrubbed():
    r = make_app().get("/engine-400")
    assert r.status_code == 400
    assert envelope(r)["message"] == "prompt too long"


@pytest.mark.parametrize("path", ["/engine-500", "/crash"])
def test_server_errors_never_leak_internals(path):
    r = make_app().get(path, headers={"x-request-id": "req-123"})
    assert r.status_code == 500
    error = envelope(r)
    assert "secret" not in error["message"] and "hunter2" not in error["message"]
    assert "req-123" in error["message"]
    assert error["type"] == "server_error" and error["code"] == "internal_error"


def test_503_keeps_headers():
    r = make_app().get("/busy")
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert envelope(r)["code"] == "service_unavailable"


def test_api_keys_required_when_configured():
    client = make_app(keys=frozenset({"k1", "k2"}))
    assert client.post("/echo", json={"n": 1}).status_code == 401
    assert envelope(client.post("/echo", json={"n": 1}, headers={"Authorization": "Bearer nope"}))["code"] == "invalid_api_key"
    assert client.post("/echo", json={"n": 1}, headers={"Authorization": "Bearer k2"}).json() == {"n": 1}
    assert client.get("/healthz").status_code == 200, "liveness stays public"


def test_no_keys_means_open():
    assert make_app().post("/echo", json={"n": 3}).json() == {"n": 3}


def test_body_limit_declared_and_streamed():
    client = make_app(max_bytes=64)
    big = b'{"n": 1, "pad": "' + b"x" * 100 + b'"}'
    r = client.post("/echo", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and envelope(r)["code"] == "request_too_large"

    def chunks():
        yield b'{"n": 1, "pad": "'
        yield b"x" * 100
        yield b'"}'

    r = client.post("/echo", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert client.post("/echo", json={"n": 2}).status_code == 200


def test_the_upload_path_has_a_limit_of_its_own_and_no_other_path_gains_it():
    client = make_app(max_bytes=64, larger={"/upload": 1000})
    assert client.post("/upload", content=b"x" * 900).json() == {"bytes": 900}
    too_big = client.post("/upload", content=b"x" * 1001)
    assert too_big.status_code == 413 and "1000 bytes" in envelope(too_big)["message"]
    assert client.post("/upload/", content=b"x" * 900).status_code == 413, "an exact path, not a prefix"
    assert client.post("/echo", content=b"x" * 900, headers={"content-type": "application/json"}).status_code == 413


def test_client_message_bounds_length():
    assert len(client_message("x" * 5000)) == 1000
    assert client_message("Message: fine") == "fine"


def test_serve_handle_errors_become_typed_errors():
    from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

    from serve.kernel.errors import RateLimited, Unavailable, typed_handle_errors

    with pytest.raises(RateLimited) as err:
        with typed_handle_errors():
            raise BackPressureError(num_queued_requests=9, max_queued_requests=8, status_code=429, retry_after_s=1.5)
    assert err.value.status_code == 429 and err.value.headers == {"Retry-After": "2"}
    assert err.value.code == "overloaded"
    with pytest.raises(Unavailable):
        with typed_handle_errors():
            raise DeploymentUnavailableError("Router")


def test_batch_items_are_scrubbed_like_whole_requests():
    """A batch item that failed with provider text (a 503 from the remote hop, a crash)
    carries the same generic message as a whole request would, never the internal text."""
    from serve.kernel.errors import failure_envelope

    def _failure(exc, request_id, index):
        return failure_envelope(exc, request_id=request_id, where=f"/v1/extract/batch documents[{index}]")

    provider_text = "remote provider unreachable: ConnectError('10.0.0.7:443 secret-token')"
    status, body = _failure(Unavailable(provider_text, code="service_unavailable"), "req-1", 3)
    assert status == 503 and "secret" not in str(body) and "10.0.0.7" not in str(body)
    assert "req-1" in body["error"]["message"]
    status, body = _failure(RuntimeError("/home/user/.cache/model: permission denied"), "req-2", 0)
    assert status == 500 and body["error"]["code"] == "internal_error" and "/home" not in str(body)
    status, body = _failure(BadRequest("documents[0].mode: bad", param="documents[0].mode"), "req-3", 0)
    assert status == 400 and body["error"]["message"] == "documents[0].mode: bad"


def test_oversized_request_headers_are_a_431_envelope():
    from serve.middleware import HeaderLimitMiddleware

    app = FastAPI()
    app.add_middleware(HeaderLimitMiddleware, max_bytes=4096)

    @app.get("/ok")
    async def ok():
        return {"ok": True}

    client = TestClient(app)
    assert client.get("/ok", headers={"x-note": "a" * 1000}).status_code == 200
    response = client.get("/ok", headers={"x-note": "a" * 200_000})
    assert response.status_code == 431
    assert envelope(response)["code"] == "request_headers_too_large"


def test_unknown_chat_roles_are_found():
    from serve.kernel.protocol import unknown_role

    assert unknown_role([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]) is None
    assert unknown_role([{"role": "user", "content": "u"}, {"role": "hacker", "content": "x"}]) == (1, "hacker")
    assert unknown_role([{"content": "no role"}]) == (0, "None")


def test_a_stalled_handle_call_becomes_a_retryable_503():
    import asyncio

    from serve.kernel.errors import within

    async def stalled():
        await asyncio.sleep(60)

    with pytest.raises(Unavailable) as stalled_call:
        asyncio.run(within(stalled(), 0.1, "the embedder"))
    assert stalled_call.value.code == "timeout" and stalled_call.value.headers == {"Retry-After": "5"}

    async def quick():
        return 7

    assert asyncio.run(within(quick(), 1, "the embedder")) == 7


def test_typed_errors_cross_a_handle_as_values_intact():
    """A batch chunk's results carry each document's error as a value (pickled by Ray)."""
    import pickle

    import cloudpickle

    import serve.kernel.errors as errors

    kinds = [cls for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.GraphError)]
    assert len(kinds) >= 6
    for cls in kinds:
        sent = cls("no title found", param="document", code="extraction_failed")
        got = pickle.loads(cloudpickle.dumps([sent]))[0]
        assert (type(got), got.message, got.param, got.code, got.status_code) == (
            cls, sent.message, sent.param, sent.code, sent.status_code)


def test_a_batch_goes_to_extraction_in_a_few_chunks():
    from serve.services.extraction import MAX_CHUNK, chunk_size

    assert chunk_size(100, 4) == MAX_CHUNK == 8  # 13 calls instead of 100
    assert chunk_size(100, 16) == 4  # about two chunks per slot: 25 calls
    assert chunk_size(3, 4) == 1 and chunk_size(0, 4) == 1
