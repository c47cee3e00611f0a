"""Stage-3 rules: pay in the formats people write, workplace and employment cues."""

import pytest

from deployments.extraction.rules import (
    employment_from_text,
    company_from_header,
    experience_from_text,
    location_from_header,
    location_value,
    parse_period_word,
    salary_from_text,
    workplace_from_text,
)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Salary: $120k–$150k", (120000, 150000, "USD", "year")),
        ("Pay: $45–$55/hr", (45, 55, "USD", "hour")),
        ("CTC: ₹12-18 LPA", (1200000, 1800000, "INR", "year")),
        ("Gehalt: €45.000 – €55.000 brutto/Jahr", (45000, 55000, "EUR", "year")),
        ("Pay: £20 per hour", (20, 20, "GBP", "hour")),
        ("Salary up to $90k", (None, 90000, "USD", "year")),
        ("Salary from £40,000", (40000, None, "GBP", "year")),
        ("Compensation: CAD 95,000–110,000 annually", (95000, 110000, "CAD", "year")),
        ("Salaire : 45 000 € à 55 000 € par an", (45000, 55000, "EUR", "year")),
        ("Salario: 30.000 - 36.000 € brutos al año", (30000, 36000, "EUR", "year")),
        ("Lohn: CHF 110'000 – 130'000 pro Jahr", (110000, 130000, "CHF", "year")),
        ("Salary: 8 - 12 lakhs per annum", (800000, 1200000, "INR", "year")),
        ("Salary: $120–150k", (120000, 150000, "USD", "year")),
        ("Monthly salary: SGD 4,200 - 5,000", (4200, 5000, "SGD", "month")),
        ("Day rate: £700 - £850 (outside IR35)", (700, 850, "GBP", "day")),
        ("Salário: R$ 4.500 por mês", (4500, 4500, "BRL", "month")),
        ("Pay: AUD 2,400 per week", (2400, 2400, "AUD", "week")),
        ("Base salary $100,000 - $120,000 + bonus", (100000, 120000, "USD", "year")),
        ("$95,000 CAD per year salary", (95000, 95000, "CAD", "year")),
        ("Salary: £40,000+ DOE", (40000, None, "GBP", "year")),
    ],
)
def test_salary_formats(text, expected):
    low, high, currency, period = expected
    got = salary_from_text(text)
    assert (got.get("salary_min"), got.get("salary_max"), got.get("salary_currency"), got.get("salary_period")) == (low, high, currency, period)


@pytest.mark.parametrize(
    "text",
    [
        "We raised $20M in our Series B.",
        "Learning budget: $2,000 per year.",
        "Competitive salary and meaningful equity. $2,000 annual learning budget.",
        "Engineers on call get a $500 weekly on-call stipend.",
        "Relocation support up to $15,000 for candidates moving to New York.",
        "Salary: competitive, discussed at interview.",
        "Part-time, 20 hours per week.",
        "401(k) with a 4% match.",
        "We also pay a $10k signing bonus.",
    ],
)
def test_money_that_is_not_pay_is_not_a_salary(text):
    assert salary_from_text(text) == {}


def test_the_salary_is_taken_before_a_bonus_on_the_same_line():
    got = salary_from_text("Salary from £40,000 plus a £3,000 signing bonus.")
    assert got == {"salary_currency": "GBP", "salary_min": 40000, "salary_period": "year"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Hybrid, 2 days a week in the office.", "hybrid"),
        ("Hybrides Arbeiten möglich.", "hybrid"),
        ("Modalidad híbrida (3 días en oficina).", "hybrid"),
        ("This is a full-time, fully remote position.", "remote"),
        ("Location: Remote (US)", "remote"),
        ("Mission de 6 mois, 100 % télétravail.", "remote"),
        ("Trabajo 100% remoto desde España.", "remote"),
        ("This role is on-site at our care home.", "onsite"),
        ("Job type: Full-time, work from office.", "onsite"),
        ("Arbeit vor Ort in unserer Kanzlei.", "onsite"),
        ("Work mode: Hybrid (3 days from office)", "hybrid"),
        ("This is a hybrid role. We do not offer fully remote arrangements.", "hybrid"),
        ("Great team, great coffee.", None),
    ],
)
def test_workplace_cues(text, expected):
    assert workplace_from_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Full-time, permanent.", "full_time"),
        ("Vollzeit, unbefristet.", "full_time"),
        ("Teilzeit (25 Std./Woche)", "part_time"),
        ("Type: Contract, 6 months", "contract"),
        ("13-week contract assignment", "contract"),
        ("Mission freelance de 6 mois", "contract"),
        ("Type de contrat : CDD de 12 mois.", "temporary"),
        ("Fixed-term contract (12 months).", "temporary"),
        ("Summer internship, 10 weeks.", "internship"),
        ("Prácticas en Marketing Digital", "internship"),
        ("Employment type: Full Time, Permanent", "full_time"),
        ("We sign an employment contract with every hire.", None),
        ("Smart contract auditors welcome.", None),
    ],
)
def test_employment_cues(text, expected):
    assert employment_from_text(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("5+ years of experience with Go.", 5),
        ("Experience: 5 to 8 years of experience in Spring Boot.", 5),
        ("Mindestens 2 Jahre Berufserfahrung.", 2),
        ("5 ans d'expérience minimum.", 5),
        ("Experiencia mínima de 3 años.", 3),
        ("We were founded 10 years ago.", None),
    ],
)
def test_experience_years(text, expected):
    assert experience_from_text(text) == expected


def test_locations_keep_city_and_region_code_only():
    assert location_value("Austin, TX, USA") == "Austin, TX"
    assert location_value("Berlin, Germany") == "Berlin"
    assert location_value("Remote (US)") is None


def test_period_words_and_schema_org_unit_text():
    assert parse_period_word("HOUR") == "hour"
    assert parse_period_word("year") == "year"
    assert parse_period_word("/Monat") == "month"
    assert parse_period_word("an hour") == "hour"
    assert parse_period_word("furlong") is None


@pytest.mark.parametrize("text, expected", [
    ("Line Cook\nPortland, OR · Full-time\nPay: $21/hr", "Portland, OR"),
    ("Paralegal\nManchester | Hybrid | Contract", "Manchester"),
    ("Warehouse Lead\nRotterdam • Temporary", "Rotterdam"),
    ("Data Analyst\nBoise, ID\nWe pay well.", "Boise, ID"),
    ("Designer\nNorthwind Labs is hiring in Salt Lake City, UT.", "Salt Lake City, UT"),
    ("Nurse\nFull-time, on-site in Des Moines, IA.", "Des Moines, IA"),
    # Not a location: the first line is the title, a part that is an arrangement, a
    # skill list, a place too far down the page.
    ("Oakland, CA · Part-time\nBarista", None),
    ("Engineer\nRemote · Full-time", None),
    ("Engineer\nStrong experience in Python, ML and SQL.", None),
    ("Engineer\n" + "Text.\n" * 10 + "Austin, TX · Full-time", None),
    ("Engineer\nStack: Python · Rust · Go", None),
])
def test_locations_written_without_a_label_in_the_header(text, expected):
    assert location_from_header(text) == expected


def test_the_company_a_header_names_as_hiring():
    assert company_from_header("Designer\nNorthwind Labs is hiring in Salt Lake City, UT.") == "Northwind Labs"
    assert company_from_header("Designer\nWe are hiring a designer.") is None
    assert company_from_header("Designer\nOur client is hiring now.") is None
