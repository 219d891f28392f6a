"""Excursions and alerts from the evaluation of a shipment's readings, and readings committed to the ledger."""

from __future__ import annotations

import datetime

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from traceability import coldchain, selectors
from traceability.models import (
    Alert,
    Excursion,
    Organisation,
    Shipment,
)
from traceability.services._common import _locked, _shipment_record, _when, actor_organisation

# The contract's rule severities, as an alert's.
ALERT_SEVERITY = {
    coldchain.Severity.WARNING: Alert.Severity.WARNING,
    coldchain.Severity.ALARM: Alert.Severity.ALARM,
    coldchain.Severity.BREACH: Alert.Severity.CRITICAL,
    coldchain.Severity.CRITICAL: Alert.Severity.CRITICAL,
}
BREACHES = (coldchain.Severity.BREACH, coldchain.Severity.CRITICAL)


@transaction.atomic
def monitoring_apply(*, shipment: Shipment, evaluation: coldchain.Evaluation) -> list[Alert]:
    """Brings a shipment's excursions and alerts in line with an evaluation of all its readings.

    Idempotent: applying the same evaluation twice changes nothing and appends
    nothing. Appends ``excursion.started`` when an excursion is first seen,
    ``excursion.ended`` when it first has an end, and ``contract.breached`` for
    every new alert of a breach or critical rule. Returns the alerts it raised.
    """
    shipment = _locked(shipment)
    for excursion in evaluation.excursions:
        _excursion_apply(shipment, excursion)
    return [alert for trigger in evaluation.triggers if (alert := _alert_raise(shipment, trigger))]


def _excursion_apply(shipment: Shipment, found: coldchain.Excursion) -> None:
    """Records an excursion once, and its end once; updates it as late readings refine it.

    A late reading can move an excursion's start or end, so the stored
    excursion it overlaps is the same one, updated rather than recorded twice.
    """
    overlapping = Excursion.objects.filter(shipment=shipment, direction=found.direction.value).filter(
        Q(ended_at__isnull=True) | Q(ended_at__gte=found.started_at)
    )
    if found.ended_at is not None:
        overlapping = overlapping.filter(started_at__lte=found.ended_at)
    rules = sorted({trigger.key for trigger in found.triggers})
    facts = {"direction": found.direction.value, "started_at": _when(found.started_at)}
    stored = overlapping.order_by("started_at").first()
    if stored is None:
        stored = Excursion.objects.create(
            shipment=shipment,
            direction=found.direction.value,
            started_at=found.started_at,
            peak_celsius=found.peak_celsius,
            duration_seconds=found.duration_seconds,
            rules=rules,
        )
        _shipment_record("excursion.started", shipment, **facts, peak_celsius=found.peak_celsius, rules=rules)
    ended_now = stored.ended_at is None
    stored.started_at = min(stored.started_at, found.started_at)
    if found.ended_at is not None:
        stored.ended_at = max(stored.ended_at or found.ended_at, found.ended_at)
    stored.peak_celsius = found.peak_celsius
    stored.duration_seconds = found.duration_seconds
    stored.rules = sorted(set(stored.rules) | set(rules))
    stored.save(update_fields=["started_at", "ended_at", "peak_celsius", "duration_seconds", "rules"])
    if ended_now and found.ended_at is not None:
        _shipment_record(
            "excursion.ended",
            shipment,
            **facts,
            ended_at=_when(found.ended_at),
            peak_celsius=found.peak_celsius,
            duration_seconds=found.duration_seconds,
        )


def _alert_raise(shipment: Shipment, trigger: coldchain.Trigger) -> Alert | None:
    """A new alert for the trigger, unless it was raised before or one for its rule is still open."""
    alerts = Alert.objects.filter(shipment=shipment, key=trigger.key)
    if alerts.filter(
        Q(triggered_at=trigger.at) | Q(status__in=[Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED])
    ).exists():
        return None
    alert = Alert.objects.create(
        shipment=shipment,
        key=trigger.key,
        severity=ALERT_SEVERITY[trigger.severity],
        message=trigger.detail[:500],
        triggered_at=trigger.at,
    )
    if trigger.severity in BREACHES:
        _shipment_record("contract.breached", shipment, rule=trigger.key, at=_when(trigger.at), detail=trigger.detail)
    return alert


def _alert_for_party(actor: User, alert: Alert) -> Organisation:
    organisation = actor_organisation(actor)
    if organisation.pk not in selectors.shipment_parties(alert.shipment):
        raise PermissionDenied("Only the organisations party to the shipment handle its alerts.")
    return organisation


@transaction.atomic
def alert_acknowledge(*, actor: User, alert: Alert, comment: str = "") -> Alert:
    """Someone responsible has seen the alert and says what they do about it; a ledger entry."""
    _alert_for_party(actor, alert)
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    if alert.status != Alert.Status.OPEN:
        raise ValidationError({"status": f"the alert is {alert.status}; only an open alert is acknowledged."})
    alert.status = Alert.Status.ACKNOWLEDGED
    alert.acknowledged_by = actor
    alert.acknowledged_at = timezone.now()
    alert.acknowledgement = comment.strip()
    alert.save(update_fields=["status", "acknowledged_by", "acknowledged_at", "acknowledgement"])
    _shipment_record(
        "alert.acknowledged",
        alert.shipment,
        alert=alert.key,
        triggered_at=_when(alert.triggered_at),
        by=actor.get_username(),
        comment=alert.acknowledgement,
    )
    return alert


@transaction.atomic
def alert_resolve(*, actor: User, alert: Alert, comment: str) -> Alert:
    """Closes an alert with what was done; the rule can alert again afterwards. A ledger entry."""
    _alert_for_party(actor, alert)
    alert = Alert.objects.select_for_update().get(pk=alert.pk)
    if alert.status == Alert.Status.RESOLVED:
        raise ValidationError({"status": "the alert is already resolved."})
    if not comment.strip():
        raise ValidationError({"comment": "say how the alert was resolved."})
    alert.status = Alert.Status.RESOLVED
    alert.resolved_by = actor
    alert.resolved_at = timezone.now()
    alert.resolution = comment.strip()
    alert.save(update_fields=["status", "resolved_by", "resolved_at", "resolution"])
    _shipment_record(
        "alert.resolved",
        alert.shipment,
        alert=alert.key,
        triggered_at=_when(alert.triggered_at),
        by=actor.get_username(),
        comment=alert.resolution,
    )
    return alert


def readings_committed(
    *,
    shipment: Shipment,
    commit_id: int,
    count: int,
    root: str,
    first_measured_at: datetime.datetime,
    last_measured_at: datetime.datetime,
) -> None:
    """Appends a ``readings.committed`` entry: the Merkle root of a batch of the shipment's readings."""
    _shipment_record(
        "readings.committed",
        shipment,
        commit=commit_id,
        count=count,
        root=root,
        first_measured_at=_when(first_measured_at),
        last_measured_at=_when(last_measured_at),
    )
