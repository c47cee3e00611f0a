"""The Router deployment's class without Ray: where the prompt's vector comes from."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from deployments.router.deployment import Router
from serve.kernel.config import EmbedderSpec, RouterSpec
from serve.kernel.routing import RouteInput, RouteTargets
from tests.support.loop import LoopTicks

TARGETS = RouteTargets(extractor="ext", reasoner="rea", extractor_max_model_len=4096, reasoner_max_model_len=8192)


class WordEncoder:
    """Embeds a text by two words: +x for "prove", +y for "extract"; records each call."""

    dimensions = 3

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        rows = [[float("prove" in t.lower()), float("extract" in t.lower()), 0.1] for t in texts]
        vectors = np.asarray(rows, dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


class EmbedderHandle:
    """Stands in for the Embedder's handle (``embed.remote``)."""

    def __init__(self, encoder: WordEncoder) -> None:
        self.encoder, self.texts = encoder, []
        self.embed = type("Method", (), {"remote": lambda _self, texts: self._embed(texts)})()

    async def _embed(self, texts):
        self.texts.extend(texts)
        return {"vectors": self.encoder.encode(texts), "tokens": len(texts)}


@pytest.fixture(autouse=True)
def no_metrics(monkeypatch):
    monkeypatch.setattr(Router, "_count_decision", lambda self, decision: None)


def decide(router: Router, text: str):
    return asyncio.run(router.decide(RouteInput(text=text, last_user_text=text)))


def test_a_router_with_its_own_encoder_never_calls_the_embedder():
    spec = RouterSpec(policy="semantic", semantic_k=3)
    encoder = WordEncoder()
    router = Router(spec, TARGETS, None, encoder=encoder)  # no Embedder handle at all
    assert decide(router, "Prove that this holds.").role == "reasoner"
    assert decide(router, "Extract the city.").role == "extractor"
    # The exemplars and both prompts went through the router's own encoder.
    assert [len(call) for call in encoder.calls[1:]] == [1, 1] and len(encoder.calls[0]) > 100


def test_without_one_it_asks_the_embedder_deployment():
    spec = RouterSpec(policy="hybrid")
    handle = EmbedderHandle(WordEncoder())
    router = Router(spec, TARGETS, handle)
    decision = decide(router, "Prove it, step by step.")
    assert decision.role == "reasoner" and handle.texts[-1] == "Prove it, step by step."


def test_the_profile_says_where_prompts_are_embedded():
    cpu = EmbedderSpec(model_id="e", source="s", dimensions=3)
    gpu = cpu.model_copy(update={"resources": cpu.resources.model_copy(update={"num_gpus": 0.1}), "device": "cuda"})
    assert RouterSpec(policy="hybrid").embeds_in_process(cpu)
    assert not RouterSpec(policy="hybrid").embeds_in_process(gpu)
    assert RouterSpec(policy="hybrid", embed_in_process=True).embeds_in_process(gpu)
    assert not RouterSpec(policy="heuristic").embeds_in_process(cpu), "the heuristic embeds nothing"


def test_a_long_prompt_is_scored_off_the_event_loop(monkeypatch):
    """The scans are capped, but a long prompt's still take a while: the loop keeps ticking."""
    import threading
    import time

    import deployments.router.deployment as deployment

    real_decide, scored_in = deployment.decide, []

    def slow_decide(*args, **kwargs):
        scored_in.append(threading.current_thread() is threading.main_thread())
        time.sleep(0.5)  # what scanning a long prompt on a slow machine costs
        return real_decide(*args, **kwargs)

    monkeypatch.setattr(deployment, "decide", slow_decide)
    router = Router(RouterSpec(policy="heuristic"), TARGETS, None)

    async def scenario():
        text = "Why? " * 2_000
        async with LoopTicks() as loop:
            decision = await router.decide(RouteInput(text=text, last_user_text=text))
        short = await router.decide(RouteInput(text="hi", last_user_text="hi"))
        return decision, short, loop.ticks

    decision, short, ticks = asyncio.run(scenario())
    assert decision.role in ("extractor", "reasoner") and short.role == "extractor"
    assert scored_in == [False, True], "the long prompt in a worker thread, a short one inline"
    assert ticks >= 10, f"the event loop ticked {ticks} times in 0.5 s"
