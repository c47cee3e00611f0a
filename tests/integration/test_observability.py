"""Watching the graph: custom metrics on Ray's endpoint, JSON logs, request ids."""

from __future__ import annotations

import time
import uuid

import pytest

from serve.kernel.config import load_profile
from tests.support.graph import metrics_text, replica_log_records
from tests.support.models import EXTRACTOR, PROFILE

PROFILE_SPEC = load_profile(PROFILE)

pytestmark = pytest.mark.integration


def _wait_for(predicate, timeout_s: float = 60.0, interval_s: float = 2.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    return predicate()


def test_custom_metrics_reach_the_ray_metrics_endpoint(graph, http):
    http.post("/v1/chat/completions", json={"model": "auto", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
    http.post("/v1/chat/completions", json={"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
    http.post("/v1/collections/metrics-kb/documents", json={"documents": [{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}]})
    http.post("/v1/collections/metrics-kb/search", json={"query": "alpha", "k": 1})
    expected = [
        'ray_llmgraph_requests_total{',
        'route="chat"',
        f'target="{EXTRACTOR}"',
        'status="404"',
        'route="search_collection"',
        "ray_llmgraph_request_latency_ms_bucket",
        'ray_llmgraph_router_decisions_total{',
        'ray_llmgraph_collection_documents{',
        'collection="metrics-kb"',
    ]

    def ready():
        text = metrics_text(graph)
        return text if all(needle in text for needle in expected) else None

    text = _wait_for(ready)  # Ray exports every few seconds
    missing = [needle for needle in expected if needle not in (text or metrics_text(graph))]
    assert not missing, f"not on the metrics endpoint: {missing}"
    documents = [line for line in text.splitlines() if line.startswith("ray_llmgraph_collection_documents{") and 'collection="metrics-kb"' in line]
    assert documents and float(documents[0].rsplit(" ", 1)[1]) == 2.0


def test_one_request_id_is_in_the_logs_of_every_deployment_it_reached(graph, http):
    request_id = f"trace-{uuid.uuid4()}"
    response = http.post(
        "/v1/chat/completions", headers={"x-request-id": request_id},
        json={"model": "auto", "max_tokens": 4, "messages": [{"role": "user", "content": "Say hello."}]},
    )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id
    assert response.headers["x-route-target"] == EXTRACTOR

    def seen():
        found = {d: [r for r in replica_log_records(graph, d) if r.get("request_id") == request_id] for d in ("Ingress", "Extractor")}
        return found if all(found.values()) else None

    found = _wait_for(seen, timeout_s=20, interval_s=0.5)
    assert found, "the request id is missing from some deployment's log"
    # Serve's access log: "POST /v1/chat/completions 200 …" at the HTTP ingress,
    # "CALL <method> OK …" for every handle call behind it.
    assert any("/v1/chat/completions" in str(r.get("message", "")) for r in found["Ingress"]), found["Ingress"]
    assert any(str(r.get("message", "")).startswith("CALL ") for r in found["Extractor"]), found["Extractor"]
    # Nothing else carries it: not the health probes started during this request, and not
    # the Router deployment, since the cpu profile's ingress decides `auto` in its own
    # process (deployments/router/in_process.py).
    assert PROFILE_SPEC.router.embeds_in_process(PROFILE_SPEC.embedder)
    for deployment in ("Reasoner", "Router"):
        assert [r for r in replica_log_records(graph, deployment) if r.get("request_id") == request_id] == [], deployment


def test_requests_without_an_id_get_one(http):
    response = http.get("/v1/models")
    assert len(response.headers["x-request-id"]) >= 16


def test_replica_logs_are_structured_json(graph):
    records = replica_log_records(graph, "Ingress")
    assert records, "the ingress wrote no JSON log records"
    for record in records[-20:]:
        assert {"levelname", "message", "asctime"} <= set(record)
