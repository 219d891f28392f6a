"""Appending to the ledger, sequencing, checkpoints and key rotation.

``entry_append`` runs inside the caller's transaction and only writes an
outbox row, so domain transactions never wait for each other on the ledger.
One sequencer at a time (a PostgreSQL advisory lock; SQLite's single writer)
turns committed events into signed, chained entries in batches, and stores the
new complete Merkle subtrees so any proof costs O(log n) rows.
"""

from __future__ import annotations

import datetime
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from functools import reduce
from operator import or_
from pathlib import Path
from typing import Any

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction
from django.db.models import Max, Q
from django.utils import timezone

from ledger import events, keys, merkle, note
from ledger.models import Checkpoint, Entry, EntryReader, PendingEvent, SigningKey, TreeNode

logger = logging.getLogger(__name__)
SEQUENCER_LOCK = 0x6C6564676572  # "ledger": the advisory lock id on PostgreSQL
BATCH_SIZE = 1000
ZERO_HASH = "0" * 64
SUBJECT_MAX = Entry._meta.get_field("subject").max_length or 200
PARTY_MAX = EntryReader._meta.get_field("party").max_length or 64


class LedgerError(RuntimeError):
    """The ledger cannot do what was asked without breaking its guarantees."""


# Appending (inside the caller's transaction) --------------------------------


def entry_append(*, type: str, subject: str, data: Mapping[str, Any], readers: Iterable[str] = ()) -> PendingEvent:
    """Records an event to become a ledger entry; commits (or not) with the caller's transaction.

    ``readers`` are the parties (opaque strings) that may read the entry besides
    auditors; entries of public types are readable by anyone. Raises ValueError
    for an unknown type or data JCS cannot represent, so the caller's change
    rolls back rather than commit a fact the ledger would refuse. After commit,
    wakes the sequencer.
    """
    if type not in events.EVENT_TYPES:
        raise ValueError(f"unknown ledger event type {type!r}; add it to ledger/events.py")
    readers = sorted(set(readers))
    if not 0 < len(subject) <= SUBJECT_MAX or any(not 0 < len(party) <= PARTY_MAX for party in readers):
        raise ValueError(f"a subject has 1 to {SUBJECT_MAX} characters, a reader party 1 to {PARTY_MAX}")
    rfc8785.dumps(dict(data))  # raises for NaN, infinities, integers beyond 2**53
    event = PendingEvent.objects.create(
        type=type, subject=subject, data=dict(data), readers=readers, public=events.is_public(type)
    )
    transaction.on_commit(_wake_sequencer)
    return event


def _wake_sequencer() -> None:
    """Asks a worker to sequence now; at most once a second, as one run takes every pending event.

    Never raises: the event is already committed in the outbox, and beat runs
    the sequencer every second anyway, so a broker outage only delays it.
    """
    if not cache.add("ledger:sequencer-woken", 1, timeout=1):  # whole seconds: Redis rounds down
        return
    from ledger.tasks import sequence

    try:
        sequence.delay()
    except Exception:  # the broker is down; the periodic run will pick the event up
        logger.warning("could not wake the ledger sequencer; beat will sequence the event", exc_info=True)


# Keys ------------------------------------------------------------------------


def _key_path() -> Path:
    return Path(settings.LEDGER_KEY_FILE)


def active_signer() -> note.Signer:
    """The signer whose private key is in LEDGER_KEY_FILE; registers it on first use.

    Refuses a key file that others can read, or that does not hold the active key.
    """
    signer = note.Signer(settings.LEDGER_ORIGIN, keys.load(_key_path(), create=settings.LEDGER_CREATE_KEY))
    key_id = signer.verifier.key_id.hex()
    active = SigningKey.objects.filter(name=signer.name, retired_at__isnull=True).first()
    if active is None:
        if SigningKey.objects.filter(key_id=key_id).exists():
            raise keys.KeyFileError(f"{_key_path()} holds key {key_id}, which was retired; install the active key")
        SigningKey.objects.create(name=signer.name, key_id=key_id, public_key=signer.verifier.public_key)
    elif active.key_id != key_id:
        raise keys.KeyFileError(
            f"{_key_path()} holds key {key_id} but the active key is {active.key_id}"
            f" (an interrupted rotation leaves the new key in {_key_path()}.new)"
        )
    return signer


def verifiers() -> list[note.Verifier]:
    return [note.Verifier(key.name, bytes(key.public_key)) for key in SigningKey.objects.all()]


# Sequencing -------------------------------------------------------------------


