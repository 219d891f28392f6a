"""Tests for iot_ingest.protocol: device protocol v1, a signed JWS carrying a SenML pack.

Pure tests: no database. The expected values come from device-protocol.md (its
test vector verbatim, its limits) and from RFC 7515 / RFC 8428, not from the
code under test. Fuzzing pushes random and damaged messages through the whole
parse -> verify -> read_payload -> resolve path, which may only ever return
readings or raise Rejected with one of the spec's reasons.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import pickle
import string
from typing import Any

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from hypothesis import given, settings
from hypothesis import strategies as st

from iot_ingest import protocol
from iot_ingest.protocol import (
    MAX_MESSAGE_BYTES,
    MAX_RECORDS,
    MAX_SEQ,
    REASONS,
    Payload,
    Reading,
    Rejected,
    message,
    parse,
    read_payload,
    resolve,
    sign,
    verify,
)

# database=None: no .hypothesis directory is written into the work tree.
# deadline=None: timing on a loaded CI machine must not fail a test.
PROPERTY = settings(database=None, deadline=None, max_examples=200)
UTC = datetime.UTC

# device-protocol.md, "Test vector", verbatim (the message split at its dots).
VECTOR_PRIVATE_KEY = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
VECTOR_PUBLIC_KEY = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
VECTOR_JWK_X = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"
VECTOR_HEADER = '{"alg":"Ed25519","kid":"LOG-0001"}'
VECTOR_PAYLOAD = (
    '{"dev":"LOG-0001","seq":42,"senml":[{"bn":"urn:dev:LOG-0001:","bt":1795867200,"bu":"Cel","n":"temp","v":5.1},'
    '{"n":"temp","t":60,"v":5.3},{"n":"temp","t":120,"v":8.6},{"n":"rh","u":"%RH","t":120,"v":41}]}'
)
VECTOR_MESSAGE = b".".join(
    [
        b"eyJhbGciOiJFZDI1NTE5Iiwia2lkIjoiTE9HLTAwMDEifQ",
        b"eyJkZXYiOiJMT0ctMDAwMSIsInNlcSI6NDIsInNlbm1sIjpbeyJibiI6InVybjpkZXY6TE9HLTAwMDE6IiwiYnQiOjE3OTU4NjcyMDAsImJ1"
        b"IjoiQ2VsIiwibiI6InRlbXAiLCJ2Ijo1LjF9LHsibiI6InRlbXAiLCJ0Ijo2MCwidiI6NS4zfSx7Im4iOiJ0ZW1wIiwidCI6MTIwLCJ2Ijo4"
        b"LjZ9LHsibiI6InJoIiwidSI6IiVSSCIsInQiOjEyMCwidiI6NDF9XX0",
        b"vFQ5f9xZ6h8XgSB7OhFIqF0lxL5ue8dj7UhjFJNv3sOELHhNHyom7WE4AZbUSrCNmHwlV06PJHav0rx1Ez7LAQ",
    ]
)
SPEC_REASONS = (
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

KEY = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(VECTOR_PRIVATE_KEY))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PUBLIC_KEY = bytes.fromhex(VECTOR_PUBLIC_KEY)
DEVICE = "LOG-0001"
HEADER = {"alg": "Ed25519", "kid": DEVICE}
NAME = "urn:dev:LOG-0001:temp"
RECEIVED = datetime.datetime(2026, 11, 28, 12, 3, tzinfo=UTC)
NOW = int(RECEIVED.timestamp())
DAY = 86400
ONE_READING = {"dev": DEVICE, "seq": 7, "senml": [{"n": NAME, "u": "Cel", "v": 4.5}]}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def jws(header: Any, payload: Any, *, key: Ed25519PrivateKey = KEY) -> bytes:
    """A compact JWS with a good signature over any header and payload (bytes as they are, else compact JSON)."""
    encoded = [
        b64(part if isinstance(part, bytes) else json.dumps(part, separators=(",", ":")).encode())
        for part in (header, payload)
    ]
    signing_input = ".".join(encoded)
    return f"{signing_input}.{b64(key.sign(signing_input.encode()))}".encode()


def pack(*records: dict[str, Any]) -> bytes:
    return message(KEY, DEVICE, 1, list(records))


def run(raw: bytes, *, topic_device: str | None = None, received_at: datetime.datetime = RECEIVED) -> list[Reading]:
    """The service's path through the module, with the vector's device as the registered one."""
    envelope = parse(raw)
    verify(envelope, PUBLIC_KEY)
    payload = read_payload(envelope, topic_device=topic_device)
    return resolve(payload, received_at=received_at)


def reason(raw: bytes, **kwargs: Any) -> str:
    with pytest.raises(Rejected) as caught:
        run(raw, **kwargs)
    assert caught.value.detail
    return caught.value.reason


def at(hour: int, minute: int) -> datetime.datetime:
    return datetime.datetime(2026, 11, 28, hour, minute, tzinfo=UTC)


def seen(readings: list[Reading]) -> list[tuple[str, str, float, datetime.datetime, int]]:
    return [(r.name, r.unit, r.value, r.at, r.index) for r in readings]


# The spec's test vector ---------------------------------------------------------------------------


def test_the_vector_keys_are_rfc_8032_test_1_and_the_jwk_matches():
    assert KEY.public_key().public_bytes_raw() == PUBLIC_KEY
    assert b64(PUBLIC_KEY) == VECTOR_JWK_X


def test_the_vector_message_verifies_with_the_published_public_key():
    envelope = parse(VECTOR_MESSAGE)
    verify(envelope, PUBLIC_KEY)
    assert envelope.device_id == DEVICE
    assert envelope.header == json.loads(VECTOR_HEADER)
    assert envelope.payload == VECTOR_PAYLOAD.encode()
    assert envelope.signing_input == VECTOR_MESSAGE.rpartition(b".")[0]
    assert len(envelope.signature) == 64


def test_sign_reproduces_the_vector_byte_for_byte():
    assert sign(KEY, DEVICE, json.loads(VECTOR_PAYLOAD)) == VECTOR_MESSAGE
    assert message(KEY, DEVICE, 42, json.loads(VECTOR_PAYLOAD)["senml"]) == VECTOR_MESSAGE


def test_the_vector_reads_and_resolves_to_the_published_readings():
    payload = read_payload(parse(VECTOR_MESSAGE), topic_device=DEVICE)
    assert payload == Payload(DEVICE, 42, json.loads(VECTOR_PAYLOAD)["senml"])
    assert seen(resolve(payload, received_at=at(12, 3))) == [
        (NAME, "Cel", 5.1, at(12, 0), 0),
        (NAME, "Cel", 5.3, at(12, 1), 1),
        (NAME, "Cel", 8.6, at(12, 2), 2),
        ("urn:dev:LOG-0001:rh", "%RH", 41.0, at(12, 2), 3),
    ]


def _replacements(byte: int) -> set[int]:
    """Another base64url character, one bit flipped, and a non-ASCII byte."""
    alphabet = (string.ascii_letters + string.digits + "-_").encode()
    following = alphabet[(alphabet.index(byte) + 1) % 64] if byte in alphabet else alphabet[0]
    return {following, byte ^ 0x01, 0xE9} - {byte}


def test_changing_any_byte_of_the_header_or_payload_without_re_signing_is_rejected():
    signing_input, _, signature = VECTOR_MESSAGE.rpartition(b".")
    refused_early: set[str] = set()
    reached_the_signature = 0
    for position in range(len(signing_input)):
        for replacement in _replacements(signing_input[position]):
            changed = bytearray(signing_input)
            changed[position] = replacement
            try:
                envelope = parse(bytes(changed) + b"." + signature)
            except Rejected as rejected:
                refused_early.add(rejected.reason)
                continue
            with pytest.raises(Rejected) as caught:
                verify(envelope, PUBLIC_KEY)
            assert caught.value.reason == "bad_signature", (position, replacement)
            reached_the_signature += 1
    assert refused_early <= {"malformed", "bad_header"}
    # Most changes still parse (every payload byte is opaque until verified): the signature is what refuses them.
    assert reached_the_signature > len(signing_input)


# The header (RFC 7515 section 4.1, RFC 9864) ------------------------------------------------------


def test_the_older_eddsa_alg_is_accepted():
    readings = run(jws({"alg": "EdDSA", "kid": DEVICE}, ONE_READING))
    assert seen(readings) == [(NAME, "Cel", 4.5, RECEIVED, 0)]


def test_a_kid_of_64_characters_is_a_device_id():
    kid = "A-9._" + "x" * 59
    envelope = parse(jws({"alg": "Ed25519", "kid": kid}, {**ONE_READING, "dev": kid}))
    verify(envelope, PUBLIC_KEY)
    assert read_payload(envelope).device_id == kid


@pytest.mark.parametrize(
    "header",
    [
        pytest.param({"alg": "none", "kid": DEVICE}, id="alg none"),
        pytest.param({"alg": "HS256", "kid": DEVICE}, id="alg HS256"),
        pytest.param({"alg": "ES256", "kid": DEVICE}, id="alg ES256"),
        pytest.param({"alg": "ed25519", "kid": DEVICE}, id="alg in lower case"),
        pytest.param({"alg": ["Ed25519"], "kid": DEVICE}, id="alg an array"),
        pytest.param({"alg": None, "kid": DEVICE}, id="alg null"),
        pytest.param({"kid": DEVICE}, id="alg missing"),
        pytest.param({"alg": "Ed25519"}, id="kid missing"),
        pytest.param({"alg": "Ed25519", "kid": None}, id="kid null"),
        pytest.param({"alg": "Ed25519", "kid": 1}, id="kid a number"),
        pytest.param({"alg": "Ed25519", "kid": ""}, id="kid empty"),
        pytest.param({"alg": "Ed25519", "kid": "x" * 65}, id="kid of 65 characters"),
        pytest.param({"alg": "Ed25519", "kid": "LOG 0001"}, id="kid with a space"),
        pytest.param({"alg": "Ed25519", "kid": "LOG-0001\n"}, id="kid with a trailing newline"),
        pytest.param({"alg": "Ed25519", "kid": "LÖG-0001"}, id="kid not ASCII"),
        pytest.param({"alg": "Ed25519", "kid": DEVICE, "crit": ["exp"], "exp": 1}, id="crit"),
        pytest.param({"alg": "Ed25519", "kid": DEVICE, "b64": False}, id="b64 false"),
        pytest.param({"alg": "Ed25519", "kid": DEVICE, "typ": "JOSE"}, id="another parameter"),
    ],
)
def test_a_header_other_than_alg_ed25519_and_a_kid_is_a_bad_header(header: dict[str, Any]):
    assert reason(jws(header, ONE_READING)) == "bad_header"


def test_an_unsigned_alg_none_message_is_a_bad_header():
    unsigned = f"{b64(b'{"alg":"none","kid":"LOG-0001"}')}.{b64(json.dumps(ONE_READING).encode())}.".encode()
    assert reason(unsigned) == "bad_header"


# Malformed messages (RFC 7515 sections 2 and 7.1) -------------------------------------------------

HEADER_PART, PAYLOAD_PART, SIGNATURE_PART = VECTOR_MESSAGE.split(b".")


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(b"", id="empty"),
        pytest.param(HEADER_PART + b"." + PAYLOAD_PART, id="two parts"),
        pytest.param(VECTOR_MESSAGE + b".", id="four parts"),
        pytest.param(VECTOR_MESSAGE + b"\n", id="a trailing newline"),
        pytest.param(b" " + VECTOR_MESSAGE, id="a leading space"),
        pytest.param(VECTOR_MESSAGE.replace(b"LAQ", "LAQé".encode()), id="not ASCII"),
        pytest.param(VECTOR_MESSAGE.replace(HEADER_PART, HEADER_PART + b"=="), id="base64 padding"),
        pytest.param(VECTOR_MESSAGE.replace(b"vFQ5", b"+FQ5"), id="the standard base64 alphabet"),
        pytest.param(VECTOR_MESSAGE.replace(b"LAQ", b"LAR"), id="non-canonical base64url"),
        pytest.param(VECTOR_MESSAGE.replace(HEADER_PART, HEADER_PART + b"A"), id="a base64url length of 4n+1"),
        pytest.param(jws(b"not json", ONE_READING), id="header not JSON"),
        pytest.param(jws(b"\xff\xfe{}", ONE_READING), id="header not UTF-8"),
        pytest.param(jws([HEADER], ONE_READING), id="header a JSON array"),
        pytest.param(jws("Ed25519", ONE_READING), id="header a JSON string"),
        pytest.param(jws(b'{"alg":"none","alg":"Ed25519","kid":"LOG-0001"}', ONE_READING), id="duplicate alg"),
        pytest.param(jws(b'{"alg":"Ed25519","kid":"LOG-0001","x":NaN}', ONE_READING), id="NaN in the header"),
    ],
)
def test_anything_but_three_canonical_base64url_parts_and_a_json_header_is_malformed(raw: bytes):
    assert reason(raw) == "malformed"


# Size (spec: "Whole message at most 64 KiB") ------------------------------------------------------


def message_of(size: int) -> bytes:
    """A valid message of exactly ``size`` bytes, padded by a string value in a unit that is not evaluated."""
    empty = len(pack({"n": NAME, "u": "Cel", "v": 4.5}, {"n": "pad", "u": "count", "vs": ""}))
    estimate = (size - empty) * 3 // 4
    for length in range(estimate - 8, estimate + 8):
        raw = pack({"n": NAME, "u": "Cel", "v": 4.5}, {"n": "pad", "u": "count", "vs": "x" * length})
        if len(raw) == size:
            return raw
    raise AssertionError(f"no message is exactly {size} bytes")


def test_a_message_of_exactly_64_kib_is_accepted_and_one_byte_more_is_too_large():
    assert seen(run(message_of(MAX_MESSAGE_BYTES))) == [(NAME, "Cel", 4.5, RECEIVED, 0)]
    assert reason(message_of(MAX_MESSAGE_BYTES + 1)) == "too_large"


def test_size_is_checked_before_anything_else():
    assert reason(b"\xff" * (MAX_MESSAGE_BYTES + 1)) == "too_large"


# The signature (RFC 8037) -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(jws(HEADER, ONE_READING, key=OTHER_KEY), id="signed with another key"),
        pytest.param(VECTOR_MESSAGE.rpartition(b".")[0] + b".", id="no signature"),
        pytest.param(VECTOR_MESSAGE.replace(SIGNATURE_PART, b64(bytes(64)).encode()), id="64 zero bytes"),
        pytest.param(
            VECTOR_MESSAGE.replace(SIGNATURE_PART, b64(base64.urlsafe_b64decode(SIGNATURE_PART + b"==")[:63]).encode()),
            id="63 bytes",
        ),
        pytest.param(VECTOR_MESSAGE.replace(SIGNATURE_PART, SIGNATURE_PART + b"AA"), id="65 bytes"),
        pytest.param(
            VECTOR_MESSAGE.replace(HEADER_PART, b64(b'{"kid":"LOG-0001","alg":"Ed25519"}').encode()),
            id="header re-ordered",
        ),
        pytest.param(
            VECTOR_MESSAGE.replace(HEADER_PART, b64(b'{"alg":"EdDSA","kid":"LOG-0001"}').encode()), id="alg swapped"
        ),
    ],
)
def test_a_signature_that_does_not_verify_is_a_bad_signature(raw: bytes):
    assert reason(raw) == "bad_signature"


@pytest.mark.parametrize(
    ("raw", "words"),
    [
        (b"\x00" * (MAX_MESSAGE_BYTES + 1), "65537 bytes; the limit is 65536"),
        (HEADER_PART + b"." + PAYLOAD_PART, "2 dot-separated parts"),
        (jws({"alg": "HS256", "kid": DEVICE}, ONE_READING), 'alg "HS256" is not accepted'),
        (jws({**HEADER, "crit": ["b64"], "b64": False}, ONE_READING), "crit is present"),
        (jws({**HEADER, "b64": False}, ONE_READING), "unexpected header parameter(s) 'b64'"),
        (VECTOR_MESSAGE.replace(SIGNATURE_PART, SIGNATURE_PART[:84]), "63 bytes; Ed25519 signatures are 64"),
        (jws(HEADER, ONE_READING, key=OTHER_KEY), "does not verify with the key registered for LOG-0001"),
        (jws(HEADER, {**ONE_READING, "dev": "LOG-0002"}), 'dev "LOG-0002" differs from the header\'s kid'),
        (pack({"n": NAME, "u": "Cel", "v": 100.5}), "reads 100.5 Cel; the range is -100 to 100"),
        (pack({"n": NAME, "u": "Cel", "v": 4.5, "t": 360}), "0:06:00 after receipt"),
        (pack({"n": NAME, "u": "Cel", "v": 4.5}, {"n": "x", "u": "Cel", "v": "4"}), 'senml record 1 has v "4"'),
    ],
)
def test_a_rejections_detail_says_what_was_wrong(raw: bytes, words: str):
    with pytest.raises(Rejected) as caught:
        run(raw)
    assert words in caught.value.detail


def test_a_registered_key_of_the_wrong_length_is_the_platforms_error_not_the_devices():
    with pytest.raises(ValueError, match="32 bytes"):
        verify(parse(VECTOR_MESSAGE), PUBLIC_KEY[:31])


# Public keys (RFC 8032 section 5.1.3) ---------------------------------------------------------------


# The eight points of order 1, 2, 4 and 8, each canonically encoded: [L]P of random curve points P.
SMALL_ORDER = [
    bytes.fromhex(point)
    for point in (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    )
]


def test_under_a_key_of_small_order_forged_signatures_verify() -> None:
    # Why such keys are refused: R the neutral point and S = 0 verify for a quarter of all messages under all zeros.
    key = Ed25519PublicKey.from_public_bytes(bytes(32))
    forgery = (1).to_bytes(32, "little") + bytes(32)
    verified = 0
    for n in range(64):
        with contextlib.suppress(InvalidSignature):
            key.verify(forgery, b"message %d" % n)
            verified += 1
    assert verified > 0


@pytest.mark.parametrize("key", SMALL_ORDER, ids=lambda key: key.hex()[:8])
def test_a_public_key_of_small_order_is_refused(key: bytes) -> None:
    assert protocol.public_key_problem(key) == "the key is a point of small order, under which forged signatures verify"


@given(st.binary(min_size=32, max_size=32))
def test_every_genuine_public_key_is_accepted(seed: bytes) -> None:
    key = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes_raw()
    assert protocol.public_key_problem(key) is None


def test_bytes_that_are_no_canonical_curve_point_are_refused() -> None:
    assert protocol.public_key_problem((2).to_bytes(32, "little")) == "the key is not a point of the Ed25519 curve"
    assert "not canonically encoded" in (protocol.public_key_problem(b"\xff" * 32) or "")
    assert protocol.public_key_problem(bytes(31)) == "an Ed25519 public key is 32 bytes, not 31"


# The payload --------------------------------------------------------------------------------------


def test_dev_must_be_the_kid():
    assert reason(jws(HEADER, {**ONE_READING, "dev": "LOG-0002"})) == "device_mismatch"


def test_dev_must_be_the_mqtt_topics_device_when_there_is_one():
    assert reason(VECTOR_MESSAGE, topic_device="LOG-0002") == "device_mismatch"
    assert len(run(VECTOR_MESSAGE, topic_device=DEVICE)) == 4


def test_a_valid_dev_seq_and_senml_are_read_as_they_are():
    payload = read_payload(parse(jws(HEADER, ONE_READING)))
    assert payload == Payload(DEVICE, 7, ONE_READING["senml"])


SENML = [{"n": NAME, "u": "Cel", "v": 4.5}]


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b"\xff\xfe", id="not UTF-8"),
        pytest.param(b"", id="empty"),
        pytest.param(b"dev=LOG-0001", id="not JSON"),
        pytest.param(b"\xef\xbb\xbf" + json.dumps(ONE_READING).encode(), id="a byte order mark"),
        pytest.param([ONE_READING], id="a JSON array"),
        pytest.param(b'{"dev":"LOG-0001","seq":1,"seq":2,"senml":[{"n":"t","u":"Cel","v":1}]}', id="duplicate seq"),
        pytest.param(b'{"dev":"LOG-0001","seq":NaN,"senml":[{"n":"t","u":"Cel","v":1}]}', id="NaN"),
        pytest.param(b"[" * 5000 + b"]" * 5000, id="deeply nested"),
        pytest.param({"seq": 1, "senml": SENML}, id="no dev"),
        pytest.param({"dev": DEVICE, "senml": SENML}, id="no seq"),
        pytest.param({"dev": DEVICE, "seq": 1}, id="no senml"),
        pytest.param({"dev": DEVICE, "seq": 1, "senml": SENML, "note": "hi"}, id="an unexpected field"),
        pytest.param({"dev": None, "seq": 1, "senml": SENML}, id="dev null"),
        pytest.param({"dev": ["LOG-0001"], "seq": 1, "senml": SENML}, id="dev an array"),
        pytest.param({"dev": DEVICE, "seq": True, "senml": SENML}, id="seq true"),
        pytest.param({"dev": DEVICE, "seq": 1.0, "senml": SENML}, id="seq 1.0"),
        pytest.param({"dev": DEVICE, "seq": "1", "senml": SENML}, id="seq a string"),
        pytest.param({"dev": DEVICE, "seq": None, "senml": SENML}, id="seq null"),
        pytest.param({"dev": DEVICE, "seq": 1, "senml": SENML[0]}, id="senml an object"),
        pytest.param({"dev": DEVICE, "seq": 1, "senml": []}, id="senml empty"),
        pytest.param({"dev": DEVICE, "seq": 1, "senml": [*SENML, 5]}, id="a record that is a number"),
        pytest.param({"dev": DEVICE, "seq": 1, "senml": [*SENML, [SENML[0]]]}, id="a record that is an array"),
    ],
)
def test_a_payload_that_is_not_the_v1_object_is_invalid(payload: Any):
    assert reason(jws(HEADER, payload)) == "payload_invalid"


@pytest.mark.parametrize(("seq", "accepted"), [(0, True), (MAX_SEQ, True), (-1, False), (MAX_SEQ + 1, False)])
def test_seq_runs_from_0_to_2_53_minus_1(seq: int, accepted: bool):
    raw = message(KEY, DEVICE, seq, SENML)
    if accepted:
        assert read_payload(parse(raw)).seq == seq
    else:
        assert reason(raw) == "payload_invalid"


def test_a_pack_holds_at_most_1000_records():
    # Compact records, as a logger would send: 1000 must fit in 64 KiB.
    records = [{"n": "t", "t": -index, "v": 4.5} for index in range(MAX_RECORDS + 1)]
    records[0] |= {"bn": "urn:dev:LOG-0001:", "bu": "Cel"}
    assert len(run(pack(*records[:MAX_RECORDS]))) == MAX_RECORDS
    assert reason(pack(*records)) == "payload_invalid"


# SenML records (RFC 8428 sections 4.1 to 4.5) -----------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        pytest.param({"n": 5, "u": "Cel", "v": 1}, id="n a number"),
        pytest.param({"bn": None, "n": "t", "u": "Cel", "v": 1}, id="bn null"),
        pytest.param({"n": "t", "u": 1, "v": 1}, id="u a number"),
        pytest.param({"n": "t", "bu": ["Cel"], "v": 1}, id="bu an array"),
        pytest.param({"n": "t", "u": "Cel", "v": "1"}, id="v a string"),
        pytest.param({"n": "t", "u": "Cel", "v": True}, id="v true"),
        pytest.param({"n": "t", "u": "Cel", "v": None}, id="v null"),
        pytest.param({"n": "t", "u": "Cel", "bv": False, "v": 1}, id="bv false"),
        pytest.param({"n": "t", "u": "Cel", "t": "0", "v": 1}, id="t a string"),
        pytest.param({"n": "t", "u": "Cel", "bt": None, "v": 1}, id="bt null"),
        pytest.param({"n": "t", "u": "Cel", "ut": True, "v": 1}, id="ut true"),
        pytest.param({"n": "t", "u": "count", "s": "1"}, id="s a string"),
        pytest.param({"n": "t", "u": "count", "vs": 1}, id="vs a number"),
        pytest.param({"n": "t", "u": "count", "vd": 1}, id="vd a number"),
        pytest.param({"n": "t", "u": "count", "vb": "true"}, id="vb a string"),
        pytest.param({"bver": 11, "n": "t", "u": "Cel", "v": 1}, id="bver 11"),
        pytest.param({"bver": "10", "n": "t", "u": "Cel", "v": 1}, id="bver a string"),
        pytest.param({"n": "t", "u": "Cel", "v": 1, "unit_": "K"}, id="a must-understand field"),
        pytest.param({"n": "t", "u": "Cel", "v": 1, "vs": "1"}, id="two value fields"),
        pytest.param({"n": "t", "u": "Cel"}, id="no value"),
        pytest.param({"n": "t", "u": "count"}, id="no value in a unit not evaluated"),
        pytest.param({"n": "t", "u": "Cel", "vs": "cold"}, id="a temperature that is a string"),
        pytest.param({"n": "t", "u": "Cel", "s": 4}, id="a temperature that is only a sum"),
        pytest.param({"u": "Cel", "v": 1}, id="an empty name"),
        pytest.param({"n": "-t", "u": "Cel", "v": 1}, id="a name starting with -"),
        pytest.param({"n": "probe 1", "u": "Cel", "v": 1}, id="a name with a space"),
        pytest.param({"n": "t\u0000", "u": "Cel", "v": 1}, id="a name with NUL"),
        pytest.param({"n": "t", "u": "Pa", "v": "high"}, id="a bad value in a unit not evaluated"),
    ],
)
def test_a_record_out_of_shape_is_invalid(record: dict[str, Any]):
    assert reason(pack({"n": NAME, "u": "Cel", "v": 4.5}, record)) == "payload_invalid"


@pytest.mark.parametrize("number", [b"1e400", b"-1e400", b"1" * 400])
def test_a_number_beyond_a_double_is_invalid(number: bytes):
    payload = b'{"dev":"LOG-0001","seq":1,"senml":[{"n":"t","u":"Cel","v":' + number + b"}]}"
    assert reason(jws(HEADER, payload)) == "payload_invalid"


def test_unknown_fields_without_a_trailing_underscore_are_ignored():
    readings = run(pack({"n": NAME, "u": "Cel", "v": 4.5, "probe": {"model": "PT100"}, "bver": 10}))
    assert seen(readings) == [(NAME, "Cel", 4.5, RECEIVED, 0)]


# Values and times at their limits (spec, "SenML rules") -------------------------------------------


@pytest.mark.parametrize(
    ("unit", "value", "outcome"),
    [
        ("Cel", -100, None),
        ("Cel", 100, None),
        ("Cel", -100.01, "value_out_of_range"),
        ("Cel", 100.01, "value_out_of_range"),
        ("%RH", 0, None),
        ("%RH", 100.5, None),  # the spec bounds temperatures only
        ("Pa", 100000, None),
    ],
)
def test_values_are_checked_against_their_units_range_inclusive(unit: str, value: float, outcome: str | None):
    raw = pack({"n": NAME, "u": unit, "v": value})
    if outcome is None:
        assert [r.value for r in run(raw)] == ([value] if unit != "Pa" else [])
    else:
        assert reason(raw) == outcome


@pytest.mark.parametrize(
    ("time", "outcome"),
    [
        pytest.param({"t": 300}, RECEIVED + datetime.timedelta(minutes=5), id="relative, 5 min ahead"),
        pytest.param({"t": 301}, "time_out_of_window", id="relative, 5 min 1 s ahead"),
        pytest.param({"t": -90 * DAY}, RECEIVED - datetime.timedelta(days=90), id="relative, 90 days ago"),
        pytest.param({"t": -90 * DAY - 1}, "time_out_of_window", id="relative, 90 days 1 s ago"),
        pytest.param({"bt": 0, "t": -60}, RECEIVED - datetime.timedelta(minutes=1), id="relative, a minute ago"),
        pytest.param({"t": 0.5}, RECEIVED + datetime.timedelta(milliseconds=500), id="relative, fractional"),
        pytest.param({}, RECEIVED, id="no time at all: now"),
        pytest.param({"t": NOW + 300}, RECEIVED + datetime.timedelta(minutes=5), id="absolute, 5 min ahead"),
        pytest.param({"t": NOW + 301}, "time_out_of_window", id="absolute, 5 min 1 s ahead"),
        pytest.param({"bt": NOW, "t": -90 * DAY}, RECEIVED - datetime.timedelta(days=90), id="absolute, 90 days ago"),
        pytest.param({"bt": NOW - 90 * DAY, "t": -1}, "time_out_of_window", id="absolute, 90 days 1 s ago"),
        pytest.param({"t": 2**28 - 1}, "time_out_of_window", id="2^28-1 is relative: years ahead"),
        pytest.param({"t": 2**28}, "time_out_of_window", id="2^28 is absolute: 1978"),
        pytest.param({"t": 1e300}, "time_out_of_window", id="beyond the calendar"),
        pytest.param({"t": -1e300}, "time_out_of_window", id="before the calendar"),
    ],
)
def test_times_resolve_relative_below_2_28_and_must_lie_in_the_window(time: dict[str, float], outcome: Any):
    raw = pack({"n": NAME, "u": "Cel", "v": 4.5, **time})
    if isinstance(outcome, str):
        assert reason(raw) == outcome
    else:
        assert [r.at for r in run(raw)] == [outcome]


def test_2_28_itself_is_absolute_and_anything_below_is_relative():
    received = datetime.datetime.fromtimestamp(2**28, UTC)  # 1978: a receipt time where the two readings differ
    assert [r.at for r in run(pack({"n": NAME, "u": "Cel", "v": 4.5, "t": 2**28}), received_at=received)] == [received]
    assert reason(pack({"n": NAME, "u": "Cel", "v": 4.5, "t": 2**28 - 1}), received_at=received) == "time_out_of_window"


def test_records_in_other_units_are_not_evaluated_for_time_or_range():
    readings = run(pack({"n": NAME, "u": "Cel", "v": 4.5}, {"n": "battery", "u": "V", "t": -400 * DAY, "v": 1e9}))
    assert seen(readings) == [(NAME, "Cel", 4.5, RECEIVED, 0)]


def test_times_are_returned_in_utc_whatever_the_zone_of_receipt():
    received = RECEIVED.astimezone(datetime.timezone(datetime.timedelta(hours=-5)))
    (reading,) = run(pack({"n": NAME, "u": "Cel", "v": 4.5, "t": -60}), received_at=received)
    assert reading.at == RECEIVED - datetime.timedelta(minutes=1)
    assert reading.at.utcoffset() == datetime.timedelta(0)


def test_the_moment_of_receipt_must_be_timezone_aware():
    with pytest.raises(ValueError, match="timezone-aware"):
        run(VECTOR_MESSAGE, received_at=RECEIVED.replace(tzinfo=None))


# SenML resolution (RFC 8428 section 4.6) ----------------------------------------------------------


def test_base_fields_carry_forward_and_may_change_mid_pack():
    readings = run(
        pack(
            {"bn": "urn:dev:LOG-0001:", "bt": NOW - 600, "bu": "Cel", "n": "air", "v": 4.0},
            {"n": "air", "t": 60, "v": 4.5},
            {"bn": "urn:dev:LOG-0001:probe/", "bt": NOW - 300, "n": "1", "v": 6.0},
            {"n": "2", "t": 30, "v": 7.0},
            {"bu": "%RH", "n": "rh", "v": 40},
        )
    )
    minute = datetime.timedelta(minutes=1)
    assert seen(readings) == [
        ("urn:dev:LOG-0001:air", "Cel", 4.0, RECEIVED - 10 * minute, 0),
        ("urn:dev:LOG-0001:air", "Cel", 4.5, RECEIVED - 9 * minute, 1),
        ("urn:dev:LOG-0001:probe/1", "Cel", 6.0, RECEIVED - 5 * minute, 2),
        ("urn:dev:LOG-0001:probe/2", "Cel", 7.0, RECEIVED - 4.5 * minute, 3),
        ("urn:dev:LOG-0001:probe/rh", "%RH", 40.0, RECEIVED - 5 * minute, 4),
    ]


def test_n_does_not_carry_forward():
    readings = run(pack({"bn": "urn:dev:LOG-0001:temp", "n": "/inner", "u": "Cel", "v": 4.0}, {"u": "Cel", "v": 5.0}))
    assert [r.name for r in readings] == ["urn:dev:LOG-0001:temp/inner", NAME]


def test_the_value_is_bv_plus_v_or_bv_alone():
    readings = run(
        pack(
            {"bn": "urn:dev:LOG-0001:", "bu": "Cel", "bv": 20, "n": "a", "v": -0.5},
            {"n": "b"},
            {"bv": 0, "n": "c", "v": 3},
        )
    )
    assert [(r.name[-1], r.value) for r in readings] == [("a", 19.5), ("b", 20.0), ("c", 3.0)]


def test_the_range_applies_to_the_resolved_value():
    assert reason(pack({"bv": 90, "n": NAME, "u": "Cel", "v": 10.5})) == "value_out_of_range"


@pytest.mark.parametrize("unit", ["Cel", "%RH"])
def test_a_value_whose_base_and_value_overflow_together_is_out_of_range(unit: str) -> None:
    # Each is finite, their sum is not: stored, an infinite humidity broke its shipment's Merkle commits and charts.
    assert reason(pack({"bv": 1e308, "n": NAME, "u": unit, "v": 1e308})) == "value_out_of_range"


def test_bu_is_the_default_unit_and_u_overrides_it_for_its_record_only():
    readings = run(
        pack(
            {"bn": "urn:dev:LOG-0001:", "bu": "Cel", "n": "temp", "v": 4.0},
            {"n": "rh", "u": "%RH", "v": 55},
            {"n": "temp", "v": 4.2},
        )
    )
    assert [(r.name, r.unit) for r in readings] == [(NAME, "Cel"), ("urn:dev:LOG-0001:rh", "%RH"), (NAME, "Cel")]


def test_records_in_other_units_are_skipped_and_indexes_stay_their_pack_positions():
    readings = run(
        pack(
            {"bn": "urn:dev:LOG-0001:", "n": "battery", "u": "%EL", "v": 87},
            {"n": "door", "vb": True},
            {"n": "temp", "u": "Cel", "v": 4.0},
            {"n": "status", "u": "count", "vs": "ok"},
            {"n": "temp", "u": "degC", "v": 4.1},
            {"n": "rh", "u": "%RH", "v": 40},
        )
    )
    assert [(r.unit, r.index) for r in readings] == [("Cel", 2), ("%RH", 5)]


def test_a_rejection_names_its_reason():
    with pytest.raises(ValueError, match="not one of"):
        Rejected("too_hot", "a reason the spec does not have")
    assert REASONS == SPEC_REASONS  # the spec's order, too
    rejected = Rejected("replay", "seq 42 again")
    assert str(rejected) == "replay: seq 42 again"
    copied = pickle.loads(pickle.dumps(rejected))  # noqa: S301 - our own bytes
    assert (copied.reason, copied.detail) == (rejected.reason, rejected.detail)


# Fuzzing: nothing but readings or a Rejected ------------------------------------------------------


def outcome(raw: bytes) -> list[Reading] | str:
    try:
        return run(raw)
    except Rejected as rejected:
        refused = rejected
    assert refused.reason in REASONS
    assert refused.detail
    return refused.reason


@PROPERTY
@given(st.binary(max_size=2000))
def test_random_bytes_are_rejected_never_crash(raw: bytes):
    assert isinstance(outcome(raw), str)


@PROPERTY
@given(st.text(max_size=500))
def test_random_text_is_rejected_never_crashes(text: str):
    assert isinstance(outcome(text.encode("utf-8", "surrogatepass")), str)


ORIGINALS = (VECTOR_MESSAGE, jws(HEADER, ONE_READING))


@st.composite
def damaged(draw: st.DrawFn) -> bytes:
    raw = bytearray(draw(st.sampled_from(ORIGINALS)))
    for _ in range(draw(st.integers(1, 3))):
        position = draw(st.integers(0, len(raw)))
        kind = draw(st.sampled_from(("flip", "truncate", "insert", "delete")))
        if kind == "flip" and position < len(raw):
            raw[position] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del raw[position:]
        elif kind == "insert":
            raw[position:position] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from([b".", b"=", b"A", b"_"]))
        else:
            del raw[position : position + 1]
    return bytes(raw)


@PROPERTY
@given(damaged())
def test_damaged_messages_are_rejected_unless_undamaged(raw: bytes):
    # Canonical base64url only: no second spelling of a signed message is accepted.
    assert isinstance(outcome(raw), str) or raw in ORIGINALS


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=6),
    st.sampled_from(["Cel", "%RH", "urn:dev:LOG-0001:", "t", "LOG-0001", ""]),
    st.integers(-100, 100),
    st.sampled_from([NOW, NOW - DAY, -60, 2**28, 10, 0.5]),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
FIELDS = st.sampled_from(
    ["bn", "bt", "bu", "bv", "bs", "bver", "n", "u", "v", "vs", "vb", "vd", "s", "t", "ut", "x", "x_"]
)
# Records a logger might send, near the limits, so that fuzzing reaches resolution's checks too.
PLAUSIBLE_RECORDS = st.fixed_dictionaries(
    {"n": st.sampled_from(["temp", "rh", "a/b"]), "v": st.integers(-120, 120) | st.floats(-120, 120)},
    optional={
        "bn": st.sampled_from(["urn:dev:LOG-0001:", "x:", ""]),
        "bu": st.sampled_from(["Cel", "%RH", "V"]),
        "u": st.sampled_from(["Cel", "%RH", "V"]),
        "bt": st.sampled_from([0, NOW, NOW - 91 * DAY]),
        "t": st.integers(-91 * DAY, 400),
        "bv": st.integers(-20, 20),
    },
)
RECORDS = st.one_of(PLAUSIBLE_RECORDS, st.dictionaries(FIELDS, SCALARS, max_size=6), JSON)


def mostly[T](valid: st.SearchStrategy[T], anything: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Three times in four the valid strategy, else anything."""
    return st.integers(0, 3).flatmap(lambda k: valid if k else anything)


