"""Dispensing: a pharmacy hands packs to patients, the end of each pack's traceable life."""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Sequence

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from traceability import selectors
from traceability.models import Batch, Dispensing, SerialNumber, Site
from traceability.services._common import LATE_RECORDING, Kind, _occurred_at, _record, _when, actor_organisation
from traceability.trace import batch_subject

MAX_UNITS = 1000


@transaction.atomic
def units_dispense(
    *,
    actor: User,
    batch: Batch,
    serials: Sequence[str],
    site: Site,
    occurred_at: datetime.datetime | None = None,
) -> list[Dispensing]:
    """A dispenser records packs of the batch it holds as dispensed at one of its sites.

    Only an active batch, not expired, is dispensed (a recalled or
    quarantined one never is); each serial must be the batch's and not yet
    dispensed, recalled or taken out; the organisation must hold that many
    undispensed units of the batch. Locks the batch row as shipments and
    recalls do, so a recall issued meanwhile is seen. Appends a
    ``unit.dispensed`` entry readable by the dispenser and the manufacturer,
    with the number of units and the SHA-256 of their sorted serials (not the
    serials: a counterfeiter would print them).
    """
    dispenser = actor_organisation(actor, kinds=[Kind.DISPENSER])
    locked = Batch.objects.select_for_update(of=("self",), no_key=True).select_related("product").get(pk=batch.pk)
    wanted = list(dict.fromkeys(serial.strip() for serial in serials if isinstance(serial, str)))
    errors: dict[str, str] = {}
    today = timezone.localdate()
    if locked.status != Batch.Status.ACTIVE or locked.is_expired(today):
        status = "expired" if locked.is_expired(today) else locked.status
        errors["batch"] = f"the batch is {status}: do not dispense it."
    if site.organisation_id != dispenser.pk:
        errors["site"] = "must be a site of your organisation."
    if not wanted or len(wanted) != len(serials):
        errors["serials"] = "name each serial once (strings), at least one."
    elif len(wanted) > MAX_UNITS:
        errors["serials"] = f"names {len(wanted)} serials; record at most {MAX_UNITS} at once."
    else:
        problem = _serial_problem(
            locked, wanted, dispenser_holds=selectors.batch_available(organisation=dispenser, batch=locked)
        )
        if problem:
            errors["serials"] = problem
    if errors:
        raise ValidationError(errors)
    when = _occurred_at(occurred_at, not_before=timezone.now() - LATE_RECORDING)
    units = list(SerialNumber.objects.select_for_update(of=("self",)).filter(batch=locked, serial__in=wanted))
    dispensed = Dispensing.objects.bulk_create(
        Dispensing(serial=unit, organisation=dispenser, site=site, dispensed_at=when, recorded_by=actor)
        for unit in units
    )
    SerialNumber.objects.filter(pk__in=[unit.pk for unit in units]).update(status=SerialNumber.Status.DISPENSED)
    _record(
        "unit.dispensed",
        batch_subject(locked),
        {
            "gtin": locked.product.gtin,
            "lot": locked.lot,
            "units": len(units),
            "serials_sha256": hashlib.sha256("\n".join(sorted(wanted)).encode()).hexdigest(),
            "site": site.gln,
            "occurred_at": _when(when),
        },
        [dispenser.pk, locked.product.manufacturer_id],
    )
    return dispensed


def _serial_problem(batch: Batch, wanted: list[str], *, dispenser_holds: int) -> str:
    """Why these serials cannot be dispensed now; empty when they can."""
    statuses = dict(SerialNumber.objects.filter(batch=batch, serial__in=wanted).values_list("serial", "status"))
    unknown = [serial for serial in wanted if serial not in statuses]
    if unknown:
        return f"not serials of this batch: {', '.join(unknown[:10])}{' ...' if len(unknown) > 10 else ''}."
    taken = sorted(serial for serial, status in statuses.items() if status != SerialNumber.Status.ACTIVE)
    if taken:
        return "no longer in circulation: " + ", ".join(f"{serial} ({statuses[serial]})" for serial in taken[:10]) + "."
    if len(wanted) > dispenser_holds:
        return f"your organisation holds {dispenser_holds} undispensed units of this batch, not {len(wanted)}."
    return ""
