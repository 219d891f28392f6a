"""Verifying the whole ledger in one pass: ``python -m ledger.verify DIR`` and ``manage.py ledger_verify``.

spec/ledger.md ("Offline verification") lets auditors check an exported bundle
with no Django and no database: every ``seq``, every ``prev`` link, every
signature, and that every checkpoint's root is the root of the entries up to
its size. The verdict is ``OK <n> entries`` (exit 0), or the first failure in
log order (exit 1) as ``FAIL seq <n>: <reason>``, ``FAIL checkpoint <size>:
<reason>`` (the checkpoint of size s is checked once entry s - 1 has been), or
``FAIL <reason>`` for the keys or a misnamed file. A bundle that cannot be read
at all exits 2.

Bundle format (ours; ``manage.py ledger_export DIR`` writes it)::

    DIR/entries.jsonl            one JSON object per line, in seq order, shaped like
                                 GET /api/v1/ledger/entries/{seq}: "seq", "leaf"
                                 (base64 of the leaf data), "hash" (hex leaf hash),
                                 "signature" (base64), "key_id" (8 hex digits)
    DIR/keys.json                a JSON list, one object per key that ever signed for
                                 the log, shaped like GET /api/v1/ledger/keys: "name",
                                 "key_id", "public_key" (hex), "vkey", "active_from",
                                 "retired_at" (RFC 3339; null while active)
    DIR/checkpoints/<size>.note  each stored checkpoint, the signed note byte for byte
                                 (UTF-8); <size> is its tree size in decimal

Base64 is standard and padded, hex is lowercase. Files are UTF-8.

``verify()`` is the core both commands share. It consumes the entries as a
stream and keeps only the frontier of the Merkle tree (one complete subtree per
set bit of the size, O(log n) hashes), so memory does not grow with the ledger.

Pure module: the standard library, ``cryptography``, ``rfc8785`` and
ledger.merkle / ledger.note, so an auditor runs it with none of our Django code.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rfc8785

from ledger import merkle, note

ENTRIES_FILE = "entries.jsonl"
KEYS_FILE = "keys.json"
CHECKPOINTS_DIR = "checkpoints"
FIRST_PREV = "0" * 64  # the prev of seq 0
ENTRY_FIELDS = ("seq", "time", "type", "subject", "data", "prev")

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z")  # RFC 3339, UTC, "Z" suffix
_DOTTED = re.compile(r"[^.\s]+(?:\.[^.\s]+)+")  # "batch.registered": words joined by dots
_KEY_ID = re.compile(r"[0-9a-f]{8}")
_PUBLIC_KEY_HEX = re.compile(r"[0-9a-f]{64}")
_CHECKPOINT_FILE = re.compile(r"(0|[1-9][0-9]*)\.note")


class VerificationError(Exception):
    """The first thing that does not verify: an entry (``seq``), a checkpoint (its size) or the keys."""

    def __init__(self, reason: str, *, seq: int | None = None, checkpoint: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.seq = seq
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        if self.seq is not None:
            return f"seq {self.seq}: {self.reason}"
        if self.checkpoint is not None:
            return f"checkpoint {self.checkpoint}: {self.reason}"
        return self.reason


class BundleError(Exception):
    """The bundle cannot be read at all (no such directory, a missing file, an I/O error)."""


# Records: what the verifier reads, from a bundle or from the database.


def _b64encode(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _b64decode(value: Any, field: str) -> bytes:
    """Strict, canonical standard base64, so that each value has one spelling."""
    if isinstance(value, str):
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            pass
        else:
            if _b64encode(raw) == value:
                return raw
    raise ValueError(f'"{field}" is not standard base64')


@dataclass(frozen=True)
class EntryRecord:
    """A stored entry: its leaf data, and the hash, signature and key id the log gave it."""

    seq: int
    leaf: bytes
    hash: bytes
    signature: bytes
    key_id: str

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "leaf": _b64encode(self.leaf),
            "hash": self.hash.hex(),
            "signature": _b64encode(self.signature),
            "key_id": self.key_id,
        }

    @classmethod
    def from_json(cls, value: Any) -> EntryRecord:
        """The inverse of ``to_json``; ValueError naming the field that is malformed."""
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        seq, hash_hex, key_id = value.get("seq"), value.get("hash"), value.get("key_id")
        if type(seq) is not int:
            raise ValueError('"seq" is not an integer')
        if not isinstance(hash_hex, str):
            raise ValueError('"hash" is not a string')
        if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
            raise ValueError('"key_id" is not 8 lowercase hex digits')
        return cls(
            seq=seq,
            leaf=_b64decode(value.get("leaf"), "leaf"),
            hash=merkle.hash_from_hex(hash_hex),
            signature=_b64decode(value.get("signature"), "signature"),
            key_id=key_id,
        )


@dataclass(frozen=True)
class KeyRecord:
    """A key that signed for the log; times are RFC 3339 text, ``retired_at`` None while active."""

    name: str
    key_id: str
    public_key: bytes
    active_from: str
    retired_at: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "key_id": self.key_id,
            "public_key": self.public_key.hex(),
            "vkey": note.vkey(self.name, self.public_key),
            "active_from": self.active_from,
            "retired_at": self.retired_at,
        }

    @classmethod
    def from_json(cls, value: Any) -> KeyRecord:
        """The inverse of ``to_json``; ValueError if a field is malformed or the vkey names another key."""
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        name, key_id, public_hex = value.get("name"), value.get("key_id"), value.get("public_key")
        active_from, retired_at = value.get("active_from"), value.get("retired_at")
        if not isinstance(name, str) or not isinstance(key_id, str):
            raise ValueError('"name" and "key_id" must be strings')
        if not isinstance(public_hex, str) or not _PUBLIC_KEY_HEX.fullmatch(public_hex):
            raise ValueError('"public_key" is not 64 lowercase hex digits')
        if not isinstance(active_from, str) or not (retired_at is None or isinstance(retired_at, str)):
            raise ValueError('"active_from" must be a string and "retired_at" a string or null')
        record = cls(name, key_id, bytes.fromhex(public_hex), active_from, retired_at)
        try:
            expected = note.vkey(name, record.public_key)
        except note.NoteError as error:
            raise ValueError(str(error)) from None
        if value.get("vkey") != expected:
            raise ValueError(f'"vkey" is not {expected}, the vkey of its name and public key')
        return record


@dataclass(frozen=True)
class CheckpointRecord:
    """A stored checkpoint: the tree size it is filed under, and its signed note."""

    size: int
    note: str | bytes


# The verifier.


class Frontier:
    """The RFC 9162 tree of the leaves so far, held as the complete subtrees its root needs.

    These are the nodes ``merkle.root_keys(size)`` names, one per set bit of the
    size: O(log n) hashes however long the log.
    """

    def __init__(self) -> None:
        self.size = 0
        self.nodes: dict[merkle.NodeKey, bytes] = {}

    def append(self, leaf_hash: bytes) -> None:
        created = merkle.new_nodes(self.size, leaf_hash, self.nodes)
        # The siblings the new leaf paired with now sit inside the largest node it completed.
        for key in merkle.new_node_keys(self.size):
            del self.nodes[key]
        level, index, digest = created[-1]
        self.nodes[(level, index)] = digest
        self.size += 1

    def root(self) -> bytes:
        return merkle.root(self.size, self.nodes)


def _keyring(keys: Iterable[KeyRecord]) -> tuple[str | None, dict[str, note.Verifier]]:
    """The log's origin (the name its keys share) and its keys by key id; VerificationError if inconsistent."""
    by_id: dict[str, note.Verifier] = {}
    for key in keys:
        label = f"key {key.name}+{key.key_id}"
        try:
            verifier = note.Verifier(key.name, key.public_key)
        except note.NoteError as error:
            raise VerificationError(f"{label}: {error}") from None
        if verifier.key_id.hex() != key.key_id:
            raise VerificationError(f"{label}: its name and public key give the key id {verifier.key_id.hex()}")
        if key.key_id in by_id:
            raise VerificationError(f"{label} is listed twice")
        by_id[key.key_id] = verifier
    names = sorted({verifier.name for verifier in by_id.values()})
    if len(names) > 1:
        raise VerificationError(f"the keys name several origins ({', '.join(names)}); a log's keys are named after it")
    return (names[0] if names else None), by_id


