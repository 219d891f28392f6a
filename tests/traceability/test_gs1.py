"""Tests for traceability.gs1: GS1 keys, AI 17 dates and GS1 Digital Link.

Pure tests: no Django, no database. Expected values come from GS1's
published examples; every check digit asserted here is derived by hand in a
comment, so the expectations do not come from the code under test.
"""

from __future__ import annotations

import dataclasses
import datetime
import string
from collections.abc import Callable

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from traceability.gs1 import (
    DigitalLink,
    GS1Error,
    ParsedDigitalLink,
    build_digital_link,
    check_digit,
    format_expiry,
    normalize_gtin,
    parse_digital_link,
    parse_expiry,
    validate_cpv,
    validate_gln,
    validate_lot,
    validate_serial,
)

# database=None: no .hypothesis directory is written into the work tree.
# deadline=None: timing on a loaded CI machine must not fail a test.
PROPERTY = settings(database=None, deadline=None, max_examples=300)

TODAY = datetime.date(2025, 6, 15)
GS1_EXAMPLE_GTIN = "09506000134352"
CSET82 = string.ascii_letters + string.digits + "!\"%&'()*+,-./:;<=>?_"
UNRESERVED = string.ascii_letters + string.digits + "-._~"


def parse(uri: str) -> ParsedDigitalLink:
    return parse_digital_link(uri, today=TODAY)


# --- check digits and GTINs -------------------------------------------------


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # 0950600013435, weights 3,1,3,... from the right:
        # 5*3+3*1+4*3+3*1+1*3+0*1+0*3+0*1+6*3+0*1+5*3+9*1+0*3 = 78 -> 2
        ("0950600013435", "2"),
        # 400638133393: 3*3+9*1+3*3+3*1+3*3+1*1+8*3+3*1+6*3+0*1+0*3+4*1
        # = 89 -> 1
        ("400638133393", "1"),
        # 03600029145: 5*3+4*1+1*3+9*1+2*3+0+0+0+6*3+3*1+0*3 = 58 -> 2
        ("03600029145", "2"),
        # 9638507: 7*3+0*1+5*3+8*1+3*3+6*1+9*3 = 86 -> 4
        ("9638507", "4"),
        # 952012345678: 8*3+7*1+6*3+5*1+4*3+3*1+2*3+1*1+0*3+2*1+5*3+9*1
        # = 102 -> 8
        ("952012345678", "8"),
        # 0000000000000: sum 0 is already a multiple of 10 -> 0
        ("0000000000000", "0"),
    ],
)
def test_check_digit_of_published_examples(body: str, expected: str) -> None:
    assert check_digit(body) == expected


@pytest.mark.parametrize("digits", ["", "12a4", "١٢٣", "12 3", "²"])
def test_check_digit_rejects_non_digits(digits: str) -> None:
    with pytest.raises(GS1Error):
        check_digit(digits)


@pytest.mark.parametrize(
    ("given_gtin", "expected"),
    [
        ("09506000134352", "09506000134352"),  # GS1's standard example GTIN
        ("9506000134352", "09506000134352"),  # the same GTIN written as 13
        ("4006381333931", "04006381333931"),  # EAN-13
        ("036000291452", "00036000291452"),  # UPC-A / GTIN-12
        ("96385074", "00000096385074"),  # EAN-8
        ("  4006381333931\n", "04006381333931"),  # pasted with whitespace
    ],
)
def test_normalize_gtin_pads_to_14_digits(given_gtin: str, expected: str) -> None:
    assert normalize_gtin(given_gtin) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("09506000134353", "check digit is 3, expected 2"),
        ("4006381333932", "check digit is 2, expected 1"),
        ("036000291453", "check digit is 3, expected 2"),
        ("96385075", "check digit is 5, expected 4"),
        ("", "empty"),
        ("   ", "empty"),
        ("1234567", "has 7 digits"),
        ("123456789", "has 9 digits"),
        ("12345678901", "has 11 digits"),
        # A valid check digit does not make a 10-digit number a GTIN.
        # 123456789: 9*3+8*1+7*3+6*1+5*3+4*1+3*3+2*1+1*3 = 95 -> 5
        ("1234567895", "has 10 digits"),
        ("095060001343520", "has 15 digits"),
        ("0950600013435X", "'X'"),
        ("09506000 134352", "position 9"),
        ("0950600013435²", "position 14"),  # str.isdigit() would accept it
        ("٠٩٥٠٦٠٠٠١٣٤٣٥٢", "position 1"),  # Arabic-Indic digits
        ("+9506000134352", r"'\+'"),
    ],
)
def test_normalize_gtin_rejects(value: str, message: str) -> None:
    with pytest.raises(GS1Error, match=message):
        normalize_gtin(value)


