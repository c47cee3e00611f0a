"""The GPU monitor with a fake NVML, and the real reader on a machine with no GPU."""

from __future__ import annotations

import asyncio

from deployments.monitor.deployment import GpuMonitor
from deployments.monitor.nvml import GpuSample, NvmlReader, decode_throttle_reasons
from serve.kernel.config import MonitorSpec


class FakeReader:
    available = True

    def __init__(self):
        self.temperature = 60.0

    def read(self):
        return [GpuSample(0, "Fake 4090", 8 << 30, 16 << 30, 75.0, self.temperature, 120.0, 150.0, ("sw_thermal",))]


def test_throttle_reasons_decode_and_ignore_idle():
    assert decode_throttle_reasons(0x1) == ()
    assert decode_throttle_reasons(0x20 | 0x40 | 0x1) == ("sw_thermal", "hw_thermal")


def test_snapshot_follows_the_reader():
    reader = FakeReader()

    async def run():
        monitor = GpuMonitor(MonitorSpec(poll_interval_s=0.01), reader=reader)
        await monitor.check_health()
        await asyncio.sleep(0.05)
        first = await monitor.snapshot()
        reader.temperature = 88.0
        await asyncio.sleep(0.05)
        second = await monitor.snapshot()
        return first, second

    first, second = asyncio.run(run())
    assert first["available"] is True and first["gpus"][0]["temperature_c"] == 60.0
    assert second["gpus"][0]["temperature_c"] == 88.0
    assert second["gpus"][0]["throttle_reasons"] == ["sw_thermal"]


def test_without_gpu_everything_is_a_noop():
    reader = NvmlReader()
    assert reader.available is False and reader.read() == []

    async def run():
        monitor = GpuMonitor(MonitorSpec(), reader=reader)
        await monitor.check_health()
        return await monitor.snapshot()

    snapshot = asyncio.run(run())
    assert snapshot["available"] is False and snapshot["gpus"] == [] and snapshot["polled_at"] is None
    assert snapshot["thermal"]["level"] == "normal" and snapshot["thermal"]["temperature_c"] is None
