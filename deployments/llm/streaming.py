"""The first token of a stream goes out as soon as the engine has it.

Ray Serve LLM's LLMServer batches a stream's chunks (``stream_batching_interval_ms``,
50 ms by default) so that each Ray call carries several tokens: under load that is most
of what streaming costs the replicas and the proxy. Its batcher also holds the *first*
chunk until the first interval ends, which put the whole interval on every streamed
answer's time to first token (``python -m serve bench overhead`` compares it with
``vllm serve`` alone). Here the first chunks go out as they come, and the rest are
batched as before.
"""

from __future__ import annotations

from typing import AsyncIterator, List, Optional, TypeVar

T = TypeVar("T")

#: Chunks passed through unbatched: vLLM's chat stream sends the role chunk and the
#: first token's chunk back to back from one engine step; a completion's first chunk is
#: its first token.
HEAD_CHUNKS = 2


async def first_chunks_at_once(generator: AsyncIterator[T], interval_ms: Optional[float]) -> AsyncIterator[List[T]]:
    """Yield the first :data:`HEAD_CHUNKS` chunks of ``generator`` as they come, then batches of the rest every ``interval_ms`` (Ray Serve LLM's ``Batcher``)."""
    from serve.kernel.ray_private import Batcher

    sent = 0
    async for chunk in generator:
        yield [chunk]
        sent += 1
        if sent == HEAD_CHUNKS:
            break
    if sent < HEAD_CHUNKS:
        return  # the stream ended within its head
    async for batch in Batcher(generator, interval_ms=interval_ms).stream():
        yield batch
