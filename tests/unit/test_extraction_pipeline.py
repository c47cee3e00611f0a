"""The pipeline's stages, merge, LLM repair and custom schemas, with a fake LLM.

The fake stands in for the graph's chat path only (unit isolation); the integration
tests run the same pipeline against the real engines.
"""

import asyncio
import json
import re

import jsonschema
import pytest

from deployments.extraction import schemas
from deployments.extraction.pipeline import (
    ExtractionFailed,
    LlmReply,
    PipelineLimits,
    extract_custom,
    extract_job_posting,
)
from deployments.extraction.record import JobPosting, JobPostingDraft

LIMITS = PipelineLimits(max_text_chars=5000, llm_input_chars=1000, max_tokens=512, thinking_tokens=128)
JSONLD_PAGE = """<html><head><script type="application/ld+json">
{"@context":"https://schema.org","@type":"JobPosting","title":"Data Engineer",
 "hiringOrganization":{"@type":"Organization","name":"Acme"},
 "baseSalary":{"@type":"MonetaryAmount","currency":"EUR","value":{"@type":"QuantitativeValue","minValue":50000,"maxValue":60000,"unitText":"YEAR"}}}
</script></head><body><h1>Data Engineer</h1><p>Fully remote.</p></body></html>"""
TEXT_POSTING = "Barista\nLocation: Oakland, CA\nFriendly café, great coffee."
#: Names the company and a pay range without a pay word (the rules leave them): an LLM
#: that reads them is grounded.
GAPS_POSTING = "Barista\nLocation: Oakland, CA\nJoin Blue Bottle, a friendly café. Part-time, 40,000-50,000 USD a year."


