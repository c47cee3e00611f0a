"""The open-loop load generator, against an in-process fake server (isolation only)."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import httpx
import pytest

from serve.bench import load


def fake_server(delay_s: float, fail_every: int = 0):
    calls = {"n": 0}

    async def handler(request: httpx.Request) -> httpx.Response:
        calls["n"] += 1
        await asyncio.sleep(delay_s)
        if fail_every and calls["n"] % fail_every == 0:
            return httpx.Response(429, json={"error": {"code": "overloaded"}})
        return httpx.Response(200, json={"usage": {"completion_tokens": 8}})

    return httpx.MockTransport(handler), calls


def test_open_loop_sends_at_the_offered_rate_regardless_of_latency():
    transport, calls = fake_server(delay_s=0.5)  # slower than the arrival gap

    async def run():
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await load.run_rate(client, "auto", rate=40, duration_s=1.0, max_tokens=8, seed=1, slo_s=10)

    result = asyncio.run(run())
    assert 20 <= result.sent <= 60 and result.sent == calls["n"]
    assert result.ok == result.sent and result.errors == 0
    # Open loop: the whole step takes about duration + one latency, not sent x latency.
    assert result.duration_s < 3
    assert result.latency_p50_s == pytest.approx(0.5, abs=0.2)
    assert result.completion_tokens_per_s > 0


def test_errors_and_slo_are_counted():
    transport, _ = fake_server(delay_s=0.05, fail_every=2)

    async def run():
        async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
            return await load.run_rate(client, "auto", rate=20, duration_s=1.0, max_tokens=8, seed=2, slo_s=0.01)

    result = asyncio.run(run())
    assert result.statuses.get("429", 0) >= 1 and result.errors == result.statuses["429"]
    assert result.goodput_rps == 0.0  # nothing met a 10 ms SLO


def test_percentile():
    from serve.bench.stats import percentile

    assert percentile([], 0.5) is None
    assert percentile([1, 2, 3, 4, 5], 0.5) == 3
    assert percentile([1, 2, 3, 4, 100], 0.99) == 100


def test_refuses_non_loopback_targets():
    args = SimpleNamespace(url="http://10.1.2.3:8000", api_key=None, max_connections=4, timeout=1)
    with pytest.raises(SystemExit, match="loopback"):
        asyncio.run(load._main(args))


def test_plot_writes_a_png(tmp_path):
    report = load.LoadReport(url="http://127.0.0.1:8000", config={})
    for rate in (1, 2):
        report.results.append(load.RateResult("auto", rate, rate, 10, 10, 10, {"200": 10}, rate * 0.9, 0.2, 0.5, 30.0, 0))
    load.plot(report, tmp_path / "load.png")
    assert (tmp_path / "load.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    json.dumps(load.asdict(report))
