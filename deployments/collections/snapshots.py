"""A collection's index snapshots on disk: written atomically, read only when they check out.

A snapshot is two files: ``snapshot-<seq>.faiss`` (FAISS's own format) and its manifest
``snapshot-<seq>.json`` (the journal entry it covers, the SHA-256 of the data, the index
kind, dimensions and tombstones). Each is written to a temporary file, fsynced and
renamed, then the directory is fsynced; older snapshots are removed only after that.
Reading takes the newest snapshot whose checksum and dimensions match; one that does not
is handed to ``quarantine`` and the next is tried.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Callable, Optional

from deployments.collections.index import IndexParams, VectorIndex


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifests(directory: Path) -> list[Path]:
    """The snapshot manifests in ``directory``, newest first."""
    return sorted(directory.glob("snapshot-*.json"), key=lambda p: int(p.stem.split("-")[1]), reverse=True)


def read_newest(directory: Path, params: IndexParams, quarantine: Callable[[Path, str], None]) -> Optional[tuple[VectorIndex, int]]:
    """The newest snapshot that checks out, as (index, the journal seq it covers)."""
    for manifest_path in manifests(directory):
        try:
            manifest = json.loads(manifest_path.read_text())
            data_path = directory / manifest["file"]
            if _sha256(data_path) != manifest["sha256"] or manifest["dimensions"] != params.dimensions:
                raise ValueError("checksum mismatch")
            index = VectorIndex.from_bytes(params, manifest["kind"], data_path.read_bytes(), manifest["tombstones"])
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            data_file = manifest_path.with_suffix(".faiss")
            if data_file.exists():
                quarantine(data_file, f"snapshot failed its check: {exc}")
            quarantine(manifest_path, f"snapshot failed its check: {exc}")
            continue
        return index, manifest["seq"]
    return None


def write(directory: Path, seq: int, data: bytes, *, kind: str, dimensions: int, tombstones: list[int]) -> None:
    """Write the snapshot covering journal entry ``seq``, then remove the older ones."""
    data_path = directory / f"snapshot-{seq}.faiss"
    tmp = data_path.with_suffix(".faiss.tmp")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, data_path)
    manifest = {"seq": seq, "file": data_path.name, "sha256": hashlib.sha256(data).hexdigest(), "kind": kind,
                "dimensions": dimensions, "tombstones": tombstones, "written_at": time.time()}
    manifest_path = directory / f"snapshot-{seq}.json"
    tmp = manifest_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest))
    with tmp.open("rb+") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, manifest_path)
    fsync_dir(directory)
    for old in manifests(directory):
        if old != manifest_path:
            old.unlink(missing_ok=True)
    for old in directory.glob("snapshot-*.faiss"):
        if old != data_path:
            old.unlink(missing_ok=True)  # older snapshots, and any left without a manifest
