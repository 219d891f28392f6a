"""C2SP signed notes and tlog checkpoints, the ledger's checkpoint format.

spec/ledger.md ("Checkpoints") makes a checkpoint a C2SP tlog-checkpoint
(https://c2sp.org/tlog-checkpoint) in a C2SP signed note
(https://c2sp.org/signed-note), signed with Ed25519 by the log's key, whose
name is the log's origin. Verifier keys are written in the ``vkey`` text form
of golang.org/x/mod/sumdb/note (``<name>+<key id>+<base64(0x01 || key)>``), so
existing tooling reads them.

Pure module (standard library and ``cryptography``) so auditors can run it offline.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = 0x01  # signed-note "Signature types": Ed25519
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
KEY_ID_SIZE = 4
ROOT_SIZE = 32
SIGNATURE_PREFIX = "\u2014 "  # signed-note "Format": EM DASH, space
# signed-note: verifiers SHOULD bound the signatures per note and MUST accept 16.
# 100 leaves room for witnesses while bounding a hostile note's work.
MAX_SIGNATURES = 100
MAX_TREE_SIZE = 2**64 - 1  # tree sizes are uint64 in RFC 9162 and every tlog tool

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # ASCII controls other than newline
_KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}")  # case as golang.org/x/mod/sumdb/note accepts it
_DECIMAL = re.compile(r"0|[1-9][0-9]*")  # tlog-checkpoint: no leading zeroes


class NoteError(ValueError):
    """A note, key or checkpoint is malformed, or does not verify."""


# Keys.


def _check_name(name: str, what: str = "key name") -> None:
    """signed-note: key names are non-empty and contain no Unicode spaces and no plus."""
    if not name:
        raise NoteError(f"the {what} is empty")
    if "+" in name or any(char.isspace() for char in name) or _CONTROL.search(name):
        raise NoteError(f"the {what} {name!r} contains a space, a plus or a control character")
    _utf8(name, what)


def _utf8(text: str, what: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError:
        raise NoteError(f"the {what} is not valid UTF-8 (it contains a lone surrogate)") from None


def _b64decode(text: str) -> bytes | None:
    """Strict standard base64 (RFC 4648 section 4): padded, canonical, nothing else; None if not."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    # Canonical only, so each value has one spelling and a signature line cannot be altered unnoticed.
    return raw if base64.b64encode(raw).decode() == text else None


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def key_id(name: str, public_key: bytes) -> bytes:
    """The 4-byte signed-note key id: SHA-256(name || 0x0A || 0x01 || Ed25519 public key)[:4]."""
    _check_name(name)
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise NoteError(f"an Ed25519 public key is {PUBLIC_KEY_SIZE} bytes, not {len(public_key)}")
    return hashlib.sha256(name.encode() + b"\n" + bytes([ED25519]) + public_key).digest()[:KEY_ID_SIZE]


def vkey(name: str, public_key: bytes) -> str:
    """The verifier key text ``<name>+<8 hex key id>+<base64(0x01 || public key)>``."""
    return f"{name}+{key_id(name, public_key).hex()}+{_b64encode(bytes([ED25519]) + public_key)}"


@dataclass(frozen=True)
class Verifier:
    """A known Ed25519 key: a signature verifies only under the same name and key id."""

    name: str
    public_key: bytes
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_id", key_id(self.name, self.public_key))  # validates both
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key)
        except ValueError:
            raise NoteError(f"the public key of {self.name} is not an Ed25519 key") from None

    def verify(self, message: bytes, signature: bytes) -> bool:
        if len(signature) != SIGNATURE_SIZE:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def parse_vkey(text: str) -> Verifier:
    """The Verifier a ``vkey`` text names; NoteError if malformed, not Ed25519, or the key id does not match."""
    name, _, rest = text.partition("+")  # names hold no '+'; base64 may, so split twice only
    id_hex, _, key_b64 = rest.partition("+")
    if not _KEY_ID_HEX.fullmatch(id_hex):
        raise NoteError(f"verifier key {text!r} is not <name>+<8 hex digit key id>+<base64 key>")
    raw = _b64decode(key_b64)
    if raw is None or len(raw) != 1 + PUBLIC_KEY_SIZE or raw[0] != ED25519:
        raise NoteError(f"verifier key {text!r} does not hold 0x01 and a 32-byte Ed25519 key in base64")
    verifier = Verifier(name, raw[1:])
    if verifier.key_id != bytes.fromhex(id_hex):
        raise NoteError(f"verifier key {text!r} has key id {id_hex}; its name and key give {verifier.key_id.hex()}")
    return verifier


@dataclass(frozen=True)
class Signer:
    """An Ed25519 private key and the name it signs under (the log's origin, for the log key)."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        _check_name(self.name)

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.private_key.public_key().public_bytes_raw())

    def signature_line(self, message: bytes) -> str:
        """``— <name> <base64(key id || signature)>`` and a newline."""
        signature = self.verifier.key_id + self.private_key.sign(message)
        return f"{SIGNATURE_PREFIX}{self.name} {_b64encode(signature)}\n"


# Notes.


def _check_text(text: str, what: str) -> bytes:
    """signed-note: valid UTF-8 with no ASCII control characters other than newline."""
    raw = _utf8(text, what)
    found = _CONTROL.search(text)
    if found:
        raise NoteError(f"the {what} contains the control character {found.group()!r}; only newline is allowed")
    return raw


def sign_note(text: str, signers: Iterable[Signer]) -> str:
    """``text``, a blank line, and one signature line per signer, in order.

    Each signer signs the UTF-8 bytes of ``text``, which must end with a newline.
    """
    message = _check_text(text, "note text")
    if not text.endswith("\n"):
        raise NoteError("the note text must end with a newline")
    lines = [signer.signature_line(message) for signer in signers]
    if not lines:
        raise NoteError("a signed note needs at least one signer")
    return text + "\n" + "".join(lines)


@dataclass(frozen=True)
class VerifiedNote:
    """A note's text, and the known keys whose signatures on it verified (in order of first appearance)."""

    text: str
    verified_by: tuple[Verifier, ...]


