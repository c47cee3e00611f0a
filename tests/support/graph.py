"""Start and stop the real graph with ``serve run``, the way a user does.

The integration and reliability tests share one deployment per test session: it is the
slowest thing the suite does (two vLLM engines on 2 cores), and every test talks to it
over HTTP only, so sharing it costs no isolation that matters.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import httpx
import yaml

from serve.kernel.serve_loops import SINGLE_LOOP_ENV
from tests.support.models import PROFILE

ROOT = Path(__file__).resolve().parents[2]
_DASHBOARD_RE = re.compile(r"View the dashboard at \S*?(http://127\.0\.0\.1:\d+)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class RunningGraph:
    """A ``serve run`` process and how to reach it."""

    process: subprocess.Popen
    base_url: str
    log_path: Path
    ready_after_s: float
    server_errors: list[str] = field(default_factory=list)
    gpu_file: Path | None = None
    session_dir: Path | None = None
    workdir: Path | None = None
    profile: str = PROFILE
    env: dict = field(default_factory=dict)
    restarts: int = 0
    dashboard: Optional[str] = None
    """The dashboard of the cluster the graph was deployed to (None: the one ``serve run`` started)."""

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v1"

    def log_tail(self, lines: int = 80) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def dashboard_url(self) -> str:
        if self.dashboard:
            return self.dashboard
        match = _DASHBOARD_RE.search(self.log_path.read_text(errors="replace"))
        if not match:
            raise RuntimeError("serve run did not print a dashboard address")
        return match.group(1)

    def record(self, response: httpx.Response) -> None:
        """httpx response hook: remember every 5xx the suite ever receives.

        503 is the one server status a client is told to retry (a replica restarting),
        and only fault tests provoke it; anything else 5xx is a bug.
        """
        if response.status_code >= 500 and response.status_code != 503:
            self.server_errors.append(f"{response.request.method} {response.request.url} -> {response.status_code}")


def start_graph(workdir: Path, *, profile: str = PROFILE, timeout_s: float = 420, env: dict | None = None,
                port: int | None = None, ray_address: str = "local", dashboard: Optional[str] = None) -> RunningGraph:
    """Run ``serve run`` on a copy of serve_config.yaml that listens on a free port.

    ``ray_address``: ``local`` starts a Ray of its own (stopped with it); the address of a
    running cluster deploys the graph there (:mod:`tests.support.cluster`)."""
    config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
    port = port or free_port()
    config["http_options"]["port"] = port
    config["applications"][0]["args"]["profile"] = profile
    config_path = workdir / "serve_config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    log_path = workdir / f"serve-{time.time_ns()}.log"

    # As `make serve` runs it: Ray's HTTP proxy on one event loop too (serve/kernel/serve_loops.py).
    run_env = {**os.environ, "RAY_ADDRESS": ray_address, **SINGLE_LOOP_ENV, **(env or {})}
    serve_bin = Path(sys.executable).parent / "serve"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(serve_bin), "run", str(config_path)],
            cwd=ROOT, env=run_env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
            # A parent started in the background may ignore SIGINT, and the child would
            # inherit that; serve run shuts down cleanly only on SIGINT.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    graph = RunningGraph(process=process, base_url=f"http://127.0.0.1:{port}", log_path=log_path, ready_after_s=0.0,
                         workdir=workdir, profile=profile, env=dict(env or {}), dashboard=dashboard)
    deadline = started + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve run exited with {process.returncode}:\n{graph.log_tail()}")
        try:
            if httpx.get(f"{graph.base_url}/readyz", timeout=10).status_code == 200:
                graph.ready_after_s = time.monotonic() - started
                # The Ray session this graph runs in (its logs), pinned before anything
                # else in the test process can start another session.
                graph.session_dir = Path("/tmp/ray/session_latest").resolve()
                return graph
        except httpx.HTTPError:
            pass
        time.sleep(3)
    stop_graph(graph)
    raise RuntimeError(f"graph not ready after {timeout_s}s:\n{graph.log_tail()}")


def stop_graph(graph: RunningGraph, *, grace_s: float = 90) -> None:
    """Ctrl-C ``serve run`` (it shuts Serve and its Ray down), then make sure."""
    if graph.process.poll() is None:
        graph.process.send_signal(signal.SIGINT)
        try:
            graph.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(graph.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    graph.process.wait(10)


def kill_graph(graph: RunningGraph) -> None:
    """SIGKILL ``serve run`` and every Ray process it started: nothing shuts down cleanly
    (a power cut, the OOM killer). :func:`start_again` brings it back."""
    try:
        os.killpg(graph.process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    graph.process.wait(30)
    subprocess.run([str(Path(sys.executable).parent / "ray"), "stop", "--force"], capture_output=True, timeout=120)


def start_again(graph: RunningGraph) -> None:
    """Start a stopped (or killed) graph on its port, data and settings, in place."""
    port = int(graph.base_url.rsplit(":", 1)[1])
    fresh = start_graph(graph.workdir, profile=graph.profile, env=graph.env, port=port)
    graph.process, graph.log_path, graph.ready_after_s = fresh.process, fresh.log_path, fresh.ready_after_s
    graph.session_dir = fresh.session_dir
    graph.restarts += 1


def metrics_text(graph: RunningGraph) -> str:
    """Everything Ray's metrics endpoints (one per node) export right now."""
    ports = [p.read_text().strip() for p in graph.session_dir.glob("metrics_export_port_*")]
    return "\n".join(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text for port in ports if port)


def replica_log_records(graph: RunningGraph, deployment: str) -> list[dict]:
    """The JSON records of a deployment's replica logs (serve_config sets JSON logs).

    Each record has at least ``message``, ``request_id`` (inside a request) and
    ``asctime``; lines that are not JSON (a library printing to the log) are skipped.
    """
    records = []
    for path in (graph.session_dir / "logs" / "serve").glob(f"replica_llm-graph_{deployment}_*.log"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    return records


def serve_details(graph: RunningGraph) -> dict:
    """The llm-graph application as the dashboard's Serve API describes it."""
    url = f"{graph.dashboard_url()}/api/serve/applications/"
    response = httpx.get(url, headers=ray_auth_headers(), timeout=30)
    response.raise_for_status()
    return response.json()["applications"]["llm-graph"]


def ray_auth_headers() -> dict[str, str]:
    """The bearer token Ray's dashboard requires (token auth is on by default)."""
    path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH", Path.home() / ".ray" / "auth_token"))
    token = os.environ.get("RAY_AUTH_TOKEN") or (path.read_text().strip() if path.exists() else "")
    return {"Authorization": f"Bearer {token}"} if token else {}
