"""The Responses and Messages APIs over chat: requests in, objects and events out.

Objects and events are checked against the official SDKs' own types (``openai`` and
``anthropic``), which is what a client parses them with.
"""

from __future__ import annotations

import asyncio
import json

from datetime import timedelta

import anthropic.types as anthropic_types
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter
from ray.serve.llm.openai_api_models import ChatCompletionRequest

from serve.kernel.chat_params import take_chat_extras, thinking_budget
from serve.kernel.chat_stream import ChatTurn
from serve.kernel.errors import BadRequest
from serve.kernel.messages_protocol import MessagesRequest
from serve.kernel.responses_protocol import ResponsesRequest
from serve.services.messages_convert import chat_body as messages_chat_body
from serve.services.messages_convert import message_object
from serve.services.messages_stream import MessageEvents
from serve.services.responses_convert import OutputIds, chat_body, normalize_items, output_items, response_object, to_messages
from serve.services.responses_stream import ResponseEvents

RESPONSE_EVENT = TypeAdapter(ResponseStreamEvent)
MESSAGE_EVENT = TypeAdapter(anthropic_types.RawMessageStreamEvent)
BOUNDED = settings(deadline=timedelta(seconds=1), max_examples=60, suppress_health_check=[HealthCheck.too_slow])
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def _chunk(delta=None, finish=None, usage=None, model="m"):
    chunk = {"id": "c", "object": "chat.completion.chunk", "model": model, "choices": []}
    if delta is not None or finish is not None:
        chunk["choices"] = [{"index": 0, "delta": delta or {}, "finish_reason": finish}]
    if usage is not None:
        chunk["usage"] = usage
    return f"data: {json.dumps(chunk)}\n\n"


async def _stream(*items, fail=False):
    for item in items:
        yield item
    if fail:
        raise RuntimeError("replica died: /secret/path")
    yield "data: [DONE]\n\n"


