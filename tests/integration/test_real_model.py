"""What the real CPU model (SmolLM2-135M-Instruct) writes, judged as text, through the graph.

Every request uses ``temperature: 0``, so each answer is the model's deterministic one.
The clients are the ones users bring: the official ``openai`` client, its
``chat.completions.parse()`` with a Pydantic model, and ``instructor`` in TOOLS,
JSON_SCHEMA and JSON modes, each through ``model: "auto"`` and through the extractor by
name. A 135M model is a baseline, not a quality claim: the records are small and the
sentences plain.
"""

from __future__ import annotations

import json

import instructor
import pytest
from pydantic import BaseModel

from tests.support.models import EXTRACTOR, WEATHER_TOOL

pytestmark = pytest.mark.integration

BY_NAME_AND_AUTO = pytest.mark.parametrize("model", ["auto", EXTRACTOR])


class Person(BaseModel):
    name: str
    age: int


class Posting(BaseModel):
    title: str
    city: str
    salary_min: float
    salary_max: float


PERSON_TEXT = "John Smith is 31 years old."
POSTING_TEXT = "Extract the job: Backend Engineer in Austin. Pay: $120,000 to $150,000 a year."


@pytest.mark.parametrize(
    ("question", "expected"),
    [
        ("What is the capital of France?", "Paris"),
        ("How many days are in a week?", "7"),
        ("What color is the sky on a clear day?", "blue"),
    ],
)
def test_simple_questions_are_answered_for_real_through_auto(openai_client, question, expected):
    raw = openai_client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=48
    )
    assert raw.headers["x-route-target"] == EXTRACTOR
    assert expected.lower() in raw.parse().choices[0].message.content.lower()


@pytest.mark.parametrize(
    ("posting", "low", "high"),
    [
        ("Senior Python Engineer in Austin, TX. Salary $120,000 - $150,000 per year.", 120000, 150000),
        ("Data analyst, pay from $60,000 to $80,000 a year, remote.", 60000, 80000),
        ("Nurse, $35 - $45 per hour, full time.", 35, 45),
    ],
)
def test_json_schema_extraction_gets_the_salary_range_right(openai_client, posting, low, high):
    schema = {
        "type": "object",
        "properties": {"salary_min": {"type": ["number", "null"]}, "salary_max": {"type": ["number", "null"]}},
        "required": ["salary_min", "salary_max"],
        "additionalProperties": False,
    }
    completion = openai_client.chat.completions.create(
        model=EXTRACTOR,
        messages=[{"role": "user", "content": f"Extract the salary range from this job posting: {posting}"}],
        temperature=0, max_tokens=64,
        response_format={"type": "json_schema", "json_schema": {"name": "salary", "schema": schema, "strict": True}},
    )
    content = completion.choices[0].message.content
    assert content[0] == "{", "a json_schema reply is JSON from its first character"
    assert json.loads(content) == {"salary_min": low, "salary_max": high}


def test_three_named_tool_calls_in_a_row_return_parseable_arguments(openai_client):
    for city in ("Paris", "Tokyo", "Berlin"):
        completion = openai_client.chat.completions.create(
            model=EXTRACTOR, messages=[{"role": "user", "content": f"What's the weather in {city}?"}],
            tools=[WEATHER_TOOL], tool_choice={"type": "function", "function": {"name": "get_weather"}},
            temperature=0, max_tokens=64,
        )
        calls = completion.choices[0].message.tool_calls
        assert calls and calls[0].function.name == "get_weather"
        assert json.loads(calls[0].function.arguments)["city"] == city


@BY_NAME_AND_AUTO
def test_openai_parse_returns_a_validated_pydantic_object(openai_client, model):
    raw = openai_client.chat.completions.with_raw_response.parse(
        model=model, messages=[{"role": "user", "content": POSTING_TEXT}], response_format=Posting,
        temperature=0, max_tokens=128,
    )
    assert raw.headers["x-route-target"] == EXTRACTOR
    parsed = raw.parse().choices[0].message.parsed
    assert isinstance(parsed, Posting)
    assert parsed.city == "Austin" and (parsed.salary_min, parsed.salary_max) == (120000, 150000)


@BY_NAME_AND_AUTO
@pytest.mark.parametrize("mode", [instructor.Mode.TOOLS, instructor.Mode.JSON_SCHEMA], ids=["tools", "json_schema"])
def test_instructor_schema_modes_extract_a_record(openai_client, model, mode):
    client = instructor.from_openai(openai_client, mode=mode)
    person, completion = client.chat.completions.create_with_completion(
        model=model, messages=[{"role": "user", "content": PERSON_TEXT}], response_model=Person,
        temperature=0, max_tokens=128, max_retries=1,
    )
    assert completion.model == EXTRACTOR
    assert isinstance(person, Person) and (person.name, person.age) == ("John Smith", 31)


@BY_NAME_AND_AUTO
def test_instructor_json_mode_extracts_a_record(openai_client, model):
    """JSON mode constrains only to *some* JSON object; the schema travels in the prompt.
    A 135M model copies the schema's own keys unless the request names the keys it
    wants, as users of small models do."""
    client = instructor.from_openai(openai_client, mode=instructor.Mode.JSON)
    prompt = f'Reply with a JSON object with the keys "name" and "age" for this person: {PERSON_TEXT}'
    person, completion = client.chat.completions.create_with_completion(
        model=model, messages=[{"role": "user", "content": prompt}], response_model=Person,
        temperature=0, max_tokens=128, max_retries=1,
    )
    assert completion.model == EXTRACTOR
    assert isinstance(person, Person) and (person.name, person.age) == ("John Smith", 31)


def test_n_returns_that_many_choices(openai_client):
    completion = openai_client.chat.completions.create(
        model=EXTRACTOR, messages=[{"role": "user", "content": "Name a fruit."}], n=3, max_tokens=16, seed=7,
    )
    assert sorted(c.index for c in completion.choices) == [0, 1, 2]
    assert all(c.message.content and c.finish_reason in ("stop", "length") for c in completion.choices)
    assert completion.usage.completion_tokens >= 3  # usage counts the tokens of every choice


def test_stop_ends_before_the_stop_sequence(openai_client):
    messages = [{"role": "user", "content": "Count from 1 to 10, separated by commas."}]
    full = openai_client.chat.completions.create(model=EXTRACTOR, messages=messages, temperature=0, max_tokens=48)
    assert "5" in full.choices[0].message.content
    stopped = openai_client.chat.completions.create(
        model=EXTRACTOR, messages=messages, temperature=0, max_tokens=48, stop=["5"]
    )
    choice = stopped.choices[0]
    assert choice.finish_reason == "stop" and "5" not in choice.message.content
    assert full.choices[0].message.content.startswith(choice.message.content)


def test_logprobs_describe_each_generated_token(openai_client):
    completion = openai_client.chat.completions.create(
        model=EXTRACTOR, messages=[{"role": "user", "content": "What is the capital of France?"}],
        temperature=0, max_tokens=12, logprobs=True, top_logprobs=3,
    )
    choice = completion.choices[0]
    tokens = choice.logprobs.content
    assert "".join(t.token for t in tokens) == choice.message.content, "content tokens only"
    # usage also counts the end-of-turn token that stopped the answer
    assert len(tokens) == completion.usage.completion_tokens - (choice.finish_reason == "stop")
    for token in tokens:
        assert len(token.top_logprobs) == 3
        # Greedy decoding: the chosen token is the most likely one.
        assert token.logprob == pytest.approx(max(t.logprob for t in token.top_logprobs), abs=1e-4)
