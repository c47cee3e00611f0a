"""The reasoner goes down mid-traffic: started streams are never replayed, new `auto`
requests that would go there succeed on the extractor, and every hop is recorded."""

from __future__ import annotations

import json
import os
import signal
import time

import httpx
import psutil
import pytest

from tests.support.graph import serve_details
from tests.support.models import ALLOW_RANDOM, EXTRACTOR, REASONER

pytestmark = pytest.mark.integration

HARD = "Prove by induction, step by step, that 3^n > n^2 for n > 2."


def _reasoner(graph) -> dict:
    return serve_details(graph)["deployments"]["Reasoner"]


def _chunk_models(lines) -> list[str]:
    models = []
    for line in lines:
        if line.startswith("data:") and line.strip() != "data: [DONE]":
            try:
                models.append(json.loads(line[5:])["model"])
            except (ValueError, KeyError):
                continue  # an error event: the stream ends without a model switch
    return models


def test_reasoner_down_streams_never_replay_and_auto_falls_back(graph):
    (replica,) = [r for r in _reasoner(graph)["replicas"] if r["state"] == "RUNNING"]
    body = {"model": "auto", "messages": [{"role": "user", "content": HARD}], "max_tokens": 256, "ignore_eos": True, "stream": True}
    # The cpu profile keeps auto off its random-weight reasoner; these requests ask for it.
    client = httpx.Client(base_url=graph.base_url, timeout=30, headers=ALLOW_RANDOM)
    try:
        # 1. A stream that started on the reasoner dies with it and is not replayed.
        lines = []
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.headers["x-route-target"] == REASONER
            assert response.headers["x-route-hops"] == f"{REASONER}=ok"
            stream = response.iter_lines()
            for line in stream:
                lines.append(line)
                if len(_chunk_models(lines)) >= 3:
                    break
            engines = psutil.Process(replica["pid"]).children(recursive=True)
            assert engines, "the reasoner's vLLM engine runs in child processes"
            os.kill(replica["pid"], signal.SIGKILL)
            try:
                for line in stream:
                    lines.append(line)
            except httpx.HTTPError:
                pass  # the connection may simply break
        assert set(_chunk_models(lines)) == {REASONER}, "a started stream must never switch models"
        # No engine process outlives its replica (its memory is what a replacement needs).
        _, alive = psutil.wait_procs(engines, timeout=20)
        assert not alive, f"engine processes outlived their replica: {[p.pid for p in alive]}"

        # 2. New auto requests that the router sends to the reasoner succeed on the extractor.
        # The dispatcher abandons a hop that is known to be down; /readyz reads the same
        # health picture, so wait until it shows the reasoner down (a request sent before
        # that waits in the handle for the replacement replica, which may win the race).
        deadline = time.monotonic() + 30
        while client.get("/readyz").json()["deployments"]["reasoner"] != "down":
            assert time.monotonic() < deadline, "the ingress never saw the reasoner go down"
            time.sleep(0.1)
        deadline, fallback = time.monotonic() + 90, None
        while time.monotonic() < deadline and fallback is None:
            try:
                r = client.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 8}, timeout=20)
            except httpx.TimeoutException:
                continue  # sent before the ingress saw the reasoner go down
            assert r.status_code == 200, r.text
            if r.headers["x-route-target"] == EXTRACTOR:
                fallback = r
        assert fallback is not None, "auto traffic never fell back to the extractor"
        hops = fallback.headers["x-route-hops"].split(",")
        assert hops[0].startswith(f"{REASONER}=") and hops[0] != f"{REASONER}=ok"
        assert hops[-1] == f"{EXTRACTOR}=ok"
        assert fallback.headers["x-route-reason"].startswith("fallback after")

        # 3. A stream that fails over before its first byte falls back too.
        with client.stream("POST", "/v1/chat/completions", json={**body, "max_tokens": 8}) as response:
            assert response.status_code == 200
            assert response.headers["x-route-hops"].endswith(f"{EXTRACTOR}=ok")
            assert set(_chunk_models(response.iter_lines())) == {EXTRACTOR}
    finally:
        client.close()
        # Leave the graph as we found it: wait for Serve to bring the reasoner back.
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            reasoner = _reasoner(graph)
            if reasoner["status"] == "HEALTHY" and any(r["state"] == "RUNNING" and r.get("pid") != replica["pid"] for r in reasoner["replicas"]):
                break
            time.sleep(3)

