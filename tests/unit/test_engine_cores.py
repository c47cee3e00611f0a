"""The engine-cores plugin pins the processes vLLM starts, every thread, and nothing else."""

from __future__ import annotations

import multiprocessing
import os
import threading

from deployments.llm.engine_cores import ENV_VAR, install


def _engine_process(queue) -> None:
    """Stands in for a process vLLM starts: a thread already running, then the plugin."""
    stop = threading.Event()
    early = threading.Thread(target=stop.wait, daemon=True)
    early.start()
    install()
    queue.put({int(t): sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")})
    stop.set()


def _affinities_in_child(env: dict[str, str], target=_engine_process) -> dict[int, list[int]]:
    """Each thread's cores in a spawned child that ran ``target`` with ``env`` set."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    saved = dict(os.environ)
    os.environ.update(env)
    try:
        child = context.Process(target=target, args=(queue,))
        child.start()
        result = queue.get(timeout=60)
        child.join(30)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return result


def test_a_process_vllm_starts_is_pinned_with_every_thread_to_the_named_cores():
    last = max(os.sched_getaffinity(0))
    threads = _affinities_in_child({ENV_VAR: str(last)})
    assert len(threads) >= 2, "the thread started before the plugin is pinned too"
    assert all(cores == [last] for cores in threads.values()), threads


def test_without_the_variable_a_child_keeps_its_cores(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    allowed = sorted(os.sched_getaffinity(0))
    assert all(cores == allowed for cores in _affinities_in_child({}).values())


def test_the_replica_itself_is_never_pinned(monkeypatch):
    """The process that runs the OpenAI layer (a Ray replica, vLLM's API server) was not
    started by vLLM: it keeps the control plane's cores."""
    before = os.sched_getaffinity(0)
    monkeypatch.setenv(ENV_VAR, str(max(before)))
    install()
    assert os.sched_getaffinity(0) == before


def _replica_process(queue) -> None:
    from serve.kernel.core_plan import keep_to_control_plane

    keep_to_control_plane()
    queue.put({int(t): sorted(os.sched_getaffinity(int(t))) for t in os.listdir("/proc/self/task")})


def test_a_replica_keeps_to_the_control_planes_cores():
    from serve.kernel.core_plan import CONTROL_CORES_ENV

    first = min(os.sched_getaffinity(0))
    threads = _affinities_in_child({CONTROL_CORES_ENV: str(first)}, target=_replica_process)
    assert all(cores == [first] for cores in threads.values()), threads
