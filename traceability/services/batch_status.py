"""Holding a batch back and releasing it again: quarantine and release, each with its reason in the ledger."""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from traceability.models import Batch, BatchStatus
from traceability.services._common import Kind, _record, actor_organisation

MAX_REASON_LENGTH = 2000


@dataclass(frozen=True)
class _Change:
    event_type: str
    source: BatchStatus
    target: BatchStatus
    done: str  # "quarantined", "released": for messages


_QUARANTINE = _Change("batch.quarantined", BatchStatus.ACTIVE, BatchStatus.QUARANTINED, "quarantined")
_RELEASE = _Change("batch.released", BatchStatus.QUARANTINED, BatchStatus.ACTIVE, "released")


@transaction.atomic
def batch_quarantine(*, actor: User, batch: Batch, reason: str) -> Batch:
    """Holds an active batch back (after an excursion, a complaint, an investigation), saying why.

    Only an administrator or operator of the batch's manufacturer; ``reason`` is
    required. A quarantined batch cannot be shipped (``shipment_create``) until
    it is released. Locks the batch row; appends a ``batch.quarantined`` ledger
    entry, readable by the manufacturer, in the same transaction.
    """
    return _change(actor, batch, reason, _QUARANTINE)


@transaction.atomic
def batch_release(*, actor: User, batch: Batch, reason: str) -> Batch:
    """Releases a quarantined batch for use again, saying why (the investigation's outcome).

    Only an administrator or operator of the batch's manufacturer; ``reason`` is
    required. Only a quarantined batch that has not expired is released: a
    recalled, expired or destroyed batch never is. Locks the batch row; appends
    a ``batch.released`` ledger entry, readable by the manufacturer, in the same
    transaction.
    """
    return _change(actor, batch, reason, _RELEASE)


def _change(actor: User, batch: Batch, reason: str, change: _Change) -> Batch:
    manufacturer = actor_organisation(actor, kinds=[Kind.MANUFACTURER])
    # The lock makes two people changing the status at once take turns: the second sees the first's result.
    locked = Batch.objects.select_for_update(of=("self",)).select_related("product").get(pk=batch.pk)
    if locked.product.manufacturer_id != manufacturer.pk:
        raise PermissionDenied("Only the batch's manufacturer quarantines or releases it.")
    errors = {}
    problem = _refusal(locked, change)
    if problem:
        errors["status"] = problem
    reason = reason.strip()
    if not reason:
        errors["reason"] = f"say why the batch is {change.done}; the reason goes into the ledger."
    elif len(reason) > MAX_REASON_LENGTH:
        errors["reason"] = f"is {len(reason)} characters long; keep it to {MAX_REASON_LENGTH}."
    if errors:
        raise ValidationError(errors)
    previous = locked.status
    locked.status = change.target
    locked.save(update_fields=["status"])
    _record(
        change.event_type,
        f"batch:{locked.product.gtin}:{locked.lot}",
        {
            "gtin": locked.product.gtin,
            "lot": locked.lot,
            "status": change.target.value,
            "previous_status": previous,
            "reason": reason,
            "by": actor.get_username(),
        },
        [manufacturer.pk],
    )
    return locked


def _refusal(batch: Batch, change: _Change) -> str:
    """Why the batch cannot make this change now; empty when it can."""
    if batch.status == change.target:
        return f"the batch is already {change.target.value}."
    if batch.status != change.source:
        return f"the batch is {batch.status}; only a batch that is {change.source.value} can be {change.done}."
    if change is _RELEASE and batch.is_expired():
        return f"the batch expired on {batch.expires_on.isoformat()}; an expired batch cannot be released."
    return ""
