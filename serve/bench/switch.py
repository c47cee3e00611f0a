"""``python -m serve bench switch``: what a model switch costs the request that waits for it.

Against a running graph whose profile has on-demand models (``cpu-swap`` on CPU), for
each on-demand model and in each round, the time from sending a streaming chat request
to its first token:

* **awake**: the model is awake (the baseline, measured in the same run);
* **asleep**: it was put to sleep by ``POST /v1/models/{id}/sleep`` and is woken by the
  request;
* **after eviction**: it was evicted when another on-demand model woke, and the request
  must evict that one in turn before it wakes (two switches in one wait);
* **resident**: the resident extractor, for scale.

The mechanism is the profile's (``sleeps_by`` in ``/v1/models``): on CPU only ``stop`` is
available (vLLM ignores sleep levels there). ``x-model-wake-ms`` (the wait the graph
reports) is recorded next to the client's time to first token.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional

from serve.bench.meta import loopback_client, save_results
from serve.bench.stats import percentile

SCENARIOS = ("resident", "awake", "asleep", "after eviction")


def first_token(client, model: str) -> tuple[float, Optional[float]]:
    """Seconds to the first streamed chunk of a short chat request, and the wake wait (ms)."""
    body = {"model": model, "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 8, "stream": True}
    started = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        wake = reply.headers.get("x-model-wake-ms")
        lines = reply.iter_lines()
        for line in lines:
            if line.startswith("data:"):
                ttft = time.perf_counter() - started
                break
        else:
            raise RuntimeError(f"{model} streamed no data")
        for _ in lines:
            pass
    return ttft, float(wake) if wake is not None else None


def _cards(client) -> dict[str, dict[str, Any]]:
    return {card["id"]: card["metadata"] for card in client.get("/v1/models").json()["data"]}


def measure(client, rounds: int) -> dict[str, Any]:
    cards = _cards(client)
    on_demand = [m for m, meta in cards.items() if meta.get("residency") == "on_demand"]
    resident = [m for m, meta in cards.items() if meta.get("residency") == "resident"]
    if len(on_demand) < 1:
        raise SystemExit("bench switch needs a profile with on-demand models (e.g. cpu-swap)")
    first_token(client, resident[0])  # the first request of a session pays for more than the model
    samples: dict[str, dict[str, list]] = {m: {s: [] for s in SCENARIOS} for m in on_demand}
    waits: dict[str, dict[str, list]] = {m: {s: [] for s in SCENARIOS} for m in on_demand}
    for round_no in range(rounds):
        for model in on_demand:
            others = [m for m in on_demand if m != model]
            record = lambda scenario, got: (samples[model][scenario].append(got[0]), waits[model][scenario].append(got[1]))  # noqa: E731
            record("resident", first_token(client, resident[0]))
            client.post(f"/v1/models/{model}/wake", json={}).raise_for_status()
            record("awake", first_token(client, model))
            client.post(f"/v1/models/{model}/sleep", json={}).raise_for_status()
            record("asleep", first_token(client, model))
            if others:
                first_token(client, others[0])  # wakes the other one; the budget evicts this one
                evicted = _cards(client)[model]["state"] == "asleep"
                if evicted:
                    record("after eviction", first_token(client, model))
            print(f"round {round_no + 1}/{rounds} {model}: " + ", ".join(
                f"{s} {samples[model][s][-1]:.3f}s" for s in SCENARIOS if samples[model][s]), flush=True)
    per_model = {}
    for model in on_demand:
        per_model[model] = {
            "mechanism": cards[model].get("sleeps_by"),
            "scenarios": {
                s: {"n": len(samples[model][s]),
                    "ttft_p50_s": _round(percentile(samples[model][s], 0.5)),
                    "ttft_max_s": _round(max(samples[model][s]) if samples[model][s] else None),
                    "wake_ms_p50": _round(percentile([w for w in waits[model][s] if w is not None], 0.5)),
                    "ttft_s": [_round(v) for v in samples[model][s]]}
                for s in SCENARIOS
            },
        }
    return {"models": per_model, "resident_model": resident[0], "rounds": rounds}


def _round(value: Optional[float]) -> Optional[float]:
    return round(value, 3) if value is not None else None


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(results["models"])
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.8 / len(SCENARIOS)
    for i, scenario in enumerate(SCENARIOS):
        values = [results["models"][m]["scenarios"][scenario]["ttft_p50_s"] or 0 for m in models]
        bars = ax.bar([x + i * width for x in range(len(models))], values, width, label=scenario)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks([x + width * (len(SCENARIOS) - 1) / 2 for x in range(len(models))])
    ax.set_xticklabels([f"{m}\n({results['models'][m]['mechanism']})" for m in models])
    ax.set_yscale("log")
    ax.set(ylabel="time to first token, p50 (s, log)", title=f"Model switch cost, profile {results.get('profile')}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    """Entry point for ``python -m serve bench switch``."""
    with loopback_client(args.url, api_key=args.api_key, timeout_s=args.timeout, suite="switch") as client:
        profile = client.get("/readyz").json().get("profile")
        results = {"url": args.url, "profile": profile, **measure(client, args.rounds)}
    for model, data in results["models"].items():
        for scenario, row in data["scenarios"].items():
            print(f"{model:>24} {scenario:>15}: TTFT p50 {row['ttft_p50_s']} s (n={row['n']}, wake {row['wake_ms_p50']} ms)")
    save_results(args.out, "switch", results, plot)
    return 0
