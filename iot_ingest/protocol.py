"""Device protocol v1: read, check and resolve a temperature logger's message.

The external contract is ``device-protocol.md`` (protocol v1): a message is a JWS
in Compact Serialization (RFC 7515 section 7.1) signed with Ed25519 (RFC 8037;
``alg`` is RFC 9864's fully specified "Ed25519", or the older "EdDSA"), whose
payload is a JSON object ``{"dev", "seq", "senml"}`` carrying a SenML pack
(RFC 8428).

Pure: standard library and ``cryptography`` only. The ingest service runs the
steps in order, adding its own between them::

    parse -> (look up the device) -> verify -> read_payload -> (de-duplicate) -> resolve

Every step either returns or raises :class:`Rejected` with one of the spec's
reasons; ``unknown_device``, ``device_disabled``, ``replay`` (and the
``duplicate`` outcome) are the service's to decide. The module is strict on
purpose: the spec says the platform accepts exactly this and rejects
everything else.
"""

from __future__ import annotations

import base64
import datetime
import functools
import json
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

MAX_MESSAGE_BYTES = 64 * 1024
MAX_RECORDS = 1000
MAX_SEQ = 2**53 - 1
REASONS: tuple[str, ...] = (
    "too_large",
    "malformed",
    "bad_header",
    "unknown_device",
    "device_disabled",
    "bad_signature",
    "device_mismatch",
    "replay",
    "payload_invalid",
    "time_out_of_window",
    "value_out_of_range",
)
DEVICE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
TEMPERATURE, HUMIDITY = "Cel", "%RH"

ALGORITHMS = ("Ed25519", "EdDSA")  # a tuple, not a set: a JSON alg may be unhashable
HEADER_PARAMETERS = frozenset({"alg", "kid"})
PAYLOAD_FIELDS = ("dev", "seq", "senml")
# Inclusive bounds per evaluated unit; a record with any other unit is kept but not evaluated.
# The spec bounds temperatures only; humidity probes near condensation read a little over 100 %,
# and refusing those would throw away the message's temperatures with them.
VALUE_RANGES: Mapping[str, tuple[float, float]] = {TEMPERATURE: (-100.0, 100.0), HUMIDITY: (-math.inf, math.inf)}
MAX_FUTURE = datetime.timedelta(minutes=5)
MAX_AGE = datetime.timedelta(days=90)
RELATIVE_TIME_LIMIT = 2**28  # RFC 8428 section 4.5.3: a time below this is relative to "now"
SENML_VERSION = 10  # RFC 8428 section 4.4: the only bver this module understands

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
SIGNATURE_BYTES = 64  # RFC 8032 section 5.1.6
PUBLIC_KEY_BYTES = 32
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
# RFC 8428 section 4.5.1: the resolved name's character set and first character.
_SENML_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9:./_-]*")
_STRING_FIELDS = ("bn", "bu", "n", "u", "vs", "vd")
_NUMBER_FIELDS = ("bt", "bv", "bs", "t", "v", "s", "ut")
_VALUE_FIELDS = ("v", "vs", "vb", "vd")


class Rejected(Exception):
    """A message the platform refuses: one of the spec's ``REASONS`` and a note for staff."""

    reason: str
    detail: str

    def __init__(self, reason: str, detail: str) -> None:
        if reason not in REASONS:
            raise ValueError(f"{reason!r} is not one of the protocol's rejection reasons {REASONS}")
        super().__init__(reason, detail)  # the arguments, so that a Rejected pickles and copies
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"


@dataclass(frozen=True)
class Envelope:
    """A parsed, not yet verified, compact JWS (RFC 7515 section 7.1)."""

    device_id: str  # the header's kid
    header: dict[str, Any]
    signing_input: bytes  # ASCII BASE64URL(header) "." BASE64URL(payload), RFC 7515 section 5.1
    payload: bytes
    signature: bytes