PAYLOADS = st.fixed_dictionaries(
    {
        "dev": mostly(st.just(DEVICE), SCALARS),
        "seq": mostly(st.integers(0, MAX_SEQ), st.integers(-2, 2**54) | SCALARS),
        "senml": mostly(st.lists(PLAUSIBLE_RECORDS, min_size=1, max_size=6), st.lists(RECORDS, max_size=6) | JSON),
    },
    optional={"extra": JSON},
)
HEADERS = st.fixed_dictionaries(
    {"alg": mostly(st.sampled_from(["Ed25519", "EdDSA"]), SCALARS), "kid": mostly(st.just(DEVICE), SCALARS)},
    optional={"crit": JSON, "typ": JSON},
)


@PROPERTY
@given(st.dictionaries(FIELDS, SCALARS, max_size=6) | PLAUSIBLE_RECORDS)
def test_a_record_passed_by_the_quick_shape_check_passes_the_field_by_field_one(record: dict[str, Any]):
    # the quick look may only ever spare the full check, never overrule it
    if protocol._plainly_in_shape(record):
        protocol._check_shape_in_order(record, 0)


def test_the_quick_shape_check_takes_what_loggers_send_and_leaves_the_rest_to_the_full_one():
    assert protocol._plainly_in_shape({"bn": "urn:dev:LOG-0001:", "bt": NOW, "bu": "Cel", "n": "temp", "v": 4.5})
    assert protocol._plainly_in_shape({"n": "temp", "t": 60, "v": 5, "bver": 10, "x": [1]})
    big = {"n": "temp", "v": 2**60}  # a number, but past exact floats: the full check decides (and accepts)
    assert not protocol._plainly_in_shape(big)
    protocol._check_shape(big, 0)
    for odd in ({"n": 1}, {"v": True}, {"v": 1, "vs": "a"}, {"bver": 11}, {"v_": 1}, {"vb": 1}, {"t": 1e400}):
        assert not protocol._plainly_in_shape(odd)
        with pytest.raises(Rejected):
            protocol._check_shape(odd, 0)


