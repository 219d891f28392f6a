"""Recalls: issue one (after seeing its scope), each holder acknowledges what it found, a regulator closes it.

A regulator mandates a recall of any batch; a manufacturer starts a voluntary
one of its own. Either names one or more batches of one manufacturer, each
whole or as a range of its serial numbers. Serials compare shorter first, then
character by character, so "9" comes before "10" and "A100" before "A200".
Shipments carry batches, not serials, so a serial range reaches every holder
of its batch.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models.functions import Length
from django.utils import timezone

from traceability import audit, tasks, trace
from traceability.models import (
    Batch,
    Organisation,
    Recall,
    RecallItem,
    RecallNotice,
    RecallShipment,
    SerialNumber,
)
from traceability.services._common import Kind, _record, _when, actor_organisation

MAX_TEXT_LENGTH = 4000
MAX_ITEMS = 100
RETYPE = "is not your password; enter it again to confirm the recall."
logger = logging.getLogger(__name__)
# A batch already recalled, or destroyed, cannot be recalled (again).
NOT_RECALLABLE = (Batch.Status.RECALLED, Batch.Status.DESTROYED)


@dataclass(frozen=True)
class RecallItemSpec:
    """A batch the recall names: all of it, or its serials from ``serial_from`` to ``serial_to``."""

    batch: Batch
    serial_from: str = ""
    serial_to: str = ""

    @property
    def whole_batch(self) -> bool:
        return not self.serial_from and not self.serial_to


def serial_order(serial: str) -> tuple[int, str]:
    """Shorter serials first, then by character: numeric serials without leading zeros sort as numbers."""
    return (len(serial), serial)


def recall_preview(*, actor: User, items: Sequence[RecallItemSpec], depth: str) -> trace.Scope:
    """Who a recall of ``items`` would reach, without changing anything; refuses what ``recall_issue`` would."""
    initiator = actor_organisation(actor, kinds=[Kind.REGULATOR, Kind.MANUFACTURER])
    errors = _item_errors(initiator, items) | _choice_errors(depth=depth)
    if errors:
        raise ValidationError(errors)
    scope = trace.recall_scope([item.batch for item in items], depth=depth)
    ranges = []
    for _, item in _ranged(items):
        serials = range_serials(item.batch, item.serial_from, item.serial_to)
        ranges.append(trace.SerialRange(item.batch, item.serial_from, item.serial_to, len(serials)))
    return replace(scope, ranges=tuple(ranges))


@transaction.atomic
def recall_issue(
    *,
    actor: User,
    password: str,
    items: Sequence[RecallItemSpec],
    classification: str,
    depth: str,
    reason: str,
    instructions: str,
) -> Recall:
    """Issues a recall: in one transaction, everything it touches changes and every holder is told.

    The actor re-enters their password. A regulator's recall is mandated, a
    manufacturer's voluntary (and of its own batches only). Whole batches and
    their active serials become recalled; serials in a range become recalled
    (their batch keeps its status). Every holder within the recall's depth, and
    the manufacturer, gets a notice (shown in the application and sent by
    e-mail to its members once the transaction commits); planned and moving
    shipments carrying the batches are flagged; the ``recall.issued`` ledger
    entry is public. Locks the batches' rows, so two recalls of one batch take
    turns and the second is refused.
    """
    initiator = actor_organisation(actor, kinds=[Kind.REGULATOR, Kind.MANUFACTURER])
    batch_ids = sorted({item.batch.pk for item in items})
    locked = {
        batch.pk: batch
        for batch in Batch.objects.select_for_update(of=("self",))
        .select_related("product__manufacturer")
        .filter(pk__in=batch_ids)
        .order_by("pk")
    }
    items = [RecallItemSpec(locked[item.batch.pk], item.serial_from, item.serial_to) for item in items]
    errors = _item_errors(initiator, items)
    errors |= _choice_errors(depth=depth, classification=classification)
    errors |= _text_errors(reason=reason, instructions=instructions)
    if not actor.check_password(password):
        errors["password"] = RETYPE
    if errors:
        raise ValidationError(errors)
    batches = [item.batch for item in items]
    scope = trace.recall_scope(batches, depth=depth)
    manufacturer = batches[0].product.manufacturer
    recall = Recall.objects.create(
        reference=_reference(),
        kind=Recall.Kind.MANDATED if initiator.is_regulator else Recall.Kind.VOLUNTARY,
        classification=classification,
        depth=depth,
        reason=reason.strip(),
        instructions=instructions.strip(),
        manufacturer=manufacturer,
        initiated_by=initiator,
        issued_by=actor,
    )
    RecallItem.objects.bulk_create(
        RecallItem(recall=recall, batch=item.batch, serial_from=item.serial_from, serial_to=item.serial_to)
        for item in items
    )
    ranges = {i: range_serials(item.batch, item.serial_from, item.serial_to) for i, item in _ranged(items)}
    _mark_recalled(items, ranges)
    RecallNotice.objects.bulk_create(
        RecallNotice(recall=recall, organisation=holder.organisation, units_expected=holder.units)
        for holder in scope.notified
    )
    RecallShipment.objects.bulk_create(
        RecallShipment(recall=recall, shipment=shipment, units=units) for shipment, units in scope.shipments
    )
    _record("recall.issued", _subject(recall), _public_facts(recall, items, ranges), [])
    audit.record("recall.issued", user=actor, organisation=initiator, recall=recall.reference, batches=batch_ids)
    transaction.on_commit(lambda: _notices_send(recall.pk))
    return recall


@transaction.atomic
def recall_acknowledge(*, actor: User, recall: Recall, units_found: int, note: str = "") -> RecallNotice:
    """The actor's organisation confirms it received the notice and reports the units it found (once).

    Appends a ``recall.acknowledged`` entry. Recall entries are public
    (spec/ledger.md), and who holds a batch is not: the entry says how many
    of the recall's notices are acknowledged, never whose or how many units.
    Locks the recall first, as closing does, so no acknowledgement lands
    after the close.
    """
    organisation = actor_organisation(actor)
    locked = Recall.objects.select_for_update(of=("self",)).get(pk=recall.pk)
    notice = (
        RecallNotice.objects.select_for_update(of=("self",))
        .select_related("organisation")
        .filter(recall=locked, organisation=organisation)
        .first()
    )
    if notice is None:
        raise PermissionDenied("Your organisation was not sent a notice of this recall.")
    errors: dict[str, str] = {}
    if notice.acknowledged_at is not None:
        errors["status"] = f"your organisation acknowledged this recall on {_when(notice.acknowledged_at)}."
    if locked.status == Recall.Status.CLOSED:
        errors["status"] = "the recall is closed."
    if isinstance(units_found, bool) or not isinstance(units_found, int) or not 0 <= units_found < 2**31:
        errors["units_found"] = "give the number of units you found and quarantined, 0 or more."
    errors |= _text_errors(note=note, required=())
    if errors:
        raise ValidationError(errors)
    notice.acknowledged_by = actor
    notice.acknowledged_at = timezone.now()
    notice.units_found = units_found
    notice.note = note.strip()
    notice.save(update_fields=["acknowledged_by", "acknowledged_at", "units_found", "note"])
    notices = RecallNotice.objects.filter(recall=locked)
    _record(
        "recall.acknowledged",
        _subject(locked),
        {
            "reference": locked.reference,
            "acknowledged_at": _when(notice.acknowledged_at),
            "acknowledged": notices.filter(acknowledged_at__isnull=False).count(),
            "notices": notices.count(),
        },
        [],
    )
    audit.record("recall.acknowledged", user=actor, recall=locked.reference, units_found=units_found)
    notice.recall = locked
    return notice


@transaction.atomic
def recall_close(*, actor: User, recall: Recall, note: str) -> Recall:
    """A regulator closes the recall, saying why (e.g. every holder accounted for); a public ledger entry."""
    actor_organisation(actor, kinds=[Kind.REGULATOR])
    locked = Recall.objects.select_for_update(of=("self",)).get(pk=recall.pk)
    errors = _text_errors(note=note)
    if locked.status == Recall.Status.CLOSED:
        errors["status"] = "the recall is already closed."
    if errors:
        raise ValidationError(errors)
    locked.status = Recall.Status.CLOSED
    locked.closed_by = actor
    locked.closed_at = timezone.now()
    locked.closing_note = note.strip()
    locked.save(update_fields=["status", "closed_by", "closed_at", "closing_note"])
    notices = list(locked.notices.all())
    _record(
        "recall.closed",
        _subject(locked),
        {
            "reference": locked.reference,
            "closed_at": _when(locked.closed_at),
            "note": locked.closing_note,
            "notices": len(notices),
            "acknowledged": sum(notice.acknowledged_at is not None for notice in notices),
        },
        [],
    )
    audit.record("recall.closed", user=actor, recall=locked.reference)
    return locked


# Checks ----------------------------------------------------------------------------------


def _item_errors(initiator: Organisation, items: Sequence[RecallItemSpec]) -> dict[str, str]:
    """What is wrong with the batches named; PermissionDenied for another manufacturer's batch."""
    if not items:
        return {"items": "name at least one batch to recall."}
    if len(items) > MAX_ITEMS:
        return {"items": f"names {len(items)} batches; one recall names at most {MAX_ITEMS}."}
    if not initiator.is_regulator and any(item.batch.product.manufacturer_id != initiator.pk for item in items):
        raise PermissionDenied("A manufacturer recalls only its own batches; a regulator may mandate any recall.")
    problems = []
    seen = set()
    manufacturers = {item.batch.product.manufacturer_id for item in items}
    for index, item in enumerate(items):
        batch = item.batch
        if batch.pk in seen:
            problems.append(f"item {index}: batch {batch} is named twice; name each batch once.")
        seen.add(batch.pk)
        if batch.status in NOT_RECALLABLE:
            problems.append(f"item {index}: batch {batch} is {batch.status} and cannot be recalled.")
        elif not item.whole_batch:
            problems += _range_problems(index, item)
    if len(manufacturers) > 1:
        problems.append("the batches are made by different manufacturers; issue one recall per manufacturer.")
    return {"items": " ".join(problems)} if problems else {}


