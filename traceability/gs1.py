"""GS1 identifiers and GS1 Digital Link URIs for ColdTrace.

Pure functions over the GS1 data that a pharmaceutical pack carries: the
GTIN, batch/lot, serial number, expiry date and consumer product variant, and
the GS1 Digital Link URI that encodes them in a QR code.

References:

* GS1 General Specifications (GenSpecs): section 3 (Application Identifier
  definitions: 01, 10, 17, 21, 22, 414), section 7.9.1 (standard check digit
  calculation), section 7.11 (Figure 7.11-1, GS1 AI encodable character set
  82) and section 7.12 (determination of century in dates).
* GS1 Digital Link Standard: URI Syntax, release 1.2 (URI path structure,
  key qualifiers and their order, percent-encoding, query-string data
  attributes).

Every rejection raises :class:`GS1Error`, whose message is written for the
API user who sent the value: it says what was wrong and how to fix it.
"""

from __future__ import annotations

import calendar
import datetime
import re
import string
from dataclasses import dataclass, field
from urllib.parse import quote, unquote, unquote_plus

__all__ = [
    "DigitalLink",
    "GS1Error",
    "ParsedDigitalLink",
    "build_digital_link",
    "check_digit",
    "format_expiry",
    "normalize_gtin",
    "parse_digital_link",
    "parse_expiry",
    "validate_cpv",
    "validate_gln",
    "validate_lot",
    "validate_serial",
]


class GS1Error(ValueError):
    """An input is not valid GS1 data; the message explains why and the fix."""


# Python's str.isdigit() and regex \d accept non-ASCII digits ("²", "٣"),
# which GS1 keys never contain, so digits are matched explicitly.
_DIGITS = re.compile(r"[0-9]+")
_YYMMDD = re.compile(r"[0-9]{6}")
_MALFORMED_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SCHEME_AND_AUTHORITY = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://[^/]*")
_BASE_URL_FORBIDDEN = re.compile(r"[?#\s\x00-\x1f\x7f]")

_GTIN_LENGTHS = (8, 12, 13, 14)
_CSET82_SYMBOLS = "!\"%&'()*+,-./:;<=>?_"
_CSET82 = frozenset(string.ascii_letters + string.digits + _CSET82_SYMBOLS)
_CSET82_MAX_LENGTH = 20

# GS1 Digital Link: the key qualifiers of a GTIN (01), in the only order
# the path may carry them.
_QUALIFIER_ORDER = ("22", "10", "21")
_QUALIFIER_NAMES = {
    "22": "consumer product variant",
    "10": "lot",
    "21": "serial",
}
_MESSAGE_PREVIEW = 40


def _show(value: str) -> str:
    """Quote a user-supplied value for an error message, bounded in size."""
    if len(value) > _MESSAGE_PREVIEW:
        value = value[: _MESSAGE_PREVIEW - 3] + "..."
    return repr(value)


def _describe_char(char: str) -> str:
    # The code point makes invisible or look-alike characters identifiable.
    return f"{char!r} (U+{ord(char):04X})"


def _first_non_digit(value: str) -> tuple[int, str] | None:
    for position, char in enumerate(value, start=1):
        if char not in string.digits:
            return position, char
    return None


def _require_digits(value: str, label: str) -> None:
    if not value:
        raise GS1Error(f"{label} is empty; give its digits")
    offending = _first_non_digit(value)
    if offending is not None:
        position, char = offending
        raise GS1Error(
            f"{label} may contain only the digits 0-9, but has {_describe_char(char)} at position {position}"
        )


def check_digit(digits: str) -> str:
    """Return the GS1 mod-10 check digit for ``digits`` (check digit excluded).

    GenSpecs 7.9.1: counting from the rightmost digit, digits are weighted
    alternately 3 and 1; the check digit brings the weighted sum up to the
    next multiple of 10. The same rule serves GTIN-8/12/13/14 and GLN.
    """
    _require_digits(digits, "the digits for a check digit")
    total = sum(int(digit) * (3 if index % 2 == 0 else 1) for index, digit in enumerate(reversed(digits)))
    return str(-total % 10)


def _verify_check_digit(digits: str, label: str) -> None:
    expected = check_digit(digits[:-1])
    if digits[-1] != expected:
        raise GS1Error(
            f"{label} check digit is {digits[-1]}, expected {expected}; check the number for a typing or scanning error"
        )


