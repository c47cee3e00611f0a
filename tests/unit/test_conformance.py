"""The reply checks behind OpenAI conformance: forced tool calls and JSON replies."""

from __future__ import annotations

import json

import pytest

from serve.kernel.conformance import check_chat_reply, forced_tool, structured_thinking_budget, wants_json
from serve.kernel.errors import BadModelOutput, Unprocessable

NAMED = {"tool_choice": {"type": "function", "function": {"name": "get_weather"}}, "max_tokens": 50}
SCHEMA = {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}}


def _reply(content=None, tool_calls=None, finish_reason="stop"):
    message = {"role": "assistant", "content": content}
    if tool_calls is not None:
        message["tool_calls"] = tool_calls
    return {"choices": [{"index": 0, "message": message, "finish_reason": finish_reason}]}


def _call(name, arguments):
    return {"id": "c1", "type": "function", "function": {"name": name, "arguments": arguments}}


def test_what_a_request_forces():
    assert forced_tool(NAMED) == "get_weather"
    assert forced_tool({"tool_choice": "required"}) == "required"
    assert forced_tool({"tool_choice": "auto"}) is None and forced_tool({}) is None
    assert wants_json(SCHEMA) and wants_json({"response_format": {"type": "json_object"}})
    assert not wants_json({"response_format": {"type": "text"}}) and not wants_json({})


def test_a_complete_forced_call_passes_unchanged():
    reply = _reply(content="", tool_calls=[_call("get_weather", '{"city": "Paris"}')])
    assert check_chat_reply(NAMED, json.loads(json.dumps(reply))) == reply


def test_plain_content_instead_of_a_forced_call_is_a_502_never_a_stop():
    with pytest.raises(BadModelOutput, match="get_weather"):
        check_chat_reply(NAMED, _reply(content="The weather in Paris is sunny."))


def test_a_call_to_another_tool_or_with_non_object_arguments_is_refused():
    with pytest.raises(BadModelOutput):
        check_chat_reply(NAMED, _reply(tool_calls=[_call("other", "{}")]))
    with pytest.raises(BadModelOutput):
        check_chat_reply(NAMED, _reply(tool_calls=[_call("get_weather", "[1, 2]")]))
    with pytest.raises(BadModelOutput):
        check_chat_reply({"tool_choice": "required"}, _reply(content="no call"))


def test_a_forced_call_cut_by_max_tokens_is_a_422_naming_max_tokens():
    reply = _reply(tool_calls=[_call("get_weather", '{"city": "Par')], finish_reason="length")
    with pytest.raises(Unprocessable) as caught:
        check_chat_reply(NAMED, reply)
    assert caught.value.param == "max_tokens" and "max_tokens=50" in caught.value.message


def test_raw_control_characters_are_escaped_without_changing_the_value():
    raw = '{"title": "a\tb\nc"}'
    with pytest.raises(ValueError):
        json.loads(raw)
    reply = check_chat_reply(SCHEMA, _reply(content=raw))
    fixed = reply["choices"][0]["message"]["content"]
    assert json.loads(fixed) == {"title": "a\tb\nc"}
    call_reply = check_chat_reply(NAMED, _reply(tool_calls=[_call("get_weather", '{"city": "Pa\x01ris"}')]))
    assert json.loads(call_reply["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"]) == {"city": "Pa\x01ris"}


def test_json_replies_must_be_json_from_the_first_character():
    with pytest.raises(BadModelOutput):
        check_chat_reply(SCHEMA, _reply(content='<tool_call>{"title": "x"}'))
    with pytest.raises(BadModelOutput):
        check_chat_reply(SCHEMA, _reply(content=None))


def test_json_cut_by_max_tokens_keeps_openai_behaviour_but_must_start_as_json():
    reply = _reply(content='{"title": "unfinis', finish_reason="length")
    assert check_chat_reply(SCHEMA, reply)["choices"][0]["finish_reason"] == "length"
    with pytest.raises(BadModelOutput):
        check_chat_reply(SCHEMA, _reply(content='<tool_call>{"title": "unfi', finish_reason="length"))


def test_unstructured_requests_are_not_checked():
    reply = _reply(content="anything <tool_call> at all")
    assert check_chat_reply({"tool_choice": "auto"}, reply) is reply


def test_thinking_leaves_half_the_budget_to_the_structure():
    assert structured_thinking_budget(256, 100) == 50
    assert structured_thinking_budget(16, 100) == 16
    assert structured_thinking_budget(256, 1) == 1
    assert structured_thinking_budget(None, 100) is None


def test_logprobs_lose_the_end_of_turn_token_only():
    def with_logprobs(tokens, content, finish_reason="stop"):
        reply = _reply(content=content, finish_reason=finish_reason)
        reply["choices"][0]["logprobs"] = {"content": [{"token": t, "logprob": -0.1} for t in tokens]}
        return reply

    fixed = check_chat_reply({"logprobs": True}, with_logprobs(["Par", "is", "<|im_end|>"], "Paris"))
    assert [e["token"] for e in fixed["choices"][0]["logprobs"]["content"]] == ["Par", "is"]
    kept = check_chat_reply({"logprobs": True}, with_logprobs(["Par", "is"], "Paris"))
    assert len(kept["choices"][0]["logprobs"]["content"]) == 2
    cut = check_chat_reply({"logprobs": True}, with_logprobs(["Par", "is"], "Par", finish_reason="length"))
    assert len(cut["choices"][0]["logprobs"]["content"]) == 2
