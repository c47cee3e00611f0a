"""``python -m serve bench router``: how well each routing policy routes, and how fast.

On the labeled evaluation set (``tests/data/router_eval.jsonl``; none of its prompts is
an exemplar) every policy scores every prompt. Reported per policy: accuracy at the
profile's threshold, the confusion matrix, the share sent to the reasoner, and decision
latency p50/p99 — for ``semantic`` and ``hybrid`` that includes embedding the prompt's
first ``router.embed_chars`` characters with the encoder the Embedder deployment builds
(in process, so the figure is the policy's own cost; the deployment adds one local Ray
call). With the ONNX backend, PyTorch embeds the same prompts in the same run as the
baseline. A threshold sweep gives the PNG: accuracy against the share of traffic sent
to the (expensive) reasoner.
"""

from __future__ import annotations

import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from deployments.router.decision import decide

from deployments.router.exemplars import load_exemplars
from deployments.router.features import text_to_embed
from deployments.router.policies import ExemplarVectors, make_policy
from serve.bench.meta import save_results
from serve.bench.stats import percentile
from serve.kernel.config import CONFIGS_DIR, load_profile
from serve.kernel.routing import RouteInput, RouteTargets

POLICIES = ("heuristic", "semantic", "hybrid")


def encoder_backend(encoder) -> str:
    from deployments.embedder.onnx_encoder import OnnxEncoder

    if not isinstance(encoder, OnnxEncoder):
        return "torch"
    return "onnx-int8" if encoder.int8 else "onnx"


