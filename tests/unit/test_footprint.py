"""What an LLM replica knows of its engine: the memory of the processes under it, and the
share of the card it may take."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from deployments.llm.footprint import engine_footprint

# A stand-in replica: after a second it starts an "engine" child that holds 200 MB.
REPLICA = textwrap.dedent("""
    import subprocess, sys, time
    time.sleep(1.0)
    engine = subprocess.Popen([sys.executable, "-c",
        "import time; block = bytearray(200 * 1024 * 1024); block[::4096] = b'x' * len(block[::4096]); time.sleep(60)"])
    time.sleep(60)
""")


def test_the_footprint_is_the_resident_memory_of_the_processes_below_the_replica():
    replica = subprocess.Popen([sys.executable, "-c", REPLICA], start_new_session=True)
    try:
        assert engine_footprint(replica.pid)["rss_gib"] < 0.05, "no engine yet: the replica's own memory is left out"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and engine_footprint(replica.pid)["rss_gib"] < 0.19:
            time.sleep(0.2)
        held = engine_footprint(replica.pid)
        assert 0.19 <= held["rss_gib"] < 0.5, held
        assert held.get("gpu_gib", 0.0) == 0.0, "a CPU process holds no GPU memory"
    finally:
        os.killpg(replica.pid, signal.SIGKILL)
        replica.wait()


def test_a_profile_sized_for_16_gb_takes_16_gb_of_a_bigger_card():
    from deployments.llm.footprint import memory_utilization

    assert memory_utilization(8.0, 16.0) == 0.5, "on the card it was sized for: the profile's fraction"
    assert memory_utilization(8.0, 141.0) == round(8 / 141, 4)
    with pytest.raises(ValueError, match="more than this card's 12.00 GiB"):
        memory_utilization(16.0, 12.0)
