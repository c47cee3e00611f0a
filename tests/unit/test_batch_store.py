"""The job store on a real SQLite file and on a real PostgreSQL server (the same tests):
a batch's lines claimed, answered once, finalized into output and error files in input
order; cancel; runners that die or lose an answer; a store reopened after a crash;
expiry; and the input file's line checks."""

from __future__ import annotations

import json
import time

import pytest

from deployments.batches import store as store_module
from deployments.batches.input import read_input
from deployments.batches.store import JobStore, StoreConflict
from serve.kernel.batch_protocol import response_line

ENDPOINT = "/v1/chat/completions"


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def where(request, tmp_path):
    """Where a test's job store lives: a directory (SQLite), or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path
    from tests.support.postgres import fresh_database

    return fresh_database(request.getfixturevalue("postgres_url"), f"jobs_{abs(hash(request.node.nodeid)) % 10**9}")


def jsonl(*lines) -> bytes:
    return "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines).encode()


def request(custom_id: str, url: str = ENDPOINT) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": {"model": "auto", "messages": []}}


def new_batch(store: JobStore, content: bytes):
    lines, refused = read_input(content, endpoint=ENDPOINT, max_lines=100, max_line_bytes=10_000)
    return store.create_batch(endpoint=ENDPOINT, input_file_id="file-x", completion_window="24h", metadata={"k": "v"},
                              lines=lines, refused=refused)


def answer(store: JobStore, runner: str, item: dict, ok: bool = True) -> bool:
    result = response_line(item["custom_id"], "req", 200 if ok else 400, {"n": item["index"]})
    return store.complete(runner, item["batch_id"], item["index"], ok=ok, result=result)


def file_lines(store: JobStore, file_id) -> list[dict]:
    return [json.loads(line) for line in store.file_content(file_id).decode().splitlines()] if file_id else []


def test_a_batch_runs_each_line_once_and_writes_its_files_in_input_order(where):
    store = JobStore(where)
    batch = new_batch(store, jsonl(request("a"), "{not json", request("b"), request("c", url="/v1/embeddings")))
    assert batch["status"] == "in_progress" and batch["request_counts"] == {"total": 4, "completed": 0, "failed": 2}
    first = store.claim("r1", 1, [])
    rest = store.claim("r1", 10, [(first[0]["batch_id"], first[0]["index"])])
    assert [i["custom_id"] for i in first + rest] == ["a", "b"] and {i["attempt"] for i in first + rest} == {1}
    assert store.claim("r1", 10, [(i["batch_id"], i["index"]) for i in first + rest]) == [], "nothing left to claim"
    assert answer(store, "r1", rest[0], ok=False) and answer(store, "r1", first[0])
    assert not answer(store, "r1", first[0]), "a line is answered once"
    done = store.get_batch(batch["id"])
    assert done["status"] == "completed" and done["completed_at"] and done["finalizing_at"]
    assert done["request_counts"] == {"total": 4, "completed": 1, "failed": 3}
    assert [line["custom_id"] for line in file_lines(store, done["output_file_id"])] == ["a"]
    errors = file_lines(store, done["error_file_id"])
    assert [line["custom_id"] for line in errors] == ["", "b", "c"], "input order, refused lines included"
    assert errors[0]["error"]["code"] == "invalid_json_line" and errors[0]["response"] is None
    assert errors[2]["error"]["code"] == "mismatched_url" and "/v1/embeddings" in errors[2]["error"]["message"]
    assert errors[1]["response"]["status_code"] == 400
    assert store.attempts(batch["id"]) == {"a": 1, "b": 1, "": 0, "c": 0}


def test_cancel_stops_new_lines_keeps_what_finished_and_ends_cancelled(where):
    store = JobStore(where)
    batch = new_batch(store, jsonl(*(request(str(i)) for i in range(5))))
    running = store.claim("r1", 2, [])
    assert store.cancel(batch["id"])["status"] == "cancelling"
    assert store.claim("r2", 10, []) == [], "a cancelling batch gives out no line"
    answer(store, "r1", running[0])
    assert store.get_batch(batch["id"])["status"] == "cancelling", "one line still runs"
    answer(store, "r1", running[1])
    ended = store.get_batch(batch["id"])
    assert ended["status"] == "cancelled" and ended["cancelled_at"]
    assert [line["custom_id"] for line in file_lines(store, ended["output_file_id"])] == ["0", "1"]
    assert ended["request_counts"]["completed"] == 2 and ended["error_file_id"] is None
    with pytest.raises(StoreConflict):
        store.cancel(batch["id"])
    assert store.cancel("batch_nope") is None


def test_lines_of_a_runner_that_died_or_lost_an_answer_run_again(where):
    store = JobStore(where, runner_timeout_s=0.2)
    new_batch(store, jsonl(request("a"), request("b")))
    held = store.claim("dead", 1, [])
    time.sleep(0.3)  # the runner stops calling
    again = store.claim("alive", 10, [])
    assert [i["custom_id"] for i in again] == ["a", "b"] and again[0]["attempt"] == 2
    # "alive" lost its answer for b on the way: its next claim no longer holds it
    answer(store, "alive", again[0])
    assert [i["custom_id"] for i in store.claim("alive", 10, [])] == ["b"]
    assert not answer(store, "dead", held[0]), "a late answer from the runner thought dead is not stored twice"


def test_a_store_reopened_after_a_crash_keeps_every_answer_and_reruns_only_what_was_running(where):
    store = JobStore(where, runner_timeout_s=0.2)
    batch = new_batch(store, jsonl(*(request(str(i)) for i in range(4))))
    claimed = store.claim("before", 3, [])
    answer(store, "before", claimed[0])
    answer(store, "before", claimed[1])
    store.close()  # as if killed: the third line was running, the fourth never started

    # A timeout no stall of this machine reaches: the running line waits for its runner.
    reopened = JobStore(where, runner_timeout_s=3600)
    assert reopened.get_batch(batch["id"])["request_counts"]["completed"] == 2
    assert [i["custom_id"] for i in reopened.claim("after", 10, [])] == ["3"], "the running line waits for its runner"
    reopened.close()
    # Its runner is never heard from again: once the timeout has passed, the line runs again.
    reopened = JobStore(where, runner_timeout_s=0.01)
    time.sleep(0.05)
    assert [i["custom_id"] for i in reopened.claim("after", 10, [(batch["id"], 3)])] == ["2"]
    for index, custom_id in ((2, "2"), (3, "3")):
        reopened.complete("after", batch["id"], index, ok=True, result=response_line(custom_id, "r", 200, {}))
    done = reopened.get_batch(batch["id"])
    assert done["status"] == "completed"
    assert [line["custom_id"] for line in file_lines(reopened, done["output_file_id"])] == ["0", "1", "2", "3"]
    assert reopened.attempts(batch["id"]) == {"0": 1, "1": 1, "2": 2, "3": 1}


def test_an_overdue_batch_expires_and_its_unrun_lines_are_answered_as_expired(where, monkeypatch):
    store = JobStore(where)
    batch = new_batch(store, jsonl(request("a"), request("b")))
    item = store.claim("r", 1, [])[0]
    answer(store, "r", item)
    later = time.time() + 25 * 3600
    monkeypatch.setattr(store_module, "_now", lambda: int(later))
    assert store.claim("r", 10, []) == []
    expired = store.get_batch(batch["id"])
    assert expired["status"] == "expired" and expired["expired_at"]
    assert [line["error"]["code"] for line in file_lines(store, expired["error_file_id"])] == ["batch_expired"]
    assert expired["request_counts"] == {"total": 2, "completed": 1, "failed": 1}


def test_a_batch_with_no_line_to_run_is_completed_at_once(where):
    store = JobStore(where)
    batch = new_batch(store, jsonl("[1, 2]", request("x", url="/v1/completions")))
    assert batch["status"] == "completed" and batch["output_file_id"] is None
    assert len(file_lines(store, batch["error_file_id"])) == 2


def test_files_and_batches_list_newest_first_in_pages(where):
    store = JobStore(where)
    ids = [store.put_file("batch", f"f{i}.jsonl", b"{}")["id"] for i in range(5)]
    page, more = store.list_files(purpose="batch", after=None, limit=2)
    assert more and len(page) == 2
    rest, more = store.list_files(purpose="batch", after=page[-1]["id"], limit=10)
    assert not more and {row["id"] for row in page + rest} == set(ids)
    assert store.list_files(purpose="batch_output", after=None, limit=10) == ([], False)
    assert store.delete_file(ids[0]) and not store.delete_file(ids[0]) and store.get_file(ids[0]) is None


def test_the_input_file_is_checked_line_by_line():
    content = jsonl(
        request("ok"),
        {"custom_id": "no-method", "url": ENDPOINT, "body": {}},
        {"custom_id": "get", "method": "GET", "url": ENDPOINT, "body": {}},
        {"custom_id": "body", "method": "POST", "url": ENDPOINT, "body": "text"},
        request("ok"),
        "x" * 20_000,
    )
    lines, refused = read_input(content, endpoint=ENDPOINT, max_lines=100, max_line_bytes=10_000)
    assert [line.custom_id for line in lines] == ["ok"]
    assert [(r.custom_id, r.code) for r in refused] == [
        ("no-method", "invalid_request"), ("get", "invalid_request"), ("body", "invalid_request"),
        ("ok", "duplicate_custom_id"), ("", "line_too_long")]
    assert refused[0].message.startswith("line 2: method")
    with pytest.raises(ValueError, match="at most 2"):
        read_input(jsonl(request("a"), request("b"), request("c")), endpoint=ENDPOINT, max_lines=2, max_line_bytes=10_000)
    with pytest.raises(ValueError, match="UTF-8"):
        read_input(b"\xff\xfe", endpoint=ENDPOINT, max_lines=2, max_line_bytes=10_000)
    with pytest.raises(ValueError, match="no request line"):
        read_input(b"\n \n", endpoint=ENDPOINT, max_lines=2, max_line_bytes=10_000)


def test_the_batches_deployment_answers_bad_input_with_typed_errors(tmp_path):
    import asyncio

    from deployments.batches.deployment import Batches
    from serve.kernel.batch_protocol import BatchCreateRequest
    from serve.kernel.config import BatchSpec
    from serve.kernel.errors import BadRequest, NotFound

    async def scenario():
        batches = Batches(BatchSpec(max_batch_lines=2), str(tmp_path))
        wrong = await batches.create_file("fine-tune", "x.jsonl", b"{}")
        assert isinstance(wrong, BadRequest) and wrong.param == "purpose"
        upload = await batches.create_file("batch", "x.jsonl", jsonl(request("a"), request("b"), request("c")))
        too_many = await batches.create_batch(BatchCreateRequest(input_file_id=upload["id"], endpoint=ENDPOINT,
                                                                 completion_window="24h"))
        assert isinstance(too_many, BadRequest) and too_many.status_code == 400 and "at most 2" in too_many.message
        missing = await batches.create_batch(BatchCreateRequest(input_file_id="file-nope", endpoint=ENDPOINT,
                                                                completion_window="24h"))
        assert isinstance(missing, NotFound) and missing.status_code == 404
        small = await batches.create_file("batch", "y.jsonl", jsonl("{oops"))
        ended = await batches.create_batch(BatchCreateRequest(input_file_id=small["id"], endpoint=ENDPOINT,
                                                              completion_window="24h"))
        assert ended["status"] == "completed"
        refused = await batches.cancel_batch(ended["id"])
        assert isinstance(refused, BadRequest) and refused.code == "batch_not_cancellable"
        assert isinstance(await batches.get_batch("batch_nope"), NotFound)
        assert (await batches.file_content(small["id"])) == b"{oops"
    asyncio.run(scenario())


def test_a_job_store_database_that_is_down_is_a_503_not_a_crash(tmp_path, monkeypatch):
    """The Batches replica starts while PostgreSQL is unreachable; its calls answer 503
    store_unavailable with Retry-After (nothing acknowledged), and readiness says down."""
    import asyncio

    from deployments.batches.deployment import Batches
    from serve.kernel.config import BatchSpec
    from serve.kernel.errors import Unavailable

    monkeypatch.setenv("LLMGRAPH_POSTGRES_URL", f"postgresql://jobs:s3cret-pw@/jobs?host={tmp_path}/nothing-here")

    async def scenario():
        batches = Batches(BatchSpec(backend="postgres"), str(tmp_path))
        refused = await batches.create_file("batch", "x.jsonl", jsonl(request("a")))
        assert isinstance(refused, Unavailable) and refused.code == "store_unavailable"
        assert refused.headers["Retry-After"] and "s3cret-pw" not in refused.message
        with pytest.raises(Unavailable):
            await batches.readiness()
    asyncio.run(scenario())
