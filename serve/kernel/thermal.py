"""Thermal-aware admission levels, with hysteresis.

A laptop GPU at its thermal limit throttles hard and, if pushed, trips. The graph backs
off before that: above the soft limit, ``auto`` traffic leaves the reasoner and
concurrency drops; above the hard limit, new LLM and embedding requests are shed with
429 + ``Retry-After``. Each level is left only once the temperature is ``hysteresis_c``
below its threshold, so a GPU hovering at the limit does not flap between levels.
"""

from __future__ import annotations

from enum import Enum
from typing import Iterable, Optional

from serve.kernel.config import ThermalSpec


class ThermalLevel(str, Enum):
    """How hot the hottest GPU is, as far as admission is concerned."""

    NORMAL = "normal"
    SOFT = "soft"
    HARD = "hard"


def next_level(current: ThermalLevel, temperature_c: Optional[float], spec: ThermalSpec) -> ThermalLevel:
    """The level after observing ``temperature_c`` (None: no GPU, always NORMAL)."""
    if temperature_c is None:
        return ThermalLevel.NORMAL
    if temperature_c >= spec.hard_limit_c:
        return ThermalLevel.HARD
    if current is ThermalLevel.HARD and temperature_c > spec.hard_limit_c - spec.hysteresis_c:
        return ThermalLevel.HARD
    if temperature_c >= spec.soft_limit_c:
        return ThermalLevel.SOFT
    if current in (ThermalLevel.SOFT, ThermalLevel.HARD) and temperature_c > spec.soft_limit_c - spec.hysteresis_c:
        return ThermalLevel.SOFT
    return ThermalLevel.NORMAL


def hottest(temperatures: Iterable[float]) -> Optional[float]:
    """The highest temperature, or None when there is no GPU."""
    values = list(temperatures)
    return max(values) if values else None


def shed_reason(
    level: str, temperature_c: Optional[float], *, llm: bool, in_flight: int, spec: ThermalSpec
) -> Optional[tuple[str, str]]:
    """Why a new request must be refused now, as ``(message, code)``; None to admit it.

    Args:
        level: the current thermal level (a ThermalLevel value).
        temperature_c: the hottest GPU's temperature.
        llm: the request would run an LLM (concurrency is capped only for those).
        in_flight: LLM requests this ingress replica is already serving.
        spec: the profile's thresholds.
    """
    if level == ThermalLevel.HARD.value:
        return (
            f"GPU at {temperature_c:.0f}°C is above its hard limit "
            f"({spec.hard_limit_c:.0f}°C); retry later",
            "gpu_overheated",
        )
    if llm and level == ThermalLevel.SOFT.value and in_flight >= spec.soft_max_concurrent:
        return (
            f"GPU at {temperature_c:.0f}°C is above its soft limit: at most "
            f"{spec.soft_max_concurrent} requests at once; retry later",
            "gpu_hot_concurrency",
        )
    return None