def _range_problems(index: int, item: RecallItemSpec) -> list[str]:
    if not item.serial_from or not item.serial_to:
        return [f"item {index}: a serial range needs both its first and its last serial."]
    if len(item.serial_from) != len(item.serial_to):
        return [f"item {index}: the first and last serials of a range have the same length (a range of 0100 to "
                f"0999, not 100 to 999); name ranges of other lengths as items of their own."]  # fmt: skip
    if serial_order(item.serial_from) > serial_order(item.serial_to):
        return [f"item {index}: the range {item.serial_from} to {item.serial_to} is backwards."]
    if not range_serials(item.batch, item.serial_from, item.serial_to):
        return [f"item {index}: batch {item.batch} has no serial from {item.serial_from} to {item.serial_to}."]
    return []


def range_serials(batch: Batch, first: str, last: str) -> dict[int, str]:
    """The batch's serials of the length of ``first`` from ``first`` to ``last``, by primary key.

    Compared in Python, character by character: the database's collation
    might order letters otherwise.
    """
    candidates = SerialNumber.objects.annotate(length=Length("serial")).filter(batch=batch, length=len(first))
    return {pk: serial for pk, serial in candidates.values_list("pk", "serial") if first <= serial <= last}


def _choice_errors(**values: str) -> dict[str, str]:
    choices: dict[str, list[str]] = {"depth": Recall.Depth.values, "classification": Recall.Class.values}
    errors = {}
    for field, value in values.items():
        allowed = choices[field]
        if value not in allowed:
            errors[field] = f"{value!r} is not one of {', '.join(allowed)}."
    return errors


