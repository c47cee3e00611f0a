"""Stage 1: schema.org ``JobPosting`` data embedded in the page (JSON-LD, microdata).

Most job boards publish it for search engines, and it is exact: when a field is there,
nothing downstream should guess it. Parsing is extruct's; this module only maps the
schema.org shapes (``@graph``, ``@id`` references, ``MonetaryAmount``,
``QuantitativeValue``, month-based experience) onto the record's raw fields.
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Optional

from deployments.extraction.rules import (
    experience_from_text,
    location_value,
    parse_employment_type,
    parse_period_word,
    region_code,
)

_SALARY_KEYS = ("baseSalary", "estimatedSalary")
_ISO_DATE_PREFIX = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _type_names(node: dict[str, Any]) -> set[str]:
    raw = node.get("@type") or node.get("type") or []
    names = raw if isinstance(raw, list) else [raw]
    return {str(n).rsplit("/", 1)[-1] for n in names}


def _from_microdata(item: dict[str, Any]) -> dict[str, Any]:
    """A microdata item as a JSON-LD-shaped node (``@type`` plus properties)."""

    def convert(value: Any) -> Any:
        if isinstance(value, dict) and "properties" in value:
            return _from_microdata(value)
        if isinstance(value, list):
            return [convert(v) for v in value]
        return value

    node = {k: convert(v) for k, v in (item.get("properties") or {}).items()}
    node["@type"] = item.get("type")
    return node


#: Levels of JSON-LD / microdata nesting read; deeper values are dropped. Real postings
#: nest four or five levels; a page nesting a thousand made the walk (and every ``str()``
#: of a value) raise RecursionError.
MAX_NESTING = 32


def _pruned(value: Any, depth: int = 0) -> Any:
    """A copy of ``value`` with everything below :data:`MAX_NESTING` levels dropped.

    Recursive, but never deeper than :data:`MAX_NESTING` frames.
    """
    if depth >= MAX_NESTING:
        return None
    if isinstance(value, dict):
        return {k: _pruned(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_pruned(v, depth + 1) for v in value]
    return value


def _walk(value: Any) -> Iterable[dict[str, Any]]:
    """Every object in ``value``, depth first (iterative)."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            yield node
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list):
            stack.extend(reversed(node))


def find_job_postings(tree: Any, base_url: str = "") -> list[dict[str, Any]]:
    """Every JobPosting node in the page, JSON-LD first, ``@id`` references resolved.

    Args:
        tree: An lxml HTML tree of the page.
        base_url: The page's URL, used by microdata to resolve relative links.
    """
    from extruct.jsonld import JsonLdExtractor
    from extruct.w3cmicrodata import MicrodataExtractor

    try:
        blocks = list(JsonLdExtractor().extract_items(tree))
    except Exception:  # noqa: BLE001 - a broken block must not hide the microdata
        blocks = []
    try:
        items = list(MicrodataExtractor().extract_items(tree, base_url))
    except Exception:  # noqa: BLE001
        items = []
    return postings_in(blocks, items)


def postings_in(blocks: list[Any], microdata: list[Any]) -> list[dict[str, Any]]:
    """The JobPosting nodes in parsed JSON-LD blocks and microdata items."""
    nodes = list(_walk(_pruned(blocks)))
    nodes += [_from_microdata(item) for item in _pruned(microdata) if isinstance(item, dict)]
    by_id = {n["@id"]: n for n in nodes if isinstance(n.get("@id"), str) and len(n) > 1}

    def resolve(value: Any) -> Any:
        if isinstance(value, dict) and set(value) == {"@id"} and isinstance(value["@id"], str):
            return by_id.get(value["@id"], value)
        return value

    postings = []
    for node in nodes:
        if "JobPosting" in _type_names(node):
            postings.append({k: resolve(v) if not isinstance(v, list) else [resolve(x) for x in v] for k, v in node.items()})
    return postings


