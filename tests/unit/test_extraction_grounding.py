"""The LLM's values are kept only where the document supports them."""

from __future__ import annotations

import asyncio
import time

import pytest

from deployments.extraction.grounding import Evidence, ground
from deployments.extraction.pipeline import LlmReply, PipelineLimits, extract_job_posting

LIMITS = PipelineLimits(max_text_chars=5000, llm_input_chars=1000, max_tokens=512, thinking_tokens=128)


@pytest.mark.parametrize("text,amounts", [
    ("Pay: $120k-150k", (120_000, 150_000)),
    ("Gehalt: €45.000 brutto", (45_000,)),
    ("CTC ₹12–18 LPA", (1_200_000, 1_800_000)),
    ("Barista, $18.50/hr", (18.5,)),
    ("$120–150k base", (120_000, 150_000)),
])
def test_amounts_are_grounded_as_written_in_any_notation(text, amounts):
    evidence = Evidence(text)
    for amount in amounts:
        assert evidence.writes_amount(amount), (text, amount, evidence.amounts)
    assert not evidence.writes_amount(99_000)


def test_an_invented_salary_is_dropped_whole_and_reported():
    evidence = Evidence("Platform Engineer at Acme. Competitive pay. Full-time, hybrid in Berlin.")
    kept, dropped = ground({"salary_min": 90_000, "salary_max": 120_000, "salary_currency": "EUR",
                            "salary_period": "year", "employment_type": "full_time", "workplace_type": "hybrid",
                            "company": "Acme"}, evidence)
    assert kept == {"employment_type": "full_time", "workplace_type": "hybrid", "company": "Acme"}
    assert dropped == {"salary_min": 90_000, "salary_max": 120_000, "salary_currency": "EUR", "salary_period": "year"}


def test_enumerations_need_a_cue_and_strings_need_the_words():
    evidence = Evidence("Senior Data Analyst — Acme Corp\nLocation: Austin, TX\nWe pay $40 per hour. Python and SQL.")
    kept, dropped = ground({"title": "Lead Data Scientist", "company": "ACME corp", "location": "Austin, TX",
                            "salary_currency": "GBP", "salary_period": "hour", "employment_type": "contract",
                            "workplace_type": "remote", "skills": ["Python", "Kubernetes", "sql"],
                            "experience_years": 7, "date_posted": "2025-03-12"}, evidence)
    assert kept == {"company": "ACME corp", "location": "Austin, TX", "salary_period": "hour",
                    "skills": ["Python", "sql"]}
    assert set(dropped) == {"title", "salary_currency", "employment_type", "workplace_type", "experience_years",
                            "date_posted"}


def test_dates_urls_and_remote_are_grounded_in_the_text_or_the_markup():
    evidence = Evidence("Posted 12 March 2025. 5+ years of experience. Fully remote.",
                        '<a href="https://jobs.example.com/apply/42">Apply</a>')
    kept, dropped = ground({"date_posted": "2025-03-12", "experience_years": 5, "remote": True,
                            "apply_url": "https://jobs.example.com/apply/42", "company": 42}, evidence)
    assert set(kept) == {"date_posted", "experience_years", "remote", "apply_url"}
    assert dropped == {"company": 42}, "a value of the wrong type is unsupported, not an error"


def test_the_pipeline_reports_what_it_left_out():
    class Guessing:
        async def __call__(self, request):
            return LlmReply(content='{"company": "Acme", "salary_min": 100000, "salary_max": 150000, '
                                    '"salary_currency": "USD", "salary_period": "year"}',
                            finish_reason="stop", target="fake")

    result = asyncio.run(extract_job_posting("Barista\nLocation: Oakland, CA\nJoin Acme's café team.", mode="auto",
                                             limits=LIMITS, complete=Guessing()))
    assert result.data["company"] == "Acme" and result.sources["company"] == "llm"
    assert result.data["salary_min"] is None and "salary_min" not in result.sources
    assert result.unsupported["salary_min"] == 100000
    assert result.as_response("job_posting")["unsupported"] == result.unsupported


