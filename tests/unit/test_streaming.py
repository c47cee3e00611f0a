"""The first chunks of a stream are not held back for Ray Serve LLM's batch interval."""

from __future__ import annotations

import asyncio

from deployments.llm.streaming import first_chunks_at_once


def test_the_role_chunk_and_the_first_token_go_out_before_the_batch_interval_ends():
    async def scenario():
        release = asyncio.Event()

        async def engine():
            yield "role"
            yield "first token"
            await release.wait()  # the engine is still computing the next tokens
            for i in range(4):
                yield f"token {i}"

        stream = first_chunks_at_once(engine(), interval_ms=60_000)
        head = [await asyncio.wait_for(stream.__anext__(), 5) for _ in range(2)]
        release.set()
        rest = [batch async for batch in stream]
        return head, rest

    head, rest = asyncio.run(scenario())
    assert head == [["role"], ["first token"]]
    assert [chunk for batch in rest for chunk in batch] == [f"token {i}" for i in range(4)]
    assert len(rest) == 1, "the rest of the stream is batched"


def test_a_stream_shorter_than_its_head_ends_cleanly():
    async def one():
        yield "error"

    async def collect():
        return [batch async for batch in first_chunks_at_once(one(), interval_ms=50)]

    assert asyncio.run(collect()) == [["error"]]
