"""The PostgreSQL collection store against a real server: the embedded store's answers.

Both stores get the same documents, vectors and queries; searches must return the same
documents in the same order with the same scores, and the SQL filters must select what
the Python predicates select (random metadata and filters, hypothesis). Filter field
names and values that look like SQL stay data.
"""

from __future__ import annotations

import string
from datetime import timedelta

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deployments.collections.collection import CollectionStore, StoreError, StoreParams
from deployments.collections.filters import compile_filter
from deployments.collections.index import IndexParams
from deployments.collections.pg_store import PostgresCollectionStore
from deployments.collections.sql_filters import sql_filter
from tests.support.postgres import fresh_database

pytestmark = pytest.mark.postgres

DIMENSIONS = 16
PARAMS = StoreParams(index=IndexParams(dimensions=DIMENSIONS, hnsw_threshold=100_000, hnsw_m=16, hnsw_ef_construction=64,
                                       hnsw_ef_search=200),
                     model_id="test-embedder", chunk_chars=200, chunk_overlap=20, snapshot_every_ops=1000)


def _unit(rng: np.random.Generator, n: int) -> np.ndarray:
    vectors = rng.normal(size=(n, DIMENSIONS)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def pg(postgres_url):
    store = PostgresCollectionStore(fresh_database(postgres_url, "collections_unit"), PARAMS, max_collections=8)
    yield store
    store.close()


@pytest.fixture(scope="module")
def both(pg, tmp_path_factory):
    """The same 60 documents in both stores."""
    embedded = CollectionStore(tmp_path_factory.mktemp("embedded"), PARAMS, max_collections=8)
    rng = np.random.default_rng(7)
    docs = [{"id": f"d{i}", "text": f"Document number {i} about topic {i % 5}.",
             "metadata": {"n": i, "kind": ["memo", "recipe", "note"][i % 3], "tags": [f"t{i % 4}", "all"],
                          "date": f"2026-{1 + i % 12:02d}-{1 + i % 28:02d}", "flag": i % 2 == 0}} for i in range(60)]
    vectors = _unit(rng, len(docs))
    for store in (embedded, pg):
        target = store.get("same", create=True)
        spans = [target.plan_chunks(doc["text"]) for doc in docs]
        target.upsert(docs, spans, [vectors[i:i + 1] for i in range(len(docs))])
    yield embedded.get("same"), pg.get("same"), _unit(rng, 5)
    embedded.close()


FILTERS = [None, {"kind": "memo"}, {"n": {"$gte": 10, "$lt": 30}}, {"tags": {"$contains": "T1"}},
           {"kind": {"$in": ["memo", "note"]}, "flag": True}, {"date": {"$gte": "2026-06-01"}}, {"kind": {"$ne": "memo"}},
           {"tags": {"$in": ["t2"]}}, {"flag": 1}]


@pytest.mark.parametrize("spec", FILTERS, ids=[str(f) for f in FILTERS])
def test_both_backends_find_the_same_documents(both, spec):
    embedded, pg, queries = both
    predicate = compile_filter(spec) if spec else None
    for query in queries:
        a = embedded.search(query, 8, predicate)
        b = pg.search(query, 8, spec)
        assert [h.doc_id for h in b] == [h.doc_id for h in a]
        assert [h.score for h in b] == pytest.approx([h.score for h in a], abs=1e-4)
        assert [h.text for h in b] == [h.text for h in a] and [h.metadata for h in b] == [h.metadata for h in a]


def test_documents_stats_deletes_and_drops(pg, both):
    _, same, _ = both
    assert same.get("d3") == {**same.get("d3"), "id": "d3", "chunks": 1}
    assert same.stats()["documents"] == 60
    target = pg.get("scratch", create=True)
    target.upsert([{"id": "x", "text": "hello", "metadata": {}}], [[(0, 5)]], [_unit(np.random.default_rng(1), 1)])
    target.upsert([{"id": "x", "text": "hello again", "metadata": {"v": 2}}], [[(0, 11)]], [_unit(np.random.default_rng(2), 1)])
    assert target.get("x")["metadata"] == {"v": 2} and target.stats()["chunks"] == 1
    assert target.delete("x") and not target.delete("x") and target.get("x") is None
    assert "scratch" in pg.names() and pg.drop("scratch") and "scratch" not in pg.names()
    with pytest.raises(StoreError) as error:
        pg.get("scratch")
    assert error.value.status == 404
    with pytest.raises(StoreError):
        pg.get("../etc", create=True)


def test_a_collection_built_with_another_embedder_is_refused(postgres_url):
    url = fresh_database(postgres_url, "collections_mismatch")
    first = PostgresCollectionStore(url, PARAMS, max_collections=8)
    first.get("kb", create=True)
    first.close()
    other = PostgresCollectionStore(url, StoreParams(index=PARAMS.index, model_id="another-model", chunk_chars=200,
                                                     chunk_overlap=20, snapshot_every_ops=1000), max_collections=8)
    with pytest.raises(StoreError) as error:
        other.get("kb")
    assert error.value.code == "embedder_mismatch"
    other.close()


@pytest.mark.parametrize("field", ["'; DROP TABLE llmgraph_documents; --", "a\" OR 1=1 --", "$.kind", "x') OR ('1'='1"])
def test_sql_in_filter_names_and_values_stays_data(both, field):
    _, pg_same, queries = both
    assert pg_same.search(queries[0], 5, {field: "memo"}) == []
    assert pg_same.search(queries[0], 5, {"kind": field}) == []
    assert pg_same.search(queries[0], 5, {field: {"$contains": "'; DROP TABLE x; --"}}) == []
    assert pg_same.stats()["documents"] == 60  # nothing was dropped


# ------------------------------------------------ SQL filters = Python predicates
KEYS = st.sampled_from(["a", "b", "c"])
SCALARS = st.one_of(st.integers(-3, 3), st.floats(-3, 3, allow_nan=False).map(lambda x: round(x, 2)), st.booleans(),
                    st.text(alphabet=string.ascii_letters[:6] + " ", max_size=4),
                    st.sampled_from(["2026-01-05", "2026-03-01T10:00:00", "2026-03-01 09:00+02:00", "2025-12-31"]))
VALUES = st.one_of(SCALARS, st.none(), st.lists(SCALARS, max_size=3))
CONDITIONS = st.one_of(SCALARS, st.fixed_dictionaries({}, optional={
    "$in": st.lists(SCALARS, min_size=1, max_size=3), "$ne": SCALARS, "$gt": SCALARS, "$gte": SCALARS, "$lt": SCALARS,
    "$lte": SCALARS, "$contains": SCALARS}).filter(bool))


@settings(max_examples=60, deadline=timedelta(seconds=5), suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.dictionaries(KEYS, VALUES, max_size=3), min_size=1, max_size=6),
       spec=st.dictionaries(KEYS, CONDITIONS, min_size=1, max_size=2))
