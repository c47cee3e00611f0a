"""Bad input gets a clear 4xx in the OpenAI envelope: never a 5xx, never a hang.

A matrix of the mistakes clients make (and the attacks they try), each sent to the real
graph over HTTP. Afterwards the graph must still answer normally.
"""

from __future__ import annotations

import pytest

from tests.support.models import EMBEDDER, EXTRACTOR

pytestmark = pytest.mark.integration

CHAT = "/v1/chat/completions"
COMP = "/v1/completions"
EMB = "/v1/embeddings"
RESP = "/v1/responses"
RERANK = "/v1/rerank"
MSG = "/v1/messages"
U = [{"role": "user", "content": "hi"}]
JSON = {"content-type": "application/json"}
TOOL = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]


def _nested_schema(depth: int) -> dict:
    node = {"type": "string"}
    for _ in range(depth):
        node = {"type": "object", "properties": {"a": node}}
    return node


def chat(**fields):
    return {"json": {"model": "auto", "messages": U, **fields}}


# (id, method, path, request kwargs, expected status, expected code or None, expected param or None)
MATRIX = [
    ("malformed json", "POST", CHAT, {"content": b'{"model": "auto", "messages": [', "headers": JSON}, 400, None, None),
    ("empty body", "POST", CHAT, {"content": b"", "headers": JSON}, 400, None, None),
    ("body is an array", "POST", CHAT, {"json": [1, 2]}, 400, None, None),
    ("body is a string", "POST", CHAT, {"json": "hello"}, 400, None, None),
    ("invalid utf-8", "POST", CHAT, {"content": b'{"model":"auto","messages":[{"role":"user","content":"\xff\xfe"}]}', "headers": JSON}, 400, None, None),
    # A form or text POST is what a web page can send without asking: refused while there are no keys.
    ("text/plain body", "POST", CHAT, {"content": b"hello", "headers": {"content-type": "text/plain"}}, 415, "json_required", None),
    ("missing messages", "POST", CHAT, {"json": {"model": "auto"}}, 400, None, None),
    ("messages not a list", "POST", CHAT, {"json": {"model": "auto", "messages": "hello"}}, 400, None, "messages"),
    ("empty messages", "POST", CHAT, {"json": {"model": "auto", "messages": []}}, 400, None, None),
    ("message without role", "POST", CHAT, {"json": {"model": "auto", "messages": [{"content": "x"}]}}, 400, None, None),
    ("unknown message role", "POST", CHAT, {"json": {"model": "auto", "messages": [{"role": "hacker", "content": "x"}]}}, 400, "invalid_role", "messages[0].role"),
    ("unknown message role in a route dry run", "POST", "/v1/route", {"json": {"model": "auto", "messages": [{"role": "hacker", "content": "x"}]}}, 400, "invalid_role", "messages[0].role"),
    ("200 KB request header", "GET", "/v1/models", {"headers": {"x-padding": "a" * 200_000}}, 431, "request_headers_too_large", None),
    ("content is a number", "POST", CHAT, {"json": {"model": "auto", "messages": [{"role": "user", "content": 5}]}}, 400, None, None),
    ("unknown model", "POST", CHAT, {"json": {"model": "gpt-9", "messages": U}}, 404, "model_not_found", "model"),
    ("embedder used for chat", "POST", CHAT, {"json": {"model": EMBEDDER, "messages": U}}, 400, "model_not_supported", "model"),
    ("temperature as string", "POST", CHAT, chat(temperature="hot"), 400, None, "temperature"),
    ("negative temperature", "POST", CHAT, chat(temperature=-1), 400, None, None),
    ("absurd temperature", "POST", CHAT, chat(temperature=1e9), 400, None, None),
    ("top_p above 1", "POST", CHAT, chat(top_p=2), 400, None, None),
    ("max_tokens zero", "POST", CHAT, chat(max_tokens=0), 400, None, None),
    ("max_tokens negative", "POST", CHAT, chat(max_tokens=-5), 400, None, None),
    ("max_tokens over the limit", "POST", CHAT, chat(max_tokens=100000), 400, "max_tokens_exceeded", "max_tokens"),
    ("max_completion_tokens over the limit", "POST", CHAT, chat(max_completion_tokens=100000), 400, "max_tokens_exceeded", "max_completion_tokens"),
    ("n over the limit", "POST", CHAT, chat(n=100), 400, "limit_exceeded", "n"),
    ("n zero", "POST", CHAT, chat(n=0), 400, None, None),
    ("too many stop sequences", "POST", CHAT, chat(stop=["a"] * 10), 400, None, None),
    ("top_logprobs over the limit", "POST", CHAT, chat(logprobs=True, top_logprobs=50), 400, "limit_exceeded", "top_logprobs"),
    ("seed beyond int64", "POST", CHAT, chat(seed=2**70), 400, None, None),
    ("frequency_penalty out of range", "POST", CHAT, chat(frequency_penalty=100), 400, None, None),
    ("presence_penalty out of range", "POST", CHAT, chat(presence_penalty=-100), 400, None, None),
    ("logit_bias with a non-integer key", "POST", CHAT, chat(logit_bias={"abc": 5}), 400, None, None),
    ("logit_bias out of vocabulary", "POST", CHAT, chat(logit_bias={"99999999": 5}, max_tokens=2), 400, None, None),
    ("min_tokens above max_tokens", "POST", CHAT, chat(min_tokens=100, max_tokens=5), 400, None, None),
    ("stream_options without stream", "POST", CHAT, chat(stream_options={"include_usage": True}), 400, None, None),
    ("tools not a list", "POST", CHAT, chat(tools="x"), 400, None, "tools"),
    ("tool_choice names an unknown tool", "POST", CHAT, {"json": {"model": EXTRACTOR, "messages": U, "tools": TOOL, "tool_choice": {"type": "function", "function": {"name": "g"}}}}, 400, None, None),
    ("unknown response_format type", "POST", CHAT, chat(response_format={"type": "yaml"}), 400, None, None),
    ("json schema the decoder cannot compile", "POST", CHAT, chat(max_tokens=5, response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nope"}}}), 400, None, None),
    ("json schema that is not an object", "POST", CHAT, chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": "bad"}}), 400, None, None),
    ("oversized json schema", "POST", CHAT, chat(response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "d" * 100} for i in range(700)}}}}), 400, "limit_exceeded", None),
    ("grammar-constrained decoding", "POST", CHAT, chat(structured_outputs={"grammar": 'root ::= "a"'}), 400, "unsupported_parameter", None),
    ("huge regex", "POST", CHAT, chat(structured_outputs={"regex": "a" * 5000}), 400, "limit_exceeded", None),
    ("5 stop sequences", "POST", CHAT, chat(stop=[f"s{i}" for i in range(5)]), 400, None, "stop"),
    ("a stop sequence of 10,000 characters", "POST", CHAT, chat(stop=["x" * 10_000]), 400, "limit_exceeded", "stop"),
    ("301 logit_bias entries", "POST", CHAT, chat(logit_bias={str(i): 1 for i in range(301)}), 400, "limit_exceeded", "logit_bias"),
    ("129 tools", "POST", CHAT, chat(tools=TOOL * 129), 400, "limit_exceeded", "tools"),
    ("a tool's parameters nested 100 deep", "POST", CHAT, chat(tools=[{"type": "function", "function": {"name": "f", "parameters": _nested_schema(100)}}]), 400, "limit_exceeded", "tools[0].function.parameters"),
    ("a tool's parameters over the schema size", "POST", CHAT, chat(tools=[{"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {f"p{i}": {"type": "string", "description": "d" * 100} for i in range(700)}}}}]), 400, "limit_exceeded", "tools[0].function.parameters"),
    ("prompt beyond the context length", "POST", CHAT, {"json": {"model": EXTRACTOR, "messages": [{"role": "user", "content": "word " * 5000}], "max_tokens": 4}}, 400, None, None),
    ("thousands of messages", "POST", CHAT, {"json": {"model": "auto", "messages": U * 3000, "max_tokens": 2}}, 400, None, None),
    ("body over the size limit", "POST", CHAT, {"content": b"x" * (2 * 1024 * 1024 + 1), "headers": JSON}, 413, "request_too_large", None),
    ("completions without prompt", "POST", COMP, {"json": {"model": "auto"}}, 400, None, None),
    ("completions with empty prompt", "POST", COMP, {"json": {"model": "auto", "prompt": "", "max_tokens": 2}}, 400, None, None),
    ("completions with out-of-vocab token ids", "POST", COMP, {"json": {"model": EXTRACTOR, "prompt": [999999999], "max_tokens": 2}}, 400, None, None),
    ("completions logprobs over the limit", "POST", COMP, {"json": {"model": "auto", "prompt": "x", "logprobs": 50}}, 400, "limit_exceeded", "logprobs"),
    ("embeddings with empty list", "POST", EMB, {"json": {"model": EMBEDDER, "input": []}}, 400, None, "input"),
    ("embeddings with token arrays", "POST", EMB, {"json": {"model": EMBEDDER, "input": [[1, 2, 3]]}}, 400, None, "input"),
    ("embeddings with too many inputs", "POST", EMB, {"json": {"model": EMBEDDER, "input": ["x"] * 257}}, 400, "too_many_inputs", "input"),
    ("embeddings with an empty string", "POST", EMB, {"json": {"model": EMBEDDER, "input": [""]}}, 400, None, "input"),
    ("embeddings with an over-long text", "POST", EMB, {"json": {"model": EMBEDDER, "input": ["x" * 40000]}}, 400, "input_too_long", "input"),
    ("embeddings with a number", "POST", EMB, {"json": {"model": EMBEDDER, "input": 5}}, 400, None, None),
    ("embeddings with wrong dimensions", "POST", EMB, {"json": {"model": EMBEDDER, "input": "x", "dimensions": 12}}, 400, None, "dimensions"),
    ("embeddings with an unknown model", "POST", EMB, {"json": {"model": "nope", "input": "x"}}, 404, "model_not_found", "model"),
    ("embeddings with a chat model", "POST", EMB, {"json": {"model": EXTRACTOR, "input": "x"}}, 400, "model_not_supported", "model"),
    ("route with bad messages", "POST", "/v1/route", {"json": {"messages": "x"}}, 400, None, "messages"),
    # Chat parameters outside vLLM's model: honoured or named in a 400, never dropped.
    ("unknown chat parameter", "POST", CHAT, chat(max_complete_tokens=5), 400, "unsupported_parameter", "max_complete_tokens"),
    ("chat metadata of 17 pairs", "POST", CHAT, chat(metadata={f"k{i}": "v" for i in range(17)}), 400, "invalid_metadata", "metadata"),
    ("chat metadata with a number", "POST", CHAT, chat(metadata={"k": 5}), 400, "invalid_metadata", "metadata"),
    ("logit_bias value beyond 100", "POST", CHAT, chat(logit_bias={"5": 500}), 400, "invalid_logit_bias", "logit_bias"),
    ("chat image content (a URL to fetch)", "POST", CHAT, {"json": {"model": "auto", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://169.254.169.254/"}}]}]}}, 400, "unsupported_content", "messages[0].content[0].type"),
    # The Responses API.
    ("responses input a number", "POST", RESP, {"json": {"model": "auto", "input": 5}}, 400, None, "input"),
    ("responses without input", "POST", RESP, {"json": {"model": "auto"}}, 400, None, "input"),
    ("responses unknown field", "POST", RESP, {"json": {"model": "auto", "input": "x", "frobnicate": 1}}, 400, None, "frobnicate"),
    ("responses unknown item type", "POST", RESP, {"json": {"model": "auto", "input": [{"type": "computer_call"}]}}, 400, "unsupported_item", "input[0].type"),
    ("responses image input (a URL to fetch)", "POST", RESP, {"json": {"model": "auto", "input": [{"role": "user", "content": [{"type": "input_image", "image_url": "http://169.254.169.254/"}]}]}}, 400, "unsupported_content", "input[0].content[0].type"),
    ("responses item that is a string", "POST", RESP, {"json": {"model": "auto", "input": ["x"]}}, 400, "invalid_item", "input[0]"),
    ("responses function output without call_id", "POST", RESP, {"json": {"model": "auto", "input": [{"type": "function_call_output", "output": "x"}]}}, 400, "invalid_item", "input[0].call_id"),
    ("responses 2049 input items", "POST", RESP, {"json": {"model": "auto", "input": [{"role": "user", "content": "x"}] * 2049}}, 400, "limit_exceeded", "input"),
    ("responses web_search tool", "POST", RESP, {"json": {"model": "auto", "input": "x", "tools": [{"type": "web_search"}]}}, 400, "unsupported_tool", "tools[0].type"),
    ("responses 129 tools", "POST", RESP, {"json": {"model": "auto", "input": "x", "tools": [{"type": "function", "name": "f"}] * 129}}, 400, None, "tools"),
    ("responses background", "POST", RESP, {"json": {"model": "auto", "input": "x", "background": True}}, 400, None, "background"),
    ("responses json_schema without its schema", "POST", RESP, {"json": {"model": "auto", "input": "x", "text": {"format": {"type": "json_schema", "name": "x"}}}}, 400, None, "text.format.schema"),
    ("responses max_output_tokens over the limit", "POST", RESP, {"json": {"model": "auto", "input": "x", "max_output_tokens": 100000}}, 400, "max_tokens_exceeded", "max_tokens"),
    ("responses unknown previous_response_id", "POST", RESP, {"json": {"model": "auto", "input": "x", "previous_response_id": "resp_nope"}}, 404, "response_not_found", "previous_response_id"),
    ("responses previous_response_id with a path", "POST", RESP, {"json": {"model": "auto", "input": "x", "previous_response_id": "../../etc"}}, 400, None, "previous_response_id"),
    ("responses unknown model", "POST", RESP, {"json": {"model": "gpt-9", "input": "x"}}, 404, "model_not_found", "model"),
    ("retrieve an unknown response", "GET", RESP + "/resp_nope", {}, 404, "response_not_found", None),
    ("delete an unknown response", "DELETE", RESP + "/resp_nope", {}, 404, "response_not_found", None),
    ("input items of an unknown response", "GET", RESP + "/resp_nope/input_items", {}, 404, "response_not_found", None),
    # Rerank.
    ("rerank without documents", "POST", RERANK, {"json": {"query": "x", "documents": []}}, 400, None, "documents"),
    ("rerank without a query", "POST", RERANK, {"json": {"documents": ["a"]}}, 400, None, "query"),
    ("rerank document object without text", "POST", RERANK, {"json": {"query": "x", "documents": [{"title": "a"}]}}, 400, "invalid_document", "documents[0]"),
    ("rerank with too many documents", "POST", RERANK, {"json": {"query": "x", "documents": ["a"] * 300}}, 400, "too_many_inputs", "documents"),
    ("rerank with a chat model", "POST", RERANK, {"json": {"model": EXTRACTOR, "query": "x", "documents": ["a"]}}, 400, "model_not_supported", "model"),
    ("rerank top_n zero", "POST", RERANK, {"json": {"query": "x", "documents": ["a"], "top_n": 0}}, 400, None, "top_n"),
    ("unknown path", "GET", "/v1/nothing-here", {}, 404, None, None),
    ("path traversal", "GET", "/v1/models/..%2F..%2Fetc%2Fpasswd", {}, 404, None, None),
    ("wrong method", "GET", CHAT, {}, 405, None, None),
]


def assert_envelope(response, status: int, code=None, param=None):
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"] and "Traceback" not in error["message"]
    assert "Internal exception" not in error["message"] and "/work/" not in error["message"]
    if code:
        assert error["code"] == code
    if param:
        assert error["param"] == param
    return error


@pytest.mark.parametrize("case", MATRIX, ids=[c[0] for c in MATRIX])
def test_bad_input_matrix(http, case):
    _, method, path, kwargs, status, code, param = case
    response = http.request(method, path, **kwargs)
    assert_envelope(response, status, code, param)


def messages(**fields):
    return {"json": {"model": "auto", "max_tokens": 8, "messages": U, **fields}}


# (id, request kwargs for POST /v1/messages, expected status, expected Anthropic error type)
ANTHROPIC_MATRIX = [
    ("missing max_tokens", {"json": {"model": "auto", "messages": U}}, 400, "invalid_request_error"),
    ("empty messages", messages(messages=[]), 400, "invalid_request_error"),
    ("a system role in messages", messages(messages=[{"role": "system", "content": "x"}]), 400, "invalid_request_error"),
    ("unknown field", messages(frobnicate=1), 400, "invalid_request_error"),
    ("image block (a URL to fetch)", messages(messages=[{"role": "user", "content": [{"type": "image", "source": {"type": "url", "url": "http://169.254.169.254/"}}]}]), 400, "invalid_request_error"),
    ("unknown block type", messages(messages=[{"role": "user", "content": [{"type": "hologram"}]}]), 400, "invalid_request_error"),
    ("tool_result without its id", messages(messages=[{"role": "user", "content": [{"type": "tool_result", "content": "x"}]}]), 400, "invalid_request_error"),
    ("tool_use in a user message", messages(messages=[{"role": "user", "content": [{"type": "tool_use", "id": "t", "name": "f", "input": {}}]}]), 400, "invalid_request_error"),
    ("5 stop sequences", messages(stop_sequences=["a", "b", "c", "d", "e"]), 400, "invalid_request_error"),
    ("a stop sequence of 10,000 characters", messages(stop_sequences=["x" * 10_000]), 400, "invalid_request_error"),
    ("temperature above 1", messages(temperature=1.5), 400, "invalid_request_error"),
    ("tool choice of a tool without its name", messages(tools=[{"name": "f", "input_schema": {"type": "object"}}], tool_choice={"type": "tool"}), 400, "invalid_request_error"),
    ("129 tools", messages(tools=[{"name": "f", "input_schema": {"type": "object"}}] * 129), 400, "invalid_request_error"),
    ("max_tokens over the limit", messages(max_tokens=100000), 400, "invalid_request_error"),
    ("unknown model", messages(model="claude-9"), 404, "not_found_error"),
    ("body over the size limit", {"content": b"x" * (2 * 1024 * 1024 + 1), "headers": JSON}, 413, "request_too_large"),
    ("malformed json", {"content": b'{"model": "auto", "messages": [', "headers": JSON}, 400, "invalid_request_error"),
]


@pytest.mark.parametrize("case", ANTHROPIC_MATRIX, ids=[c[0] for c in ANTHROPIC_MATRIX])
def test_anthropic_bad_input_matrix(http, case):
    """The Messages API's mistakes get Anthropic's error shape, with the same statuses."""
    _, kwargs, status, kind = case
    assert_anthropic_error(http.post(MSG, **kwargs), status, kind)


def assert_anthropic_error(response, status: int, kind: str) -> None:
    assert response.status_code == status, response.text[:300]
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind and body["error"]["message"]
    assert "Traceback" not in body["error"]["message"] and "/work/" not in body["error"]["message"]


def test_count_tokens_bad_input_gets_anthropics_shape(http):
    count = MSG + "/count_tokens"
    assert_anthropic_error(http.post(count, json={"model": "auto"}), 400, "invalid_request_error")
    assert_anthropic_error(http.post(count, json={"model": "auto", "messages": U, "max_tokens": 5}), 400,
                           "invalid_request_error")  # not a count_tokens field
    assert_anthropic_error(http.post(count, json={"model": "nope", "messages": U}), 404, "not_found_error")


def test_matrix_is_broad_enough():
    assert len(MATRIX) >= 40


def test_unknown_model_through_openai_client_raises_not_found(openai_client):
    import openai

    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="gpt-9", messages=U)


@pytest.mark.parametrize(
    "text",
    ["\n" * 20_000 + "Prove it.", "1" * 100_000, ("| --- |" + " " * 200) * 400],
    ids=["20k-newlines", "digit-run", "table-spaces"],
)
def test_hostile_text_is_routed_by_the_router_itself(http, text):
    """Each used to stall the router's regexes for seconds to minutes; now the router
    answers before the ingress's timeout would rescue the request."""
    body = {"model": "auto", "messages": [{"role": "user", "content": text}]}
    route = http.post("/v1/route", json=body)
    assert route.status_code == 200, route.text
    assert route.json()["features"].get("router") != "timeout"
    normal = http.post("/v1/route", json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]})
    assert normal.status_code == 200 and normal.json()["target"] == EXTRACTOR


def test_service_is_healthy_after_bad_input(http):
    r = http.post(CHAT, json={"model": "auto", "messages": [{"role": "user", "content": "still there?"}], "max_tokens": 3})
    assert r.status_code == 200
    assert http.get("/readyz").status_code == 200