@dataclass(frozen=True)
class Payload:
    """The payload's fields; ``senml`` is the raw pack, each record a JSON object, not yet resolved."""

    device_id: str
    seq: int
    senml: list[Any]


@dataclass(slots=True)
class Reading:
    """One evaluated measurement: a resolved SenML record (RFC 8428 section 4.6) in Cel or %RH.

    Not frozen, though nothing changes one: a message makes one per record, and a frozen dataclass
    costs four times as much to make.
    """

    name: str
    unit: str
    value: float
    at: datetime.datetime  # UTC
    index: int  # the record's position in the pack: the reading's stable id within its message


# Parsing the envelope (RFC 7515) ------------------------------------------------------------------


def parse(raw: bytes) -> Envelope:
    """Splits and decodes a compact JWS and checks its protected header; does not verify the signature.

    Raises ``too_large`` over ``MAX_MESSAGE_BYTES``, ``malformed`` unless the message
    is three canonical base64url parts whose header is a JSON object, and
    ``bad_header`` unless that header is exactly ``{"alg": "Ed25519" | "EdDSA",
    "kid": <device id>}`` (spec, "The message: a JWS").
    """
    if len(raw) > MAX_MESSAGE_BYTES:
        raise Rejected("too_large", f"the message is {len(raw)} bytes; the limit is {MAX_MESSAGE_BYTES}")
    parts = _ascii(raw).split(".")
    if len(parts) != 3:
        raise Rejected(
            "malformed",
            f"the message has {len(parts)} dot-separated parts; a compact JWS has 3 (RFC 7515 section 7.1)",
        )
    header_part, payload_part, signature_part = parts
    header = _header(header_part)
    payload = _base64url_decode(payload_part, "payload")
    signature = _base64url_decode(signature_part, "signature")
    signing_input = f"{header_part}.{payload_part}".encode("ascii")
    return Envelope(header["kid"], dict(header), signing_input, payload, signature)


@functools.lru_cache(maxsize=4096)
def _header(header_part: str) -> dict[str, Any]:
    """The checked protected header of a base64url header part (kept: a logger sends the same one every time,
    so a fleet has as many as it has loggers); raises ``malformed`` or ``bad_header``, which is not kept."""
    try:
        header = _json_object(_base64url_decode(header_part, "header"), "header")
    except ValueError as error:
        raise Rejected("malformed", str(error)) from None
    _check_header(header)
    return header


def _ascii(raw: bytes) -> str:
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError as error:
        raise Rejected("malformed", f"byte {error.start} is not ASCII; a compact JWS is ASCII text") from None


def _base64url_decode(part: str, what: str) -> bytes:
    """Decodes unpadded base64url (RFC 7515 section 2), accepting only the canonical encoding.

    Canonical only, so a message has exactly one spelling: otherwise flipping the
    unused low bits of the last character would give other bytes with the same
    valid signature, which de-duplication (keyed by the raw bytes) calls a replay.
    """
    if not _BASE64URL.fullmatch(part) or len(part) % 4 == 1:
        raise Rejected("malformed", f"the {what} is not unpadded base64url (RFC 7515 section 2)")
    data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    if _base64url_encode(data) != part:
        raise Rejected("malformed", f"the {what}'s base64url is not canonical: its last character has stray bits")
    return data