def _gtin14(digits: str) -> str:
    """Validate a GTIN exactly as given (no stripping) and pad it to 14."""
    _require_digits(digits, "GTIN")
    if len(digits) not in _GTIN_LENGTHS:
        raise GS1Error(
            f"GTIN has {len(digits)} digits; give a GTIN-8, GTIN-12 (UPC-A), "
            f"GTIN-13 (EAN-13) or GTIN-14, i.e. 8, 12, 13 or 14 digits"
        )
    _verify_check_digit(digits, "GTIN")
    return digits.zfill(14)


def normalize_gtin(value: str) -> str:
    """Validate a GTIN-8/12/13/14 and return its 14-digit form.

    GenSpecs 3 (AI 01) and 7.9.1: the shorter GTINs are right-justified in
    the 14-digit field with leading zeros, which leaves the check digit
    unchanged, so one canonical form serves for storage and for comparison.
    Surrounding whitespace is stripped (it comes from copy and paste).
    """
    return _gtin14(value.strip())


def validate_gln(value: str) -> str:
    """Validate a Global Location Number (GenSpecs 3, AI 414) and return it.

    A GLN is 13 digits whose last digit is the GenSpecs 7.9.1 check digit.
    Surrounding whitespace is stripped from the returned value.
    """
    digits = value.strip()
    _require_digits(digits, "GLN")
    if len(digits) != 13:
        raise GS1Error(f"GLN has {len(digits)} digits; a GLN has exactly 13")
    _verify_check_digit(digits, "GLN")
    return digits


def _validate_cset82(value: str, label: str) -> str:
    """Check a GS1 'X..20' field: 1-20 characters of CSET 82 (GenSpecs 7.11)."""
    if not value:
        raise GS1Error(f"{label} is empty; give 1 to {_CSET82_MAX_LENGTH} characters")
    if len(value) > _CSET82_MAX_LENGTH:
        raise GS1Error(f"{label} is {len(value)} characters long; the maximum is {_CSET82_MAX_LENGTH}")
    for position, char in enumerate(value, start=1):
        if char not in _CSET82:
            raise GS1Error(
                f"{label} has {_describe_char(char)} at position {position}, "
                f"which GS1 does not allow (character set 82); use only "
                f"A-Z, a-z, 0-9 and {_CSET82_SYMBOLS}"
            )
    return value


def validate_lot(value: str) -> str:
    """Validate a batch/lot number (AI 10, format X..20) and return it as is.

    GenSpecs 3 (AI 10) and 7.11: 1 to 20 characters from CSET 82.
    """
    return _validate_cset82(value, "lot (AI 10)")


def validate_serial(value: str) -> str:
    """Validate a serial number (AI 21, format X..20) and return it as is.

    GenSpecs 3 (AI 21) and 7.11: 1 to 20 characters from CSET 82.
    """
    return _validate_cset82(value, "serial (AI 21)")


def validate_cpv(value: str) -> str:
    """Validate a consumer product variant (AI 22, X..20); return it as is.

    GenSpecs 3 (AI 22) and 7.11: 1 to 20 characters from CSET 82.
    """
    return _validate_cset82(value, "consumer product variant (AI 22)")


def _resolve_century(two_digit_year: int, today: datetime.date) -> int:
    """Return the full year for YY by the GenSpecs 7.12 sliding window.

    With D = YY minus the current two-digit year: D in 51..99 means the
    previous century, D in -99..-50 the next century, anything else this one.
    The window therefore reaches 49 years back and 50 years ahead of today.
    """
    current_two_digits = today.year % 100
    century = today.year - current_two_digits
    difference = two_digit_year - current_two_digits
    if 51 <= difference <= 99:
        century -= 100
    elif -99 <= difference <= -50:
        century += 100
    year = century + two_digit_year
    if not datetime.MINYEAR <= year <= datetime.MAXYEAR:
        raise GS1Error(
            f"year {two_digit_year:02d} resolves to {year}, which is outside "
            f"the supported calendar; check the reference date"
        )
    return year


