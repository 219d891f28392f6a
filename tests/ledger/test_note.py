"""Tests for ledger.note: C2SP signed notes, verifier keys and checkpoints.

Pure tests: no Django, no database. Expected values come from spec/ledger.md's
signed-note vector and RFC 8032's Ed25519 TEST 1; the key id and vkey of that
key were computed with hashlib and base64 from the C2SP formula, independently
of the code under test.
"""

from __future__ import annotations

import base64
import hashlib
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ledger.note import (
    Checkpoint,
    NoteError,
    Signer,
    Verifier,
    checkpoint_body,
    key_id,
    open_checkpoint,
    open_note,
    parse_checkpoint,
    parse_vkey,
    sign_note,
    vkey,
)

EM_DASH = "\u2014"

# spec/ledger.md, "Test vectors", verbatim.
EXAMPLE_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
EXAMPLE_TEXT = "This is an example message.\n"
EXAMPLE_SIGNATURE = "Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM="
EXAMPLE_NOTE = f"{EXAMPLE_TEXT}\n— example.com/foo {EXAMPLE_SIGNATURE}\n"

# RFC 8032 section 7.1, TEST 1.
RFC8032_PRIVATE = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_EMPTY_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
ORIGIN = "ledger.coldtrace.example"
# hashlib.sha256(b"ledger.coldtrace.example\n\x01" + RFC8032_PUBLIC).digest()[:4].hex()
RFC8032_KEY_ID = "afc661ad"
RFC8032_VKEY = "ledger.coldtrace.example+afc661ad+AddamAGCsQq31Uv+08lkBzoO4XLz2qYjJa8CGmj3B1Ea"

ROOT = hashlib.sha256(b"some tree").digest()


def example_verifier() -> Verifier:
    return parse_vkey(EXAMPLE_VKEY)


def fresh_signer(name: str = ORIGIN) -> Signer:
    return Signer(name, Ed25519PrivateKey.generate())


def rfc8032_signer() -> Signer:
    return Signer(ORIGIN, Ed25519PrivateKey.from_private_bytes(RFC8032_PRIVATE))


def signature_line(name: str, payload: bytes) -> str:
    return f"— {name} {base64.b64encode(payload).decode()}\n"


# The spec's signed-note vector.


def test_the_spec_vector_verifies() -> None:
    verifier = example_verifier()
    opened = open_note(EXAMPLE_NOTE, [verifier])
    assert opened.text == EXAMPLE_TEXT
    assert opened.verified_by == (verifier,)
    assert EXAMPLE_NOTE.split("\n")[2].startswith(EM_DASH + " ")


def test_the_spec_vector_key_id_is_computed_from_name_and_key() -> None:
    verifier = example_verifier()
    assert verifier.name == "example.com/foo"
    assert key_id("example.com/foo", verifier.public_key).hex() == "530d903a"
    assert vkey(verifier.name, verifier.public_key) == EXAMPLE_VKEY


def test_the_spec_vector_fails_once_its_text_is_altered() -> None:
    altered = EXAMPLE_NOTE.replace("example message", "example massage")
    with pytest.raises(NoteError, match=r"does not verify"):
        open_note(altered, [example_verifier()])


def test_the_spec_vector_fails_once_its_signature_is_altered() -> None:
    raw = bytearray(base64.b64decode(EXAMPLE_SIGNATURE))
    raw[10] ^= 1  # inside the Ed25519 signature, after the 4-byte key id
    altered = f"{EXAMPLE_TEXT}\n" + signature_line("example.com/foo", bytes(raw))
    with pytest.raises(NoteError, match=r"does not verify"):
        open_note(altered, [example_verifier()])


def test_signatures_by_unknown_keys_are_ignored() -> None:
    raw = base64.b64decode(EXAMPLE_SIGNATURE)
    other = fresh_signer("witness.example/w1")
    extra = [
        other.signature_line(EXAMPLE_TEXT.encode()),  # another key entirely
        signature_line("example.com/foo", b"\x00\x00\x00\x00" + raw[4:]),  # same name, another key id
        signature_line("example.com/bar", raw),  # same key id, another name
        signature_line("witness.example/w2", b"\x12\x34\x56\x78" + bytes(72)),  # a cosignature/v1-sized blob
    ]
    opened = open_note(EXAMPLE_NOTE + "".join(extra), [example_verifier()])
    assert opened.verified_by == (example_verifier(),)


def test_a_note_signed_by_no_known_key_is_refused() -> None:
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(EXAMPLE_NOTE, [fresh_signer("example.com/foo").verifier])
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(EXAMPLE_NOTE, [])


# RFC 8032 TEST 1: deterministic keys, ids and signatures.


def test_rfc8032_test_1_gives_the_documented_key_and_signature() -> None:
    signer = rfc8032_signer()
    assert signer.verifier.public_key == RFC8032_PUBLIC
    assert signer.private_key.sign(b"") == RFC8032_EMPTY_SIGNATURE