def test_gs1_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="has 1 digits"):
        normalize_gtin("1")


def test_validate_gln_accepts_and_strips() -> None:
    # 9520123456788: check digit derived in test_check_digit_... (sum 102).
    assert validate_gln("9520123456788") == "9520123456788"
    assert validate_gln(" 9520123456788 ") == "9520123456788"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("9520123456789", "check digit is 9, expected 8"),
        ("952012345678", "has 12 digits"),
        ("09520123456788", "has 14 digits"),
        ("952O123456788", "'O'"),
        ("", "empty"),
    ],
)
def test_validate_gln_rejects(value: str, message: str) -> None:
    with pytest.raises(GS1Error, match=message):
        validate_gln(value)


# --- CSET 82 fields: lot, serial, consumer product variant ------------------

CSET82_VALIDATORS: list[Callable[[str], str]] = [
    validate_lot,
    validate_serial,
    validate_cpv,
]


@pytest.mark.parametrize("validate", CSET82_VALIDATORS)
@pytest.mark.parametrize("value", ["A", "ABC123", "L-2025/07", "x" * 20, CSET82[:20]])
def test_cset82_fields_return_valid_values_unchanged(validate: Callable[[str], str], value: str) -> None:
    assert validate(value) == value


@pytest.mark.parametrize("validate", CSET82_VALIDATORS)
def test_cset82_is_exactly_the_82_gs1_characters(
    validate: Callable[[str], str],
) -> None:
    # Every ASCII character is accepted exactly when it is in Figure 7.11-1.
    accepted: set[str] = set()
    for code in range(128):
        try:
            validate(chr(code))
        except GS1Error:
            continue
        accepted.add(chr(code))
    assert accepted == set(CSET82)
    assert len(accepted) == 82


@pytest.mark.parametrize("validate", CSET82_VALIDATORS)
@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "empty"),
        ("A" * 21, "21 characters long; the maximum is 20"),
        ("ABé", r"'é' \(U\+00E9\) at position 3"),
        ("AB C", "' ' .* at position 3"),
        ("#1", "'#' .* at position 1"),
        ("A~", "'~' .* at position 2"),  # unreserved in URIs, not in CSET 82
        ("A$", "'\\$' .* at position 2"),
        ("A@", "'@' .* at position 2"),
        ("A\n", "position 2"),
        ("LOT€", "position 4"),
    ],
)
def test_cset82_fields_reject(validate: Callable[[str], str], value: str, message: str) -> None:
    with pytest.raises(GS1Error, match=message):
        validate(value)


def test_cset82_error_names_the_field() -> None:
    with pytest.raises(GS1Error, match=r"lot \(AI 10\)"):
        validate_lot("")
    with pytest.raises(GS1Error, match=r"serial \(AI 21\)"):
        validate_serial("")
    with pytest.raises(GS1Error, match=r"AI 22"):
        validate_cpv("")


# --- AI 17 expiry dates -----------------------------------------------------


