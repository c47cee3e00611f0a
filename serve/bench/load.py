"""Open-loop load generator for the running graph (loopback only).

Requests arrive as a Poisson process at each offered rate, whether or not earlier ones
have finished (open loop: a slow server sees its queue grow, as it would in real life,
instead of the client politely waiting). Each rate is run for every model in
``--models`` in the same run, so ``auto`` (router hop included) is measured side by side
with a model called directly. Every run is bounded in request count and time.

Soak mode (``--soak SECONDS``) holds one rate for a long time and samples the resident
memory of the graph's processes, reporting its growth.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

import httpx

from serve.bench.meta import write_result
from serve.bench.stats import percentile
from serve.exposure import is_loopback

PROMPTS = [
    "Classify this support ticket as billing, technical or sales: my invoice is wrong.",
    "Extract the job title and city: Senior Data Engineer, Pune, hybrid.",
    "Rewrite more politely: send me the report now.",
    "Prove step by step that the square root of 2 is irrational.",
    "Plan a 3-day schedule for 4 engineers with these constraints: no meetings on Friday.",
    "Hello! What can you do?",
]


@dataclass
class RateResult:
    """What one (model, offered rate) step measured."""

    model: str
    nominal_rps: float
    offered_rps: float
    """Arrivals actually generated per second of the arrival window (Poisson varies)."""
    duration_s: float
    sent: int
    ok: int
    statuses: dict[str, int]
    goodput_rps: float
    latency_p50_s: Optional[float]
    latency_p99_s: Optional[float]
    completion_tokens_per_s: float
    errors: int


@dataclass
class LoadReport:
    url: str
    config: dict
    results: list[RateResult] = field(default_factory=list)
    soak: Optional[dict] = None


def _latency(values: list[float], q: float) -> Optional[float]:
    value = percentile(values, q)
    return None if value is None else round(value, 4)


async def _one_request(client: httpx.AsyncClient, model: str, max_tokens: int, rng: random.Random, slo_s: float):
    body = {
        "model": model,
        "messages": [{"role": "user", "content": rng.choice(PROMPTS)}],
        "max_tokens": max_tokens,
    }
    started = time.perf_counter()
    try:
        response = await client.post("/v1/chat/completions", json=body)
        elapsed = time.perf_counter() - started
        tokens = response.json().get("usage", {}).get("completion_tokens", 0) if response.status_code == 200 else 0
        return str(response.status_code), elapsed, tokens, elapsed <= slo_s
    except httpx.HTTPError as exc:
        return type(exc).__name__, time.perf_counter() - started, 0, False


async def run_rate(client, model: str, rate: float, duration_s: float, max_tokens: int, seed: int, slo_s: float) -> RateResult:
    """Offer ``rate`` requests/s for ``duration_s`` seconds; wait for all to finish."""
    # Separate streams: arrival times are identical for every model at a given seed.
    arrivals, prompts = random.Random(seed), random.Random(seed + 1)
    tasks, t0 = [], time.perf_counter()
    next_at = 0.0
    while True:
        next_at += arrivals.expovariate(rate)
        if next_at > duration_s:
            break
        delay = next_at - (time.perf_counter() - t0)
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(_one_request(client, model, max_tokens, prompts, slo_s)))
    outcomes = await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    statuses: dict[str, int] = {}
    for status, *_ in outcomes:
        statuses[status] = statuses.get(status, 0) + 1
    good = [o for o in outcomes if o[0] == "200"]
    latencies = [o[1] for o in good]
    return RateResult(
        model=model,
        nominal_rps=rate,
        offered_rps=round(len(outcomes) / duration_s, 3),
        duration_s=round(wall, 2),
        sent=len(outcomes),
        ok=len(good),
        statuses=statuses,
        # Goodput: requests that succeeded within the SLO, per second of arrival window.
        goodput_rps=round(sum(1 for o in good if o[3]) / duration_s, 3),
        latency_p50_s=_latency(latencies, 0.5),
        latency_p99_s=_latency(latencies, 0.99),
        completion_tokens_per_s=round(sum(o[2] for o in good) / wall, 1) if wall else 0.0,
        errors=len(outcomes) - len(good),
    )


def graph_rss_bytes() -> int:
    """Resident memory of every Ray process on this machine (the graph and its engines)."""
    import psutil

    total = 0
    for proc in psutil.process_iter(["name", "cmdline", "memory_info"]):
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            if "ray::" in cmd or "ray/" in cmd or "raylet" in cmd or "EngineCore" in cmd or (proc.info["name"] or "").startswith("ray::"):
                total += proc.info["memory_info"].rss
        except (psutil.NoSuchProcess, psutil.AccessDenied, TypeError):
            continue
    return total


async def run_soak(client, model: str, rate: float, seconds: float, max_tokens: int, seed: int, slo_s: float, sample_every_s: float = 10.0) -> dict:
    """Hold ``rate`` for ``seconds`` in windows, sampling memory after each."""
    samples = [(0.0, graph_rss_bytes())]
    windows, started = [], time.perf_counter()
    while time.perf_counter() - started < seconds:
        window = min(sample_every_s, seconds - (time.perf_counter() - started))
        windows.append(asdict(await run_rate(client, model, rate, window, max_tokens, seed + len(windows), slo_s)))
        samples.append((round(time.perf_counter() - started, 1), graph_rss_bytes()))
    first, last = samples[0][1], samples[-1][1]
    return {
        "model": model,
        "rate_rps": rate,
        "seconds": round(time.perf_counter() - started, 1),
        "rss_samples": [{"t_s": t, "rss_mib": round(b / 2**20, 1)} for t, b in samples],
        "rss_growth_mib": round((last - first) / 2**20, 1),
        "requests": sum(w["sent"] for w in windows),
        "ok": sum(w["ok"] for w in windows),
    }


def plot(report: LoadReport, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    for model in sorted({r.model for r in report.results}):
        rows = [r for r in report.results if r.model == model]
        rates = [r.offered_rps for r in rows]
        ax1.plot(rates, [r.goodput_rps for r in rows], marker="o", label=f"{model} goodput")
        rates = [r.nominal_rps for r in rows]
        ax2.plot(rates, [r.latency_p50_s or 0 for r in rows], marker="o", label=f"{model} p50")
        ax2.plot(rates, [r.latency_p99_s or 0 for r in rows], marker="x", linestyle="--", label=f"{model} p99")
    if report.results:
        top = max(r.offered_rps for r in report.results)
        ax1.plot([0, top], [0, top], color="grey", linestyle=":", label="offered")
    ax1.set(xlabel="offered load, as generated (requests/s)", ylabel="goodput (requests/s within SLO)", title="Goodput")
    ax2.set(xlabel="nominal offered load (requests/s)", ylabel="latency (s)", title="Latency of successful requests")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"python -m serve bench load — {report.url}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def _main(args) -> LoadReport:
    if not is_loopback(urlparse(args.url).hostname or ""):
        raise SystemExit("bench load only targets this machine (loopback addresses)")
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    limits = httpx.Limits(max_connections=args.max_connections, max_keepalive_connections=args.max_connections)
    report = LoadReport(url=args.url, config={k: v for k, v in vars(args).items() if k != "api_key" and not callable(v)})
    async with httpx.AsyncClient(base_url=args.url, headers=headers, timeout=args.timeout, limits=limits) as client:
        if args.soak:
            report.soak = await run_soak(client, args.models[0], args.rates[0], args.soak, args.max_tokens, args.seed, args.slo)
            return report
        for rate in args.rates:
            for model in args.models:  # interleaved, so both see the same machine state
                result = await run_rate(client, model, rate, args.duration, args.max_tokens, args.seed, args.slo)
                report.results.append(result)
                print(
                    f"{model:>24} @ {rate:5.2f} rps (offered {result.offered_rps:5.2f}): sent {result.sent:4d} ok {result.ok:4d} "
                    f"goodput {result.goodput_rps:6.2f} rps  p50 {result.latency_p50_s}s  p99 {result.latency_p99_s}s  "
                    f"statuses {result.statuses}",
                    flush=True,
                )
    return report


def run(args) -> int:
    """Entry point for ``python -m serve bench load``."""
    report = asyncio.run(_main(args))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = asdict(report)
    write_result(out / "load.json", data)
    if report.results:
        plot(report, out / "load.png")
    if report.soak:
        print(f"soak: {report.soak['seconds']}s, {report.soak['ok']}/{report.soak['requests']} ok, RSS growth {report.soak['rss_growth_mib']} MiB")
    print(f"wrote {out / 'load.json'}" + ("" if not report.results else f" and {out / 'load.png'}"))
    return 0
