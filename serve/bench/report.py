"""``python -m serve bench report``: the README's results tables, from the latest JSON.

Every suite writes ``<suite>.json`` (with the machine, date and commit) and a PNG into
one folder; this renders the figures that matter from whichever results are there into
``REPORT.md`` in that folder and into README.md between the ``bench:begin`` /
``bench:end`` markers, so the README never shows a number no result file backs.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any, Callable, Optional

from deployments.extraction.record import FIELDS
from serve.kernel.config import PROJECT_ROOT

BEGIN, END = "<!-- bench:begin -->", "<!-- bench:end -->"
GPU_BEGIN, GPU_END = "<!-- gpu-check:begin -->", "<!-- gpu-check:end -->"


def _load(folder: Path, suite: str) -> Optional[dict[str, Any]]:
    path = folder / f"{suite}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    meta = data.get("meta") or {}
    if "date" not in meta:
        meta["date"] = _committed_on(path)
    data["meta"] = meta
    return data


def _committed_on(path: Path) -> str:
    """When a result file without a recorded date was committed: its mtime is when it
    was checked out, which moved the load table's date on every clone."""
    import subprocess

    try:
        stamp = subprocess.run(["git", "log", "-1", "--format=%ct", "--", path.name], cwd=path.parent,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        stamp = ""
    if not stamp:
        return "date not recorded"
    return dt.datetime.fromtimestamp(int(stamp), dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC") + " (committed)"


def _machine(meta: dict[str, Any]) -> str:
    if "cpu" not in meta:
        return "machine not recorded"
    gpus = ", ".join(meta.get("gpus") or []) or "no GPU"
    return f"{meta['cpu']}, {meta['cores']} cores, {meta['memory_gib']} GiB, {gpus}"


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _overhead(data: dict[str, Any]) -> str:
    names = {"a": "(a) graph, `auto`", "b": "(b) graph, model named", "c": "(c) Ray Serve LLM app", "d": "(d) `vllm serve` alone",
             "d_again": "(d) again, at the end"}
    rows = []
    for key in ("d", "d_again", "c", "b", "a"):
        for r in data["targets"].get(key, {}).get("levels", []):
            ratio = data.get("ratios_vs_d", {}).get(key, {}).get(str(r["concurrency"]))
            rows.append([names[key], r["concurrency"], f"{r['ttft_p50_s'] * 1000:.0f} ms", f"{r['tpot_p50_ms']:.1f} ms",
                         f"{r['e2e_p50_s']:.2f} / {r['e2e_p99_s']:.2f} s", f"{r['throughput_tok_s']:.1f}",
                         f"×{ratio['e2e_p50']:.2f} / ×{ratio['throughput']:.2f}" if ratio else "—"])
    start = data.get("start", {})
    route = data["targets"]["a"].get("route")
    routed = f" `auto` sent the workload to {route['target']} ({route['reason']})." if route else ""
    drift = data.get("d_drift")
    drift_text = (" (d)'s second run against its first, per concurrency (e2e p50 / throughput): "
                  + ", ".join(f"c={c} ×{v['e2e_p50']:.2f} / ×{v['throughput']:.2f}" for c, v in drift.items())
                  + "; ratios are against the better (d) run.") if drift else ""
    text = (_table(["target", "concurrency", "TTFT p50", "TPOT p50", "e2e p50 / p99", "output tok/s", "vs (d): e2e p50 / throughput"], rows)
            + f"\n\nGraph start to `/readyz` 200: cold {start.get('cold_s')} s, warm {start.get('warm_s')} s.{routed}{drift_text}")
    census = [(names[key], r) for key in ("d", "c", "b", "a") for r in data["targets"].get(key, {}).get("levels", [])
              if r.get("cpu_ms_per_token")]
    if census:
        text += "\n\nCPU milliseconds per output token, by process (psutil, around each level):\n\n" + _table(
            ["target", "concurrency", "processes"],
            [[name, r["concurrency"], ", ".join(f"{group} {ms:.2f}" for group, ms in r["cpu_ms_per_token"].items() if ms >= 0.05)]
             for name, r in census])
    return text


def _index(data: dict[str, Any]) -> str:
    parts = []
    emb = data.get("embeddings")
    if emb:
        parts.append(f"Embeddings: {emb['graph_texts_per_s']} texts/s through `/v1/embeddings` against {emb['direct_texts_per_s']} "
                     f"in process on the same batches: **×{emb['ratio']:.2f}** (median of {emb.get('rounds', 1)} alternating rounds).")
    rows = [[f"{r['vectors']:,}", f"{r['flat']['p50_ms']} / {r['flat']['p99_ms']} ms", f"{r['hnsw']['p50_ms']} / {r['hnsw']['p99_ms']} ms",
             r["hnsw"]["recall_at_10"], f"{r['hnsw']['build_s']} s"] for r in data["search"]]
    parts.append(_table(["vectors (384-d)", "exact p50 / p99", "HNSW p50 / p99", "HNSW recall@10", "HNSW build"], rows))
    if data.get("http"):
        rows = [[f"{r['documents']:,}", r["index"], f"{r['p50_ms']} / {r['p99_ms']} ms", f"{r['ingest_docs_per_s']} docs/s"] for r in data["http"]]
        parts.append(_table(["documents", "index", "HTTP `/search` p50 / p99 (embedding the query included)", "ingest over HTTP"], rows))
    backends = data.get("backends")
    if backends:
        rows = [[f"{r['documents']:,}", name, f"{r[name]['ingest_docs_per_s']} docs/s",
                 f"{r[name]['search']['p50_ms']} / {r[name]['search']['p99_ms']} ms", r[name]["search"]["recall_at_10"],
                 f"{r[name]['filtered']['p50_ms']} / {r[name]['filtered']['p99_ms']} ms", r[name]["filtered"]["recall_at_10"]]
                for r in backends["sizes"] for name in ("embedded", "postgres")]
        parts.append("The collection stores side by side (same vectors, upserts and queries, one after the other; the "
                     "query already embedded):\n\n" + _table(
                         ["documents", "store", "ingest", "search p50 / p99", "recall@10", "filtered p50 / p99",
                          "filtered recall@10"], rows)
                     + "\n\n`postgres_vs_embedded`: " + ", ".join(f"{k} **{v}**" for k, v in backends["postgres_vs_embedded"].items()))
    over_http = (backends or {}).get("http")
    if over_http:
        rows = [[f"{r['documents']:,}", f"{name} ({r[name]['index']})", f"{r[name]['ingest_docs_per_s']} docs/s",
                 f"{r[name]['search']['p50_ms']} / {r[name]['search']['p99_ms']} ms", r[name]["search"]["recall_at_10"],
                 f"{r[name]['filtered']['p50_ms']} / {r[name]['filtered']['p99_ms']} ms", r[name]["filtered"]["recall_at_10"]]
                for r in over_http["sizes"] for name in ("embedded", "postgres")]
        parts.append("The same over HTTP, on the graph started once with each backend (ingest and `/search` through the "
                     "ingress, the query embedded by the graph; recall against an exact search over the same model's "
                     "embeddings):\n\n" + _table(
                         ["documents", "collections", "ingest over HTTP", "`/search` p50 / p99", "recall@10",
                          "filtered p50 / p99", "filtered recall@10"], rows)
                     + "\n\nOver HTTP, `postgres_vs_embedded`: "
                     + ", ".join(f"{k} **{v}**" for k, v in over_http["postgres_vs_embedded"].items()))
    return "\n\n".join(parts)


def _extract(data: dict[str, Any]) -> str:
    q = data["quality"]
    rows = [[label, f"{q[key]['micro']['precision']:.3f}", f"{q[key]['micro']['recall']:.3f}", f"**{q[key]['micro']['f1']:.3f}**"]
            for key, label in (("structured_data", "fields in structured data"), ("rules_on_text", "rules on html/text postings"), ("all_fields", "all fields, all documents"))]
    speed = ", ".join(f"{name}: {s['docs_per_s']} docs/s" for name, s in data["throughput"].items())
    worst = min(q["rules_on_text"]["fields"].items(), key=lambda kv: kv[1]["f1"])
    text = (_table(["fast mode, " + f"{q['documents']} postings", "precision", "recall", "F1"], rows)
            + f"\n\nLowest rules field: {worst[0]} F1 {worst[1]['f1']:.3f}. Salaries invented: {len(q['invented_salary'])}. Throughput — {speed}.")
    llm = data.get("llm_stage")
    if llm:
        names = list(llm["variants"])
        fields = sorted({f for v in llm["variants"].values() for f in v["fields"]}, key=lambda f: list(FIELDS).index(f))
        rows = [[f, *(_f1(llm["variants"][n]["fields"].get(f)) for n in names)] for f in fields]
        rows.append(["**micro**", *(f"**{llm['variants'][n]['micro']['f1']:.3f}**" for n in names)])
        extractor = data.get("models", {}).get("extractor", "the extractor")
        text += (f"\n\nLLM stage with `{extractor}` on the {llm['documents']} postings without structured data, F1 per field "
                 f"(\"llm stage alone\" scores only the values the LLM filled and grounding kept; \"(record)\" what the API returns):\n\n"
                 + _table(["field", *names], rows))
        micro = [[n, f"{v['micro']['precision']:.3f}", f"{v['micro']['recall']:.3f}",
                  "-" if v.get("invented_salary") is None else str(len(v["invented_salary"]))]
                 for n, v in llm["variants"].items()]
        text += "\n\n" + _table(["variant", "precision", "recall", "salaries invented"], micro)
        dropped = {mode: run.get("dropped_by_grounding") for mode, run in llm.get("runs", {}).items()}
        if any(v is not None for v in dropped.values()):
            text += "\n\nValues the LLM proposed that the posting does not support, dropped by grounding: " + "; ".join(
                f"`{mode}` {sum((d or {}).values())} ({', '.join(f'{f} {n}' for f, n in (d or {}).items()) or 'none'})"
                for mode, d in dropped.items()) + "."
    return text


def _f1(metrics: Optional[dict[str, Any]]) -> str:
    return "-" if metrics is None else f"{metrics['f1']:.3f}"


def _router(data: dict[str, Any]) -> str:
    rows = [[name, r["accuracy"], r["reasoner_share"], f"{r['latency_ms_p50']} / {r['latency_ms_p99']} ms"] for name, r in data["policies"].items()]
    text = _table(["policy", "accuracy", f"sent to reasoner (true {data['reasoner_share_true']})", "decision p50 / p99"], rows)
    policies = [name for name, r in data["policies"].items() if "category_accuracy" in r]
    if policies:
        categories = sorted({c for name in policies for c in data["policies"][name]["category_accuracy"]})
        rows = [[c, *(f"{data['policies'][name]['category_accuracy'].get(c, '-')}" for name in policies)] for c in categories]
        text += "\n\nAccuracy by category:\n\n" + _table(["category", *policies], rows)
    emb = data.get("embedding")
    if emb:
        text += (f"\n\nEmbedding one prompt (part of the semantic and hybrid decisions), same prompts in the same run: "
                 f"ONNX Runtime{' with int8 weights (the router’s own copy)' if data.get('encoder_backend') == 'onnx-int8' else ''} p50 {emb['onnx']['p50_ms']} / p99 {emb['onnx']['p99_ms']} ms against PyTorch "
                 f"p50 {emb['torch']['p50_ms']} / p99 {emb['torch']['p99_ms']} ms.")
    return text


def _load_suite(data: dict[str, Any]) -> str:
    rows = [[r["model"], r["nominal_rps"], r["offered_rps"], r["goodput_rps"], f"{r['latency_p50_s']} / {r['latency_p99_s']} s",
             ", ".join(f"{k}×{v}" for k, v in sorted(r["statuses"].items()))] for r in data["results"]]
    return _table(["model", "nominal rps", "offered", "goodput", "p50 / p99", "statuses"], rows)


def _cpu_share(data: dict[str, Any]) -> str:
    rows = [[group, f"{seconds:.2f}"] for group, seconds in data["cpu_s_by_group"].items()]
    return (_table(["process", "CPU s"], rows)
            + f"\n\n{data['documents']} HTML postings ({data['document_kib']} KiB each) in batches of "
              f"{data['batch_documents']}, `{data['mode']}` mode, {data['docs_per_s']} documents/s: the ingress used "
              f"**{100 * data['ingress_share']:.0f}%** of the serving processes' CPU time.")


def _switch(data: dict[str, Any]) -> str:
    from serve.bench.switch import SCENARIOS

    rows = []
    for model, row in data["models"].items():
        for scenario in SCENARIOS:
            cell = row["scenarios"][scenario]
            if cell["n"]:
                wake = f"{cell['wake_ms_p50']:.0f} ms" if cell["wake_ms_p50"] is not None else "-"
                rows.append([model, row["mechanism"], scenario, f"{cell['ttft_p50_s']} s", f"{cell['ttft_max_s']} s", wake, cell["n"]])
    return (_table(["model", "sleeps by", "before the request", "TTFT p50", "TTFT max", "x-model-wake-ms p50", "n"], rows)
            + f"\n\nProfile `{data['profile']}`; `resident` is the always-awake extractor ({data['resident_model']}) in the "
              "same rounds. `after eviction`: the model had been put to sleep to make room for another, and the request "
              "first puts that one to sleep again.")


def _priority(data: dict[str, Any]) -> str:
    idle, loaded = data["idle"], data["under_batch"]
    rows = [["idle", f"{idle['ttft_p50_s'] * 1000:.0f} ms", f"{idle['ttft_p99_s'] * 1000:.0f} ms", idle["requests"]],
            [f"a {data['batch_lines']}-line batch running", f"{loaded['ttft_p50_s'] * 1000:.0f} ms",
             f"{loaded['ttft_p99_s'] * 1000:.0f} ms", loaded["requests"]]]
    return (_table(["graph", "interactive TTFT p50", "p99", "requests"], rows)
            + f"\n\nOne interactive client, streaming chat to `{data['model']}`; p50 under the batch is "
              f"**×{data['ttft_p50_ratio']}** the idle p50 (goal ≤ 1.5), p99 ×{data['ttft_p99_ratio']}; the batch "
              f"answered {data['batch_lines_answered_during_phase']} lines meanwhile.")


def _batch(data: dict[str, Any]) -> str:
    rows = [[r["mode"], r["postings"], r["status"], f"{r['seconds']} s", r["completed"], r["failed"], r["indexed"],
             f"**{r['postings_per_min']}**"] for r in (data["fast"], data["auto"]) if r]
    return (_table(["mode", "postings", "status", "upload → completed", "answered", "failed", "indexed", "postings/min"], rows)
            + f"\n\nEach posting extracted and indexed into a collection (batch `metadata.collection`); "
              f"the fast-mode bar is {data['fast_bar_per_min']} a minute.")


SUITES: dict[str, tuple[str, str, Callable[[dict[str, Any]], str]]] = {
    "overhead": ("Overhead against the engine alone", "python -m serve bench overhead", _overhead),
    "index": ("Embeddings and vector search", "python -m serve bench index --backends --http-backends --http-sizes 10000", _index),
    "extract": ("Extraction", "python -m serve bench extract --url http://127.0.0.1:8000", _extract),
    "router": ("Routing", "python -m serve bench router", _router),
    "load": ("Load", "python -m serve bench load", _load_suite),
    "cpu_share": ("Where the CPU goes during extraction", "python -m serve bench cpu-share", _cpu_share),
    "switch": ("Model switches", "python -m serve bench switch (graph on cpu-swap)", _switch),
    "priority": ("People first under a running batch", "python -m serve bench priority", _priority),
    "batch": ("Bulk postings through the Batch API", "python -m serve bench batch", _batch),
}


def render(folder: Path) -> str:
    """The markdown block for every suite with a result in ``folder``."""
    blocks = []
    for suite, (title, command, fmt) in SUITES.items():
        data = _load(folder, suite)
        if data is None:
            continue
        meta = data["meta"]
        blocks.append(f"#### {title}\n\n`{command}` — {meta['date']}, {_machine(meta)}, commit {meta.get('commit', '?')}; "
                      f"plot: `{folder.name}/{suite}.png`\n\n{fmt(data)}")
    return "\n\n".join(blocks) if blocks else "_No results yet: run the benchmarks._"


def render_gpu_check(folder: Path) -> str:
    """The README's "Verified on a GPU" block: the last gpu-check run, or that none exists."""
    data = _load(folder, "gpu-check")
    if data is None:
        return ("_No GPU run exists yet._ The GPU profiles' plans are computed from the models' published "
                "architectures and checked by `python -m serve gpu-check --dry-run` in the test suite; nothing of "
                "them has been measured on a card.")
    meta, card = data["meta"], data["card"]
    lines = [f"`python -m serve gpu-check{' --quick' if data.get('quick') else ''}` — {meta['date']}, "
             f"{card['name']} ({card['memory_gib']} GiB, ~{card['bandwidth_gbs']:.0f} GB/s), commit {meta.get('commit', '?')}"]
    if data.get("stopped_at"):
        lines.append(f"\nThe run stopped at step `{data['stopped_at']}`.")
    rows = [[name, f"{plan} GiB", f"{data.get('memory', {}).get(name, '-')} GiB"] for name, plan in data.get("plan", {}).items()]
    if rows:
        lines.append("\n" + _table(["engine", "plan", "NVML"], rows))
    rows = [[model, r["tokens_per_s"], r["ceiling_tokens_per_s"], r["ttft_s"]] for model, r in data.get("decode", {}).items()]
    if rows:
        lines.append("\n" + _table(["model", "decode tokens/s (1 stream)", "bandwidth ceiling", "TTFT s"], rows))
    overhead, auto = data.get("overhead"), data.get("auto")
    if overhead:
        lines.append(f"\nThe graph with the model named against `vllm serve` alone, same engine arguments and memory: "
                     f"e2e at one client ×{overhead['e2e_ratio_1_client']} (target ≤ 1.05), throughput at 16 "
                     f"×{overhead['throughput_ratio_16']} (target ≥ 0.95).")
    if auto:
        lines.append(f"\n`auto` time to first token {auto['auto_ttft_p50_s']} s against {auto['named_ttft_p50_s']} s "
                     "with the model named.")
    return "\n".join(lines)


def _replace_between(text: str, begin: str, end: str, block: str) -> str:
    if begin not in text or end not in text:
        return text
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{block}\n{end}{tail}"


def run(args) -> int:
    """Entry point for ``python -m serve bench report``."""
    folder = Path(args.results)
    block = render(folder)
    (folder / "REPORT.md").write_text(f"# Benchmark results\n\n{block}\n")
    readme = PROJECT_ROOT / "README.md"
    text = readme.read_text()
    if BEGIN in text and END in text and not args.no_readme:
        text = _replace_between(text, BEGIN, END, block)
        readme.write_text(_replace_between(text, GPU_BEGIN, GPU_END, render_gpu_check(folder)))
        print(f"updated {readme} and {folder / 'REPORT.md'}")
    else:
        print(f"wrote {folder / 'REPORT.md'}")
    return 0
