"""The ledger's services against the database: append, sequence, checkpoints, rotation, append-only."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core import checks
from django.core.management import call_command
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.utils import timezone

from ledger import keys, merkle, note, services
from ledger.models import Checkpoint, Entry, PendingEvent, SigningKey, TreeNode

pytestmark = pytest.mark.django_db


def append(n: int, event_type: str = "shipment.dispatched", readers: tuple[str, ...] = ("org:1",)) -> None:
    for i in range(n):
        services.entry_append(type=event_type, subject=f"shipment:S{i}", data={"i": i}, readers=readers)


def entries() -> list[dict[str, Any]]:
    return [json.loads(bytes(e.leaf)) for e in Entry.objects.order_by("seq")]


def test_appended_events_become_gapless_chained_signed_entries() -> None:
    append(5)
    assert services.entries_sequence() == 5
    assert PendingEvent.objects.count() == 0
    rows = list(Entry.objects.order_by("seq"))
    assert [row.seq for row in rows] == [0, 1, 2, 3, 4]
    verifier = note.Verifier(settings.LEDGER_ORIGIN, bytes(SigningKey.objects.get().public_key))
    prev = "0" * 64
    for row, leaf in zip(rows, entries(), strict=True):
        assert leaf["prev"] == prev
        assert leaf["seq"] == row.seq
        assert leaf["time"].endswith("Z")
        assert bytes(row.hash) == merkle.leaf_hash(bytes(row.leaf))
        assert verifier.verify(bytes(row.leaf), bytes(row.signature))
        assert row.key_id == verifier.key_id.hex()
        prev = bytes(row.hash).hex()


def test_sequencing_twice_adds_nothing_and_later_events_continue_the_chain() -> None:
    append(3)
    services.entries_sequence()
    assert services.entries_sequence() == 0
    append(2)
    services.entries_sequence()
    leaves = entries()
    assert [leaf["seq"] for leaf in leaves] == [0, 1, 2, 3, 4]
    assert leaves[3]["prev"] == bytes(Entry.objects.get(seq=2).hash).hex()


def test_more_events_than_one_batch_are_all_sequenced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services, "BATCH_SIZE", 7)
    append(23)
    assert services.entries_sequence() == 23
    assert Entry.objects.count() == 23


def test_stored_subtrees_give_the_same_root_as_a_tree_built_from_every_leaf() -> None:
    append(37)
    services.entries_sequence()
    tree = merkle.MemoryTree()
    for row in Entry.objects.order_by("seq"):
        tree.append(bytes(row.hash))
    for size in (1, 2, 5, 16, 31, 37):
        assert services.root_at(size) == tree.root(size)
    # one node per complete subtree: 37 leaves + 18 + 9 + 4 + 2 + 1
    assert TreeNode.objects.count() == 37 + 18 + 9 + 4 + 2 + 1


def _failing_domain_change() -> None:
    with transaction.atomic():
        append(1)
        raise RuntimeError("the domain change failed")


def test_an_event_rolls_back_with_its_domain_transaction() -> None:
    with pytest.raises(RuntimeError):
        _failing_domain_change()
    assert PendingEvent.objects.count() == 0


@pytest.mark.parametrize(
    ("event_type", "data", "subject", "reader"),
    [
        ("shipment.teleported", {}, "x", "org:1"),
        ("shipment.dispatched", {"t": float("nan")}, "x", "org:1"),
        ("shipment.dispatched", {"n": 2**60}, "x", "org:1"),
        ("shipment.dispatched", {}, "", "org:1"),
        ("shipment.dispatched", {}, "x" * 201, "org:1"),
        ("shipment.dispatched", {}, "x", "p" * 65),
    ],
)
def test_an_event_the_ledger_cannot_record_is_refused_at_once(
    event_type: str, data: dict[str, Any], subject: str, reader: str
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011  (several messages)
        services.entry_append(type=event_type, subject=subject, data=data, readers=[reader])
    assert PendingEvent.objects.count() == 0


def test_a_checkpoint_is_a_signed_note_over_the_root_and_is_not_repeated() -> None:
    assert services.checkpoint_sign() is None  # empty ledger
    append(6)
    services.entries_sequence()
    first = services.checkpoint_sign()
    assert first is not None
    assert services.checkpoint_sign() == first
    opened = note.open_checkpoint(first.note, services.verifiers())
    assert (opened.origin, opened.size, opened.root) == (settings.LEDGER_ORIGIN, 6, services.root_at(6))
    lines = first.note.split("\n")
    assert lines[:4] == [settings.LEDGER_ORIGIN, "6", base64.b64encode(services.root_at(6)).decode(), ""]
    assert lines[4].startswith("\u2014 " + settings.LEDGER_ORIGIN + " ")
    append(3)
    second = services.ledger_commit()
    assert second is not None
    assert second.size == 9
    proof = merkle.consistency_proof(6, 9, services.nodes(merkle.consistency_keys(6, 9)))
    assert merkle.verify_consistency(6, 9, bytes(first.root), bytes(second.root), proof)


def test_ledger_checkpoint_command_sequences_and_prints_the_note(capsys: pytest.CaptureFixture[str]) -> None:
    append(2)
    call_command("ledger_checkpoint")
    out = capsys.readouterr().out
    assert "sequenced 2 pending events" in out
    assert out.endswith(Checkpoint.objects.get().note)


def test_rotation_retires_the_old_key_which_still_verifies_old_entries(
    django_capture_on_commit_callbacks: Any,
) -> None:
    append(3)
    services.ledger_commit()
    old = SigningKey.objects.get()
    with django_capture_on_commit_callbacks(execute=True):  # the key file is replaced on commit
        new = services.key_rotate()
    old.refresh_from_db()
    assert old.retired_at is not None
    assert new.retired_at is None
    rotation = Entry.objects.get(type="key.rotated")
    assert rotation.key_id == old.key_id  # announced by the key it replaces
    assert json.loads(bytes(rotation.leaf))["data"]["active"] == new.key_id
    rotation_checkpoint = Checkpoint.objects.get(size=4)
    signers = note.open_note(rotation_checkpoint.note, services.verifiers()).verified_by
    assert {signer.key_id.hex() for signer in signers} == {old.key_id, new.key_id}
    append(1)
    services.entries_sequence()
    assert Entry.objects.get(seq=4).key_id == new.key_id
    retired = note.Verifier(old.name, bytes(old.public_key))
    assert all(retired.verify(bytes(e.leaf), bytes(e.signature)) for e in Entry.objects.filter(seq__lt=4))


def test_the_rotate_command_leaves_the_new_key_in_the_key_file(
    capsys: pytest.CaptureFixture[str], django_capture_on_commit_callbacks: Any
) -> None:
    append(1)
    services.ledger_commit()
    with django_capture_on_commit_callbacks(execute=True):
        call_command("ledger_rotate_key")
    path = Path(settings.LEDGER_KEY_FILE)
    active = SigningKey.objects.get(retired_at__isnull=True)
    assert keys.public_bytes(keys.load(path, create=False)) == bytes(active.public_key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert active.key_id in capsys.readouterr().out


def test_a_new_key_file_is_created_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "var" / "ledger.key"
    keys.load(path, create=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_key_file_others_can_read_is_refused(tmp_path: Path, settings: Any) -> None:
    path = tmp_path / "ledger.key"
    keys.load(path, create=True)
    os.chmod(path, 0o644)
    with pytest.raises(keys.KeyFileError, match="chmod 600"):
        keys.load(path, create=False)
    settings.LEDGER_KEY_FILE = path
    assert [error.id for error in checks.run_checks() if error.id == "ledger.E001"] == ["ledger.E001"]


def test_production_refuses_to_invent_a_key(tmp_path: Path, settings: Any) -> None:
    settings.LEDGER_KEY_FILE = tmp_path / "missing.key"
    settings.LEDGER_CREATE_KEY = False
    append(1)
    with pytest.raises(keys.KeyFileError, match="does not exist"):
        services.entries_sequence()


@pytest.mark.parametrize("table", ["ledger_entry", "ledger_treenode", "ledger_checkpoint", "ledger_entryreader"])
@pytest.mark.parametrize("statement", ["UPDATE {table} SET id = id", "DELETE FROM {table}"])
def test_the_database_refuses_to_change_ledger_rows(table: str, statement: str) -> None:
    append(2)
    services.ledger_commit()
    sql = statement.format(table=table)
    if table in ("ledger_entry",):
        sql = sql.replace("SET id = id", "SET seq = seq")
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql)
    assert Entry.objects.count() == 2


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE ledger_signingkey SET key_id = '0badc0de'",
        "UPDATE ledger_signingkey SET public_key = public_key, retired_at = NULL",
        "DELETE FROM ledger_signingkey",
    ],
)
def test_the_database_keeps_every_signing_key_as_it_was(statement: str) -> None:
    append(1)
    services.ledger_commit()
    key = SigningKey.objects.get()
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement)
    assert SigningKey.objects.get() == key
    assert (SigningKey.objects.get().key_id, SigningKey.objects.get().retired_at) == (key.key_id, None)


def test_retiring_a_key_is_the_one_change_the_database_allows_it() -> None:
    append(1)
    services.ledger_commit()
    SigningKey.objects.update(retired_at=timezone.now())  # what rotation does
    with pytest.raises((DatabaseError, IntegrityError)), transaction.atomic():
        SigningKey.objects.update(retired_at=None)  # and never undoes
    assert SigningKey.objects.get().retired_at is not None


def test_a_broker_outage_does_not_fail_the_committed_change(
    monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    from ledger import tasks

    def broker_down() -> None:
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(tasks.sequence, "delay", broker_down)
    with django_capture_on_commit_callbacks(execute=True):
        append(1)
    assert PendingEvent.objects.count() == 1  # kept for the periodic run
    assert services.entries_sequence() == 1


def test_beat_sequences_every_second_and_checkpoints_at_least_every_ten_seconds() -> None:
    from traceability.celery import app

    app.loader.import_default_modules()
    schedule = {entry["task"]: entry["schedule"] for entry in settings.CELERY_BEAT_SCHEDULE.values()}
    assert schedule["ledger.tasks.sequence"] <= 1
    assert schedule["ledger.tasks.checkpoint"] <= 10
    assert set(schedule) <= set(app.tasks)  # the names are real tasks


def test_the_checkpoint_task_sequences_then_signs() -> None:
    from ledger import tasks

    append(3)
    assert tasks.checkpoint() == 3
    assert tasks.checkpoint() == 3  # nothing new: the same checkpoint
    assert Checkpoint.objects.count() == 1


def test_two_processes_creating_the_key_at_once_end_up_with_one(tmp_path: Path) -> None:
    path = tmp_path / "ledger.key"
    first = keys.load(path, create=True)
    keys._create(path)  # a second process arriving a moment later keeps the first one's key
    assert keys.public_bytes(keys.load(path, create=True)) == keys.public_bytes(first)
    assert [p.name for p in tmp_path.iterdir()] == ["ledger.key"]