@PROPERTY
@given(mostly(PAYLOADS, JSON))
def test_signed_random_payloads_are_read_or_rejected_never_crash(payload: Any):
    assert isinstance(outcome(jws(HEADER, payload)), list | str)


@PROPERTY
@given(HEADERS, st.just(ONE_READING) | PAYLOADS)
def test_signed_random_headers_are_read_or_rejected_never_crash(header: dict[str, Any], payload: Any):
    assert isinstance(outcome(jws(header, payload)), list | str)


@PROPERTY
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["Cel", "%RH", "Pa"]),
            st.from_regex(r"[a-z0-9][a-z0-9/_.-]{0,7}", fullmatch=True),
            st.floats(-100, 100),
            st.integers(-90 * DAY, 300),
        ),
        min_size=1,
        max_size=40,
    ),
    st.integers(0, MAX_SEQ),
)
def test_signed_packs_round_trip(records: list[tuple[str, str, float, int]], seq: int):
    base = {"bn": "urn:dev:LOG-0001:", "bt": NOW, "bu": "Cel"}
    records = [(unit, n, abs(v) if unit == "%RH" else v, t) for unit, n, v, t in records]
    senml = [{"n": n, "t": t, "v": v} | ({} if unit == "Cel" else {"u": unit}) for unit, n, v, t in records]
    senml[0] |= base
    envelope = parse(message(KEY, DEVICE, seq, senml))
    verify(envelope, PUBLIC_KEY)
    payload = read_payload(envelope, topic_device=DEVICE)
    assert (payload.device_id, payload.seq) == (DEVICE, seq)
    assert seen(resolve(payload, received_at=RECEIVED)) == [
        (f"urn:dev:LOG-0001:{n}", unit, v, RECEIVED + datetime.timedelta(seconds=t), index)
        for index, (unit, n, v, t) in enumerate(records)
        if unit != "Pa"
    ]


