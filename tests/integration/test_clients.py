"""The client libraries people point at a local endpoint, each used as its users use it,
against the running ``cpu`` graph and its real model (SmolLM2-135M as the extractor).

OpenAI's Responses API (``create``, ``stream``, ``parse``, a chained turn, stored
responses), the Anthropic SDK (``messages.create``, ``messages.stream``, a tool-use
round trip, ``count_tokens``, errors in Anthropic's shape), LangChain's ``ChatOpenAI``
(structured output, a streamed call), pydantic-ai (a structured result), the OpenAI
Agents SDK (one function tool, one turn), the rerank endpoint, and the chat parameters
clients send (``seed``, ``n``, ``metadata``, ``stream_options``, unknown fields).

Answers are judged loosely where a 135M model speaks (it names Paris, it calls the tool
it is made to call) and exactly where the graph does (shapes, events, ids, order).
"""

from __future__ import annotations

import asyncio

import anthropic
import openai
import pytest
from pydantic import BaseModel

from tests.support.models import EMBEDDER, EXTRACTOR, REASONER

pytestmark = pytest.mark.integration

#: The anthropic SDK no longer takes ``temperature`` as an argument; the API (and the graph) still do.
GREEDY = {"temperature": 0}
CAPITAL = "What is the capital of France? Answer in one word."
WEATHER_TOOL = {"name": "get_weather", "description": "The current weather of a city.",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}


class City(BaseModel):
    name: str
    country: str


@pytest.fixture(scope="module")
def claude(graph):
    hooked = anthropic.DefaultHttpxClient(timeout=120, event_hooks={"response": [graph.record]})
    yield anthropic.Anthropic(base_url=graph.base_url, api_key="unused-locally", http_client=hooked, max_retries=0)
    hooked.close()


# ------------------------------------------------------------ OpenAI Responses
def test_responses_create_answers_with_output_items_and_route_headers(openai_client):
    raw = openai_client.responses.with_raw_response.create(model="auto", input=CAPITAL, max_output_tokens=20,
                                                           temperature=0, metadata={"suite": "clients"})
    assert raw.headers["x-route-target"] == EXTRACTOR and raw.headers["x-route-reason"]
    response = raw.parse()
    assert response.status == "completed" and response.id.startswith("resp_")
    assert "paris" in response.output_text.lower()
    assert response.output[-1].type == "message" and response.usage.input_tokens > 0
    assert response.metadata == {"suite": "clients"}


def test_a_chained_conversation_keeps_its_context_and_is_stored(openai_client):
    first = openai_client.responses.create(model="auto", input=CAPITAL, max_output_tokens=20, temperature=0)
    follow_up = "And of Italy? Answer in one word."
    second = openai_client.responses.create(model="auto", input=follow_up, previous_response_id=first.id,
                                            max_output_tokens=20, temperature=0)
    alone = openai_client.responses.create(model="auto", input=follow_up, max_output_tokens=20, temperature=0, store=False)
    # The first turn (question and answer) is in the second's prompt, read back from the store.
    assert second.usage.input_tokens > alone.usage.input_tokens + first.usage.output_tokens
    assert "rome" in second.output_text.lower()
    assert second.previous_response_id == first.id
    assert openai_client.responses.retrieve(second.id).output_text == second.output_text
    items = openai_client.responses.input_items.list(second.id)
    assert [item.type for item in items.data] == ["message"]  # this turn's input only, not the history
    deleted = openai_client.responses.delete(second.id)
    assert deleted is None or getattr(deleted, "deleted", True)
    with pytest.raises(openai.NotFoundError):
        openai_client.responses.retrieve(second.id)


def test_responses_stream_sends_the_typed_events_in_order(openai_client):
    with openai_client.responses.stream(model="auto", input="Say hello.", max_output_tokens=200, temperature=0) as stream:
        events = list(stream)
        final = stream.get_final_response()
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"] and kinds[-1] == "response.completed"
    assert "response.output_text.delta" in kinds and "response.output_item.done" in kinds
    numbers = [event.sequence_number for event in events]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
    deltas = "".join(event.delta for event in events if event.type == "response.output_text.delta")
    assert deltas == final.output_text and deltas


