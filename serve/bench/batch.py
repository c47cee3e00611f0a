"""``python -m serve bench batch``: postings per minute through the Batch API, end to end.

Against a running graph (loopback): a batch of ``--fast`` job postings in ``fast`` mode
and a smaller one of ``--auto`` postings in ``auto`` mode, each indexed into a fresh
collection as it is extracted (batch ``metadata.collection``). The postings are the
labelled corpus (``tests/data/postings``), repeated with a numbered line added so that
every one is a document of its own. Time runs from the file upload to the batch's
``completed``: parsing, extraction, LLM calls (``auto``), embedding and the durable
write into the collection. The fast-mode bar is the seeds' 10 postings/s (600 a minute).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

from serve.bench.extract import load_corpus
from serve.bench.meta import loopback_client, save_results


def _postings(count: int) -> list[dict[str, Any]]:
    corpus = load_corpus()
    lines = []
    for i in range(count):
        doc = corpus[i % len(corpus)]
        text = doc["document"] + f"\n\nReference: bench-{i}"  # a document of its own
        lines.append({"custom_id": f"p{i}", "method": "POST", "url": "/v1/extract",
                      "body": {"document": text, "mode": "{mode}", "document_id": f"p{i}"}})
    return lines


def _run_one(client, count: int, mode: str, timeout_s: float) -> dict[str, Any]:
    collection = f"bench-{mode}-{int(time.time())}"
    content = "\n".join(json.dumps(line).replace('"{mode}"', json.dumps(mode)) for line in _postings(count)).encode()
    started = time.perf_counter()
    upload = client.post("/v1/files", files={"file": ("postings.jsonl", io.BytesIO(content))}, data={"purpose": "batch"})
    upload.raise_for_status()
    created = client.post("/v1/batches", json={"input_file_id": upload.json()["id"], "endpoint": "/v1/extract",
                                               "completion_window": "24h", "metadata": {"collection": collection}})
    created.raise_for_status()
    batch_id = created.json()["id"]
    deadline = time.monotonic() + timeout_s
    while True:
        batch = client.get(f"/v1/batches/{batch_id}").json()
        if batch["status"] in ("completed", "failed", "cancelled", "expired") or time.monotonic() > deadline:
            break
        time.sleep(1.0)
    elapsed = time.perf_counter() - started
    stats = client.get(f"/v1/collections/{collection}").json()
    counts = batch["request_counts"]
    return {"mode": mode, "postings": count, "status": batch["status"], "seconds": round(elapsed, 2),
            "completed": counts["completed"], "failed": counts["failed"], "indexed": stats.get("documents"),
            "postings_per_min": round(counts["completed"] / elapsed * 60, 1)}


def run(args) -> int:
    with loopback_client(args.url, api_key=args.api_key, timeout_s=120, suite="batch") as client:
        fast = _run_one(client, args.fast, "fast", args.timeout)
        auto = _run_one(client, args.auto, "auto", args.timeout) if args.auto else None
    results = {"url": args.url, "fast": fast, "auto": auto, "fast_postings_per_min": fast["postings_per_min"],
               "auto_postings_per_min": auto["postings_per_min"] if auto else None, "fast_bar_per_min": 600}
    save_results(args.out, "batch", results, plot)
    print(json.dumps(results, indent=2))
    return 0


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run for run in (results["fast"], results["auto"]) if run]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([f"{r['mode']} ({r['postings']})" for r in runs], [r["postings_per_min"] for r in runs])
    ax.axhline(results["fast_bar_per_min"], linestyle="--", color="grey", label="fast-mode bar (600/min)")
    ax.set_ylabel("postings per minute, extracted and indexed")
    ax.set_title("Batch API: upload to completed, end to end")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