def _text_errors(*, required: Sequence[str] = ("reason", "instructions", "note"), **texts: str) -> dict[str, str]:
    errors = {}
    for field, text in texts.items():
        if not isinstance(text, str):
            errors[field] = "must be text."
        elif field in required and not text.strip():
            errors[field] = "is required: it goes into the ledger and to every holder."
        elif len(text) > MAX_TEXT_LENGTH:
            errors[field] = f"is {len(text)} characters long; keep it to {MAX_TEXT_LENGTH}."
    return errors


# Effects ---------------------------------------------------------------------------------


def _ranged(items: Sequence[RecallItemSpec]) -> list[tuple[int, RecallItemSpec]]:
    return [(index, item) for index, item in enumerate(items) if not item.whole_batch]


def _mark_recalled(items: Sequence[RecallItemSpec], ranges: dict[int, dict[int, str]]) -> None:
    """Whole batches and their active serials become recalled; so do a range's active and dispensed serials.

    A pack already dispensed from a whole recalled batch shows the batch's
    recall; one in a range has only its own status to show it with.
    """
    whole = [item.batch.pk for item in items if item.whole_batch]
    Batch.objects.filter(pk__in=whole).update(status=Batch.Status.RECALLED)
    for item in items:
        if item.whole_batch:
            item.batch.status = Batch.Status.RECALLED
    Serial = SerialNumber.Status
    SerialNumber.objects.filter(batch__in=whole, status=Serial.ACTIVE).update(status=Serial.RECALLED)
    ranged = [pk for serials in ranges.values() for pk in serials]
    SerialNumber.objects.filter(pk__in=ranged, status__in=[Serial.ACTIVE, Serial.DISPENSED]).update(
        status=Serial.RECALLED
    )