def parse_expiry(yymmdd: str, *, today: datetime.date) -> datetime.date:
    """Parse an expiration date (AI 17, format N6 = YYMMDD).

    GenSpecs 3 (AI 17): DD = 00 means the last day of the month. The
    century comes from the GenSpecs 7.12 window around ``today``, which
    is a parameter so that results do not depend on the wall clock.
    """
    if not _YYMMDD.fullmatch(yymmdd):
        raise GS1Error(f"expiry date (AI 17) must be 6 digits YYMMDD, got {_show(yymmdd)}")
    month = int(yymmdd[2:4])
    day = int(yymmdd[4:6])
    if not 1 <= month <= 12:
        raise GS1Error(f"expiry date (AI 17) {yymmdd!r} has month {month:02d}; the month (MM) must be 01 to 12")
    year = _resolve_century(int(yymmdd[0:2]), today)
    last_day = calendar.monthrange(year, month)[1]
    if day == 0:
        return datetime.date(year, month, last_day)
    if day > last_day:
        raise GS1Error(
            f"expiry date (AI 17) {yymmdd!r} has day {day:02d}, but "
            f"{year}-{month:02d} has only {last_day} days; use 01-{last_day}, "
            f"or 00 for the last day of the month"
        )
    return datetime.date(year, month, day)


def format_expiry(value: datetime.date) -> str:
    """Format a date as AI 17 YYMMDD, always with the real day (never 00).

    Writing the actual day keeps the date unambiguous; GS1 has ruled that
    healthcare expiry dates state the day rather than 00 (GSCN 21-040).
    Only the last two digits of the year are kept (GenSpecs 7.12), so a
    reader more than about 50 years away will resolve a different century.
    """
    return f"{value.year % 100:02d}{value.month:02d}{value.day:02d}"


def _percent_encode(value: str) -> str:
    # safe="" keeps only the RFC 3986 unreserved set (A-Za-z0-9-._~) and
    # quote() writes uppercase hex, the form GS1 Digital Link prescribes.
    return quote(value, safe="")


def _check_base_url(base_url: str) -> str:
    forbidden = _BASE_URL_FORBIDDEN.search(base_url)
    if forbidden is not None:
        raise GS1Error(
            f"base_url {_show(base_url)} contains "
            f"{_describe_char(forbidden.group())}, which would break the URI; "
            f"give only scheme, host and optional path, e.g. https://id.gs1.org"
        )
    return base_url.rstrip("/")


@dataclass(frozen=True)
class DigitalLink:
    """The GS1 Digital Link data of one GTIN-identified pack.

    Construction validates every field, so a ``DigitalLink`` always renders
    a valid URI. ``gtin`` must already be 14 digits (see
    :func:`normalize_gtin`), which makes equal packs compare equal.
    """

    gtin: str
    cpv: str | None = None
    lot: str | None = None
    serial: str | None = None
    expiry: datetime.date | None = None

    def __post_init__(self) -> None:
        if _gtin14(self.gtin) != self.gtin:
            raise GS1Error(
                f"DigitalLink.gtin must be the 14-digit GTIN, got "
                f"{_show(self.gtin)}; pass it through normalize_gtin() first"
            )
        if self.cpv is not None:
            validate_cpv(self.cpv)
        if self.lot is not None:
            validate_lot(self.lot)
        if self.serial is not None:
            validate_serial(self.serial)
        # A datetime is a date subclass but never equals the parsed date,
        # which would silently break round-trips and comparisons.
        if isinstance(self.expiry, datetime.datetime):
            raise GS1Error("DigitalLink.expiry must be a date, not a datetime; pass value.date()")

    def path(self) -> str:
        """Return ``/01/{gtin}[/22/{cpv}][/10/{lot}][/21/{serial}]``.

        GS1 Digital Link URI Syntax: key qualifiers follow the primary key
        in the fixed order 22, 10, 21, and every character outside the
        RFC 3986 unreserved set is percent-encoded.
        """
        segments = ["", "01", self.gtin]
        for ai, value in (("22", self.cpv), ("10", self.lot), ("21", self.serial)):
            if value is not None:
                segments += [ai, _percent_encode(value)]
        return "/".join(segments)

    def uri(self, base_url: str) -> str:
        """Return ``base_url`` (trailing ``/`` removed) + path + ``?17=YYMMDD``.

        GS1 Digital Link URI Syntax: data attributes such as the expiry
        date (AI 17) go in the query string, not in the path.
        """
        query = "" if self.expiry is None else f"?17={format_expiry(self.expiry)}"
        return _check_base_url(base_url) + self.path() + query


