"""The GpuMonitor deployment: polls NVML and publishes Ray metrics."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

from deployments.monitor.nvml import GpuReader, GpuSample
from serve.config import MonitorSpec

logger = logging.getLogger(__name__)


class GpuMonitor:
    """Keeps the latest GPU samples and exports them as metrics.

    Args:
        spec: The profile's monitor block.
        reader: Injectable NVML reader (tests); the real NvmlReader by default.
    """

    def __init__(self, spec: MonitorSpec, *, reader: Optional[GpuReader] = None) -> None:
        if reader is None:
            from deployments.monitor.nvml import NvmlReader

            reader = NvmlReader()
        self._spec = spec
        self._reader = reader
        self._latest: list[GpuSample] = []
        self._polled_at: Optional[float] = None
        self._gauges = self._make_gauges() if reader.available else {}
        # Started from the first async call (Serve's periodic health check makes one),
        # because the constructor may not run on the replica's event loop.
        self._task: Optional[asyncio.Task] = None

    def _ensure_polling(self) -> None:
        if self._reader.available and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._poll_forever())

    @staticmethod
    def _make_gauges() -> dict[str, Any]:
        from ray.util.metrics import Gauge

        # Labels are bounded: one series per GPU index.
        def gauge(name: str, description: str):
            return Gauge(f"llmgraph_gpu_{name}", description=description, tag_keys=("gpu",))

        return {
            "memory_used_bytes": gauge("memory_used_bytes", "GPU memory in use (bytes)."),
            "memory_total_bytes": gauge("memory_total_bytes", "GPU memory size (bytes)."),
            "utilization_pct": gauge("utilization_pct", "GPU utilization (%)."),
            "temperature_c": gauge("temperature_c", "GPU temperature (Celsius)."),
            "power_w": gauge("power_w", "GPU power draw (W)."),
            "power_limit_w": gauge("power_limit_w", "GPU enforced power limit (W)."),
            "throttled": gauge("throttled", "1 when clocks are throttled (not idle)."),
        }

    def _poll_once(self) -> None:
        self._latest = self._reader.read()
        self._polled_at = time.time()
        for sample in self._latest:
            tags = {"gpu": str(sample.index)}
            for key, gauge in self._gauges.items():
                if key == "throttled":
                    value = 1.0 if sample.throttle_reasons else 0.0
                else:
                    value = getattr(sample, key)
                gauge.set(float(value), tags=tags)

    async def _poll_forever(self) -> None:
        while True:
            try:
                self._poll_once()
            except Exception:  # noqa: BLE001 - a failed poll must not kill the monitor
                logger.exception("GPU poll failed")
            await asyncio.sleep(self._spec.poll_interval_s)

    async def snapshot(self) -> dict[str, Any]:
        """The latest state: ``{"available", "polled_at", "gpus": [...]}``."""
        self._ensure_polling()
        return {
            "available": self._reader.available,
            "polled_at": self._polled_at,
            "gpus": [sample.to_dict() for sample in self._latest],
        }

    async def check_health(self) -> None:
        """Serve health check: the poll loop must still be running."""
        self._ensure_polling()
        if self._task is not None and self._task.done():
            raise RuntimeError("GPU poll loop stopped")
