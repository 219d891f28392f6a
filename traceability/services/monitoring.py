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
GAP, FREEZE_THAW = "gap", "freeze_thaw"


@transaction.atomic
def monitoring_apply(*, shipment: Shipment, evaluation: coldchain.Evaluation) -> list[Alert]:
    """Brings a shipment's excursions and alerts in line with an evaluation of all its readings.

    Idempotent: applying the same evaluation twice changes nothing and appends
    nothing. Appends ``excursion.started`` when an excursion is first seen,
    ``excursion.ended`` when it first has an end, and ``contract.breached`` for
    every new alert of a breach or critical rule. Returns the alerts it raised.
    Records the evaluation's verdict on the shipment, so that evaluations
    finding the same need not apply it again.
    """
    shipment = _locked(shipment)
    for excursion in evaluation.excursions:
        _excursion_apply(shipment, excursion)
    _gaps_closed(shipment, {trigger.at for trigger in evaluation.triggers if trigger.key == GAP})
    once = _fires_once(shipment)
    alerts = [alert for trigger in evaluation.triggers if (alert := _alert_raise(shipment, trigger, once))]
    Shipment.objects.filter(pk=shipment.pk).update(verdict=evaluation.verdict())
    return alerts


def _excursion_apply(shipment: Shipment, found: coldchain.Excursion) -> None:
    """Mirrors the evaluation in the stored excursion; records its start once and its end once.

    The evaluation covers every reading, so the stored excursion takes its
    facts as they now are: a late reading can move its start or end. The
    ledger keeps what was known when each entry was written.
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
        stored = Excursion(shipment=shipment, direction=found.direction.value)
        _shipment_record("excursion.started", shipment, **facts, peak_celsius=found.peak_celsius, rules=rules)
    stored.started_at = found.started_at
    stored.ended_at = found.ended_at
    stored.peak_celsius = found.peak_celsius
    stored.duration_seconds = found.duration_seconds
    stored.rules = rules
    if found.ended_at is not None and not stored.end_recorded:
        stored.end_recorded = True
        _shipment_record(
            "excursion.ended",
            shipment,
            **facts,
            ended_at=_when(found.ended_at),
            peak_celsius=found.peak_celsius,
            duration_seconds=found.duration_seconds,
        )
    stored.save()


def _gaps_closed(shipment: Shipment, gaps: set[datetime.datetime]) -> None:
    """Resolves data-gap alerts whose gap late readings have since filled."""
    filled = Alert.objects.filter(
        shipment=shipment, key=GAP, status__in=[Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED]
    ).exclude(triggered_at__in=gaps)
    for alert in filled:
        alert.status, alert.resolved_at = Alert.Status.RESOLVED, timezone.now()
        alert.resolution = "The readings of the gap arrived late: the logger had buffered them."
        alert.save(update_fields=["status", "resolved_at", "resolution"])
        _alert_record("alert.resolved", alert, by=None, comment=alert.resolution)


def _alert_record(event_type: str, alert: Alert, *, by: str | None, comment: str) -> None:
    _shipment_record(
        event_type, alert.shipment, alert=alert.key, triggered_at=_when(alert.triggered_at), by=by, comment=comment
    )


def _fires_once(shipment: Shipment) -> set[str]:
    """Keys that alert at most once per shipment: cumulative rules and the freeze-thaw count never reset."""
    cumulative = shipment.contract.rules.filter(mode=coldchain.Mode.CUMULATIVE).values_list("name", flat=True)
    return {f"rule:{name}" for name in cumulative} | {FREEZE_THAW}


def _alert_raise(shipment: Shipment, trigger: coldchain.Trigger, once: set[str]) -> Alert | None:
    """A new alert for the trigger, unless it was raised before or one for its rule is still open.

    A contract is breached once per rule: ``contract.breached`` is appended with
    the rule's first alert only.
    """
    earlier = Alert.objects.filter(shipment=shipment, key=trigger.key)
    still_open = Q(status__in=[Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED])
    if earlier.filter(Q(triggered_at=trigger.at) | still_open).exists():
        return None
    first = not earlier.exists()
    if trigger.key in once and not first:
        return None
    alert = Alert.objects.create(
        shipment=shipment,
        key=trigger.key,
        severity=ALERT_SEVERITY[trigger.severity],
        message=trigger.detail[:500],
        triggered_at=trigger.at,
    )
    if trigger.severity in BREACHES and first:
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
    _alert_record("alert.acknowledged", alert, by=actor.get_username(), comment=alert.acknowledgement)
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
    _alert_record("alert.resolved", alert, by=actor.get_username(), comment=alert.resolution)
    return alert


def readings_committed(
    *,
    shipment: Shipment,
    commit_id: int,
    count: int,
    root: str,
    first_measured_at: datetime.datetime,
    last_measured_at: datetime.datetime,
    readings: tuple[int, int],
) -> None:
    """Appends a ``readings.committed`` entry: the Merkle root of a batch of the shipment's readings, those
    with an id above ``readings[0]`` up to ``readings[1]``, in id order."""
    after, through = readings
    _shipment_record(
        "readings.committed",
        shipment,
        commit=commit_id,
        count=count,
        root=root,
        first_measured_at=_when(first_measured_at),
        last_measured_at=_when(last_measured_at),
        readings_after=after,
        readings_through=through,
    )
