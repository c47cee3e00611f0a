"""Collections: chunking, filters, durable upsert/delete/search, snapshots, quarantine."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from deployments.collections.chunking import chunk_spans
from deployments.collections.collection import CollectionStore, StoreError, StoreParams
from deployments.collections.filters import FilterError, compile_filter
from deployments.collections.index import IndexParams
from serve.kernel.config import CollectionsSpec

DIMS = 16


def unit(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIMS).astype(np.float32)
    return v / np.linalg.norm(v)


def params(**overrides) -> StoreParams:
    index = IndexParams.from_spec(CollectionsSpec(hnsw_threshold=overrides.pop("hnsw_threshold", 1000)), DIMS)
    base = dict(index=index, model_id="fake-16",
                chunk_chars=50, chunk_overlap=10, snapshot_every_ops=overrides.pop("snapshot_every_ops", 1000))
    return StoreParams(**base, **overrides)


def add(collection, docs):
    spans = [collection.plan_chunks(d["text"]) for d in docs]
    vectors = [np.vstack([unit(hash((d["id"], d["text"], i)) % 2**32) for i in range(len(s))]) for d, s in zip(docs, spans)]
    collection.upsert(docs, spans, vectors)
    return vectors


def test_chunks_cover_the_text_with_overlap_and_end_on_words():
    text = " ".join(f"word{i}" for i in range(200))
    spans = chunk_spans(text, size=100, overlap=20)
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    for (s1, e1), (s2, e2) in zip(spans, spans[1:]):
        assert s2 < e1, "consecutive chunks overlap"
        assert e1 - s1 <= 100
        assert text[e1] == " " or e1 == len(text)
    assert chunk_spans("short", size=100, overlap=20) == [(0, 5)]


@pytest.mark.parametrize(
    "spec, metadata, expected",
    [
        ({"team": "search"}, {"team": "search"}, True),
        ({"team": "search"}, {"team": "ads"}, False),
        ({"flag": True}, {"flag": 1}, False),
        ({"lang": {"$in": ["de", "fr"]}}, {"lang": "fr"}, True),
        ({"lang": {"$in": ["de", "fr"]}}, {}, False),
        ({"year": {"$gte": 2020, "$lt": 2025}}, {"year": 2024}, True),
        ({"year": {"$gte": 2020, "$lt": 2025}}, {"year": 2025}, False),
        ({"year": {"$gt": 1}}, {"year": "2024"}, False),
        ({"lang": {"$ne": "en"}}, {"lang": "de"}, True),
        # what postings need: lists, text, dates
        ({"skills": {"$contains": "python"}}, {"skills": ["SQL", "Python"]}, True),
        ({"skills": {"$contains": "go"}}, {"skills": ["Golang", "Python"]}, False),
        ({"skills": {"$in": ["Rust", "SQL"]}}, {"skills": ["SQL", "Python"]}, True),
        ({"title": {"$contains": "data"}}, {"title": "Senior Data Engineer"}, True),
        ({"title": {"$contains": "data"}}, {"title": 7}, False),
        ({"date_posted": {"$gte": "2026-03-01"}}, {"date_posted": "2026-03-15"}, True),
        ({"date_posted": {"$gte": "2026-03-01"}}, {"date_posted": "2026-02-28"}, False),
        ({"date_posted": {"$lt": "2026-03-01T12:00:00+00:00"}}, {"date_posted": "2026-03-01"}, True),
        ({"date_posted": {"$gte": "2026-03-01"}}, {"date_posted": "yesterday"}, False),
        ({"salary_min": {"$gte": 100000}}, {"salary_min": 120000.0}, True),
    ],
)
def test_filters(spec, metadata, expected):
    assert compile_filter(spec)(metadata) is expected


@pytest.mark.parametrize(
    "spec, field",
    [({"a": {"$regex": "x"}}, "a"), ({"a": {"$in": []}}, "a"), ({"a": [1, 2]}, "a"), ({"a": {"$gt": "x"}}, "a"), ({"a": {}}, "a"),
     ({"a": {"$contains": ""}}, "a"), ({"a": {"$contains": ["x"]}}, "a"), ({"a": {"$lte": "x" * 300}}, "a")],
)
def test_malformed_filters_name_the_field(spec, field):
    with pytest.raises(FilterError) as info:
        compile_filter(spec)
    assert info.value.field == field


def test_upsert_search_get_delete_and_filters(tmp_path):
    store = CollectionStore(tmp_path, params(), max_collections=2)
    c = store.get("docs", create=True)
    long_text = " ".join(["filler"] * 40) + " needle at the end"
    vectors = add(c, [
        {"id": "a", "text": "alpha", "metadata": {"lang": "en", "year": 2020}},
        {"id": "b", "text": "beta", "metadata": {"lang": "de", "year": 2024}},
        {"id": "long", "text": long_text, "metadata": {"lang": "en", "year": 2022}},
    ])
    assert c.stats()["documents"] == 3 and c.stats()["chunks"] > 3
    hits = c.search(vectors[1][0], 2)
    assert hits[0].doc_id == "b" and hits[0].score == pytest.approx(1.0, abs=1e-5)
    last_chunk = vectors[2][-1]
    hit = c.search(last_chunk, 1)[0]
    assert hit.doc_id == "long" and "needle" in hit.text and hit.chunk["position"] == len(vectors[2]) - 1
    assert [h.doc_id for h in c.search(vectors[1][0], 3, compile_filter({"lang": "en"}))] == [h.doc_id for h in c.search(vectors[1][0], 3) if h.doc_id != "b"]
    assert c.search(vectors[0][0], 3, compile_filter({"year": {"$gte": 2030}})) == []
    assert c.get("a")["metadata"] == {"lang": "en", "year": 2020}
    # Upsert replaces the text, the vectors and the metadata.
    new = add(c, [{"id": "a", "text": "alpha two", "metadata": {"lang": "fr"}}])
    assert c.get("a")["text"] == "alpha two" and c.search(new[0][0], 1)[0].doc_id == "a"
    assert "a" not in [h.doc_id for h in c.search(vectors[0][0], 3) if h.score > 0.999]
    assert c.delete("b") is True and c.delete("b") is False
    assert c.get("b") is None and "b" not in [h.doc_id for h in c.search(vectors[1][0], 3)]
    assert c.stats()["documents"] == 2
    store.close()


@pytest.mark.parametrize("snapshot_every_ops", [1000, 3])
def test_everything_survives_a_reopen(tmp_path, snapshot_every_ops):
    store = CollectionStore(tmp_path, params(snapshot_every_ops=snapshot_every_ops, hnsw_threshold=20), max_collections=2)
    c = store.get("docs", create=True)
    vectors = {}
    for i in range(30):
        vectors[f"d{i}"] = add(c, [{"id": f"d{i}", "text": f"text {i}", "metadata": {"i": i}}])[0][0]
    for i in range(0, 30, 3):
        c.delete(f"d{i}")
    before = {k: [(h.doc_id, round(h.score, 5)) for h in c.search(v, 5)] for k, v in vectors.items()}
    store.close()
    again = CollectionStore(tmp_path, params(snapshot_every_ops=snapshot_every_ops, hnsw_threshold=20), max_collections=2)
    c2 = again.get("docs")
    assert c2.stats()["documents"] == 20
    after = {k: [(h.doc_id, round(h.score, 5)) for h in c2.search(v, 5)] for k, v in vectors.items()}
    assert after == before
    if snapshot_every_ops == 3:
        assert list(tmp_path.glob("collections/docs/snapshot-*.json")), "snapshots were written"
    again.close()


def test_a_corrupt_snapshot_is_quarantined_and_the_index_rebuilt(tmp_path):
    store = CollectionStore(tmp_path, params(snapshot_every_ops=2), max_collections=2)
    c = store.get("docs", create=True)
    vectors = [add(c, [{"id": f"d{i}", "text": f"t{i}"}])[0][0] for i in range(5)]
    store.close()
    snapshot = sorted(tmp_path.glob("collections/docs/snapshot-*.faiss"))[-1]
    data = bytearray(snapshot.read_bytes())
    data[len(data) // 2] ^= 0xFF
    snapshot.write_bytes(bytes(data))
    again = CollectionStore(tmp_path, params(snapshot_every_ops=2), max_collections=2)
    assert again.quarantined and all("checksum" in q["reason"] for q in again.quarantined)
    assert not list(tmp_path.glob("collections/docs/snapshot-*.faiss")) or len(list((tmp_path / "quarantine").iterdir())) == 2
    c2 = again.get("docs")
    for i, v in enumerate(vectors):
        assert c2.search(v, 1)[0].doc_id == f"d{i}"
    again.close()


def test_a_corrupt_database_is_quarantined_not_half_loaded(tmp_path):
    store = CollectionStore(tmp_path, params(), max_collections=2)
    add(store.get("docs", create=True), [{"id": "a", "text": "alpha"}])
    add(store.get("other", create=True), [{"id": "b", "text": "beta"}])
    store.close()
    db = tmp_path / "collections" / "docs" / "store.sqlite"
    db.write_bytes(b"this is not a database" * 100)
    for leftover in db.parent.glob("store.sqlite-*"):
        leftover.unlink()
    again = CollectionStore(tmp_path, params(), max_collections=2)
    assert again.names() == ["other"]
    assert len(again.quarantined) == 1 and "integrity" in again.quarantined[0]["reason"]
    assert list((tmp_path / "quarantine").iterdir())
    again.close()


def test_names_limits_and_embedder_mismatch(tmp_path):
    store = CollectionStore(tmp_path, params(), max_collections=1)
    for bad in ("", "../etc", "Docs", "a/b", "x" * 65, ".hidden", "docs\n", "docs\n\n", None):
        with pytest.raises(StoreError):
            store.get(bad, create=True)
    assert not any(p.name.startswith("docs") for p in tmp_path.iterdir()), "a trailing newline never becomes a directory"
    store.get("one", create=True)
    with pytest.raises(StoreError) as info:
        store.get("two", create=True)
    assert info.value.status == 409
    with pytest.raises(StoreError) as info:
        store.get("missing")
    assert info.value.status == 404
    store.close()
    other_model = dataclasses.replace(params(), model_id="another-model")
    with pytest.raises(StoreError) as info:
        CollectionStore(tmp_path, other_model, max_collections=2)
    assert info.value.code == "embedder_mismatch"


def test_drop_removes_the_collection(tmp_path):
    store = CollectionStore(tmp_path, params(), max_collections=2)
    add(store.get("docs", create=True), [{"id": "a", "text": "alpha"}])
    assert store.drop("docs") is True and store.drop("docs") is False
    assert store.names() == [] and not (tmp_path / "collections" / "docs").exists()
    assert json.loads(json.dumps(store.quarantined)) == []


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_metadata_json_cannot_carry_is_refused_at_the_door(value):
    """A stored NaN made every later search, GET or RAG answer holding it fail with a 500."""
    from pydantic import ValidationError

    from serve.kernel.protocol import CollectionDocument

    with pytest.raises(ValidationError):
        CollectionDocument(id="a", text="t", metadata={"n": value})
    assert CollectionDocument(id="a", text="t", metadata={"n": 1.5, "b": True, "s": "x"}).metadata["b"] is True


def test_a_second_store_on_the_same_directory_is_refused(tmp_path):
    """Two writers on one directory would each keep an index and snapshot over the other."""
    import subprocess
    import sys

    store = CollectionStore(tmp_path, params(), max_collections=2)
    add(store.get("docs", create=True), [{"id": "a", "text": "alpha"}])
    with pytest.raises(StoreError) as refused:
        CollectionStore(tmp_path, params(), max_collections=2, lock_timeout_s=0.2)
    assert refused.value.code == "store_in_use" and refused.value.status == 409
    other_process = subprocess.run(
        [sys.executable, "-c", "import sys; from pathlib import Path; from tests.unit.test_collections import params;"
         "from deployments.collections.collection import CollectionStore, StoreError\n"
         "try:\n    CollectionStore(Path(sys.argv[1]), params(), max_collections=2, lock_timeout_s=0.2)\n"
         "except StoreError as e:\n    print(e.code)", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert other_process.stdout.strip() == "store_in_use", other_process.stderr
    store.close()
    again = CollectionStore(tmp_path, params(), max_collections=2, lock_timeout_s=0.2)  # released on close
    assert again.get("docs").get("a")["text"] == "alpha"
    again.close()


def test_a_drop_waits_for_a_running_snapshot_and_nothing_is_written_after(tmp_path, monkeypatch):
    """A snapshot that was running when the collection was dropped (and a new one made
    under the same name) must not write its files into the new collection's directory."""
    import threading

    store = CollectionStore(tmp_path, params(), max_collections=2)
    old = store.get("docs", create=True)
    add(old, [{"id": "a", "text": "alpha"}])
    started, release = threading.Event(), threading.Event()
    original = old._index.to_bytes

    def slow_to_bytes():
        started.set()
        release.wait(5)
        return original()

    monkeypatch.setattr(old._index, "to_bytes", slow_to_bytes)
    snapshot = threading.Thread(target=old.snapshot)
    snapshot.start()
    assert started.wait(5)
    dropped = threading.Thread(target=store.drop, args=("docs",))
    dropped.start()
    dropped.join(0.5)
    assert dropped.is_alive(), "the drop waits for the snapshot in progress"
    release.set()
    snapshot.join(5)
    dropped.join(5)
    fresh = store.get("docs", create=True)
    add(fresh, [{"id": "b", "text": "beta"}])
    assert list((tmp_path / "collections" / "docs").glob("snapshot-*")) == []
    old.snapshot()  # a late timer on the dropped collection does nothing
    assert list((tmp_path / "collections" / "docs").glob("snapshot-*")) == []
    with pytest.raises(StoreError) as gone:
        old.search(unit(1), 1)
    assert gone.value.status == 404
    assert [h.doc_id for h in fresh.search(unit(1), 5)] == ["b"]
    store.close()
