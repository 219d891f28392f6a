"""Reads of the ledger shared by its API and commands."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from django.conf import settings
from django.db.models import Exists, Max, OuterRef, Q, QuerySet
from django.http import HttpRequest
from django.utils.module_loading import import_string

from ledger import merkle, services
from ledger.models import Checkpoint, Entry, EntryReader, SigningKey, TreeNode
from ledger.verify import CheckpointRecord, EntryRecord, KeyRecord, VerificationError


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


def stored_nodes_verify(size: int) -> None:
    """Raises ``VerificationError`` unless the stored complete-subtree hashes of the first ``size`` entries,
    which inclusion and consistency proofs are served from, are exactly those the entries' leaves make.

    Streams the leaves ``CHUNK_SIZE`` at a time, keeping only the frontier
    between chunks (a node per set bit of the size), so memory stays small.
    """
    frontier: dict[merkle.NodeKey, bytes] = {}
    expected = 0
    for start in range(0, size, CHUNK_SIZE):
        leaves = Entry.objects.filter(seq__gte=start, seq__lt=min(start + CHUNK_SIZE, size)).order_by("seq")
        hashes = [merkle.leaf_hash(bytes(leaf)) for leaf in leaves.values_list("leaf", flat=True)]
        made = {(level, index): digest for level, index, digest in merkle.append_nodes(start, hashes, frontier)}
        stored = services.nodes(made)
        for (level, index), digest in made.items():
            if stored.get((level, index)) != digest:
                problem = "is missing" if (level, index) not in stored else "is not the one its entries make"
                first, last = index << level, ((index + 1) << level) - 1
                raise VerificationError(
                    f"the stored hash of entries {first} to {last} (node {level}/{index}) {problem}"
                )
        expected += len(made)
        known = frontier | made
        frontier = {key: known[key] for key in merkle.root_keys(start + len(hashes))}
    within = Q(pk__in=[])
    for level in range(size.bit_length()):
        within |= Q(level=level, index__lt=size >> level)
    extra = TreeNode.objects.filter(within).count() - expected
    if extra:
        raise VerificationError(f"{extra} stored subtree hash(es) within the first {size} entries are no entries' own")
