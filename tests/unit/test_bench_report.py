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


def test_the_backends_over_http_are_rendered_beside_the_store_comparison(tmp_path):
    from serve.bench.backends import summary

    def side(p50, recall, index):
        return {"ingest_docs_per_s": 250.0, "index": index, "search": {"p50_ms": p50, "p99_ms": p50 * 2, "recall_at_10": recall},
                "filtered": {"p50_ms": p50 + 1, "p99_ms": p50 * 3, "recall_at_10": recall}}

    rows = [{"documents": 100000, "queries": 200, "embedded": side(20.0, 0.99, "hnsw"),
             "postgres": side(25.0, 0.97, "pgvector-hnsw")}]
    over_http = {"sizes": rows, "postgres_vs_embedded": summary(rows)}
    assert over_http["postgres_vs_embedded"]["search_p50_ratio_100k"] == 1.25
    assert over_http["postgres_vs_embedded"]["recall_at_10_100k"] == 0.97
    index = {"search": [], "backends": {"sizes": [], "postgres_vs_embedded": {}, "http": over_http},
             "meta": {"date": "2026-12-07", "cpu": "Test CPU", "cores": 2, "memory_gib": 24.0, "gpus": []}}
    (tmp_path / "index.json").write_text(json.dumps(index))
    text = render(tmp_path)
    assert "| 100,000 | postgres (pgvector-hnsw) | 250.0 docs/s | 25.0 / 50.0 ms | 0.97 |" in text
    assert "Over HTTP, `postgres_vs_embedded`: search_p50_ratio_100k **1.25**" in text


def test_exact_top10_is_taken_among_the_documents_a_filter_allows():
    import numpy as np

    from serve.bench.backends import exact_top10

    documents = np.eye(12, dtype=np.float32)
    queries = documents[[0, 1]] + 0.01
    everyone = np.arange(12)
    assert all(len(ids) == 10 for ids in exact_top10(documents, queries, everyone))
    assert 0 in exact_top10(documents, queries, everyone)[0]
    memos = everyone[everyone % 3 == 0]
    found = exact_top10(documents, queries, memos)
    assert found[0] == set(memos.tolist()) and 1 not in found[1]  # fewer than 10 allowed: all of them


def test_no_results_says_so(tmp_path):
    assert "No results yet" in render(tmp_path)


def _level(c, e2e, thr):
    return {"concurrency": c, "ttft_p50_s": 0.05, "tpot_p50_ms": 4.0, "e2e_p50_s": e2e, "e2e_p99_s": e2e * 1.2, "throughput_tok_s": thr}


def test_overhead_ratios_take_the_better_vllm_run_so_drift_cannot_flatter_the_graph(tmp_path):
    from serve.bench.overhead import ratios_vs_best_d

    targets = {
        "d": {"levels": [_level(1, 0.60, 200.0), _level(16, 1.6, 900.0)]},
        "d_again": {"levels": [_level(1, 0.50, 250.0), _level(16, 2.0, 1000.0)]},  # faster at c=1, higher throughput at 16
        "c": {"levels": [_level(1, 0.55, 230.0), _level(16, 2.0, 800.0)]},
        "b": {"levels": [_level(1, 0.55, 230.0), _level(16, 2.0, 800.0)]},
        "a": {"levels": [_level(1, 0.66, 190.0), _level(16, 2.4, 700.0)]},
    }
    ratios = ratios_vs_best_d(targets)
    assert ratios["a"]["1"] == {"e2e_p50": 1.32, "throughput": 0.76}  # vs 0.50 s and 250 tok/s
    assert ratios["b"]["16"] == {"e2e_p50": 1.25, "throughput": 0.8}  # vs 1.6 s and 1000 tok/s

    data = {"targets": {**targets, "a": {**targets["a"], "route": {"target": "qwen3-tiny-extractor", "reason": "r"}}},
            "ratios_vs_d": ratios, "d_drift": {"1": {"e2e_p50": 0.833, "throughput": 1.25}}, "start": {"cold_s": 90.0, "warm_s": 80.0},
            "meta": {"date": "2026-11-23", "cpu": "Test CPU", "cores": 2, "memory_gib": 24.0, "gpus": []}}
    (tmp_path / "overhead.json").write_text(json.dumps(data))
    text = render(tmp_path)
    assert "| (d) again, at the end | 1 |" in text and "×1.32 / ×0.76" in text
    assert "c=1 ×0.83 / ×1.25" in text and "better (d) run" in text