def test_sql_filters_select_what_the_predicates_select(pg, rows, spec):
    try:
        predicate = compile_filter(spec)
    except ValueError:
        return  # malformed: refused the same way on both (sql_filter validates with compile_filter)
    clause, params = sql_filter(spec, "m")
    with pg.transaction() as db:
        db.execute("CREATE TEMP TABLE IF NOT EXISTS filter_rows (i INTEGER, m JSONB) ON COMMIT DELETE ROWS")
        import json
        with db.cursor() as cursor:
            cursor.executemany("INSERT INTO filter_rows VALUES (%s, %s::jsonb)", [(i, json.dumps(r)) for i, r in enumerate(rows)])
        selected = {row[0] for row in db.execute(f"SELECT i FROM filter_rows WHERE {clause}", params)}
    assert selected == {i for i, row in enumerate(rows) if predicate(row)}, (rows, spec)


def test_a_database_that_is_down_is_a_503_and_the_store_comes_back_with_it(tmp_path):
    """Started against nothing, the store still starts (503 store_unavailable on use); a
    server that stops mid-life is a 503 too, and the next call after it is back works."""
    import pgserver

    nowhere = PostgresCollectionStore(f"postgresql://postgres:s3cret-pw@/postgres?host={tmp_path}/nothing-here",
                                      PARAMS, max_collections=8)
    with pytest.raises(StoreError) as error:
        nowhere.names()
    assert error.value.status == 503 and error.value.code == "store_unavailable"
    assert "s3cret-pw" not in error.value.message

    server = pgserver.get_server(tmp_path / "db", cleanup_mode="stop")
    store = PostgresCollectionStore(server.get_uri(), PARAMS, max_collections=8)
    kb = store.get("kb", create=True)
    kb.upsert([{"id": "a", "text": "kept", "metadata": {}}], [[(0, 4)]], [_unit(np.random.default_rng(3), 1)])
    server.cleanup()
    with pytest.raises(StoreError) as error:
        kb.get("a")
    assert error.value.status == 503
    server = pgserver.get_server(tmp_path / "db", cleanup_mode="stop")
    try:
        assert kb.get("a")["text"] == "kept"  # acknowledged before the outage, there after it
    finally:
        store.close()
        server.cleanup()


def test_readiness_asks_the_store_while_serves_health_check_asks_only_the_replica():
    """A database outage shows in /readyz (collections, batches: down) and never makes
    Serve replace their replicas: its health check stays ``check_health``."""
    import asyncio

    from serve.kernel.health import HealthCache
    from tests.support.fakes import FakeDeployment

    def down():
        raise RuntimeError("store_unavailable")

    health = HealthCache({"collections": FakeDeployment(check_health=lambda: None, readiness=down),
                          "batches": FakeDeployment(check_health=lambda: None, readiness=lambda: None),
                          "embedder": FakeDeployment(check_health=lambda: None)})
    asyncio.run(health.refresh())
    assert health.statuses() == {"collections": "down", "batches": "ok", "embedder": "ok"}
