"""The CBV 2.0 EPCIS event hash ID (``ni:///sha-256;...?ver=CBV2.0``), computed from an event's JSON.

No Django here. The algorithm (CBV 2.0 section 8.9, and the README of GS1's
reference implementation, RalphTro/epcis-event-hash-generator) builds a
*pre-hash string* from the event's fields in a canonical order, with canonical
values (timestamps in UTC to the millisecond, numbers without trailing zeros,
CBV and GS1 vocabulary as Web URIs, identifiers as constrained canonical GS1
Digital Link URIs on ``id.gs1.org``), and hashes it with SHA-256.

Where the written algorithm and the reference implementation (1.9.3) disagree,
we follow the reference, because partners check our IDs with it:

- ``bizTransactionList``, ``sourceList`` and ``destinationList`` are not placed
  at their canonical position but with the remaining fields (``ilmd``,
  extensions), all sorted together after ``sensorElementList``;
- inside one of their entries the identifier comes before its type (rule 13),
  which the reference gives when the JSON names the identifier first, as our
  documents do.

The tests compare our IDs with the reference's for every kind of event we
produce and for partners' documents in EPC URN form.
"""

from __future__ import annotations

import datetime
import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

CBV = "https://ref.gs1.org/cbv/"
GS1_VOC = "https://gs1.org/voc/"
# Prefixes of the standard EPCIS 2.0 JSON-LD context: CURIEs in keys and values expand with them.
STANDARD_PREFIXES = {
    "epcis": "https://ref.gs1.org/epcis/",
    "cbv": CBV,
    "cbvmda": "urn:epcglobal:cbv:mda:",
    "gs1": GS1_VOC,
}
# Bare-string vocabulary (JSON-LD ``@vocab`` terms) and the Web URI each field's terms expand to.
_VOCABULARY = {
    "bizStep": CBV + "BizStep-",
    "disposition": CBV + "Disp-",
    "set": CBV + "Disp-",
    "unset": CBV + "Disp-",
    "bizTransactionType": CBV + "BTT-",
    "sourceDestType": CBV + "SDT-",
    "measurementType": GS1_VOC,
    "exception": GS1_VOC,
}
_URN_VOCABULARY = (
    ("urn:epcglobal:cbv:bizstep:", CBV + "BizStep-"),
    ("urn:epcglobal:cbv:disp:", CBV + "Disp-"),
    ("urn:epcglobal:cbv:btt:", CBV + "BTT-"),
    ("urn:epcglobal:cbv:sdt:", CBV + "SDT-"),
    ("urn:epcglobal:cbv:er:", CBV + "ER-"),
)
_IGNORED = frozenset({"type", "eventID", "recordTime", "errorDeclaration", "@context"})
_QUANTITY_FIELDS = ("epcClass", "quantity", "uom")
_METADATA_FIELDS = (
    "time",
    "startTime",
    "endTime",
    "deviceID",
    "deviceMetadata",
    "rawData",
    "dataProcessingMethod",
    "bizRules",
)
_REPORT_FIELDS = (
    "type",
    "exception",
    "deviceID",
    "deviceMetadata",
    "rawData",
    "dataProcessingMethod",
    "time",
    "microorganism",
    "chemicalSubstance",
    "value",
    "component",
    "stringValue",
    "booleanValue",
    "hexBinaryValue",
    "uriValue",
    "minValue",
    "maxValue",
    "meanValue",
    "sDev",
    "percRank",
    "percValue",
    "uom",
    "coordinateReferenceSystem",
)
_PAIRED_LISTS = {"bizTransactionList": "bizTransaction", "sourceList": "source", "destinationList": "destination"}
_PAIR_TYPES = {"bizTransactionList": "bizTransactionType", "sourceList": "sourceDestType"}


class EventHashError(ValueError):
    """The event cannot be hashed (it is not an event object, or a timestamp is out of range)."""


