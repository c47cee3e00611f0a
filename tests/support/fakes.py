"""Shared fakes of the graph's deployment handles, for unit tests of the dispatcher and
the services (no Ray, no HTTP).

Each fake stands in for a handle only: the interface the kernel and the services call
(``options``, ``<method>.remote``, ``check_health.remote``), answering and failing the
way Serve handles do (a deployment's typed errors raised at the caller; a stream as an
async generator). The integration suite runs the same code against the real graph.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable, Optional

from ray.exceptions import RayActorError
from ray.serve.llm.openai_api_models import ChatCompletionResponse, CompletionResponse

from serve.kernel.errors import Unavailable
from serve.kernel.routing import RouteDecision, RouteInput
from tests.support.models import EXTRACTOR, REASONER


class Method:
    """``handle.<method>``: its ``remote`` is the fake's function."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.remote = fn


def chat_reply(model: str, content: Optional[str] = None) -> ChatCompletionResponse:
    """A chat reply as an LLMServer sends it."""
    return ChatCompletionResponse(
        id="r", object="chat.completion", created=0, model=model,
        choices=[{"index": 0, "message": {"role": "assistant", "content": content if content is not None else f"from {model}"},
                  "finish_reason": "stop"}],
        usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    )


def completion_reply(model: str) -> CompletionResponse:
    """A text-completion reply as an LLMServer sends it."""
    return CompletionResponse(
        id="c", object="text_completion", created=0, model=model,
        choices=[{"index": 0, "text": f"from {model}", "finish_reason": "stop"}],
        usage={"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    )


class FakeLlm:
    """An LLMServer deployment's handle: answers, streams, or fails the way Serve handles fail.

    Args:
        model: The model id it answers as.
        fail: Raised by every call (and by its health check).
        stream_fail_after: A stream dies (its replica does) after this many chunks.
        content: The text of its chat answers (default ``from <model>``).
        delay_s: How long before an answer starts (a request Serve holds for a replica:
            longer than any test waits).
    """

    def __init__(self, model: str, *, fail: Optional[BaseException] = None, stream_fail_after: Optional[int] = None,
                 content: Optional[str] = None, delay_s: float = 0.0) -> None:
        self.model, self.fail, self.stream_fail_after, self.content = model, fail, stream_fail_after, content
        self.delay_s = delay_s
        self.cancelled = 0
        self.bodies: list[Any] = []
        self.chat = Method(self._chat)
        self.completions = Method(self._completions)
        self.check_health = Method(self._healthy)

    def options(self, **_: Any) -> "FakeLlm":
        return self

    async def _healthy(self) -> None:
        if self.fail is not None:
            raise self.fail

    def _chat(self, body: Any, _info: Any):
        self.bodies.append(body)
        return self._answer(body)

    def _completions(self, body: Any, _info: Any):
        self.bodies.append(body)
        return self._complete(body)

    async def _complete(self, body: Any):
        if self.fail is not None:
            raise self.fail
        yield completion_reply(self.model)

    async def _answer(self, body: Any):
        if self.delay_s:
            try:
                await asyncio.sleep(self.delay_s)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
        if self.fail is not None:
            raise self.fail
        if not body.stream:
            yield chat_reply(self.model, self.content)
            return
        for i in range(5):
            if self.stream_fail_after is not None and i == self.stream_fail_after:
                raise RayActorError()
            yield f'data: {{"model": "{self.model}", "i": {i}}}\n\n'


class FakeRouter:
    """The Router deployment's handle: decides ``role`` (after ``delay_s``), recording
    what it was asked.

    Args:
        role: ``extractor`` or ``reasoner``.
        score: The policy score it reports (0.9 for the reasoner, 0.1 otherwise).
        delay_s: How long a decision takes (a stalled router: longer than the timeout).
        extractor, reasoner: The model ids of the two roles.
        policy: The policy name in its decisions.
    """

    def __init__(self, role: str = "extractor", *, score: Optional[float] = None, delay_s: float = 0.0,
                 extractor: str = EXTRACTOR, reasoner: str = REASONER, policy: str = "fake") -> None:
        self.role, self.delay_s, self.policy = role, delay_s, policy
        self.score = score if score is not None else (0.9 if role == "reasoner" else 0.1)
        self.targets = {"extractor": extractor, "reasoner": reasoner}
        self.asked: list[RouteInput] = []
        self.decide = Method(self._decide)
        self.check_health = Method(self._healthy)

    async def _healthy(self) -> None:
        return None

    async def _decide(self, route_input: RouteInput) -> RouteDecision:
        self.asked.append(route_input)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return RouteDecision(target=self.targets[self.role], role=self.role,
                             reason=f"{self.policy}: {self.role} (score {self.score:.2f})", policy=self.policy,
                             score=self.score, threshold=0.5)


class FakeResidency:
    """The residency manager's handle: records leases; answers a wait, or a typed error
    as a value (as the manager does, so a refusal crosses the handle intact)."""

    def __init__(self, *, refuse: bool = False, waited_ms: float = 1234.5,
                 states: Optional[list[dict[str, Any]]] = None) -> None:
        self.refuse, self.waited_ms = refuse, waited_ms
        self.rows = states or []
        self.calls: list[tuple[str, str]] = []
        self.acquire = Method(self._acquire)
        self.release = Method(self._release)
        self.engine_found_asleep = Method(self._found_asleep)
        self.states = Method(self._states)
        self.sleep = Method(self._sleep)
        self.wake = Method(self._wake)

    async def _found_asleep(self, model_id: str) -> None:
        self.calls.append(("found_asleep", model_id))

    async def _acquire(self, model_id: str):
        self.calls.append(("acquire", model_id))
        if self.refuse:
            return Unavailable("no room", code="model_cannot_fit", headers={"Retry-After": "5"})
        return self.waited_ms

    async def _release(self, model_id: str) -> None:
        self.calls.append(("release", model_id))

    async def _states(self) -> list[dict[str, Any]]:
        return self.rows

    async def _sleep(self, model_id: str) -> dict[str, Any]:
        self.calls.append(("sleep", model_id))
        return {"model": model_id, "state": "asleep"}

    async def _wake(self, model_id: str) -> dict[str, Any]:
        self.calls.append(("wake", model_id))
        return {"model": model_id, "state": "awake"}


class FakeDeployment:
    """Any other deployment's handle (Embedder, Collections, Extraction, GpuMonitor):
    each named method answers with its function's result, and every call is recorded.

    ``FakeDeployment(search=lambda name, query, k, filter: [...])``: an async or plain
    function per method; one that raises makes the call raise, as a handle does.
    """

    def __init__(self, **methods: Callable[..., Any]) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        for name, fn in methods.items():
            setattr(self, name, Method(self._recorded(name, fn)))

    def _recorded(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any) -> Any:
            self.calls.append((name, args))
            result = fn(*args)
            return await result if asyncio.iscoroutine(result) else result
        return call