def _lock() -> None:
    """Serialises sequencer, checkpoints and rotation; SQLite's IMMEDIATE transactions already do."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCER_LOCK])


def tree_size() -> int:
    last = Entry.objects.aggregate(last=Max("seq"))["last"]
    return 0 if last is None else last + 1


def nodes(wanted: Iterable[merkle.NodeKey]) -> dict[merkle.NodeKey, bytes]:
    """The stored complete-subtree hashes for ``wanted`` keys, in one query with one condition per level
    (one per node would pass SQLite's limit of a thousand terms for a page of proofs)."""
    by_level: dict[int, set[int]] = defaultdict(set)
    for level, index in wanted:
        by_level[level].add(index)
    if not by_level:
        return {}
    match = reduce(or_, (Q(level=level, index__in=sorted(indexes)) for level, indexes in by_level.items()))
    rows = TreeNode.objects.filter(match).values_list("level", "index", "hash")
    return {(level, index): bytes(digest) for level, index, digest in rows}


def entry_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def leaf_data(*, seq: int, time: str, type: str, subject: str, data: Mapping[str, Any], prev: str) -> bytes:
    """The entry's bytes: RFC 8785 canonical JSON (spec/ledger.md, "Entries")."""
    entry: dict[str, Any] = {
        "seq": seq,
        "time": time,
        "type": type,
        "subject": subject,
        "data": dict(data),
        "prev": prev,
    }
    return rfc8785.dumps(entry)


def entries_sequence(*, signer: note.Signer | None = None) -> int:
    """Turns every committed pending event into an entry, in batches; returns how many."""
    total = 0
    while count := _sequence_batch(signer):
        total += count
    return total


@transaction.atomic
def _sequence_batch(signer: note.Signer | None) -> int:
    _lock()
    pending = list(PendingEvent.objects.order_by("id")[:BATCH_SIZE])
    if not pending:
        return 0
    signer = signer or active_signer()
    key_id = signer.verifier.key_id.hex()
    last = Entry.objects.order_by("-seq").values_list("seq", "hash").first()
    start, prev = (last[0] + 1, bytes(last[1]).hex()) if last else (0, ZERO_HASH)
    entries, readers, leaves = [], [], []
    for seq, event in enumerate(pending, start=start):
        leaf = leaf_data(
            seq=seq, time=entry_time(event.time), type=event.type, subject=event.subject, data=event.data, prev=prev
        )
        digest = merkle.leaf_hash(leaf)
        entries.append(
            Entry(
                seq=seq,
                time=event.time,
                type=event.type,
                subject=event.subject,
                leaf=leaf,
                hash=digest,
                signature=signer.private_key.sign(leaf),
                key_id=key_id,
                public=event.public,
                event_id=event.pk,
            )
        )
        readers += [EntryReader(entry_id=seq, party=party) for party in event.readers]
        leaves.append(digest)
        prev = digest.hex()
    Entry.objects.bulk_create(entries)
    EntryReader.objects.bulk_create(readers)
    created = merkle.append_nodes(start, leaves, nodes(merkle.root_keys(start)))
    TreeNode.objects.bulk_create(TreeNode(level=level, index=index, hash=h) for level, index, h in created)
    PendingEvent.objects.filter(pk__in=[event.pk for event in pending]).delete()
    return len(pending)


# Checkpoints --------------------------------------------------------------------


def root_at(size: int) -> bytes:
    return merkle.root(size, nodes(merkle.root_keys(size)))


@transaction.atomic
def checkpoint_sign(*, signers: Sequence[note.Signer] = ()) -> Checkpoint | None:
    """Signs a checkpoint of the whole tree, unless the newest one already covers it.

    Before signing, proves the new tree consistent with the previous checkpoint:
    the log never signs two checkpoints that disagree.
    """
    _lock()
    size = tree_size()
    latest = Checkpoint.objects.order_by("-size").first()
    if latest is not None and latest.size > size:
        raise LedgerError(f"checkpoint {latest.size} covers more entries than the {size} stored: entries are missing")
    if size == 0 or (latest is not None and latest.size == size):
        return latest
    root = root_at(size)
    if latest is not None:
        proof = merkle.consistency_proof(latest.size, size, nodes(merkle.consistency_keys(latest.size, size)))
        if not merkle.verify_consistency(latest.size, size, bytes(latest.root), root, proof):
            raise LedgerError(f"the tree of size {size} is not consistent with checkpoint {latest.size}")
    body = note.checkpoint_body(settings.LEDGER_ORIGIN, size, root)
    signed = note.sign_note(body, list(signers) or [active_signer()])
    return Checkpoint.objects.create(size=size, root=root, note=signed)


def ledger_commit() -> Checkpoint | None:
    """Sequences whatever is pending, then signs a checkpoint (``manage.py ledger_checkpoint``, beat)."""
    entries_sequence()
    return checkpoint_sign()


# Key rotation --------------------------------------------------------------------


def key_rotate() -> SigningKey:
    """A new key signs from now on; the old one is retired but still verifies old entries.

    The rotation is itself an entry, signed by the old key, and the checkpoint
    that includes it carries both keys' signatures. The new private key is
    written to LEDGER_KEY_FILE only once the database has committed.
    """
    path = _key_path()
    staged = path.with_name(path.name + ".new")
    with transaction.atomic():
        _lock()
        old = active_signer()
        new = note.Signer(old.name, Ed25519PrivateKey.generate())
        entry_append(
            type="key.rotated",
            subject=f"key:{old.name}",
            data={
                "retired": old.verifier.key_id.hex(),
                "active": new.verifier.key_id.hex(),
                "vkey": note.vkey(new.name, new.verifier.public_key),
            },
        )
        entries_sequence(signer=old)
        checkpoint_sign(signers=[old, new])
        SigningKey.objects.filter(name=old.name, retired_at__isnull=True).update(retired_at=timezone.now())
        key = SigningKey.objects.create(
            name=new.name, key_id=new.verifier.key_id.hex(), public_key=new.verifier.public_key
        )
        keys.write(staged, new.private_key)
        transaction.on_commit(lambda: staged.replace(path))
    return key
