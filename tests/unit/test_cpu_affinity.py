"""Ray's own processes are moved to the control plane's cores, and nothing of the graph's.

The sweep is tested on a process tree shaped like Ray's: this test process is the
starter (``serve run``); its children are a "GCS" (a program in Ray's package), an
unrelated program, and a "raylet" (a shell whose process name is ``raylet``), whose
children carry the process titles of Ray's system actors, a Serve replica and an idle
worker. The sweep runs in a real process under that raylet, as in a replica.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import psutil
import pytest

from serve.kernel.config import PROJECT_ROOT
from serve.kernel.cpu_affinity import (
    _ray_package_dir,
    is_ray_daemon,
    is_ray_system_actor,
    node_cores,
    ray_daemons_on_this_node,
)

RAY_DIR = "/venv/lib/python3.11/site-packages/ray"


def test_rays_daemons_are_told_from_the_starters_other_children():
    for daemon in ([f"{RAY_DIR}/core/src/ray/gcs/gcs_server", "--log_dir=/tmp/ray"],
                   [f"{RAY_DIR}/core/src/ray/raylet/raylet", "--raylet_socket_name=x"],
                   ["/venv/bin/python", f"{RAY_DIR}/dashboard/dashboard.py", "--host=127.0.0.1"],
                   ["/venv/bin/python", "-u", f"{RAY_DIR}/_private/log_monitor.py"]):
        assert is_ray_daemon(daemon, RAY_DIR), daemon
    for other in (["/venv/bin/python", "/venv/bin/serve", "run", "serve_config.yaml"],
                  ["/venv/bin/python", "-m", "pytest", f"{RAY_DIR}/tests"],  # an argument past the script
                  [f"{RAY_DIR}-extras/tool"], []):
        assert not is_ray_daemon(other, RAY_DIR), other


def test_rays_system_actors_are_told_from_replicas_idle_workers_and_engines():
    for actor in ("ray::ServeController.listen_for_change", "ray::ProxyActor", "ray::DashboardAgent",
                  "ray::RuntimeEnvAgent"):
        assert is_ray_system_actor([actor]), actor
    for other in ("ray::ServeReplica:llm-graph:Ingress", "ray::ServeReplica:llm-graph:Embedder", "ray::IDLE",
                  "VLLM::EngineCore", "ray::ProxyActorImpostor", ""):
        assert not is_ray_system_actor([other] if other else []), other


def test_outside_ray_the_node_is_this_process_and_there_is_nothing_to_sweep():
    from serve.kernel.cpu_affinity import keep_ray_daemons_to_once

    assert node_cores() == tuple(sorted(os.sched_getaffinity(0)))
    assert ray_daemons_on_this_node() == []
    assert keep_ray_daemons_to_once({0}) is None


SHAPED_LIKE_RAY = """
(exec -a "ray::ProxyActor" sleep 600) &
(exec -a "ray::ServeController.listen_for_change" sleep 600) &
(exec -a "ray::ServeReplica:llm-graph:Ingress" sleep 600) &
(exec -a "ray::IDLE" sleep 600) &
sleep 0.5
"$INSPECT_PYTHON" -c "$INSPECT"
wait
"""

INSPECT = """
import json, os
from serve.kernel.cpu_affinity import keep_ray_daemons_to_once, node_cores, spread_over_node_cores
started_on = sorted(os.sched_getaffinity(0))
pinned = keep_ray_daemons_to_once({int(os.environ["CONTROL"])})
again = keep_ray_daemons_to_once({int(os.environ["CONTROL"])})
spread_over_node_cores()
print(json.dumps({"node": node_cores(), "started_on": started_on, "pinned": pinned, "again": again,
                  "spread_to": sorted(os.sched_getaffinity(0))}), flush=True)
"""


def test_the_sweep_pins_rays_daemons_and_nothing_of_the_graph(tmp_path):
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("needs two cores to tell a pinned process from one left alone")
    control, engine = allowed[0], allowed[-1]
    raylet_program = tmp_path / "raylet"
    raylet_program.symlink_to("/bin/bash")  # its process name is the name it was started by
    sleeper = dict(executable="/bin/sleep", stdout=subprocess.DEVNULL)
    gcs = subprocess.Popen([f"{_ray_package_dir()}/core/src/ray/gcs/gcs_server", "600"], **sleeper)
    stranger = subprocess.Popen(["not-ray", "600"], **sleeper)
    raylet = subprocess.Popen(
        [str(raylet_program), "-c", SHAPED_LIKE_RAY], cwd=PROJECT_ROOT, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "INSPECT_PYTHON": sys.executable, "INSPECT": INSPECT, "CONTROL": str(control),
             "TMPDIR": str(tmp_path)},  # where the once-per-node mark is left
        preexec_fn=lambda: os.sched_setaffinity(0, {engine}),  # as a raylet already kept elsewhere
    )
    try:
        report = json.loads(raylet.stdout.readline())
        children = {psutil.Process(child.pid).cmdline()[0]: sorted(os.sched_getaffinity(child.pid))
                    for child in psutil.Process(raylet.pid).children() if child.name() == "sleep"}

        assert report["pinned"] == 4, report  # the raylet, the GCS, the proxy, the controller
        assert report["again"] is None, "once per node: the second replica finds the mark"
        assert sorted(os.sched_getaffinity(raylet.pid)) == [control]
        assert sorted(os.sched_getaffinity(gcs.pid)) == [control]
        assert children["ray::ProxyActor"] == [control]
        assert children["ray::ServeController.listen_for_change"] == [control]
        # The graph's processes and strangers are left where they were.
        assert children["ray::ServeReplica:llm-graph:Ingress"] == [engine]
        assert children["ray::IDLE"] == [engine]
        assert sorted(os.sched_getaffinity(stranger.pid)) == allowed
        assert sorted(os.sched_getaffinity(0)) == allowed  # the starter itself
        # Under a raylet kept to one core, the node's cores are still the starter's,
        # and a replica that computes spreads back over them.
        assert report["started_on"] == [engine]
        assert report["node"] == allowed
        assert report["spread_to"] == allowed
    finally:
        for proc in psutil.Process(raylet.pid).children(recursive=True) + [raylet, gcs, stranger]:
            try:
                proc.send_signal(signal.SIGKILL)
            except (psutil.Error, ProcessLookupError):
                pass
        for proc in (raylet, gcs, stranger):
            proc.wait(10)
