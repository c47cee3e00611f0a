"""``python -m serve bench extract``: extraction quality and speed on the project corpus.

Quality: ``fast`` mode over the hand-labelled corpus (``tests/data/postings``), scored
per field as precision / recall / F1 in three buckets — fields the page's structured
data states (``jsonld`` and ``microdata`` documents), the rules fields on postings with
no structured data (``html`` and ``text``), and everything. A predicted value counts
only when it equals the gold value; a value where the gold is null is a false positive
(an invented salary is counted separately too).

The LLM stage, when a graph is running at ``--url``: on the postings with no structured
data (``html`` and ``text``), per-field P/R/F1 of ``mode: llm`` (the extractor fills what
the rules left empty) scored twice — the record users get and the LLM stage alone (only
the fields whose source is ``llm``, i.e. what grounding kept) — and of ``mode: auto``
(the model the router picks fills the gaps), next to ``fast`` on the same postings: the
baseline a bigger model must beat. What grounding dropped (values the document does not
support, reported under ``unsupported``) is counted per field.

Speed: documents/s for ``fast`` in-process (the pipeline's own cost), and, when a graph
is running at ``--url``, documents/s through ``POST /v1/extract/batch`` for ``fast`` and
for ``auto`` (which calls the LLM for the gaps) on the same documents, side by side.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Optional

import yaml

from deployments.extraction.pipeline import PipelineLimits, extract_job_posting
from deployments.extraction.record import FIELDS, SALARY_FIELDS
from serve.bench.meta import loopback_client, save_results

CORPUS_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "postings"
RULES_FIELDS = (*SALARY_FIELDS, "remote", "workplace_type", "employment_type")
STRUCTURED_KINDS = ("jsonld", "microdata")


def load_corpus(directory: Path = CORPUS_DIR) -> list[dict[str, Any]]:
    """Every labelled document, in file then document order."""
    docs = []
    for path in sorted(directory.glob("*.yaml")):
        docs.extend(yaml.safe_load(path.read_text(encoding="utf-8")))
    ids = [d["id"] for d in docs]
    if len(set(ids)) != len(ids):
        raise ValueError("duplicate document ids in the corpus")
    return docs


def _same(field: str, predicted: Any, gold: Any) -> bool:
    if field == "skills":
        return {s.lower() for s in predicted} == {s.lower() for s in gold}
    if isinstance(gold, str) and isinstance(predicted, str):
        return predicted.strip().casefold() == gold.strip().casefold()
    return predicted == gold


class _Tally:
    def __init__(self) -> None:
        self.tp: dict[str, int] = defaultdict(int)
        self.fp: dict[str, int] = defaultdict(int)
        self.fn: dict[str, int] = defaultdict(int)

    def add(self, field: str, predicted: Any, gold: Any) -> None:
        if predicted is not None and gold is not None and _same(field, predicted, gold):
            self.tp[field] += 1
            return
        if predicted is not None:
            self.fp[field] += 1
        if gold is not None:
            self.fn[field] += 1

    @staticmethod
    def _prf(tp: int, fp: int, fn: int) -> dict[str, Any]:
        precision = tp / (tp + fp) if tp + fp else 1.0
        recall = tp / (tp + fn) if tp + fn else 1.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4), "tp": tp, "fp": fp, "fn": fn}

    def report(self) -> dict[str, Any]:
        fields = sorted(set(self.tp) | set(self.fp) | set(self.fn), key=FIELDS.index)
        out = {"fields": {f: self._prf(self.tp[f], self.fp[f], self.fn[f]) for f in fields}}
        out["micro"] = self._prf(sum(self.tp.values()), sum(self.fp.values()), sum(self.fn.values()))
        return out


def score(corpus: list[dict[str, Any]], predictions: dict[str, Optional[dict[str, Any]]]) -> dict[str, Any]:
    """Per-field P/R/F1 in the structured, rules and overall buckets, and by document kind."""
    structured, rules, overall = _Tally(), _Tally(), _Tally()
    by_kind: dict[str, _Tally] = defaultdict(_Tally)
    invented_salary, failed = [], []
    for doc in corpus:
        predicted = predictions.get(doc["id"])
        if predicted is None:
            failed.append(doc["id"])
            predicted = {}
        gold = doc["gold"]
        for field in FIELDS:
            overall.add(field, predicted.get(field), gold.get(field))
            by_kind[doc["kind"]].add(field, predicted.get(field), gold.get(field))
        if doc["kind"] in STRUCTURED_KINDS:
            for field in doc.get("structured_fields", []):
                structured.add(field, predicted.get(field), gold.get(field))
        else:
            for field in RULES_FIELDS:
                rules.add(field, predicted.get(field), gold.get(field))
        if all(gold.get(f) is None for f in SALARY_FIELDS) and any(predicted.get(f) is not None for f in SALARY_FIELDS):
            invented_salary.append(doc["id"])
    return {
        "documents": len(corpus),
        "kinds": {k: sum(d["kind"] == k for d in corpus) for k in sorted({d["kind"] for d in corpus})},
        "structured_data": structured.report(),
        "rules_on_text": rules.report(),
        "all_fields": overall.report(),
        "by_kind": {kind: tally.report()["micro"] for kind, tally in sorted(by_kind.items())},
        "invented_salary": invented_salary,
        "failed": failed,
    }


def predict_fast(corpus: list[dict[str, Any]], limits: PipelineLimits) -> dict[str, Optional[dict[str, Any]]]:
    """``fast``-mode records for every document (``None`` where extraction failed)."""
    from deployments.extraction.pipeline import ExtractionFailed

    async def one(doc: dict[str, Any]) -> Optional[dict[str, Any]]:
        try:
            return (await extract_job_posting(doc["document"], mode="fast", limits=limits)).data
        except ExtractionFailed:
            return None

    async def every() -> dict[str, Optional[dict[str, Any]]]:
        return {doc["id"]: await one(doc) for doc in corpus}

    return asyncio.run(every())


def fast_throughput(corpus: list[dict[str, Any]], limits: PipelineLimits, *, seconds: float) -> dict[str, Any]:
    """In-process ``fast`` documents/s: the corpus over and over for about ``seconds``."""

    async def loop() -> tuple[int, float]:
        done, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            for doc in corpus:
                try:
                    await extract_job_posting(doc["document"], mode="fast", limits=limits)
                except Exception:  # noqa: BLE001 - a failure still costs its time
                    pass
                done += 1
        return done, time.perf_counter() - started

    asyncio.run(loop())  # warm-up: imports, regex compilation, dateparser's language data
    done, elapsed = asyncio.run(loop())
    return {"documents": done, "seconds": round(elapsed, 3), "docs_per_s": round(done / elapsed, 1)}


def http_predictions(url: str, corpus: list[dict[str, Any]], mode: str, *, api_key: Optional[str], batch_size: int,
                     timeout_s: float) -> tuple[dict[str, Optional[dict[str, Any]]], dict[str, Optional[dict[str, Any]]], dict[str, Any]]:
    """Records from ``/v1/extract/batch`` in ``mode``: whole, and the LLM's fields alone.

    Returns:
        (records, llm_fields, meta): by document id (``None`` where the item failed), and
        the models that answered with the item statuses.
    """
    records: dict[str, Optional[dict[str, Any]]] = {}
    llm_fields: dict[str, Optional[dict[str, Any]]] = {}
    statuses: dict[str, int] = defaultdict(int)
    targets: dict[str, int] = defaultdict(int)
    dropped: dict[str, int] = defaultdict(int)
    started = time.perf_counter()
    with loopback_client(url, api_key=api_key, timeout_s=timeout_s, suite="extract") as client:
        for i in range(0, len(corpus), batch_size):
            chunk = corpus[i:i + batch_size]
            response = client.post("/v1/extract/batch", json={"documents": [{"document": d["document"]} for d in chunk], "mode": mode})
            response.raise_for_status()
            for doc, item in zip(chunk, sorted(response.json()["results"], key=lambda r: r["index"])):
                statuses[str(item["status"])] += 1
                result = item.get("result") if item["status"] == 200 else None
                records[doc["id"]] = result["data"] if result else None
                llm_fields[doc["id"]] = {k: v for k, v in result["data"].items() if result["sources"].get(k) == "llm"} if result else None
                if result and (result.get("route") or {}).get("target"):
                    targets[result["route"]["target"]] += 1
                for field in (result or {}).get("unsupported") or {}:
                    dropped[field] += 1
    meta = {"mode": mode, "statuses": dict(statuses), "answered_by": dict(targets),
            "dropped_by_grounding": dict(sorted(dropped.items())), "seconds": round(time.perf_counter() - started, 1)}
    return records, llm_fields, meta


def llm_stage_quality(url: str, corpus: list[dict[str, Any]], fast: dict[str, Optional[dict[str, Any]]], *,
                      api_key: Optional[str], batch_size: int, timeout_s: float) -> dict[str, Any]:
    """Per-field P/R/F1 of the LLM stage on the postings with no structured data."""
    text_only = [d for d in corpus if d["kind"] not in STRUCTURED_KINDS]
    llm_records, llm_alone, llm_meta = http_predictions(url, text_only, "llm", api_key=api_key, batch_size=batch_size, timeout_s=timeout_s)
    auto_records, _, auto_meta = http_predictions(url, text_only, "auto", api_key=api_key, batch_size=batch_size, timeout_s=timeout_s)
    scored = {
        "fast": score(text_only, {d["id"]: fast.get(d["id"]) for d in text_only}),
        "llm stage alone": score(text_only, llm_alone),
        "llm (record)": score(text_only, llm_records),
        "auto (record)": score(text_only, auto_records),
    }
    return {
        "documents": len(text_only),
        "kinds": sorted({d["kind"] for d in text_only}),
        "runs": {"llm": llm_meta, "auto": auto_meta},
        "variants": {name: {"fields": r["all_fields"]["fields"], "micro": r["all_fields"]["micro"],
                            "invented_salary": r["invented_salary"], "failed": r["failed"]} for name, r in scored.items()},
    }


def http_throughput(url: str, corpus: list[dict[str, Any]], mode: str, *, api_key: Optional[str], rounds: int, batch_size: int, timeout_s: float) -> dict[str, Any]:
    """Documents/s through ``POST /v1/extract/batch`` on a running graph."""
    documents = [{"document": d["document"]} for d in corpus]
    statuses: dict[str, int] = defaultdict(int)
    with loopback_client(url, api_key=api_key, timeout_s=timeout_s, suite="extract") as client:
        client.post("/v1/extract/batch", json={"documents": documents[:2], "mode": mode})  # warm-up
        done, started = 0, time.perf_counter()
        for _ in range(rounds):
            for i in range(0, len(documents), batch_size):
                chunk = documents[i:i + batch_size]
                response = client.post("/v1/extract/batch", json={"documents": chunk, "mode": mode})
                response.raise_for_status()
                for item in response.json()["results"]:
                    statuses[str(item["status"])] += 1
                done += len(chunk)
        elapsed = time.perf_counter() - started
    return {"mode": mode, "documents": done, "seconds": round(elapsed, 3), "docs_per_s": round(done / elapsed, 2), "statuses": dict(statuses)}


def _plot_llm_stage(axis, llm_stage: dict[str, Any], extractor: str) -> None:
    variants = llm_stage["variants"]
    fields = list(FIELDS)
    width = 0.8 / len(variants)
    for i, (name, variant) in enumerate(variants.items()):
        xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(fields))]
        axis.bar(xs, [variant["fields"].get(f, {}).get("f1", 0) for f in fields], width, label=f"{name}: micro F1 {variant['micro']['f1']:.3f}")
    axis.set_xticks(range(len(fields)), fields, rotation=45, ha="right")
    axis.set(ylim=(0, 1.05), ylabel="F1", title=f"LLM stage ({extractor}), {llm_stage['documents']} postings without structured data")
    axis.legend(fontsize=8, loc="lower left")


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = results["quality"]
    llm_stage = results.get("llm_stage")
    if llm_stage:
        fig, (left, middle, right) = plt.subplots(1, 3, figsize=(19, 5), gridspec_kw={"width_ratios": [3, 3, 1]})
        _plot_llm_stage(middle, llm_stage, results.get("models", {}).get("extractor", "extractor"))
    else:
        fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5), gridspec_kw={"width_ratios": [3, 1]})
    buckets = [("structured_data", "structured data (jsonld, microdata)"), ("rules_on_text", "rules (html, text)")]
    fields = list(FIELDS)
    width = 0.4
    for i, (key, label) in enumerate(buckets):
        per_field = quality[key]["fields"]
        xs = [j + (i - 0.5) * width for j in range(len(fields))]
        left.bar(xs, [per_field.get(f, {}).get("f1", 0) if f in per_field else 0 for f in fields], width, label=f"{label}: micro F1 {quality[key]['micro']['f1']:.3f}")
    left.axhline(0.95, color="tab:blue", linestyle=":", linewidth=1)
    left.axhline(0.85, color="tab:orange", linestyle=":", linewidth=1)
    left.set_xticks(range(len(fields)), fields, rotation=45, ha="right")
    left.set(ylim=(0, 1.05), ylabel="F1", title=f"fast mode, {quality['documents']} labelled postings")
    left.legend(fontsize=8, loc="lower left")
    speeds = results["throughput"]
    names = list(speeds)
    right.bar(names, [speeds[n]["docs_per_s"] for n in names], color=["tab:green", "tab:olive", "tab:red"][: len(names)])
    right.set_yscale("log")
    right.set(ylabel="documents/s (log)", title="throughput")
    right.tick_params(axis="x", rotation=30)
    for x, name in enumerate(names):
        right.text(x, speeds[name]["docs_per_s"], f"{speeds[name]['docs_per_s']:.1f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    """Entry point for ``python -m serve bench extract``."""
    from serve.kernel.config import load_profile

    profile = load_profile(args.profile)
    limits = PipelineLimits.from_profile(profile)
    corpus = load_corpus(Path(args.data))
    fast = predict_fast(corpus, limits)
    quality = score(corpus, fast)
    throughput = {"fast (in-process)": fast_throughput(corpus, limits, seconds=args.seconds)}
    llm_stage = None
    if args.url:
        llm_stage = llm_stage_quality(args.url, corpus, fast, api_key=args.api_key, batch_size=args.batch_size, timeout_s=args.timeout)
        throughput["fast (HTTP batch)"] = http_throughput(args.url, corpus, "fast", api_key=args.api_key, rounds=args.rounds, batch_size=args.batch_size, timeout_s=args.timeout)
        throughput["auto (HTTP batch)"] = http_throughput(args.url, corpus, "auto", api_key=args.api_key, rounds=1, batch_size=args.batch_size, timeout_s=args.timeout)
    results = {"profile": profile.name, "models": {"extractor": profile.extractor.model_id, "reasoner": profile.reasoner.model_id},
               "data": str(args.data), "quality": quality, "throughput": throughput}
    if llm_stage:
        results["llm_stage"] = llm_stage
    for key in ("structured_data", "rules_on_text", "all_fields"):
        micro = quality[key]["micro"]
        print(f"{key:>16}: P {micro['precision']:.3f} R {micro['recall']:.3f} F1 {micro['f1']:.3f}")
    for field, m in quality["rules_on_text"]["fields"].items():
        print(f"{'':>18}{field:<16} F1 {m['f1']:.3f} (tp {m['tp']} fp {m['fp']} fn {m['fn']})")
    print(f"invented salaries: {quality['invented_salary'] or 'none'}; failed: {quality['failed'] or 'none'}")
    for name, speed in throughput.items():
        print(f"{name:>20}: {speed['docs_per_s']} documents/s")
    if llm_stage:
        print(f"LLM stage on {llm_stage['documents']} postings without structured data (F1 per field):")
        print(f"{'':>18}{'field':<16}" + "".join(f"{name:>17}" for name in llm_stage["variants"]))
        for field in FIELDS:
            cells = [llm_stage["variants"][name]["fields"].get(field, {}).get("f1") for name in llm_stage["variants"]]
            print(f"{'':>18}{field:<16}" + "".join(f"{'-' if c is None else format(c, '.3f'):>17}" for c in cells))
        for name, run in llm_stage["runs"].items():
            print(f"{'':>18}mode {name}: answered by {run['answered_by']}; dropped by grounding {run['dropped_by_grounding'] or 'none'}")
        for name, variant in llm_stage["variants"].items():
            micro = variant["micro"]
            print(f"{'':>18}{name:<16} micro P {micro['precision']:.3f} R {micro['recall']:.3f} F1 {micro['f1']:.3f};"
                  f" invented salaries {len(variant['invented_salary'])}")
    save_results(args.out, "extract", results, plot)
    return 0
