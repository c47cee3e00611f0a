"""Killing ``serve run`` and starting it again: collections answer searches the same, a
batch killed midway resumes with every ``custom_id`` exactly once, and a Responses
conversation of two turns goes on with its third.

One restart serves all three (a restart of the graph costs a minute or two of the suite):
the graph is SIGKILLed with everything it started, while a batch is running, and
started again on the same port and data directory. Runs late in the session; later
tests keep using the restarted graph.
"""

from __future__ import annotations

import io
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration.test_batches import jsonl_of, wait_until_ended
from tests.support.graph import kill_graph, start_again
from tests.support.models import EXTRACTOR

pytestmark = pytest.mark.integration

QUERIES = [
    ("penguins in winter", None),
    ("budget for the office", {"kind": "memo"}),
    ("a recipe", {"n": {"$gte": 10}}),
]
LINES = 16


@dataclass
class Before:
    """What the graph held when it was killed."""

    stats: dict
    searches: list
    names: set
    batch_id: str
    custom_ids: list
    answered: set
    turns: list


def store_rows(graph, batch_id: str) -> dict[str, tuple[str, int]]:
    """Each line's state and starts, read from the job store on disk (WAL: readers never block)."""
    path = Path(graph.env["LLMGRAPH_DATA_DIR"]) / "jobs" / "jobs.sqlite3"
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        return {custom_id: (state, attempts) for custom_id, state, attempts in
                db.execute("SELECT custom_id, state, attempts FROM lines WHERE batch_id = ?", (batch_id,))}


def _fill_collection(http) -> None:
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


def _start_batch(openai_client) -> tuple[str, list[str]]:
    lines = [{"custom_id": f"k{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": EXTRACTOR, "messages": [{"role": "user", "content": f"Write a sentence about the number {i}."}],
                       "max_tokens": 24, "temperature": 0}} for i in range(LINES)]
    content = "\n".join(json.dumps(line) for line in lines).encode()
    file_id = openai_client.files.create(file=("kill.jsonl", io.BytesIO(content)), purpose="batch").id
    batch = openai_client.batches.create(input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h")
    return batch.id, [line["custom_id"] for line in lines]


QUESTIONS = ["What is the capital of France? Answer in one word.", "And of Italy? Answer in one word.",
             "And of Spain? Answer in one word."]


def _two_turns(openai_client) -> list:
    """The first two turns of a conversation chained by ``previous_response_id``."""
    first = openai_client.responses.create(model="auto", input=QUESTIONS[0], max_output_tokens=20, temperature=0)
    second = openai_client.responses.create(model="auto", input=QUESTIONS[1], previous_response_id=first.id,
                                            max_output_tokens=20, temperature=0)
    return [first, second]


@pytest.fixture(scope="module")
def before(graph, http, openai_client) -> Before:
    """Collections written, a batch running; then SIGKILL and a start on the same data."""
    _fill_collection(http)
    stats = http.get("/v1/collections/restart").json()
    searches = [http.post("/v1/collections/restart/search", json={"query": q, "k": 8, "filter": f}).json()["results"]
                for q, f in QUERIES]
    names = {c["name"] for c in http.get("/v1/collections").json()["data"]}
    turns = _two_turns(openai_client)
    batch_id, custom_ids = _start_batch(openai_client)
    # Kill once a few lines are answered and most are not: the moment comes from the store.
    deadline = time.monotonic() + 900
    while openai_client.batches.retrieve(batch_id).request_counts.completed < 3 and time.monotonic() < deadline:
        time.sleep(0.2)
    kill_graph(graph)
    answered = {custom_id for custom_id, (state, _) in store_rows(graph, batch_id).items() if state == "done"}
    start_again(graph)
    return Before(stats, searches, names, batch_id, custom_ids, answered, turns)


def test_collections_survive_a_kill_with_identical_results(before, http):
    assert {c["name"] for c in http.get("/v1/collections").json()["data"]} == before.names
    after_stats = http.get("/v1/collections/restart").json()
    assert {k: after_stats[k] for k in ("documents", "chunks")} == {k: before.stats[k] for k in ("documents", "chunks")}
    after = [http.post("/v1/collections/restart/search", json={"query": q, "k": 8, "filter": f}).json()["results"] for q, f in QUERIES]
    for old, new in zip(before.searches, after):
        assert [r["id"] for r in new] == [r["id"] for r in old]
        assert [r["score"] for r in new] == pytest.approx([r["score"] for r in old], abs=1e-5)
    assert http.get("/v1/collections/restart/documents/memo-3").status_code == 404


def test_a_batch_killed_midway_resumes_and_answers_every_line_once(before, graph, openai_client):
    assert 3 <= len(before.answered) < LINES, f"the kill came too late to prove anything: {len(before.answered)} answered"
    done = wait_until_ended(openai_client, before.batch_id)
    assert done.status == "completed" and done.request_counts.completed == LINES
    output = jsonl_of(openai_client, done.output_file_id)
    assert sorted(item["custom_id"] for item in output) == sorted(before.custom_ids), "each once"
    assert jsonl_of(openai_client, done.error_file_id) == []
    after = store_rows(graph, before.batch_id)
    assert all(after[custom_id][1] == 1 for custom_id in before.answered), "a line answered before the kill never runs again"
    assert all(state == "done" for state, _ in after.values())


def test_a_responses_conversation_goes_on_after_the_restart(before, openai_client):
    """Turns 1 and 2 were answered before the kill; turn 3 chains on turn 2's stored id."""
    first, second = before.turns
    third = openai_client.responses.create(model="auto", input=QUESTIONS[2], previous_response_id=second.id,
                                           max_output_tokens=20, temperature=0)
    alone = openai_client.responses.create(model="auto", input=QUESTIONS[2], max_output_tokens=20, temperature=0,
                                           store=False)
    # Both earlier turns, questions and answers, are in the third's prompt: read back from the store.
    assert third.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens + second.usage.output_tokens
    assert "madrid" in third.output_text.lower()
    assert openai_client.responses.retrieve(second.id).output_text == second.output_text
