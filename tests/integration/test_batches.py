"""The OpenAI Files and Batches API on the real cpu graph, driven by the official
``openai`` SDK as users drive it: ``files.create`` → ``batches.create`` → poll
``batches.retrieve`` → ``files.content``. One batch per endpoint (chat, embeddings,
extract), every ``custom_id`` answered once; refused lines, unknown ids and cancel.

Waits are derived from what the graph does, never from how fast this machine is: a
poll ends when the batch ends, bounded only by a generous ceiling.
"""

from __future__ import annotations

import io
import json
import time

import openai
import pytest

from serve.bench.extract import load_corpus
from tests.support.models import EMBEDDER, EXTRACTOR

pytestmark = pytest.mark.integration

#: A batch that has not ended by then is stuck, not slow (a line takes seconds here).
CEILING_S = 900


def upload(client, lines) -> str:
    content = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()
    return client.files.create(file=("requests.jsonl", io.BytesIO(content)), purpose="batch").id


def wait_until_ended(client, batch_id: str):
    deadline = time.monotonic() + CEILING_S
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        time.sleep(1.0)
    raise AssertionError(f"batch {batch_id} still {batch.status} after {CEILING_S} s: {batch.request_counts}")


def jsonl_of(client, file_id) -> list[dict]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def run_batch(client, endpoint: str, lines, metadata=None):
    metadata = metadata or {"suite": "integration"}
    batch = client.batches.create(input_file_id=upload(client, lines), endpoint=endpoint, completion_window="24h",
                                  metadata=metadata)
    assert batch.status in ("validating", "in_progress") and batch.metadata == metadata
    done = wait_until_ended(client, batch.id)
    return done, jsonl_of(client, done.output_file_id), jsonl_of(client, done.error_file_id)


def line(custom_id: str, url: str, body: dict) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def test_a_chat_batch_through_the_openai_sdk_answers_every_line_once(openai_client):
    questions = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?", "Say hello."]
    lines = [line(f"q{i}", "/v1/chat/completions",
                  {"model": EXTRACTOR, "messages": [{"role": "user", "content": q}], "max_tokens": 8, "temperature": 0})
             for i, q in enumerate(questions)]
    done, output, errors = run_batch(openai_client, "/v1/chat/completions", lines)
    assert done.status == "completed" and errors == []
    assert done.request_counts.total == 4 and done.request_counts.completed == 4 and done.request_counts.failed == 0
    assert done.in_progress_at and done.finalizing_at and done.completed_at
    assert sorted(item["custom_id"] for item in output) == ["q0", "q1", "q2", "q3"]
    for item in output:
        response = item["response"]
        assert response["status_code"] == 200 and item["error"] is None and response["request_id"] == item["id"]
        assert response["body"]["model"] == EXTRACTOR and response["body"]["choices"][0]["message"]["content"]
    # the same line answered as an interactive request, at temperature 0: the same text
    interactive = openai_client.chat.completions.create(**lines[0]["body"])
    by_id = {item["custom_id"]: item for item in output}
    assert by_id["q0"]["response"]["body"]["choices"][0]["message"]["content"] == interactive.choices[0].message.content


def test_an_embeddings_batch_and_an_extract_batch(openai_client):
    texts = ["penguins in winter", "the office budget", "bread at 220 degrees"]
    done, output, errors = run_batch(openai_client, "/v1/embeddings", [
        line(f"e{i}", "/v1/embeddings", {"model": EMBEDDER, "input": text}) for i, text in enumerate(texts)])
    assert done.status == "completed" and errors == [] and sorted(o["custom_id"] for o in output) == ["e0", "e1", "e2"]
    assert {len(o["response"]["body"]["data"][0]["embedding"]) for o in output} == {384}

    postings = [doc for doc in load_corpus() if doc["gold"].get("title")][:3]
    done, output, errors = run_batch(openai_client, "/v1/extract", [
        line(doc["id"], "/v1/extract", {"document": doc["document"], "mode": "fast"}) for doc in postings])
    assert done.status == "completed" and errors == []
    titles = {o["custom_id"]: o["response"]["body"]["data"]["title"].casefold() for o in output}
    assert titles == {doc["id"]: doc["gold"]["title"].casefold() for doc in postings}, "as /v1/extract reads them"


def test_bad_lines_go_to_the_error_file_and_every_other_line_runs(openai_client):
    good = line("good", "/v1/embeddings", {"model": EMBEDDER, "input": "hello"})
    done, output, errors = run_batch(openai_client, "/v1/embeddings", [
        good,
        "{this is not json",
        line("wrong-url", "/v1/chat/completions", {"model": EXTRACTOR, "messages": []}),
        line("invalid-body", "/v1/embeddings", {"model": EMBEDDER, "input": ""}),
        {"custom_id": "no-method", "url": "/v1/embeddings", "body": {}},
    ])
    assert done.status == "completed" and [o["custom_id"] for o in output] == ["good"]
    by_id = {e["custom_id"]: e for e in errors}
    assert by_id["wrong-url"]["error"]["code"] == "mismatched_url"
    assert by_id["no-method"]["error"]["code"] == "invalid_request"
    assert by_id[""]["error"]["code"] == "invalid_json_line"
    assert by_id["invalid-body"]["response"]["status_code"] == 400, "a request the API refuses: its 4xx, as it would be"
    assert done.request_counts.completed == 1 and done.request_counts.failed == 4


