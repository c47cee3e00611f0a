"""The part of ``python -m serve gpu-check`` that needs the GPU (see ``serve/gpu_check.py``).

Each step is timed against its budget and recorded even when it fails, so a run that
stops early still says how far it got and why.
"""

from __future__ import annotations

import importlib.util
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import httpx
import yaml

from serve.bench.meta import save_results
from serve.gpu_check import STEPS, bandwidth_ceiling_tps, check_profile, materialize_embedder
from serve.kernel.config import PROJECT_ROOT
from serve.kernel.planner import GIB, build_plan, load_facts
from serve.kernel.serve_loops import SINGLE_LOOP_ENV

PORT = 8000
STREAMS = 16


def _install(results: dict[str, Any]) -> None:
    """The gpu extra, when vLLM is not importable here (its own venv: .venv-gpu)."""
    if importlib.util.find_spec("vllm") is not None:
        results["install"] = {"skipped": "vllm is importable here"}
        return
    venv = PROJECT_ROOT / ".venv-gpu"
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "-e", f"{PROJECT_ROOT}[gpu,bench,test]"], check=True)
    results["install"] = {"seconds": round(time.perf_counter() - started, 1), "venv": str(venv)}
    raise SystemExit(f"installed the gpu extra in {venv}; run `{venv}/bin/python -m serve gpu-check` again")


def _start(profile_path: Path, work: Path) -> subprocess.Popen:
    config = yaml.safe_load((PROJECT_ROOT / "serve_config.yaml").read_text())
    config["applications"][0]["args"]["profile"] = str(profile_path)
    config["http_options"]["port"] = PORT
    path = work / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    serve_bin = Path(sys.executable).parent / "serve"
    log = open(work / "serve.log", "wb")  # noqa: SIM115 - the process owns it until it stops
    return subprocess.Popen([str(serve_bin), "run", str(path)], cwd=PROJECT_ROOT, stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **SINGLE_LOOP_ENV, "PATH": f"{serve_bin.parent}:{os.environ['PATH']}"},
                            start_new_session=True)


def _wait_ready(client: httpx.Client, process: subprocess.Popen, budget_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < budget_s:
        if process.poll() is not None:
            raise RuntimeError(f"serve run exited with {process.returncode}")
        try:
            if client.get("/readyz").status_code == 200:
                return time.monotonic() - started
        except httpx.HTTPError:
            pass
        time.sleep(3)
    raise TimeoutError(f"not ready after {budget_s:.0f} s")


def engine_gpu_memory() -> dict[str, float]:
    """GPU memory (GiB) of the processes under each LLM replica, by deployment, by NVML."""
    import psutil
    import pynvml

    from serve.bench.cpu_share import process_group

    pynvml.nvmlInit()
    try:
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        used = {proc.pid: proc.usedGpuMemory or 0 for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)}
    finally:
        pynvml.nvmlShutdown()
    by_deployment: dict[str, float] = {}
    for pid, memory in used.items():
        try:
            proc = psutil.Process(pid)
            while proc is not None:
                group = process_group(proc.name(), " ".join(proc.cmdline()))
                if group not in (None, "vLLM engines"):
                    by_deployment[group] = by_deployment.get(group, 0.0) + memory / GIB
                    break
                proc = proc.parent()
        except psutil.Error:
            continue
    return {name: round(gib, 2) for name, gib in by_deployment.items()}


