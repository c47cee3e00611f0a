"""The results report renders what the result files hold, and only that."""

from __future__ import annotations

import json

from serve.bench.report import render


def test_report_renders_the_suites_present(tmp_path):
    index = {
        "embeddings": {"graph_texts_per_s": 190.0, "direct_texts_per_s": 200.0, "ratio": 0.95, "rounds": 3},
        "search": [{"vectors": 100000, "flat": {"p50_ms": 14.0, "p99_ms": 30.0, "build_s": 0.1},
                    "hnsw": {"p50_ms": 0.2, "p99_ms": 0.5, "recall_at_10": 0.99, "build_s": 9.0}}],
        "http": [{"documents": 10000, "index": "flat", "p50_ms": 40.0, "p99_ms": 55.0, "ingest_docs_per_s": 200.0}],
        "meta": {"date": "2026-11-23 05:00 UTC", "cpu": "Test CPU", "cores": 2, "memory_gib": 24.0, "gpus": [], "commit": "abc1234"},
    }
    (tmp_path / "index.json").write_text(json.dumps(index))
    text = render(tmp_path)
    assert "Embeddings and vector search" in text and "×0.95" in text
    assert "| 100,000 | 14.0 / 30.0 ms | 0.2 / 0.5 ms | 0.99 | 9.0 s |" in text
    assert "Test CPU, 2 cores, 24.0 GiB, no GPU" in text and "abc1234" in text
    assert "Overhead" not in text  # no overhead.json, no overhead table


def test_no_results_says_so(tmp_path):
    assert "No results yet" in render(tmp_path)
