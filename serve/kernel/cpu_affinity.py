"""Putting processes on cores: this one, and Ray's own on this node.

:mod:`serve.kernel.core_plan` decides which cores each CPU engine computes on and which are left
to the control plane; this module moves processes there. Three kinds of process:

- the engines, pinned by the vLLM plugin :mod:`deployments.llm.engine_cores`;
- the graph's replicas, which pin themselves (:func:`serve.kernel.core_plan.keep_to_control_plane`);
- Ray's own: the raylet, the GCS, the dashboard and its agents, Serve's controller and
  HTTP proxy. Ray starts them, not the graph, so the first of the graph's replicas on
  each node moves them, when the profile says so (:func:`keep_ray_daemons_to_once`). Most run at niceness 0 while the engines run at Ray's
  worker niceness (15), so every time one of them woke on an engine's core it preempted a
  thread the whole token was waiting for; at 8 streaming clients the control plane's core
  is full and the kernel put them there often.

Pinning the raylet changes what every worker it starts later inherits (a new process
gets its parent's cores). So "the cores this node gives the graph" cannot be read from
this process's own affinity once the raylet is pinned; :func:`node_cores` reads it from
the process that started Ray (``serve run``, ``ray start``), which nothing pins.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Iterable, Optional

logger = logging.getLogger(__name__)

#: Ray's system actors on a node: Serve's controller and HTTP proxy, the dashboard's and
#: the runtime environment's agents, telemetry. Replicas and idle workers are not here:
#: the replicas place themselves, and an idle worker may become the Embedder.
RAY_SYSTEM_ACTORS = frozenset({"ServeController", "ProxyActor", "DashboardAgent", "RuntimeEnvAgent", "TelemetryAgent"})


def pin_threads(pid: int, cores: Iterable[int]) -> None:
    """Every thread of process ``pid``, those already running too, onto ``cores``: a
    process's affinity is per thread, and a new thread inherits its creator's."""
    wanted = set(cores)
    for thread in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(thread), wanted)
        except ProcessLookupError:
            continue  # the thread ended meanwhile


def pin_this_process(cores: Iterable[int]) -> None:
    """Every thread of this process onto ``cores``."""
    pin_threads(os.getpid(), cores)


def parse_core_list(text: str) -> Optional[set[int]]:
    """The cores of a list like ``"0,2"``, or None when it is empty.

    Raises:
        ValueError: something other than core numbers.
    """
    return {int(core) for core in text.split(",")} if text else None


def pin_to_cores(text: str) -> Optional[set[int]]:
    """Pin this process to the cores listed in ``text`` (``"0,2"``), if any, and return
    them; a core the machine does not allow is logged, never fatal (None is returned)."""
    try:
        wanted = parse_core_list(text)
        if wanted:
            pin_this_process(wanted)
        return wanted
    except (OSError, ValueError) as exc:
        logger.warning("could not pin this process to cores %r: %s", text, exc)
        return None


def _raylet_and_root():
    """This process's raylet and the process that started it (``serve run``, ``ray
    start``, a driver's ``ray.init``), or (None, None) outside a Ray worker."""
    import psutil

    try:
        for ancestor in psutil.Process().parents():
            if ancestor.name() == "raylet":
                return ancestor, ancestor.parent()
    except psutil.Error:
        pass
    return None, None


def node_cores() -> tuple[int, ...]:
    """The cores this node gives the graph: those of the process that started Ray when
    this is a Ray worker (``taskset -c 2-7 serve run …`` gives the graph cores 2–7),
    else this process's own."""
    import psutil

    _, root = _raylet_and_root()
    if root is not None:
        try:
            return tuple(sorted(root.cpu_affinity()))
        except psutil.Error:
            pass
    return tuple(sorted(os.sched_getaffinity(0)))


def _ray_package_dir() -> str:
    import ray

    return str(Path(ray.__file__).parent)


