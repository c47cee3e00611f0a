"""Every scan over request text is linear or capped: worst cases and random input.

Two kinds of test. The named worst cases are the inputs that were slow or crashed
before their fix (each at the request size limit); they must finish in well under a
second. The ``hypothesis`` properties throw random and adversarial text (long runs of
one character or one short unit, which is what makes a backtracking regex explode) at
the router features, the extraction rules, the structured-data reader, the schema
checks and the collection filters; hypothesis fails a call that takes over 1 s
(``deadline``). A bound of one second is generous on purpose: the machines are shared
and noisy, and a quadratic scan at these sizes takes tens of seconds, not one.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from deployments.collections.filters import FilterError, compile_filter
from deployments.extraction import grounding, rules, schemas, structured
from deployments.extraction.pipeline import PipelineLimits, run_fast
from deployments.router.policies import HeuristicPolicy
from serve.kernel.config import RouterSpec, load_profile
from serve.kernel.routing import RouteInput

#: The cpu profile's extraction limits.
LIMITS = PipelineLimits.from_profile(load_profile("cpu"))
#: The heuristic policy as the profile's defaults build it.
HEURISTIC = HeuristicPolicy(long_context_chars=RouterSpec().long_context_chars)

BOUNDED = settings(deadline=timedelta(seconds=1), max_examples=40,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
#: The request limits the scans see: extraction text, its JSON-LD description, chat text.
TEXT_CHARS = 2 * LIMITS.max_text_chars
CHAT_CHARS = 200_000
#: Characters that drive the project's regexes: separators, digits, money, markup, cues.
HOSTILE = list("\n \t|-:{}[]$€₹1209,.'k<>/\\()*+?#\"ab") + ["USD", "salary ", "per year", "Posted: ",
                                                           "experience ", "remote ", "| --- |", "<table>"]


def runs(max_chars: int) -> st.SearchStrategy[str]:
    """Text made of one short unit repeated, up to ``max_chars``, or random hostile text."""
    unit = st.lists(st.sampled_from(HOSTILE), min_size=1, max_size=4).map("".join)
    repeated = st.tuples(unit, st.integers(1, max_chars)).map(lambda t: (t[0] * (max_chars // len(t[0]) + 1))[:t[1]])
    mixed = st.lists(st.sampled_from(HOSTILE) | st.text(max_size=8), max_size=400).map("".join)
    return repeated | mixed


def _timed(fn, *args, **kwargs) -> float:
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


# ------------------------------------------------------------ named worst cases
WORST_RULES_TEXT = {
    "20,000 newlines (cubic label regexes)": "\n" * 20_000,
    "a line of money tokens (quadratic salary context)": "$1 " * 6_600,
    "money tokens with a currency code after": "1 USD x " * 2_500,
    "one run of 20,000 digits": "1" * 20_000,
    "amounts after one pay word": "salary " + "$1 per year " * 1_600,
    "a 20 KB Posted: value (dateparser)": "Posted: " + "12 March 2025 " * 1_500,
}


@pytest.mark.parametrize("text", WORST_RULES_TEXT.values(), ids=WORST_RULES_TEXT.keys())
def test_the_rules_worst_inputs_finish_in_well_under_a_second(text):
    rules.fields_from_text("warm up: Posted: 3 May 2024, salary $1")
    assert _timed(rules.fields_from_text, text) < 1.0


def test_a_salary_is_still_read_in_a_line_of_many_amounts():
    line = "Founded 2004, 300 staff, 12 offices. " * 40 + "Salary: $120,000 - $140,000 per year."
    assert rules.salary_from_text(line) == {"salary_currency": "USD", "salary_min": 120_000.0,
                                            "salary_max": 140_000.0, "salary_period": "year"}


def test_a_long_posted_value_is_cut_before_dateparser_sees_it():
    assert rules.labelled_fields("Posted: 12 March 2025" + " and more" * 2000) == {}
    assert rules.labelled_fields("Posted: 12 March 2025") == {"date_posted": "2025-03-12"}


def test_a_jsonld_description_is_capped_like_the_page_text():
    limits = LIMITS
    page = ('<html><body><script type="application/ld+json">'
            + json.dumps({"@type": "JobPosting", "title": "Engineer", "description": "$1 pay " * 60_000})
            + "</script><h1>Engineer</h1></body></html>")
    fast = run_fast(page, content_type="text/html", base_url="", limits=limits)
    assert fast.fields["title"] == "Engineer"
    assert len(fast.text) <= 2 * limits.max_text_chars + 1


def _nested(depth: int) -> list:
    value: list = ["x"]
    for _ in range(depth):
        value = [value]
    return value


def test_jsonld_nested_thousands_of_levels_is_read_without_recursion():
    """The walk was recursive: a page nesting deeper than the interpreter allows was a 500."""
    deep = {"@type": "JobPosting", "title": _nested(5000), "name": "Engineer",
            "hiringOrganization": {"name": "Acme", "x": _nested(5000)}}
    [posting] = structured.postings_in([{"@graph": [deep]}], [{"type": "Thing", "properties": {"a": _nested(5000)}}])
    fields, _ = structured.fields_from_posting(posting)
    assert fields["title"] == "Engineer"  # a list where text belongs is not text
    assert fields["company"] == "Acme"


def test_a_schema_pattern_of_many_braces_is_bounded_before_it_is_scanned():
    assert _timed(schemas.token_budget, {"type": "string", "pattern": "{" * 60_000}) < 1.0
    assert _timed(schemas.token_budget, {"type": "string", "pattern": "{[" * 1000}) < 0.1
    with pytest.raises(schemas.SchemaRefused) as refused:
        schemas.check_caller_schema({"type": "object", "properties": {"a": {"type": "string", "pattern": "{" * 5000}}})
    assert refused.value.keyword == "pattern"


def test_a_backtracking_pattern_is_matched_in_linear_time():
    """``^(a|a)*c$`` over forty ``a`` took Python's ``re`` 87-96 s; RE2 answers at once."""
    schema = {"type": "object", "properties": {"a": {"type": "string", "pattern": "^(a|a)*c$|^a{1,40}$"}}}
    schemas.check_caller_schema(schema)
    validator = schemas.caller_validator(schema)
    assert _timed(lambda: list(validator.iter_errors({"a": "a" * 40}))) < 0.1
    assert list(validator.iter_errors({"a": "a" * 40})) == []
    assert [e.validator for e in validator.iter_errors({"a": "a" * 41})] == ["pattern"]
    assert _timed(lambda: list(validator.iter_errors({"a": "a" * 100_000 + "b"}))) < 0.5