def _stream(client: httpx.Client, model: str, tokens: int) -> tuple[float, int, float]:
    """Time to first token, tokens received, and decode seconds of one streamed request."""
    body = {"model": model, "messages": [{"role": "user", "content": "Write a long story."}], "max_tokens": tokens,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    started, first, count = time.perf_counter(), None, 0
    with client.stream("POST", "/v1/chat/completions", json=body) as reply:
        reply.raise_for_status()
        for line in reply.iter_lines():
            if line.startswith("data:") and '"delta"' in line:
                first = first or time.perf_counter()
                count += 1
    end = time.perf_counter()
    return (first or end) - started, count, end - (first or end)


def _telemetry(client: httpx.Client, samples: list, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            samples.append(client.get("/readyz").json().get("gpu"))
        except httpx.HTTPError:
            pass
        stop.wait(2)


def real_run(args, card: dict[str, Any]) -> int:
    """The check on this machine's GPU; writes ``<out>/gpu-check.json`` and its PNG."""
    from serve.kernel.settings import load_settings

    budgets = {s.name: (s.quick_s if args.quick else s.full_s) for s in STEPS}
    results: dict[str, Any] = {"card": card, "quick": args.quick, "steps": {}}
    work = Path(args.work)
    process = None

    def step(name: str, body: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            value = body()
            outcome = "ok"
        except Exception as exc:  # noqa: BLE001 - recorded; the run stops here
            value, outcome = None, f"failed: {exc!r}"[:500]
        seconds = time.perf_counter() - started
        results["steps"][name] = {"seconds": round(seconds, 1), "budget_s": budgets[name], "outcome": outcome}
        print(f"{name:<12} {seconds:7.1f} s (budget {budgets[name]} s) {outcome}", flush=True)
        if outcome != "ok":
            raise RuntimeError(name)
        return value

    try:
        step("install", lambda: _install(results))
        profile_path, profile = step("checkpoints", lambda: check_profile(args.profile, work, load_settings().cache_dir))
        if profile.embedder.resources.num_gpus:
            from serve.kernel.checkpoints import ensure_checkpoint

            materialize_embedder(Path(profile.embedder.source), ensure_checkpoint(load_settings().cache_dir, "extractor"))
        plan = step("plan", lambda: build_plan(profile))
        results["plan"] = {row.node.capitalize(): round(row.share_bytes / GIB, 2) for row in plan.rows}  # by deployment
        client = httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=600)
        process = _start(profile_path, work)
        results["ready_s"] = step("start", lambda: round(_wait_ready(client, process, budgets["start"]), 1))
        results["memory"] = step("memory", engine_gpu_memory)
        samples: list = []
        stop = threading.Event()
        watcher = threading.Thread(target=_telemetry, args=(client, samples, stop), daemon=True)
        watcher.start()
        decode = {}

        def measure_decode():
            for spec in profile.models:
                ttft, count, seconds = _stream(client, spec.model_id, 512 if args.quick else 2048)
                weight_bytes = load_facts(spec.model_facts).weight_bytes
                decode[spec.model_id] = {"ttft_s": round(ttft, 3), "tokens_per_s": round(count / seconds, 1),
                                         "ceiling_tokens_per_s": round(bandwidth_ceiling_tps(weight_bytes, card["bandwidth_gbs"]), 1)}
        step("decode", measure_decode)
        results["decode"] = decode
        concurrency = {}

        def measure_concurrency():
            for spec in profile.models:
                started = time.perf_counter()
                with ThreadPoolExecutor(STREAMS) as pool:
                    done = list(pool.map(lambda _: _stream(client, spec.model_id, 256), range(STREAMS)))
                concurrency[spec.model_id] = {"streams": STREAMS,
                                              "tokens_per_s": round(sum(c for _, c, _ in done) / (time.perf_counter() - started), 1)}
        step("concurrency", measure_concurrency)
        results["concurrency"] = concurrency
        extractor = profile.extractor.model_id
        results["auto"] = step("auto", lambda: {
            "auto_ttft_p50_s": _ttft_p50(client, "auto"), "named_ttft_p50_s": _ttft_p50(client, extractor)})
        if profile.on_demand:
            from serve.bench.switch import measure as measure_switch

            results["switch"] = step("switch", lambda: measure_switch(client, rounds=1))
        graph_side = _overhead_probe(client, extractor)
        stop.set()
        results["telemetry"] = [s for s in samples if s][-60:]
        step("stop", lambda: _stop(process, budgets["stop"]))
        process = None
        roles = ["extractor"] if args.quick else [spec.role for spec in profile.models]
        alone = step("vllm-alone", lambda: {
            role: _vllm_alone(profile, role, card, work, budgets["vllm-alone"] / len(roles)) for role in roles})
        results["alone"] = alone
        extractor_alone = alone["extractor"]
        results["overhead"] = {
            "graph": graph_side, "vllm_alone": extractor_alone,
            "e2e_ratio_1_client": round(graph_side["e2e_p50_s"] / extractor_alone["e2e_p50_s"], 3),
            "throughput_ratio_16": round(graph_side["tokens_per_s_16"] / extractor_alone["tokens_per_s_16"], 3),
        }
    except (RuntimeError, SystemExit) as exc:
        results["stopped_at"] = str(exc)
    finally:
        if process is not None:
            _stop(process, budgets["stop"])
    save_results(args.out, "gpu-check", results, plot)
    return 0 if "stopped_at" not in results else 1


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    """SIGINT (serve run and vllm serve shut down cleanly on it), then SIGKILL the group."""
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _ttft_p50(client: httpx.Client, model: str, rounds: int = 5) -> float:
    from serve.bench.stats import percentile

    body = {"messages": [{"role": "user", "content": "Classify: refund please"}], "max_tokens": 8}
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        with client.stream("POST", "/v1/chat/completions", json={**body, "model": model, "stream": True}) as reply:
            for line in reply.iter_lines():
                if line.startswith("data:"):
                    times.append(time.perf_counter() - started)
                    break
    return round(percentile(times, 0.5), 4)


def _overhead_probe(client: httpx.Client, model: str) -> dict[str, float]:
    """The same load for the graph and for vllm serve: e2e of one client (p50 of 5
    requests of 128 tokens) and tokens/s with 16 concurrent streams of 128 tokens."""
    from serve.bench.stats import percentile

    body = {"model": model, "messages": [{"role": "user", "content": "Write a story."}], "max_tokens": 128,
            "ignore_eos": True}
    e2e = []
    for _ in range(5):
        started = time.perf_counter()
        client.post("/v1/chat/completions", json=body).raise_for_status()
        e2e.append(time.perf_counter() - started)
    started = time.perf_counter()
    with ThreadPoolExecutor(STREAMS) as pool:
        done = list(pool.map(lambda _: _stream(client, model, 128), range(STREAMS)))
    return {"e2e_p50_s": round(percentile(e2e, 0.5), 4),
            "tokens_per_s_16": round(sum(c for _, c, _ in done) / (time.perf_counter() - started), 1)}


def _vllm_alone(profile, role: str, card: dict[str, Any], work: Path, budget_s: float) -> dict[str, float]:
    """``role``'s engine alone on the card under ``vllm serve``, probed like the graph."""
    from serve.gpu_check import vllm_serve_command

    command = vllm_serve_command(profile, role, card["memory_gib"], PORT + 1)
    command[0] = str(Path(sys.executable).parent / "vllm")
    with open(work / f"vllm-alone-{role}.log", "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        client = httpx.Client(base_url=f"http://127.0.0.1:{PORT + 1}", timeout=600)
        deadline = time.monotonic() + budget_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"vllm serve exited with {process.returncode}")
            try:
                if client.get("/v1/models").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"vllm serve not ready after {budget_s:.0f} s")
            time.sleep(2)
        return _overhead_probe(client, profile.llm(role).model_id)
    finally:
        _stop(process, 30)


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (memory, decode) = plt.subplots(1, 2, figsize=(10, 3.8))
    planned, measured = results.get("plan", {}), results.get("memory", {})
    names = list(planned)
    memory.bar([i - 0.2 for i in range(len(names))], [planned[n] for n in names], 0.4, label="plan")
    memory.bar([i + 0.2 for i in range(len(names))], [measured.get(n, 0) for n in names], 0.4, label="NVML")
    memory.set_xticks(range(len(names)), names, fontsize=7)
    memory.set(ylabel="GiB", title="GPU memory per engine")
    memory.legend()
    rows = results.get("decode", {})
    decode.bar(list(rows), [r["tokens_per_s"] for r in rows.values()], label="measured")
    decode.plot(list(rows), [r["ceiling_tokens_per_s"] for r in rows.values()], "r_", markersize=30, label="bandwidth ceiling")
    decode.set(ylabel="tokens/s, one stream", title=f"Decode on {results['card']['name']}")
    decode.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
