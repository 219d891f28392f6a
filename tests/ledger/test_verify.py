"""Tests for ledger.verify and the ledger_export / ledger_verify commands.

A real ledger is built with the services (several checkpoints, one key
rotation so two keys sign), exported, and verified offline the way an auditor
would (``python -m ledger.verify DIR``). Each way of tampering with a bundle
must fail at the seq (or checkpoint) where it happened, with a reason that
says what is wrong; the same checks run against the live database.
"""

from __future__ import annotations

import base64
import hashlib
import io
import itertools
import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import connection

from ledger import keys, merkle, note, services, triggers, verify
from ledger.models import Checkpoint, Entry, EntryReader, SigningKey, TreeNode
from tests.ledger.test_merkle import VECTOR_LEAVES, VECTOR_ROOTS  # the spec's RFC 9162 vectors

ROOT = Path(__file__).resolve().parents[2]

# spec/ledger.md, "Test vectors".

# Runs the verifier as `python -m ledger.verify` does, with Django made unimportable.
WITHOUT_DJANGO = (
    "import runpy, sys; sys.modules['django'] = None; "
    "runpy.run_module('ledger.verify', run_name='__main__', alter_sys=True)"
)


@dataclass
class Ledger:
    """What the ``ledger`` fixture built: 15 entries, checkpoints at 3, 7, 8 and 13, two keys."""

    size: int
    checkpoints: list[int]
    signer: note.Signer  # the active key, to sign what a compromised log would


@pytest.fixture
def ledger(db: None, settings: Any, tmp_path: Path, django_capture_on_commit_callbacks: Any) -> Ledger:
    """Seq 0-7 are signed by the first key (7 is its rotation), 8-14 by the second; 13 and 14 await a checkpoint."""
    settings.LEDGER_KEY_FILE = tmp_path / "ledger.key"  # this test's own, as rotation replaces it

    lots = itertools.count(1)

    def round_of(count: int) -> None:
        for _ in range(count):
            lot = f"LOT{next(lots)}"
            services.entry_append(
                type="batch.registered",
                subject=f"batch:09506000134352:{lot}",
                data={"gtin": "09506000134352", "lot": lot, "quantity": 1200, "site": "Genève \u2713"},
                readers=["1"],
            )
        services.entries_sequence()

    round_of(3)
    services.checkpoint_sign()
    round_of(4)
    services.checkpoint_sign()
    with django_capture_on_commit_callbacks(execute=True):  # installs the new key file on commit
        services.key_rotate()
    round_of(5)
    services.checkpoint_sign()
    round_of(2)
    signer = note.Signer(settings.LEDGER_ORIGIN, keys.load(settings.LEDGER_KEY_FILE, create=False))
    return Ledger(size=15, checkpoints=[3, 7, 8, 13], signer=signer)


def export(directory: Path, *options: str) -> str:
    out = io.StringIO()
    call_command("ledger_export", str(directory), *options, stdout=out)
    return out.getvalue()


@pytest.fixture
def bundle(ledger: Ledger, tmp_path: Path) -> Path:
    directory = tmp_path / "bundle"
    export(directory)
    return directory


def run_verify(directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """``python -m ledger.verify DIR`` in this process: its exit status and what it printed."""
    status = verify.main([str(directory)])
    return status, capsys.readouterr().out


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=60)


# Editing a bundle as an attacker would.


def read_lines(directory: Path) -> list[dict[str, Any]]:
    text = (directory / "entries.jsonl").read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines()]


def write_lines(directory: Path, lines: list[dict[str, Any]]) -> None:
    text = "".join(json.dumps(line) + "\n" for line in lines)
    (directory / "entries.jsonl").write_text(text, encoding="utf-8")


def edit_line(directory: Path, seq: int, change: Callable[[dict[str, Any]], None]) -> None:
    lines = read_lines(directory)
    change(lines[seq])
    write_lines(directory, lines)


