"""Thermal levels with hysteresis, and the file-driven GPU reader."""

from __future__ import annotations

import asyncio
import json

import pytest

from deployments.monitor.deployment import GpuMonitor
from deployments.monitor.nvml import FileGpuReader
from serve.kernel.config import MonitorSpec, ThermalSpec
from serve.kernel.thermal import ThermalLevel, hottest, next_level, shed_reason

SPEC = ThermalSpec(soft_limit_c=83, hard_limit_c=90, hysteresis_c=5)
N, S, H = ThermalLevel.NORMAL, ThermalLevel.SOFT, ThermalLevel.HARD


def walk(temperatures, start=N):
    level, seen = start, []
    for t in temperatures:
        level = next_level(level, t, SPEC)
        seen.append(level)
    return seen


def test_walk_up_and_down_with_hysteresis():
    temps = [60, 82, 83, 86, 90, 88, 86, 85, 84, 80, 79, 78, 77]
    assert walk(temps) == [N, N, S, S, H, H, H, S, S, S, S, N, N]


def test_no_flapping_at_the_soft_limit():
    assert walk([83, 82, 83, 81, 83]) == [S, S, S, S, S]


def test_no_gpu_is_always_normal():
    assert next_level(H, None, SPEC) is N
    assert hottest([]) is None and hottest([70, 91, 65]) == 91


def test_limits_must_be_ordered():
    with pytest.raises(ValueError, match="hard_limit_c must be above"):
        ThermalSpec(soft_limit_c=90, hard_limit_c=85)


def sample(temp):
    return {
        "index": 0, "name": "Simulated RTX 4090 Laptop", "memory_used_bytes": 12 << 30,
        "memory_total_bytes": 16 << 30, "utilization_pct": 97.0, "temperature_c": temp,
        "power_w": 150.0, "power_limit_w": 175.0, "throttle_reasons": ["sw_thermal"],
    }


def test_file_reader_follows_the_file(tmp_path):
    path = tmp_path / "gpu.json"
    reader = FileGpuReader(path)
    assert reader.available and reader.read() == []
    path.write_text(json.dumps({"gpus": [sample(77.0)]}))
    (gpu,) = reader.read()
    assert gpu.temperature_c == 77.0 and gpu.throttle_reasons == ("sw_thermal",)


def test_monitor_walks_levels_from_a_fake_gpu(tmp_path):
    path = tmp_path / "gpu.json"

    async def run():
        monitor = GpuMonitor(MonitorSpec(poll_interval_s=0.01, thermal=SPEC), reader=FileGpuReader(path))
        levels = []
        for temp in (60, 85, 92, 87, 80, 70):
            path.write_text(json.dumps({"gpus": [sample(temp)]}))
            await monitor.check_health()
            await asyncio.sleep(0.05)
            levels.append((await monitor.admission())["level"])
        return levels

    assert asyncio.run(run()) == ["normal", "soft", "hard", "hard", "soft", "normal"]


def test_shed_reason_by_level_and_concurrency():
    spec = ThermalSpec(soft_max_concurrent=2)
    assert shed_reason("normal", 70.0, llm=True, in_flight=50, spec=spec) is None
    assert shed_reason("soft", 85.0, llm=True, in_flight=1, spec=spec) is None
    message, code = shed_reason("soft", 85.0, llm=True, in_flight=2, spec=spec)
    assert code == "gpu_hot_concurrency" and "85°C" in message
    assert shed_reason("soft", 85.0, llm=False, in_flight=9, spec=spec) is None
    message, code = shed_reason("hard", 93.0, llm=False, in_flight=0, spec=spec)
    assert code == "gpu_overheated" and "93°C" in message
