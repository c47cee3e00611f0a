"""Hostile input through HTTP: each case answered within its bound with a 2xx or a 4xx
envelope, a normal request answered meanwhile, and nothing already stored lost.

The cases are what a scraped page or a careless client sends (blank-line floods, lines
of amounts, JSON-LD nested a thousand deep, schemas that point at URLs). Every answer
is checked; the session fixture also fails the run if any request got a 5xx.
"""

from __future__ import annotations

import concurrent.futures
import json
import time

import pytest

from deployments.extraction.schemas import caller_validator
from tests.support.models import EXTRACTOR
from tests.unit.test_hostile_scans import _Listener, remote_ref_schemas

pytestmark = pytest.mark.integration

#: Generous on purpose: the graph shares two cores with the test run. A quadratic or
#: cubic scan at these sizes takes minutes, and the client gives up at 120 s.
BOUND_S = 30.0
KEEP = {"id": "keep-me", "text": "The annual report of the hostile-input suite.", "metadata": {"suite": "hostile"}}


def _page(jsonld: str, body: str = "<h1>Platform Engineer</h1>") -> str:
    return f'<html><head><script type="application/ld+json">{jsonld}</script></head><body>{body}</body></html>'


def _nested_jsonld(depth: int) -> str:
    return '{"@type": "JobPosting", "title": "Platform Engineer", "x": ' + "[" * depth + "1" + "]" * depth + "}"


EXTRACT_CASES = {
    "20,000 blank lines": {"document": "Platform Engineer\n" + "\n" * 20_000 + "Location: Berlin"},
    "a 100 KB line of amounts": {"document": "Platform Engineer\n" + "$1 " * 33_000},
    "a 400 KB JSON-LD description": {
        "document": _page(json.dumps({"@type": "JobPosting", "title": "Platform Engineer", "description": "$1 pay " * 60_000})),
        "content_type": "text/html",
    },
    "JSON-LD nested 900 levels": {"document": _page(_nested_jsonld(900)), "content_type": "text/html"},
    "JSON-LD nested 100,000 levels": {"document": _page(_nested_jsonld(100_000)), "content_type": "text/html"},
    "a 20 KB Posted: value": {"document": "Platform Engineer\nPosted: " + "12 March 2025 " * 1500},
    "a backtracking pattern over 40 a's": {
        "document": "a" * 40, "mode": "llm",
        "schema": {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a|a)*c$|^a{1,40}$"}},
                   "required": ["a"]},
    },
    "a recursive $ref": {
        "document": "Platform Engineer", "mode": "llm",
        "schema": {"type": "object", "properties": {"next": {"$ref": "#"}}},
    },
    "a schema pattern of 60,000 braces": {
        "document": "Platform Engineer", "mode": "llm",
        "schema": {"type": "object", "properties": {"a": {"type": "string", "pattern": "{" * 60_000}}},
    },
}


@pytest.fixture(scope="module")
def stored(http):
    """A document stored before the hostile requests, checked after each one."""
    assert http.post("/v1/collections/hostile/documents", json={"documents": [KEEP]}).status_code == 200
    yield
    http.delete("/v1/collections/hostile")


def _answered_in_bound(http, method: str, path: str, **kwargs):
    started = time.monotonic()
    response = http.request(method, path, **kwargs)
    elapsed = time.monotonic() - started
    assert elapsed < BOUND_S, f"{path} took {elapsed:.1f} s"
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and "Traceback" not in error["message"]
    return response


def _still_fine(http) -> None:
    assert http.get("/v1/collections/hostile/documents/keep-me").json()["text"] == KEEP["text"]
    normal = http.post("/v1/extract", json={"document": "Barista\nLocation: Oakland, CA", "mode": "fast"})
    assert normal.status_code == 200 and normal.json()["data"]["title"] == "Barista"


@pytest.mark.parametrize("body", EXTRACT_CASES.values(), ids=EXTRACT_CASES.keys())
def test_hostile_documents_get_an_answer_in_bound(http, stored, body):
    response = _answered_in_bound(http, "POST", "/v1/extract", json={"mode": "fast", **body})
    if response.status_code == 200 and "schema" in body:
        assert caller_validator(body["schema"]).is_valid(response.json()["data"])
    elif response.status_code == 200:
        assert response.json()["data"]["title"] == "Platform Engineer"
    _still_fine(http)


def test_hostile_batch_items_are_answered_one_by_one(http, stored):
    documents = [body["document"] for body in EXTRACT_CASES.values() if "schema" not in body]
    response = _answered_in_bound(http, "POST", "/v1/extract/batch", json={"documents": documents, "mode": "fast"})
    assert response.status_code == 200
    assert all(item["status"] < 500 for item in response.json()["results"])
    _still_fine(http)


