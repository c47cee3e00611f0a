"""The extraction pipeline: exact data first, rules next, the LLM only for the gaps.

``fast`` runs stages 1-3 in a worker thread (no I/O, about a millisecond). The LLM
stage is a coroutine that receives a ``complete`` callable, so this module knows
nothing of Ray: the ingress passes a function that routes and forwards a chat request
through the graph, and unit tests pass a fake.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Literal, Optional

from pydantic import ValidationError

from deployments.extraction import grounding, rules, schemas, structured, text as text_stage
from deployments.extraction.record import DERIVED_FROM, FIELDS, SALARY_FIELDS, JobPosting, JobPostingDraft, error_fields
from serve.kernel.protocol import ExtractMode

if TYPE_CHECKING:
    from serve.kernel.config import Profile

Source = Literal["structured_data", "rules", "llm"]
SYSTEM_PROMPT = (
    "You extract facts from job postings. Answer with one JSON object that matches the "
    "schema. Use null for anything the posting does not state; never invent a value."
)


class ExtractionFailed(Exception):
    """The document cannot give a valid record; ``param`` names the field or keyword."""

    def __init__(self, message: str, *, param: Optional[str] = None, code: str = "extraction_failed") -> None:
        super().__init__(message)
        self.message, self.param, self.code = message, param, code


@dataclass(frozen=True)
class PipelineLimits:
    """Sizes the pipeline enforces, built from a profile by :meth:`from_profile` (its
    ``extraction`` section and the two models' token limits hold the defaults)."""

    max_text_chars: int
    llm_input_chars: int
    max_tokens: int
    thinking_tokens: int

    @classmethod
    def from_profile(cls, profile: "Profile") -> "PipelineLimits":
        extraction, extractor, reasoner = profile.extraction, profile.extractor, profile.reasoner
        return cls(
            max_text_chars=extraction.max_text_chars,
            llm_input_chars=extraction.llm_input_chars,
            max_tokens=min(extractor.max_tokens_limit, reasoner.max_tokens_limit),
            thinking_tokens=min(extraction.thinking_budget_tokens, reasoner.thinking_budget_tokens or 0),
        )


@dataclass
class LlmRequest:
    """One constrained-decoding call the pipeline needs."""

    messages: list[dict[str, str]]
    json_schema: dict[str, Any]
    max_tokens: int
    role: Literal["auto", "extractor", "reasoner"]
    route_text: str
    thinking_tokens: int = 0


@dataclass
class LlmReply:
    content: Optional[str]
    finish_reason: Optional[str]
    target: str
    reason: str = ""
    hops: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0


Complete = Callable[[LlmRequest], Awaitable[LlmReply]]


@dataclass
class Extraction:
    """The pipeline's answer for one document."""

    data: dict[str, Any]
    sources: dict[str, Source]
    kind: str
    warnings: list[str] = field(default_factory=list)
    route: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, int] = field(default_factory=lambda: {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "llm_calls": 0})
    unsupported: dict[str, Any] = field(default_factory=dict)
    """Values the LLM proposed that the document does not support: left out of ``data``
    (and so of ``sources``, which names where each *kept* value came from), reported here
    for debugging."""
    text: str = field(default="", repr=False)
    """The document's visible text as the stages read it (what a collection indexes)."""

    def as_response(self, schema_name: str) -> dict[str, Any]:
        return {
            "data": self.data, "schema": schema_name, "route": self.route, "sources": self.sources,
            "unsupported": self.unsupported, "warnings": self.warnings, "usage": self.usage, "document_kind": self.kind,
        }


@dataclass
class FastStagesResult:
    """What stages 1-3 (structured data, visible text, rules) found in one document."""

    fields: dict[str, Any]
    sources: dict[str, Source]
    text: str
    kind: str
    warnings: list[str]