@pytest.mark.parametrize(
    ("yymmdd", "expected"),
    [
        ("250200", datetime.date(2025, 2, 28)),  # DD=00: last day, 2025
        ("240200", datetime.date(2024, 2, 29)),  # DD=00 in a leap year
        ("251200", datetime.date(2025, 12, 31)),
        ("250400", datetime.date(2025, 4, 30)),
        ("251231", datetime.date(2025, 12, 31)),
        ("240229", datetime.date(2024, 2, 29)),
        ("300101", datetime.date(2030, 1, 1)),
        ("201225", datetime.date(2020, 12, 25)),
    ],
)
def test_parse_expiry(yymmdd: str, expected: datetime.date) -> None:
    assert parse_expiry(yymmdd, today=TODAY) == expected


@pytest.mark.parametrize(
    ("today", "yymmdd", "expected_year"),
    [
        # today 2025 (YY 25): YY-25 in 51..99 -> 19xx, else 20xx.
        (datetime.date(2025, 6, 15), "750101", 2075),  # difference 50
        (datetime.date(2025, 6, 15), "760101", 1976),  # difference 51
        (datetime.date(2025, 6, 15), "990101", 1999),  # difference 74
        (datetime.date(2025, 6, 15), "000101", 2000),  # difference -25
        (datetime.date(2025, 6, 15), "240101", 2024),
        # today 2075 (YY 75): YY-75 in -99..-50 -> 21xx.
        (datetime.date(2075, 1, 1), "250101", 2125),  # difference -50
        (datetime.date(2075, 1, 1), "260101", 2026),  # difference -49
        (datetime.date(2075, 1, 1), "000101", 2100),  # difference -75
        (datetime.date(2075, 1, 1), "990101", 2099),  # difference 24
        # today 2099 (YY 99).
        (datetime.date(2099, 12, 31), "000101", 2100),  # difference -99
        (datetime.date(2099, 12, 31), "490101", 2149),  # difference -50
        (datetime.date(2099, 12, 31), "500101", 2050),  # difference -49
        # today 2000 (YY 00).
        (datetime.date(2000, 1, 1), "990101", 1999),  # difference 99
        (datetime.date(2000, 1, 1), "510101", 1951),  # difference 51
        (datetime.date(2000, 1, 1), "500101", 2050),  # difference 50
    ],
)
def test_parse_expiry_century_window(today: datetime.date, yymmdd: str, expected_year: int) -> None:
    assert parse_expiry(yymmdd, today=today).year == expected_year


def test_leap_day_depends_on_resolved_century() -> None:
    # 2000 is a leap year, 2100 is not.
    assert parse_expiry("000229", today=TODAY) == datetime.date(2000, 2, 29)
    in_2099 = datetime.date(2099, 6, 1)
    assert parse_expiry("000200", today=in_2099) == datetime.date(2100, 2, 28)
    with pytest.raises(GS1Error, match="2100-02 has only 28 days"):
        parse_expiry("000229", today=in_2099)


@pytest.mark.parametrize(
    ("yymmdd", "message"),
    [
        ("251332", "month 13"),
        ("250001", "month 00"),
        ("250230", "day 30, but 2025-02 has only 28 days"),
        ("250229", "day 29"),
        ("250431", "day 31, but 2025-04 has only 30 days"),
        ("251232", "day 32"),
        ("2512", "6 digits"),
        ("2512311", "6 digits"),
        ("", "6 digits"),
        ("25-1-1", "6 digits"),
        ("25123A", "6 digits"),
        ("251231\n", "6 digits"),
        ("\uff12\uff15\uff11\uff12\uff13\uff11", "6 digits"),  # full-width 251231
    ],
)
def test_parse_expiry_rejects(yymmdd: str, message: str) -> None:
    with pytest.raises(GS1Error, match=message):
        parse_expiry(yymmdd, today=TODAY)


@pytest.mark.parametrize(
    ("today", "yymmdd"),
    [
        (datetime.date(9999, 1, 1), "000101"),  # next century is year 10000
        (datetime.date(1, 1, 1), "990101"),  # previous century is year -1
    ],
)
def test_parse_expiry_outside_calendar_is_a_gs1_error(today: datetime.date, yymmdd: str) -> None:
    with pytest.raises(GS1Error):
        parse_expiry(yymmdd, today=today)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (datetime.date(2025, 2, 28), "250228"),
        (datetime.date(2024, 2, 29), "240229"),
        (datetime.date(2030, 12, 31), "301231"),
        (datetime.date(1999, 1, 5), "990105"),
        (datetime.date(2100, 3, 1), "000301"),
    ],
)
def test_format_expiry(value: datetime.date, expected: str) -> None:
    assert format_expiry(value) == expected


