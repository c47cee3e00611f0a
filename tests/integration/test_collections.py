"""Collections on the real graph: durable upsert, semantic search with filters,
deletes, limits, and retrieval-augmented chat (real all-MiniLM-L6-v2 embeddings)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.integration

DOCS = [
    {"id": "pets-1", "text": "Cats need a diet rich in animal protein; dry kibble and wet food both work.", "metadata": {"topic": "pets", "year": 2021, "lang": "en"}},
    {"id": "pets-2", "text": "Dogs should be walked twice a day and enjoy playing fetch in the park.", "metadata": {"topic": "pets", "year": 2024, "lang": "en"}},
    {"id": "gpu-1", "text": "The RTX 4090 laptop GPU has 16 GB of memory and throttles when it runs hot.", "metadata": {"topic": "hardware", "year": 2023, "lang": "en"}},
    {"id": "tax-1", "text": "Die Einkommensteuererklärung muss bis zum 31. Juli abgegeben werden.", "metadata": {"topic": "tax", "year": 2024, "lang": "de"}},
    {"id": "cook/pasta 1", "text": "Boil the pasta in salted water for nine minutes, then toss it with the sauce.", "metadata": {"topic": "cooking", "year": 2022, "lang": "en"}},
]
LONG = {
    "id": "long-report",
    "text": " ".join(["The quarterly report discusses revenue, hiring plans and office leases in detail."] * 30)
    + " Finally, the appendix explains how penguins huddle together to survive Antarctic winters.",
    "metadata": {"topic": "report", "year": 2025, "lang": "en"},
}


@pytest.fixture(scope="module")
def collection(http):
    response = http.post("/v1/collections/kb/documents", json={"documents": DOCS + [LONG]})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["upserted"] == 6 and body["passages"] > 6  # the long report was split
    return "kb"


def search(http, query, **extra):
    response = http.post("/v1/collections/kb/search", json={"query": query, **extra})
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_search_finds_documents_by_meaning(http, collection):
    top = search(http, "what should I feed my kitten?", k=3)
    assert top[0]["id"] == "pets-1"
    assert [r["score"] for r in top] == sorted((r["score"] for r in top), reverse=True)
    assert set(top[0]) == {"id", "score", "text", "metadata", "chunk"}
    assert search(http, "graphics card memory and overheating", k=1)[0]["id"] == "gpu-1"


def test_hits_in_a_long_document_map_back_to_it_with_the_passage(http, collection):
    hit = search(http, "how do penguins survive the cold?", k=1)[0]
    assert hit["id"] == "long-report"
    assert "penguins" in hit["text"] and hit["chunk"]["position"] > 0
    assert len(hit["text"]) < len(LONG["text"])


@pytest.mark.parametrize(
    "filter, allowed",
    [
        ({"topic": "pets"}, {"pets-1", "pets-2"}),
        ({"lang": {"$in": ["de"]}}, {"tax-1"}),
        ({"year": {"$gte": 2023, "$lte": 2024}}, {"pets-2", "gpu-1", "tax-1"}),
        ({"topic": {"$ne": "pets"}, "year": {"$lt": 2023}}, {"cook/pasta 1"}),
        ({"topic": "nothing-like-this"}, set()),
    ],
)
def test_metadata_filters(http, collection, filter, allowed):
    results = search(http, "food", k=10, filter=filter)
    assert {r["id"] for r in results} == allowed


def test_get_upsert_and_delete(http, collection):
    doc = http.get("/v1/collections/kb/documents/cook/pasta 1").json()
    assert doc["text"] == DOCS[4]["text"] and doc["metadata"]["topic"] == "cooking"
    temp = {"id": "temp", "text": "Volcanoes erupt molten rock called lava.", "metadata": {"topic": "geo"}}
    assert http.post("/v1/collections/kb/documents", json={"documents": [temp]}).status_code == 200
    assert search(http, "lava from a volcano", k=1)[0]["id"] == "temp"
    replaced = dict(temp, text="Glaciers are slow rivers of ice.")
    http.post("/v1/collections/kb/documents", json={"documents": [replaced]})
    assert search(http, "rivers of ice", k=1)[0]["id"] == "temp"
    assert http.get("/v1/collections/kb/documents/temp").json()["text"] == replaced["text"]
    deleted = http.delete("/v1/collections/kb/documents/temp")
    assert deleted.status_code == 200 and deleted.json()["deleted"] is True
    assert "temp" not in {r["id"] for r in search(http, "rivers of ice", k=10)}
    assert http.get("/v1/collections/kb/documents/temp").status_code == 404
    assert http.delete("/v1/collections/kb/documents/temp").status_code == 404


@pytest.fixture(scope="module")
def index_kind() -> str:
    """The index a small collection reports: exact FAISS on the embedded store
    (``test_multinode.py`` overrides it for pgvector)."""
    return "flat"


def test_collections_are_listed_and_dropped(http, collection, index_kind):
    http.post("/v1/collections/scratch/documents", json={"documents": [{"id": "x", "text": "scratch"}]})
    names = {c["name"]: c for c in http.get("/v1/collections").json()["data"]}
    assert {"kb", "scratch"} <= set(names) and names["kb"]["index"] == index_kind
    assert http.get("/v1/collections/kb").json()["documents"] == 6
    assert http.delete("/v1/collections/scratch").json()["deleted"] is True
    assert http.get("/v1/collections/scratch").status_code == 404
    assert http.post("/v1/collections/scratch/search", json={"query": "x"}).status_code == 404


@pytest.mark.parametrize(
    "method, path, body, status, param",
    [
        ("post", "/v1/collections/Bad Name/documents", {"documents": [{"id": "a", "text": "t"}]}, 400, "collection"),
        ("post", "/v1/collections/..%2Fetc/documents", {"documents": [{"id": "a", "text": "t"}]}, 404, None),
        ("post", "/v1/collections/kb%0A/documents", {"documents": [{"id": "a", "text": "t"}]}, 400, "collection"),
        ("post", "/v1/collections/kb/documents", {"documents": []}, 400, "documents"),
        ("post", "/v1/collections/kb/documents", {"documents": [{"id": "a", "text": ""}]}, 400, "documents.0.text"),
        ("post", "/v1/collections/kb/documents", {"documents": [{"id": "a", "text": "t"}] * 2}, 400, "documents[1].id"),
        ("post", "/v1/collections/kb/documents", {"documents": [{"id": "a", "text": "t", "metadata": {"n": {"deep": 1}}}]}, 400, None),
        ("post", "/v1/collections/kb/documents", {"documents": [{"id": "a", "text": "x" * 100_001}]}, 400, "documents[0].text"),
        ("post", "/v1/collections/kb/documents", {"documents": [{"id": "i" * 257, "text": "t"}]}, 400, "documents[0].id"),
        ("post", "/v1/collections/kb/documents", {"documents": [{"id": str(i), "text": "t"} for i in range(257)]}, 400, "documents"),
        ("post", "/v1/collections/kb/search", {"query": "x", "k": 101}, 400, "k"),
        ("post", "/v1/collections/kb/search", {"query": "x", "k": 0}, 400, "k"),
        ("post", "/v1/collections/kb/search", {"query": ""}, 400, "query"),
        ("post", "/v1/collections/kb/search", {"query": "x", "filter": {"year": {"$regex": "2"}}}, 400, "filter.year"),
        ("post", "/v1/collections/kb/search", {"query": "x", "filter": {"year": {"$gt": "2020"}}}, 400, "filter.year"),
        ("post", "/v1/collections/missing/search", {"query": "x"}, 404, "collection"),
        ("get", "/v1/collections/kb/documents/nope", None, 404, "id"),
    ],
)
def test_bad_collection_requests_get_a_clear_4xx_and_lose_nothing(http, collection, method, path, body, status, param):
    response = getattr(http, method)(path, **({"json": body} if body is not None else {}))
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if param:
        assert error["param"] == param
    assert http.get("/v1/collections/kb").json()["documents"] == 6  # nothing stored was lost


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_metadata_json_cannot_carry_gets_a_400_and_loses_nothing(http, collection, literal):
    # Python's json module reads these literals; a client that writes them must be told no.
    body = '{"documents": [{"id": "nan-doc", "text": "t", "metadata": {"n": %s}}]}' % literal
    response = http.post("/v1/collections/kb/documents", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 400, response.text
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}
    assert http.get("/v1/collections/kb/documents/nan-doc").status_code == 404
    assert http.get("/v1/collections/kb").json()["documents"] == 6


def test_retrieval_augmented_chat_cites_documents_in_the_collection(openai_client, collection):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="auto", max_tokens=24,
        messages=[{"role": "user", "content": "What do cats eat?"}],
        extra_body={"retrieval": {"collection": "kb", "k": 3}},
    )
    completion = raw.parse()
    extra = completion.model_extra
    results = extra["retrieval"]["results"]
    assert len(results) == 3 and results[0]["id"] == "pets-1"
    assert all({"id", "score", "text", "metadata"} <= set(r) for r in results)
    stored = {d["id"] for d in DOCS + [LONG]}
    assert extra["citations"] and set(extra["citations"]) <= stored
    assert set(extra["citations"]) <= {r["id"] for r in results}
    assert extra["citations_from"] in ("answer", "context")
    assert raw.headers["x-route-target"] and raw.headers["x-retrieval-ids"].startswith("pets-1")


def test_retrieval_errors_are_client_errors(http, collection):
    base = {"model": "auto", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    for retrieval, status in (({"collection": "missing"}, 404), ({"collection": "kb", "k": 500}, 400),
                              ({"k": 2}, 400), ({"collection": "kb", "bogus": 1}, 400)):
        response = http.post("/v1/chat/completions", json={**base, "retrieval": retrieval})
        assert response.status_code == status, (retrieval, response.text)