def _parse_leaf(leaf: bytes) -> dict[str, Any]:
    """The entry a leaf holds; ValueError unless it is canonical JCS of an object with every field."""
    try:
        entry = json.loads(leaf)
        canonical = rfc8785.dumps(entry)
    except (ValueError, RecursionError) as error:  # JSONDecodeError, UnicodeDecodeError, CanonicalizationError
        raise ValueError(f"the leaf is not JSON that RFC 8785 (JCS) can represent: {error}") from None
    if canonical != leaf:
        raise ValueError("the leaf is not RFC 8785 (JCS) canonical JSON")
    if not isinstance(entry, dict):
        raise ValueError("the leaf is not a JSON object")
    missing = [field for field in ENTRY_FIELDS if field not in entry]
    if missing:
        raise ValueError(f"the leaf lacks the field(s) {', '.join(missing)}")
    return entry


def _check_fields(entry: dict[str, Any]) -> None:
    """The formats spec/ledger.md ("Entries") fixes for time, type, subject and data."""
    time = entry["time"]
    if not isinstance(time, str) or not _TIME.fullmatch(time):
        raise ValueError(f"time {time!r} is not an RFC 3339 UTC timestamp ending in Z")
    try:
        datetime.datetime.fromisoformat(time)
    except ValueError as error:
        raise ValueError(f"time {time!r} is not a valid date and time: {error}") from None
    if not isinstance(entry["type"], str) or not _DOTTED.fullmatch(entry["type"]):
        raise ValueError(f"type {entry['type']!r} is not a dotted event type")
    if not isinstance(entry["subject"], str):
        raise ValueError("subject is not a string")
    if not isinstance(entry["data"], dict):
        raise ValueError("data is not a JSON object")