# The dates that the GenSpecs 7.12 window around TODAY (2025) resolves to.
WINDOW_DATES = st.dates(datetime.date(1976, 1, 1), datetime.date(2075, 12, 31))


@PROPERTY
@given(WINDOW_DATES)
def test_format_then_parse_expiry_round_trips(value: datetime.date) -> None:
    text = format_expiry(value)
    assert not text.endswith("00")
    assert parse_expiry(text, today=TODAY) == value


# --- building Digital Links -------------------------------------------------


def test_build_gs1_standard_example() -> None:
    uri = build_digital_link(
        "https://id.gs1.org",
        gtin=GS1_EXAMPLE_GTIN,
        lot="ABC",
        serial="123456",
        expiry=datetime.date(2020, 12, 25),
    )
    assert uri == "https://id.gs1.org/01/09506000134352/10/ABC/21/123456?17=201225"


def test_build_normalizes_gtin_and_orders_qualifiers() -> None:
    uri = build_digital_link(
        "https://coldtrace.example/dl/",
        gtin="96385074",
        serial="S1",
        lot="L1",
        cpv="2A",
    )
    assert uri == "https://coldtrace.example/dl/01/00000096385074/22/2A/10/L1/21/S1"


def test_uri_strips_all_trailing_slashes_of_base() -> None:
    link = DigitalLink(gtin=GS1_EXAMPLE_GTIN)
    assert link.uri("https://id.gs1.org//") == "https://id.gs1.org/01/09506000134352"
    assert link.uri("") == "/01/09506000134352"


def test_path_has_no_query_and_uri_adds_expiry() -> None:
    link = DigitalLink(gtin=GS1_EXAMPLE_GTIN, lot="A1", expiry=datetime.date(2026, 1, 31))
    assert link.path() == "/01/09506000134352/10/A1"
    assert link.uri("https://x.example") == ("https://x.example/01/09506000134352/10/A1?17=260131")


def test_special_characters_in_lot_are_percent_encoded() -> None:
    lot = 'A/B%C&D+E"F'
    uri = build_digital_link("https://id.gs1.org", gtin=GS1_EXAMPLE_GTIN, lot=lot)
    assert uri == "https://id.gs1.org/01/09506000134352/10/A%2FB%25C%26D%2BE%22F"
    assert parse(uri).link.lot == lot


@pytest.mark.parametrize("char", list(CSET82))
def test_every_cset82_character_is_encoded_per_rfc3986(char: str) -> None:
    link = DigitalLink(gtin=GS1_EXAMPLE_GTIN, serial=f"S{char}")
    expected = char if char in UNRESERVED else f"%{ord(char):02X}"
    assert link.path() == f"/01/09506000134352/21/S{expected}"


