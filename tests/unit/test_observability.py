"""Request metrics middleware: labels are bounded, streams are timed to the last byte."""

from __future__ import annotations

import asyncio

import pytest

from serve.kernel import observability


class FakeMetric:
    def __init__(self):
        self.calls = []

    def inc(self, tags):
        self.calls.append(("inc", tags))

    def observe(self, value, tags):
        self.calls.append(("observe", value, tags))


class FakeMetrics:
    def __init__(self):
        self.requests = FakeMetric()
        self.latency = FakeMetric()


def chat(scope, receive, send):
    pass


async def app_answering(scope, receive, send, *, status=200, target=None, chunks=1):
    scope["endpoint"] = chat
    headers = [(b"content-type", b"text/event-stream")]
    if target:
        headers.append((b"x-route-target", target.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    for i in range(chunks):
        await asyncio.sleep(0.01)
        await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": i < chunks - 1})


def run(middleware, scope=None):
    sent = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b""}

    asyncio.run(middleware(scope or {"type": "http", "path": "/v1/chat/completions"}, receive, send))
    return sent


@pytest.mark.parametrize(
    "target, expected",
    [("qwen3-tiny-extractor", "qwen3-tiny-extractor"), ("gpt-4o-somewhere-remote", "other"), (None, "-")],
)
def test_requests_are_counted_by_endpoint_target_and_status(target, expected):
    metrics = FakeMetrics()
    middleware = observability.RequestMetricsMiddleware(
        lambda s, r, snd: app_answering(s, r, snd, status=200, target=target), known_targets={"qwen3-tiny-extractor"}
    )
    middleware._metrics = metrics
    sent = run(middleware)
    assert sent[0]["status"] == 200 and len(sent) == 2  # passed through untouched
    assert metrics.requests.calls == [("inc", {"route": "chat", "target": expected, "status": "200"})]


def test_latency_covers_the_whole_stream():
    metrics = FakeMetrics()
    middleware = observability.RequestMetricsMiddleware(lambda s, r, snd: app_answering(s, r, snd, chunks=10))
    middleware._metrics = metrics
    run(middleware)
    (_, value, tags), = metrics.latency.calls
    assert tags == {"route": "chat"} and value >= 100  # ten 10 ms chunks


def test_unmatched_paths_and_crashes_are_still_counted():
    metrics = FakeMetrics()

    async def crashing(scope, receive, send):
        raise RuntimeError("boom")

    middleware = observability.RequestMetricsMiddleware(crashing)
    middleware._metrics = metrics
    with pytest.raises(RuntimeError):
        run(middleware)
    assert metrics.requests.calls == [("inc", {"route": "unmatched", "target": "-", "status": "500"})]


def test_lifespan_and_websocket_scopes_pass_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    middleware = observability.RequestMetricsMiddleware(app)
    run(middleware, {"type": "lifespan"})
    assert seen == ["lifespan"] and middleware._metrics is None
