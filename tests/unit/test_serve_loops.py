"""Every replica of the graph, and Ray's HTTP proxy wherever the project starts it, runs
on one event loop (serve/kernel/serve_loops.py)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from serve.app import build_graph
from serve.kernel.config import PROJECT_ROOT, load_profile
from serve.kernel.serve_loops import SINGLE_LOOP_ENV
from tests.support.graph_nodes import bound_deployments


@pytest.mark.parametrize("profile", ["cpu", "cpu-swap"])
def test_every_replica_runs_its_code_and_its_handles_on_one_loop(profile):
    deployments = {name: bound.ray_actor_options for name, bound in bound_deployments(build_graph(load_profile(profile))).items()}
    assert {"Ingress", "Extractor", "Reasoner", "Embedder", "Router"} <= set(deployments)
    for name, options in deployments.items():
        env = options["runtime_env"]["env_vars"]
        assert {key: env.get(key) for key in SINGLE_LOOP_ENV} == SINGLE_LOOP_ENV, name


def test_make_serve_and_kuberay_start_rays_proxy_on_one_loop_too():
    makefile = (PROJECT_ROOT / "Makefile").read_text()
    assert re.search(r"^serve:.*\n\tenv \$\$\(\$\(BIN\)/python -m serve\.kernel\.serve_loops\) .*serve run serve_config.yaml$",
                     makefile, re.MULTILINE)
    printed = subprocess.run([sys.executable, "-m", "serve.kernel.serve_loops"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, check=True, timeout=60).stdout
    assert dict(pair.split("=", 1) for pair in printed.split()) == SINGLE_LOOP_ENV

    import yaml

    from serve.k8s import render

    service = yaml.safe_load(render("cpu")["base/rayservice.yaml"])
    cluster = service["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {item["name"]: item.get("value") for item in container.get("env", [])}
            assert {key: env.get(key) for key in SINGLE_LOOP_ENV} == SINGLE_LOOP_ENV, container["name"]
