"""Where and when a benchmark ran: recorded in every result file, shown in the report."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
from pathlib import Path
from typing import Any, Callable, Optional
from urllib.parse import urlparse

from serve.kernel.config import PROJECT_ROOT


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _gpus() -> list[str]:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            names = [pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(pynvml.nvmlDeviceGetCount())]
        finally:
            pynvml.nvmlShutdown()
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    except Exception:  # noqa: BLE001 - no driver, no GPU
        return []


def _commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def machine_meta() -> dict[str, Any]:
    """The machine, the date and the code a result comes from."""
    import psutil

    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpus": _gpus(),
        "python": platform.python_version(),
        "commit": _commit(),
    }


def write_result(path: Path, results: dict[str, Any]) -> None:
    """Write one suite's JSON with its ``meta`` block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**results, "meta": machine_meta()}, indent=2, ensure_ascii=False))


def save_results(out_dir: str | Path, suite: str, results: dict[str, Any], plot: Callable[[dict[str, Any], Path], None]) -> None:
    """Write ``<suite>.json`` (with ``meta``) and ``<suite>.png`` into ``out_dir``."""
    out = Path(out_dir)
    write_result(out / f"{suite}.json", results)
    plot(results, out / f"{suite}.png")
    print(f"wrote {out / (suite + '.json')} and {out / (suite + '.png')}")


def require_loopback(url: str, suite: str) -> None:
    """Benchmarks call a graph on this machine only (never a URL from elsewhere)."""
    from serve.exposure import is_loopback

    if not is_loopback(urlparse(url).hostname or ""):
        raise SystemExit(f"bench {suite} only calls a graph on loopback")


def loopback_client(url: str, *, api_key: Optional[str], timeout_s: float, suite: str):
    """An ``httpx.Client`` for a graph on loopback, with the API key when one is given.

    Without one it still sends an ``Authorization`` header, as the ``openai`` client does:
    a keyless graph ignores its value, and it tells the graph's browser guard that no web
    page sent the request (a form upload to ``/v1/files`` needs that).
    """
    import httpx

    require_loopback(url, suite)
    headers = {"Authorization": f"Bearer {api_key or 'local'}"}
    return httpx.Client(base_url=url, headers=headers, timeout=timeout_s)