def test_responses_parse_fills_a_pydantic_model(openai_client):
    parsed = openai_client.responses.parse(model="auto", input="Paris is a city in France. Give the city and its country.",
                                           text_format=City, max_output_tokens=60, temperature=0)
    city = parsed.output_parsed
    assert isinstance(city, City) and "paris" in city.name.lower() and "france" in city.country.lower()


def test_responses_function_call_and_its_output_in_a_following_request(openai_client):
    tool = {"type": "function", "name": "get_weather", "description": WEATHER_TOOL["description"],
            "parameters": WEATHER_TOOL["input_schema"]}
    first = openai_client.responses.create(model="auto", input="What is the weather in Paris?", tools=[tool],
                                           tool_choice={"type": "function", "name": "get_weather"},
                                           max_output_tokens=60, temperature=0)
    call = next(item for item in first.output if item.type == "function_call")
    assert call.name == "get_weather" and "paris" in call.arguments.lower()
    second = openai_client.responses.create(model="auto", previous_response_id=first.id, tools=[tool],
                                            input=[{"type": "function_call_output", "call_id": call.call_id,
                                                    "output": "Sunny, 21 C"}], max_output_tokens=60, temperature=0)
    assert second.output_text and second.status in ("completed", "incomplete")


# ------------------------------------------------------------------- Anthropic
def test_anthropic_messages_create(claude):
    message = claude.messages.create(model="auto", max_tokens=20, extra_body=GREEDY,
                                     messages=[{"role": "user", "content": CAPITAL}])
    assert message.type == "message" and message.role == "assistant"
    assert "paris" in message.content[0].text.lower()
    assert message.stop_reason in ("end_turn", "max_tokens") and message.usage.input_tokens > 0


def test_anthropic_messages_stream(claude):
    with claude.messages.stream(model="auto", max_tokens=40, extra_body=GREEDY,
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text and final.content[0].text == text and final.stop_reason in ("end_turn", "max_tokens")


def test_anthropic_tool_use_round_trip(claude):
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = claude.messages.create(model="auto", max_tokens=60, extra_body=GREEDY, tools=[WEATHER_TOOL],
                                   tool_choice={"type": "tool", "name": "get_weather"}, messages=[question])
    assert first.stop_reason == "tool_use"
    use = next(block for block in first.content if block.type == "tool_use")
    assert use.name == "get_weather" and "paris" in str(use.input.get("city", "")).lower()
    second = claude.messages.create(model="auto", max_tokens=60, extra_body=GREEDY, tools=[WEATHER_TOOL], messages=[
        question, {"role": "assistant", "content": first.content},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "Sunny, 21 C"}]}])
    answer = " ".join(block.text for block in second.content if block.type == "text").lower()
    assert "sunny" in answer or "21" in answer


def test_anthropic_count_tokens_grows_with_the_prompt(claude):
    short = claude.messages.count_tokens(model="auto", messages=[{"role": "user", "content": "Say hi."}])
    long = claude.messages.count_tokens(model="auto", messages=[{"role": "user", "content": "Say hi. " * 20}])
    assert 0 < short.input_tokens < long.input_tokens


def test_anthropic_errors_arrive_in_anthropics_shape(claude):
    with pytest.raises(anthropic.BadRequestError) as error:
        claude.messages.create(model="auto", max_tokens=8, messages=[{"role": "user", "content": [
            {"type": "image", "source": {"type": "url", "url": "http://169.254.169.254/latest/meta-data/"}}]}])
    assert error.value.body["type"] == "error" and error.value.body["error"]["type"] == "invalid_request_error"
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="no-such-model", max_tokens=8, messages=[{"role": "user", "content": "x"}])


def test_the_reasoners_thinking_is_a_reasoning_item_and_a_thinking_block(openai_client, claude):
    """Pinned to the reasoner (random weights on CPU: the shape is real, the text noise)."""
    prompt = "Prove step by step that the sum of two odd integers is even."
    response = openai_client.responses.create(model=REASONER, input=prompt, max_output_tokens=16,
                                              reasoning={"effort": "low"})
    assert response.output[0].type == "reasoning" and response.output[0].content[0].text
    message = claude.messages.create(model=REASONER, max_tokens=16, thinking={"type": "enabled", "budget_tokens": 8},
                                     messages=[{"role": "user", "content": prompt}])
    assert message.content[0].type == "thinking" and message.content[0].thinking