def is_ray_daemon(cmdline: list[str], ray_dir: str) -> bool:
    """Whether a process started by Ray's starter (``serve run``, ``ray start``) is one of
    Ray's daemons: a program or script in Ray's package (GCS, raylet, dashboard, log
    monitor, autoscaler monitor). The starter's other children are not Ray's."""
    return any(arg.startswith(ray_dir + os.sep) for arg in cmdline[:3])


def is_ray_system_actor(cmdline: list[str]) -> bool:
    """Whether a process the raylet started is one of Ray's system actors (its process
    title is ``ray::<Class>`` or ``ray::<Class>.<method>``), not a replica or an idle worker."""
    title = cmdline[0] if cmdline else ""
    return title.startswith("ray::") and title[5:].split(".", 1)[0].split(" ", 1)[0] in RAY_SYSTEM_ACTORS


def ray_daemons_on_this_node() -> list:
    """Ray's own processes on this node (see :func:`is_ray_daemon`,
    :func:`is_ray_system_actor`), with their children (the dashboard's modules), and
    nothing of the graph's: no replica, no engine, no idle worker, not the starter."""
    import psutil

    raylet, root = _raylet_and_root()
    if raylet is None:
        return []
    ray_dir = _ray_package_dir()
    found = {raylet.pid: raylet}
    # A starter that exited (``ray start`` without ``--block``) leaves its daemons to
    # init, whose other children are not ours to judge: then only the raylet's are taken.
    starters_children = root.children() if root is not None and root.pid != 1 else []
    for procs, is_rays in ((starters_children, lambda cmdline: is_ray_daemon(cmdline, ray_dir)),
                           (raylet.children(), is_ray_system_actor)):
        for proc in procs:
            try:
                if proc.pid not in found and is_rays(proc.cmdline()):
                    found[proc.pid] = proc
                    found.update((child.pid, child) for child in proc.children(recursive=True))
            except psutil.Error:
                continue
    return list(found.values())


def keep_ray_daemons_to(cores: Iterable[int]) -> int:
    """Pin Ray's own processes on this node, every thread, to ``cores``; returns how many
    were pinned. Workers the raylet starts later start on these cores too: the replicas
    re-place themselves, the vLLM plugin moves the engines, and the Embedder spreads back
    over :func:`node_cores`."""
    import psutil

    wanted = set(cores)
    pinned = 0
    for proc in ray_daemons_on_this_node():
        try:
            pin_threads(proc.pid, wanted)
            pinned += 1
        except (psutil.Error, OSError) as exc:  # gone meanwhile, or not ours to move
            logger.debug("could not pin Ray process %s to cores %s: %s", proc.pid, sorted(wanted), exc)
    return pinned


def keep_ray_daemons_to_once(cores: Iterable[int]) -> Optional[int]:
    """:func:`keep_ray_daemons_to`, once per node: the first caller under a raylet (known
    by its pid and start time) marks it in the temporary directory and moves the daemons;
    later callers on that node find the mark and return None, as does a process outside
    Ray. What the raylet starts after the move inherits its cores, so once is enough."""
    import psutil

    raylet, _ = _raylet_and_root()
    if raylet is None:
        return None
    try:
        mark = Path(tempfile.gettempdir()) / f"llmgraph-ray-daemons-moved-{raylet.pid}-{int(raylet.create_time())}"
        os.close(os.open(mark, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        return None
    except (OSError, psutil.Error) as exc:
        logger.warning("could not mark this node's Ray daemons as moved: %s", exc)
        return None
    return keep_ray_daemons_to(cores)


def spread_over_node_cores() -> None:
    """For a replica that computes (the Embedder): every core this node gives the graph,
    whatever its worker inherited from a raylet kept to the control plane's cores."""
    try:
        pin_this_process(node_cores())
    except OSError as exc:
        logger.warning("could not spread this process over the node's cores: %s", exc)
