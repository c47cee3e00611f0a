"""Reading GPU state through NVML (``nvidia-ml-py``), behind a small interface.

:class:`NvmlReader` is the only code that touches ``pynvml``. On a machine with no NVIDIA
driver it reports ``available = False`` and returns no samples, so everything built on
it is a no-op without a GPU. Tests inject a fake with the same two members.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Protocol

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuSample:
    """One GPU's state at one poll."""

    index: int
    name: str
    memory_used_bytes: int
    memory_total_bytes: int
    utilization_pct: float
    temperature_c: float
    power_w: float
    power_limit_w: float
    throttle_reasons: tuple[str, ...]

    def to_dict(self) -> dict:
        """JSON-ready form."""
        data = asdict(self)
        data["throttle_reasons"] = list(self.throttle_reasons)
        return data


class GpuReader(Protocol):
    """Anything that can report GPU samples."""

    available: bool

    def read(self) -> list[GpuSample]:
        """One sample per visible GPU (empty without a GPU)."""
        ...


# Clock-throttle reason bits worth surfacing, by the names NVML documents.
_THROTTLE_BITS = {
    "gpu_idle": 0x1,
    "applications_clocks": 0x2,
    "sw_power_cap": 0x4,
    "hw_slowdown": 0x8,
    "sync_boost": 0x10,
    "sw_thermal": 0x20,
    "hw_thermal": 0x40,
    "hw_power_brake": 0x80,
}


def decode_throttle_reasons(mask: int) -> tuple[str, ...]:
    """Names of the throttle-reason bits set in ``mask`` (idle is not a throttle)."""
    return tuple(
        name for name, bit in _THROTTLE_BITS.items() if mask & bit and name != "gpu_idle"
    )


class NvmlReader:
    """Polls NVML; ``available`` is False when there is no driver or no GPU."""

    def __init__(self) -> None:
        self.available = False
        self._handles: list = []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
            self.available = count > 0
        except Exception as exc:  # noqa: BLE001 - any NVML failure means "no GPU here"
            logger.info("NVML unavailable, GPU monitoring disabled: %s", exc)

    def read(self) -> list[GpuSample]:
        if not self.available:
            return []
        nv = self._nvml
        samples = []
        for index, handle in enumerate(self._handles):
            memory = nv.nvmlDeviceGetMemoryInfo(handle)
            util = nv.nvmlDeviceGetUtilizationRates(handle)
            name = nv.nvmlDeviceGetName(handle)
            samples.append(
                GpuSample(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_used_bytes=int(memory.used),
                    memory_total_bytes=int(memory.total),
                    utilization_pct=float(util.gpu),
                    temperature_c=float(
                        nv.nvmlDeviceGetTemperature(handle, nv.NVML_TEMPERATURE_GPU)
                    ),
                    power_w=nv.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                    power_limit_w=nv.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
                    throttle_reasons=decode_throttle_reasons(
                        int(nv.nvmlDeviceGetCurrentClocksEventReasons(handle))
                    ),
                )
            )
        return samples


class FileGpuReader:
    """Reads GPU samples from a JSON file ``{"gpus": [{GpuSample fields}...]}``.

    A stand-in for NVML that an operator (or a test) controls: simulate a hot GPU and
    watch the graph degrade and recover. A missing file means no GPUs right now.
    """

    available = True

    def __init__(self, path) -> None:
        from pathlib import Path

        self._path = Path(path)

    def read(self) -> list[GpuSample]:
        import json

        try:
            raw = json.loads(self._path.read_text())
        except FileNotFoundError:
            return []
        samples = []
        for item in raw.get("gpus", []):
            item = dict(item)
            item["throttle_reasons"] = tuple(item.get("throttle_reasons", ()))
            samples.append(GpuSample(**item))
        return samples
