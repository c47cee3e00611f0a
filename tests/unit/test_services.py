"""The services behind the endpoints, driven with the shared fakes (no Ray, no HTTP):
routing and fallback as a chat request meets them, conformance of structured replies,
retrieval as a step of chat, and each service's errors."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from ray.exceptions import RayActorError
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from serve.kernel.config import load_profile
from serve.kernel.dispatcher import Dispatcher
from serve.kernel.errors import BadModelOutput, BadRequest, NotFound, PayloadTooLarge, RateLimited
from serve.kernel.health import HealthCache
from serve.kernel.protocol import EmbeddingsRequest, ExtractBatchRequest, ExtractRequest, SearchRequest, UpsertRequest
from serve.kernel.settings import Settings
from serve.model_cards import model_cards
from serve.services.chat import ChatService, RouteAsks
from serve.services.collections import CollectionsService
from serve.services.embeddings import EmbeddingsService
from serve.services.extraction import ExtractionService
from serve.services.models import ModelsService
from serve.services.retrieval import Retrieval
from tests.support.fakes import FakeDeployment, FakeLlm, FakeResidency, FakeRouter
from tests.support.models import EMBEDDER, EXTRACTOR, PROFILE, REASONER

_CPU = load_profile(PROFILE)
#: `auto` may use the random-weight reasoner: these tests are about the path, not the text.
CPU = _CPU.model_copy(update={"router": _CPU.router.model_copy(update={"allow_random_weights": True})})
PASSAGES = [
    {"id": "faq-1", "text": "Refunds are paid within 14 days.", "score": 0.91, "metadata": {}},
    {"id": "faq-2", "text": "Shipping takes three days.", "score": 0.40, "metadata": {}},
]


class Graph:
    """The services of one ingress replica, wired to fakes as the ingress wires them."""

    def __init__(self, *, router: FakeRouter = None, extractor: FakeLlm = None, reasoner: FakeLlm = None,
                 collections: Any = "default", thermal: str = "normal", profile=CPU) -> None:
        self.extractor = extractor or FakeLlm(EXTRACTOR)
        self.reasoner = reasoner or FakeLlm(REASONER)
        self.router = router or FakeRouter()
        self.monitor = FakeDeployment(snapshot=lambda: {"available": False})
        self.health = HealthCache({"extractor": self.extractor, "reasoner": self.reasoner, "router": self.router})
        self.health.thermal = {"level": thermal, "temperature_c": 91.0 if thermal != "normal" else None}
        self.health.watch = lambda: None  # the test decides when health is refreshed
        self.dispatcher = Dispatcher(profile, {EXTRACTOR: self.extractor, REASONER: self.reasoner}, self.router,
                                     self.health, Settings(router_timeout_s=0.5))
        self.store = FakeDeployment(search=lambda name, query, k, filter: PASSAGES[:k],
                                    upsert=lambda name, docs: {"upserted": len(docs)}) if collections == "default" else collections
        self.collections = CollectionsService(profile, self.dispatcher, self.store, timeout_s=5)
        self.chat = ChatService(self.dispatcher, Retrieval(self.collections, context_chars=2000))


def chat_body(content: str = "hello", **extra: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest(model=extra.pop("model", "auto"), messages=[{"role": "user", "content": content}], **extra)


def run(coro):
    return asyncio.run(coro)


# ----------------------------------------------------------------- chat: routing
def test_auto_chat_goes_where_the_router_says_and_the_answer_names_it():
    graph = Graph(router=FakeRouter("reasoner"))
    answer = run(graph.chat.chat(chat_body("prove it"), RouteAsks()))
    assert answer.dispatched.decision.target == REASONER and answer.dispatched.hops == (f"{REASONER}=ok",)
    assert answer.reply["model"] == REASONER and graph.router.asked[0].last_user_text == "prove it"
    assert len(graph.extractor.bodies) == 0 and graph.reasoner.bodies[0].model == REASONER


def test_a_pin_header_wins_and_the_router_is_not_asked():
    graph = Graph(router=FakeRouter("reasoner"))
    answer = run(graph.chat.chat(chat_body(), RouteAsks(pin="extractor")))
    assert answer.reply["model"] == EXTRACTOR and answer.dispatched.decision.pinned and graph.router.asked == []


def test_random_weights_are_refused_to_auto_unless_the_request_allows_them():
    graph = Graph(router=FakeRouter("reasoner"), profile=_CPU)
    kept = run(graph.chat.chat(chat_body(), RouteAsks()))
    allowed = run(graph.chat.chat(chat_body(), RouteAsks(allow_random_weights=True)))
    assert kept.reply["model"] == EXTRACTOR and allowed.reply["model"] == REASONER


def test_auto_chat_falls_back_before_the_first_byte_and_says_so():
    graph = Graph(router=FakeRouter("reasoner"), reasoner=FakeLlm(REASONER, fail=RayActorError()))
    answer = run(graph.chat.chat(chat_body(), RouteAsks()))
    assert answer.reply["model"] == EXTRACTOR
    assert answer.dispatched.hops == (f"{REASONER}=replica_died", f"{EXTRACTOR}=ok")
    assert answer.dispatched.decision.reason.startswith(f"fallback after {REASONER}=replica_died")


def test_a_streamed_chat_is_passed_through_with_its_route():
    graph = Graph()

    async def scenario() -> list[str]:
        answer = await graph.chat.chat(chat_body(stream=True), RouteAsks())
        assert answer.reply is None and answer.dispatched.decision.target == EXTRACTOR
        return [chunk async for chunk in answer.dispatched.stream]

    chunks = run(scenario())
    assert chunks[0].startswith("data: ") and chunks[-1].strip() == "data: [DONE]"


def test_text_completions_route_on_the_prompt():
    graph = Graph(router=FakeRouter("reasoner"))
    body = CompletionRequest(model="auto", prompt=["Once upon", "a time"], max_tokens=8)
    answer = run(graph.chat.complete(body, RouteAsks()))
    assert answer.reply["choices"][0]["text"] == f"from {REASONER}"
    assert graph.router.asked[0].text == "Once upon a time" and graph.router.asked[0].max_tokens == 8


def test_the_dry_run_routes_without_calling_a_model():
    graph = Graph(router=FakeRouter("reasoner"))
    decision = run(graph.chat.route(chat_body("prove it"), RouteAsks()))
    assert decision.target == REASONER and decision.features["thermal_level"] == "normal"
    assert graph.reasoner.bodies == [] and graph.extractor.bodies == []


# ------------------------------------------------------------ chat: conformance
def test_a_json_reply_that_is_not_json_is_the_models_fault_not_a_200():
    graph = Graph(extractor=FakeLlm(EXTRACTOR, content="Sure! Here it is"))
    with pytest.raises(BadModelOutput):
        run(graph.chat.chat(chat_body(response_format={"type": "json_object"}), RouteAsks(pin="extractor")))


def test_a_json_reply_that_is_json_passes_as_sent():
    graph = Graph(extractor=FakeLlm(EXTRACTOR, content='{"city": "Paris"}'))
    answer = run(graph.chat.chat(chat_body(response_format={"type": "json_object"}), RouteAsks(pin="extractor")))
    assert json.loads(answer.reply["choices"][0]["message"]["content"]) == {"city": "Paris"}


# ------------------------------------------------------------------ chat: RAG
def test_retrieval_is_a_step_of_chat_and_the_clients_body_is_left_alone():
    graph = Graph()
    body = chat_body("How fast are refunds?", retrieval={"collection": "faq", "k": 2})
    answer = run(graph.chat.chat(body, RouteAsks()))
    # the store was searched with the question, under the request's k
    assert graph.store.calls == [("search", ("faq", "How fast are refunds?", 2, None))]
    # the model got the passages in a system message, and not our field
    sent = graph.extractor.bodies[0]
    assert sent.messages[0]["role"] == "system" and "[faq-1] Refunds are paid within 14 days." in sent.messages[0]["content"]
    assert "retrieval" not in (sent.__pydantic_extra__ or {})
    # the answer carries the passages, the citations and the header
    assert [r["id"] for r in answer.reply["retrieval"]["results"]] == ["faq-1", "faq-2"]
    assert answer.reply["citations"] == ["faq-1", "faq-2"] and answer.reply["citations_from"] == "context"
    assert answer.headers == {"x-retrieval-ids": "faq-1,faq-2"}
    # the request the client sent is as it came
    assert len(body.messages) == 1 and body.__pydantic_extra__["retrieval"] == {"collection": "faq", "k": 2}


def test_retrieval_refuses_what_it_cannot_search():
    graph = Graph()
    with pytest.raises(BadRequest) as bad_name:
        run(graph.chat.chat(chat_body(retrieval={"collection": "No Such/../name"}), RouteAsks()))
    assert bad_name.value.code == "invalid_collection_name"
    with pytest.raises(BadRequest) as too_many:
        run(graph.chat.chat(chat_body(retrieval={"collection": "faq", "k": CPU.collections.max_k + 1}), RouteAsks()))
    assert too_many.value.param in ("retrieval.k", "k")
    with pytest.raises(BadRequest) as malformed:
        run(graph.chat.chat(chat_body(retrieval={"collection": "faq", "k": "many"}), RouteAsks()))
    assert malformed.value.param.startswith("retrieval")
    assert graph.store.calls == [] and graph.extractor.bodies == []


def test_retrieval_in_a_profile_without_collections_is_a_404():
    graph = Graph(collections=None)
    with pytest.raises(NotFound) as missing:
        run(graph.chat.chat(chat_body(retrieval={"collection": "faq"}), RouteAsks()))
    assert missing.value.code == "collections_disabled" and graph.extractor.bodies == []


# ---------------------------------------------------------------- chat: errors
def test_an_unknown_role_or_model_is_a_4xx_before_any_model_is_called():
    graph = Graph()
    with pytest.raises(BadRequest) as role:
        run(graph.chat.chat(ChatCompletionRequest(model="auto", messages=[{"role": "wizard", "content": "hi"}]), RouteAsks()))
    assert role.value.code == "invalid_role" and role.value.param == "messages[0].role"
    with pytest.raises(NotFound):
        run(graph.chat.chat(chat_body(model="gpt-9"), RouteAsks()))
    with pytest.raises(BadRequest) as pin:
        run(graph.chat.chat(chat_body(), RouteAsks(pin="nobody")))
    assert pin.value.param == "x-route"
    assert graph.extractor.bodies == [] and graph.reasoner.bodies == []


def test_a_hot_gpu_sheds_chat_with_retry_after():
    graph = Graph(thermal="hard")
    with pytest.raises(RateLimited) as shed:
        run(graph.chat.chat(chat_body(), RouteAsks()))
    assert shed.value.headers["Retry-After"] and graph.extractor.bodies == []


# ------------------------------------------------------------------- embeddings
def test_embeddings_checks_its_model_and_inputs_and_encodes_base64():
    embedder = FakeDeployment(embed=lambda texts: {"vectors": [[1.0, 0.5]] * len(texts), "tokens": 3 * len(texts)})
    graph = Graph()
    service = EmbeddingsService(CPU, graph.dispatcher, embedder, timeout_s=5)
    floats = run(service.embed(EmbeddingsRequest(model=EMBEDDER, input=["a", "b"])))
    assert [item.embedding for item in floats.data] == [[1.0, 0.5], [1.0, 0.5]] and floats.usage.prompt_tokens == 6
    packed = run(service.embed(EmbeddingsRequest(model="auto", input="a", encoding_format="base64")))
    assert packed.data[0].embedding == "AACAPwAAAD8="  # little-endian float32 1.0, 0.5
    with pytest.raises(BadRequest) as llm:
        run(service.embed(EmbeddingsRequest(model=EXTRACTOR, input="a")))
    assert llm.value.code == "model_not_supported"
    with pytest.raises(BadRequest):
        run(service.embed(EmbeddingsRequest(model=EMBEDDER, input=[""])))
    assert len(embedder.calls) == 2


# ------------------------------------------------------------------- extraction
def test_extraction_checks_sizes_and_keeps_one_result_per_document():
    def extract_many(items, _health):
        return [{"title": item.document.split()[0]} if "boom" not in item.document else RuntimeError("secret path /srv/x")
                for item in items]

    handle = FakeDeployment(extract=lambda item, _health: {"title": "Engineer"}, extract_many=extract_many)
    graph = Graph()
    service = ExtractionService(CPU, graph.dispatcher, handle, graph.health, timeout_s=5)
    assert run(service.extract(ExtractRequest(document="Engineer at Acme"))) == {"title": "Engineer"}
    with pytest.raises(PayloadTooLarge):
        run(service.extract(ExtractRequest(document="x" * (CPU.extraction.max_document_chars + 1))))
    batch = run(service.extract_batch(ExtractBatchRequest(documents=["Nurse in Leeds", "boom", 7]), "req-1"))
    assert [r["status"] for r in batch["results"]] == [200, 500, 400]
    assert batch["results"][0]["result"] == {"title": "Nurse"} and (batch["succeeded"], batch["failed"]) == (1, 2)
    assert "/srv/x" not in json.dumps(batch), "internal error text never reaches the client"


# ------------------------------------------------------------------ collections
def test_collections_check_limits_before_the_store_is_asked():
    graph = Graph()
    doc = {"id": "a", "text": "x"}
    assert run(graph.collections.upsert("faq", UpsertRequest(documents=[doc])))["ids"] == ["a"]
    with pytest.raises(BadRequest) as twice:
        run(graph.collections.upsert("faq", UpsertRequest(documents=[doc, doc])))
    assert twice.value.code == "duplicate_id"
    with pytest.raises(BadRequest):
        run(graph.collections.search("faq", SearchRequest(query="q" * (CPU.collections.max_query_chars + 1))))
    assert [name for name, _ in graph.store.calls] == ["upsert"]
    found = run(graph.collections.search("faq", SearchRequest(query="refunds", k=1)))
    assert found == {"object": "list", "collection": "faq", "results": PASSAGES[:1]}


# ----------------------------------------------------------------------- models
def test_models_show_live_states_and_only_on_demand_models_sleep():
    swap = load_profile("cpu-swap")
    heavy = next(spec for spec in swap.models if spec.on_demand).model_id
    residency = FakeResidency(states=[{"model": heavy, "state": "asleep", "wakes": 2}])
    graph = Graph()
    service = ModelsService(swap, model_cards(swap), graph.health, graph.monitor, residency, timeout_s=5)
    card = run(service.get(heavy))
    assert card.metadata["state"] == "asleep" and card.metadata["wakes"] == 2
    assert run(service.sleep(heavy)) == {"model": heavy, "state": "asleep"}
    resident = next(spec for spec in swap.models if not spec.on_demand).model_id
    with pytest.raises(BadRequest) as always_awake:
        run(service.wake(resident))
    assert always_awake.value.code == "model_resident"
    with pytest.raises(NotFound):
        run(service.get("gpt-9"))
    assert residency.calls == [("sleep", heavy)]


def test_readiness_waits_for_every_deployment_and_shows_the_gpu():
    graph = Graph(reasoner=FakeLlm(REASONER, fail=RayActorError()))
    service = ModelsService(CPU, model_cards(CPU), graph.health, graph.monitor, None, timeout_s=5)
    ready, picture = run(service.readiness())
    assert not ready and picture["status"] == "not_ready" and picture["deployments"]["reasoner"] != "ok"
    assert picture["deployments"]["extractor"] == "ok" and picture["gpu"] == {"available": False}


def test_an_extract_request_names_a_collection_it_can_index_into():
    handle = FakeDeployment(extract=lambda item, _health: {"data": {}, "indexed": {"collection": item.collection}})
    graph = Graph()
    service = ExtractionService(CPU, graph.dispatcher, handle, graph.health, timeout_s=5)
    assert run(service.extract(ExtractRequest(document="Engineer at Acme", collection="postings")))["indexed"] == {
        "collection": "postings"}
    with pytest.raises(BadRequest) as bad_name:
        run(service.extract(ExtractRequest(document="x", collection="../etc")))
    assert bad_name.value.code == "invalid_collection_name"
    with pytest.raises(BadRequest) as custom:
        run(service.extract(ExtractRequest(document="x", collection="postings", schema={"type": "object"})))
    assert custom.value.param == "collection"
    assert len(handle.calls) == 1
