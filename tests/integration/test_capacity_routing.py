"""Capacity-aware routing and the reasoner's thinking budget, on the real graph."""

from __future__ import annotations

import concurrent.futures
import time

import httpx
import pytest

from tests.support.models import ALLOW_RANDOM, EXTRACTOR, REASONER

pytestmark = pytest.mark.integration

HARD = {"model": "auto", "messages": [{"role": "user", "content": "Prove by induction, step by step, that 2^n > n."}], "max_tokens": 4}


def test_saturated_reasoner_sends_auto_traffic_to_the_extractor_and_back(graph, http):
    limit = 6  # the cpu profile's router.reasoner_max_in_flight
    long_body = {
        "model": REASONER, "messages": [{"role": "user", "content": "think for a long time"}],
        "max_tokens": 512, "ignore_eos": True,
    }
    with httpx.Client(base_url=graph.base_url, timeout=300, event_hooks={"response": [graph.record]}) as client:
        with concurrent.futures.ThreadPoolExecutor(limit) as pool:
            load = [pool.submit(client.post, "/v1/chat/completions", json=long_body) for _ in range(limit)]
            # The dry run answers without generating, so it sees the saturation at once; the
            # chat that follows is decided on arrival, before the extractor (which shares
            # the CPU with the busy reasoner) starts generating.
            deadline = time.monotonic() + 60
            route = None
            while time.monotonic() < deadline and not all(f.done() for f in load):
                route = http.post("/v1/route", json=HARD, headers=ALLOW_RANDOM).json()
                if route["target"] == EXTRACTOR:
                    break
                time.sleep(0.1)
            assert route is not None and route["target"] == EXTRACTOR, "auto traffic never left the saturated reasoner"
            assert route["reason"].startswith("capacity: reasoner busy")
            assert route["features"]["capacity"]["reasoner_in_flight"] >= limit
            degraded = http.post("/v1/chat/completions", json=HARD, headers=ALLOW_RANDOM)
            assert degraded.status_code == 200 and degraded.headers["x-route-target"] == EXTRACTOR
            assert degraded.headers["x-route-reason"].startswith("capacity: reasoner busy")
            assert all(f.result().status_code == 200 for f in load), "the load itself must not fail"
    r = http.post("/v1/chat/completions", json=HARD, headers=ALLOW_RANDOM)
    assert r.status_code == 200 and r.headers["x-route-target"] == REASONER


def test_thinking_budget_closes_the_reasoning(openai_client):
    # Random weights never end their thinking by themselves; with a budget of 8 tokens the
    # engine closes it, and the rest of max_tokens is the answer.
    completion = openai_client.chat.completions.create(
        model=REASONER, messages=[{"role": "user", "content": "Is 221 prime?"}],
        max_tokens=40, extra_body={"thinking_token_budget": 8, "ignore_eos": True},
    )
    message = completion.choices[0].message
    reasoning = (message.model_extra or {}).get("reasoning") or ""
    assert message.content, "after the budget, the model must answer"
    assert completion.usage.completion_tokens == 40
    # The reasoning holds at most the budget (plus the forced closing tag's tokens).
    assert 0 < len(reasoning) and len(message.content) > 0