def event_id(event: Mapping[str, Any], *, context: Sequence[Any] | Mapping[str, Any] | str = ()) -> str:
    """The event's CBV 2.0 hash ID. ``context`` is the document's ``@context`` (for its prefixes)."""
    digest = hashlib.sha256(pre_hash(event, context=context).encode("utf-8")).hexdigest()
    return f"ni:///sha-256;{digest}?ver=CBV2.0"


def pre_hash(event: Mapping[str, Any], *, context: Sequence[Any] | Mapping[str, Any] | str = ()) -> str:
    """The canonical pre-hash string of one event."""
    if not isinstance(event, Mapping) or not isinstance(event.get("type"), str):
        raise EventHashError("an event is a JSON object with a type")
    canon = _Canon(_prefixes(event.get("@context", context)) | _prefixes(context))
    return f"eventType={event['type']}" + canon.ordered(event) + canon.remainder(event)


def _prefixes(context: object) -> dict[str, str]:
    """CURIE prefixes: the standard context's, and those a document's own context defines."""
    prefixes = dict(STANDARD_PREFIXES)
    for part in context if isinstance(context, list) else [context]:
        if isinstance(part, Mapping):
            prefixes.update({key: value for key, value in part.items() if isinstance(value, str)})
    return prefixes


class _Canon:
    def __init__(self, prefixes: Mapping[str, str]) -> None:
        self.prefixes = prefixes

    # The canonical order -------------------------------------------------------------

    def ordered(self, event: Mapping[str, Any]) -> str:
        parts = [
            self.field("eventTime", event.get("eventTime")),
            self.field("eventTimeZoneOffset", event.get("eventTimeZoneOffset")),
            self.field("certificationInfo", event.get("certificationInfo")),
            self.field("parentID", event.get("parentID")),
            self.epcs("epcList", event.get("epcList")),
            self.epcs("inputEPCList", event.get("inputEPCList")),
            self.epcs("childEPCs", event.get("childEPCs")),
            self.quantities("quantityList", event.get("quantityList")),
            self.quantities("childQuantityList", event.get("childQuantityList")),
            self.quantities("inputQuantityList", event.get("inputQuantityList")),
            self.epcs("outputEPCList", event.get("outputEPCList")),
            self.quantities("outputQuantityList", event.get("outputQuantityList")),
            self.field("action", event.get("action")),
            self.field("transformationID", event.get("transformationID")),
            self.field("bizStep", event.get("bizStep"), vocabulary="bizStep"),
            self.field("disposition", event.get("disposition"), vocabulary="disposition"),
            self.persistent(event.get("persistentDisposition")),
            self.location("readPoint", event.get("readPoint")),
            self.location("bizLocation", event.get("bizLocation")),
            self.sensors(event.get("sensorElementList")),
        ]
        return "".join(parts)

    def field(self, name: str, value: object, *, vocabulary: str = "") -> str:
        if value is None or isinstance(value, Mapping | list):
            return ""
        text = self.value(name, value, vocabulary=vocabulary)
        return f"{name}={text}" if text else ""

    def epcs(self, name: str, values: object) -> str:
        items = sorted(f"epc={self.value('epc', v)}" for v in _listed(values) if self.value("epc", v))
        return name + "".join(items) if items else ""

    def quantities(self, name: str, values: object) -> str:
        items = sorted(
            filter(
                None, (self.fields(element, _QUANTITY_FIELDS, prefix="quantityElement") for element in _listed(values))
            )
        )
        return name + "".join(items) if items else ""

    def persistent(self, value: object) -> str:
        if not isinstance(value, Mapping):
            return ""
        parts = []
        for name in ("set", "unset"):
            parts += sorted(f"{name}={self.value(name, v, vocabulary=name)}" for v in _listed(value.get(name)))
        return "persistentDisposition" + "".join(parts) if parts else ""

    def location(self, name: str, value: object) -> str:
        if not isinstance(value, Mapping):
            return ""
        return self.fields(value, ("id",), prefix=name)

    def sensors(self, values: object) -> str:
        elements = []
        for element in _listed(values):
            if not isinstance(element, Mapping):
                continue
            text = self.fields(element.get("sensorMetadata"), _METADATA_FIELDS, prefix="sensorMetadata")
            reports = (
                self.fields(report, _REPORT_FIELDS, prefix="sensorReport", vocabulary={"type": "measurementType"})
                for report in _listed(element.get("sensorReport"))
            )
            text += "".join(sorted(filter(None, reports)))
            text += self.extensions(element, known=("sensorMetadata", "sensorReport"))
            if text:
                elements.append("sensorElement" + text)
        return "sensorElementList" + "".join(sorted(elements)) if elements else ""

    def fields(
        self, value: object, names: Sequence[str], *, prefix: str, vocabulary: Mapping[str, str] | None = None
    ) -> str:
        """``prefix`` + the named fields in order + the object's extensions, or "" when it holds nothing."""
        if not isinstance(value, Mapping):
            return ""
        vocabulary = vocabulary or {}
        parts = []
        for name in names:
            parts += sorted(
                filter(
                    None,
                    (self.field(name, v, vocabulary=vocabulary.get(name, name)) for v in _listed(value.get(name))),
                )
            )
        text = "".join(parts) + self.extensions(value, known=names)
        return prefix + text if text else ""

    def extensions(self, value: Mapping[str, Any], *, known: Sequence[str]) -> str:
        """Fields outside the standard ones (user extensions), sorted, after the enclosing element's own."""
        extra = [self.generic(self.key(k), v) for k, v in value.items() if k not in known and k != "@context"]
        return "".join(sorted(filter(None, extra)))

    # Everything else, sorted ------------------------------------------------------------

    def remainder(self, event: Mapping[str, Any]) -> str:
        handled = {
            "eventTime",
            "eventTimeZoneOffset",
            "certificationInfo",
            "parentID",
            "epcList",
            "inputEPCList",
            "childEPCs",
            "quantityList",
            "childQuantityList",
            "inputQuantityList",
            "outputEPCList",
            "outputQuantityList",
            "action",
            "transformationID",
            "bizStep",
            "disposition",
            "persistentDisposition",
            "readPoint",
            "bizLocation",
            "sensorElementList",
        }
        parts = []
        for key, value in event.items():
            if key in _IGNORED or key in handled:
                continue
            if key in _PAIRED_LISTS:
                parts.append(self.paired(key, value))
            elif key == "ilmd":
                parts.append(self.generic("ilmd", value))
            else:
                parts += [self.generic(self.key(key), item) for item in _listed(value)]
        return "".join(sorted(filter(None, parts)))

    def paired(self, name: str, values: object) -> str:
        """A list of (identifier, type) entries: each entry's identifier, then its type."""
        key = _PAIRED_LISTS[name]
        entries = []
        for entry in _listed(values):
            if not isinstance(entry, Mapping):
                continue
            text = self.field(key, entry.get(key))
            text += self.field("type", entry.get("type"), vocabulary=_PAIR_TYPES.get(name, "sourceDestType"))
            entries.append(text)
        return name + "".join(sorted(entries)) if entries else ""

    def generic(self, name: str, value: object) -> str:
        """An extension (or ``ilmd``): its expanded name, its value, and its children sorted."""
        if isinstance(value, list):
            return "".join(sorted(self.generic(name, item) for item in value))
        if isinstance(value, Mapping):
            children = [self.generic(self.key(k), v) for k, v in value.items()]
            return name + "".join(sorted(children))
        text = self.value(name, value, timestamps=False)
        return f"{name}={text}" if text else name

    # Names and values ---------------------------------------------------------------------

    def key(self, name: str) -> str:
        """``prefix:local`` becomes ``{namespace}local``."""
        prefix, colon, local = name.partition(":")
        if colon and prefix in self.prefixes:
            return "{" + self.prefixes[prefix] + "}" + local
        return name

    def value(self, name: str, value: object, *, vocabulary: str = "", timestamps: bool = True) -> str:
        text = _text(value).strip()
        if not text:
            return ""
        lowered = name.lower()
        if timestamps and "time" in lowered and "offset" not in lowered:
            return canonical_time(text)
        base = _VOCABULARY.get(vocabulary)
        if base and re.fullmatch(r"[A-Za-z0-9_]+", text):
            return base + text
        text = self.expand(text)
        return canonical_identifier(_number(text))

    def expand(self, text: str) -> str:
        for urn, web in _URN_VOCABULARY:
            if text.startswith(urn):
                return web + text[len(urn) :]
        prefix, colon, local = text.partition(":")
        if colon and prefix in self.prefixes and not local.startswith("//"):
            return self.prefixes[prefix] + local
        return text