def test_rfc8032_test_1_key_id_and_vkey() -> None:
    assert key_id(ORIGIN, RFC8032_PUBLIC).hex() == RFC8032_KEY_ID
    assert key_id(ORIGIN, RFC8032_PUBLIC) == hashlib.sha256(ORIGIN.encode() + b"\n\x01" + RFC8032_PUBLIC).digest()[:4]
    assert vkey(ORIGIN, RFC8032_PUBLIC) == RFC8032_VKEY
    assert parse_vkey(RFC8032_VKEY) == rfc8032_signer().verifier  # its base64 holds a '+'


def test_rfc8032_test_1_signs_a_note_line_by_line() -> None:
    text = checkpoint_body(ORIGIN, 0, ROOT)
    note = sign_note(text, [rfc8032_signer()])
    body, blank, line, end = note.rsplit("\n", 3)
    assert (body + "\n", blank, end) == (text, "", "")
    prefix, name, encoded = line.split(" ")
    raw = base64.b64decode(encoded, validate=True)
    assert (prefix, name, raw[:4].hex(), len(raw)) == (EM_DASH, ORIGIN, RFC8032_KEY_ID, 68)
    assert raw[4:] == Ed25519PrivateKey.from_private_bytes(RFC8032_PRIVATE).sign(text.encode())


# Signing and opening.


def test_a_freshly_signed_note_opens() -> None:
    signer = fresh_signer()
    text = "first line\n\nafter an empty line, with ünïcode\n"
    opened = open_note(sign_note(text, [signer]), [signer.verifier])
    assert opened.text == text
    assert opened.verified_by == (signer.verifier,)


