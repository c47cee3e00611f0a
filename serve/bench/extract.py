"""``python -m serve bench extract``: extraction quality and speed on the project corpus.

Quality: ``fast`` mode over the hand-labelled corpus (``tests/data/postings``), scored
per field as precision / recall / F1 in three buckets — fields the page's structured
data states (``jsonld`` and ``microdata`` documents), the rules fields on postings with
no structured data (``html`` and ``text``), and everything. A predicted value counts
only when it equals the gold value; a value where the gold is null is a false positive
(an invented salary is counted separately too).

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
from deployments.extraction.record import FIELDS
from serve.bench.meta import save_results

CORPUS_DIR = Path(__file__).resolve().parents[2] / "tests" / "data" / "postings"
RULES_FIELDS = ("salary_min", "salary_max", "salary_currency", "salary_period", "remote", "workplace_type", "employment_type")
STRUCTURED_KINDS = ("jsonld", "microdata")
SALARY_FIELDS = ("salary_min", "salary_max", "salary_currency", "salary_period")


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


def http_throughput(url: str, corpus: list[dict[str, Any]], mode: str, *, api_key: Optional[str], rounds: int, batch_size: int, timeout_s: float) -> dict[str, Any]:
    """Documents/s through ``POST /v1/extract/batch`` on a running graph."""
    import httpx

    from serve.exposure import is_loopback
    from urllib.parse import urlparse

    if not is_loopback(urlparse(url).hostname or ""):
        raise SystemExit("bench extract only calls a graph on loopback")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    documents = [{"document": d["document"]} for d in corpus]
    statuses: dict[str, int] = defaultdict(int)
    with httpx.Client(base_url=url, headers=headers, timeout=timeout_s) as client:
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


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    quality = results["quality"]
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
    from serve.config import load_profile

    profile = load_profile(args.profile)
    limits = profile.extraction.pipeline_limits(profile.extractor, profile.reasoner)
    corpus = load_corpus(Path(args.data))
    quality = score(corpus, predict_fast(corpus, limits))
    throughput = {"fast (in-process)": fast_throughput(corpus, limits, seconds=args.seconds)}
    if args.url:
        throughput["fast (HTTP batch)"] = http_throughput(args.url, corpus, "fast", api_key=args.api_key, rounds=args.rounds, batch_size=args.batch_size, timeout_s=args.timeout)
        throughput["auto (HTTP batch)"] = http_throughput(args.url, corpus, "auto", api_key=args.api_key, rounds=1, batch_size=args.batch_size, timeout_s=args.timeout)
    results = {"profile": profile.name, "data": str(args.data), "quality": quality, "throughput": throughput}
    for key in ("structured_data", "rules_on_text", "all_fields"):
        micro = quality[key]["micro"]
        print(f"{key:>16}: P {micro['precision']:.3f} R {micro['recall']:.3f} F1 {micro['f1']:.3f}")
    for field, m in quality["rules_on_text"]["fields"].items():
        print(f"{'':>18}{field:<16} F1 {m['f1']:.3f} (tp {m['tp']} fp {m['fp']} fn {m['fn']})")
    print(f"invented salaries: {quality['invented_salary'] or 'none'}; failed: {quality['failed'] or 'none'}")
    for name, speed in throughput.items():
        print(f"{name:>20}: {speed['docs_per_s']} documents/s")
    save_results(args.out, "extract", results, plot)
    return 0
