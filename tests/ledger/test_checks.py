"""Checking a stored checkpoint and a stored entry as the pages show them (``ledger.checks``).

The log here is built in memory the way the sequencer builds it (canonical
leaves signed by the log key, RFC 9162 nodes), so every check runs on rows as
they would be stored, then on the same rows altered.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from ledger import checks, merkle, note, services
from ledger.checks import Inclusion
from ledger.models import Checkpoint, Entry

TIME = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)


@dataclass
class Log:
    """A log of a few entries, its Merkle tree, and its key."""

    signer: note.Signer = field(
        default_factory=lambda: note.Signer(settings.LEDGER_ORIGIN, Ed25519PrivateKey.generate())
    )
    entries: list[Entry] = field(default_factory=list)
    tree: merkle.MemoryTree = field(default_factory=merkle.MemoryTree)

    def append(self, n: int) -> None:
        for _ in range(n):
            seq = len(self.entries)
            prev = bytes(self.entries[-1].hash).hex() if self.entries else services.ZERO_HASH
            leaf = services.leaf_data(
                seq=seq,
                time=services.entry_time(TIME),
                type="shipment.dispatched",
                subject="shipment:SHP-CHECKS",
                data={"i": seq},
                prev=prev,
            )
            digest = merkle.leaf_hash(leaf)
            self.tree.append(digest)
            self.entries.append(
                Entry(
                    seq=seq,
                    time=TIME,
                    type="shipment.dispatched",
                    subject="shipment:SHP-CHECKS",
                    leaf=leaf,
                    hash=digest,
                    signature=self.signer.private_key.sign(leaf),
                    key_id=self.signer.verifier.key_id.hex(),
                    event_id=seq,
                )
            )

    def checkpoint(self, *signers: note.Signer, origin: str = "") -> Checkpoint:
        """The whole tree's checkpoint as stored, signed by the log key unless ``signers`` are given."""
        size, root = self.tree.size, self.tree.root()
        body = note.checkpoint_body(origin or settings.LEDGER_ORIGIN, size, root)
        return Checkpoint(size=size, root=root, note=note.sign_note(body, signers or [self.signer]))

    @property
    def keys(self) -> dict[str, note.Verifier]:
        return checks.by_key_id([self.signer.verifier])

    def nodes(self, head: note.Checkpoint) -> dict[merkle.NodeKey, bytes]:
        return self.tree.nodes(checks.proof_keys([entry.seq for entry in self.entries], head))


@pytest.fixture
def log() -> Log:
    log = Log()
    log.append(5)
    return log


def verified_head(log: Log, row: Checkpoint) -> note.Checkpoint:
    check = checks.checkpoint_check(row, [log.signer.verifier])
    assert check.verified, check.problems
    assert check.head is not None
    return check.head


# Checkpoints -------------------------------------------------------------------------


def test_a_checkpoint_signed_by_the_log_key_verifies_and_says_who_signed(log: Log) -> None:
    row = log.checkpoint()
    check = checks.checkpoint_check(row, [log.signer.verifier])
    assert check.verified
    assert check.head == note.Checkpoint(settings.LEDGER_ORIGIN, 5, log.tree.root())
    assert check.signed_by == (f"{settings.LEDGER_ORIGIN}+{log.signer.verifier.key_id.hex()}",)
    assert (check.note_error, check.foreign, check.problems) == ("", False, ())
    assert check.root_hex == log.tree.root().hex()


def test_a_checkpoint_forged_with_an_unknown_key_does_not_verify(log: Log) -> None:
    stranger = note.Signer(settings.LEDGER_ORIGIN, Ed25519PrivateKey.generate())
    check = checks.checkpoint_check(log.checkpoint(stranger), [log.signer.verifier])
    assert not check.verified
    assert check.head is None
    assert "no signature by a known key" in check.note_error
    assert check.problems == (f"Its signed note does not verify: {check.note_error}",)


def test_an_altered_note_does_not_verify(log: Log) -> None:
    row = log.checkpoint()
    row.note = row.note.replace("\n5\n", "\n4\n", 1)
    check = checks.checkpoint_check(row, [log.signer.verifier])
    assert check.head is None
    assert "does not verify: the note was altered" in check.note_error


def test_a_checkpoint_of_another_log_signed_by_its_known_key_is_foreign(log: Log) -> None:
    other = note.Signer("ledger.elsewhere.example", Ed25519PrivateKey.generate())
    row = log.checkpoint(other, origin=other.name)
    check = checks.checkpoint_check(row, [log.signer.verifier, other.verifier])
    assert not check.verified
    assert check.foreign
    assert check.head is not None
    assert check.head.origin == "ledger.elsewhere.example"
    assert check.problems == (
        f"It is signed for the log ledger.elsewhere.example, not this one ({settings.LEDGER_ORIGIN}).",
    )


def test_a_witness_signature_alone_does_not_make_a_checkpoint(log: Log) -> None:
    witness = note.Signer("witness.example", Ed25519PrivateKey.generate())
    check = checks.checkpoint_check(log.checkpoint(witness), [log.signer.verifier, witness.verifier])
    assert check.head is None
    assert "no verified signature by a key named" in check.note_error