def test_a_note_arrives_as_utf8_bytes_too() -> None:
    assert open_note(EXAMPLE_NOTE.encode(), [example_verifier()]).text == EXAMPLE_TEXT
    with pytest.raises(NoteError, match="not valid UTF-8"):
        open_note(EXAMPLE_NOTE.encode() + b"\xff", [example_verifier()])


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("no final newline", "end with a newline"),
        ("a tab\there\n", "control character"),
        ("a carriage return\r\n", "control character"),
        ("a nul\x00\n", "control character"),
        ("a lone surrogate \udc80\n", "UTF-8"),
    ],
)
def test_sign_note_refuses_text_a_verifier_would_refuse(text: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        sign_note(text, [fresh_signer()])


def test_sign_note_needs_a_signer() -> None:
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note("text\n", [])


def test_a_bad_signature_by_a_known_key_fails_the_note_even_next_to_a_good_one() -> None:
    good, bad = fresh_signer(), fresh_signer("second.example")
    note = sign_note("text\n", [good]) + bad.signature_line(b"other text\n")
    with pytest.raises(NoteError, match=r"second\.example"):
        open_note(note, [good.verifier, bad.verifier])
    assert open_note(note, [good.verifier]).verified_by == (good.verifier,)


@pytest.mark.parametrize(
    ("note", "reason"),
    [
        ("text\n— example.com/foo " + EXAMPLE_SIGNATURE + "\n", "no blank line"),
        ("text\n\n", "no signature lines"),
        (EXAMPLE_NOTE[:-1], "does not end with a newline"),
        (EXAMPLE_TEXT + "\n-- example.com/foo " + EXAMPLE_SIGNATURE + "\n", "em dash"),
        (EXAMPLE_TEXT + "\n—example.com/foo " + EXAMPLE_SIGNATURE + "\n", "em dash"),
        (EXAMPLE_TEXT + "\n— example.com/foo\n", "expected base64"),
        (EXAMPLE_TEXT + "\n— example.com/foo " + EXAMPLE_SIGNATURE[:-1] + "\n", "expected base64"),
        (EXAMPLE_TEXT + "\n— example.com/foo  " + EXAMPLE_SIGNATURE + "\n", "expected base64"),
        (EXAMPLE_TEXT + "\n— example.com/foo AAAAAA==\n", "expected base64"),
        (EXAMPLE_TEXT + "\n— example+com " + EXAMPLE_SIGNATURE + "\n", "plus"),
        (EXAMPLE_TEXT + "\n—  " + EXAMPLE_SIGNATURE + "\n", "empty"),
        (EXAMPLE_NOTE + "\n", "no signature lines"),
        ("tab\t\n" + "\n— example.com/foo " + EXAMPLE_SIGNATURE + "\n", "control character"),
    ],
)
def test_malformed_notes_are_refused(note: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        open_note(note, [example_verifier()])


def test_a_note_with_too_many_signatures_is_refused() -> None:
    lines = signature_line("witness.example", bytes(68)) * 100
    with pytest.raises(NoteError, match="at most 100"):
        open_note(EXAMPLE_NOTE + lines, [example_verifier()])
    assert open_note(EXAMPLE_NOTE + lines[: len(lines) * 99 // 100], [example_verifier()])


# Verifier keys.


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "key id 530d903b"),
        ("example.com/bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "key id 530d903a"),
        ("example.com/foo+530d903+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "8 hex digit"),
        ("example.com/foo+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "8 hex digit"),
        ("example.com/foo+530d903a+BOkyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "0x01"),
        ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2", "0x01"),
        ("example.com/foo+530d903a+", "0x01"),
        ("+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "empty"),
        ("example com+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "space"),
    ],
)
def test_malformed_verifier_keys_are_refused(text: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        parse_vkey(text)


@pytest.mark.parametrize("name", ["", "two words", "tab\tname", "no+plus", "nbsp\u00a0name", "ideographic\u3000space"])
def test_key_names_follow_the_signed_note_rules(name: str) -> None:
    with pytest.raises(NoteError):
        Signer(name, Ed25519PrivateKey.generate())
    with pytest.raises(NoteError):
        key_id(name, RFC8032_PUBLIC)


def test_a_public_key_must_be_32_bytes() -> None:
    with pytest.raises(NoteError, match="32 bytes"):
        Verifier(ORIGIN, RFC8032_PUBLIC[:31])


# Checkpoints.


def test_a_checkpoint_body_is_three_lines() -> None:
    body = checkpoint_body(ORIGIN, 1234, ROOT)
    assert body == f"{ORIGIN}\n1234\n{base64.b64encode(ROOT).decode()}\n"
    assert parse_checkpoint(body) == Checkpoint(ORIGIN, 1234, ROOT)
    assert parse_checkpoint(checkpoint_body(ORIGIN, 0, ROOT)).size == 0


def test_a_checkpoint_signed_by_two_keys_during_rotation_opens_with_either() -> None:
    old, new = fresh_signer(), fresh_signer()
    note = sign_note(checkpoint_body(ORIGIN, 42, ROOT), [old, new])
    expected = Checkpoint(ORIGIN, 42, ROOT)
    assert open_checkpoint(note, [old.verifier]) == expected
    assert open_checkpoint(note, [new.verifier]) == expected
    assert open_note(note, [new.verifier, old.verifier]).verified_by == (old.verifier, new.verifier)
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_checkpoint(note, [fresh_signer().verifier])


def test_a_checkpoint_needs_the_log_key_not_only_a_witness() -> None:
    log, witness = fresh_signer(), fresh_signer("witness.example")
    note = sign_note(checkpoint_body(ORIGIN, 7, ROOT), [log, witness])
    assert open_checkpoint(note, [log.verifier, witness.verifier]).size == 7
    with pytest.raises(NoteError, match=re.escape(f"key named {ORIGIN}")):
        open_checkpoint(note, [witness.verifier])


ROOT_B64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"{ORIGIN}\n1\n{ROOT_B64}\nextension\n", "exactly 3 lines"),
        (f"{ORIGIN}\n1\n{ROOT_B64}\n\n", "exactly 3 lines"),
        (f"{ORIGIN}\n1\n", "exactly 3 lines"),
        (f"{ORIGIN}\n1\n{ROOT_B64}", "ends with a newline"),
        (f"{ORIGIN}\n01\n{ROOT_B64}\n", "leading zeros"),
        (f"{ORIGIN}\n00\n{ROOT_B64}\n", "leading zeros"),
        (f"{ORIGIN}\n+1\n{ROOT_B64}\n", "leading zeros"),
        (f"{ORIGIN}\n-1\n{ROOT_B64}\n", "leading zeros"),
        (f"{ORIGIN}\n 1\n{ROOT_B64}\n", "leading zeros"),
        (f"{ORIGIN}\n1_000\n{ROOT_B64}\n", "leading zeros"),
        (f"{ORIGIN}\n\u0661\n{ROOT_B64}\n", "leading zeros"),  # ARABIC-INDIC DIGIT ONE
        (f"{ORIGIN}\n{2**64}\n{ROOT_B64}\n", "outside"),
        (f"{ORIGIN}\n1\nnot base64!\n", "not standard base64"),
        (f"{ORIGIN}\n1\n{ROOT_B64.rstrip('=')}\n", "not standard base64"),
        (f"{ORIGIN}\n1\n{ROOT.hex()}\n", "bytes, not 48"),
        (f"{ORIGIN}\n1\n{base64.urlsafe_b64encode(b'\xfb' * 32).decode()}\n", "not standard base64"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT[:31]).decode()}\n", "bytes, not 31"),
        (f"{ORIGIN}\n1\n{base64.b64encode(ROOT + b'x').decode()}\n", "bytes, not 33"),
        (f"\n1\n{ROOT_B64}\n", "origin is empty"),
        (f"my log\n1\n{ROOT_B64}\n", "space"),
    ],
)
def test_malformed_checkpoints_are_refused(text: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        parse_checkpoint(text)


def test_non_canonical_base64_roots_are_refused() -> None:
    canonical = base64.b64encode(bytes(32)).decode()
    assert canonical.endswith("A=")
    with pytest.raises(NoteError, match="not standard base64"):
        parse_checkpoint(f"{ORIGIN}\n1\n{canonical[:-2]}B=\n")  # same bytes, stray low bits


def test_checkpoint_body_refuses_what_parse_would() -> None:
    with pytest.raises(NoteError, match="31"):
        checkpoint_body(ORIGIN, 1, ROOT[:31])
    with pytest.raises(NoteError, match="outside"):
        checkpoint_body(ORIGIN, -1, ROOT)
    with pytest.raises(NoteError, match="origin"):
        checkpoint_body("two\nlines", 1, ROOT)