def test_extract_report_shows_the_llm_stage_per_field_next_to_fast(tmp_path):
    from serve.bench.extract import score

    corpus = [
        {"id": "a", "kind": "text", "gold": {"title": "Barista", "salary_min": 18.5, "salary_max": 18.5}},
        {"id": "b", "kind": "text", "gold": {"title": "Nurse", "salary_min": None, "salary_max": None}},
    ]
    fast = score(corpus, {"a": {"title": "Barista", "salary_min": 18.5, "salary_max": 18.5}, "b": {"title": "Nurse"}})
    llm = score(corpus, {"a": {"title": "Barista", "salary_min": 18}, "b": {"salary_min": 50000}})
    assert llm["invented_salary"] == ["b"]
    variants = {name: {"fields": r["all_fields"]["fields"], "micro": r["all_fields"]["micro"],
                       "invented_salary": r["invented_salary"]} for name, r in (("fast", fast), ("llm stage alone", llm))}
    data = {"quality": fast, "throughput": {"fast (in-process)": {"docs_per_s": 100.0}},
            "models": {"extractor": "smollm2-135m-instruct"},
            "llm_stage": {"documents": 2, "variants": variants,
                          "runs": {"llm": {"dropped_by_grounding": {"salary_min": 1}}}}, "meta": {"date": "d", "cpu": "c", "cores": 2, "memory_gib": 24.0, "gpus": []}}
    (tmp_path / "extract.json").write_text(json.dumps(data))
    text = render(tmp_path)
    assert "LLM stage with `smollm2-135m-instruct` on the 2 postings" in text
    assert "| title | 1.000 | 0.667 |" in text  # the LLM found one of two titles
    assert "| salary_min | 1.000 | 0.000 |" in text  # 18 is not 18.5, and 50000 was invented
    assert "| llm stage alone | 0.333 | 0.250 | 1 |" in text  # the LLM stage's own precision, and the invention
    assert "dropped by grounding: `llm` 1 (salary_min 1)" in text


def test_the_gpu_section_says_when_no_gpu_run_exists_and_renders_one_that_does(tmp_path):
    from serve.bench.report import render_gpu_check

    assert "No GPU run exists yet" in render_gpu_check(tmp_path)
    run = {
        "card": {"name": "NVIDIA H200", "memory_gib": 139.8, "bandwidth_gbs": 4915.0}, "quick": True,
        "plan": {"Extractor": 8.0, "Reasoner": 5.6}, "memory": {"Extractor": 7.7, "Reasoner": 5.4},
        "decode": {"qwen3-8b-awq": {"ttft_s": 0.05, "tokens_per_s": 410.0, "ceiling_tokens_per_s": 806.0}},
        "overhead": {"e2e_ratio_1_client": 1.03, "throughput_ratio_16": 0.97},
        "auto": {"auto_ttft_p50_s": 0.031, "named_ttft_p50_s": 0.022},
        "meta": {"date": "2026-12-01 10:00 UTC", "commit": "abc1234"},
    }
    (tmp_path / "gpu-check.json").write_text(json.dumps(run))
    text = render_gpu_check(tmp_path)
    assert "NVIDIA H200 (139.8 GiB" in text and "abc1234" in text and "gpu-check --quick" in text
    assert "| Extractor | 8.0 GiB | 7.7 GiB |" in text
    assert "| qwen3-8b-awq | 410.0 | 806.0 | 0.05 |" in text
    assert "e2e at one client ×1.03 (target ≤ 1.05), throughput at 16 ×0.97" in text
    assert "`auto` time to first token 0.031 s against 0.022 s" in text


def test_the_batch_suites_render_their_headline_figures(tmp_path):
    import json

    from serve.bench.report import render

    meta = {"date": "2026-12-07", "cpu": "x", "cores": 2, "memory_gib": 24, "commit": "abc"}
    phase = {"requests": 3, "ttft_p50_s": 0.05, "ttft_p99_s": 0.09, "samples_s": [0.05]}
    (tmp_path / "priority.json").write_text(json.dumps({
        "meta": meta, "model": "m", "batch_lines": 500, "idle": phase, "under_batch": {**phase, "ttft_p50_s": 0.06},
        "ttft_p50_ratio": 1.2, "ttft_p99_ratio": 1.0, "batch_lines_answered_during_phase": 7}))
    run = {"mode": "fast", "postings": 1000, "status": "completed", "seconds": 80.0, "completed": 1000, "failed": 0,
           "indexed": 1000, "postings_per_min": 750.0}
    (tmp_path / "batch.json").write_text(json.dumps({"meta": meta, "fast": run, "auto": None, "fast_postings_per_min": 750.0,
                                                     "auto_postings_per_min": None, "fast_bar_per_min": 600}))
    text = render(tmp_path)
    assert "**×1.2**" in text and "60 ms" in text and "**750.0**" in text