def build_digital_link(
    base_url: str,
    *,
    gtin: str,
    lot: str | None = None,
    serial: str | None = None,
    expiry: datetime.date | None = None,
    cpv: str | None = None,
) -> str:
    """Validate the pack data, normalize the GTIN and return the link URI."""
    link = DigitalLink(gtin=normalize_gtin(gtin), cpv=cpv, lot=lot, serial=serial, expiry=expiry)
    return link.uri(base_url)


@dataclass(frozen=True)
class ParsedDigitalLink:
    """A parsed Digital Link plus what the canonical form does not keep.

    ``gtin_as_given`` is the GTIN path segment exactly as written (before
    percent-decoding and padding); when it differs from ``link.gtin`` a web
    view can redirect to the canonical URI. ``extra_query`` holds the
    non-AI query parameters, such as ``linkType``.
    """

    link: DigitalLink
    gtin_as_given: str
    extra_query: dict[str, str] = field(default_factory=dict)


def _split_uri(uri_or_path: str) -> tuple[str, str]:
    """Return (path, query): scheme, authority and fragment are dropped."""
    text = uri_or_path.strip().partition("#")[0]
    path, _, query = text.partition("?")
    scheme_and_authority = _SCHEME_AND_AUTHORITY.match(path)
    if scheme_and_authority is not None:
        path = path[scheme_and_authority.end() :]
    return path, query


def _percent_decode(raw: str, label: str) -> str:
    malformed = _MALFORMED_PERCENT.search(raw)
    if malformed is not None:
        raise GS1Error(
            f"{label} {_show(raw)} has a '%' at position {malformed.start() + 1} "
            f"that is not followed by two hex digits; write a literal '%' as %25"
        )
    try:
        return unquote(raw, errors="strict")
    except UnicodeError as exc:
        raise GS1Error(
            f"{label} {_show(raw)} percent-decodes to bytes that are not "
            f"valid UTF-8; percent-encode the value's UTF-8 bytes"
        ) from exc


def _explain_missing_primary_key(segments: list[str]) -> str:
    count = len(segments)
    for index, segment in enumerate(segments[:-1]):
        if segment == "01" and (count - index) % 2 == 1:
            if "" in segments[index + 1 :]:
                return "the path after /01/ has an empty segment (a doubled or trailing '/'); remove it"
            return (
                f"the path after /01/ has an odd number of segments, so "
                f"{_show(segments[-1])} has no value; after /01/{{gtin}} the "
                f"path must be AI/value pairs such as /10/{{lot}}/21/{{serial}}"
            )
    return "the path has no /01/{gtin}; a GTIN Digital Link needs /01/ followed by the GTIN, e.g. /01/09506000134352"


def _locate_primary_key(segments: list[str]) -> int:
    """Return the index of the '01' segment that starts the Digital Link.

    GS1 Digital Link allows any path prefix before the primary key, so the
    path is read in AI/value pairs from its right-hand end, as the URI
    Syntax standard prescribes; the first '01' met in an AI position is the
    primary key. Another '01' in an AI position further left would mean two
    GTINs in one link, which is rejected rather than guessed at.
    """
    for index in range(len(segments) - 2, -1, -2):
        if segments[index] != "01":
            continue
        # Segments before index with the same parity are its AI positions.
        if "01" in segments[index % 2 : index : 2]:
            raise GS1Error("the path contains /01/{gtin} more than once; a Digital Link identifies exactly one GTIN")
        return index
    raise GS1Error(_explain_missing_primary_key(segments))


def _qualifier_rank(ai: str) -> int:
    if ai in _QUALIFIER_ORDER:
        return _QUALIFIER_ORDER.index(ai)
    if not ai:
        raise GS1Error("the path after /01/{gtin} has an empty segment (a doubled '/'); remove it")
    if _DIGITS.fullmatch(ai) and 2 <= len(ai) <= 4:
        raise GS1Error(
            f"AI {ai} is not allowed in the path after /01/{{gtin}}: only the "
            f"key qualifiers 22 (consumer product variant), 10 (lot) and "
            f"21 (serial) may follow it; data attributes such as 17 (expiry) "
            f"go in the query string, e.g. ?17=YYMMDD"
        )
    raise GS1Error(
        f"unexpected path segment {_show(ai)} after /01/{{gtin}}; expected one of the key qualifier AIs 22, 10 or 21"
    )