def test_a_20000_newline_route_does_not_hold_up_other_requests(http):
    """The flood goes to /v1/route while other clients call; all answer in bound."""
    flood = {"model": "auto", "messages": [{"role": "user", "content": "\n" * 20_000 + "Why?"}]}
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        floods = [pool.submit(_answered_in_bound, http, "POST", "/v1/route", json=flood) for _ in range(2)]
        others = [pool.submit(_answered_in_bound, http, "GET", "/v1/models") for _ in range(4)]
        assert all(f.result().status_code == 200 for f in floods + others)


def test_no_schema_a_request_carries_makes_the_server_connect(http):
    """Schemas pointing at a loopback listener, through extraction and through chat."""
    listener = _Listener()
    try:
        for schema in remote_ref_schemas(listener.port):
            response = _answered_in_bound(http, "POST", "/v1/extract",
                                          json={"document": "Platform Engineer", "mode": "llm", "schema": schema})
            assert response.status_code == 422 and response.json()["error"]["code"] == "unsupported_schema"
            _answered_in_bound(http, "POST", "/v1/chat/completions", json={
                "model": EXTRACTOR, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
            })
        time.sleep(0.5)
        assert listener.connections == 0
    finally:
        listener.close()


def test_hostile_collection_writes_lose_nothing(http, stored):
    for documents in (
        [{"id": "nan", "text": "x", "metadata": {"v": float("nan")}}],
        [{"id": "deep", "text": "x", "metadata": json.loads("[" * 900 + "]" * 900)}],
        [{"id": "keep-me", "text": ""}],
    ):
        body = json.dumps({"documents": documents}, allow_nan=True)
        response = _answered_in_bound(http, "POST", "/v1/collections/hostile/documents", content=body,
                                      headers={"content-type": "application/json"})
        assert response.status_code == 400
        _still_fine(http)
    response = _answered_in_bound(http, "POST", "/v1/collections/hostile/search",
                                  json={"query": "annual report", "filter": {"$or": [{"suite": {"$in": ["x"] * 10_000}}]}})
    assert response.status_code in (200, 400)
    _still_fine(http)


def test_a_body_nested_100000_levels_is_a_400(http):
    body = '{"model": "auto", "messages": ' + "[" * 100_000 + "]" * 100_000 + "}"
    response = _answered_in_bound(http, "POST", "/v1/chat/completions", content=body,
                                  headers={"content-type": "application/json"})
    assert response.status_code == 400


def _nested_block(depth: int) -> dict:
    block: dict = {"type": "text", "text": "x"}
    for _ in range(depth):
        block = {"type": "tool_result", "tool_use_id": "t", "content": [block]}
    return block


#: Hostile bodies for the Anthropic and Responses routes: (path, body).
API_CASES = {
    "content blocks nested 400 deep": ("/v1/messages", {"model": "auto", "max_tokens": 4, "messages": [
        {"role": "user", "content": [_nested_block(400)]}]}),
    "a tool input nested 900 deep": ("/v1/messages", {"model": "auto", "max_tokens": 4, "messages": [
        {"role": "user", "content": "x"}, {"role": "assistant", "content": [
            {"type": "tool_use", "id": "t", "name": "f", "input": json.loads('{"a": ' * 900 + "1" + "}" * 900)}]},
        {"role": "user", "content": "y"}]}),
    "10,000 tools": ("/v1/messages", {"model": "auto", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}],
                                      "tools": [{"name": f"f{i}", "input_schema": {"type": "object"}} for i in range(10_000)]}),
    "100,000 content blocks": ("/v1/messages", {"model": "auto", "max_tokens": 4, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "a"}] * 100_000}]}),
    "100,000 input parts": ("/v1/responses", {"model": "auto", "max_output_tokens": 4, "input": [
        {"role": "user", "content": [{"type": "input_text", "text": "a"}] * 100_000}]}),
    "10,000 responses tools": ("/v1/responses", {"model": "auto", "input": "x", "tools": [
        {"type": "function", "name": f"f{i}"} for i in range(10_000)]}),
    "metadata of 10,000 pairs": ("/v1/responses", {"model": "auto", "input": "x",
                                                   "metadata": {f"k{i}": "v" for i in range(10_000)}}),
}


@pytest.mark.parametrize("case", API_CASES.values(), ids=API_CASES.keys())
def test_hostile_api_bodies_are_answered_in_bound(http, stored, case):
    path, body = case
    started = time.monotonic()
    response = http.post(path, json=body)
    elapsed = time.monotonic() - started
    assert elapsed < BOUND_S, f"{path} took {elapsed:.1f} s"
    assert response.status_code < 500, response.text[:300]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["message"] and "Traceback" not in error["message"]
    _still_fine(http)