class FakeLlm:
    """Replies from a script, recording what it was asked."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.calls = []

    async def __call__(self, request):
        self.calls.append(request)
        content, finish = self.replies.pop(0)
        text = content if isinstance(content, str) else json.dumps(content)
        return LlmReply(content=text, finish_reason=finish, target="fake-model", reason="test", prompt_tokens=10, completion_tokens=5)


def run(coro):
    return asyncio.run(coro)


def test_fast_mode_reads_structured_data_and_rules_with_sources():
    result = run(extract_job_posting(JSONLD_PAGE, mode="fast", limits=LIMITS))
    assert result.data["salary_min"] == 50000 and result.data["salary_currency"] == "EUR"
    assert result.data["workplace_type"] == "remote" and result.data["remote"] is True
    assert result.sources["salary_min"] == "structured_data"
    assert result.sources["workplace_type"] == "rules"
    assert result.usage["llm_calls"] == 0
    JobPosting(**result.data)


def test_fast_mode_without_a_title_is_a_422_naming_the_field():
    with pytest.raises(ExtractionFailed) as info:
        run(extract_job_posting("Location: Berlin\nSalary: €50k", mode="fast", limits=LIMITS))
    assert info.value.param == "title"


def test_auto_asks_the_llm_only_for_the_gaps_and_earlier_stages_win():
    fake = FakeLlm(({"company": "Blue Bottle", "salary_min": 40000, "salary_max": 50000, "salary_currency": "USD",
                     "salary_period": "year", "remote": None, "workplace_type": None, "employment_type": "part_time",
                     "experience_years": None, "skills": None, "date_posted": None, "apply_url": None}, "stop"))
    result = run(extract_job_posting(GAPS_POSTING, mode="auto", limits=LIMITS, complete=fake))
    asked = set(fake.calls[0].json_schema["properties"])
    assert "title" not in asked and "location" not in asked  # the rules found these
    assert fake.calls[0].role == "auto"
    assert result.data["title"] == "Barista" and result.sources["title"] == "rules"
    assert result.data["company"] == "Blue Bottle" and result.sources["company"] == "llm"
    assert "remote" not in result.sources  # null values have no source
    assert result.usage == {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15, "llm_calls": 1}


def test_decoding_schema_always_fits_the_token_budget():
    fake = FakeLlm(({"title": "x"}, "stop"))
    run(extract_job_posting(TEXT_POSTING, mode="deep", limits=LIMITS, complete=fake))
    schema = fake.calls[0].json_schema
    assert fake.calls[0].role == "reasoner"
    assert schemas.token_budget(schema) <= LIMITS.max_tokens - LIMITS.thinking_tokens


def test_truncated_output_is_retried_with_tighter_bounds_then_reported():
    fake = FakeLlm(('{"title": "Bar', "length"), ('{"title": "Baris', "length"))
    result = run(extract_job_posting(TEXT_POSTING, mode="llm", limits=LIMITS, complete=fake))
    assert len(fake.calls) == 2
    assert schemas.token_budget(fake.calls[1].json_schema) < schemas.token_budget(fake.calls[0].json_schema)
    assert any("truncated" in w for w in result.warnings)
    assert result.data["title"] == "Barista"  # the rules' value; nothing from the cut output
    assert all(source != "llm" for source in result.sources.values())


def test_invalid_output_is_repaired_once_with_the_error_spelled_out():
    bad = {"title": "Barista", "salary_min": 9, "salary_max": 1, "salary_currency": "USD"}
    good = {"title": "Barista", "salary_min": 1, "salary_max": 9, "salary_currency": "USD"}
    fake = FakeLlm((bad, "stop"), (good, "stop"))
    tips = TEXT_POSTING + "\nTips from 1 to 9 USD."  # the amounts are written (grounded), in no pay context
    result = run(extract_job_posting(tips, mode="llm", limits=LIMITS, complete=fake))
    assert "salary_min is greater than salary_max" in fake.calls[1].messages[-1]["content"]
    assert (result.data["salary_min"], result.data["salary_max"]) == (1, 9)
    assert result.usage["llm_calls"] == 2


def test_invalid_currency_from_the_llm_never_reaches_the_record():
    fake = FakeLlm(({"title": "Barista", "salary_currency": "DOLLARS"}, "stop"), ("not json", "stop"))
    result = run(extract_job_posting(TEXT_POSTING, mode="llm", limits=LIMITS, complete=fake))
    assert result.data["salary_currency"] is None
    assert any("not valid JSON" in w for w in result.warnings)


def test_record_normalization_rules():
    assert JobPostingDraft(salary_currency="eur").salary_currency == "EUR"
    assert JobPostingDraft(workplace_type="hybrid").remote is False
    for bad in ({"salary_currency": "XYZ"}, {"salary_min": 5, "salary_max": 1}, {"date_posted": "3 May"},
                {"workplace_type": "remote", "remote": False}, {"salary_period": "fortnight"}, {"apply_url": "ftp://x"}):
        with pytest.raises(ValueError):
            JobPostingDraft(**bad)


# --------------------------------------------------------------- custom schemas
CUSTOM = {
    "type": "object",
    "properties": {"role": {"type": "string"}, "seniority": {"enum": ["junior", "senior"]}, "tags": {"type": "array", "items": {"type": "string"}}},
    "required": ["role", "seniority"],
    "additionalProperties": False,
}


def test_custom_schema_output_validates_against_the_callers_schema():
    fake = FakeLlm(({"role": "Barista", "seniority": "junior", "tags": ["coffee"]}, "stop"))
    result = run(extract_custom(TEXT_POSTING, CUSTOM, mode="auto", limits=LIMITS, complete=fake))
    jsonschema.validate(result.data, CUSTOM)
    assert result.sources == {"role": "llm", "seniority": "llm", "tags": "llm"}
    sent = fake.calls[0].json_schema
    assert "pattern" in sent["properties"]["role"] and sent["properties"]["tags"]["maxItems"] <= schemas.DEFAULT_MAX_ITEMS


def test_custom_schema_output_that_never_validates_is_a_422_naming_the_field():
    fake = FakeLlm(({"role": "Barista", "seniority": "boss"}, "stop"), ({"role": "Barista", "seniority": "chief"}, "stop"))
    with pytest.raises(ExtractionFailed) as info:
        run(extract_custom(TEXT_POSTING, CUSTOM, mode="llm", limits=LIMITS, complete=fake))
    assert "seniority" in info.value.message and "enum" in info.value.message


@pytest.mark.parametrize(
    "schema, keyword",
    [
        ({"type": "object", "properties": {"n": {"type": "integer", "multipleOf": 5}}}, "multipleOf"),
        ({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}, "uniqueItems"),
        ({"type": "object", "properties": {"a": {"not": {"type": "null"}}}}, "not"),
        ({"type": "object", "patternProperties": {"^x": {"type": "string"}}}, "patternProperties"),
        ({"type": "object", "properties": {"a": {"type": "string", "format": "iban"}}}, "format"),
        ({"type": "object", "properties": {"a": {"type": "string", "pattern": "^a+$", "maxLength": 3}}}, "maxLength"),
        ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "$ref"),
        ({"type": "array", "items": {"type": "string"}}, "type"),
        ({"type": "object", "properties": {"a": {"type": "strng"}}}, "#/properties/a/type"),
    ],
)
def test_schemas_the_decoder_cannot_honour_are_refused_naming_the_keyword(schema, keyword):
    fake = FakeLlm()
    with pytest.raises(ExtractionFailed) as info:
        run(extract_custom(TEXT_POSTING, schema, mode="auto", limits=LIMITS, complete=fake))
    assert info.value.code == "unsupported_schema"
    assert keyword in info.value.message
    assert fake.calls == []  # refused before any model was asked


def test_property_names_that_look_like_keywords_are_fine():
    schema = {"type": "object", "properties": {"not": {"type": "boolean"}, "format": {"type": "string"}}}
    schemas.check_caller_schema(schema)


def test_fast_mode_is_refused_for_custom_schemas():
    with pytest.raises(ExtractionFailed) as info:
        run(extract_custom(TEXT_POSTING, CUSTOM, mode="fast", limits=LIMITS, complete=FakeLlm()))
    assert info.value.param == "mode"


def test_decoding_schema_only_tightens():
    schema = {"type": "object", "properties": {"a": {"type": "string", "minLength": 2, "maxLength": 500}, "b": {"type": "string", "maxLength": 4}}}
    out = schemas.decoding_schema(schema, max_string=80)
    a, b = (re.compile(out["properties"][k]["pattern"]) for k in ("a", "b"))
    assert a.match("ab") and a.match("x" * 80) and not a.match("x") and not a.match("x" * 81)
    assert a.match("a b") and not a.match(" ab") and not a.match('a"b') and not a.match("a\nb")
    assert b.match("") and b.match("abcd") and not b.match("abcde")
    assert schema["properties"]["a"]["maxLength"] == 500  # the caller's copy is untouched


def test_salary_decimals_are_kept_in_every_stage():
    """"$18.50/hr" is 18.5 whether structured data, the rules or the LLM read it."""
    hourly_jsonld = JSONLD_PAGE.replace('"minValue":50000,"maxValue":60000,"unitText":"YEAR"', '"minValue":18.5,"maxValue":21.75,"unitText":"HOUR"')
    structured = run(extract_job_posting(hourly_jsonld, mode="fast", limits=LIMITS)).data
    assert (structured["salary_min"], structured["salary_max"], structured["salary_period"]) == (18.5, 21.75, "hour")
    rules = run(extract_job_posting("Barista\nPay: $18.50/hr, part-time", mode="fast", limits=LIMITS)).data
    assert (rules["salary_min"], rules["salary_max"], rules["salary_period"]) == (18.5, 18.5, "hour")
    fake = FakeLlm(({"title": "Barista", "company": None, "location": None, "remote": None, "workplace_type": None,
                     "salary_min": 18.5, "salary_max": 22.25, "salary_currency": "USD", "salary_period": "hour",
                     "employment_type": None, "experience_years": None, "skills": None, "date_posted": None,
                     "apply_url": None}, "stop"))
    # The amounts are written, in no pay context the rules read: the LLM reads them, and is grounded.
    posting = "Barista wanted at our café. Shifts billed per hour; tips of 18.50 to 22.25 USD."
    llm = run(extract_job_posting(posting, mode="llm", limits=LIMITS, complete=fake))
    assert (llm.data["salary_min"], llm.data["salary_max"]) == (18.5, 22.25) and llm.sources["salary_min"] == "llm"
    assert fake.calls[0].json_schema["properties"]["salary_min"]["anyOf"][0]["type"] == "number"
    whole = JobPosting(title="x", salary_min=120000.0, salary_max=150000)
    assert json.loads(whole.model_dump_json())["salary_min"] == 120000 and isinstance(whole.salary_min, int)


def test_a_field_the_record_derives_takes_its_origins_source():
    """The LLM set workplace_type and left remote null: the record derives remote (a
    real SmolLM2 reply that once made a batch item fail with a 500)."""
    fake = FakeLlm(({"title": "Library Assistant", "company": None, "location": None, "remote": None,
                     "workplace_type": "remote", "salary_min": None, "salary_max": None, "salary_currency": None,
                     "salary_period": None, "employment_type": "part_time", "experience_years": None, "skills": None,
                     "date_posted": None, "apply_url": None}, "stop"))
    posting = "Library Assistant\nPart-time, 20 hours per week; you work from home."  # a cue the rules leave
    result = run(extract_job_posting(posting, mode="llm", limits=LIMITS, complete=fake))
    assert result.data["remote"] is True and result.sources["remote"] == result.sources["workplace_type"] == "llm"


def test_a_record_becomes_flat_metadata_with_its_sources():
    from deployments.extraction.record import posting_metadata

    data = {"title": "Data Engineer", "company": None, "skills": ["Python", "SQL"], "salary_min": 90000, "remote": True,
            "date_posted": "2026-10-01"}
    sources = {"title": "structured_data", "skills": "rules", "salary_min": "rules", "remote": "rules",
               "date_posted": "structured_data"}
    assert posting_metadata(data, sources, max_list=1) == {
        "title": "Data Engineer", "skills": ["Python"], "salary_min": 90000, "remote": True, "date_posted": "2026-10-01",
        "source.title": "structured_data", "source.skills": "rules", "source.salary_min": "rules",
        "source.remote": "rules", "source.date_posted": "structured_data"}
