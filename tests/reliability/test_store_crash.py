"""SIGKILL the process holding a collection store at random moments; nothing
acknowledged may be lost, and the store must always load: the embedded store (SQLite +
FAISS files) and the PostgreSQL one (a client killed mid-transaction).

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

from tests.support.store_worker import COLLECTION, open_store, vector_for

KILLS = 6
ROOT = Path(__file__).resolve().parents[2]


def _run_until_killed(where: str, first_id: int, rng: random.Random) -> tuple[list[str], set[str]]:
    """The acknowledged lines, and the ids of the one write that was in flight."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.support.store_worker", where, str(first_id)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    # Past its start-up (however long that takes on this machine: until its first
    # acknowledged write), then a random while more, into snapshots and replays.
    started = []
    while not started or not started[-1].startswith(("+ ", "- ")):
        line = worker.stdout.readline()
        if not line:
            break  # it died: the assertions below say how
        started.append(line)
    time.sleep(rng.uniform(1.0, 3.5))
    worker.send_signal(signal.SIGKILL)
    # Read the rest through the same buffered pipe objects (communicate() would read the
    # raw pipes and lose what readline had already buffered); the kill closed them.
    out = "".join(started) + worker.stdout.read()
    err = worker.stderr.read()
    worker.wait(30)
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


def _verify(where: str, alive: set[str], deleted: set[str], uncertain: set[str]) -> None:
    store = open_store(where)
    try:
        assert getattr(store, "quarantined", []) == [], "a crash must never corrupt what is on disk"
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


@pytest.fixture(params=["embedded", pytest.param("postgres", marks=pytest.mark.postgres)])
def where(request, tmp_path) -> str:
    """Where the killed writer keeps its collection: a directory, or a fresh PostgreSQL database."""
    if request.param == "embedded":
        return str(tmp_path)
    from tests.support.postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres_url"), "store_crash")


@pytest.mark.timeout(900)  # six kills and verifications; generous for a slow machine
def test_acknowledged_writes_survive_sigkill(where):
    rng = random.Random(1234)
    alive: set[str] = set()
    deleted: set[str] = set()
    uncertain: set[str] = set()
    next_id = 0
    for _ in range(KILLS):
        acknowledged, in_flight = _run_until_killed(where, next_id, rng)
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
        _verify(where, alive, deleted, uncertain)
    assert len(alive) > 200, "too little was written to mean anything"
