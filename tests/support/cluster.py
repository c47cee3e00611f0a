"""A Ray cluster of several nodes on this machine, started the way a user starts one.

``ray start --head`` and ``ray start --address=…`` each run as a child of the test
process (``--block`` keeps them in the foreground), every node with the custom resource
of its node group (``llmgraph_group_<name>``), so a profile's ``resources.node_group``
places replicas as it would on a KubeRay cluster. A worker node can be killed the hard
way (SIGKILL of its raylet and every process under it: a machine that vanished) and
started again under the same group.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import httpx
import psutil

from serve.kernel.config import NODE_GROUP_UNITS, node_group_resource
from tests.support.graph import free_port, ray_auth_headers

RAY = str(Path(sys.executable).parent / "ray")


@dataclass
class RayNode:
    """One ``ray start --block`` process and the node group it carries."""

    group: str
    process: subprocess.Popen
    log_path: Path


@dataclass
class RayCluster:
    """A head node and worker nodes, all on 127.0.0.1."""

    workdir: Path
    env: dict[str, str]
    num_cpus: int
    gcs_port: int = 0
    dashboard_port: int = 0
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, group: str, *args: str) -> RayNode:
        resources = json.dumps({node_group_resource(group): NODE_GROUP_UNITS})
        log_path = self.workdir / f"ray-{group}-{time.time_ns()}.log"
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [RAY, "start", *args, f"--num-cpus={self.num_cpus}", f"--resources={resources}",
                 "--node-ip-address=127.0.0.1", "--disable-usage-stats", "--block"],
                # Token authentication, as `ray start --head` turns on by default: the other
                # nodes present the token it wrote (~/.ray/auth_token).
                env={**os.environ, "RAY_AUTH_MODE": "token", **self.env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        node = RayNode(group, process, log_path)
        self.nodes.append(node)
        return node

    def start_head(self, group: str) -> RayNode:
        self.gcs_port, self.dashboard_port = free_port(), free_port()
        node = self._start(group, "--head", f"--port={self.gcs_port}", "--dashboard-host=127.0.0.1",
                           f"--dashboard-port={self.dashboard_port}", "--include-dashboard=true")
        return node

    def start_worker(self, group: str, timeout_s: float = 180) -> RayNode:
        node = self._start(group, f"--address={self.address}")
        self.wait_for_nodes(timeout_s)
        return node

    def alive_nodes(self) -> dict[str, list[str]]:
        """The ids of the nodes the cluster counts as alive, by node group (Ray's state API)."""
        response = httpx.get(f"{self.dashboard_url}/api/v0/nodes?detail=1&limit=100", headers=ray_auth_headers(),
                             timeout=30)
        response.raise_for_status()
        nodes: dict[str, list[str]] = {}
        for node in response.json()["data"]["result"]["result"]:
            if node["state"] == "ALIVE":
                for name in node["resources_total"]:
                    if name.startswith("llmgraph_group_"):
                        nodes.setdefault(name.removeprefix("llmgraph_group_"), []).append(node["node_id"])
        return nodes

    def alive_groups(self) -> list[str]:
        """The node group of every node the cluster counts as alive."""
        return sorted(group for group, ids in self.alive_nodes().items() for _ in ids)

    def wait_for_nodes(self, timeout_s: float, *, expect: Optional[list[str]] = None) -> None:
        """Until the alive nodes are exactly ``expect`` (default: every node started and not killed)."""
        want = sorted(expect if expect is not None else [n.group for n in self.nodes if n.process.poll() is None])
        deadline = time.monotonic() + timeout_s
        seen: list[str] = []
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.process.poll() is not None and node.group in want and node.process.returncode not in (None, -9):
                    raise RuntimeError(f"ray start ({node.group}) exited:\n{node.log_path.read_text(errors='replace')[-3000:]}")
            try:
                seen = self.alive_groups()
                if seen == want:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(2)
        raise RuntimeError(f"nodes alive {seen}, wanted {want} after {timeout_s:.0f}s")

    def kill(self, node: RayNode) -> int:
        """SIGKILL the node's raylet and every process under it at once; returns how many."""
        root = psutil.Process(node.process.pid)
        victims = [*root.children(recursive=True), root]
        for proc in victims:
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.NoSuchProcess:
                pass
        node.process.wait(30)
        return len(victims)

    def stop(self) -> None:
        """Stop every node (``ray stop --force`` also reaps what a killed node left)."""
        for node in reversed(self.nodes):
            if node.process.poll() is None:
                node.process.send_signal(signal.SIGTERM)
        for node in self.nodes:
            try:
                node.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(node.process.pid, signal.SIGKILL)
        subprocess.run([RAY, "stop", "--force"], capture_output=True, timeout=120)
