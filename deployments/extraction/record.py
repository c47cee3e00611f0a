"""The ``job_posting`` record: its vocabularies, validation and normalization.

Every value that leaves the pipeline passes through :class:`JobPosting`, whichever
stage produced it, so a salary range is never inverted, a currency is always an
ISO 4217 code and a date is always ISO. The field list and vocabularies are the API
contract in DESIGN.md.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal, Optional, Union

import pycountry
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

Period = Literal["year", "month", "week", "day", "hour"]
WorkplaceType = Literal["remote", "hybrid", "onsite"]
EmploymentType = Literal["full_time", "part_time", "contract", "internship", "temporary"]

PERIODS: tuple[str, ...] = ("year", "month", "week", "day", "hour")
WORKPLACE_TYPES: tuple[str, ...] = ("remote", "hybrid", "onsite")
EMPLOYMENT_TYPES: tuple[str, ...] = ("full_time", "part_time", "contract", "internship", "temporary")
# ISO 4217 codes that name a currency people are paid in (no funds, metals, test codes).
CURRENCY_CODES: tuple[str, ...] = tuple(
    sorted(c.alpha_3 for c in pycountry.currencies if not c.alpha_3.startswith("X"))
)
_CURRENCY_SET = frozenset(CURRENCY_CODES)

# Bounds that also size the LLM's constrained decoding (see llm_schema.py).
TEXT_LIMITS: dict[str, int] = {
    "title": 120,
    "company": 100,
    "location": 80,
    "apply_url": 300,
    "skill": 40,
}
MAX_SKILLS = 30
MAX_SALARY = 10**9
MAX_EXPERIENCE_YEARS = 50

FIELDS: tuple[str, ...] = (
    "title", "company", "location", "remote", "workplace_type", "salary_min",
    "salary_max", "salary_currency", "salary_period", "employment_type",
    "experience_years", "skills", "date_posted", "apply_url",
)
#: The salary's fields: kept or dropped together (a bound without the rest is not a salary).
SALARY_FIELDS: tuple[str, ...] = ("salary_min", "salary_max", "salary_currency", "salary_period")
#: Fields the record fills from another when a stage left them empty: the derived value
#: shares its origin's source.
DERIVED_FROM = {"remote": "workplace_type"}

_URL = re.compile(r"^https?://\S+$")


def _clean_text(value: Any, limit: int) -> Optional[str]:
    if value is None:
        return None
    text = " ".join(str(value).split())
    return text[:limit] or None


class JobPostingDraft(BaseModel):
    """A record being assembled: every field nullable, every value already normalized."""

    model_config = ConfigDict(extra="forbid")

    title: Optional[str] = Field(None, min_length=1, max_length=TEXT_LIMITS["title"], description="The job title.")
    company: Optional[str] = Field(None, max_length=TEXT_LIMITS["company"], description="The hiring organization.")
    location: Optional[str] = Field(
        None, max_length=TEXT_LIMITS["location"],
        description='City, plus ", " and the region code when given ("Austin, TX"); no country.',
    )
    remote: Optional[bool] = Field(None, description="True only when the job is fully remote.")
    workplace_type: Optional[WorkplaceType] = None
    salary_min: Optional[Union[int, float]] = Field(
        None, ge=0, le=MAX_SALARY, description='Currency units per period, decimals kept ("$18.50/hr" is 18.5).'
    )
    salary_max: Optional[Union[int, float]] = Field(
        None, ge=0, le=MAX_SALARY, description='Currency units per period, decimals kept ("$18.50/hr" is 18.5).'
    )
    salary_currency: Optional[str] = Field(None, description="ISO 4217 code.")
    salary_period: Optional[Period] = None
    employment_type: Optional[EmploymentType] = None
    experience_years: Optional[int] = Field(None, ge=0, le=MAX_EXPERIENCE_YEARS, description="Minimum years asked for.")
    skills: Optional[list[str]] = Field(None, max_length=MAX_SKILLS)
    date_posted: Optional[str] = Field(None, description="ISO date (YYYY-MM-DD).")
    apply_url: Optional[str] = Field(None, max_length=TEXT_LIMITS["apply_url"])

    @field_validator("title", "company", "location", mode="before")
    @classmethod
    def _squash_whitespace(cls, value: Any) -> Any:
        if isinstance(value, str):
            return " ".join(value.split()) or None  # blank is "not stated"
        return value

    @field_validator("salary_currency")
    @classmethod
    def _iso_4217(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        code = value.strip().upper()
        if code not in _CURRENCY_SET:
            raise ValueError(f"{value!r} is not an ISO 4217 currency code")
        return code

    @field_validator("date_posted")
    @classmethod
    def _iso_date(cls, value: Optional[str]) -> Optional[str]:
        if value is None:
            return None
        try:
            return dt.date.fromisoformat(value).isoformat()
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO date (YYYY-MM-DD)") from None

    @field_validator("salary_min", "salary_max")
    @classmethod
    def _amount(cls, value: Optional[float]) -> Optional[float]:
        """Whole amounts stay integers in JSON (120000, not 120000.0); cents are kept."""
        if isinstance(value, float) and value.is_integer():
            return int(value)
        return value

    @field_validator("apply_url")
    @classmethod
    def _http_url(cls, value: Optional[str]) -> Optional[str]:
        if value is not None and not _URL.match(value):
            raise ValueError("apply_url must be an absolute http(s) URL")
        return value

    @field_validator("skills")
    @classmethod
    def _skills(cls, value: Optional[list[str]]) -> Optional[list[str]]:
        if value is None:
            return None
        seen: dict[str, str] = {}
        for skill in value:
            text = _clean_text(skill, TEXT_LIMITS["skill"])
            if text and text.lower() not in seen:
                seen[text.lower()] = text
        return list(seen.values()) or None

    @model_validator(mode="after")
    def _consistent(self) -> "JobPostingDraft":
        if self.salary_min is not None and self.salary_max is not None and self.salary_min > self.salary_max:
            raise ValueError("salary_min is greater than salary_max")
        if self.workplace_type is not None:
            fully_remote = self.workplace_type == "remote"
            if self.remote is None:
                self.remote = fully_remote
            elif self.remote != fully_remote:
                raise ValueError("remote must be true exactly when workplace_type is remote")
        return self


class JobPosting(JobPostingDraft):
    """A normalized job posting. All fields are nullable except ``title``."""

    title: str = Field(min_length=1, max_length=TEXT_LIMITS["title"], description="The job title.")


def error_fields(exc: Exception) -> list[str]:
    """The field names a pydantic ``ValidationError`` complains about (model-level: [])."""
    names = []
    for error in getattr(exc, "errors", lambda: [])():
        loc = error.get("loc") or ()
        if loc and isinstance(loc[0], str) and loc[0] in FIELDS:
            names.append(loc[0])
    return names


def job_posting_json_schema() -> dict[str, Any]:
    """The public JSON schema of the record (what ``/v1/extract`` promises to return)."""
    return JobPosting.model_json_schema()


def posting_metadata(data: dict[str, Any], sources: dict[str, str], *, max_list: int = 64) -> dict[str, Any]:
    """A record as a collection document's flat metadata: every field that has a value
    (``skills`` as a list), and where each came from as ``source.<field>``, so a search
    can filter on both."""
    metadata: dict[str, Any] = {}
    for name in FIELDS:
        value = data.get(name)
        if value is None or value == []:
            continue
        metadata[name] = list(value)[:max_list] if isinstance(value, (list, tuple)) else value
    metadata.update({f"source.{name}": source for name, source in sources.items() if name in metadata})
    return metadata
