"""Keep an LLM's value only when the document supports it.

A 135M model asked for a salary that a posting never states writes one anyway; so does
an 8B one, less often. The rules stage returns nothing rather than guess; the LLM stage
must meet the same bar. Each value the LLM proposes is checked against the document's
text, normalised the way the value is:

* strings (title, company, location's city, each skill, the apply URL): found in the
  text, case and whitespace aside; a location's city is not a country, a company is not
  named only as an investor;
* amounts: written in the text as the rules read amounts (``120k``, ``€45.000``,
  ``₹12–18 LPA``, ``18.50``), within half a percent;
* currency, pay period, workplace and employment type: a cue of that value is present
  (a code, symbol or word; "per hour"; "hybrid"; "full-time");
* experience years: the number is written with a unit of years ("5+ years"); a date:
  its year, month and day are.

Being written is not enough for the free-text fields a small model confuses most. A
company that is the job's title, its city or a work arrangement ("Hybrid"); a location
that is a work arrangement ("Part-time") or the company; a skill that is any of these or
one of the posting's labels ("Location"): each is another field's value, and is dropped
(``python -m serve bench extract`` measured why: ``auto`` had filled such values into
postings that state no company or location, and scored below ``fast`` on both fields).

Unsupported values are left out of the record and reported under ``unsupported`` with what
the model proposed.
Everything here is linear in the text, which the pipeline has already capped.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import pycountry

from deployments.extraction import rules
from deployments.extraction.record import SALARY_FIELDS

_NON_WORD = re.compile(r"[^\w]+")
_NUMBER = re.compile(r"(?<![\w.])\d{1,4}(?![\w])")
_LOOSE_REMOTE = re.compile(r"\bremote\b|\bwork from home\b|\bwfh\b|\bhome ?office\b|télétravail|\bremoto\b", re.IGNORECASE)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
#: Relative difference within which an amount counts as the one written (rounding, cents).
AMOUNT_TOLERANCE = 0.005
#: Countries that are one city: a location of their name is a city.
CITY_STATES = frozenset({"singapore", "monaco", "hong kong", "macao", "macau", "luxembourg", "gibraltar", "san marino", "vatican city"})
#: Places people write that are wider than a city and that pycountry does not name so.
REGIONS = frozenset({"uk", "england", "scotland", "wales", "northern ireland", "turkey", "eu", "europe", "emea", "apac",
                     "latam", "north america", "worldwide", "global", "anywhere"})
_LABEL = re.compile(r"^[ \t]*(?P<label>\w[\w ]{0,30}?)[ \t]*[:：]", re.MULTILINE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n")
_FUNDING = re.compile(r"\braised\b|\bseries [a-e]\b|\bled by\b|\bbacked by\b|\binvestors?\b|\bfunding\b|\bfunded by\b", re.IGNORECASE)


def normalise(text: str) -> str:
    """Case folded, every run of non-word characters one space, padded with spaces."""
    return f" {_NON_WORD.sub(' ', text.casefold()).strip()} "


@dataclass
class Evidence:
    """What one document's text states, computed once and asked per field."""

    text: str
    markup: str = ""
    """The raw document's first part: where an apply link stands (not in the visible text)."""
    words: str = field(init=False)
    amounts: set[float] = field(init=False)
    numbers: set[int] = field(init=False)
    currencies: set[str] = field(init=False)
    periods: set[str] = field(init=False)
    workplaces: set[str] = field(init=False)
    employment: set[str] = field(init=False)
    experience: set[int] = field(init=False)
    labels: set[str] = field(init=False)
    """The words a line starts with before a colon ("Location:", "Lieu :"), normalised."""

    def __post_init__(self) -> None:
        self.words = normalise(self.text)
        self.amounts = rules.stated_amounts(self.text)
        self.numbers = {int(m.group()) for m in _NUMBER.finditer(self.text)}
        self.currencies = rules.stated_currencies(self.text)
        self.periods = rules.stated_periods(self.text)
        self.workplaces = rules.stated_workplaces(self.text)
        if _LOOSE_REMOTE.search(self.text) and "onsite" not in self.workplaces:
            self.workplaces.add("remote")
        self.employment = rules.stated_employment(self.text)
        self.experience = rules.stated_experience(self.text)
        self.labels = {normalise(m["label"]) for m in _LABEL.finditer(self.text)}

    def says(self, phrase: str) -> bool:
        """Whether ``phrase`` is written in the text (case, punctuation and spacing aside)."""
        wanted = normalise(phrase)
        return wanted.strip() != "" and wanted in self.words

    def writes_amount(self, value: float) -> bool:
        return any(abs(value - amount) <= AMOUNT_TOLERANCE * max(abs(amount), 1.0) for amount in self.amounts)


def _city(location: Any) -> Optional[str]:
    """The city of a record's location ("Berlin" of "Berlin, DE"), or None when it has none."""
    return location.split(",", 1)[0] if isinstance(location, str) else None


def _location(value: str, evidence: Evidence) -> bool:
    """The city is written, and is a city: "US" from "Remote (US)" is a country, which the
    record's location leaves out."""
    city = _city(value)
    return evidence.says(city) and not _wider_than_a_city(city)


