"""What every service shares: who the actor is, times, and the ledger entry each one appends."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Sequence
from typing import Any

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import PermissionDenied, ValidationError
from django.utils import timezone

from ledger.services import entry_append
from traceability import gs1, selectors
from traceability.models import (
    Membership,
    Organisation,
    Shipment,
)

Kind = Organisation.Kind
CLOCK_SKEW = datetime.timedelta(minutes=5)
LATE_RECORDING = datetime.timedelta(days=7)


def actor_organisation(actor: User | AnonymousUser, *, kinds: Sequence[str] = (), write: bool = True) -> Organisation:
    """The actor's organisation, if it is of one of ``kinds`` and the role may write."""
    membership: Membership | None = getattr(actor, "membership", None) if actor.is_authenticated else None
    if membership is None:
        raise PermissionDenied("You are not a member of any organisation.")
    if write and not membership.can_write:
        raise PermissionDenied("Your role is read-only; ask an administrator of your organisation.")
    if kinds and membership.organisation.kind not in kinds:
        raise PermissionDenied(f"Only a {' or '.join(kinds)} organisation may do this.")
    return membership.organisation


def _gs1(field: str, check: object, value: str) -> str:
    try:
        return check(value)  # type: ignore[operator, no-any-return]
    except gs1.GS1Error as error:
        raise ValidationError({field: str(error)}) from error


def _occurred_at(value: datetime.datetime | None, *, not_before: datetime.datetime | None) -> datetime.datetime:
    now = timezone.now()
    when = value or now
    if when > now + CLOCK_SKEW:
        raise ValidationError({"occurred_at": "lies in the future; send the time the event happened."})
    if not_before and when < not_before:
        raise ValidationError({"occurred_at": f"lies before {not_before.isoformat()}, the earliest possible time."})
    return when


def _record(event_type: str, subject: str, data: dict[str, Any], parties: Iterable[int]) -> None:
    """Appends the service's ledger entry, in the service's own transaction."""
    entry_append(type=event_type, subject=subject, data=data, readers=map(selectors.ledger_party, parties))


def _when(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")


def _shipment_record(event_type: str, shipment: Shipment, **facts: Any) -> None:
    _record(
        event_type,
        f"shipment:{shipment.reference}",
        {"reference": shipment.reference, **facts},
        selectors.shipment_parties(shipment),
    )


def _locked(shipment: Shipment) -> Shipment:
    """Re-reads the shipment under a row lock, so two transitions cannot interleave."""
    related = ("shipper", "carrier", "consignee", "custodian", "origin", "destination")
    return Shipment.objects.select_for_update(of=("self",)).select_related(*related).get(pk=shipment.pk)
