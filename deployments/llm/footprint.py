"""What an engine holds, measured: the memory of the processes under an LLM replica, and
the share of the card its budget is.

The residency manager's ledger holds these measured figures next to the plan's; the
GPU share is what vLLM is told (``gpu_memory_utilization``) so a profile sized for one
card takes the same GiB of another.
"""

from __future__ import annotations

import os
from typing import Optional

import psutil

_GIB = 1024 ** 3


def memory_utilization(budget_gib: float, card_gib: float) -> float:
    """vLLM's ``gpu_memory_utilization`` for ``budget_gib`` of a ``card_gib`` card.

    A profile sized for a 16 GB card then takes 16 GB of an 80 or 141 GB one (so its plan
    can be checked there, and a user can give the graph part of a shared card).

    Raises:
        ValueError: the card is smaller than the budget.
    """
    if budget_gib > card_gib:
        raise ValueError(f"the engine's budget of {budget_gib:.2f} GiB is more than this card's {card_gib:.2f} GiB")
    return round(budget_gib / card_gib, 4)


def card_gib(index: int = 0) -> Optional[float]:
    """Total memory of GPU ``index`` by NVML (GiB), or None without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU
        return None
    try:
        return pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(index)).total / _GIB
    finally:
        pynvml.nvmlShutdown()


def engine_footprint(root_pid: Optional[int] = None) -> dict[str, float]:
    """Memory the engine processes under ``root_pid`` (default: this replica) hold, in GiB.

    ``rss_gib`` sums the resident memory of every descendant process (vLLM's EngineCore
    and its workers); ``gpu_gib`` sums their GPU memory by NVML, or is absent without a
    GPU. The replica's own memory is left out: it stays while the engine sleeps.
    """
    root = psutil.Process(root_pid or os.getpid())
    pids, rss = set(), 0
    for child in root.children(recursive=True):
        try:
            rss += child.memory_info().rss
            pids.add(child.pid)
        except psutil.Error:
            continue
    footprint = {"rss_gib": round(rss / _GIB, 3)}
    gpu = _nvml_bytes(pids | {root.pid})
    if gpu is not None:
        footprint["gpu_gib"] = round(gpu / _GIB, 3)
    return footprint


def _nvml_bytes(pids: set[int]) -> Optional[int]:
    """GPU memory the processes ``pids`` use on any card, or None without NVML."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except Exception:  # noqa: BLE001 - no driver, no GPU: there is nothing to measure
        return None
    try:
        used = 0
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            for proc in pynvml.nvmlDeviceGetComputeRunningProcesses(handle):
                if proc.pid in pids and proc.usedGpuMemory:
                    used += proc.usedGpuMemory
        return used
    finally:
        pynvml.nvmlShutdown()