# A glance for triage: what a message appears to say, never more than a hint --------------------------


def test_a_glance_at_the_vector_sees_its_device_and_temperatures():
    assert protocol.peek(VECTOR_MESSAGE) == (DEVICE, [5.1, 5.3, 8.6])
    assert protocol.peek(pack({"n": "t", "u": "Cel", "bv": 4, "v": 0.5}, {"n": "t", "u": "Cel"})) == (DEVICE, [4.5, 4])
    assert protocol.peek(pack({"n": "rh", "u": "%RH", "v": 40})) == (DEVICE, [])
    assert protocol.peek(message_of(protocol.MAX_MESSAGE_BYTES)) is not None
    assert protocol.peek(message_of(protocol.MAX_MESSAGE_BYTES + 1)) is None  # too large: no glance


def _glance_agrees(raw: bytes) -> None:
    glance = protocol.peek(raw)  # never raises, whatever the bytes
    assert glance is None or (isinstance(glance[0], str) and all(isinstance(v, float) for v in glance[1]))
    readings = outcome(raw)
    if isinstance(readings, list):  # a message read properly: the glance saw the same temperatures
        assert glance == (DEVICE, [r.value for r in readings if r.unit == protocol.TEMPERATURE])


@PROPERTY
@given(mostly(PAYLOADS, JSON))
def test_a_glance_at_a_message_sees_what_reading_it_properly_finds(payload: Any):
    _glance_agrees(jws(HEADER, payload))


@PROPERTY
@given(damaged() | st.binary(max_size=2000))
def test_a_glance_at_damaged_bytes_never_raises(raw: bytes):
    _glance_agrees(raw)


TEMPERATURE_RECORDS = st.fixed_dictionaries(
    {"n": st.sampled_from(["temp", "probe/2"]), "v": st.integers(-50, 50) | st.floats(-50, 50)},
    optional={
        "u": st.sampled_from(["Cel", "V"]),
        "bu": st.sampled_from(["Cel", "V"]),
        "bv": st.integers(-20, 20) | st.floats(-20, 20),
        "t": st.integers(-600, 0),
    },
)


@PROPERTY
@given(st.lists(TEMPERATURE_RECORDS, min_size=1, max_size=8))
def test_a_glance_at_a_logger_s_pack_sees_the_temperatures_resolution_finds(records: list[dict[str, Any]]):
    raw = jws(HEADER, {"dev": DEVICE, "seq": 1, "senml": [{"bt": NOW, **records[0]}, *records[1:]]})
    readings = outcome(raw)
    assert isinstance(readings, list)
    assert protocol.peek(raw) == (DEVICE, [r.value for r in readings if r.unit == protocol.TEMPERATURE])
