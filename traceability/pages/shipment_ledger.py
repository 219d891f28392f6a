"""The shipment page's ledger section: the shipment's entries, each verified against the newest checkpoint."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass
from typing import Any

from django.http import HttpRequest
from django.utils.translation import gettext as _

from ledger import checks, merkle, note
from ledger import selectors as ledger_selectors
from ledger import services as ledger_services
from ledger.models import Checkpoint, Entry, PendingEvent
from traceability.models import Shipment

LEDGER_FACTS = 200  # entries other than readings.committed, oldest first
LEDGER_COMMITS = 5  # the newest readings.committed entries (one every few minutes while readings arrive)
COMMIT = "readings.committed"

VERIFIED, AWAITING, FAILED = "verified", "awaiting", "failed"


@dataclass(frozen=True)
class LedgerRow:
    seq: int
    time: datetime.datetime
    type: str
    facts: str
    state: str  # VERIFIED, AWAITING or FAILED
    reason: str  # why it failed


@dataclass(frozen=True)
class LedgerSection:
    rows: list[LedgerRow]
    checkpoint: Checkpoint | None
    problem: str  # why the newest checkpoint could not be trusted; "" when it verified
    commits: int  # readings.committed entries in all
    commits_shown: int
    pending: int  # facts of the shipment the sequencer has not made entries yet


def section(request: HttpRequest, shipment: Shipment) -> LedgerSection:
    """The shipment's entries the reader may read, each checked against the newest signed checkpoint.

    An entry is verified when its hash is that of its data, its signature
    verifies under the key that made it, and its RFC 9162 inclusion proof,
    computed from the stored tree, leads to the root of a checkpoint whose
    signed note verifies under the log's keys (``ledger.checks``).
    """
    subject = f"shipment:{shipment.reference}"
    entries = ledger_selectors.readable_entries(request).filter(subject=subject)
    facts = list(entries.exclude(type=COMMIT).order_by("seq")[:LEDGER_FACTS])
    commits = list(entries.filter(type=COMMIT).order_by("-seq")[:LEDGER_COMMITS])
    total = entries.filter(type=COMMIT).count() if len(commits) == LEDGER_COMMITS else len(commits)
    shown = sorted(facts + commits, key=lambda entry: entry.seq)
    verifiers = ledger_services.verifiers()
    stored = Checkpoint.objects.order_by("-size").first()
    signed, problem = signed_checkpoint(stored, verifiers)
    nodes = ledger_services.nodes(checks.proof_keys([entry.seq for entry in shown], signed))
    keys = checks.by_key_id(verifiers)
    rows = []
    for entry in shown:
        state, reason = entry_state(entry, keys, signed, nodes)
        if problem and state != FAILED:
            state, reason = FAILED, problem
        rows.append(LedgerRow(entry.seq, entry.time, entry.type, _facts(bytes(entry.leaf)), state, reason))
    return LedgerSection(
        rows=rows,
        checkpoint=stored,
        problem=problem,
        commits=total,
        commits_shown=len(commits),
        pending=PendingEvent.objects.filter(subject=subject).count(),
    )


def signed_checkpoint(stored: Checkpoint | None, verifiers: list[note.Verifier]) -> tuple[note.Checkpoint | None, str]:
    """The newest checkpoint as its signed note says it, or why it cannot be trusted."""
    if stored is None:
        return None, ""
    check = checks.checkpoint_check(stored, verifiers)
    if check.head is None:
        return None, _("the newest checkpoint does not verify: %(error)s") % {"error": check.note_error}
    if check.foreign:
        return None, _("the newest checkpoint is signed for another log, %(origin)s") % {"origin": check.head.origin}
    if not check.verified:
        return None, _("the newest checkpoint's signed note disagrees with the stored tree size or root")
    return check.head, ""


def entry_state(
    entry: Entry,
    keys: dict[str, note.Verifier],
    checkpoint: note.Checkpoint | None,
    nodes: dict[merkle.NodeKey, bytes],
) -> tuple[str, str]:
    """VERIFIED, AWAITING or FAILED with the first reason, in the page's words."""
    check = checks.entry_check(entry, checkpoint, keys, nodes)
    if not check.hash_matches:
        return FAILED, _("its hash is not the hash of its data")
    if not check.signed_by:
        return FAILED, _("its signature does not verify under key %(key)s") % {"key": entry.key_id}
    if checkpoint is None or check.inclusion is checks.Inclusion.PENDING:
        return AWAITING, ""
    if check.inclusion is checks.Inclusion.VERIFIED:
        return VERIFIED, ""
    if check.proof is None:
        return FAILED, _("a hash its inclusion proof needs is missing from the tree")
    return FAILED, _("its inclusion proof does not lead to the checkpoint's root")


def _facts(leaf: bytes) -> str:
    """An entry's data, briefly: ``name: value`` pairs, without the reference the subject already names."""
    data: dict[str, Any] = json.loads(leaf).get("data", {})
    return "; ".join(
        f"{name}: {_fact(value)}" for name, value in data.items() if name != "reference" and value not in (None, "", [])
    )


def _fact(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{name} {_fact(item)}" for name, item in value.items())
    if isinstance(value, list):
        return " | ".join(map(_fact, value))
    return str(value)
