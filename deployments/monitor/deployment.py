"""The GpuMonitor deployment: polls NVML, publishes Ray metrics, keeps the thermal level."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Optional

from deployments.monitor.nvml import GpuReader, GpuSample
from serve.kernel.config import MonitorSpec
from serve.kernel.core_plan import keep_to_control_plane
from serve.kernel.log_filters import quiet_probes
from serve.kernel.thermal import ThermalLevel, hottest, next_level

logger = logging.getLogger("ray.serve")

_LEVEL_VALUE = {ThermalLevel.NORMAL: 0.0, ThermalLevel.SOFT: 1.0, ThermalLevel.HARD: 2.0}


class GpuMonitor:
    """Keeps the latest GPU samples, exports them as metrics, derives the thermal level.

    Args:
        spec: The profile's monitor block.
        telemetry_file: Read samples from this JSON file instead of NVML (simulation).
        reader: Injectable reader (unit tests); built from the above by default.
    """

    def __init__(
        self,
        spec: MonitorSpec,
        telemetry_file: Optional[str] = None,
        *,
        reader: Optional[GpuReader] = None,
    ) -> None:
        quiet_probes()  # successful health probes stay out of the access log
        keep_to_control_plane()  # off the engines' cores (serve/kernel/core_plan.py)
        if reader is None:
            from deployments.monitor.nvml import FileGpuReader, NvmlReader

            reader = FileGpuReader(telemetry_file) if telemetry_file else NvmlReader()
        self._spec = spec
        self._reader = reader
        self._latest: list[GpuSample] = []
        self._polled_at: Optional[float] = None
        self._level = ThermalLevel.NORMAL
        self._level_since = time.time()
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
        def gauge(name: str, description: str, tags=("gpu",)):
            return Gauge(f"llmgraph_gpu_{name}", description=description, tag_keys=tags)

        return {
            "memory_used_bytes": gauge("memory_used_bytes", "GPU memory in use (bytes)."),
            "memory_total_bytes": gauge("memory_total_bytes", "GPU memory size (bytes)."),
            "utilization_pct": gauge("utilization_pct", "GPU utilization (%)."),
            "temperature_c": gauge("temperature_c", "GPU temperature (Celsius)."),
            "power_w": gauge("power_w", "GPU power draw (W)."),
            "power_limit_w": gauge("power_limit_w", "GPU enforced power limit (W)."),
            "throttled": gauge("throttled", "1 when clocks are throttled (not idle)."),
            "thermal_level": gauge(
                "thermal_level", "Admission level: 0 normal, 1 soft, 2 hard.", tags=()
            ),
        }

    def _poll_once(self) -> None:
        self._latest = self._reader.read()
        self._polled_at = time.time()
        level = next_level(
            self._level, hottest(s.temperature_c for s in self._latest), self._spec.thermal
        )
        if level is not self._level:
            logger.warning("GPU thermal level %s -> %s", self._level.value, level.value)
            self._level, self._level_since = level, self._polled_at
        for sample in self._latest:
            tags = {"gpu": str(sample.index)}
            for key, gauge in self._gauges.items():
                if key == "thermal_level":
                    continue
                if key == "throttled":
                    value = 1.0 if sample.throttle_reasons else 0.0
                else:
                    value = getattr(sample, key)
                gauge.set(float(value), tags=tags)
        if "thermal_level" in self._gauges:
            self._gauges["thermal_level"].set(_LEVEL_VALUE[self._level])

    async def _poll_forever(self) -> None:
        while True:
            try:
                self._poll_once()
            except Exception:  # noqa: BLE001 - a failed poll must not kill the monitor
                logger.exception("GPU poll failed")
            await asyncio.sleep(self._spec.poll_interval_s)

    async def admission(self) -> dict[str, Any]:
        """What the ingress needs for admission: the level and the hottest temperature."""
        self._ensure_polling()
        return {
            "level": self._level.value,
            "temperature_c": hottest(s.temperature_c for s in self._latest),
            "since": self._level_since,
        }

    async def snapshot(self) -> dict[str, Any]:
        """The latest state: availability, per-GPU samples and the thermal level."""
        self._ensure_polling()
        return {
            "available": self._reader.available,
            "polled_at": self._polled_at,
            "gpus": [sample.to_dict() for sample in self._latest],
            "thermal": await self.admission(),
        }

    async def check_health(self) -> None:
        """Serve health check: the poll loop must still be running."""
        self._ensure_polling()
        if self._task is not None and self._task.done():
            raise RuntimeError("GPU poll loop stopped")
