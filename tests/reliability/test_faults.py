"""Faults under load: client disconnects, backpressure, a replica killed mid-traffic."""

from __future__ import annotations

import concurrent.futures
import math
import os
import signal
import threading
import time
from datetime import datetime

import httpx
import pytest

from serve.kernel.config import load_profile
from tests.support.graph import replica_log_records, serve_details
from tests.support.models import EXTRACTOR, PROFILE

pytestmark = pytest.mark.integration

#: The one request that measures this machine's speed gets this long (ten minutes).
READ_ONE_S = 600

def _replica_call_record(graph, deployment: str, request_id: str, timeout_s: float = 10) -> dict:
    """The access-log record (``CALL <method> <status>``) of one request in a replica."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for record in replica_log_records(graph, deployment):
            if record.get("request_id") == request_id and str(record.get("message", "")).startswith("CALL "):
                return record
        time.sleep(0.2)
    raise AssertionError(f"no {deployment} log record for request {request_id}")


def test_disconnected_stream_stops_generation(graph):
    """A client that goes away mid-stream cancels the engine request within 1 s."""
    body = {
        "model": EXTRACTOR, "messages": [{"role": "user", "content": "go on forever"}],
        "max_tokens": 512, "ignore_eos": True, "stream": True,
    }
    with httpx.Client(base_url=graph.base_url, timeout=60) as client:
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == 200
            request_id = response.headers["x-request-id"]
            chunks = 0
            for line in response.iter_lines():
                chunks += line.startswith("data:")
                if chunks >= 3:
                    break
        closed_at = datetime.now()
    record = _replica_call_record(graph, "Extractor", request_id)
    assert "CANCELLED" in record["message"], record
    cancelled_at = datetime.strptime(record["asctime"], "%Y-%m-%d %H:%M:%S,%f")
    assert (cancelled_at - closed_at).total_seconds() <= 1.0, (closed_at, record)


def test_backpressure_answers_429_with_retry_after(graph):
    """A burst beyond max_ongoing + max_queued gets 429s; admitted requests succeed."""
    # Long answers, so no admitted request finishes (and frees a slot) while the burst is
    # still arriving through a busy ingress: otherwise the queue never fills.
    tokens = 256
    body = {
        "model": EXTRACTOR, "messages": [{"role": "user", "content": "burst"}],
        "max_tokens": tokens, "ignore_eos": True,
    }
    spec = load_profile(PROFILE).llm("extractor")
    admitted = spec.scaling.max_ongoing_requests + spec.scaling.max_queued_requests
    burst = 2 * admitted  # margin for a slow, shared machine
    with httpx.Client(base_url=graph.base_url, timeout=READ_ONE_S, limits=httpx.Limits(max_connections=burst + 16)) as client:
        # The admitted requests run in rounds of the engine's batch: the last one waits for
        # all of them. How fast this machine decodes, now, sizes the wait.
        probe = tokens // 4
        started = time.monotonic()
        client.post("/v1/chat/completions", json={**body, "max_tokens": probe}).raise_for_status()
        one_answer_s = (time.monotonic() - started) * tokens / probe
        rounds = math.ceil(admitted / spec.max_num_seqs) + 1
        client.timeout = httpx.Timeout(30 + 3 * rounds * one_answer_s)
        with concurrent.futures.ThreadPoolExecutor(burst) as pool:
            responses = list(pool.map(lambda _: client.post("/v1/chat/completions", json=body), range(burst)))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(429) >= 1 and statuses.count(200) >= spec.scaling.max_ongoing_requests, statuses
    for r in responses:
        if r.status_code == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["error"]["code"] == "overloaded"
        else:
            assert r.json()["usage"]["completion_tokens"] == tokens


def _call_with_retries(client: httpx.Client, attempts: int = 3) -> tuple[bool, list[int]]:
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 4}
    seen = []
    for attempt in range(attempts):
        try:
            r = client.post("/v1/chat/completions", json=body)
            seen.append(r.status_code)
            if r.status_code == 200:
                return True, seen
        except httpx.HTTPError:
            seen.append(-1)
        time.sleep(0.5 * 2**attempt)
    return False, seen


def _watch_recovery(graph, old_pid: int, killed: threading.Event, done: threading.Event, out: dict) -> None:
    """From the kill on, note when the Router is HEALTHY again on a fresh replica."""
    killed.wait()
    while not done.is_set():
        try:
            router = serve_details(graph)["deployments"]["Router"]
        except (httpx.HTTPError, KeyError, ValueError):
            time.sleep(0.5)
            continue
        fresh = [
            r for r in router["replicas"]
            if r["state"] == "RUNNING" and r.get("pid") not in (None, old_pid)
        ]
        if router["status"] == "HEALTHY" and fresh:
            out["recovered_at"] = time.monotonic()
            return
        time.sleep(0.5)


def test_killing_the_router_under_load_loses_nothing(graph):
    """SIGKILL the Router replica while auto traffic flows; retries absorb it."""
    details = serve_details(graph)
    (replica,) = details["deployments"]["Router"]["replicas"]
    killed, done, recovery = threading.Event(), threading.Event(), {}
    watcher = threading.Thread(target=_watch_recovery, args=(graph, replica["pid"], killed, done, recovery))
    watcher.start()
    outcomes, statuses = [], []
    stop_at = time.monotonic() + 45
    killed_at = None
    try:
        with httpx.Client(base_url=graph.base_url, timeout=30) as client:
            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                futures = []
                while time.monotonic() < stop_at:
                    futures.append(pool.submit(_call_with_retries, client))
                    if killed_at is None and len(futures) == 20:
                        os.kill(replica["pid"], signal.SIGKILL)
                        killed_at = time.monotonic()
                        killed.set()
                    time.sleep(0.1)
                for f in futures:
                    ok, seen = f.result()
                    outcomes.append(ok)
                    statuses.extend(seen)
        watcher.join(timeout=max(0.0, killed_at + 30 - time.monotonic()) + 1)
    finally:
        killed.set()
        done.set()
        watcher.join()
    success = sum(outcomes) / len(outcomes)
    recovered_s = recovery["recovered_at"] - killed_at if "recovered_at" in recovery else None
    print(
        f"\n[kill-under-load] {len(outcomes)} requests (3 tries each), success {success:.3f}, "
        f"statuses {sorted(set(statuses))}, Router HEALTHY again after {recovered_s}s"
    )
    assert success >= 0.99
    assert set(statuses) <= {200, 503, -1}, "failures must be 503s (retryable), never other 5xx"
    assert recovered_s is not None and recovered_s <= 30, "the Router must be HEALTHY within 30 s of the kill"