def leaf_of(line: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = json.loads(base64.b64decode(line["leaf"]))
    return entry


def set_leaf(line: dict[str, Any], leaf: bytes, *, rehash: bool = True) -> None:
    """Replaces the leaf; with ``rehash`` also its hash, as anyone can (a signature needs the key)."""
    line["leaf"] = base64.b64encode(leaf).decode()
    if rehash:
        line["hash"] = merkle.leaf_hash(leaf).hex()


def edit_leaf(directory: Path, seq: int, change: Callable[[dict[str, Any]], None]) -> None:
    def rewrite(line: dict[str, Any]) -> None:
        entry = leaf_of(line)
        change(entry)
        set_leaf(line, rfc8785.dumps(entry))

    edit_line(directory, seq, rewrite)


def flip_leaf_byte(line: dict[str, Any]) -> None:
    leaf = bytearray(base64.b64decode(line["leaf"]))
    leaf[40] ^= 0x01
    set_leaf(line, bytes(leaf), rehash=False)


def flip_hex(text: str) -> str:
    return ("1" if text[0] == "0" else "0") + text[1:]


def forge_signature(line: dict[str, Any]) -> None:
    signature = bytearray(base64.b64decode(line["signature"]))
    signature[0] ^= 0x80
    line["signature"] = base64.b64encode(bytes(signature)).decode()


def respaced(rehash: bool) -> Callable[[dict[str, Any]], None]:
    def change(line: dict[str, Any]) -> None:
        set_leaf(line, json.dumps(leaf_of(line), ensure_ascii=False).encode(), rehash=rehash)

    return change


def drop_line(seq: int) -> Callable[[Path], None]:
    def tamper(directory: Path) -> None:
        lines = read_lines(directory)
        del lines[seq]
        write_lines(directory, lines)

    return tamper


def swap_lines(directory: Path) -> None:
    lines = read_lines(directory)
    lines[4], lines[5] = lines[5], lines[4]
    write_lines(directory, lines)


def truncate_after(count: int) -> Callable[[Path], None]:
    def tamper(directory: Path) -> None:
        write_lines(directory, read_lines(directory)[:count])

    return tamper


def garble_line(directory: Path) -> None:
    text = (directory / "entries.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    text[8] = text[8][:20] + "\n"
    (directory / "entries.jsonl").write_text("".join(text), encoding="utf-8")


def drop_first_key(directory: Path) -> None:
    path = directory / "keys.json"
    path.write_text(json.dumps(json.loads(path.read_text())[1:]), encoding="utf-8")


def replace_first_public_key(directory: Path) -> None:
    """Swaps in another key, with a vkey to match, but keeps the key id the entries name."""
    path = directory / "keys.json"
    items = json.loads(path.read_text())
    public_key = Ed25519PrivateKey.generate().public_key().public_bytes_raw()
    items[0]["public_key"] = public_key.hex()
    items[0]["vkey"] = note.vkey(items[0]["name"], public_key)
    path.write_text(json.dumps(items), encoding="utf-8")


ENTRY_TAMPERING: dict[str, tuple[Callable[[Path], None], str, str]] = {
    # name: (tamper, verdict prefix, part of the reason)
    "flipped leaf byte": (lambda d: edit_line(d, 5, flip_leaf_byte), "FAIL seq 5: ", "hash is not SHA-256"),
    "changed hash": (lambda d: edit_line(d, 5, lambda x: x.update(hash=flip_hex(x["hash"]))), "FAIL seq 5: ", "hash"),
    "forged signature": (lambda d: edit_line(d, 9, forge_signature), "FAIL seq 9: ", "signature by key"),
    "altered data, rehashed": (
        lambda d: edit_leaf(d, 10, lambda e: e["data"].update(quantity=1)),
        "FAIL seq 10: ",
        "signature by key",
    ),
    "dropped line": (drop_line(4), "FAIL seq 4: ", "the next entry has seq 5"),
    "swapped lines": (swap_lines, "FAIL seq 4: ", "the next entry has seq 5"),
    "changed prev": (
        lambda d: edit_leaf(d, 6, lambda e: e.update(prev=flip_hex(e["prev"]))),
        "FAIL seq 6: ",
        "prev is",
    ),
    "changed seq in leaf": (lambda d: edit_leaf(d, 6, lambda e: e.update(seq=7)), "FAIL seq 6: ", "leaf says seq 7"),
    "missing field": (lambda d: edit_leaf(d, 3, lambda e: e.pop("subject")), "FAIL seq 3: ", "lacks the field"),
    "bad time": (
        lambda d: edit_leaf(d, 3, lambda e: e.update(time="2026-11-28 12:00:00+01:00")),
        "FAIL seq 3: ",
        "RFC 3339",
    ),
    "unknown key id": (lambda d: edit_line(d, 2, lambda x: x.update(key_id="deadbeef")), "FAIL seq 2: ", "not a key"),
    "non-canonical JSON": (lambda d: edit_line(d, 3, respaced(False)), "FAIL seq 3: ", "hash is not SHA-256"),
    "non-canonical JSON, rehashed": (lambda d: edit_line(d, 3, respaced(True)), "FAIL seq 3: ", "not RFC 8785"),
    "garbled line": (garble_line, "FAIL seq 8: ", "entries.jsonl line 9"),
    "key removed": (drop_first_key, "FAIL seq 0: ", "not a key of the log"),
    "key replaced": (replace_first_public_key, "FAIL key ", "its name and public key give the key id"),
}


@pytest.mark.parametrize("tamper", ENTRY_TAMPERING.values(), ids=ENTRY_TAMPERING.keys())
def test_a_tampered_bundle_fails_at_the_first_entry_affected(
    bundle: Path, capsys: pytest.CaptureFixture[str], tamper: tuple[Callable[[Path], None], str, str]
) -> None:
    change, verdict, reason = tamper
    change(bundle)
    status, out = run_verify(bundle, capsys)
    assert status == 1
    assert out.startswith(verdict), out
    assert reason in out
    assert out.count("\n") == 1  # the first failure only


# Checkpoints.


def checkpoint_path(directory: Path, size: int) -> Path:
    return directory / "checkpoints" / f"{size}.note"


def resign(size: int, root: bytes, signer: Callable[[Ledger], note.Signer]) -> Callable[[Path, Ledger], None]:
    def tamper(directory: Path, ledger: Ledger) -> None:
        body = note.checkpoint_body(ledger.signer.name, size, root)
        checkpoint_path(directory, size).write_text(note.sign_note(body, [signer(ledger)]), encoding="utf-8")

    return tamper


def edit_size_line(directory: Path, ledger: Ledger) -> None:
    path = checkpoint_path(directory, 7)
    path.write_text(path.read_text(encoding="utf-8").replace("\n7\n", "\n6\n", 1), encoding="utf-8")


def rename_note(directory: Path, ledger: Ledger) -> None:
    checkpoint_path(directory, 7).rename(checkpoint_path(directory, 6))


def stray_file(directory: Path, ledger: Ledger) -> None:
    (directory / "checkpoints" / "latest.txt").write_text("13\n", encoding="utf-8")


FORGED_ROOT = hashlib.sha256(b"a tree that never was").digest()
CHECKPOINT_TAMPERING: dict[str, tuple[Callable[[Path, Ledger], None], str, str]] = {
    "signed by a key not in keys.json": (
        resign(7, FORGED_ROOT, lambda ledger: note.Signer(ledger.signer.name, Ed25519PrivateKey.generate())),
        "FAIL checkpoint 7: ",
        "no signature by a known key",
    ),
    "size line changed": (edit_size_line, "FAIL checkpoint 7: ", "does not verify"),
    "root that is not the entries' root, signed by the log": (
        resign(7, FORGED_ROOT, lambda ledger: ledger.signer),
        "FAIL checkpoint 7: ",
        f"its root {FORGED_ROOT.hex()} is not the root of entries 0..6",
    ),
    "filed under another size": (rename_note, "FAIL checkpoint 6: ", "signed for tree size 7"),
    "entries after 12 dropped": (
        lambda d, _ledger: truncate_after(12)(d),
        "FAIL checkpoint 13: ",
        "covers 13 entries but the ledger holds only 12",
    ),
    "stray file": (stray_file, "FAIL checkpoints/latest.txt", "is not named <tree size>.note"),
}


@pytest.mark.parametrize("tamper", CHECKPOINT_TAMPERING.values(), ids=CHECKPOINT_TAMPERING.keys())
def test_a_tampered_checkpoint_fails_naming_its_size(
    ledger: Ledger,
    bundle: Path,
    capsys: pytest.CaptureFixture[str],
    tamper: tuple[Callable[[Path, Ledger], None], str, str],
) -> None:
    change, verdict, reason = tamper
    change(bundle, ledger)
    status, out = run_verify(bundle, capsys)
    assert status == 1
    assert out.startswith(verdict), out
    assert reason in out


# Offline, as an auditor runs it.


def test_an_exported_ledger_verifies_offline(ledger: Ledger, bundle: Path) -> None:
    result = run_module("-m", "ledger.verify", str(bundle))
    assert (result.returncode, result.stdout, result.stderr) == (0, "OK 15 entries\n", "")


def test_the_offline_verifier_needs_no_django(bundle: Path) -> None:
    result = run_module("-c", WITHOUT_DJANGO, str(bundle))
    assert (result.returncode, result.stdout) == (0, "OK 15 entries\n"), result.stderr


def test_the_offline_verifier_exits_1_at_the_first_failure(bundle: Path) -> None:
    edit_line(bundle, 9, forge_signature)
    result = run_module("-m", "ledger.verify", str(bundle))
    assert result.returncode == 1
    assert result.stdout.startswith("FAIL seq 9: the signature by key ")


def test_the_offline_verifier_exits_2_when_there_is_no_bundle(tmp_path: Path) -> None:
    result = run_module("-m", "ledger.verify", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "nowhere is not a directory" in result.stderr


def test_a_directory_without_entries_is_not_a_bundle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        verify.main([str(tmp_path)])
    assert exited.value.code == 2
    assert "entries.jsonl is missing" in capsys.readouterr().err


@pytest.mark.django_db
def test_an_empty_ledger_exports_and_verifies(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export(tmp_path / "empty")
    assert run_verify(tmp_path / "empty", capsys) == (0, "OK 0 entries\n")


# The bundle format.


def test_the_bundle_holds_what_the_api_serves(ledger: Ledger, bundle: Path) -> None:
    lines = read_lines(bundle)
    assert [line["seq"] for line in lines] == list(range(ledger.size))
    stored = Entry.objects.get(seq=9)
    assert lines[9] == {
        "seq": 9,
        "leaf": base64.b64encode(bytes(stored.leaf)).decode(),
        "hash": bytes(stored.hash).hex(),
        "signature": base64.b64encode(bytes(stored.signature)).decode(),
        "key_id": stored.key_id,
    }

    old, new = json.loads((bundle / "keys.json").read_text())
    assert set(old) == {"name", "key_id", "public_key", "vkey", "active_from", "retired_at"}
    assert old["retired_at"] is not None
    assert new["retired_at"] is None
    assert new["active_from"].endswith("Z")
    assert note.parse_vkey(new["vkey"]).public_key == bytes.fromhex(new["public_key"])
    assert {line["key_id"] for line in lines[:8]} == {old["key_id"]}
    assert {line["key_id"] for line in lines[8:]} == {new["key_id"]}

    notes = sorted(path.name for path in (bundle / "checkpoints").iterdir())
    assert notes == sorted(f"{size}.note" for size in ledger.checkpoints)
    for checkpoint in Checkpoint.objects.all():
        assert checkpoint_path(bundle, checkpoint.size).read_bytes() == checkpoint.note.encode()


def test_export_says_what_it_wrote(ledger: Ledger, tmp_path: Path) -> None:
    out = export(tmp_path / "bundle")
    assert "Wrote 15 entries to " in out
    assert "Wrote 2 keys to " in out
    assert "Wrote 4 checkpoints to " in out


def test_export_refuses_a_non_empty_directory_unless_forced(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "bundle"
    (directory / "checkpoints").mkdir(parents=True)
    checkpoint_path(directory, 99).write_text("left over from another ledger\n", encoding="utf-8")
    with pytest.raises(CommandError, match="is not empty"):
        export(directory)

    export(directory, "--force")
    assert not checkpoint_path(directory, 99).exists()
    assert run_verify(directory, capsys) == (0, "OK 15 entries\n")


# The live database.


def verify_live() -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("ledger_verify", stdout=out)
    except SystemExit as exited:
        return int(exited.code or 0), out.getvalue()
    return 0, out.getvalue()


def without_triggers(change: Callable[[], object]) -> None:
    """Changes ledger rows as someone with direct database access could; the test's transaction undoes it."""
    with connection.cursor() as cursor:
        for sql in triggers.drop_statements(connection.vendor):
            cursor.execute(sql)
    change()
    with connection.cursor() as cursor:
        for sql in triggers.create_statements(connection.vendor):
            cursor.execute(sql)


def test_ledger_verify_passes_on_the_live_ledger(ledger: Ledger) -> None:
    assert verify_live() == (0, "OK 15 entries\n")


@pytest.mark.django_db
def test_ledger_verify_passes_on_an_empty_ledger() -> None:
    assert verify_live() == (0, "OK 0 entries\n")


def test_ledger_verify_fails_after_a_row_is_changed(ledger: Ledger) -> None:
    leaf = bytes(Entry.objects.get(seq=5).leaf).replace(b"quantity", b"Quantity")
    without_triggers(lambda: Entry.objects.filter(seq=5).update(leaf=leaf))
    status, out = verify_live()
    assert status == 1
    assert out.startswith("FAIL seq 5: the hash is not SHA-256")


def test_ledger_verify_notices_deleted_entries_that_a_checkpoint_covers(ledger: Ledger) -> None:
    def delete_tail() -> None:
        EntryReader.objects.filter(entry_id__gte=12).delete()
        Entry.objects.filter(seq__gte=12).delete()

    without_triggers(delete_tail)
    assert verify_live() == (1, "FAIL checkpoint 13: it covers 13 entries but the ledger holds only 12\n")


@pytest.mark.parametrize(
    ("tamper", "said"),
    [
        ("change", "FAIL the stored hash of entries 4 to 7 (node 2/1) is not the one its entries make\n"),
        ("delete", "FAIL the stored hash of entries 4 to 7 (node 2/1) is missing\n"),
        ("add", "FAIL 1 stored subtree hash(es) within the first 15 entries are no entries' own\n"),
    ],
)
def test_ledger_verify_checks_the_stored_subtree_hashes_proofs_are_served_from(
    ledger: Ledger, tamper: str, said: str
) -> None:
    node = TreeNode.objects.filter(level=2, index=1)
    changes = {
        "change": lambda: node.update(hash=bytes(32)),
        "delete": lambda: node.delete(),
        "add": lambda: TreeNode.objects.create(level=0, index=-1, hash=bytes(32)),
    }
    without_triggers(changes[tamper])
    assert verify_live() == (1, said)


def test_ledger_verify_checks_the_stored_key_ids(ledger: Ledger) -> None:
    without_triggers(lambda: SigningKey.objects.filter(retired_at__isnull=False).update(key_id="0badc0de"))
    status, out = verify_live()
    assert status == 1
    assert "its name and public key give the key id" in out


# The streaming tree.


def test_the_frontier_gives_the_spec_roots_in_log_n_memory() -> None:
    frontier = verify.Frontier()
    roots = [frontier.root().hex()]
    for leaf in VECTOR_LEAVES:
        frontier.append(merkle.leaf_hash(bytes.fromhex(leaf)))
        assert set(frontier.nodes) == merkle.root_keys(frontier.size)
        roots.append(frontier.root().hex())
    assert roots == VECTOR_ROOTS


def test_a_log_with_no_entries_and_no_checkpoints_verifies() -> None:
    assert verify.verify([], [], []) == 0