def _wider_than_a_city(name: str) -> bool:
    """A country (by name or code, as pycountry knows them) or a region people write."""
    key = normalise(name).strip()
    if key in CITY_STATES:
        return False
    if key in REGIONS:
        return True
    try:
        pycountry.countries.lookup(name.strip())
    except LookupError:
        return False
    return True


def _company(value: str, evidence: Evidence) -> bool:
    """The name is written, and not only where the posting talks about its funding: "our
    Series A led by Northstar Ventures" names an investor, not the employer."""
    if not evidence.says(value):
        return False
    wanted = normalise(value)
    mentions = [s for s in _SENTENCE_END.split(evidence.text) if wanted in normalise(s)]
    return not mentions or not all(_FUNDING.search(s) for s in mentions)


def _date(value: str, evidence: Evidence) -> bool:
    if value in evidence.text:
        return True
    try:
        day = dt.date.fromisoformat(value)
    except ValueError:
        return False
    month_named = f" {_MONTHS[day.month - 1]}" in evidence.words
    return day.year in evidence.numbers and day.day in evidence.numbers and (month_named or day.month in evidence.numbers)


def _url(value: str, evidence: Evidence) -> bool:
    wanted = value.rstrip("/").casefold()
    return wanted in evidence.text.casefold() or wanted in evidence.markup.casefold()


def _remote(value: bool, evidence: Evidence) -> bool:
    return "remote" in evidence.workplaces if value else bool(evidence.workplaces - {"remote"})


#: How each field's value is checked against the evidence.
CHECKS: dict[str, Callable[[Any, Evidence], bool]] = {
    "title": lambda v, e: e.says(v),
    "company": _company,
    "location": _location,
    "remote": _remote,
    "workplace_type": lambda v, e: v in e.workplaces,
    "salary_min": lambda v, e: e.writes_amount(v),
    "salary_max": lambda v, e: e.writes_amount(v),
    "salary_currency": lambda v, e: v in e.currencies,
    "salary_period": lambda v, e: v in e.periods,
    "employment_type": lambda v, e: v in e.employment,
    "experience_years": lambda v, e: v in e.experience,
    "date_posted": _date,
    "apply_url": _url,
}


def _same_or_inside(a: Any, b: Any) -> bool:
    """Whether two strings are the same words, or one's words run inside the other's."""
    if not isinstance(a, str) or not isinstance(b, str):
        return False
    first, second = normalise(a), normalise(b)
    return first.strip() != "" and second.strip() != "" and (first in second or second in first)


def _another_fields_value(name: str, value: Any, record: dict[str, Any]) -> bool:
    """Whether a proposed company or location is really a value of another field."""
    if not isinstance(value, str):
        return False
    if rules.describes_arrangement(value):
        return True
    if name == "company":
        return _same_or_inside(value, record.get("title")) or _same_or_inside(value, _city(record.get("location")) or "")
    if name == "location":
        return _same_or_inside(_city(value), record.get("company"))
    return False


def _not_a_skill(skill: str, record: dict[str, Any], evidence: Evidence) -> bool:
    """A "skill" that is the title, the company, the city, a work arrangement, or a label
    of the posting ("Location", "Skills")."""
    city = _city(record.get("location"))
    return (rules.describes_arrangement(skill) or normalise(skill) in evidence.labels
            or any(_same_or_inside(skill, other) for other in (record.get("title"), record.get("company"), city)))


def ground(values: dict[str, Any], evidence: Evidence, known: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split the LLM's ``values`` into (supported, unsupported).

    A list (skills) keeps the items the text names; with none left the field is
    unsupported. A salary is kept or dropped whole: an amount the text does not write
    takes its currency and period with it (they describe that amount). A company or
    location that is another field's value (``known``: what earlier stages found, then
    the model's own other values) is unsupported.
    """
    kept: dict[str, Any] = {}
    dropped: dict[str, Any] = {}
    for name, value in values.items():
        if name == "skills" and isinstance(value, list):
            named = [skill for skill in value if isinstance(skill, str) and evidence.says(skill)]
            (kept if named else dropped)[name] = named or value
            continue
        check = CHECKS.get(name)
        if check is not None and _safe(check, value, evidence):
            kept[name] = value
        else:
            dropped[name] = value
    record = {**kept, **(known or {})}
    for name in ("company", "location"):
        if name in kept and _another_fields_value(name, kept[name], {k: v for k, v in record.items() if k != name}):
            dropped[name] = kept.pop(name)
            record.pop(name, None)
    if isinstance(kept.get("skills"), list):
        skills = [skill for skill in kept["skills"] if not _not_a_skill(skill, record, evidence)]
        if not skills:
            dropped["skills"] = kept.pop("skills")
        elif len(skills) < len(kept["skills"]):
            dropped["skills"] = [skill for skill in kept["skills"] if skill not in skills]
            kept["skills"] = skills
    if any(k in dropped for k in ("salary_min", "salary_max")):
        for name in SALARY_FIELDS:
            if name in kept:
                dropped[name] = kept.pop(name)
    return kept, dropped


def _safe(check: Callable[[Any, Evidence], bool], value: Any, evidence: Evidence) -> bool:
    """A check on a value of the wrong type (a number where a string belongs) fails."""
    try:
        return bool(check(value, evidence))
    except (TypeError, ValueError, AttributeError):
        return False