@pytest.mark.parametrize("lot", ["ABé", "A B", "A#B", "", "L" * 21])
def test_build_rejects_lot_outside_cset82(lot: str) -> None:
    with pytest.raises(GS1Error):
        build_digital_link("https://id.gs1.org", gtin=GS1_EXAMPLE_GTIN, lot=lot)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"gtin": "09506000134353"},
        {"gtin": GS1_EXAMPLE_GTIN, "serial": "S N"},
        {"gtin": GS1_EXAMPLE_GTIN, "cpv": "C" * 21},
        {"gtin": GS1_EXAMPLE_GTIN, "expiry": datetime.datetime(2025, 1, 1, 12)},
    ],
)
def test_build_rejects_invalid_fields(kwargs: dict[str, object]) -> None:
    with pytest.raises(GS1Error):
        build_digital_link("https://id.gs1.org", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("base_url", ["https://x.example?a=1", "https://x.example#top", "https://x .example"])
def test_build_rejects_base_url_that_would_corrupt_the_uri(base_url: str) -> None:
    with pytest.raises(GS1Error, match="base_url"):
        build_digital_link(base_url, gtin=GS1_EXAMPLE_GTIN)


@pytest.mark.parametrize("gtin", ["9506000134352", "096385074", "09506000134353"])
def test_digital_link_requires_normalized_gtin(gtin: str) -> None:
    with pytest.raises(GS1Error):
        DigitalLink(gtin=gtin)


def test_digital_link_and_parsed_link_are_frozen() -> None:
    link = DigitalLink(gtin=GS1_EXAMPLE_GTIN)
    with pytest.raises(dataclasses.FrozenInstanceError):
        link.lot = "X"  # type: ignore[misc]
    parsed = parse("/01/09506000134352")
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.gtin_as_given = "X"  # type: ignore[misc]


# --- parsing Digital Links --------------------------------------------------


def test_parse_gs1_standard_example() -> None:
    parsed = parse("https://id.gs1.org/01/09506000134352/10/ABC/21/123456?17=201225")
    assert parsed.link == DigitalLink(
        gtin="09506000134352",
        lot="ABC",
        serial="123456",
        expiry=datetime.date(2020, 12, 25),
    )
    assert parsed.gtin_as_given == "09506000134352"
    assert parsed.extra_query == {}


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("9506000134352", "09506000134352"),
        ("4006381333931", "04006381333931"),
        ("036000291452", "00036000291452"),
        ("96385074", "00000096385074"),
        ("%30%39506000134352", "09506000134352"),
    ],
)
def test_parse_keeps_gtin_as_given_for_redirects(written: str, canonical: str) -> None:
    parsed = parse(f"https://id.gs1.org/01/{written}/21/X1")
    assert parsed.gtin_as_given == written
    assert parsed.link.gtin == canonical
    assert parsed.link.path() == f"/01/{canonical}/21/X1"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        # Any path prefix before /01/, any scheme and host, or a bare path.
        (
            "https://example.com/products/pharma/01/09506000134352/21/X",
            DigitalLink(gtin=GS1_EXAMPLE_GTIN, serial="X"),
        ),
        ("http://localhost:8000/01/09506000134352", DigitalLink(GS1_EXAMPLE_GTIN)),
        ("/01/09506000134352", DigitalLink(GS1_EXAMPLE_GTIN)),
        ("01/09506000134352", DigitalLink(GS1_EXAMPLE_GTIN)),
        (" https://id.gs1.org/01/09506000134352\r\n", DigitalLink(GS1_EXAMPLE_GTIN)),
        # The fragment is not part of the identifier.
        ("/01/09506000134352/10/L1#top", DigitalLink(GS1_EXAMPLE_GTIN, lot="L1")),
        # Every qualifier, each optional, in the order 22, 10, 21.
        (
            "/01/09506000134352/22/2A/10/L1/21/S1",
            DigitalLink(GS1_EXAMPLE_GTIN, cpv="2A", lot="L1", serial="S1"),
        ),
        (
            "/01/09506000134352/22/2A/21/S1",
            DigitalLink(GS1_EXAMPLE_GTIN, cpv="2A", serial="S1"),
        ),
        # Values that look like AIs stay values: pairs are read from the right.
        ("/01/09506000134352/10/01", DigitalLink(GS1_EXAMPLE_GTIN, lot="01")),
        ("/01/09506000134352/10/21", DigitalLink(GS1_EXAMPLE_GTIN, lot="21")),
        (
            "/01/09506000134352/22/10/21/01",
            DigitalLink(GS1_EXAMPLE_GTIN, cpv="10", serial="01"),
        ),
        # A prefix may contain "01" outside the AI/value pair positions.
        ("/archive/01/01/09506000134352", DigitalLink(GS1_EXAMPLE_GTIN)),
        # Lower-case percent-encoding and literal sub-delimiters decode.
        ("/01/09506000134352/10/A%2fB", DigitalLink(GS1_EXAMPLE_GTIN, lot="A/B")),
        ("/01/09506000134352/10/A+B!", DigitalLink(GS1_EXAMPLE_GTIN, lot="A+B!")),
        # DD=00 in the query is the last day of the month.
        (
            "/01/09506000134352?17=240200",
            DigitalLink(GS1_EXAMPLE_GTIN, expiry=datetime.date(2024, 2, 29)),
        ),
        # Other data attributes (here net weight, 3103) are ignored.
        (
            "/01/09506000134352?3103=000189&17=251231&11=250101",
            DigitalLink(GS1_EXAMPLE_GTIN, expiry=datetime.date(2025, 12, 31)),
        ),
    ],
)
def test_parse_accepts(uri: str, expected: DigitalLink) -> None:
    assert parse(uri).link == expected


