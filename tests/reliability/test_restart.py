"""Restarting ``serve run`` keeps every collection and answers searches the same.

Runs late in the session: it restarts the shared graph (same port, same data
directory), which later tests then keep using.
"""

from __future__ import annotations

import pytest

from tests.support.graph import restart_graph

pytestmark = pytest.mark.integration

QUERIES = [
    ("penguins in winter", None),
    ("budget for the office", {"kind": "memo"}),
    ("a recipe", {"n": {"$gte": 10}}),
]


def test_collections_survive_a_restart_with_identical_results(graph, http):
    docs = [
        {"id": f"memo-{i}", "text": f"Memo {i}: the office budget for team {i} covers {i * 3} laptops and travel.", "metadata": {"kind": "memo", "n": i}}
        for i in range(25)
    ] + [
        {"id": f"recipe-{i}", "text": f"Recipe {i}: bake the bread for {20 + i} minutes at 220 degrees.", "metadata": {"kind": "recipe", "n": i}}
        for i in range(25)
    ] + [{"id": "penguins", "text": " ".join(["Emperor penguins huddle through the Antarctic winter."] * 40), "metadata": {"kind": "nature", "n": 0}}]
    for start in range(0, len(docs), 20):
        assert http.post("/v1/collections/restart/documents", json={"documents": docs[start:start + 20]}).status_code == 200
    http.delete("/v1/collections/restart/documents/memo-3")
    before_stats = http.get("/v1/collections/restart").json()
    before = [http.post("/v1/collections/restart/search", json={"query": q, "k": 8, "filter": f}).json()["results"] for q, f in QUERIES]
    before_names = {c["name"] for c in http.get("/v1/collections").json()["data"]}

    restart_graph(graph)

    assert {c["name"] for c in http.get("/v1/collections").json()["data"]} == before_names
    after_stats = http.get("/v1/collections/restart").json()
    assert {k: after_stats[k] for k in ("documents", "chunks")} == {k: before_stats[k] for k in ("documents", "chunks")}
    after = [http.post("/v1/collections/restart/search", json={"query": q, "k": 8, "filter": f}).json()["results"] for q, f in QUERIES]
    for old, new in zip(before, after):
        assert [r["id"] for r in new] == [r["id"] for r in old]
        assert [r["score"] for r in new] == pytest.approx([r["score"] for r in old], abs=1e-5)
    assert http.get("/v1/collections/restart/documents/memo-3").status_code == 404
