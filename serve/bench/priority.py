"""``python -m serve bench priority``: does a running batch make a person wait?

Against a running graph (loopback), one interactive client sends streaming chat requests
one after the other and times each first token: first with the graph idle, then while a
batch of ``--lines`` chat requests runs through the Batch API (the same model, longer
answers). The batch is cancelled once the second phase is measured. The result's
``ttft_p50_ratio`` is the interactive p50 under the batch over the idle p50 (goal ≤ 1.5).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from serve.bench.meta import loopback_client, save_results
from serve.bench.stats import percentile

QUESTIONS = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?", "Say hello politely.",
             "Name a fruit that is yellow.", "What day comes after Monday?"]


def first_token_s(client, model: str, question: str) -> float:
    """Seconds from sending a streaming chat request to its first content chunk."""
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 16, "stream": True,
            "temperature": 0}
    started = time.perf_counter()
    with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if line.startswith("data:") and '"content"' in line:
                return time.perf_counter() - started
    return time.perf_counter() - started


def _phase(client, model: str, requests: int) -> dict[str, Any]:
    samples = [first_token_s(client, model, QUESTIONS[i % len(QUESTIONS)]) for i in range(requests)]
    return {"requests": requests, "ttft_p50_s": percentile(samples, 0.5), "ttft_p99_s": percentile(samples, 0.99),
            "samples_s": [round(s, 4) for s in samples]}


def _start_batch(client, model: str, lines: int) -> str:
    content = "\n".join(json.dumps({
        "custom_id": f"bulk-{i}", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": f"Write two sentences about the number {i}."}],
                 "max_tokens": 48}}) for i in range(lines)).encode()
    upload = client.post("/v1/files", files={"file": ("bulk.jsonl", io.BytesIO(content))}, data={"purpose": "batch"})
    upload.raise_for_status()
    batch = client.post("/v1/batches", json={"input_file_id": upload.json()["id"], "endpoint": "/v1/chat/completions",
                                             "completion_window": "24h", "metadata": {"bench": "priority"}})
    batch.raise_for_status()
    return batch.json()["id"]


def _counts(client, batch_id: str) -> dict[str, int]:
    return client.get(f"/v1/batches/{batch_id}").json()["request_counts"]


def run(args) -> int:
    with loopback_client(args.url, api_key=args.api_key, timeout_s=args.timeout, suite="priority") as client:
        model = args.model or next(m["id"] for m in client.get("/v1/models").json()["data"]
                                   if m.get("metadata", {}).get("role") == "extractor")
        first_token_s(client, model, "Warm up.")
        idle = _phase(client, model, args.requests)
        batch_id = _start_batch(client, model, args.lines)
        deadline = time.monotonic() + args.timeout
        while _counts(client, batch_id)["completed"] < 1 and time.monotonic() < deadline:
            time.sleep(0.5)  # the batch is running when the second phase starts
        before = _counts(client, batch_id)
        loaded = _phase(client, model, args.requests)
        after = _counts(client, batch_id)
        client.post(f"/v1/batches/{batch_id}/cancel")
    ratio = loaded["ttft_p50_s"] / idle["ttft_p50_s"] if idle["ttft_p50_s"] else None
    results = {
        "url": args.url, "model": model, "batch_lines": args.lines,
        "idle": idle, "under_batch": loaded,
        "batch_lines_answered_during_phase": after["completed"] - before["completed"],
        "ttft_p50_ratio": round(ratio, 3) if ratio else None,
        "ttft_p99_ratio": round(loaded["ttft_p99_s"] / idle["ttft_p99_s"], 3) if idle["ttft_p99_s"] else None,
    }
    save_results(args.out, "priority", results, plot)
    print(json.dumps({k: v for k, v in results.items() if k not in ("idle", "under_batch")}, indent=2))
    return 0


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    labels = ["idle", f"under a {results['batch_lines']}-line batch"]
    p50 = [results["idle"]["ttft_p50_s"] * 1000, results["under_batch"]["ttft_p50_s"] * 1000]
    p99 = [results["idle"]["ttft_p99_s"] * 1000, results["under_batch"]["ttft_p99_s"] * 1000]
    xs = range(len(labels))
    ax.bar([x - 0.2 for x in xs], p50, width=0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], p99, width=0.4, label="p99")
    ax.set_xticks(list(xs), labels)
    ax.set_ylabel("interactive time to first token (ms)")
    ax.set_title(f"People first: p50 ×{results['ttft_p50_ratio']} under a running batch")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