def test_parse_keeps_non_ai_query_parameters() -> None:
    parsed = parse("https://id.gs1.org/01/09506000134352?linkType=gs1%3Apip&17=251231&utm_source=label&flag&note=a+b")
    assert parsed.extra_query == {
        "linkType": "gs1:pip",
        "utm_source": "label",
        "flag": "",
        "note": "a b",
    }
    assert parsed.link.expiry == datetime.date(2025, 12, 31)


def test_parse_resolves_expiry_century_from_today() -> None:
    uri = "/01/09506000134352?17=760101"
    assert parse_digital_link(uri, today=datetime.date(2025, 1, 1)).link.expiry == (datetime.date(1976, 1, 1))
    assert parse_digital_link(uri, today=datetime.date(2030, 1, 1)).link.expiry == (datetime.date(2076, 1, 1))


G = "/01/09506000134352"


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        # Missing primary key.
        ("", "no /01/"),
        ("https://id.gs1.org", "no /01/"),
        ("https://id.gs1.org/10/ABC", "no /01/"),
        ("https://id.gs1.org/gtin/09506000134352", "no /01/"),
        ("/01", "no /01/"),
        ("/10/01", "no /01/"),
        # Odd number of segments after /01/ (an AI without a value).
        (G + "/10", "odd number of segments"),
        (G + "/10/ABC/21", "odd number of segments"),
        # Empty values and empty segments.
        ("/01/", "GTIN after /01/ is empty"),
        ("/01//10/ABC", "GTIN after /01/ is empty"),
        (G + "/", "empty segment"),
        (G + "/10/", r"AI 10 \(lot\) has an empty value"),
        (G + "/21/", r"AI 21 \(serial\) has an empty value"),
        (G + "/22//10/L", r"AI 22 \(consumer product variant\) has an empty value"),
        (G + "//", "empty segment"),
        # Key qualifiers out of order or repeated.
        (G + "/21/123/10/ABC", "10 comes after 21"),
        (G + "/10/ABC/22/X", "22 comes after 10"),
        (G + "/21/1/22/X", "22 comes after 21"),
        (G + "/10/A/10/B", "10 appears twice"),
        (G + "/21/A/21/B", "21 appears twice"),
        (G + "/22/A/22/B", "22 appears twice"),
        # Unknown AIs and data attributes in the path.
        (G + "/17/251231", "AI 17 is not allowed in the path"),
        (G + "/235/X", "AI 235 is not allowed in the path"),
        (G + "/99/X", "AI 99 is not allowed in the path"),
        (G + "/lot/X", "unexpected path segment 'lot'"),
        (G + "/10/L/foo/bar", "unexpected path segment 'foo'"),
        # Two primary keys.
        (G + "/10/A/01/04006381333931", "more than once"),
        ("/01/04006381333931" + G, "more than once"),
        # Invalid GTIN after percent-decoding.
        ("/01/09506000134353", "check digit is 3, expected 2"),
        ("/01/123", "has 3 digits"),
        ("/01/0950600013435X", "'X'"),
        ("/01/%200950600013435", "' '"),  # no stripping inside a URI
        ("/01/0950600013435%32%", "not followed by two hex digits"),
        # Invalid lot, serial or variant after percent-decoding.
        (G + "/10/AB%C3%A9", r"'é' \(U\+00E9\) at position 3"),
        (G + "/10/A%20B", "' ' .* at position 2"),
        (G + "/10/A%23B", "'#' .* at position 2"),
        (G + "/10/ABé", "'é'"),
        (G + "/10/" + "A" * 21, "21 characters long"),
        (G + "/10/" + "%41" * 21, "21 characters long"),
        (G + "/21/S%7E1", "'~'"),
        (G + "/21/S%00", r"U\+0000"),
        (G + "/22/%24", "'\\$'"),
        (G + "/22/" + "C" * 21, "21 characters long"),
        # Malformed percent-encoding.
        (G + "/10/%ZZ", "not followed by two hex digits"),
        (G + "/10/AB%", "not followed by two hex digits"),
        (G + "/10/%4", "not followed by two hex digits"),
        (G + "/10/%FF", "not valid UTF-8"),
        # AI 17 in the query that is not a valid YYMMDD.
        (G + "?17=251332", "month 13"),
        (G + "?17=250230", "only 28 days"),
        (G + "?17=2512", "6 digits"),
        (G + "?17=", "6 digits"),
        (G + "?17", "6 digits"),
        (G + "?17=25123A", "6 digits"),
        (G + "?17=251231+", "6 digits"),
        (G + "?17=%ZZ", "not followed by two hex digits"),
        # Primary key or key qualifiers in the query string.
        (G + "?01=09506000134352", r"GTIN \(AI 01\) must be in the path"),
        (G + "?10=ABC", r"AI 10 \(lot\) is a key qualifier"),
        (G + "?21=123", r"AI 21 \(serial\) is a key qualifier"),
        (G + "?22=2A", r"AI 22 \(consumer product variant\) is a key qualifier"),
        (G + "/10/ABC?10=ABC", r"AI 10 \(lot\) is a key qualifier"),
        # The same AI twice in the query, also one that is otherwise ignored.
        (G + "?17=251231&17=251231", "AI 17 appears more than once"),
        (G + "?3103=000189&3103=000189", "AI 3103 appears more than once"),
        (G + "?17=251231&%31%37=251231", "AI 17 appears more than once"),
        # All-digit keys that cannot be AIs.
        (G + "?5=1", "not a GS1 AI"),
        (G + "?12345=1", "not a GS1 AI"),
    ],
)
def test_parse_rejects(uri: str, message: str) -> None:
    with pytest.raises(GS1Error, match=message):
        parse(uri)


