"""Stage 3: rules over the posting's visible text.

Cheap, deterministic and language-aware enough for how postings are written in
English, German, French and Spanish (plus the Indian lakh notation). Each function
returns ``None`` (or ``{}``) rather than guess: a salary is only read when a currency
and a pay context are both there, so a "$2,000 learning budget" or "$20M Series B"
never becomes a salary. Amount strings are parsed with ``price-parser``; absolute
dates with ``dateparser``.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Any, Optional

from deployments.extraction.record import CURRENCY_CODES

_I = re.IGNORECASE
_ISO = frozenset(CURRENCY_CODES)

# ----------------------------------------------------------------- vocabularies
_PERIOD_WORDS = {
    "year": r"years?|yr|yearly|annual(?:ly)?|annum|p\.?\s?a\.?|jahr|jährlich|(?<=par )an|(?<=/)an|année|annuel(?:le)?|año|anual(?:es)?|ano|lpa",
    "month": r"months?|mo|monthly|monat(?:lich)?|mois|mensuel(?:le)?|mes|mensual(?:es)?|mês",
    "week": r"weeks?|wk|weekly|woche|wöchentlich|semaine|semana|semanal",
    "day": r"days?|daily|tag|täglich|jour|día|dia|diario",
    "hour": r"hours?|hr|hourly|h|std\.?|stunde|heure|hora",
}
_PERIOD_AFTER = {
    period: re.compile(
        rf"^\s*(?:\(?\s*)?(?:(?:brutto|netto|brutos?|bruts?|gross|net)\s*)?(?:/\s*|per\s+|an?\s+|pro\s+|im\s+|par\s+|por\s+|al\s+|la\s+|de\s+l'|each\s+)?(?:{words})(?!\w)",
        _I,
    )
    for period, words in _PERIOD_WORDS.items()
}
# Words before an amount that fix its period ("Hourly rate: $45", "Jahresgehalt").
_PERIOD_BEFORE = {
    "hour": re.compile(r"hourly|per hour|stundenlohn|stundensatz|taux horaire|por hora|時給", _I),
    "day": re.compile(r"day rate|daily rate|tagessatz|\btjm\b|taux journalier|日給", _I),
    "week": re.compile(r"weekly|wochenlohn|semanal", _I),
    "month": re.compile(r"monthly|monatsgehalt|per month|mensuel|mensual|月給|月収", _I),
    "year": re.compile(r"annual|yearly|jahresgehalt|per year|salaire annuel|salario anual|brut annuel|\bctc\b|年収", _I),
}
_UNIT_TEXT = {
    "YEAR": "year", "ANNUAL": "year", "YEARLY": "year", "ANNUALLY": "year",
    "MONTH": "month", "MONTHLY": "month", "WEEK": "week", "WEEKLY": "week",
    "DAY": "day", "DAILY": "day", "HOUR": "hour", "HOURLY": "hour",
}
_SYMBOLS = {
    "US$": "USD", "CA$": "CAD", "CAD$": "CAD", "C$": "CAD", "AU$": "AUD", "A$": "AUD",
    "NZ$": "NZD", "S$": "SGD", "HK$": "HKD", "R$": "BRL", "$": "USD", "€": "EUR",
    "£": "GBP", "₹": "INR", "RS": "INR", "RS.": "INR", "¥": "JPY", "円": "JPY",
    "ZŁ": "PLN", "FR.": "CHF", "EURO": "EUR", "EUROS": "EUR", "DOLLARS": "USD",
    "DOLLAR": "USD", "POUNDS": "GBP", "RUPEES": "INR",
}
_SALARY_CONTEXT = re.compile(
    r"salar|\bpay\b|\bpays\b|\bpaid\b|compensation|\bbase\b|\bwage|\brate\b|\bctc\b|\blpa\b|stipend|"
    r"gehalt|vergütung|verdienst|lohn|salaire|rémunération|rémunéré|sueldo|remuneraci|retribuci|"
    r"salário|年収|給与|月給|時給|\bote\b|earn",
    _I,
)
# Money next to these words is not the salary ("$10k signing bonus", "$2,000 budget").
_NOT_SALARY = re.compile(
    r"bonus|budget|equity|stock|rsu|funding|raised|series [a-e]\b|allowance|reimburs|relocation|"
    r"revenue|valuation|401|stipend for|learning|conference|home office|signing|sign-on|prämie|"
    r"zuschuss|prime\b|on-call|on call",
    _I,
)
_UP_TO = re.compile(r"(?:up to|maximum of|max\.?|bis zu|jusqu'à|jusqu’à|hasta|no more than)\s*$", _I)
_FROM = re.compile(r"(?:from|starting (?:at|from)|at least|minimum of|min\.?|\bab|à partir de|desde|a partir de)\s*$", _I)

_CURRENCY_TOKEN = r"US\$|CA\$|CAD\$|C\$|AU\$|A\$|NZ\$|S\$|HK\$|R\$|\$|€|£|₹|¥|円|Rs\.?|zł|Fr\.|[A-Z]{3}"
# Bounded digit runs, whole or not at all: a run of 20,000 digits is not an amount, and
# an unbounded ``\d+`` handed it to the amount parser whole.
_NUMBER = r"(?<!\d)(?:\d{1,3}(?:[.,'’\u00a0\u202f ]\d{3}){1,4}(?:[.,]\d{1,2})?|\d{1,12}(?:[.,]\d{1,2})?)(?!\d)"
_MULTIPLIER = r"k|K|Tsd\.?|thousand|mil|lakhs?|lacs?|LPA|L|crores?|Cr"
_MONEY = re.compile(
    rf"(?P<pre>{_CURRENCY_TOKEN})?\s?(?P<num>{_NUMBER})(?:\s?(?P<mult>{_MULTIPLIER})\b)?"
    rf"(?:\s?(?P<post>{_CURRENCY_TOKEN}|euros?|dollars?|pounds?|rupees?)(?![\w$]))?"
)
_RANGE_GAP = re.compile(r"^\s*(?:-|–|—|~|to|bis|à|a|and|et|y)\s*$", _I)
_MULTIPLIERS = {"k": 1_000, "tsd": 1_000, "thousand": 1_000, "mil": 1_000, "lakh": 100_000,
                "lakhs": 100_000, "lac": 100_000, "lacs": 100_000, "lpa": 100_000, "l": 100_000,
                "crore": 10_000_000, "crores": 10_000_000, "cr": 10_000_000}


def parse_period_word(text: Optional[str]) -> Optional[str]:
    """A schema.org ``unitText`` or a period phrase ("per hour", "/Jahr") as a period."""
    if not text:
        return None
    unit = _UNIT_TEXT.get(text.strip().upper())
    if unit:
        return unit
    for period, pattern in _PERIOD_AFTER.items():
        if pattern.match(text):
            return period
    return None


def region_code(region: Optional[str]) -> Optional[str]:
    """A region only when it is written as a code ("TX", "NSW", "BY"); names are dropped."""
    if region and re.fullmatch(r"[A-Z]{2,3}", region.strip()):
        return region.strip()
    return None


# ----------------------------------------------------------------------- salary
@dataclass
class _Money:
    start: int
    end: int
    value: float
    written: float  # the number as written, before k / lakh / crore
    currency: Optional[str]
    multiplied: bool
    implies_year: bool


def _amount(number: str) -> Optional[float]:
    if number.isdigit():
        return float(number)  # the common case, without the parser's cost
    from price_parser import Price

    price = Price.fromstring(number.replace("’", "'"))
    return float(price.amount) if price.amount is not None else None


def _currency(token: Optional[str]) -> Optional[str]:
    if not token:
        return None
    key = token.strip().upper()
    if key in _SYMBOLS:
        return _SYMBOLS[key]
    return key if key in _ISO else None


def _money_tokens(line: str) -> list[_Money]:
    tokens = []
    for match in _MONEY.finditer(line):
        value = _amount(match["num"])
        if value is None:
            continue
        mult = (match["mult"] or "").lower().rstrip(".")
        currency = _currency(match["pre"]) or _currency(match["post"])
        if match["pre"] and not currency or (match["post"] and not currency and not mult):
            continue  # three capitals that are not a currency ("CEO 5")
        if mult in ("l", "lpa", "lakh", "lakhs", "lac", "lacs", "crore", "crores", "cr"):
            currency = currency or "INR"
        tokens.append(_Money(match.start(), match.end(), value * _MULTIPLIERS.get(mult, 1), value, currency,
                             bool(mult), mult == "lpa"))
    return tokens


def _ranges(line: str, tokens: list[_Money]) -> list[tuple[_Money, _Money]]:
    """Adjacent amounts joined by a range word become one (low, high) pair."""
    pairs, i = [], 0
    while i < len(tokens):
        first = tokens[i]
        if i + 1 < len(tokens) and _RANGE_GAP.match(line[first.end:tokens[i + 1].start]):
            second = tokens[i + 1]
            # "$120–150k", "₹12-18 LPA": the unit written once applies to both ends.
            if second.multiplied and not first.multiplied and first.value < 1000:
                first.value *= second.value / second.written
            first.currency = first.currency or second.currency
            second.currency = second.currency or first.currency
            first.implies_year = second.implies_year = first.implies_year or second.implies_year
            pairs.append((first, second))
            i += 2
        else:
            pairs.append((first, first))
            i += 1
    return pairs


def _period_of(line: str, start: int, end: int, implies_year: bool, high: float) -> Optional[str]:
    after = line[end:end + 40]
    for period, pattern in _PERIOD_AFTER.items():
        if pattern.match(after):
            return period
    before = line[max(0, start - 60):start]
    for period, pattern in _PERIOD_BEFORE.items():
        if pattern.search(before):
            return period
    if implies_year or high >= 20_000:
        return "year"  # five-figure pay with no period written is annual pay
    return None


_NOT_SALARY_AFTER = re.compile(r"^\s*(?:[\w-]+\s){0,2}?(?:" + _NOT_SALARY.pattern + ")", _I)
#: Characters before an amount read for its pay context. A window, not the whole line:
#: searching the line up to every amount made a line of amounts quadratic.
_CONTEXT_CHARS = 160


class _LineCues:
    """Where pay words and not-pay words stand in one line, each found in one pass.

    Every amount on the line then asks about its own neighbourhood with a binary
    search, so a line of thousands of amounts costs one scan, not one per amount.
    """

    def __init__(self, line: str) -> None:
        self.line = line
        self._pay = [(m.start(), m.end()) for m in _SALARY_CONTEXT.finditer(line)]
        self._pay_starts = [start for start, _ in self._pay]
        self._not_pay = [m.start() for m in _NOT_SALARY.finditer(line)]

    def _not_pay_in(self, low: int, high: int) -> bool:
        i = bisect.bisect_left(self._not_pay, low)
        return i < len(self._not_pay) and self._not_pay[i] < high

    def is_salary(self, start: int, end: int) -> bool:
        """Whether the amount at ``line[start:end]`` stands in a pay context."""
        after = self.line[end:end + 40]
        if _NOT_SALARY_AFTER.match(after):
            return False
        # The first pay word in the window before the amount, else one just after it.
        i = bisect.bisect_left(self._pay_starts, max(0, start - _CONTEXT_CHARS))
        if i < len(self._pay) and self._pay[i][1] <= start:
            return not self._not_pay_in(self._pay[i][1], start)
        j = bisect.bisect_left(self._pay_starts, end)
        if j < len(self._pay) and self._pay[j][1] <= end + 40:
            return True
        return any(p.match(after) for p in _PERIOD_AFTER.values()) and not self._not_pay_in(
            max(0, start - _CONTEXT_CHARS), end + _CONTEXT_CHARS)


def salary_from_text(text: str) -> dict[str, Any]:
    """The first stated pay in the text: min, max, currency and period.

    Returns ``{}`` when no amount with a currency stands in a pay context.
    """
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or not any(ch.isdigit() for ch in line):
            continue
        tokens = _money_tokens(line)
        if not tokens:
            continue
        line_code = next((c for c in re.findall(r"\b[A-Z]{3}\b", line) if c in _ISO), None)
        cues = _LineCues(line)
        for low, high in _ranges(line, tokens):
            currency = low.currency or high.currency or line_code
            if currency is None or not cues.is_salary(low.start, high.end):
                continue
            if currency == "USD" and line_code and line_code != "USD" and line[low.start] == "$":
                currency = line_code  # "$95,000 CAD"
            result: dict[str, Any] = {"salary_currency": currency}
            lead = line[max(0, low.start - 25):low.start]
            trail = line[high.end:high.end + 2]
            if low is high and _UP_TO.search(lead):
                result["salary_max"] = high.value
            elif low is high and (_FROM.search(lead) or trail.startswith("+")):
                result["salary_min"] = low.value
            else:
                result["salary_min"], result["salary_max"] = low.value, high.value
            period = _period_of(line, low.start, high.end, low.implies_year, high.value)
            if period:
                result["salary_period"] = period
            return result
    return {}


# ---------------------------------------------------------------- workplace type
# Horizontal space only: ``\s`` would also match newlines, and ``^\s*`` tried at every
# one of 20,000 blank lines backtracked across all the others (cubic, minutes).
_LABEL = r"^[ \t]*(?:[-*•][ \t]*)?(?:{labels})[ \t]*[:：][ \t]*(?P<value>.+)$"
_WORKPLACE_LABEL = re.compile(
    _LABEL.format(labels=r"workplace(?: type)?|work (?:model|arrangement|mode|setup)|location type|remote|"
                  r"arbeitsmodell|arbeitsweise|modalidad|modalité|mode de travail|télétravail|type de poste"),
    _I | re.MULTILINE,
)
#: A value that says "remote" in a language the rules read (the workplace field's value,
#: a skill or location that is an arrangement).
_SAYS_REMOTE = re.compile(r"\bremote\b|télétravail|remoto", _I)
_NOT_REMOTE = re.compile(r"\bnot (?:a )?remote\b|\bno remote\b|\bkein(?:e)? (?:remote|home ?office)\b|\bpas de télétravail\b|\bsin teletrabajo\b|\bnicht remote\b", _I)
_HYBRID = re.compile(
    r"\bhybrid(?:e|es|en|er)?\b|\bh[ií]brid[oa]s?\b|\b\d\s*(?:days?|tage?|jours?|d[ií]as?)\b[^.\n]{0,30}\b(?:in|at|im|au|en)\s+(?:the\s+|our\s+|el\s+|la\s+)?(?:office|büro|bureau|oficina)",
    _I,
)
_REMOTE = re.compile(
    r"\bfully[- ]remote\b|\b100\s?% remote\b|\bremote[- ]first\b|\bremote\s*\((?:[^)]{1,40})\)|\bwork from anywhere\b|"
    r"\bremote (?:role|position|job|opportunity|team member)\b|\b(?:is|this is) (?:a )?remote\b|"
    r"\b(?:vollständig|komplett|100\s?%) (?:remote|im home ?office)\b|\b(?:100\s?% )?télétravail (?:complet|total|à 100\s?%)\b|"
    r"\b100\s?% (?:télétravail|remoto|en remoto)\b|\b(?:trabajo|puesto) (?:100\s?% )?remoto\b|\bremote\b(?=\s*[,;|)\n]|\s*$)",
    _I | re.MULTILINE,
)
_ONSITE = re.compile(
    r"\bon[- ]?site\b|\bin[- ]office\b|\bwork from (?:the )?office\b|\boffice[- ]based\b|\bin[- ]person\b|\bvor ort\b|\bpräsenz|\bsur (?:site|place)\b|\bpresencial\b|\ben (?:la )?oficina\b",
    _I,
)


def _workplace_of(text: str) -> Optional[str]:
    if _HYBRID.search(text):
        return "hybrid"
    if _NOT_REMOTE.search(text):
        return "onsite"
    if _REMOTE.search(text):
        return "remote"
    if _ONSITE.search(text):
        return "onsite"
    return None


def workplace_from_text(text: str) -> Optional[str]:
    """remote, hybrid or onsite from a labelled line or the cues in the text."""
    for match in _WORKPLACE_LABEL.finditer(text):
        value = match["value"]
        if re.fullmatch(r"\s*(?:yes|ja|oui|s[ií]|100\s?%)\b.*", value, _I) and "remote" in match.group(0).lower():
            return "remote"
        found = _workplace_of(value) or ("remote" if _SAYS_REMOTE.search(value) else None)
        if found:
            return found
    return _workplace_of(text)


# -------------------------------------------------------------- employment type
_EMPLOYMENT_LABEL = re.compile(
    _LABEL.format(labels=r"employment(?: type)?|job type|type|contract(?: type)?|schedule|hours|anstellungsart|"
                  r"vertragsart|beschäftigungsart|arbeitszeit|type de contrat|contrat|tipo de contrato|jornada|tipo de empleo"),
    _I | re.MULTILINE,
)
_EMPLOYMENT = (
    ("internship", re.compile(r"\bintern(?:ship)?s?\b|\bpraktik(?:um|ant)|\bwerkstudent|\bstagiaire\b|\bstage (?:de|d'|en)|\bpr[aá]cticas\b|\bpasant[ií]a\b|\bbecario\b|\bINTERN\b", _I)),
    ("temporary", re.compile(r"\btemporary\b|\btemp\b|\bseasonal\b|\bfixed[- ]term\b|\bbefristet|\bcdd\b|\btemporal\b|\binterim\b|\bsaisonnier\b", _I)),
    ("contract", re.compile(
        r"\bcontract(?:or)?\s(?:role|position|job|basis|assignment|engagement)\b|\bcontract[- ]to[- ]hire\b|"
        r"\b(?:\d+|three|six|twelve)[- ]months?\s+contract\b|\bon (?:a )?contract\b|(?<!permanent )(?<!employment )\bcontract(?:or)?\b(?=\s*(?:[,;)|(\n]|$))|"
        r"\bfreelance\b|\bfreelancer\b|\bfreiberuflich|\bindépendant\b|\bb2b\b|\bCONTRACTOR\b",
        _I | re.MULTILINE,
    )),
    ("part_time", re.compile(r"\bpart[- _]?time\b|\bteilzeit\b|\btemps partiel\b|\bmedio tiempo\b|\bmedia jornada\b|\btiempo parcial\b", _I)),
    ("full_time", re.compile(r"\bfull[- _]?time\b|\bvollzeit\b|\btemps (?:plein|complet)\b|\bcdi\b|\bjornada completa\b|\btiempo completo\b|\bpermanent\b|\bunbefristet|\bindefinido\b|\btempo integral\b", _I)),
)


def parse_employment_type(text: Optional[str]) -> Optional[str]:
    """One employment type from a short value ("FULL_TIME", "Teilzeit", "CDD")."""
    if not text:
        return None
    for kind, pattern in _EMPLOYMENT:
        if pattern.search(text):
            return kind
    return None


def employment_from_text(text: str) -> Optional[str]:
    """The employment type from a labelled line, else from the cues in the text."""
    for match in _EMPLOYMENT_LABEL.finditer(text):
        found = parse_employment_type(match["value"])
        if found:
            return found
    return parse_employment_type(text)


# ------------------------------------------------------------------- experience
_EXPERIENCE_WORD = re.compile(r"experience|erfahrung|expérience|experiencia|experiência", _I)
_YEARS = re.compile(
    r"(?P<n>\d{1,2})\s*\+?\s*(?:(?:-|–|to|bis|à|a)\s*\d{1,2}\s*\+?\s*)?(?:years?|yrs?|jahre?n?|ans?|años|anos)\b", _I
)


def experience_from_text(text: str) -> Optional[int]:
    """Minimum years of experience asked for, from the first sentence that asks."""
    for sentence in re.split(r"(?<=[.;!?])\s+|\n", text):
        if not _EXPERIENCE_WORD.search(sentence):
            continue
        match = _YEARS.search(sentence)
        if match:
            return int(match["n"])
    return None


# ---------------------------------------------------------------- labelled lines
_TITLE_LABEL = re.compile(_LABEL.format(labels=r"job title|title|position|role|stelle|poste|puesto"), _I | re.MULTILINE)
_COMPANY_LABEL = re.compile(_LABEL.format(labels=r"company|employer|organization|unternehmen|arbeitgeber|entreprise|société|empresa"), _I | re.MULTILINE)
_LOCATION_LABEL = re.compile(_LABEL.format(labels=r"location|based in|city|standort|arbeitsort|ort|lieu|localisation|ubicación|ubicacion|ciudad|local|localização"), _I | re.MULTILINE)
_DATE_LABEL = re.compile(_LABEL.format(labels=r"posted(?: on)?|date posted|published|veröffentlicht(?: am)?|publié le|date de publication|publicado(?: el)?|fecha de publicación"), _I | re.MULTILINE)
_SKILLS_LABEL = re.compile(_LABEL.format(labels=r"skills|tech stack|stack|technologies|kenntnisse|compétences|habilidades|tecnologías"), _I | re.MULTILINE)
_APPLY_URL = re.compile(r"(?:apply|application|bewerb|postuler|candidat|aplica|postula)[^\n]{0,60}?(?P<url>https?://[^\s<>\"')]+)", _I)


def location_value(value: str) -> Optional[str]:
    """"Austin, TX, USA" → "Austin, TX"; "Berlin, Germany" → "Berlin"; "Remote" → None."""
    parts = [p.strip() for p in re.split(r"[,/(|]", value) if p.strip()]
    if not parts or re.search(r"remote|anywhere|télétravail|remoto|hybrid", parts[0], _I):
        return None
    city = parts[0].rstrip(")")
    region = region_code(parts[1]) if len(parts) > 1 else None
    return f"{city}, {region}" if region else city


#: How far into the text a header line ("Leeds · Part time", "Ottawa, ON") is looked for:
#: such lines stand under the title, not in the body.
_HEADER_LINES = 4
_HEADER_SEPARATOR = re.compile(r"\s[·|•]\s")
_CITY_REGION = re.compile(r"(?P<city>[A-ZÀ-ÖØ-Þ][\w.'’-]*(?: [A-ZÀ-ÖØ-Þ][\w.'’-]*){0,3}), (?P<region>[A-Z]{2})")
#: "in" alone is too loose ("experience in Python, ML"): the phrase must say where one works.
_IN_CITY_REGION = re.compile(
    r"\b(?:hiring|based|located|on-?site|in-office|office|offices|work|working)\s+in\s+" + _CITY_REGION.pattern + r"\b"
)


def _place(segment: str) -> bool:
    """A short capitalised name without digits ("Oakland, CA", "San Francisco", "Leeds")."""
    words = segment.split(",", 1)[0].split()
    return 0 < len(words) <= 4 and len(segment) <= 40 and words[0][0].isupper() and not any(c.isdigit() for c in segment)


def location_from_header(text: str) -> Optional[str]:
    """The location a posting writes without a label: in a header line of short parts
    ("Oakland, CA · Part-time", "Bristol | Hybrid | Full-time": the part that is not a work
    arrangement), as a line of its own ("Ottawa, ON"), or as "hiring in Atlanta, GA"."""
    lines = [line.strip() for line in text.splitlines()[:_HEADER_LINES + 1] if line.strip()][1:]  # the first is the title
    for line in lines[:_HEADER_LINES]:
        if len(line) > 120:
            continue
        parts = [p.strip() for p in _HEADER_SEPARATOR.split(line)]
        if len(parts) > 1 and any(describes_arrangement(p) for p in parts):
            place = next((p for p in parts if not describes_arrangement(p)), None)
            if place and _place(place):
                return location_value(place)
        if _CITY_REGION.fullmatch(line) and region_code(line.rsplit(", ", 1)[1]):
            return location_value(line)
    for line in lines:
        if m := _IN_CITY_REGION.search(line[:300]):
            if region_code(m["region"]):
                return f"{m['city']}, {m['region']}"
    return None


_HIRING = re.compile(r"^(?!(?:We|They|You|Who|It|This|That|Our|The (?:company|team|client))\b)(?P<company>[A-ZÀ-ÖØ-Þ][\w&.'’-]*(?: [A-ZÀ-ÖØ-Þ&][\w&.'’-]*){0,4}) (?:is|are) hiring\b")


def company_from_header(text: str) -> Optional[str]:
    """The company a header line names as the one hiring ("Brightline Media is hiring in …")."""
    for line in text.splitlines()[:_HEADER_LINES + 1]:
        if m := _HIRING.match(line.strip()[:200]):
            return m["company"]
    return None


#: Characters of a "Posted:" value handed to dateparser, whose cost grows with its input
#: (a 20 KB value took seconds); a written date is far shorter.
_DATE_CHARS = 40
#: The languages the rules read; guessing among all of dateparser's 200 cost a second
#: on a 40-character value.
_DATE_LANGUAGES = ("en", "de", "fr", "es", "pt")


def _date_value(value: str) -> Optional[str]:
    import dateparser

    value = value[:_DATE_CHARS]

    if re.search(r"\bago\b|\bvor\b|\bil y a\b|\bhace\b|today|yesterday|heute|gestern", value, _I):
        return None  # relative dates depend on when the page was read
    parsed = dateparser.parse(value.strip(), languages=list(_DATE_LANGUAGES), settings={"PREFER_DAY_OF_MONTH": "first", "REQUIRE_PARTS": ["day", "month", "year"]})
    return parsed.date().isoformat() if parsed else None


def labelled_fields(text: str) -> dict[str, Any]:
    """Fields written as "Label: value" lines, in the languages the rules know."""
    fields: dict[str, Any] = {}
    if m := _TITLE_LABEL.search(text):
        fields["title"] = m["value"].strip()
    if m := _COMPANY_LABEL.search(text):
        fields["company"] = m["value"].strip()
    elif company := company_from_header(text):
        fields["company"] = company
    if m := _LOCATION_LABEL.search(text):
        location = location_value(m["value"])
        if location:
            fields["location"] = location
    if "location" not in fields and (location := location_from_header(text)):
        fields["location"] = location
    if m := _DATE_LABEL.search(text):
        posted = _date_value(m["value"])
        if posted:
            fields["date_posted"] = posted
    if m := _SKILLS_LABEL.search(text):
        skills = [s.strip(" .") for s in re.split(r"[,;•|]", m["value"]) if s.strip(" .")]
        if skills:
            fields["skills"] = skills
    if m := _APPLY_URL.search(text):
        fields["apply_url"] = m["url"].rstrip(".,;")
    return fields


def fields_from_text(text: str) -> dict[str, Any]:
    """Every field the rules can read from the text; absent ones are left out."""
    fields = labelled_fields(text)
    fields.update(salary_from_text(text))
    workplace = workplace_from_text(text)
    if workplace:
        fields["workplace_type"] = workplace
        fields["remote"] = workplace == "remote"
    employment = employment_from_text(text)
    if employment:
        fields["employment_type"] = employment
    experience = experience_from_text(text)
    if experience is not None:
        fields["experience_years"] = experience
    return fields


# ------------------------------------------------------- what the text states (grounding)
def stated_amounts(text: str) -> set[float]:
    """Every amount the text writes, as the rules read it: the number as written and with
    its unit applied ("120k" gives 120 and 120000; "$120-150k" gives 120000 too), with or
    without a pay context."""
    amounts: set[float] = set()
    for line in text.splitlines():
        tokens = _money_tokens(line)
        amounts.update(t.written for t in tokens)
        for low, high in _ranges(line, tokens):
            amounts.update((low.value, high.value))
    return amounts


def stated_currencies(text: str) -> set[str]:
    """ISO codes of the currencies the text writes (by code, symbol or word); "$" stands
    for any dollar."""
    found: set[str] = set()
    for match in _MONEY.finditer(text):
        for token in (match["pre"], match["post"]):
            code = _currency(token)
            if code:
                found.add(code)
            if token and token.strip() == "$":
                found.update({"USD", "CAD", "AUD", "NZD", "SGD", "HKD", "MXN"})
        if (match["mult"] or "").lower().rstrip(".") in ("l", "lpa", "lakh", "lakhs", "lac", "lacs", "crore", "crores", "cr"):
            found.add("INR")
    return found


def stated_periods(text: str) -> set[str]:
    """The pay periods the text names ("per hour", "/yr", "annual", "LPA")."""
    found = {period for period, pattern in _PERIOD_BEFORE.items() if pattern.search(text)}
    for period, words in _PERIOD_WORDS.items():
        if re.search(rf"(?:/|\bper\s|\ba\s|\ban\s)\s*(?:{words})(?!\w)", text, _I):
            found.add(period)
    if re.search(r"\blpa\b|\bctc\b|\bsalary\b", text, _I):
        found.add("year")  # an annual figure by convention
    return found


def stated_workplaces(text: str) -> set[str]:
    """Every workplace type the text has a cue for."""
    cues = {"hybrid": _HYBRID, "remote": _REMOTE, "onsite": _ONSITE}
    found = {kind for kind, pattern in cues.items() if pattern.search(text)}
    if _NOT_REMOTE.search(text):
        found.add("onsite")
    return found


def stated_employment(text: str) -> set[str]:
    """Every employment type the text has a cue for."""
    return {kind for kind, pattern in _EMPLOYMENT if pattern.search(text)}


def stated_experience(text: str) -> set[int]:
    """Every number the text writes with a unit of years ("5+ years", "3-5 yrs", "2 Jahre"):
    the low end of a range, as :func:`experience_from_text` reads it. Whitespace is
    squashed first: the pattern's adjacent ``\\s*`` would be quadratic on a long run."""
    return {int(match["n"]) for match in _YEARS.finditer(" ".join(text.split()))}


def describes_arrangement(value: str) -> bool:
    """Whether a short value names how or when one works ("Hybrid", "Part-time", "Remote")
    rather than a place or an organisation."""
    return bool(_workplace_of(value) or parse_employment_type(value) or _SAYS_REMOTE.search(value))