# ------------------------------------------------------------------ stages 1-3
def _normalize(fields: dict[str, Any], sources: dict[str, Source], warnings: list[str]) -> dict[str, Any]:
    """Validate a partial record; drop (and report) what does not validate."""
    values = dict(fields)
    if isinstance(values.get("experience_years"), float):
        values["experience_years"] = round(values["experience_years"])
    if values.get("salary_min") is not None and values.get("salary_max") is not None and values["salary_min"] > values["salary_max"]:
        warnings.append("salary range had min > max; dropped")
        for key in ("salary_min", "salary_max"):
            values.pop(key)
    for _ in range(len(FIELDS)):
        try:
            return JobPostingDraft(**values).model_dump(exclude_none=True)
        except ValidationError as exc:
            bad = error_fields(exc) or ["remote"]
            for name in bad:
                warnings.append(f"{name} from {sources.get(name, 'input')} failed validation; dropped")
                values.pop(name, None)
    return {}


def run_fast(document: str, *, content_type: Optional[str], base_url: str, limits: PipelineLimits) -> FastStagesResult:
    """Stages 1-3 for one document: structured data, visible text, rules."""
    is_html = content_type == "text/html" if content_type else text_stage.looks_like_html(document)
    sources: dict[str, Source] = {}
    found: dict[str, Any] = {}
    warnings: list[str] = []
    kind = "text"
    extra_text = ""
    if is_html:
        import lxml.etree
        import lxml.html

        kind = "html"
        try:
            tree = lxml.html.fromstring(document)
        except (lxml.etree.ParserError, ValueError):
            tree = None  # nothing parseable: an empty page, or markup with no elements
        if tree is not None:
            postings = structured.find_job_postings(tree, base_url)
            if len(postings) > 1:
                warnings.append(f"{len(postings)} JobPosting items in the page; the first was used")
            if postings:
                kind = "structured_data"
                stated, description = structured.fields_from_posting(postings[0])
                found.update(stated)
                sources.update({name: "structured_data" for name in stated})
                if description:
                    # Capped like the page text: the rules scan it, and it can be 400 KB.
                    extra_text = text_stage.fragment_text(description[:limits.max_text_chars])[:limits.max_text_chars]
            page = text_stage.page_text(tree, max_chars=limits.max_text_chars, base_url=base_url)
        else:
            page = text_stage.plain_text("", max_chars=limits.max_text_chars)
    else:
        page = text_stage.plain_text(document, max_chars=limits.max_text_chars)
    if page.truncated:
        warnings.append(f"text cut to {limits.max_text_chars} characters")
    body = "\n".join(filter(None, (extra_text, page.text)))
    from_rules = rules.fields_from_text(body)
    if page.title and "title" not in from_rules:
        from_rules["title"] = page.title
    if page.apply_url and "apply_url" not in from_rules:
        from_rules["apply_url"] = page.apply_url
    if any(k in found for k in SALARY_FIELDS):
        # A salary is taken whole from one stage, never stitched from two.
        for key in SALARY_FIELDS:
            from_rules.pop(key, None)
    for name, value in from_rules.items():
        if name not in found:
            found[name] = value
            sources[name] = "rules"
    fields = _normalize(found, sources, warnings)
    return FastStagesResult(fields=fields, sources={k: sources[k] for k in fields}, text=body, kind=kind, warnings=warnings)


# ------------------------------------------------------------------- stage 4
def _messages(text: str, schema: dict[str, Any], limits: PipelineLimits, known: dict[str, Any]) -> list[dict[str, str]]:
    posting = text[: limits.llm_input_chars]
    user = f"Job posting:\n\"\"\"\n{posting}\n\"\"\"\n\nFill these fields: {', '.join(schema.get('properties', {}))}."
    if known:
        user += f"\nAlready known (do not repeat): {json.dumps(known, ensure_ascii=False)}"
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def _parse(reply: LlmReply) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    if reply.finish_reason == "length":
        return None, "output was truncated at max_tokens"
    try:
        value = json.loads(reply.content or "")
    except json.JSONDecodeError as exc:
        return None, f"output is not valid JSON ({exc.msg} at character {exc.pos})"
    if not isinstance(value, dict):
        return None, "output is not a JSON object"
    return value, None


