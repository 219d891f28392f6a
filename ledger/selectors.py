"""Reads of the ledger shared by its API and commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Exists, Max, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils.module_loading import import_string

from ledger import services
from ledger.models import Checkpoint, Entry, EntryReader, SigningKey
from ledger.verify import CheckpointRecord, EntryRecord, KeyRecord


def readable_entries(request: HttpRequest) -> QuerySet[Entry]:
    """The entries the caller may read: public ones, all of a subject any entry names them a reader of, or all.

    Readers are granted per subject: a carrier that takes over a shipment on the
    way is named by the hand-over entry, and so reads the shipment's earlier
    entries too. Who is which party is the project's business
    (``LEDGER_READER_PARTIES``); the ledger imports nothing of it.
    """
    reader_parties: Callable[[HttpRequest], frozenset[str] | None] = import_string(settings.LEDGER_READER_PARTIES)
    parties = reader_parties(request)
    if parties is None:
        return Entry.objects.all()
    if not parties:
        return Entry.objects.filter(public=True)
    named = EntryReader.objects.filter(entry__subject=OuterRef("subject"), party__in=parties)
    return Entry.objects.filter(Q(public=True) | Exists(named))


CHUNK_SIZE = 2000  # rows per round trip; a ledger can hold millions of entries


@dataclass(frozen=True)
class LiveLedger:
    """The live ledger as the records ledger.verify reads; entries and checkpoints are lazy streams."""

    keys: list[KeyRecord]
    entries: Iterator[EntryRecord]
    checkpoints: Iterator[CheckpointRecord]


def live_ledger() -> LiveLedger:
    """A consistent view of the ledger while the sequencer keeps appending, without a long transaction.

    The reads are ordered instead. Checkpoints only ever cover entries that
    already exist, so the newest checkpoint, read first, is at most the tree
    size read next. Keys are read after that size, so every key that signed an
    entry or checkpoint within it is among them. Checkpoints above both sizes
    are newer than this view and are left for the next run; one that covers
    more entries than exist stays in, and fails verification.
    """
    newest = Checkpoint.objects.aggregate(size=Max("size"))["size"] or 0
    size = services.tree_size()
    keys = [
        KeyRecord(
            name=key.name,
            key_id=key.key_id,
            public_key=bytes(key.public_key),
            active_from=services.entry_time(key.active_from),
            retired_at=None if key.retired_at is None else services.entry_time(key.retired_at),
        )
        for key in SigningKey.objects.order_by("active_from", "id")
    ]
    entries = (
        Entry.objects.filter(seq__lt=size)
        .order_by("seq")
        .values_list("seq", "leaf", "hash", "signature", "key_id")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    checkpoints = (
        Checkpoint.objects.filter(size__lte=max(size, newest))
        .order_by("size")
        .values_list("size", "note")
        .iterator(chunk_size=CHUNK_SIZE)
    )
    return LiveLedger(
        keys=keys,
        entries=(
            EntryRecord(seq, bytes(leaf), bytes(digest), bytes(signature), key_id)
            for seq, leaf, digest, signature, key_id in entries
        ),
        checkpoints=(CheckpointRecord(size, text) for size, text in checkpoints),
    )