def test_a_pattern_the_linear_engine_cannot_run_is_refused():
    for pattern in ("(?=a)b", r"(a)\1", "(?<!x)y"):
        with pytest.raises(schemas.SchemaRefused) as refused:
            schemas.check_caller_schema({"type": "object", "properties": {"a": {"type": "string", "pattern": pattern}}})
        assert refused.value.keyword == "pattern" and "RE2" in str(refused.value)


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"$ref": "#"}}},
    {"type": "object", "properties": {"a": {"$ref": "#/$defs/n"}},
     "$defs": {"n": {"type": "object", "properties": {"b": {"$ref": "#/$defs/m"}}},
               "m": {"type": "array", "items": {"$ref": "#/$defs/n"}}}},
    {"type": "object", "properties": {"a": {"$ref": "#/properties/a"}}},
], ids=["the root", "two defs", "itself"])
def test_a_recursive_ref_is_refused(schema):
    with pytest.raises(schemas.SchemaRefused) as refused:
        schemas.check_caller_schema(schema)
    assert refused.value.keyword == "$ref" and "recursive" in str(refused.value)


def test_refs_that_share_a_definition_without_a_cycle_are_fine():
    schemas.check_caller_schema({"type": "object", "$defs": {"s": {"type": "string", "maxLength": 9}},
                                 "properties": {"a": {"$ref": "#/$defs/s"}, "b": {"$ref": "#/$defs/s"}}})