@pytest.mark.parametrize("proposed,known,left_out", [
    ({"company": "Data Scientist"}, {"title": "Senior Data Scientist"}, "company"),
    ({"company": "Salesforce Developer (Contract)"}, {"title": "Salesforce Developer"}, "company"),
    ({"company": "Leeds"}, {"title": "Analyst", "location": "Leeds"}, "company"),
    ({"company": "Hybrid"}, {"title": "Analyst"}, "company"),
    ({"location": "Part-time"}, {"title": "Analyst"}, "location"),
    ({"location": "Hybrid"}, {"title": "Analyst"}, "location"),
    ({"location": "Northwind, UK"}, {"title": "Analyst", "company": "Northwind Traders"}, "location"),
])
def test_a_company_or_location_that_is_another_fields_value_is_left_out(proposed, known, left_out):
    text = ("Senior Data Scientist / Salesforce Developer (Contract) / Analyst at Northwind Traders. "
            "Part-time, hybrid, based in Leeds.")
    kept, dropped = ground(proposed, Evidence(text), known)
    assert left_out in dropped and left_out not in kept


def test_the_models_own_company_and_city_are_told_apart():
    evidence = Evidence("Analyst at Northwind Traders, based in Leeds.")
    kept, dropped = ground({"company": "Northwind Traders", "location": "Leeds"}, evidence, {"title": "Analyst"})
    assert kept == {"company": "Northwind Traders", "location": "Leeds"} and dropped == {}
    kept, dropped = ground({"company": "Leeds", "location": "Leeds"}, evidence, {"title": "Analyst"})
    assert kept == {"location": "Leeds"} and dropped == {"company": "Leeds"}, "a name given as both is a place"


def test_a_country_or_region_is_not_a_city():
    evidence = Evidence("Location: Remote (US). Teams in Germany, the UK, EMEA and Singapore; HQ in Leeds.")
    for place in ("US", "Germany", "UK", "EMEA"):
        kept, dropped = ground({"location": place}, evidence)
        assert dropped == {"location": place}, place
    for city in ("Singapore", "Leeds"):
        kept, dropped = ground({"location": city}, evidence)
        assert kept == {"location": city}, city


def test_a_company_named_only_as_an_investor_is_not_the_employer():
    evidence = Evidence("Founding Engineer\nWe raised $20M in a Series A led by Northstar Ventures.\n"
                        "Acme builds robots. Join Acme in Oakland.")
    assert ground({"company": "Northstar Ventures"}, evidence)[1] == {"company": "Northstar Ventures"}
    assert ground({"company": "Acme"}, evidence)[0] == {"company": "Acme"}


def test_skills_that_are_other_fields_or_labels_are_left_out():
    evidence = Evidence("Platform Engineer\nCompany: Quarry Labs\nLocation: Sevilla\nSkills: Python, Terraform\n"
                        "Temporary contract.")
    known = {"title": "Platform Engineer", "company": "Quarry Labs", "location": "Sevilla"}
    kept, dropped = ground({"skills": ["Python", "Platform Engineer", "Company Quarry Labs", "Sevilla", "temporary",
                                       "Location", "Terraform"]}, evidence, known)
    assert kept == {"skills": ["Python", "Terraform"]}
    assert dropped == {"skills": ["Platform Engineer", "Company Quarry Labs", "Sevilla", "temporary", "Location"]}
    kept, dropped = ground({"skills": ["Skills"]}, evidence, known)
    assert kept == {} and dropped == {"skills": ["Skills"]}


def test_experience_years_need_a_unit_of_years():
    evidence = Evidence("Team of 25 engineers, founded 2010, 3 offices. 2-4 yrs in Python preferred.")
    kept, dropped = ground({"experience_years": 25}, evidence)
    assert dropped == {"experience_years": 25}
    kept, dropped = ground({"experience_years": 2}, evidence)
    assert kept == {"experience_years": 2}


def test_a_salary_bound_the_rules_left_empty_is_not_asked_for():
    asked = []

    class Filling:
        async def __call__(self, request):
            asked.append(set(request.json_schema["properties"]))
            return LlmReply(content='{"company": "Acme"}', finish_reason="stop", target="fake")

    result = asyncio.run(extract_job_posting("Barista at Acme\nPay: up to £30,000 a year.", mode="auto",
                                             limits=LIMITS, complete=Filling()))
    assert result.data["salary_max"] == 30_000 and result.data["salary_min"] is None
    assert asked and not asked[0] & {"salary_min", "salary_max", "salary_currency", "salary_period"}
    assert "company" in asked[0]


def test_evidence_over_a_hostile_page_is_bounded():
    page = ("$1 " * 20_000) + "\n" * 20_000 + ("remote hybrid on-site " * 2_000) + "5" + " " * 50_000 + "+"
    started = time.perf_counter()
    Evidence(page[:LIMITS.max_text_chars * 20])
    assert time.perf_counter() - started < 5.0
