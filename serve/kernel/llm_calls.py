"""One call to an LLM deployment, from admission to the answer's last byte.

The dispatcher decides where a request goes; this is what happens at the model: the
in-flight count (admission and count with no await between them), an on-demand
model's lease around the whole answer, the first chunk awaited so that errors arrive
before a stream starts, a retry when Ray Serve refuses part of a burst released by a
wake, and one more wake when the replica answers that its engine is asleep.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, AsyncIterator, Callable, Optional

from serve.kernel.errors import GraphError, ModelAsleep, RateLimited, typed_handle_errors
from serve.kernel.ray_private import NON_STREAMING_RESPONSE_TYPES, ErrorResponse, OpenAIHTTPException, openai_sse, sanitize_chat_request
from serve.kernel.residency_client import Leases

logger = logging.getLogger("ray.serve")

#: Pauses before a request that waited for its model tries again after a refusal for
#: load (see :meth:`LlmCalls._first_chunk`).
BURST_RETRIES_S = (0.25, 0.5, 1.0, 2.0)


class LlmCalls:
    """Calls to the LLM deployments of one replica, counted while they run.

    Args:
        llms: The LLM deployments' handles by model id.
        on_demand: Whether each model id is on demand (leased) or resident.
        leases: The residency manager's leases (None when every model is resident).
        admit: Admission for one more LLM request (raises when refused).
    """

    def __init__(self, llms: dict[str, Any], on_demand: dict[str, bool], leases: Optional[Leases], *,
                 admit: Callable[[], None]) -> None:
        # Configured once: every .options() call makes a new handle with its own pushers.
        self._llms = {model_id: handle.options(stream=True) for model_id, handle in llms.items()}
        self._on_demand = on_demand
        self._leases = leases
        self._admit = admit
        self.in_flight: dict[str, int] = {}

    async def _call_once(self, body: Any, call_method: str, request_info: Any) -> tuple[Optional[dict], Optional[AsyncIterator], float]:
        """One LLM call: its reply, or its stream once the first chunk has arrived, and
        how long it waited for the model to wake.

        The in-flight count, and an on-demand model's lease, cover the whole answer (the
        last byte of a stream).
        """
        target = body.model
        # Admission and the count happen with no await in between, so concurrent
        # requests cannot all pass a soft-limit check before any of them is counted.
        self._admit()
        self._count_in_flight(target, +1)
        leased = self._leases is not None and self._on_demand[target]
        wake_ms = 0.0
        try:
            if leased:
                wake_ms = await self._leases.acquire(target)
        except BaseException:
            self._count_in_flight(target, -1)
            raise
        try:
            if call_method == "chat":
                body = sanitize_chat_request(body)
            chunks, first = await self._first_chunk(target, call_method, body, request_info, waited=wake_ms > 0)
            head = first[0] if isinstance(first, list) else first
            if isinstance(head, GraphError):
                raise head  # the replica's typed answer (its engine is asleep)
            if isinstance(head, ErrorResponse):
                raise OpenAIHTTPException(message=head.error.message, status_code=head.error.code, type=head.error.type)
            if isinstance(head, NON_STREAMING_RESPONSE_TYPES):
                self._finished(target, leased)
                return head.model_dump(), None, wake_ms
        except BaseException:
            self._finished(target, leased)
            raise

        async def rest() -> AsyncIterator[Any]:
            try:
                yield first
                async for chunk in chunks:
                    yield chunk
            finally:
                self._finished(target, leased)

        return None, openai_sse(rest()), wake_ms

    async def _first_chunk(self, target: str, call_method: str, body: Any, request_info: Any, *,
                           waited: bool) -> tuple[Any, Any]:
        """Call ``target``'s replica; its generator and first chunk.

        A request that waited for a wake or a turn is let go with every other request
        that waited: Ray Serve's handle counts requests it has not placed yet against
        ``max_queued_requests`` and may refuse part of such a burst before placing any
        (its router says so). Such a request, holding its lease, tries again after a
        refusal for load, :data:`BURST_RETRIES_S` apart; then the 429 stands.
        """
        delays = BURST_RETRIES_S if waited else ()
        for attempt in range(len(delays) + 1):
            try:
                with typed_handle_errors():
                    chunks = getattr(self._llms[target], call_method).remote(body, request_info)
                    return chunks, await chunks.__anext__()
            except RateLimited as exc:
                if attempt == len(delays) or exc.code != "overloaded":
                    raise
                await asyncio.sleep(delays[attempt])
        raise AssertionError("unreachable")

    async def call(self, body: Any, call_method: str, request_info: Any) -> tuple[Optional[dict], Optional[AsyncIterator], float]:
        """One LLM call (see :meth:`_call_once`); when the replica answers that its engine is asleep (its replica
        was replaced, or the manager's ledger is behind), the manager is told, and one
        more lease wakes the model for a second try."""
        try:
            return await self._call_once(body, call_method, request_info)
        except ModelAsleep:
            if self._leases is None or not self._on_demand[body.model]:
                raise
            logger.warning("%s answered that its engine is asleep; waking it", body.model)
            await self._leases.found_asleep(body.model)
            return await self._call_once(body, call_method, request_info)

    def _count_in_flight(self, target: str, delta: int) -> None:
        self.in_flight[target] = self.in_flight.get(target, 0) + delta

    def _finished(self, target: str, leased: bool) -> None:
        self._count_in_flight(target, -1)
        if leased:
            self._leases.release(target)
