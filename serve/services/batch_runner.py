"""The batch runner of one ingress replica: it takes batch lines from the job store and
answers each through the same services, and so the same dispatcher, as an interactive
request (routing, ``auto``, wakes of on-demand models, fallback, conformance).

Interactive first, twice: the engines schedule a line's LLM request after people's
(vLLM's priority scheduling, ``batch.line_priority``), and while this replica has
interactive LLM requests in flight the runner takes at most
``batch.concurrency_under_load`` lines at once (``batch.concurrency`` otherwise), so bulk
work waits for people, not the other way round. A line that meets a
busy or waking graph (429, 503) is given back to the store and runs later; after
:data:`MAX_ATTEMPTS` starts its error is the answer.

Every claim tells the store which lines this runner still holds, so an answer lost on
the way (the store was restarting) is run again rather than forgotten; a line whose
answer was stored is never run again.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any, Awaitable, Callable, Optional

from pydantic import ValidationError
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from serve.kernel.batch_protocol import response_line
from serve.kernel.config import BatchSpec
from serve.kernel.dispatcher import Dispatcher
from serve.kernel.errors import BadRequest, RateLimited, Unavailable, failure_envelope, validation_problem, within
from serve.kernel.protocol import EmbeddingsRequest, ExtractRequest
from serve.services.chat import ChatService, RouteAsks
from serve.services.embeddings import EmbeddingsService
from serve.services.extraction import ExtractionService

logger = logging.getLogger("ray.serve")

#: Starts a line gets when the graph keeps answering 429 or 503; then that is its answer.
MAX_ATTEMPTS = 5
#: Longest wait for one store call (claims and answers are small, local writes).
STORE_TIMEOUT_S = 30.0
#: Endpoints whose lines hold one of this replica's LLM calls while they run.
LLM_ENDPOINTS = frozenset({"/v1/chat/completions", "/v1/completions"})


class BatchRunner:
    """Take lines from the store and answer them, in this replica's background.

    Args:
        spec: The profile's ``batch`` block (concurrency, poll interval).
        store: The Batches deployment's handle.
        dispatcher: This replica's dispatcher (its in-flight counts tell interactive load).
        chat, embeddings, extraction: The services a line is answered by.
    """

    def __init__(self, spec: BatchSpec, store: Any, dispatcher: Dispatcher, *, chat: ChatService,
                 embeddings: EmbeddingsService, extraction: ExtractionService) -> None:
        self._spec = spec
        self._store = store
        self._dispatcher = dispatcher
        self._id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._handlers: dict[str, Callable[[dict[str, Any], dict[str, Any]], Awaitable[Any]]] = {
            "/v1/chat/completions": lambda body, _: self._chat(chat, body),
            "/v1/completions": lambda body, _: self._complete(chat, body),
            "/v1/embeddings": lambda body, _: self._embed(embeddings, body),
            "/v1/extract": lambda body, batch_metadata: self._extract(extraction, body, batch_metadata),
        }
        self._running: dict[tuple[str, int], asyncio.Task] = {}
        self._llm_lines: set[tuple[str, int]] = set()
        self._freed = asyncio.Event()
        self._closed = False
        self._loop_task: Optional[asyncio.Task] = None

    def watch(self) -> None:
        """Start the loop (once; from the replica's first health check)."""
        if self._closed:
            return
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def close(self) -> None:
        """Stop taking lines and stop the ones running (the store runs them again)."""
        self._closed = True
        tasks = [task for task in (self._loop_task, *self._running.values()) if task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def capacity(self) -> int:
        """Lines this runner may start now: fewer while people are waiting on the LLMs."""
        interactive = sum(self._dispatcher.in_flight.values()) - len(self._llm_lines)
        limit = self._spec.concurrency_under_load if interactive > 0 else self._spec.concurrency
        return max(0, limit - len(self._running))

    async def _loop(self) -> None:
        """Claim lines while there is room; with every slot busy, wait for one to free (a
        claim every ``poll_s`` all the same: it is the runner's sign of life)."""
        while not self._closed:  # a flag too: asyncio.wait_for (in within) can swallow a cancel
            self._freed.clear()  # before the claim: a line that ends meanwhile still wakes us
            capacity = self.capacity()
            try:
                work = await within(self._store.claim.remote(self._id, capacity, list(self._running)),
                                    STORE_TIMEOUT_S, "the batch store")
            except Exception as exc:  # noqa: BLE001 - the store may be restarting; try again
                logger.debug("claiming batch lines failed: %r", exc)
                work = []
            for item in work:
                key = (item["batch_id"], item["index"])
                task = asyncio.get_running_loop().create_task(self._run(item))
                self._running[key] = task
                if item["endpoint"] in LLM_ENDPOINTS:
                    self._llm_lines.add(key)
                task.add_done_callback(lambda _, key=key: self._forget(key))
            if capacity and len(work) < capacity:
                await asyncio.sleep(self._spec.poll_s)  # nothing more to take now
                continue
            # asyncio.wait, not wait_for: wait_for can swallow a cancel that meets the event
            freed = asyncio.ensure_future(self._freed.wait())
            try:
                await asyncio.wait({freed}, timeout=self._spec.poll_s)
            finally:
                freed.cancel()

    def _forget(self, key: tuple[str, int]) -> None:
        self._running.pop(key, None)
        self._llm_lines.discard(key)
        self._freed.set()

    async def _run(self, item: dict[str, Any]) -> None:
        request_id = f"batch_req_{uuid.uuid4().hex}"
        try:
            body = await self._handlers[item["endpoint"]](item["body"], item.get("metadata") or {})
            ok, result = True, response_line(item["custom_id"], request_id, 200, body)
        except (RateLimited, Unavailable) as exc:
            if item["attempt"] < MAX_ATTEMPTS:
                # Hold the slot while the graph is busy (this runner slows down with it),
                # then give the line back for a later start.
                await asyncio.sleep(self._backoff_s(exc, item["attempt"]))
                await self._store_call("release", self._id, item["batch_id"], item["index"])
                return
            ok, result = False, self._failed(item, exc, request_id)
        except Exception as exc:  # noqa: BLE001 - one line's failure is its own answer
            ok, result = False, self._failed(item, exc, request_id)
        await self._store_call("complete", self._id, item["batch_id"], item["index"], ok, result)

    def _backoff_s(self, exc: BaseException, attempt: int) -> float:
        """How long a line that met a busy graph waits: doubling from
        ``batch.retry_backoff_s`` per start, never past the graph's Retry-After or a minute."""
        wait = min(self._spec.retry_backoff_s * 2 ** (attempt - 1), 60.0)
        retry_after = getattr(exc, "headers", {}).get("Retry-After", "")
        return min(wait, float(retry_after)) if retry_after.isdigit() else wait

    @staticmethod
    def _failed(item: dict[str, Any], exc: BaseException, request_id: str) -> dict[str, Any]:
        status, envelope = failure_envelope(exc, request_id=request_id,
                                            where=f"batch {item['batch_id']} line {item['index'] + 1}")
        return response_line(item["custom_id"], request_id, status, envelope)

    async def _store_call(self, method: str, *args: Any) -> None:
        """Tell the store, trying a few times: an answer lost here is run again later (the
        next claim no longer holds the line)."""
        for delay in (0.5, 2.0, 5.0, None):
            try:
                await within(getattr(self._store, method).remote(*args), STORE_TIMEOUT_S, "the batch store")
                return
            except Exception as exc:  # noqa: BLE001 - retried, then left to the next claim
                if delay is None:
                    logger.warning("the batch store did not take %s for a line: %r", method, exc)
                    return
                await asyncio.sleep(delay)

    # ------------------------------------------------------------ per endpoint
    @staticmethod
    def _parse(model: Any, body: dict[str, Any]) -> Any:
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            message, param = validation_problem(exc.errors(), "body")
            raise BadRequest(message, param=param) from None

    def _llm_request(self, model: Any, body: dict[str, Any]) -> Any:
        """A chat or completion line as its request: never streamed, and scheduled after
        interactive requests by the engines (a line may ask for later, never earlier)."""
        request = self._parse(model, body)
        if request.stream:
            raise BadRequest("a batch line cannot stream; leave stream unset", param="body.stream")
        request.priority = max(request.priority, self._spec.line_priority)
        return request

    async def _chat(self, chat: ChatService, body: dict[str, Any]) -> Any:
        return (await chat.chat(self._llm_request(ChatCompletionRequest, body), RouteAsks())).reply

    async def _complete(self, chat: ChatService, body: dict[str, Any]) -> Any:
        return (await chat.complete(self._llm_request(CompletionRequest, body), RouteAsks())).reply

    async def _embed(self, embeddings: EmbeddingsService, body: dict[str, Any]) -> Any:
        return (await embeddings.embed(self._parse(EmbeddingsRequest, body))).model_dump(mode="json")

    async def _extract(self, extraction: ExtractionService, body: dict[str, Any], batch_metadata: dict[str, Any]) -> Any:
        """An extract line; a batch whose metadata names a ``collection`` indexes every
        posting there (a line may name its own)."""
        if "collection" in batch_metadata and "collection" not in body:
            body = {**body, "collection": batch_metadata["collection"]}
        return await extraction.extract(self._parse(ExtractRequest, body))
