"""What an operator sees: health, readiness, the route dry run, serve status, dashboard."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support.graph import serve_details
from tests.support.models import ALLOW_RANDOM, EXTRACTOR, PROFILE

pytestmark = pytest.mark.integration

DEPLOYMENTS = {"Ingress", "Extractor", "Reasoner", "Embedder", "Router", "GpuMonitor", "Extraction", "Collections", "Batches"}


def test_healthz_and_readyz(http):
    assert http.get("/healthz").json() == {"status": "ok"}
    ready = http.get("/readyz")
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "ready" and body["profile"] == PROFILE
    assert set(body["deployments"].values()) == {"ok"}
    # No GPU here (and no simulated samples yet): nothing to watch, admission is normal.
    assert body["gpu"]["gpus"] == []
    assert body["gpu"]["thermal"]["level"] == "normal"


def test_route_dry_run_explains_the_decision(http):
    simple = http.post("/v1/route", json={"model": "auto", "messages": [{"role": "user", "content": "Classify: refund please"}]}).json()
    assert simple["role"] == "extractor" and simple["policy"] == "hybrid"
    assert 0 <= simple["score"] < simple["threshold"]
    proof = {"model": "auto", "messages": [{"role": "user", "content": "Prove by induction and solve step by step: sum of first n odd numbers."}]}
    kept = http.post("/v1/route", json=proof).json()
    assert kept["role"] == "extractor" and kept["score"] >= kept["threshold"]
    assert kept["reason"].startswith("reasoner has random weights"), "the profile keeps auto off random weights"
    hard = http.post("/v1/route", json=proof, headers=ALLOW_RANDOM).json()
    assert hard["role"] == "reasoner" and hard["score"] >= hard["threshold"] and hard["random_weights_allowed"]
    features = hard["features"]
    # The hybrid policy explains itself with both halves and the capacity state.
    assert {"proof", "step_by_step"} <= set(features["heuristic"]["reasoning_cues"])
    assert features["semantic"]["neighbours"][0]["label"] == "reasoner"
    assert features["capacity"]["reasoner_in_flight"] == 0 and features["thermal_level"] == "normal"


def test_x_route_header_pins_the_target(http):
    body = {"model": "auto", "messages": [{"role": "user", "content": "Prove that sqrt(2) is irrational, step by step."}], "max_tokens": 4}
    r = http.post("/v1/chat/completions", json=body, headers={"x-route": "extractor"})
    assert r.status_code == 200 and r.headers["x-route-target"] == EXTRACTOR
    assert r.headers["x-route-reason"] == "pinned: x-route header"
    bad = http.post("/v1/chat/completions", json=body, headers={"x-route": "gpt-9"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "x-route"


def test_serve_status_lists_every_deployment_healthy(graph):
    serve_bin = Path(sys.executable).parent / "serve"
    out = subprocess.run(
        [str(serve_bin), "status", "--address", graph.dashboard_url()],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "RAY_AUTH_MODE": "token"},
    )
    assert out.returncode == 0, out.stderr
    status = yaml.safe_load(out.stdout)
    app = status["applications"]["llm-graph"]
    assert app["status"] == "RUNNING"
    assert {name: d["status"] for name, d in app["deployments"].items()} == {name: "HEALTHY" for name in DEPLOYMENTS}


def test_dashboard_serve_api_lists_the_application(graph):
    app = serve_details(graph)  # raises unless the API answered 200 with the application
    assert set(app["deployments"]) == DEPLOYMENTS


def test_each_cpu_engine_computes_on_the_cores_its_profile_names(graph):
    """The engines' OpenMP threads: one per core of ``cpu_cores`` (``rest`` here), not
    vLLM's ``auto``, which under Ray gave both engines one thread on core 0; and every
    engine process, scheduler included, computes on those cores only."""
    import psutil

    from serve.kernel.config import load_profile
    from serve.kernel.core_plan import parse_cores

    profile = load_profile(PROFILE)
    wanted = {parse_cores(profile.llm(role).cpu_cores) for role in ("extractor", "reasoner")}
    assert len(wanted) == 1, "the test profile binds both engines alike"
    cores = wanted.pop()
    workers, pinned = [], {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            title = " ".join(proc.info["cmdline"] or [])
            if "VLLM::Worker" in title:
                workers.append(proc.environ())
            if "VLLM::" in title:
                pinned[proc.pid] = {tuple(sorted(os.sched_getaffinity(int(t)))) for t in os.listdir(f"/proc/{proc.pid}/task")}
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError, FileNotFoundError):
            continue
    assert len(workers) == 2, "one engine worker per LLM"
    assert len(pinned) == 4, "an EngineCore and a Worker per LLM"
    assert all(set().union(*affinities) <= set(cores) for affinities in pinned.values()), pinned
    for env in workers:
        assert env["VLLM_CPU_OMP_THREADS_BIND"] == ",".join(map(str, cores))
        assert env["OMP_NUM_THREADS"] == str(len(cores))


def _cores_of(pid: int) -> set[int]:
    """The cores any thread of ``pid`` may run on."""
    return set().union(*(os.sched_getaffinity(int(t)) for t in os.listdir(f"/proc/{pid}/task")))


def _ray_role(name: str, cmdline: list[str]) -> str | None:
    """``raylet``, ``gcs_server``, ``dashboard``, or a Ray process title without its
    method (``ray::ServeController``, ``ray::ServeReplica:llm-graph:Ingress``)."""
    if name in ("raylet", "gcs_server"):
        return name
    if any(arg.endswith("dashboard/dashboard.py") for arg in cmdline):
        return "dashboard"
    title = cmdline[0] if cmdline else ""
    return title.split(".", 1)[0] if title.startswith("ray::") else None


def test_rays_own_processes_and_the_replicas_keep_off_the_engines_cores(graph):
    """Ray's daemons run at niceness 0, above the engines' 15: the raylet, the GCS, the
    dashboard, Serve's controller and HTTP proxy, and the graph's replicas all run on the
    control plane's cores; the Embedder, which computes, on every core; ``serve run``
    itself is left as the user started it."""
    import psutil

    from serve.kernel.config import load_profile
    from serve.kernel.core_plan import build_core_plan

    plan = build_core_plan(load_profile(PROFILE))
    control, every = set(plan.control()), set(plan.allowed)
    if not control or control == every:
        pytest.skip("one core: there is no control plane apart from the engines")
    starter = psutil.Process(graph.process.pid)
    seen: dict[str, set[int]] = {}
    for proc in starter.children(recursive=True):
        try:
            role = _ray_role(proc.name(), proc.cmdline())
            if role:
                seen[role] = _cores_of(proc.pid)
        except (psutil.Error, ProcessLookupError, FileNotFoundError):
            continue
    for daemon in ("raylet", "gcs_server", "dashboard", "ray::ServeController", "ray::ProxyActor", "ray::DashboardAgent"):
        assert seen.get(daemon) == control, (daemon, seen)
    for replica in DEPLOYMENTS - {"Embedder"}:
        assert seen.get(f"ray::ServeReplica:llm-graph:{replica}") == control, (replica, seen)
    assert seen.get("ray::ServeReplica:llm-graph:Embedder") == every, seen
    assert _cores_of(starter.pid) == every