def load_eval(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def evaluate(policy, rows: list[dict], encoder, threshold: float, targets: RouteTargets, embed_chars: int) -> dict:
    """Score every row; returns accuracy, confusion, reasoner share, latency, and scores."""
    scores, latencies = [], []
    confusion = {"extractor": {"extractor": 0, "reasoner": 0}, "reasoner": {"extractor": 0, "reasoner": 0}}
    by_category: dict[str, list[int]] = {}
    for row in rows:
        request = RouteInput(text=row["prompt"], last_user_text=row["prompt"])
        started = time.perf_counter()
        if policy.needs_embedding:
            vector = encoder.encode([text_to_embed(request, embed_chars)])[0]
            request = replace(request, embedding=tuple(vector.tolist()))
        decision = decide(request, policy=policy, threshold=threshold, targets=targets)
        latencies.append((time.perf_counter() - started) * 1000)
        scores.append(decision.score)
        confusion[row["label"]][decision.role] += 1
        by_category.setdefault(row.get("category", "-"), []).append(int(decision.role == row["label"]))
    correct = confusion["extractor"]["extractor"] + confusion["reasoner"]["reasoner"]
    return {
        "accuracy": round(correct / len(rows), 4),
        "confusion": confusion,
        "reasoner_share": round((confusion["extractor"]["reasoner"] + confusion["reasoner"]["reasoner"]) / len(rows), 4),
        "category_accuracy": {name: round(sum(hits) / len(hits), 4) for name, hits in sorted(by_category.items())},
        "latency_ms_p50": round(statistics.median(latencies), 3),
        "latency_ms_p99": round(percentile(latencies, 0.99), 3),
        "scores": scores,
    }


def embedding_latency(encoders: dict, texts: list[str], rounds: int = 3) -> dict:
    """Per-prompt embedding latency of each backend, interleaved round by round so
    machine noise hits both alike (the baseline for the ONNX backend is PyTorch)."""
    samples: dict[str, list[float]] = {name: [] for name in encoders}
    for _ in range(rounds):
        for name, encoder in encoders.items():
            for text in texts:
                started = time.perf_counter()
                encoder.encode([text])
                samples[name].append((time.perf_counter() - started) * 1000)
    return {name: {"p50_ms": round(statistics.median(v), 3), "p99_ms": round(percentile(v, 0.99), 3)} for name, v in samples.items()}


def sweep(scores: list[float], labels: list[str]) -> list[dict]:
    """Accuracy and reasoner share for thresholds from 0 to 1."""
    out = []
    truth = np.array([label == "reasoner" for label in labels])
    values = np.array(scores)
    for threshold in np.linspace(0, 1, 51):
        pred = values >= threshold
        out.append({
            "threshold": round(float(threshold), 2),
            "accuracy": round(float((pred == truth).mean()), 4),
            "reasoner_share": round(float(pred.mean()), 4),
        })
    return out


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    for name, result in results["policies"].items():
        points = sorted(result["sweep"], key=lambda p: p["reasoner_share"])
        ax.plot([p["reasoner_share"] for p in points], [p["accuracy"] for p in points], label=f"{name} (acc {result['accuracy']:.2f} @ {results['threshold']})")
        ax.scatter([result["reasoner_share"]], [result["accuracy"]], marker="o")
    truth_share = results["reasoner_share_true"]
    ax.axvline(truth_share, color="grey", linestyle=":", label=f"true reasoner share {truth_share:.2f}")
    ax.set(xlabel="share of traffic sent to the reasoner", ylabel="routing accuracy", title="Routing quality vs reasoner share (threshold sweep)", ylim=(0.3, 1.0))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    """Entry point for ``python -m serve bench router``."""
    from deployments.embedder.encoder import make_encoder
    from serve.kernel.sources import resolve_source
    from serve.kernel.settings import load_settings

    profile = load_profile(args.profile)
    spec = profile.router
    rows = load_eval(Path(args.data))
    exemplars = load_exemplars(CONFIGS_DIR / spec.exemplars)
    overlap = {e.prompt for e in exemplars} & {r["prompt"] for r in rows}
    if overlap:
        raise SystemExit(f"{len(overlap)} evaluation prompts are also exemplars; the figures would be inflated")

    cache_dir = load_settings().cache_dir
    # The encoder the Router embeds with: its own copy (int8 where the profile says so), or
    # the one the Embedder deployment builds from this profile (backend included).
    int8 = spec.embed_int8 and spec.embeds_in_process(profile.embedder)
    encoder = make_encoder(profile.embedder, resolve_source(profile.embedder.source, cache_dir=cache_dir), cache_dir=cache_dir,
                           int8=int8)
    vectors = ExemplarVectors(
        vectors=encoder.encode([e.prompt[: spec.embed_chars] for e in exemplars]),
        labels=tuple(int(e.label == "reasoner") for e in exemplars),
        categories=tuple(e.category for e in exemplars),
        multilingual=profile.embedder.multilingual,
    )
    targets = RouteTargets(profile.extractor.model_id, profile.reasoner.model_id, profile.extractor.max_model_len, profile.reasoner.max_model_len)
    encoder.encode(["warm-up"])  # first call pays one-off allocation costs
    results = {
        "data": str(args.data), "prompts": len(rows), "exemplars": len(exemplars),
        "threshold": spec.threshold, "encoder_backend": encoder_backend(encoder), "embed_chars": spec.embed_chars,
        "reasoner_share_true": round(sum(r["label"] == "reasoner" for r in rows) / len(rows), 4),
        "policies": {},
    }
    if encoder_backend(encoder).startswith("onnx"):
        from deployments.embedder.encoder import SentenceTransformerEncoder

        baseline = SentenceTransformerEncoder(
            resolve_source(profile.embedder.source, cache_dir=cache_dir), normalize=profile.embedder.normalize,
            device="cpu", cpu_threads=profile.embedder.cpu_threads,
        )
        baseline.encode(["warm-up"])
        texts = [text_to_embed(RouteInput(text=r["prompt"], last_user_text=r["prompt"]), spec.embed_chars) for r in rows]
        results["embedding"] = embedding_latency({"onnx": encoder, "torch": baseline}, texts)
        e = results["embedding"]
        print(f"embedding one prompt: onnx p50 {e['onnx']['p50_ms']} ms p99 {e['onnx']['p99_ms']} ms; "
              f"torch p50 {e['torch']['p50_ms']} ms p99 {e['torch']['p99_ms']} ms")
    labels = [r["label"] for r in rows]
    for name in args.policies:
        policy = make_policy(name, spec, vectors)
        result = evaluate(policy, rows, encoder, spec.threshold, targets, spec.embed_chars)
        result["sweep"] = sweep(result.pop("scores"), labels)
        result["best_threshold"] = max(result["sweep"], key=lambda p: p["accuracy"])
        results["policies"][name] = result
        c = result["confusion"]
        print(f"{name:>9}: accuracy {result['accuracy']:.3f}  reasoner share {result['reasoner_share']:.3f} "
              f"(true {results['reasoner_share_true']:.3f})  latency p50 {result['latency_ms_p50']:.2f} ms p99 {result['latency_ms_p99']:.2f} ms")
        print(f"{'':>11}confusion (rows = truth): extractor -> {c['extractor']}, reasoner -> {c['reasoner']}")
        print(f"{'':>11}by category: " + ", ".join(f"{k} {v:.2f}" for k, v in result["category_accuracy"].items()))
    save_results(args.out, "router", results, plot)
    return 0