def _parsed_and_checked(reply: LlmReply, check: Callable[[dict[str, Any]], Optional[str]]) -> tuple[Optional[dict[str, Any]], Optional[str]]:
    """The reply's JSON object and ``None``, or ``None`` and what is wrong with it."""
    value, error = _parse(reply)
    if value is not None:
        error = check(value)
    return value, error


class LlmFill:
    """Stage 4 for one document: call, check, and repair once."""

    def __init__(self, complete: Complete, limits: PipelineLimits, role: str, route_text: str, result: Extraction) -> None:
        self._complete, self._limits, self._role, self._route_text, self._result = complete, limits, role, route_text, result

    def _budget(self) -> int:
        thinking = self._limits.thinking_tokens if self._role in ("reasoner", "auto") else 0
        return max(32, self._limits.max_tokens - thinking)

    async def _call(self, messages: list[dict[str, str]], schema: dict[str, Any]) -> LlmReply:
        reply = await self._complete(LlmRequest(
            messages=messages, json_schema=schema, max_tokens=self._limits.max_tokens,
            role=self._role, route_text=self._route_text,  # type: ignore[arg-type]
            thinking_tokens=self._limits.thinking_tokens,
        ))
        usage = self._result.usage
        usage["prompt_tokens"] += reply.prompt_tokens
        usage["completion_tokens"] += reply.completion_tokens
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        usage["llm_calls"] += 1
        self._result.route = {"target": reply.target, "reason": reply.reason, "hops": reply.hops}
        return reply

    async def fill(
        self, build: Callable[[float], dict[str, Any]], text: str, known: dict[str, Any],
        check: Callable[[dict[str, Any]], Optional[str]],
    ) -> tuple[Optional[dict[str, Any]], Optional[str]]:
        """Ask, validate with ``check``; on failure ask once more. Returns (value, error)."""
        schema, scale = schemas.fit_to_budget(build, self._budget())
        messages = _messages(text, schema, self._limits, known)
        reply = await self._call(messages, schema)
        value, error = _parsed_and_checked(reply, check)
        if error is None:
            return value, None
        # One repair: tighter bounds after truncation, the error spelled out otherwise.
        self._result.warnings.append(f"llm output rejected ({error}); retried once")
        if reply.finish_reason == "length":
            schema, _ = schemas.fit_to_budget(lambda s: build(s * scale / 2), self._budget())
        repair = messages + [
            {"role": "assistant", "content": (reply.content or "")[:2000]},
            {"role": "user", "content": f"That answer was rejected: {error}. Reply again with JSON that matches the schema."},
        ]
        reply = await self._call(repair, schema)
        value, error = _parsed_and_checked(reply, check)
        return (value, None) if error is None else (None, error)


def _check_job_posting(value: dict[str, Any]) -> Optional[str]:
    try:
        JobPostingDraft(**value)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "record"
        return f"{where}: {first.get('msg')}"
    return None