# --- properties -------------------------------------------------------------


@st.composite
def gtins(draw: st.DrawFn) -> str:
    """A valid GTIN-8, -12, -13 or -14, check digit computed."""
    length = draw(st.sampled_from([8, 12, 13, 14]))
    body = draw(st.text(string.digits, min_size=length - 1, max_size=length - 1))
    return body + check_digit(body)


CSET82_VALUES = st.text(CSET82, min_size=1, max_size=20)
BASE_URLS = st.sampled_from(
    [
        "https://id.gs1.org",
        "https://coldtrace.example/dl/",
        "http://localhost:8000/archive/01",  # a prefix may contain "01"
        "",
    ]
)


@PROPERTY
@given(st.text(string.digits, min_size=13, max_size=13), st.data())
def test_valid_gtin_normalizes_and_any_changed_digit_is_rejected(body: str, data: st.DataObject) -> None:
    gtin = body + check_digit(body)
    assert normalize_gtin(gtin) == gtin
    position = data.draw(st.integers(0, len(gtin) - 1), label="position")
    replacement = data.draw(st.sampled_from(string.digits), label="digit")
    assume(replacement != gtin[position])
    changed = gtin[:position] + replacement + gtin[position + 1 :]
    # Weights 1 and 3 are both prime to 10, so one changed digit always
    # changes the weighted sum modulo 10.
    with pytest.raises(GS1Error, match="check digit"):
        normalize_gtin(changed)