class LedgerVerifier:
    """Replays the log entry by entry, checking each as spec/ledger.md requires.

    ``append`` the entries in order and ``check`` each checkpoint when ``size``
    has reached its tree size; both raise VerificationError. ``verify()`` does
    the interleaving.
    """

    def __init__(self, keys: Iterable[KeyRecord]) -> None:
        self.origin, self._keys = _keyring(keys)
        self._tree = Frontier()
        self._prev = FIRST_PREV

    @property
    def size(self) -> int:
        return self._tree.size

    def append(self, entry: EntryRecord) -> None:
        seq = self.size
        if entry.seq != seq:
            raise VerificationError(
                f"the next entry has seq {entry.seq}, not {seq}: entries are missing or out of order", seq=seq
            )
        if entry.hash != merkle.leaf_hash(entry.leaf):
            raise VerificationError("the hash is not SHA-256(0x00 || leaf): the leaf or its hash was altered", seq=seq)
        try:
            fields = _parse_leaf(entry.leaf)
            if type(fields["seq"]) is not int or fields["seq"] != seq:
                raise ValueError(f"the leaf says seq {fields['seq']!r}")
            if fields["prev"] != self._prev:
                raise ValueError(f"prev is {fields['prev']!r}, but the previous entry's hash is {self._prev!r}")
            _check_fields(fields)
        except ValueError as error:
            raise VerificationError(str(error), seq=seq) from None
        verifier = self._keys.get(entry.key_id)
        if verifier is None:
            known = ", ".join(sorted(self._keys)) or "none"
            raise VerificationError(
                f"signed by key {entry.key_id}, which is not a key of the log (known: {known})", seq=seq
            )
        if not verifier.verify(entry.leaf, entry.signature):
            raise VerificationError(f"the signature by key {entry.key_id} does not verify over the leaf", seq=seq)
        self._tree.append(entry.hash)
        self._prev = entry.hash.hex()

    def check(self, checkpoint: CheckpointRecord) -> None:
        size = checkpoint.size
        if size != self.size:
            raise ValueError(f"checkpoint {size} can only be checked after exactly {size} entries, not {self.size}")
        try:
            opened = note.open_checkpoint(checkpoint.note, self._keys.values())
        except note.NoteError as error:
            raise VerificationError(f"the note does not verify: {error}", checkpoint=size) from None
        if opened.origin != self.origin:
            raise VerificationError(f"its origin {opened.origin} is not the log's ({self.origin})", checkpoint=size)
        if opened.size != size:
            raise VerificationError(f"the note is signed for tree size {opened.size}", checkpoint=size)
        root = self._tree.root()
        if opened.root != root:
            raise VerificationError(
                f"its root {opened.root.hex()} is not the root of entries 0..{size - 1}, {root.hex()}",
                checkpoint=size,
            )