def test_the_router_heuristic_on_20000_newlines_and_digit_runs():
    for text in ("\n" * 20_000, "1" * CHAT_CHARS, "| a |\n" * 30_000, "$1-" * 60_000):
        assert _timed(HEURISTIC.score, RouteInput(text=text)) < 1.0


# ---------------------------------------------------------- no schema fetches
class _Listener:
    """A TCP listener on loopback that counts the connections it receives."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


@pytest.fixture
def listener():
    server = _Listener()
    yield server
    server.close()


def remote_ref_schemas(port: int) -> list[dict]:
    """Schemas that reach a URL in every way jsonschema would follow one."""
    url = f"http://127.0.0.1:{port}/schema.json"
    return [
        {"type": "object", "properties": {"a": {"$ref": url}}},
        # A local ref into a keyword the walker does not know, which holds a remote ref.
        {"type": "object", "properties": {"a": {"$ref": "#/x-extra/0"}}, "x-extra": [{"$ref": url}]},
        {"type": "object", "properties": {"a": {"$ref": "#/x-extra"}}, "x-extra": {"$ref": f"file://{url}"}},
        # A nested $id moves the base URI, so a relative ref would be resolved against it.
        {"type": "object", "properties": {"a": {"$id": f"http://127.0.0.1:{port}/", "$ref": "other.json"}}},
        {"type": "object", "properties": {"a": {"$id": f"http://127.0.0.1:{port}/", "$ref": "#/definitions/x"}}},
        {"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}},
    ]


def test_no_caller_schema_makes_the_server_connect_anywhere(listener):
    for schema in remote_ref_schemas(listener.port):
        with pytest.raises(schemas.SchemaRefused) as refused:
            schemas.check_caller_schema(schema)
        assert refused.value.keyword in ("$ref", "$id")
    time.sleep(0.3)
    assert listener.connections == 0


def test_the_output_validator_resolves_nothing_outside_the_schema(listener):
    """Even a schema that skipped the checks cannot make validation fetch (empty registry)."""
    from referencing.exceptions import Unresolvable

    schema = remote_ref_schemas(listener.port)[0]
    with pytest.raises(Unresolvable):
        list(schemas.caller_validator(schema).iter_errors({"a": 1}))
    time.sleep(0.3)
    assert listener.connections == 0


def test_local_refs_that_resolve_are_still_accepted():
    schema = {"type": "object", "$defs": {"name": {"type": "string", "maxLength": 20}},
              "properties": {"a": {"$ref": "#/$defs/name"}}, "required": ["a"]}
    schemas.check_caller_schema(schema)
    validator = schemas.caller_validator(schema)
    assert validator.is_valid({"a": "ok"}) and not validator.is_valid({"a": 3})


# ------------------------------------------------------------------ properties
@BOUNDED
@given(runs(CHAT_CHARS))
@example("\n" * 20_000)
@example("1" * CHAT_CHARS)
def test_router_features_are_bounded(text):
    result = HEURISTIC.score(RouteInput(text=text, last_user_text=text))
    assert 0.0 <= result.score <= 1.0


@BOUNDED
@given(runs(TEXT_CHARS))
@example("\n" * TEXT_CHARS)
@example("$1 " * (TEXT_CHARS // 3))
def test_extraction_rules_are_bounded(text):
    fields = rules.fields_from_text(text)
    assert isinstance(fields, dict)


@BOUNDED
@given(runs(TEXT_CHARS))
@example("\n" * TEXT_CHARS)
@example("$1 " * (TEXT_CHARS // 3))
@example("remote hybrid on-site full-time per hour " * (TEXT_CHARS // 40))
def test_grounding_evidence_is_bounded(text):
    evidence = grounding.Evidence(text, text)
    grounding.ground({"salary_min": 1, "title": text[:50], "skills": ["a"] * 20, "date_posted": "2025-01-01"}, evidence)


@BOUNDED
@given(runs(TEXT_CHARS), st.sampled_from(["text/plain", "text/html"]))
def test_the_fast_stages_are_bounded(text, content_type):
    document = text if content_type == "text/plain" else f"<html><body><p>{text}</p></body></html>"
    fast = run_fast(document, content_type=content_type, base_url="", limits=LIMITS)
    assert len(fast.text) <= 2 * LIMITS.max_text_chars + 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(
        ["@type", "@id", "title", "name", "baseSalary", "value", "minValue", "description", "x"]), children, max_size=4),
    max_leaves=60,
)


@BOUNDED
@given(json_values, st.integers(0, 3000))
@example({"@id": []}, 0)  # an @id reference that is not a string (was a TypeError, a 500)
def test_the_structured_data_reader_is_bounded(value, depth):
    node = {"@type": "JobPosting", "title": "T", "baseSalary": value, "x": _nested(depth)}
    for posting in structured.postings_in([node, value], []):
        structured.fields_from_posting(posting)


schema_nodes = st.recursive(
    st.fixed_dictionaries({"type": st.sampled_from(["string", "integer", "number", "boolean"])},
                          optional={"pattern": runs(3000), "maxLength": st.integers(-1, 10**9),
                                    "$ref": st.sampled_from(["#", "#/properties", "#/$defs/a", "http://x/", "#/x/0"])}),
    lambda children: st.fixed_dictionaries({"type": st.just("object"),
                                            "properties": st.dictionaries(st.text(max_size=10), children, max_size=4)})
    | st.fixed_dictionaries({"type": st.just("array"), "items": children},
                            optional={"maxItems": st.integers(-1, 10**6)}),
    max_leaves=30,
)


@BOUNDED
@given(schema_nodes)
def test_the_schema_checks_are_bounded(node):
    schema = {"type": "object", "properties": {"a": node}}
    try:
        schemas.check_caller_schema(schema)
    except schemas.SchemaRefused:
        return
    schemas.token_budget(schemas.decoding_schema(schema))


def test_a_schema_nested_past_the_limit_is_refused_before_any_validator_recurses_into_it():
    node = {"type": "string", "$ref": "#"}
    for _ in range(40):  # a chain hypothesis once drew: jsonschema's meta-validation overflowed the stack on it
        node = {"type": "object", "properties": {"a": node}}
    with pytest.raises(schemas.SchemaRefused) as refused:
        schemas.check_caller_schema(node)
    assert refused.value.keyword == "depth" and "nests deeper than 8 levels" in str(refused.value)
    deeper = node
    for _ in range(5000):  # far past the interpreter's stack, and still well inside the body limit
        deeper = {"type": "object", "properties": {"a": deeper}}
    with pytest.raises(schemas.SchemaRefused):
        schemas.check_caller_schema(deeper)


filters = st.recursive(
    st.dictionaries(st.text(max_size=12), st.none() | st.integers() | st.text(max_size=200)
                    | st.dictionaries(st.sampled_from(["$eq", "$ne", "$gt", "$in", "$nin", "$lte", "$bad"]),
                                      st.integers() | st.lists(st.text(max_size=5), max_size=300)), max_size=20),
    lambda children: st.dictionaries(st.sampled_from(["$and", "$or", "$not"]), st.lists(children, max_size=4), max_size=2),
    max_leaves=40,
)


@BOUNDED
@given(filters, st.dictionaries(st.text(max_size=12), st.integers() | st.text(max_size=100), max_size=20))
def test_collection_filters_are_bounded(spec, metadata):
    try:
        matches = compile_filter(spec)
    except FilterError:
        return
    assert matches(metadata) in (True, False)