@PROPERTY
@given(gtins())
def test_every_gtin_length_normalizes_to_its_zero_padded_form(gtin: str) -> None:
    normalized = normalize_gtin(gtin)
    assert normalized == gtin.rjust(14, "0")
    assert normalize_gtin(normalized) == normalized


@PROPERTY
@given(
    # Body lengths whose length plus the check digit is not 8, 12, 13 or 14.
    st.integers(1, 29)
    .filter(lambda length: length + 1 not in (8, 12, 13, 14))
    .flatmap(lambda length: st.text(string.digits, min_size=length, max_size=length))
)
def test_other_lengths_are_rejected_even_with_a_valid_check_digit(body: str) -> None:
    with pytest.raises(GS1Error, match=f"has {len(body) + 1} digits"):
        normalize_gtin(body + check_digit(body))


@PROPERTY
@given(
    base_url=BASE_URLS,
    gtin=gtins(),
    cpv=st.none() | CSET82_VALUES,
    lot=st.none() | CSET82_VALUES,
    serial=st.none() | CSET82_VALUES,
    expiry=st.none() | WINDOW_DATES,
)
def test_build_then_parse_round_trips(
    base_url: str,
    gtin: str,
    cpv: str | None,
    lot: str | None,
    serial: str | None,
    expiry: datetime.date | None,
) -> None:
    uri = build_digital_link(base_url, gtin=gtin, cpv=cpv, lot=lot, serial=serial, expiry=expiry)
    parsed = parse(uri)
    expected = DigitalLink(gtin=gtin.zfill(14), cpv=cpv, lot=lot, serial=serial, expiry=expiry)
    assert parsed.link == expected
    assert parsed.gtin_as_given == gtin.zfill(14)
    assert parsed.extra_query == {}
    assert parsed.link.uri(base_url) == uri
    # Only unreserved characters and %XX escapes appear in the path.
    path = expected.path()
    assert all(c in UNRESERVED + "/%" for c in path)


@PROPERTY
@given(st.text())
def test_parse_raises_only_gs1_error_on_arbitrary_text(text: str) -> None:
    try:
        result = parse(text)
    except GS1Error:
        return
    assert isinstance(result, ParsedDigitalLink)


URI_ALPHABET = string.digits + "/?&=#%+.-_~:ABCFabcf é\x00"


@PROPERTY
@given(st.text(URI_ALPHABET, max_size=60).map(lambda tail: "/01/" + tail))
def test_parse_raises_only_gs1_error_on_uri_like_text(text: str) -> None:
    try:
        result = parse(text)
    except GS1Error:
        return
    assert isinstance(result, ParsedDigitalLink)


@st.composite
def mutated_uris(draw: st.DrawFn) -> str:
    """A valid Digital Link URI with a few random character edits."""
    uri = build_digital_link(
        draw(BASE_URLS),
        gtin=draw(gtins()),
        cpv=draw(st.none() | CSET82_VALUES),
        lot=draw(st.none() | CSET82_VALUES),
        serial=draw(st.none() | CSET82_VALUES),
        expiry=draw(st.none() | WINDOW_DATES),
    )
    for _ in range(draw(st.integers(1, 4))):
        position = draw(st.integers(0, len(uri)))
        edit = draw(st.sampled_from(["insert", "delete", "replace"]))
        char = draw(st.sampled_from(URI_ALPHABET) | st.characters())
        if edit == "insert":
            uri = uri[:position] + char + uri[position:]
        elif edit == "delete":
            uri = uri[:position] + uri[position + 1 :]
        else:
            uri = uri[:position] + char + uri[position + 1 :]
    return uri


@PROPERTY
@given(mutated_uris())
def test_parse_raises_only_gs1_error_on_mutated_uris(uri: str) -> None:
    try:
        result = parse(uri)
    except GS1Error:
        return
    # Whatever survives the mutation must still be a valid, canonical link.
    assert result.link == parse(result.link.uri("https://id.gs1.org")).link