def _base64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """Reads a UTF-8 JSON object (RFC 8259) with unique member names; ValueError says what was wrong."""
    try:
        value = _DECODER.decode(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"the {what} is not UTF-8") from None
    except RecursionError:
        raise ValueError(f"the {what} nests JSON too deeply") from None
    except ValueError as error:
        raise ValueError(f"the {what} is not valid JSON: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"the {what} is a JSON {_json_type(value)}, not an object")
    return value


def _unique_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 section 4: a JWS parser must reject duplicate header names; the payload gets the same care.
    members = dict(pairs)
    if len(members) != len(pairs):
        duplicates = sorted(name for name, count in Counter(name for name, _ in pairs).items() if count > 1)
        raise ValueError(f"duplicate member name(s) {', '.join(map(repr, duplicates))}")
    return members


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


# Made once: json.loads with these arguments builds a decoder each call, a fifth of reading a header.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_members, parse_constant=_no_constant)


def _check_header(header: dict[str, Any]) -> str:
    """Returns the kid of a v1 protected header, or raises ``bad_header`` (RFC 7515 section 4.1, RFC 9864)."""
    if "alg" not in header:
        raise Rejected("bad_header", 'the header has no alg; sign with Ed25519 and set "alg": "Ed25519"')
    if header["alg"] not in ALGORITHMS:
        raise Rejected("bad_header", f"alg {_show(header['alg'])} is not accepted; only Ed25519 (or EdDSA) is")
    if "kid" not in header:
        raise Rejected("bad_header", "the header has no kid; set it to the device id")
    kid = header["kid"]
    if not isinstance(kid, str) or not DEVICE_ID.fullmatch(kid):
        raise Rejected("bad_header", f"kid {_show(kid)} is not a device id (1 to 64 of A-Z a-z 0-9 . _ -)")
    if "crit" in header:
        raise Rejected("bad_header", "crit is present; protocol v1 understands no header extensions")
    unexpected = sorted(set(header) - HEADER_PARAMETERS)
    if unexpected:
        names = ", ".join(map(repr, unexpected))
        raise Rejected("bad_header", f"unexpected header parameter(s) {names}; a v1 header holds only alg and kid")
    return kid


# The signature (RFC 8037, RFC 8032) ---------------------------------------------------------------


def verify(envelope: Envelope, public_key: bytes) -> None:
    """Raises ``bad_signature`` unless the Ed25519 signature over the signing input verifies with the key.

    ``public_key`` is the device's raw 32-byte key (RFC 8032 section 5.1.5); any other
    length is the platform's fault, not the device's, so it raises ValueError.
    """
    if len(public_key) != PUBLIC_KEY_BYTES:
        raise ValueError(f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, not {len(public_key)}")
    key = _public_key(bytes(public_key))
    if len(envelope.signature) != SIGNATURE_BYTES:
        raise Rejected("bad_signature", f"the signature is {len(envelope.signature)} bytes; Ed25519 signatures are 64")
    try:
        key.verify(envelope.signature, envelope.signing_input)
    except InvalidSignature:
        raise Rejected(
            "bad_signature",
            f"the signature does not verify with the key registered for {envelope.device_id}: "
            "the message was changed after signing, or signed with another key",
        ) from None


# Curve25519 in Edwards form (RFC 8032 section 5.1): the field prime, d, and the square root of -1.
_P = 2**255 - 19
_D = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1 = pow(2, (_P - 1) // 4, _P)


def public_key_problem(raw: bytes) -> str | None:
    """Why these 32 bytes are no logger's Ed25519 public key, or None when they are one.

    Decodes the point as RFC 8032 section 5.1.3 does and refuses a
    non-canonical encoding, bytes that are no point of the curve, and a point
    of small order (8A = 0). Signatures under a small-order key prove nothing:
    all zeros, for one, is such a key, and a quarter of forged messages
    verify with it. Checked once, when a logger is registered.
    """
    if len(raw) != PUBLIC_KEY_BYTES:
        return f"an Ed25519 public key is {PUBLIC_KEY_BYTES} bytes, not {len(raw)}"
    encoded = int.from_bytes(raw, "little")
    y, sign = encoded & (2**255 - 1), encoded >> 255
    if y >= _P:
        return "the key is not canonically encoded (its y coordinate is not below 2^255 - 19)"
    u, v = (y * y - 1) % _P, (_D * y * y + 1) % _P
    x = u * pow(v, 3, _P) * pow(u * pow(v, 7, _P), (_P - 5) // 8, _P) % _P
    if v * x * x % _P == -u % _P:
        x = x * _SQRT_M1 % _P
    if v * x * x % _P != u or (x == 0 and sign):
        return "the key is not a point of the Ed25519 curve"
    point = (x if x % 2 == sign else _P - x, y)
    for _ in range(3):
        point = _edwards_add(point, point)
    if point == (0, 1):
        return "the key is a point of small order, under which forged signatures verify"
    return None


def _edwards_add(a: tuple[int, int], b: tuple[int, int]) -> tuple[int, int]:
    """The sum of two points of the curve -x^2 + y^2 = 1 + d x^2 y^2 (complete: no exceptions)."""
    (x1, y1), (x2, y2) = a, b
    t = _D * x1 * x2 * y1 * y2 % _P
    x = (x1 * y2 + y1 * x2) * pow(1 + t, _P - 2, _P) % _P
    y = (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P
    return x, y


@functools.lru_cache(maxsize=4096)
def _public_key(raw: bytes) -> Ed25519PublicKey:
    """The key object, made once per device key: a logger's key checks every one of its messages."""
    return Ed25519PublicKey.from_public_bytes(raw)


# The payload --------------------------------------------------------------------------------------


def read_payload(envelope: Envelope, *, topic_device: str | None = None) -> Payload:
    """Reads ``{"dev", "seq", "senml"}`` (spec, "Payload"); the pack's records are resolved by :func:`resolve`.

    Raises ``device_mismatch`` when ``dev`` differs from the kid or from the MQTT
    topic's device, and ``payload_invalid`` for anything else out of shape.
    """
    try:
        body = _json_object(envelope.payload, "payload")
    except ValueError as error:
        raise Rejected("payload_invalid", str(error)) from None
    device_id = _dev(body, envelope.device_id, topic_device)
    seq = _seq(body)
    senml = _pack(body)
    unexpected = sorted(set(body) - set(PAYLOAD_FIELDS))
    if unexpected:
        names = ", ".join(map(repr, unexpected))
        raise Rejected("payload_invalid", f"unexpected payload field(s) {names}; v1 payloads hold dev, seq and senml")
    return Payload(device_id, seq, senml)


def _field(body: dict[str, Any], name: str) -> Any:
    if name not in body:
        raise Rejected("payload_invalid", f"the payload has no {name}")
    return body[name]


def _dev(body: dict[str, Any], kid: str, topic_device: str | None) -> str:
    dev = _field(body, "dev")
    if not isinstance(dev, str):
        raise Rejected("payload_invalid", f"dev must be a string, not a JSON {_json_type(dev)}")
    if dev != kid:
        raise Rejected("device_mismatch", f"dev {_show(dev)} differs from the header's kid {kid!r}")
    if topic_device is not None and dev != topic_device:
        raise Rejected("device_mismatch", f"dev {_show(dev)} differs from the MQTT topic's device {topic_device!r}")
    return dev


def _seq(body: dict[str, Any]) -> int:
    seq = _field(body, "seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq <= MAX_SEQ:
        raise Rejected("payload_invalid", f"seq {_show(seq)} is not an integer from 0 to 2^53-1")
    return seq


def _pack(body: dict[str, Any]) -> list[Any]:
    senml = _field(body, "senml")
    if not isinstance(senml, list):
        raise Rejected("payload_invalid", f"senml must be an array (a SenML pack), not a JSON {_json_type(senml)}")
    if not 1 <= len(senml) <= MAX_RECORDS:
        raise Rejected("payload_invalid", f"senml has {len(senml)} records; a pack holds 1 to {MAX_RECORDS}")
    for index, record in enumerate(senml):
        _record(record, index)
    return senml


def _record(record: Any, index: int) -> dict[str, Any]:
    if not isinstance(record, dict):
        raise _invalid(index, f"is a JSON {_json_type(record)}, not an object")
    return record


# SenML resolution (RFC 8428 section 4.6) ----------------------------------------------------------


_BASE_FIELDS = frozenset({"bn", "bt", "bu", "bv"})


@dataclass(frozen=True)
class _Base:
    """The base fields in force at a record: they carry forward until a later record changes them."""

    name: str = ""
    time: float = 0.0
    unit: str | None = None
    value: float | None = None

    def updated(self, record: dict[str, Any], index: int) -> _Base:
        if record.keys().isdisjoint(_BASE_FIELDS):
            return self
        return _Base(  # not dataclasses.replace: that costs a message as much as resolving two records
            name=record.get("bn", self.name),
            time=_number(record, "bt", index, self.time),
            unit=record.get("bu", self.unit),
            value=_number(record, "bv", index, self.value),
        )


def resolve(payload: Payload, *, received_at: datetime.datetime) -> list[Reading]:
    """Resolves the pack (RFC 8428 section 4.6) into its Cel and %RH readings, in pack order.

    Base fields ``bn``, ``bt``, ``bu``, ``bv`` carry forward, ``n`` does not: name =
    bn + n, time = bt + t (below 2^28 relative to ``received_at``, else Unix time),
    value = bv + v, unit = u or bu. Records in other units are checked for shape,
    then skipped. Raises ``payload_invalid`` for a record out of shape,
    ``time_out_of_window`` for an evaluated time more than 5 minutes after or
    90 days before ``received_at``, and ``value_out_of_range`` outside the unit's
    range (spec, "SenML rules"). ``received_at`` must be timezone-aware.
    """
    if received_at.utcoffset() is None:
        raise ValueError("received_at must be timezone-aware")
    window = _Window(received_at.astimezone(datetime.UTC))
    readings = []
    base = _Base()
    for index, item in enumerate(payload.senml):
        record = _record(item, index)
        _check_shape(record, index)
        base = base.updated(record, index)
        reading = _reading(record, base, index, window)
        if reading is not None:
            readings.append(reading)
    return readings


def _check_shape(record: dict[str, Any], index: int) -> None:
    """Checks the JSON types of RFC 8428 section 4.1's fields; unknown fields are ignored (section 4.4).

    A record plainly in shape, as loggers send them, passes in one look at
    each of its fields; any other is checked field by field, in a fixed
    order, so that the first problem found is the one named. Either way,
    every number field of a record that passes converts to a finite float.
    """
    if not _plainly_in_shape(record):
        _check_shape_in_order(record, index)


_FIELD_TYPES = {
    **dict.fromkeys(("bn", "bu", "n", "u", "vs", "vd"), str),
    **dict.fromkeys(("bt", "bv", "bs", "t", "v", "s", "ut"), float),
    "vb": bool,
    "bver": int,
}
_EXACT_INTEGERS = 2**53


def _plainly_in_shape(record: dict[str, Any]) -> bool:
    """True only if ``_check_shape_in_order`` finds nothing wrong (the converse need not hold)."""
    values = 0
    for field, value in record.items():
        expected = _FIELD_TYPES.get(field)
        if expected is None:
            if field.endswith("_"):
                return False
            continue
        kind = type(value)
        if expected is float:
            if not (
                (kind is float and math.isfinite(value))
                or (kind is int and -_EXACT_INTEGERS <= value <= _EXACT_INTEGERS)
            ):
                return False
        elif expected is int:
            if kind is not int or value != SENML_VERSION:
                return False
        elif kind is not expected:
            return False
        values += field in _VALUE_FIELDS
    return values <= 1


def _check_shape_in_order(record: dict[str, Any], index: int) -> None:
    for field in _STRING_FIELDS:
        if field in record and not isinstance(record[field], str):
            raise _invalid(index, f"has {field} {_show(record[field])}; it must be a string")
    for field in _NUMBER_FIELDS:
        _number(record, field, index, None)
    if "vb" in record and not isinstance(record["vb"], bool):
        raise _invalid(index, f"has vb {_show(record['vb'])}; it must be true or false")
    if "bver" in record and (type(record["bver"]) is not int or record["bver"] != SENML_VERSION):
        raise _invalid(index, f"has bver {_show(record['bver'])}; only SenML version {SENML_VERSION} is understood")
    must_understand = sorted(field for field in record if field.endswith("_"))
    if must_understand:
        raise _invalid(index, f"has must-understand field(s) {', '.join(map(repr, must_understand))} (RFC 8428 4.4)")
    values = [field for field in _VALUE_FIELDS if field in record]
    if len(values) > 1:
        raise _invalid(index, f"has {len(values)} value fields ({', '.join(values)}); a record has at most one")


def _number[T](record: dict[str, Any], field: str, index: int, default: T) -> float | T:
    """The field as a finite float, or ``default`` when absent; booleans are not numbers."""
    if field not in record:
        return default
    value = record[field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid(index, f"has {field} {_show(value)}; it must be a number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not math.isfinite(number):
        raise _invalid(index, f"has {field} {_show(value)}; it must be a finite number")
    return number


def _reading(record: dict[str, Any], base: _Base, index: int, window: _Window) -> Reading | None:
    """The record resolved, or None when its unit is not evaluated; checks name, value, time and range."""
    name = base.name + record.get("n", "")
    if not _good_name(name):
        problem = "RFC 8428 4.5.1 names use A-Z a-z 0-9 - : . / _ and start with a letter or digit"
        raise _invalid(index, f"resolves to name {_show(name)}; {problem}")
    if record.keys().isdisjoint(_VALUE_OR_SUM) and base.value is None:
        raise _invalid(index, "has no value (v, vs, vb, vd or s) and no base value bv is in force")
    unit: str | None = record.get("u", base.unit)
    if unit is None or unit not in VALUE_RANGES:
        return None
    value = _value(record, base, index, unit)
    at = _time(float(record.get("t", 0.0)) + base.time, window, index)  # a finite number: _check_shape
    low, high = VALUE_RANGES[unit]
    if not math.isfinite(value):  # bv + v of two finite numbers can still overflow
        raise Rejected("value_out_of_range", f"record {index} ({name}) resolves to {value} {unit}, not a number")
    if not low <= value <= high:
        raise Rejected(
            "value_out_of_range", f"record {index} ({name}) reads {value:g} {unit}; the range is {low:g} to {high:g}"
        )
    return Reading(name, unit, value, at, index)


@functools.lru_cache(maxsize=4096)
def _good_name(name: str) -> bool:
    """Whether the resolved name is one RFC 8428 allows (a logger's few names recur in every message)."""
    return _SENML_NAME.fullmatch(name) is not None


_VALUE_OR_SUM = frozenset((*_VALUE_FIELDS, "s"))


def _value(record: dict[str, Any], base: _Base, index: int, unit: str) -> float:
    """bv + v (RFC 8428 section 4.6); an evaluated unit needs a number, not vs, vb, vd or only a sum."""
    if "v" in record:
        return float(record["v"]) + (base.value or 0.0)  # a finite number: _check_shape
    if base.value is not None and not any(field in record for field in _VALUE_FIELDS):
        return base.value
    raise _invalid(index, f"is in {unit} but has no numeric value v (nor a base value bv)")


class _Window:
    """The times a message's readings may have: received_at (in UTC) and its bounds, worked out once a message."""

    __slots__ = ("earliest", "latest", "received_at")

    def __init__(self, received_at: datetime.datetime) -> None:
        self.received_at, self.earliest, self.latest = received_at, received_at - MAX_AGE, received_at + MAX_FUTURE


def _time(seconds: float, window: _Window, index: int) -> datetime.datetime:
    """The resolved time (RFC 8428 section 4.5.3) in UTC, or ``time_out_of_window`` (spec, "SenML rules")."""
    received_at = window.received_at
    origin = received_at if seconds < RELATIVE_TIME_LIMIT else EPOCH  # both in UTC, and so is the sum
    try:
        at = origin + datetime.timedelta(seconds=seconds)
    except OverflowError:
        raise Rejected("time_out_of_window", f"record {index} has time {seconds:g}, beyond any calendar") from None
    if at > window.latest:
        raise Rejected(
            "time_out_of_window",
            f"record {index} is dated {at.isoformat()}, {at - received_at} after receipt; "
            "at most 5 minutes ahead is accepted: check the logger's clock",
        )
    if at < window.earliest:
        raise Rejected(
            "time_out_of_window",
            f"record {index} is dated {at.isoformat()}, {received_at - at} before receipt; "
            "readings older than 90 days are refused: check the logger's clock",
        )
    return at


def _invalid(index: int, problem: str) -> Rejected:
    return Rejected("payload_invalid", f"senml record {index} {problem}")


def _json_type(value: Any) -> str:
    names = {bool: "boolean", int: "number", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), "null")


def _show(value: Any) -> str:
    """A short JSON rendering of a value for a rejection's detail: a message may be 64 KiB."""
    text = json.dumps(value, ensure_ascii=True)
    return text if len(text) <= 80 else text[:77] + "..."


# A glance, for triage ------------------------------------------------------------------------------


def peek(raw: bytes) -> tuple[str, list[float]] | None:
    """The device and the °C values a message appears to carry, read without checking anything; None when
    that takes more than a glance.

    A hint of which messages to process first, never a reading: for a message
    that :func:`parse`, :func:`read_payload` and :func:`resolve` accept, the
    values are those of its Cel readings, in pack order (bv + v, or bv alone;
    the unit is u, else the bu in force). Costs a tenth of reading it properly.
    """
    if len(raw) > MAX_MESSAGE_BYTES:
        return None  # too_large: not worth a glance
    try:
        _header, payload, _signature = raw.split(b".")
        body = json.loads(base64.urlsafe_b64decode(payload + b"=" * (-len(payload) % 4)))
        device, records = body["dev"], body["senml"]
        if not isinstance(device, str) or not isinstance(records, list):
            return None
        values, unit, base = [], None, None
        for record in records:
            unit, base = record.get("bu", unit), record.get("bv", base)
            if record.get("u", unit) != TEMPERATURE:
                continue
            if base is not None and not _real(base):
                continue
            if "v" in record:
                if not _real(record["v"]):
                    continue
                value = float(record["v"]) + float(base or 0)
            elif base is not None and record.keys().isdisjoint(_VALUE_FIELDS):
                value = float(base)
            else:
                continue
            if math.isfinite(value):
                values.append(value)
    except (ValueError, TypeError, KeyError, AttributeError, ArithmeticError, RecursionError):
        return None  # not base64url, not JSON, not the v1 shape: the worker says which
    return device, values


def _real(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# Signing: for the device simulator and the tests --------------------------------------------------


def sign(private_key: Ed25519PrivateKey, device_id: str, payload: Mapping[str, Any]) -> bytes:
    """A compact JWS as the spec's test vector builds it: compact JSON, header ``{"alg":"Ed25519","kid":...}``.

    Ed25519 is deterministic (RFC 8032), so the same key and payload always give the same bytes.
    """
    if not DEVICE_ID.fullmatch(device_id):
        raise ValueError(f"{device_id!r} is not a device id (1 to 64 of A-Z a-z 0-9 . _ -)")
    header = _base64url_encode(_compact_json({"alg": "Ed25519", "kid": device_id}))
    signing_input = f"{header}.{_base64url_encode(_compact_json(dict(payload)))}"
    signature = private_key.sign(signing_input.encode("ascii"))
    return f"{signing_input}.{_base64url_encode(signature)}".encode("ascii")


def message(private_key: Ed25519PrivateKey, device_id: str, seq: int, senml: list[dict[str, Any]]) -> bytes:
    """A signed v1 message ``{"dev", "seq", "senml"}`` from the device."""
    return sign(private_key, device_id, {"dev": device_id, "seq": seq, "senml": senml})


def _compact_json(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), allow_nan=False).encode("ascii")