TEXT_STREAM = [_chunk({"role": "assistant", "reasoning": "think"}), _chunk({"content": "Hel"}) + _chunk({"content": "lo"}),
               _chunk(finish="stop"), _chunk(usage={"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7})]
TOOL_STREAM = [_chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                       "function": {"name": "weather", "arguments": ""}}]}),
               _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
               _chunk({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
               _chunk(finish="tool_calls"), _chunk(usage={"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14})]


def _events(text: str) -> list[tuple[str, dict]]:
    out = []
    for block in text.strip().split("\n\n"):
        kind, data = block.split("\n", 1)
        out.append((kind.removeprefix("event: "), json.loads(data.removeprefix("data: "))))
    return out


async def _collect(generator) -> str:
    return "".join([event async for event in generator])


# ------------------------------------------------------------------ responses
def test_responses_input_items_become_chat_messages_in_order():
    items = normalize_items([
        {"role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "call_id": "call_1", "name": "weather", "arguments": "{\"city\": \"Paris\"}"},
        {"type": "function_call_output", "call_id": "call_1", "output": "sunny"},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Be brief."}]},
    ])
    assert [item["type"] for item in items] == ["message", "function_call", "function_call_output", "reasoning", "message"]
    assert all(item["id"] for item in items)
    messages = to_messages("You are helpful.", items)
    assert messages == [
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\": \"Paris\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        {"role": "system", "content": "Be brief."},
    ]


@pytest.mark.parametrize("item, param, code", [
    ({"type": "computer_call"}, "input[0].type", "unsupported_item"),
    ({"role": "user", "content": [{"type": "input_image", "image_url": "http://169.254.169.254/"}]},
     "input[0].content[0].type", "unsupported_content"),
    ({"role": "robot", "content": "x"}, "input[0].role", "invalid_item"),
    ({"type": "function_call_output", "output": "x"}, "input[0].call_id", "invalid_item"),
    ("just a string item", "input[0]", "invalid_item"),
])
def test_an_unreadable_input_item_is_a_400_naming_it(item, param, code):
    with pytest.raises(BadRequest) as error:
        normalize_items([item])
    assert error.value.param == param and error.value.code == code


def test_a_responses_request_maps_onto_chat_and_back_to_a_response_the_sdk_parses():
    request = ResponsesRequest(model="auto", input="Weather?", instructions="Be brief.", max_output_tokens=50,
                               text={"format": {"type": "json_schema", "name": "w", "schema": WEATHER, "strict": True}},
                               tools=[{"type": "function", "name": "weather", "parameters": WEATHER}],
                               tool_choice={"type": "function", "name": "weather"}, reasoning={"effort": "low"},
                               metadata={"ticket": "42"})
    body = ChatCompletionRequest.model_validate(chat_body(request, to_messages(request.instructions,
                                                                               normalize_items(request.input))))
    assert body.max_tokens == 50 and body.reasoning_effort == "low"
    assert body.response_format.json_schema.json_schema == WEATHER
    assert body.tool_choice.function.name == "weather" and body.tools[0].function.parameters == WEATHER
    turn = ChatTurn.from_reply({"model": "smol", "choices": [{"finish_reason": "tool_calls", "message": {
        "content": None, "reasoning": "hmm", "tool_calls": [{"id": "call_9", "function": {
            "name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}})
    ids = OutputIds()
    parsed = Response.model_validate(response_object(request, ids, 1, output=output_items(turn, ids), turn=turn))
    assert [item.type for item in parsed.output] == ["reasoning", "function_call"]
    assert parsed.output[1].call_id == "call_9" and parsed.output[1].arguments == "{\"city\": \"Oslo\"}"
    assert parsed.usage.total_tokens == 7 and parsed.metadata == {"ticket": "42"} and parsed.status == "completed"


@pytest.mark.parametrize("field", [{"background": True}, {"prompt": {"id": "p"}}, {"tools": [{"type": "web_search"}]},
                                   {"conversation": "c"}, {"top_logprobs": 3}])
def test_a_responses_field_the_graph_does_not_honour_is_refused(field):
    with pytest.raises((BadRequest, ValueError)):
        request = ResponsesRequest.model_validate({"model": "auto", "input": "x", **field})
        chat_body(request, [])


def test_a_streamed_response_is_the_typed_event_sequence_with_sequence_numbers():
    request = ResponsesRequest(model="auto", input="hi", stream=True)
    ids, stored = OutputIds(), []

    async def finished(response, turn):
        stored.append(response)

    def skeleton(**fields):
        return response_object(request, ids, 1, **fields)

    events = _events(asyncio.run(_collect(ResponseEvents(skeleton, ids, finished).events(_stream(*TEXT_STREAM)))))
    for _, data in events:
        RESPONSE_EVENT.validate_python(data)
    kinds = [kind for kind, _ in events]
    assert kinds == ["response.created", "response.in_progress",
                     "response.output_item.added", "response.reasoning_text.delta", "response.reasoning_text.done",
                     "response.output_item.done",
                     "response.output_item.added", "response.content_part.added", "response.output_text.delta",
                     "response.output_text.delta", "response.output_text.done", "response.content_part.done",
                     "response.output_item.done", "response.completed"]
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    final = events[-1][1]["response"]
    assert final["output"][1]["content"][0]["text"] == "Hello" and final["usage"]["output_tokens"] == 2
    assert stored == [final]  # stored before the last event, so a client can chain at once


def test_a_streamed_function_call_and_a_broken_stream():
    request = ResponsesRequest(model="auto", input="hi", stream=True,
                               tools=[{"type": "function", "name": "weather", "parameters": WEATHER}])
    ids = OutputIds()

    async def finished(response, turn):
        return None

    def skeleton(**fields):
        return response_object(request, ids, 1, **fields)

    events = _events(asyncio.run(_collect(ResponseEvents(skeleton, ids, finished).events(_stream(*TOOL_STREAM)))))
    deltas = "".join(data["delta"] for kind, data in events if kind == "response.function_call_arguments.delta")
    assert json.loads(deltas) == {"city": "Paris"}
    assert events[-1][1]["response"]["output"][0]["name"] == "weather"

    async def store_down(response, turn):
        raise RuntimeError("job store at /secret/path is down")

    unstored = _events(asyncio.run(_collect(ResponseEvents(skeleton, OutputIds(), store_down).events(_stream(*TEXT_STREAM)))))
    assert unstored[-1][0] == "response.failed" and unstored[-1][1]["response"]["error"]["code"] == "store_unavailable"
    assert "secret" not in json.dumps(unstored)

    broken = _events(asyncio.run(_collect(ResponseEvents(skeleton, OutputIds(), finished).events(
        _stream(*TEXT_STREAM[:2], fail=True)))))
    assert broken[-1][0] == "response.failed"
    RESPONSE_EVENT.validate_python(broken[-1][1])
    assert "secret" not in json.dumps(broken)


# ------------------------------------------------------------------- messages
def test_anthropic_blocks_become_chat_messages_and_a_reply_the_sdk_parses():
    request = MessagesRequest(model="auto", max_tokens=64, system=[{"type": "text", "text": "Be brief."}],
                              stop_sequences=["END"], thinking={"type": "enabled", "budget_tokens": 32},
                              tools=[{"name": "weather", "input_schema": WEATHER}],
                              tool_choice={"type": "tool", "name": "weather", "disable_parallel_tool_use": True},
                              messages=[
                                  {"role": "user", "content": "Weather in Paris?"},
                                  {"role": "assistant", "content": [
                                      {"type": "thinking", "thinking": "call it", "signature": "x"},
                                      {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Paris"}}]},
                                  {"role": "user", "content": [
                                      {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                                      {"type": "text", "text": "And so?"}]}])
    body = ChatCompletionRequest.model_validate(messages_chat_body(request))
    roles = [m["role"] if isinstance(m, dict) else m.role for m in body.messages]
    assert roles == ["system", "user", "assistant", "tool", "user"]
    assert body.stop == ["END"] and body.thinking_token_budget == 32 and body.parallel_tool_calls is False
    assert body.tool_choice.function.name == "weather"
    turn = ChatTurn.from_reply({"model": "smol", "choices": [{"finish_reason": "tool_calls", "message": {
        "content": "Checking.", "reasoning": "hmm", "tool_calls": [{"id": "call_9", "function": {
            "name": "weather", "arguments": "{\"city\": \"Oslo\"}"}}]}}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    message = anthropic_types.Message.model_validate(message_object("msg_1", "auto", turn))
    assert [block.type for block in message.content] == ["thinking", "text", "tool_use"]
    assert message.content[2].input == {"city": "Oslo"} and message.stop_reason == "tool_use"


@pytest.mark.parametrize("content, param", [
    ([{"type": "image", "source": {"type": "url", "url": "http://169.254.169.254/"}}], "messages[0].content[0].type"),
    ([{"type": "document", "source": {}}], "messages[0].content[0].type"),
    ([{"type": "tool_result", "content": "x"}], "messages[0].content[0]"),
])
def test_an_unreadable_block_is_a_400_naming_it(content, param):
    with pytest.raises(BadRequest) as error:
        messages_chat_body(MessagesRequest(model="auto", max_tokens=8, messages=[{"role": "user", "content": content}]))
    assert error.value.param == param


def test_a_streamed_message_is_anthropics_event_sequence():
    events = _events(asyncio.run(_collect(MessageEvents("msg_1", "smol").events(_stream(*TEXT_STREAM)))))
    for _, data in events:
        MESSAGE_EVENT.validate_python(data)
    assert [kind for kind, _ in events] == [
        "message_start", "content_block_start", "content_block_delta", "content_block_stop",
        "content_block_start", "content_block_delta", "content_block_delta", "content_block_stop",
        "message_delta", "message_stop"]
    assert events[-2][1]["delta"]["stop_reason"] == "end_turn" and events[-2][1]["usage"]["output_tokens"] == 2
    tools = _events(asyncio.run(_collect(MessageEvents("msg_2", "smol").events(_stream(*TOOL_STREAM)))))
    assert tools[1][1]["content_block"]["name"] == "weather"
    assert json.loads("".join(d["delta"]["partial_json"] for k, d in tools if k == "content_block_delta")) == {"city": "Paris"}
    assert tools[-2][1]["delta"]["stop_reason"] == "tool_use"
    broken = _events(asyncio.run(_collect(MessageEvents("msg_3", "smol").events(_stream(*TEXT_STREAM[:2], fail=True)))))
    assert broken[-1][0] == "error" and broken[-1][1]["error"]["type"] == "api_error"
    assert "secret" not in json.dumps(broken)


# ---------------------------------------------------------------- chat params
def test_chat_fields_outside_the_model_are_honoured_or_named_in_a_400():
    body = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], metadata={"team": "a"})
    sent, metadata = take_chat_extras(body)
    assert metadata == {"team": "a"} and "metadata" not in (sent.model_extra or {})
    assert "metadata" in body.model_extra  # the client's request is left alone
    for bad, param in [({"max_complete_tokens": 5}, "max_complete_tokens"),
                       ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
                       ({"logit_bias": {"5": 500}}, "logit_bias")]:
        with pytest.raises(BadRequest) as error:
            take_chat_extras(ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hi"}], **bad))
        assert error.value.param == param
    with pytest.raises(BadRequest) as error:
        take_chat_extras(ChatCompletionRequest(model="m", messages=[{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://169.254.169.254/"}}]}]))
    assert error.value.code == "unsupported_content"


def test_reasoning_effort_is_a_share_of_the_thinking_budget():
    assert thinking_budget(None, 1000) is None and thinking_budget("high", None) is None
    assert [thinking_budget(e, 1000) for e in ("none", "minimal", "low", "medium", "high")] == [0, 125, 250, 500, 1000]


# ------------------------------------------------------------ stored responses
def test_stored_responses_belong_to_their_key_and_survive_a_reopen(tmp_path):
    from deployments.batches.responses import ResponseStore

    store = ResponseStore(tmp_path)
    record = {"id": "resp_1", "owner": "alice", "created_at": 1, "depth": 0, "response": {"id": "resp_1"},
              "input_items": [{"id": "msg_1"}], "conversation": [{"type": "message"}]}
    store.put(record)
    assert store.get("resp_1", "bob") is None and not store.delete("resp_1", "bob")
    store.close()
    reopened = ResponseStore(tmp_path)
    assert reopened.get("resp_1", "alice")["conversation"] == [{"type": "message"}]
    assert reopened.delete("resp_1", "alice") and reopened.get("resp_1", "alice") is None


def test_the_owner_is_a_digest_of_the_key_never_the_key():
    from serve.middleware import key_owner

    assert key_owner(b"") == "" and key_owner(b"k1") != key_owner(b"k2")
    assert "k1" not in key_owner(b"k1") and len(key_owner(b"k1")) == 32


# --------------------------------------------- any JSON: a 400 or messages, quickly
JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                           lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                               st.sampled_from(["type", "role", "content", "text", "call_id", "name", "arguments",
                                                "output", "id", "tool_use_id", "input"]), inner, max_size=5),
                           max_leaves=30)
ITEM_TYPES = st.sampled_from(["message", "function_call", "function_call_output", "reasoning", "input_text",
                              "text", "tool_use", "tool_result", "thinking", "image"])


@BOUNDED
@given(st.lists(st.fixed_dictionaries({"type": ITEM_TYPES}, optional={
    "role": st.sampled_from(["user", "assistant", "system", "x"]), "content": JSON_VALUES, "call_id": JSON_VALUES,
    "name": JSON_VALUES, "arguments": JSON_VALUES, "output": JSON_VALUES}) | JSON_VALUES, max_size=6))
def test_any_responses_input_is_messages_or_a_400(raw):
    try:
        to_messages(None, normalize_items(raw))
    except BadRequest:
        pass


@BOUNDED
@given(st.lists(st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant"]), "content": st.text(max_size=10) | st.lists(
    st.fixed_dictionaries({"type": ITEM_TYPES}, optional={"text": JSON_VALUES, "id": JSON_VALUES, "name": JSON_VALUES,
                                                          "input": JSON_VALUES, "tool_use_id": JSON_VALUES,
                                                          "content": JSON_VALUES}), max_size=4)}), min_size=1, max_size=4))
def test_any_anthropic_content_is_a_chat_request_or_a_400(messages):
    try:
        request = MessagesRequest(model="auto", max_tokens=4, messages=messages)
    except ValueError:
        return
    try:
        ChatCompletionRequest.model_validate(messages_chat_body(request))
    except BadRequest:
        pass