def _split_note(note: str) -> tuple[str, list[str]]:
    """The text (with its final newline) and the signature lines; the last blank line separates them."""
    _check_text(note, "note")
    cut = note.rfind("\n\n")
    if cut < 0:
        raise NoteError("malformed note: no blank line separates the text from the signatures")
    text, block = note[: cut + 1], note[cut + 2 :]
    if not block:
        raise NoteError("malformed note: no signature lines after the blank line")
    if not block.endswith("\n"):
        raise NoteError("malformed note: the last signature line does not end with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError(f"note has {len(lines)} signature lines; at most {MAX_SIGNATURES} are accepted")
    return text, lines


def _parse_signature_line(line: str) -> tuple[str, bytes, bytes]:
    """(key name, key id, signature) of ``— <name> <base64(key id || signature)>``."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError(f"malformed signature line {line!r}: it must begin with an em dash (U+2014) and a space")
    name, _, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
    _check_name(name)
    raw = _b64decode(encoded)
    if raw is None or len(raw) <= KEY_ID_SIZE:
        raise NoteError(f"malformed signature line {line!r}: expected base64 of a key id and a signature")
    return name, raw[:KEY_ID_SIZE], raw[KEY_ID_SIZE:]


def _index_verifiers(verifiers: Iterable[Verifier]) -> dict[tuple[str, bytes], Verifier]:
    known: dict[tuple[str, bytes], Verifier] = {}
    for verifier in verifiers:
        other = known.setdefault((verifier.name, verifier.key_id), verifier)
        if other.public_key != verifier.public_key:
            raise NoteError(f"two known keys share the name {verifier.name} and key id {verifier.key_id.hex()}")
    return known


def open_note(note: str | bytes, verifiers: Iterable[Verifier]) -> VerifiedNote:
    """Split a signed note and verify it against the known ``verifiers``.

    Per signed-note, a signature whose (name, key id) is unknown is ignored,
    even if it shares one of them with a known key. NoteError if the note is
    malformed, a known key's signature fails, or no known key signed it.
    """
    if isinstance(note, bytes):
        try:
            note = note.decode()
        except UnicodeDecodeError:
            raise NoteError("the note is not valid UTF-8") from None
    text, lines = _split_note(note)
    known = _index_verifiers(verifiers)
    message = text.encode()
    verified: dict[tuple[str, bytes], Verifier] = {}
    for name, kid, signature in map(_parse_signature_line, lines):
        verifier = known.get((name, kid))
        if verifier is None:
            continue
        if not verifier.verify(message, signature):
            raise NoteError(f"the signature by {name} (key id {kid.hex()}) does not verify: the note was altered")
        verified.setdefault((name, kid), verifier)
    if not verified:
        names = ", ".join(sorted({f"{name}+{kid.hex()}" for name, kid in known})) or "none"
        raise NoteError(f"the note carries no signature by a known key (known: {names})")
    return VerifiedNote(text, tuple(verified.values()))


# Checkpoints (tlog-checkpoint "Note text"; spec/ledger.md allows no extension lines).


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's origin, its size, and its RFC 9162 root hash."""

    origin: str
    size: int
    root: bytes

    def __post_init__(self) -> None:
        # The origin doubles as the log key's name (spec/ledger.md), so it obeys key name rules.
        _check_name(self.origin, "origin")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteError(f"tree size {self.size} is outside 0..2**64-1")
        if len(self.root) != ROOT_SIZE:
            raise NoteError(f"a root hash is {ROOT_SIZE} bytes, not {len(self.root)}")

    @property
    def body(self) -> str:
        return f"{self.origin}\n{self.size}\n{_b64encode(self.root)}\n"


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """The note text of a checkpoint: origin, decimal size, base64 root, each ending in a newline."""
    return Checkpoint(origin, size, root).body


def parse_checkpoint(text: str) -> Checkpoint:
    """The Checkpoint in a note text of exactly three lines; NoteError otherwise."""
    if not text.endswith("\n"):
        raise NoteError("a checkpoint ends with a newline")
    lines = text[:-1].split("\n")
    if len(lines) != 3:
        raise NoteError(f"a checkpoint has exactly 3 lines (origin, size, root hash), not {len(lines)}")
    origin, size_text, root_text = lines
    if not _DECIMAL.fullmatch(size_text):
        raise NoteError(f"checkpoint size {size_text!r} is not a decimal number without leading zeros")
    root = _b64decode(root_text)
    if root is None:
        raise NoteError(f"checkpoint root hash {root_text!r} is not standard base64")
    return Checkpoint(origin, int(size_text), root)


def open_checkpoint(note: str | bytes, verifiers: Iterable[Verifier]) -> Checkpoint:
    """The Checkpoint in a signed note that a known key named as its origin (a log key) signed.

    A checkpoint signed only by other known keys, such as witnesses, is refused:
    the log vouches for its own tree heads.
    """
    opened = open_note(note, verifiers)
    checkpoint = parse_checkpoint(opened.text)
    if not any(verifier.name == checkpoint.origin for verifier in opened.verified_by):
        raise NoteError(f"the checkpoint carries no verified signature by a key named {checkpoint.origin}")
    return checkpoint