def test_stored_size_and_root_are_compared_with_the_signed_ones(log: Log) -> None:
    row = log.checkpoint()
    row.size, row.root = 4, bytes(32)
    check = checks.checkpoint_check(row, [log.signer.verifier])
    assert not check.verified
    assert not check.foreign
    assert check.head is not None  # the signature is good: the stored columns are not
    assert check.problems == (
        "Its note is signed for a tree of 5 entries but it is stored as checkpoint 4.",
        "Its stored root hash differs from the root hash its note is signed for.",
    )


# Entries -----------------------------------------------------------------------------


def test_an_entry_in_the_checkpoint_verifies_with_its_proof(log: Log) -> None:
    head = verified_head(log, log.checkpoint())
    for entry in log.entries:
        check = checks.entry_check(entry, head, log.keys, log.nodes(head))
        assert check.entry is entry
        assert check.leaf_hash == bytes(entry.hash).hex()
        assert check.hash_matches
        assert check.signed_by == log.signer.verifier.key_id.hex()
        assert (check.inclusion, check.reason) == (Inclusion.VERIFIED, "")
        assert check.proof == tuple(merkle.proof_to_hex(log.tree.inclusion_proof(entry.seq, 5)))


def test_a_tampered_leaf_fails_its_hash_its_signature_and_its_inclusion(log: Log) -> None:
    head = verified_head(log, log.checkpoint())
    entry = log.entries[2]
    entry.leaf = bytes(entry.leaf).replace(b'"i":2', b'"i":99')
    check = checks.entry_check(entry, head, log.keys, log.nodes(head))
    assert check.leaf_hash == merkle.leaf_hash(bytes(entry.leaf)).hex() != bytes(entry.hash).hex()
    assert not check.hash_matches
    assert check.signed_by == ""
    assert check.inclusion is Inclusion.FAILED
    assert check.proof is not None  # made, but it leads elsewhere
    assert "does not lead from this entry's leaf hash to the checkpoint's signed root" in check.reason


def test_a_bad_signature_fails_only_the_signature(log: Log) -> None:
    head = verified_head(log, log.checkpoint())
    entry = log.entries[1]
    entry.signature = bytes(64)
    check = checks.entry_check(entry, head, log.keys, log.nodes(head))
    assert check.signed_by == ""
    assert check.hash_matches
    assert check.inclusion is Inclusion.VERIFIED


def test_a_signature_under_a_key_the_log_does_not_know_is_not_verified(log: Log) -> None:
    head = verified_head(log, log.checkpoint())
    stranger = note.Signer(settings.LEDGER_ORIGIN, Ed25519PrivateKey.generate())
    entry = log.entries[0]
    entry.signature, entry.key_id = stranger.private_key.sign(bytes(entry.leaf)), stranger.verifier.key_id.hex()
    assert checks.entry_check(entry, head, log.keys, log.nodes(head)).signed_by == ""


def test_a_missing_node_means_no_proof_can_be_made(log: Log) -> None:
    head = verified_head(log, log.checkpoint())
    nodes = log.nodes(head)
    del nodes[(0, 1)]  # leaf 1: the sibling on leaf 0's path
    check = checks.entry_check(log.entries[0], head, log.keys, nodes)
    assert check.inclusion is Inclusion.FAILED
    assert check.proof is None
    assert check.reason.startswith(
        "No inclusion proof can be made from the stored tree: Merkle node (level 0, index 1)"
    )
    assert checks.entry_check(log.entries[4], head, log.keys, nodes).inclusion is Inclusion.VERIFIED


def test_an_altered_node_makes_a_proof_that_leads_elsewhere(log: Log) -> None:
    head = verified_head(log, log.checkpoint())
    nodes = log.nodes(head) | {(0, 1): bytes(32)}
    check = checks.entry_check(log.entries[0], head, log.keys, nodes)
    assert check.inclusion is Inclusion.FAILED
    assert check.proof is not None


def test_an_entry_newer_than_the_checkpoint_is_pending(log: Log) -> None:
    head = verified_head(log, log.checkpoint())
    log.append(2)
    newest = log.entries[-1]
    check = checks.entry_check(newest, head, log.keys, log.nodes(head))
    assert (check.inclusion, check.proof, check.reason) == (Inclusion.PENDING, None, "")
    assert check.hash_matches
    assert check.signed_by


def test_without_a_trusted_checkpoint_no_inclusion_is_verified(log: Log) -> None:
    check = checks.entry_check(log.entries[0], None, log.keys, {})
    assert check.inclusion is Inclusion.FAILED
    assert check.proof is None
    assert check.reason
    assert check.hash_matches  # hash and signature are checked all the same
    assert check.signed_by


def test_proof_keys_name_the_nodes_of_the_entries_in_the_checkpoint_only(log: Log) -> None:
    head = verified_head(log, log.checkpoint())
    assert checks.proof_keys([0, 1], None) == set()
    assert checks.proof_keys([2, 7], head) == merkle.inclusion_keys(2, 5)
    assert checks.proof_keys([0, 4], head) == merkle.inclusion_keys(0, 5) | merkle.inclusion_keys(4, 5)