def _listed(value: object) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list) else [value]


def _text(value: object) -> str:
    if isinstance(value, bool):
        return str(value)  # the reference writes Python's True/False
    return value if isinstance(value, str) else str(value)


def _number(text: str) -> str:
    """A number without trailing zeros ('1.0' is '1', '4.250' is '4.25'); anything else as it is."""
    try:
        number = float(text)
    except ValueError:
        return text
    if number != number or number in (float("inf"), float("-inf")):
        return text
    return str(int(number)) if number.is_integer() else str(number)


def canonical_time(text: str) -> str:
    """UTC, millisecond precision, ``Z``: ``2024-05-01T10:00:00.123Z``."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        return text
    if moment.tzinfo is None:
        raise EventHashError(f"timestamp {text!r} has no UTC offset")
    try:
        moment = moment.astimezone(datetime.UTC)
    except OverflowError:  # 0001-01-01T00:00:00+14:00 is in year 0 in UTC
        raise EventHashError(f"timestamp {text!r} lies outside the years 1 to 9999 in UTC") from None
    millis = round(moment.microsecond, -3)
    if millis == 1_000_000:  # as the reference implementation, which cannot carry it into the next second
        raise EventHashError(f"timestamp {text!r} rounds into the next second")
    return moment.replace(microsecond=millis).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# GS1 identifiers: EPC URNs and Digital Link URIs to constrained canonical Digital Link ------------

# Characters a constrained canonical Digital Link keeps unencoded in serials and lots.
_AI_VALUE = r"[\x22\x27\x2D\x2E\x30-\x39\x3B-\x3F\x41-\x5A\x5F\x61-\x7A]{0,20}"
_CANONICAL = [
    re.compile(pattern)
    for pattern in (
        r"https://id\.gs1\.org/00/\d{18}",
        rf"https://id\.gs1\.org/01/\d{{14}}(/21/{_AI_VALUE}|/10/{_AI_VALUE})?",
        r"https://id\.gs1\.org/41[47]/\d{13}",
        rf"https://id\.gs1\.org/414/\d{{13}}/254/{_AI_VALUE}",
    )
]
_SHORT_NAMES = {"gtin": "01", "lot": "10", "ser": "21", "gln": "414", "party": "417", "sscc": "00", "cpv": "22"}
_DL_KEYS = ("00", "01", "414", "417", "8006", "8010", "8017", "8018", "255", "253", "401", "402", "8003", "8004")
_DIGITAL_LINK = re.compile(r"https?://[^/?#]*(?:/[^?#]*)?/(?:01|gtin|414|gln|417|party|00|sscc)/\d{4}[^?#]*(?:[?#].*)?")


def _check_digit(digits: str) -> str:
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return str((10 - total % 10) % 10)


def _web_escape(value: str) -> str:
    for char, escaped in (("!", "%21"), ("(", "%28"), (")", "%29"), ("*", "%2A"), ("+", "%2B"), (",", "%2C")):
        value = value.replace(char, escaped)
    return value.replace(":", "%3A")


def _sgtin(match: re.Match[str]) -> str:
    prefix, item, serial = match.group(1), match.group(2), match.group(3)
    gtin = item[0] + prefix + item[1:]
    return f"https://id.gs1.org/01/{gtin}{_check_digit(gtin)}/21/{_web_escape(serial)}"


def _lgtin(match: re.Match[str]) -> str:
    prefix, item, lot = match.group(1), match.group(2), match.group(3)
    gtin = item[0] + prefix + item[1:]
    return f"https://id.gs1.org/01/{gtin}{_check_digit(gtin)}/10/{_web_escape(lot)}"


def _sgln(match: re.Match[str]) -> str:
    gln = match.group(1) + match.group(2)
    extension = match.group(3)
    base = f"https://id.gs1.org/414/{gln}{_check_digit(gln)}"
    return base if extension == "0" else f"{base}/254/{_web_escape(extension)}"


def _pgln(match: re.Match[str]) -> str:
    gln = match.group(1) + match.group(2)
    return f"https://id.gs1.org/417/{gln}{_check_digit(gln)}"


def _sscc(match: re.Match[str]) -> str:
    prefix, rest = match.group(1), match.group(2)
    sscc = rest[0] + prefix + rest[1:]
    return f"https://id.gs1.org/00/{sscc}{_check_digit(sscc)}"


_EPC_CHARS = r"(?:%[0-9A-Fa-f]{2}|[!')(*+,.0-9:;=A-Za-z_-])"
_URNS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], str]]] = [
    (re.compile(rf"urn:epc:id:sgtin:(\d{{6,12}})\.(\d{{1,7}})\.({_EPC_CHARS}{{1,20}})"), _sgtin),
    (re.compile(rf"urn:epc:class:lgtin:(\d{{6,12}})\.(\d{{1,7}})\.({_EPC_CHARS}{{1,20}})"), _lgtin),
    (re.compile(rf"urn:epc:id:sgln:(\d{{6,12}})\.(\d{{0,6}})\.({_EPC_CHARS}{{1,20}})"), _sgln),
    (re.compile(r"urn:epc:id:pgln:(\d{6,12})\.(\d{0,6})"), _pgln),
    (re.compile(r"urn:epc:id:sscc:(\d{6,12})\.(\d{5,11})"), _sscc),
]


def canonical_identifier(text: str) -> str:
    """EPC URNs and GS1 Digital Link URIs as constrained canonical Digital Link URIs; other text unchanged.

    Constrained: on ``https://id.gs1.org``, without query string, at the finest
    level (a serial drops the lot). A URI that cannot be put in that form
    (say, a lot with percent-encoded characters) is left as it is.
    """
    for pattern, convert in _URNS:
        match = pattern.fullmatch(text)
        if match and len(match.group(1)) + len(match.group(2)) in (12, 13, 17):
            return _constrained(convert(match)) or text
    if _DIGITAL_LINK.fullmatch(text):
        return _constrained(_from_digital_link(text)) or text
    return text


def _from_digital_link(uri: str) -> str:
    path = uri.split("?", 1)[0].split("#", 1)[0]
    segments = path.split("/")[3:]
    segments = [_SHORT_NAMES.get(segment, segment) for segment in segments]
    start = next(i for i, segment in enumerate(segments) if segment in _DL_KEYS)
    pairs = segments[start:]
    key, value, qualifiers = pairs[0], pairs[1] if len(pairs) > 1 else "", pairs[2:]
    if key == "01":
        value = value.zfill(14) if len(value) in (8, 12, 13) else value
    kept = dict(zip(qualifiers[::2], qualifiers[1::2], strict=False))
    kept.pop("22", None)
    if "21" in kept:
        kept.pop("10", None)
    rest = "".join(f"/{ai}/{kept[ai]}" for ai in kept)
    return f"https://id.gs1.org/{key}/{value}{rest}"


def _constrained(uri: str) -> str | None:
    return uri if any(pattern.fullmatch(uri) for pattern in _CANONICAL) else None
