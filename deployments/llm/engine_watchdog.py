"""No engine process outlives the replica that started it.

vLLM runs each engine in its own process (``VLLM::EngineCore``, and ``VLLM::Worker``
processes under it). They are children of the LLMServer replica, and when the replica is
killed (SIGKILL, ``ray stop --force``, an OOM kill) nothing tells them: they were seen
reparented to init, holding 2.6 GB, half an hour later. On a GPU that is the memory a
replacement replica needs, so it cannot start.

This module is a vLLM *general plugin* (entry point ``vllm.general_plugins``), which
vLLM loads in every process it starts. When ``LLMGRAPH_ENGINE_WATCHDOG`` is set (the
graph sets it in each LLM deployment's runtime environment; a ``vllm serve`` outside the
graph is left alone), a daemon thread notes the process's parent and, once the parent is
gone (the process was reparented), stops the process: SIGTERM first so vLLM shuts its
workers down, SIGKILL if it is still alive ``GRACE_S`` later. Polling ``getppid`` rather
than ``PR_SET_PDEATHSIG``: the latter fires when the *thread* that spawned the process
exits, which in a replica can be any short-lived worker thread.
"""

from __future__ import annotations

import os
import signal
import threading
import time

ENV_VAR = "LLMGRAPH_ENGINE_WATCHDOG"
#: How often the parent is checked.
POLL_S = 1.0
#: How long a graceful shutdown may take before the process is killed.
GRACE_S = 10.0
_started = False


def install() -> None:
    """Start the parent watch in this process (once; only when the graph asked for it)."""
    global _started
    if _started:
        return
    from serve.kernel.settings import load_settings

    if not load_settings().engine_watchdog:
        return
    _started = True
    parent = os.getppid()
    threading.Thread(target=_watch, args=(parent,), name="llmgraph-parent-watch", daemon=True).start()


def _watch(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(GRACE_S)
    os.kill(os.getpid(), signal.SIGKILL)