def _ascending(checkpoints: Iterable[CheckpointRecord]) -> Iterator[CheckpointRecord]:
    last = -1
    for checkpoint in checkpoints:
        if checkpoint.size <= last:
            raise ValueError(f"checkpoints must come in increasing size: {checkpoint.size} after {last}")
        last = checkpoint.size
        yield checkpoint


def verify(entries: Iterable[EntryRecord], keys: Iterable[KeyRecord], checkpoints: Iterable[CheckpointRecord]) -> int:
    """Verifies a log in one pass and returns its number of entries.

    ``entries`` in seq order and ``checkpoints`` in increasing size are read as
    streams. Raises VerificationError at the first failure in log order.
    """
    log = LedgerVerifier(keys)
    pending = _ascending(checkpoints)
    upcoming = next(pending, None)
    for entry in entries:
        if upcoming is not None and upcoming.size == log.size:
            log.check(upcoming)
            upcoming = next(pending, None)
        log.append(entry)
    if upcoming is not None and upcoming.size == log.size:
        log.check(upcoming)
        upcoming = next(pending, None)
    if upcoming is not None:
        raise VerificationError(
            f"it covers {upcoming.size} entries but the ledger holds only {log.size}", checkpoint=upcoming.size
        )
    return log.size


def report(check: Callable[[], int], write: Callable[[str], object]) -> int:
    """Runs ``check`` (a verification returning the entry count), writes the verdict, returns the exit status."""
    try:
        count = check()
    except VerificationError as error:
        write(f"FAIL {error}\n")
        return 1
    write(f"OK {count} entries\n")
    return 0


# Bundles.


@dataclass(frozen=True)
class BundleSummary:
    entries: int
    keys: int
    checkpoints: int


def write_bundle(
    directory: Path,
    *,
    entries: Iterable[EntryRecord],
    keys: Iterable[KeyRecord],
    checkpoints: Iterable[CheckpointRecord],
) -> BundleSummary:
    """Writes a bundle into ``directory`` (created if need be), replacing any bundle already there.

    Reads ``keys``, then ``entries``, then ``checkpoints``, each once, as streams.
    """
    notes = directory / CHECKPOINTS_DIR
    notes.mkdir(parents=True, exist_ok=True)
    for stale in notes.iterdir():  # an earlier export's notes would otherwise pass for this one's
        if _CHECKPOINT_FILE.fullmatch(stale.name):
            stale.unlink()
    key_list = [key.to_json() for key in keys]
    (directory / KEYS_FILE).write_text(json.dumps(key_list, indent=2) + "\n", encoding="utf-8")
    entry_count = 0
    with (directory / ENTRIES_FILE).open("w", encoding="utf-8", newline="\n") as out:
        for entry in entries:
            out.write(json.dumps(entry.to_json()) + "\n")
            entry_count += 1
    checkpoint_count = 0
    for checkpoint in checkpoints:
        text = checkpoint.note
        (notes / f"{checkpoint.size}.note").write_bytes(text.encode() if isinstance(text, str) else text)
        checkpoint_count += 1
    return BundleSummary(entry_count, len(key_list), checkpoint_count)