def _first(value: Any) -> Any:
    if isinstance(value, list):
        return value[0] if value else None
    return value


def _text(value: Any) -> Optional[str]:
    value = _first(value)
    if isinstance(value, dict):
        value = value.get("name") or value.get("@value")
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return None  # a list or object where text belongs is not text
    text = " ".join(str(value).split())
    return text or None


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        cleaned = value.strip().replace(",", "").replace(" ", "")
        try:
            return float(cleaned)
        except ValueError:
            return None
    return None


def _location(node: dict[str, Any]) -> Optional[str]:
    place = _first(node.get("jobLocation"))
    if not isinstance(place, dict):
        text = _text(place)
        return location_value(text) if text else None
    address = place.get("address", place)
    if isinstance(address, str):
        return location_value(address)
    if not isinstance(address, dict):
        return None
    city = _text(address.get("addressLocality"))
    if not city:
        return None
    region = region_code(_text(address.get("addressRegion")))
    return f"{city}, {region}" if region else city


def _salary(node: dict[str, Any]) -> dict[str, Any]:
    for key in _SALARY_KEYS:
        amount = _first(node.get(key))
        if amount is None:
            continue
        if not isinstance(amount, dict):
            number = _number(amount)
            if number is not None:
                return {"salary_min": number, "salary_max": number, "salary_currency": node.get("salaryCurrency")}
            continue
        currency = amount.get("currency") or node.get("salaryCurrency")
        value = amount.get("value", amount)
        unit = None
        if isinstance(value, dict):
            unit = value.get("unitText") or amount.get("unitText")
            low, high = _number(value.get("minValue")), _number(value.get("maxValue"))
            single = _number(value.get("value"))
        else:
            unit = amount.get("unitText")
            low = high = None
            single = _number(value)
        if single is not None and low is None and high is None:
            low = high = single
        if low is None and high is None:
            continue
        return {
            "salary_min": low,
            "salary_max": high,
            "salary_currency": _text(currency),
            "salary_period": parse_period_word(_text(unit)),
        }
    return {}


def _skills(value: Any) -> Optional[list[str]]:
    if value is None:
        return None
    items = value if isinstance(value, list) else re.split(r"[,;•|\n]", str(value))
    skills = [_text(item) for item in items]
    return [s for s in skills if s] or None


def _experience(value: Any) -> Optional[int]:
    value = _first(value)
    if isinstance(value, dict):
        months = _number(value.get("monthsOfExperience"))
        if months is not None:
            return int(months // 12)
        value = value.get("description")
    if isinstance(value, str):
        return experience_from_text(value)
    return None


def _employment(value: Any) -> Optional[str]:
    for item in value if isinstance(value, list) else [value]:
        kind = parse_employment_type(_text(item))
        if kind:
            return kind
    return None


def fields_from_posting(node: dict[str, Any]) -> tuple[dict[str, Any], Optional[str]]:
    """The raw record fields one JobPosting node states, and its description text.

    Only what the node actually says is returned; absent fields are left out so that
    later stages can fill them.
    """
    fields: dict[str, Any] = {
        "title": _text(node.get("title")) or _text(node.get("name")),
        "company": _text(node.get("hiringOrganization")),
        "location": _location(node),
        "employment_type": _employment(node.get("employmentType")),
        "experience_years": _experience(node.get("experienceRequirements")),
        "skills": _skills(node.get("skills")),
        "apply_url": _text(node.get("url")),
    }
    location_type = str(_first(node.get("jobLocationType")) or "").upper()
    if location_type == "TELECOMMUTE":
        fields["workplace_type"] = "remote"
        fields["remote"] = True
    posted = _text(node.get("datePosted"))
    if posted and _ISO_DATE_PREFIX.match(posted):
        fields["date_posted"] = posted[:10]
    fields.update(_salary(node))
    description = node.get("description")
    return {k: v for k, v in fields.items() if v is not None}, (str(description) if description else None)