def test_unknown_ids_wrong_files_and_finished_batches_are_clear_4xx(openai_client, http):
    with pytest.raises(openai.NotFoundError):
        openai_client.batches.retrieve("batch_nope")
    with pytest.raises(openai.NotFoundError):
        openai_client.files.retrieve("file-nope")
    with pytest.raises(openai.NotFoundError):
        openai_client.batches.create(input_file_id="file-nope", endpoint="/v1/embeddings", completion_window="24h")
    form = {"files": {"file": ("x.jsonl", b"{}")}}
    assert http.post("/v1/files", data={"purpose": "batch"}, **form).status_code == 415, \
        "a bare form upload is what a web page could send: a keyless graph refuses it"
    bad_purpose = http.post("/v1/files", data={"purpose": "fine-tune"}, headers={"Authorization": "Bearer local"}, **form)
    assert bad_purpose.status_code == 400 and bad_purpose.json()["error"]["param"] == "purpose"
    assert http.post("/v1/batches", json={"input_file_id": "x", "endpoint": "/v1/moderations",
                                          "completion_window": "24h"}).status_code == 400
    done, _, _ = run_batch(openai_client, "/v1/embeddings", [line("x", "/v1/embeddings", {"model": EMBEDDER, "input": "x"})])
    with pytest.raises(openai.BadRequestError):
        openai_client.batches.cancel(done.id)
    listed = openai_client.batches.list(limit=2)
    assert len(listed.data) == 2 and listed.data[0].created_at >= listed.data[1].created_at
    uploaded = openai_client.files.retrieve(done.input_file_id)
    assert uploaded.purpose == "batch" and uploaded.filename == "requests.jsonl"
    assert openai_client.files.delete(done.input_file_id).deleted
    with pytest.raises(openai.NotFoundError):
        openai_client.files.retrieve(done.input_file_id)


def test_a_cancelled_batch_stops_taking_lines_and_keeps_what_finished(openai_client):
    lines = [line(f"c{i}", "/v1/chat/completions",
                  {"model": EXTRACTOR, "messages": [{"role": "user", "content": f"Count to {i}."}], "max_tokens": 32})
             for i in range(40)]
    batch = openai_client.batches.create(input_file_id=upload(openai_client, lines), endpoint="/v1/chat/completions",
                                         completion_window="24h")
    deadline = time.monotonic() + CEILING_S
    while openai_client.batches.retrieve(batch.id).request_counts.completed < 1 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert openai_client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = wait_until_ended(openai_client, batch.id)
    assert done.status == "cancelled" and done.cancelling_at and done.cancelled_at
    output = jsonl_of(openai_client, done.output_file_id)
    assert 1 <= len(output) == done.request_counts.completed < 40, "what finished is kept; the rest never ran"
    assert len({o["custom_id"] for o in output}) == len(output)


def _matches(record: dict, field: str, condition) -> bool:
    """What the search filter means, written out over a known record."""
    value = record.get(field)
    if not isinstance(condition, dict):
        return value == condition
    (op, operand), = condition.items()
    if value is None:
        return False
    if op == "$gte":
        return value >= operand
    if op == "$contains":
        return any(str(v).casefold() == operand.casefold() for v in value) if isinstance(value, list) \
            else operand.casefold() in str(value).casefold()
    raise AssertionError(op)


def test_postings_indexed_by_a_batch_are_found_by_their_fields(openai_client, http):
    postings = load_corpus()
    lines = [line(doc["id"], "/v1/extract", {"document": doc["document"], "mode": "fast", "document_id": doc["id"]})
             for doc in postings]
    done, output, errors = run_batch(openai_client, "/v1/extract", lines, metadata={"collection": "postings-batch"})
    records = {o["custom_id"]: o["response"]["body"]["data"] for o in output}
    indexed = {o["response"]["body"]["indexed"]["id"] for o in output}
    assert done.status == "completed" and indexed == set(records) and len(records) + len(errors) == len(postings)
    stats = http.get("/v1/collections/postings-batch").json()
    assert stats["documents"] == len(records)

    filters = [
        {"salary_min": {"$gte": 60000}},
        {"skills": {"$contains": "python"}},
        {"date_posted": {"$gte": "2026-10-01"}},
        {"workplace_type": "remote"},
        {"title": {"$contains": "engineer"}},
    ]
    for condition in filters:
        (field, value), = condition.items()
        expected = {doc_id for doc_id, record in records.items() if _matches(record, field, value)}
        found = http.post("/v1/collections/postings-batch/search",
                          json={"query": "a job", "k": 100, "filter": condition}).json()["results"]
        assert {hit["id"] for hit in found} == expected, condition
        for hit in found:
            assert hit["metadata"][f"source.{field}"] in ("structured_data", "rules"), "the record's sources come along"
    # both at once: remote data roles paying over 60k
    both = {"workplace_type": "remote", "salary_min": {"$gte": 60000}}
    expected = {doc_id for doc_id, r in records.items() if r.get("workplace_type") == "remote" and (r.get("salary_min") or 0) >= 60000}
    found = http.post("/v1/collections/postings-batch/search", json={"query": "data", "k": 100, "filter": both}).json()
    assert {hit["id"] for hit in found["results"]} == expected