def read_entries(path: Path) -> Iterator[EntryRecord]:
    """The entries of ``entries.jsonl``, one line at a time.

    A malformed line fails as the seq it should hold: every line before it held
    the seq of its position, or verification would have stopped there.
    """
    try:
        with path.open("rb") as lines:
            for number, line in enumerate(lines):
                try:
                    record = EntryRecord.from_json(json.loads(line))
                except (ValueError, RecursionError) as error:
                    raise VerificationError(f"{ENTRIES_FILE} line {number + 1}: {error}", seq=number) from None
                yield record
    except OSError as error:
        raise BundleError(f"cannot read {path}: {error.strerror or error}") from error


def read_keys(path: Path) -> list[KeyRecord]:
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise BundleError(f"cannot read {path}: {error.strerror or error}") from error
    try:
        items = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise VerificationError(f"{KEYS_FILE} is not JSON: {error}") from None
    if not isinstance(items, list):
        raise VerificationError(f"{KEYS_FILE} is not a JSON list")
    keys = []
    for number, item in enumerate(items):
        try:
            keys.append(KeyRecord.from_json(item))
        except ValueError as error:
            raise VerificationError(f"{KEYS_FILE} item {number}: {error}") from None
    return keys


def read_checkpoints(directory: Path) -> Iterator[CheckpointRecord]:
    """The notes in ``directory`` in increasing size, each read only when reached.

    Lists the directory at once, so a misnamed file fails before any entry is read.
    """
    try:
        names = [path.name for path in directory.iterdir() if not path.name.startswith(".")]
    except OSError as error:
        raise BundleError(f"cannot read {directory}: {error.strerror or error}") from error
    sizes = []
    for name in names:
        match = _CHECKPOINT_FILE.fullmatch(name)
        if match is None:
            raise VerificationError(f"{CHECKPOINTS_DIR}/{name} is not named <tree size>.note")
        sizes.append(int(match[1]))
    sizes.sort()
    return _read_notes(directory, sizes)


def _read_notes(directory: Path, sizes: list[int]) -> Iterator[CheckpointRecord]:
    for size in sizes:
        path = directory / f"{size}.note"
        try:
            yield CheckpointRecord(size, path.read_bytes())
        except OSError as error:
            raise BundleError(f"cannot read {path}: {error.strerror or error}") from error


def verify_bundle(directory: Path) -> int:
    """Verifies the bundle in ``directory``; returns its number of entries.

    BundleError if it cannot be read, VerificationError at the first failure.
    """
    if not directory.is_dir():
        raise BundleError(f"{directory} is not a directory; pass the directory manage.py ledger_export wrote")
    for name in (ENTRIES_FILE, KEYS_FILE, CHECKPOINTS_DIR):
        if not (directory / name).exists():
            raise BundleError(f"{directory} is not a complete ledger bundle: {name} is missing")
    keys = read_keys(directory / KEYS_FILE)
    return verify(read_entries(directory / ENTRIES_FILE), keys, read_checkpoints(directory / CHECKPOINTS_DIR))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ledger.verify",
        description="Verify a ColdTrace ledger bundle (written by manage.py ledger_export) without Django.",
        epilog="Exit status: 0 when it verifies, 1 at the first failure, 2 when the bundle cannot be read.",
    )
    parser.add_argument("directory", type=Path, metavar="DIR", help="the bundle directory")
    args = parser.parse_args(argv)
    try:
        return report(lambda: verify_bundle(args.directory), sys.stdout.write)
    except BundleError as error:
        parser.exit(2, f"{parser.prog}: error: {error}\n")


if __name__ == "__main__":
    sys.exit(main())
