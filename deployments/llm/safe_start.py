"""Serialize engine start-up per GPU.

vLLM sizes its KV cache by profiling free GPU memory at start-up. Two engines that share
a GPU and profile at the same time each see the other's half-allocated memory and size
their caches wrong (or fail with out-of-memory). Engines on one GPU therefore start one
at a time: each holds a per-node, per-GPU file lock from engine creation until its KV
cache is allocated. Engines on different GPUs, or on CPU, do not wait for each other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
from pathlib import Path
from typing import AsyncIterator

from filelock import FileLock

logger = logging.getLogger("ray.serve")


def lock_path(gpu_ids: list[str], lock_dir: Path | None = None) -> Path:
    """The lock file for the GPUs a replica was given (one name per GPU set)."""
    key = "-".join(sorted(gpu_ids)) or "cpu"
    return Path(lock_dir or tempfile.gettempdir()) / f"llmgraph-engine-start-gpu{key}.lock"


@contextlib.asynccontextmanager
async def serialized_start(path: Path) -> AsyncIterator[None]:
    """Hold ``path``'s lock for the body, waiting for it without blocking the loop."""
    lock = FileLock(str(path))
    await asyncio.to_thread(lock.acquire)
    logger.info("engine start lock %s acquired (pid %s)", path, os.getpid())
    try:
        yield
    finally:
        lock.release()
