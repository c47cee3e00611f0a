"""Fast-mode quality on the labelled corpus (the figures ``bench extract`` reports)."""

import pytest

from deployments.extraction.pipeline import PipelineLimits
from deployments.extraction.record import JobPosting
from serve.bench.extract import RULES_FIELDS, SALARY_FIELDS, load_corpus, predict_fast, score
from serve.kernel.config import load_profile

#: The cpu profile's extraction limits.
LIMITS = PipelineLimits.from_profile(load_profile("cpu"))


@pytest.fixture(scope="module")
def corpus():
    return load_corpus()


@pytest.fixture(scope="module")
def quality(corpus):
    predictions = predict_fast(corpus, LIMITS)
    return predictions, score(corpus, predictions)


def test_corpus_covers_what_the_issue_asks(corpus):
    assert len(corpus) >= 60
    kinds = {d["kind"] for d in corpus}
    assert kinds == {"jsonld", "microdata", "html", "text"}
    assert len({d["lang"] for d in corpus}) >= 5
    currencies = {d["gold"].get("salary_currency") for d in corpus} - {None}
    assert len(currencies) >= 8
    assert sum(all(d["gold"].get(f) is None for f in SALARY_FIELDS) for d in corpus) >= 5
    assert max(len(d["document"]) for d in corpus) > 5000
    for doc in corpus:
        JobPosting(**doc["gold"])  # gold labels obey the record's own rules
        assert set(doc.get("structured_fields", [])) <= {k for k, v in doc["gold"].items() if v is not None}


def test_every_document_gives_a_valid_record(quality):
    predictions, result = quality
    assert result["failed"] == []
    for record in predictions.values():
        JobPosting(**record)


def test_structured_data_fields_f1(quality):
    _, result = quality
    assert result["structured_data"]["micro"]["f1"] >= 0.95
    for field, metrics in result["structured_data"]["fields"].items():
        assert metrics["f1"] >= 0.95, field


@pytest.mark.parametrize("field", RULES_FIELDS)
def test_rules_fields_f1_on_postings_without_structured_data(quality, field):
    _, result = quality
    assert result["rules_on_text"]["fields"][field]["f1"] >= 0.85


def test_no_salary_is_invented(quality):
    _, result = quality
    assert result["invented_salary"] == []
