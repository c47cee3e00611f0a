"""Thermal-aware admission through HTTP, driven by a simulated GPU (no NVML here).

The graph's monitor reads the telemetry file the session fixture configured; writing
temperatures into it walks the GPU up and down, as a hot laptop would.
"""

from __future__ import annotations

import concurrent.futures
import json
import time

import httpx
import pytest

from tests.support.graph import metrics_text
from tests.support.models import ALLOW_RANDOM, EXTRACTOR, REASONER

pytestmark = pytest.mark.integration

HARD_PROMPT = "Prove step by step, by induction, that 1 + 3 + ... + (2n - 1) = n^2."


def set_gpu(graph, temperature_c: float) -> None:
    sample = {
        "index": 0, "name": "Simulated RTX 4090 Laptop", "memory_used_bytes": 13 << 30,
        "memory_total_bytes": 16 << 30, "utilization_pct": 98.0, "temperature_c": temperature_c,
        "power_w": 160.0, "power_limit_w": 175.0,
        "throttle_reasons": ["sw_thermal"] if temperature_c >= 83 else [],
    }
    tmp = graph.gpu_file.with_suffix(".tmp")
    tmp.write_text(json.dumps({"gpus": [sample]}))
    tmp.replace(graph.gpu_file)  # atomic: the monitor never reads half a file


def wait_for_level(http, level: str, timeout_s: float = 45) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        thermal = http.get("/readyz").json()["gpu"]["thermal"]
        if thermal["level"] == level:
            time.sleep(1.5)  # let the ingress's own copy (refreshed every second) catch up
            return thermal
        time.sleep(0.5)
    raise AssertionError(f"thermal level never became {level!r}")


def chat(http, content: str, **extra):
    body = {"model": "auto", "messages": [{"role": "user", "content": content}], "max_tokens": 8, **extra}
    # Hard prompts reach the (random-weight) reasoner only when asked: the thermal rules are
    # about leaving it.
    return http.post("/v1/chat/completions", json=body, headers=ALLOW_RANDOM)


@pytest.fixture
def simulated_gpu(graph):
    yield graph
    graph.gpu_file.unlink(missing_ok=True)


def test_soft_limit_degrades_hard_limit_sheds_and_cooling_recovers(http, simulated_gpu):
    graph = simulated_gpu

    set_gpu(graph, 60)
    wait_for_level(http, "normal")
    r = chat(http, HARD_PROMPT)
    assert r.status_code == 200 and r.headers["x-route-target"] == REASONER

    # Soft: auto traffic leaves the reasoner, and says why; pinned requests still run.
    set_gpu(graph, 85)
    wait_for_level(http, "soft")
    r = chat(http, HARD_PROMPT)
    assert r.status_code == 200
    assert r.headers["x-route-target"] == EXTRACTOR
    assert r.headers["x-route-reason"].startswith("thermal:")
    route = http.post("/v1/route", json={"model": "auto", "messages": [{"role": "user", "content": HARD_PROMPT}]},
                      headers=ALLOW_RANDOM).json()
    assert route["role"] == "extractor" and route["features"]["thermal_level"] == "soft"

    # Soft also caps concurrency: a burst gets some 429s, the admitted ones succeed.
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        burst = list(pool.map(lambda _: chat(http, "tell me a long story", max_tokens=512), range(12)))
    statuses = sorted(r.status_code for r in burst)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 1 and statuses.count(429) >= 1, statuses
    shed = next(r for r in burst if r.status_code == 429)
    assert shed.json()["error"]["code"] == "gpu_hot_concurrency" and int(shed.headers["retry-after"]) > 0

    # Hard: new LLM and embedding requests are shed with 429 + Retry-After.
    set_gpu(graph, 95)
    wait_for_level(http, "hard")
    r = chat(http, "hello")
    assert r.status_code == 429 and int(r.headers["retry-after"]) > 0
    assert r.json()["error"]["code"] == "gpu_overheated"
    e = http.post("/v1/embeddings", json={"model": "all-minilm-l6-v2", "input": "x"})
    assert e.status_code == 429
    assert http.get("/healthz").status_code == 200 and http.get("/v1/models").status_code == 200

    # Hysteresis: 88 °C is below the hard limit but not 5 °C below it: still shedding.
    set_gpu(graph, 88)
    time.sleep(12)
    assert chat(http, "hello").status_code == 429

    # Cooling: back to normal, the reasoner takes hard prompts again.
    set_gpu(graph, 70)
    wait_for_level(http, "normal")
    r = chat(http, HARD_PROMPT)
    assert r.status_code == 200 and r.headers["x-route-target"] == REASONER


def test_gpu_metrics_reach_the_ray_metrics_endpoint(http, simulated_gpu):
    set_gpu(simulated_gpu, 66)
    wait_for_level(http, "normal")
    deadline = time.monotonic() + 60  # Ray exports metrics every ~10 s
    while time.monotonic() < deadline:
        text = metrics_text(simulated_gpu)
        lines = [l for l in text.splitlines() if l.startswith("ray_llmgraph_gpu_temperature_c{")]
        if any('gpu="0"' in l and l.rstrip().endswith(" 66.0") for l in lines):
            assert "ray_llmgraph_gpu_memory_used_bytes{" in text
            assert "ray_llmgraph_gpu_thermal_level" in text
            return
        time.sleep(3)
    raise AssertionError("llmgraph GPU gauges never appeared on the Ray metrics endpoint")
