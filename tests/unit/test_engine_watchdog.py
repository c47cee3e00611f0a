"""An engine process stops once the process that started it is gone (real processes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from deployments.llm.engine_watchdog import ENV_VAR

# The "replica": starts an "engine" that loads the plugin the way vLLM does, prints its pid,
# then waits to be killed.
REPLICA = r"""
import subprocess, sys, time
engine = subprocess.Popen([sys.executable, "-c", "from deployments.llm.engine_watchdog import install; install(); import time; time.sleep(600)"])
print(engine.pid, flush=True)
time.sleep(600)
"""


def _start_replica(env: dict[str, str]) -> tuple[subprocess.Popen, int]:
    replica = subprocess.Popen([sys.executable, "-c", REPLICA], stdout=subprocess.PIPE, text=True, env=env,
                               start_new_session=True)
    engine_pid = int(replica.stdout.readline())
    time.sleep(1.0)  # the engine has imported the plugin and noted its parent
    return replica, engine_pid


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.2)
    return False


def test_an_engine_stops_when_its_replica_is_sigkilled():
    replica, engine = _start_replica({**os.environ, ENV_VAR: "1"})
    os.kill(replica.pid, signal.SIGKILL)
    replica.wait()
    assert _gone(engine, within_s=10), "the engine outlived its replica"


def test_without_the_graph_setting_nothing_is_watched():
    """`vllm serve` outside the graph (same venv, same plugin) keeps running on its own."""
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    replica, engine = _start_replica(env)
    os.kill(replica.pid, signal.SIGKILL)
    replica.wait()
    try:
        assert not _gone(engine, within_s=3)
    finally:
        os.kill(engine, signal.SIGKILL)


@pytest.mark.parametrize("flag", ["0", ""])
def test_only_the_value_1_turns_it_on(flag, monkeypatch):
    from deployments.llm import engine_watchdog

    monkeypatch.setenv(ENV_VAR, flag)
    monkeypatch.setattr(engine_watchdog, "_started", False)
    engine_watchdog.install()
    assert engine_watchdog._started is False
