"""SIGKILL the process holding a collection store at random moments; nothing
acknowledged may be lost, and the store must always load.

The writer (``tests/support/store_worker.py``) prints a line only after a write has
returned. Between kills the store is reopened here, in another process: every
acknowledged id must be readable and found by a search for its own vector, every
acknowledged delete must be gone, and the count must match (the one write in flight
at each kill may or may not have landed; it was never acknowledged either way).
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deployments.collections.collection import CollectionStore
from tests.support.store_worker import COLLECTION, params, vector_for

KILLS = 6
ROOT = Path(__file__).resolve().parents[2]


def _run_until_killed(data_dir: Path, first_id: int, rng: random.Random) -> tuple[list[str], set[str]]:
    """The acknowledged lines, and the ids of the one write that was in flight."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.store_worker", str(data_dir), str(first_id)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Let it write for a random while (past start-up, into snapshots and replays).
    time.sleep(rng.uniform(1.5, 4.0))
    worker.send_signal(signal.SIGKILL)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == -signal.SIGKILL, err[-2000:]
    lines = out.splitlines()
    if lines and not out.endswith("\n"):
        lines.pop()  # a line cut by the kill is neither an announcement nor an acknowledgement
    acknowledged = [line for line in lines if line.startswith(("+ ", "- "))]
    in_flight: set[str] = set()
    announcements = [i for i, line in enumerate(lines) if line.startswith("? ")]
    if announcements:
        last = announcements[-1]
        announced = set(lines[last].split()[2:])
        acked_after = {line.split()[1] for line in lines[last + 1:]}
        if not announced <= acked_after:
            in_flight = announced
    return acknowledged, in_flight


def _verify(data_dir: Path, alive: set[str], deleted: set[str], uncertain: set[str]) -> None:
    store = CollectionStore(data_dir, params(), max_collections=4)
    try:
        assert store.quarantined == [], "a crash must never corrupt what is on disk"
        collection = store.get(COLLECTION)
        stats = collection.stats()
        # Each kill may have caught one write after its commit and before its
        # acknowledgement; only the documents of those writes may be either way.
        sure = alive - uncertain
        assert len(sure) <= stats["documents"] <= len(alive | uncertain)
        for doc_id in sure:
            assert collection.get(doc_id) is not None, f"acknowledged {doc_id} lost"
            # HNSW is approximate: "searchable" is being among the top 10 for its own vector.
            hits = collection.search(vector_for(doc_id), 10)
            assert doc_id in [h.doc_id for h in hits], f"acknowledged {doc_id} not searchable"
        for doc_id in deleted - uncertain:
            assert collection.get(doc_id) is None, f"acknowledged delete of {doc_id} undone"
    finally:
        store.close()


@pytest.mark.timeout(300)
def test_acknowledged_writes_survive_sigkill(tmp_path):
    rng = random.Random(1234)
    alive: set[str] = set()
    deleted: set[str] = set()
    uncertain: set[str] = set()
    next_id = 0
    for _ in range(KILLS):
        acknowledged, in_flight = _run_until_killed(tmp_path, next_id, rng)
        uncertain |= in_flight
        assert acknowledged, "the writer made no progress before the kill"
        for line in acknowledged:
            sign, doc_id = line.split(" ", 1)
            if sign == "+":
                alive.add(doc_id)
                next_id = max(next_id, int(doc_id.split("-")[1]) + 1)
            else:
                alive.discard(doc_id)
                deleted.add(doc_id)
        next_id += 10  # skip ids a write in flight may have used
        _verify(tmp_path, alive, deleted, uncertain)
    assert len(alive) > 200, "too little was written to mean anything"