async def extract_job_posting(
    document: str, *, mode: ExtractMode, content_type: Optional[str] = None, base_url: str = "",
    limits: PipelineLimits, complete: Optional[Complete] = None,
) -> Extraction:
    """Extract a ``job_posting`` record.

    Modes: ``fast`` stops after the rules; ``llm`` asks the extractor, ``deep`` the
    reasoner and ``auto`` the model the router picks, each only for the fields stages
    1-3 left empty (earlier stages win: structured data over rules over the LLM). A
    value the LLM gives is kept only when the document supports it
    (:mod:`deployments.extraction.grounding`).

    Raises:
        ExtractionFailed: no valid title could be found (the one required field).
    """
    fast = await asyncio.to_thread(run_fast, document, content_type=content_type, base_url=base_url, limits=limits)
    result = Extraction(data={}, sources=dict(fast.sources), kind=fast.kind, warnings=list(fast.warnings), text=fast.text)
    data = dict(fast.fields)
    if mode != "fast" and complete is not None:
        ask = [f for f in FIELDS if f not in data and not (f in DERIVED_FROM and DERIVED_FROM[f] in data)]
        if any(f in data for f in SALARY_FIELDS):
            # A salary comes whole from one stage: "up to £60k" has no minimum, and the
            # model asked for one writes the maximum again or another figure.
            ask = [f for f in ask if f not in SALARY_FIELDS]
        if ask:
            role = {"llm": "extractor", "deep": "reasoner"}.get(mode, "auto")
            value, error = await LlmFill(complete, limits, role, fast.text, result).fill(
                lambda scale: schemas.job_posting_gap_schema(ask, scale=scale), fast.text, data, _check_job_posting,
            )
            if value is None:
                result.warnings.append(f"llm output invalid after one repair ({error}); its fields were left empty")
            else:
                proposed = {k: v for k, v in value.items() if v is not None and k in ask}
                evidence = await asyncio.to_thread(grounding.Evidence, fast.text, document[:limits.max_text_chars])
                from_llm, result.unsupported = grounding.ground(proposed, evidence, data)
                sources = {**result.sources, **{k: "llm" for k in from_llm}}
                data = _normalize({**from_llm, **data}, sources, result.warnings)
                # A field the record derives (remote from workplace_type) has its origin's source.
                result.sources = {k: sources.get(k) or sources[DERIVED_FROM[k]] for k in data}
    else:
        result.route = {"target": None, "reason": "fast mode: no LLM"}
    try:
        record = JobPosting(**data)
    except ValidationError as exc:
        names = error_fields(exc) or ["title"]
        raise ExtractionFailed(
            f"{names[0]}: not found in the document" + ("" if mode != "fast" else "; mode 'auto' can ask an LLM"),
            param=names[0], code="field_not_found",
        ) from None
    result.data = record.model_dump(mode="json")
    result.sources = {k: v for k, v in result.sources.items() if result.data.get(k) is not None}
    return result


async def extract_custom(
    document: str, schema: dict[str, Any], *, mode: ExtractMode, content_type: Optional[str] = None,
    base_url: str = "", limits: PipelineLimits, complete: Complete,
) -> Extraction:
    """Fill a caller's JSON schema with the LLM; the output is validated against it.

    Raises:
        ExtractionFailed: the schema cannot be honoured, or the output still does not
            validate after one repair (the message names the failing path and keyword).
    """
    if mode == "fast":
        raise ExtractionFailed("mode 'fast' fills the job_posting schema only; use auto, llm or deep", param="mode", code="invalid_mode")
    try:
        schemas.check_caller_schema(schema)
    except schemas.SchemaRefused as exc:
        raise ExtractionFailed(str(exc), param=f"schema{exc.path[1:]}" if exc.path != "#" else "schema", code="unsupported_schema") from None
    validator = schemas.caller_validator(schema)

    def check(value: dict[str, Any]) -> Optional[str]:
        error = next(iter(sorted(validator.iter_errors(value), key=lambda e: list(e.path))), None)
        if error is None:
            return None
        where = "/".join(str(p) for p in error.absolute_path) or "(root)"
        return f"field {where!r} failed {error.validator!r}: {error.message[:200]}"

    fast = await asyncio.to_thread(run_fast, document, content_type=content_type, base_url=base_url, limits=limits)
    result = Extraction(data={}, sources={}, kind=fast.kind, warnings=list(fast.warnings), text=fast.text)
    role = {"llm": "extractor", "deep": "reasoner"}.get(mode, "auto")

    def build(scale: float) -> dict[str, Any]:
        return schemas.decoding_schema(
            schema, max_string=max(8, int(schemas.DEFAULT_MAX_STRING * scale)),
            max_items=max(1, int(schemas.DEFAULT_MAX_ITEMS * scale)),
        )

    value, error = await LlmFill(complete, limits, role, fast.text, result).fill(build, fast.text, {}, check)
    if value is None:
        raise ExtractionFailed(f"the model's output does not validate against the schema after one repair: {error}",
                               param="schema", code="output_invalid")
    result.data = value
    result.sources = {k: "llm" for k in value}
    return result
