"""The ingress's batch runner over the real services and dispatcher, with the shared fake
handles and a fake store: a line is answered as the same request would be, a line the
API refuses gets its 4xx, a busy graph gives the line back, and people come first."""

from __future__ import annotations

import asyncio
import time

from serve.kernel.config import BatchSpec
from serve.services.batch_runner import MAX_ATTEMPTS, BatchRunner
from serve.services.embeddings import EmbeddingsService
from serve.services.extraction import ExtractionService
from tests.support.fakes import FakeDeployment
from tests.support.models import EXTRACTOR
from tests.unit.test_services import CPU, Graph

#: A runner that has not answered by then is stuck, not slow (each line takes milliseconds).
STUCK_S = 60.0
SPEC = BatchSpec(concurrency=3, concurrency_under_load=1, poll_s=0.01, retry_backoff_s=0.01)


def chat_line(custom_id: str, index: int, attempt: int = 1, **body) -> dict:
    return {"batch_id": "batch_1", "index": index, "custom_id": custom_id, "endpoint": "/v1/chat/completions",
            "attempt": attempt, "body": {"model": EXTRACTOR, "messages": [{"role": "user", "content": "hi"}], **body}}


def runner_over(graph: Graph, store: FakeDeployment) -> BatchRunner:
    embedder = FakeDeployment(embed=lambda texts: {"vectors": [[0.0]] * len(texts), "tokens": 1})
    extraction = FakeDeployment(extract=lambda item, _health: {"data": {}})
    return BatchRunner(SPEC, store, graph.dispatcher, chat=graph.chat,
                       embeddings=EmbeddingsService(CPU, graph.dispatcher, embedder, timeout_s=5),
                       extraction=ExtractionService(CPU, graph.dispatcher, extraction, graph.health, timeout_s=5))


def drive(runner: BatchRunner, store: FakeDeployment, answers: int) -> None:
    """Run the runner's loop until the store has been told ``answers`` times."""
    async def scenario():
        runner.watch()
        try:
            deadline = time.monotonic() + STUCK_S
            while time.monotonic() < deadline:
                if sum(name in ("complete", "release") for name, _ in store.calls) >= answers:
                    return
                await asyncio.sleep(0.01)
            raise AssertionError(f"the store heard {store.calls}")
        finally:
            await runner.close()
    asyncio.run(scenario())


def test_lines_are_answered_as_their_requests_would_be():
    work = [[chat_line("ok", 0), chat_line("streams", 1, stream=True), chat_line("bad", 2, messages="not a list")]]
    store = FakeDeployment(claim=lambda runner, capacity, held: work.pop() if work else [],
                           complete=lambda *args: True, release=lambda *args: None)
    graph = Graph()
    drive(runner_over(graph, store), store, answers=3)
    results = {args[-1]["custom_id"]: (args[-2], args[-1]) for name, args in store.calls if name == "complete"}
    ok, line = results["ok"]
    assert ok and line["response"]["status_code"] == 200 and line["response"]["body"]["model"] == EXTRACTOR
    assert line["id"] == line["response"]["request_id"] and line["id"].startswith("batch_req_")
    for refused in ("streams", "bad"):
        ok, line = results[refused]
        assert not ok and line["response"]["status_code"] == 400, line
        assert line["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert len(graph.extractor.bodies) == 1, "only the valid line reached the model"


def test_a_busy_graph_gives_the_line_back_until_its_last_attempt():
    work = [[chat_line("early", 0, attempt=1), chat_line("last", 1, attempt=MAX_ATTEMPTS)]]
    store = FakeDeployment(claim=lambda runner, capacity, held: work.pop() if work else [],
                           complete=lambda *args: True, release=lambda *args: None)
    graph = Graph(thermal="hard")  # every LLM request is shed with 429
    drive(runner_over(graph, store), store, answers=2)
    told = {(name, args[2] if name == "release" else args[-1]["custom_id"]) for name, args in store.calls
            if name in ("complete", "release")}
    assert told == {("release", 0), ("complete", "last")}
    last = next(args for name, args in store.calls if name == "complete")
    assert last[-1]["response"]["status_code"] == 429


def test_people_first_the_runner_takes_fewer_lines_while_interactive_requests_run():
    graph = Graph()
    runner = runner_over(graph, FakeDeployment())
    assert runner.capacity() == SPEC.concurrency
    graph.dispatcher.in_flight[EXTRACTOR] = 2  # two people waiting on the extractor
    assert runner.capacity() == SPEC.concurrency_under_load


def test_every_claim_tells_the_store_what_the_runner_still_holds():
    calls = []

    def claim(runner, capacity, held):
        calls.append((capacity, list(held)))
        return [chat_line("slow", 0)] if len(calls) == 1 else []

    release = asyncio.Event()
    store = FakeDeployment(claim=claim, complete=lambda *args: True)
    graph = Graph()
    runner = runner_over(graph, store)

    async def scenario():
        original = graph.chat.chat

        async def held_chat(*args, **kwargs):
            await release.wait()
            return await original(*args, **kwargs)
        graph.chat.chat = held_chat
        runner.watch()
        deadline = time.monotonic() + STUCK_S
        while len(calls) < 3 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        release.set()
        await asyncio.sleep(0.05)
        await runner.close()

    asyncio.run(scenario())
    assert calls[0] == (SPEC.concurrency, [])
    assert calls[2] == (SPEC.concurrency - 1, [("batch_1", 0)]), "the line it runs is named, and counts"


def test_a_lines_llm_request_goes_to_the_engine_after_peoples():
    work = [[chat_line("bulk", 0), chat_line("asks-later", 1, priority=50), chat_line("asks-earlier", 2, priority=-5)]]
    store = FakeDeployment(claim=lambda runner, capacity, held: work.pop() if work else [], complete=lambda *args: True)
    graph = Graph()
    drive(runner_over(graph, store), store, answers=3)
    assert sorted(body.priority for body in graph.extractor.bodies) == [SPEC.line_priority, SPEC.line_priority, 50]


def test_a_line_that_met_a_busy_graph_waits_longer_with_each_start():
    from serve.kernel.errors import RateLimited

    runner = runner_over(Graph(), FakeDeployment())
    waits = [runner._backoff_s(RateLimited("busy"), attempt) for attempt in (1, 2, 3)]
    assert waits == [SPEC.retry_backoff_s, 2 * SPEC.retry_backoff_s, 4 * SPEC.retry_backoff_s]
    slow = BatchRunner(BatchSpec(retry_backoff_s=10), FakeDeployment(), runner._dispatcher, chat=None, embeddings=None,
                       extraction=None)
    assert slow._backoff_s(RateLimited("busy", headers={"Retry-After": "3"}), 4) == 3.0, "never past Retry-After"
    assert slow._backoff_s(RateLimited("busy"), 5) == 60.0, "a minute at most"