def _parse_qualifiers(pairs: list[str]) -> dict[str, str]:
    """Decode the AI/value pairs after the GTIN, enforcing order 22, 10, 21."""
    values: dict[str, str] = {}
    previous = ""
    for index in range(0, len(pairs), 2):
        ai, raw_value = pairs[index], pairs[index + 1]
        rank = _qualifier_rank(ai)
        if ai in values:
            raise GS1Error(f"key qualifier {ai} appears twice in the path; give it once")
        if previous and rank < _qualifier_rank(previous):
            raise GS1Error(
                f"key qualifier {ai} comes after {previous}; for a GTIN the "
                f"path order is /22/{{cpv}}/10/{{lot}}/21/{{serial}}, "
                f"each optional"
            )
        if not raw_value:
            raise GS1Error(
                f"AI {ai} ({_QUALIFIER_NAMES[ai]}) has an empty value; give a value or drop the /{ai}/ segment"
            )
        values[ai] = _percent_decode(raw_value, f"AI {ai} value")
        previous = ai
    return values


def _check_ignored_query_ai(ai: str) -> None:
    if ai == "01":
        raise GS1Error("the GTIN (AI 01) must be in the path as /01/{gtin}, not in the query string")
    if ai in _QUALIFIER_ORDER:
        raise GS1Error(
            f"AI {ai} ({_QUALIFIER_NAMES[ai]}) is a key qualifier and must be "
            f"in the path as /{ai}/{{value}}, not in the query string"
        )
    if not 2 <= len(ai) <= 4:
        raise GS1Error(
            f"query parameter {_show(ai)} is all digits but is not a GS1 AI (2 to 4 digits); rename it or remove it"
        )


def _parse_query(query: str, today: datetime.date) -> tuple[datetime.date | None, dict[str, str]]:
    """Split the query into the AI 17 expiry and the non-AI parameters.

    GS1 Digital Link URI Syntax: all-digit keys are AIs (data attributes).
    AI 17 is read; other data attributes are not modelled and are ignored,
    but every AI may appear once only. Other keys are kept for the caller.
    """
    expiry: datetime.date | None = None
    seen_ais: set[str] = set()
    extra: dict[str, str] = {}
    for parameter in query.split("&"):
        if not parameter:
            continue
        raw_key, _, raw_value = parameter.partition("=")
        key = unquote_plus(raw_key)
        if not _DIGITS.fullmatch(key):
            extra[key] = unquote_plus(raw_value)
            continue
        if key in seen_ais:
            raise GS1Error(f"AI {key} appears more than once in the query string; give it once")
        seen_ais.add(key)
        if key == "17":
            text = _percent_decode(raw_value, "AI 17 value")
            expiry = parse_expiry(text, today=today)
        else:
            _check_ignored_query_ai(key)
    return expiry, extra


def parse_digital_link(uri_or_path: str, *, today: datetime.date) -> ParsedDigitalLink:
    """Parse and validate a GTIN-based GS1 Digital Link URI or path.

    Accepts a full URI with any scheme and host, or a bare path, with any
    path prefix before ``/01/``. Give the URI as sent, still percent-encoded
    (e.g. Django's ``request.get_full_path()``, not ``request.path``):
    decoding first would turn an encoded ``/`` in a lot into a separator.
    ``today`` anchors the century of the expiry date (GenSpecs 7.12).
    """
    path, query = _split_uri(uri_or_path)
    segments = path.split("/")
    start = _locate_primary_key(segments)
    gtin_as_given = segments[start + 1]
    if not gtin_as_given:
        raise GS1Error("the GTIN after /01/ is empty; give 8, 12, 13 or 14 digits")
    gtin = _gtin14(_percent_decode(gtin_as_given, "GTIN"))
    qualifiers = _parse_qualifiers(segments[start + 2 :])
    expiry, extra_query = _parse_query(query, today)
    link = DigitalLink(
        gtin=gtin,
        cpv=qualifiers.get("22"),
        lot=qualifiers.get("10"),
        serial=qualifiers.get("21"),
        expiry=expiry,
    )
    return ParsedDigitalLink(link=link, gtin_as_given=gtin_as_given, extra_query=extra_query)
