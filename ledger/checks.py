"""Stored checkpoints and entries verified as a page is served, for pages to show.

Nothing stored is trusted unchecked. A checkpoint's tree head is what its
signed note says once a known log key's signature on it verifies; its ``size``
and ``root`` columns are only compared with it. An entry's leaf hash is
recomputed from its stored bytes, its signature checked under the key id it
names, and its RFC 9162 inclusion proof made from the stored Merkle nodes and
checked with ``merkle.verify_inclusion`` against a signed root. So an altered
checkpoint, node or entry shows as not verified.

The reasons are translated sentences; a page may word its own verdict from
the fields instead. Reading the nodes is the caller's (``proof_keys``, then
``services.nodes``), so a page fetches every proof's nodes in one query.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from django.conf import settings
from django.utils.translation import gettext as _

from ledger import merkle, note
from ledger.models import Checkpoint, Entry


@dataclass(frozen=True)
class CheckpointCheck:
    """A stored checkpoint and what verifying its signed note found."""

    row: Checkpoint
    head: note.Checkpoint | None  # the tree head a known log key's verified signature vouches for
    signed_by: tuple[str, ...]  # "<name>+<key id>" of each known key whose signature verified
    note_error: str  # why the signed note does not verify, as ledger.note says; "" when it verifies
    foreign: bool  # the note is signed for another log than this one
    problems: tuple[str, ...]  # every reason not to trust it, a sentence each; () when it verified

    @property
    def verified(self) -> bool:
        return self.head is not None and not self.problems

    @property
    def root_hex(self) -> str:
        return bytes(self.row.root).hex()


def checkpoint_check(row: Checkpoint, verifiers: Sequence[note.Verifier]) -> CheckpointCheck:
    """Verifies the row's signed note under ``verifiers`` (a log key must have signed it), then compares the
    signed origin with this log's and the signed size and root with the stored ones."""
    try:
        head = note.open_checkpoint(row.note, verifiers)
        opened = note.open_note(row.note, verifiers)
    except note.NoteError as error:
        reason = _("Its signed note does not verify: %(reason)s") % {"reason": error}
        return CheckpointCheck(row, None, (), str(error), False, (reason,))
    problems = []
    foreign = head.origin != settings.LEDGER_ORIGIN
    if foreign:
        problems.append(
            _("It is signed for the log %(signed)s, not this one (%(ours)s).")
            % {"signed": head.origin, "ours": settings.LEDGER_ORIGIN}
        )
    if head.size != row.size:
        problems.append(
            _("Its note is signed for a tree of %(signed)d entries but it is stored as checkpoint %(stored)d.")
            % {"signed": head.size, "stored": row.size}
        )
    if head.root != bytes(row.root):
        problems.append(_("Its stored root hash differs from the root hash its note is signed for."))
    signed_by = tuple(f"{verifier.name}+{verifier.key_id.hex()}" for verifier in opened.verified_by)
    return CheckpointCheck(row, head, signed_by, "", foreign, tuple(problems))


class Inclusion(enum.StrEnum):
    VERIFIED = "verified"  # the proof leads from the entry's leaf hash to the checkpoint's signed root
    PENDING = "pending"  # the entry is newer than the checkpoint
    FAILED = "failed"  # no checkpoint to trust, a node missing, or a proof that leads elsewhere: see the reason


@dataclass(frozen=True)
class EntryCheck:
    """A stored entry and what verifying it found."""

    entry: Entry
    leaf_hash: str  # hex, recomputed from the stored leaf bytes
    hash_matches: bool  # the stored hash column equals it
    signed_by: str  # the key id whose signature on the leaf verified, "" if it did not
    inclusion: Inclusion
    proof: tuple[str, ...] | None  # hex, leaf end first; None when none was made
    reason: str  # why inclusion is not verified


def entry_check(
    entry: Entry,
    head: note.Checkpoint | None,
    keys: Mapping[str, note.Verifier],
    nodes: Mapping[merkle.NodeKey, bytes],
) -> EntryCheck:
    """Checks the entry's stored hash and its signature under the key it names, and proves it is in ``head``.

    ``head`` is a verified checkpoint's tree head, None when none can be trusted; ``keys`` are the log's keys
    by key id (``by_key_id``); ``nodes`` hold at least the ``proof_keys`` of the entry.
    """
    leaf = bytes(entry.leaf)
    digest = merkle.leaf_hash(leaf)
    verifier = keys.get(entry.key_id)
    signed = verifier is not None and verifier.verify(leaf, bytes(entry.signature))
    inclusion, proof, reason = _inclusion(entry.seq, digest, head, nodes)
    return EntryCheck(
        entry=entry,
        leaf_hash=digest.hex(),
        hash_matches=digest == bytes(entry.hash),
        signed_by=entry.key_id if signed else "",
        inclusion=inclusion,
        proof=proof,
        reason=reason,
    )


def _inclusion(
    seq: int, digest: bytes, head: note.Checkpoint | None, nodes: Mapping[merkle.NodeKey, bytes]
) -> tuple[Inclusion, tuple[str, ...] | None, str]:
    if head is None:
        return Inclusion.FAILED, None, _("No signed checkpoint that verifies can vouch for it.")
    if seq >= head.size:
        return Inclusion.PENDING, None, ""
    try:
        path = merkle.inclusion_proof(seq, head.size, nodes)
    except merkle.MissingNodeError as error:
        reason = _("No inclusion proof can be made from the stored tree: %(reason)s") % {"reason": error}
        return Inclusion.FAILED, None, reason
    proof = tuple(merkle.proof_to_hex(path))
    if merkle.verify_inclusion(seq, head.size, digest, path, head.root):
        return Inclusion.VERIFIED, proof, ""
    reason = _("The proof does not lead from this entry's leaf hash to the checkpoint's signed root.")
    return Inclusion.FAILED, proof, reason


def by_key_id(verifiers: Iterable[note.Verifier]) -> dict[str, note.Verifier]:
    """The log's keys by the hex key id an entry names."""
    return {verifier.key_id.hex(): verifier for verifier in verifiers}


def proof_keys(seqs: Iterable[int], head: note.Checkpoint | None) -> set[merkle.NodeKey]:
    """The stored nodes that the inclusion proofs of these entries in ``head`` read."""
    if head is None:
        return set()
    return {key for seq in seqs if seq < head.size for key in merkle.inclusion_keys(seq, head.size)}