# -------------------------------------------------- LangChain, pydantic-ai, Agents
def test_langchain_structured_output_and_a_streamed_call(graph):
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(model="auto", base_url=graph.api_url, api_key="unused-locally", temperature=0, max_tokens=80,
                     timeout=120, max_retries=0)
    city = llm.with_structured_output(City).invoke("Paris is a city in France. Name the city and its country.")
    assert isinstance(city, City) and "paris" in city.name.lower()
    chunks = list(llm.stream("Say hello in three words."))
    assert len(chunks) > 1 and "".join(chunk.content for chunk in chunks).strip()


def test_pydantic_ai_returns_a_structured_result(graph):
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

    model = OpenAIChatModel("auto", provider=OpenAIProvider(base_url=graph.api_url, api_key="unused-locally"))
    result = Agent(model, output_type=City, retries=2).run_sync(
        "Paris is a city in France. Name the city and its country.")
    assert isinstance(result.output, City) and result.output.country


def test_openai_agents_sdk_runs_one_function_tool_turn(graph):
    from agents import Agent, ModelSettings, OpenAIResponsesModel, Runner, function_tool, set_tracing_disabled
    from openai import AsyncOpenAI

    set_tracing_disabled(True)
    calls = []

    @function_tool
    def get_weather(city: str) -> str:
        """The current weather of a city."""
        calls.append(city)
        return f"Sunny, 21 C in {city}"

    agent = Agent(name="weather", instructions="Use the tool to answer.", tools=[get_weather],
                  model=OpenAIResponsesModel(model="auto", openai_client=AsyncOpenAI(
                      base_url=graph.api_url, api_key="unused-locally", max_retries=0)),
                  model_settings=ModelSettings(tool_choice="required", max_tokens=80, temperature=0))
    result = asyncio.run(Runner.run(agent, "What is the weather in Paris?", max_turns=3))
    assert calls and "paris" in calls[0].lower()
    assert str(result.final_output).strip()


# ------------------------------------------------------- rerank and chat params
def test_rerank_puts_the_relevant_document_first(http):
    documents = ["Bananas are yellow.", "Paris is the capital of France.", {"text": "Cats sleep a lot."}]
    for path in ("/v1/rerank", "/v2/rerank"):
        reply = http.post(path, json={"query": "capital of France", "documents": documents, "top_n": 2}).json()
        assert reply["model"] == EMBEDDER and [r["index"] for r in reply["results"]][:1] == [1]
        assert len(reply["results"]) == 2 and reply["results"][0]["document"]["text"] == documents[1]
        scores = [r["relevance_score"] for r in reply["results"]]
        assert scores == sorted(scores, reverse=True)
    bare = http.post("/v1/rerank", json={"query": "x", "documents": ["a", "b"], "return_documents": False}).json()
    assert all("document" not in r for r in bare["results"]) and len(bare["results"]) == 2


def test_chat_parameters_clients_send_are_honoured(openai_client, http):
    story = [{"role": "user", "content": "Tell me a story."}]

    def tell(**fields):
        return openai_client.chat.completions.create(model="auto", messages=story, max_tokens=20, **fields)

    assert tell(seed=7, temperature=1.0).choices[0].message.content == tell(seed=7, temperature=1.0).choices[0].message.content
    assert len(tell(n=2, temperature=1.0, user="u1", reasoning_effort="low", parallel_tool_calls=False).choices) == 2
    chunks = list(tell(stream=True, stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    reply = http.post("/v1/chat/completions", json={"model": "auto", "messages": story, "max_completion_tokens": 5,
                                                    "metadata": {"team": "a"}}).json()
    assert reply["metadata"] == {"team": "a"} and reply["usage"]["completion_tokens"] <= 5
    refused = http.post("/v1/chat/completions", json={"model": "auto", "messages": story, "max_complete_tokens": 5})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "max_complete_tokens"