def _reference() -> str:
    return f"RC-{timezone.now():%Y%m%d}-{secrets.token_hex(3).upper()}"


def _subject(recall: Recall) -> str:
    return f"recall:{recall.reference}"


def _public_facts(recall: Recall, items: Sequence[RecallItemSpec], ranges: dict[int, dict[int, str]]) -> dict[str, Any]:
    """What the public ledger entry says: the recall, never who holds what."""

    def organisation(organisation: Organisation) -> dict[str, str]:
        return {"name": organisation.name, "gln": organisation.gln}

    return {
        "reference": recall.reference,
        "kind": recall.kind,
        "classification": recall.classification,
        "depth": recall.depth,
        "reason": recall.reason,
        "instructions": recall.instructions,
        "manufacturer": organisation(recall.manufacturer),
        "initiated_by": organisation(recall.initiated_by),
        "issued_at": _when(recall.issued_at),
        "items": [
            {"gtin": item.batch.product.gtin, "lot": item.batch.lot} | _range_facts(ranges.get(index))
            for index, item in enumerate(items)
        ],
    }


def _range_facts(serials: dict[int, str] | None) -> dict[str, Any]:
    """A range as the public may know it: how many serials, and the SHA-256 of them sorted and joined by
    newlines (as ``batch.registered`` gives a batch's), never the serials, which a counterfeiter would print."""
    if serials is None:
        return {}
    joined = "\n".join(sorted(serials.values()))
    return {"serial_count": len(serials), "serials_sha256": hashlib.sha256(joined.encode()).hexdigest()}


def _notices_send(recall_id: int) -> None:
    """One e-mail task per notice, once the recall has committed; a broker that is down must not turn the
    committed recall into an error page: the notices are in the application, and the log says what was not sent."""
    for notice_id in RecallNotice.objects.filter(recall_id=recall_id).values_list("pk", flat=True):
        try:
            tasks.recall_notice_mail.delay(notice_id)
        except Exception:  # kombu raises many kinds; each is logged, none is the user's
            logger.exception("recall notice %s: the e-mail task could not be queued", notice_id)
