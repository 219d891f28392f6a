"""What operators watch: ingest, the inbox backlog, alerts, the ledger, the broker and the workers.

Read by ``/metrics`` (``traceability.metrics``) and the staff status page. Each
database query is a count, a sum or a min/max over an indexed column (or a
small table), cheap enough for a scrape every few seconds.

Like ``urls.py``, this is the project looking across its apps: ``iot_ingest``'s
tables are reached through the app registry, so that ``traceability`` still
imports nothing of ``iot_ingest``.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.db import connection
from django.db.models import Count, Max, Min, Model, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce

from ledger.models import Checkpoint, Entry, PendingEvent
from traceability.celery import app as celery_app
from traceability.models import Alert, Shipment

PENDING, REJECTED, DEAD = "pending", "rejected", "dead"  # iot_ingest.models.Outcome
UNRESOLVED = (Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED)


def _model(name: str) -> type[Model]:
    return apps.get_model("iot_ingest", name)


def _choices(model: type[Model], field: str) -> list[str]:
    return [str(value) for value, _label in model._meta.get_field(field).choices or ()]  # type: ignore[union-attr]


def _age(moment: datetime.datetime | None, now: datetime.datetime) -> float | None:
    return None if moment is None else max(0.0, (now - moment).total_seconds())


@dataclass(frozen=True)
class Inbox:
    """Messages by outcome and rejections by reason (zeros included), the backlog's oldest row, readings stored."""

    messages: dict[str, int]
    rejections: dict[str, int]
    oldest_pending_at: datetime.datetime | None
    readings: int
    urgent_pending: int = 0  # waiting, and marked urgent by triage (iot_ingest.triage)
    uncommitted: int = 0  # readings on shipments that no readings.committed entry covers yet

    @property
    def pending(self) -> int:
        return self.messages.get(PENDING, 0)

    @property
    def dead(self) -> int:
        return self.messages.get(DEAD, 0)

    def oldest_pending_age(self, now: datetime.datetime) -> float | None:
        return _age(self.oldest_pending_at, now)


def inbox_state() -> Inbox:
    """The inbox, read through its ``(outcome, received_at)`` index.

    Readings stored = readings already in a ``ReadingCommit`` (the sum of their
    counts) + readings no commit covers yet (each shipment's above its commits'
    range) + readings on no shipment (never committed): exact, without
    counting the largest table row by row.
    """
    message, reading, commit = _model("InboxMessage"), _model("Reading"), _model("ReadingCommit")
    manager = message._default_manager
    by_outcome = dict(manager.order_by().values_list("outcome").annotate(n=Count("pk")))
    by_reason = dict(manager.filter(outcome=REJECTED).order_by().values_list("reason").annotate(n=Count("pk")))
    oldest = manager.filter(outcome=PENDING).aggregate(at=Min("received_at"))["at"]
    urgent = manager.filter(outcome=PENDING, urgent=True).count()  # the inbox_urgent partial index
    committed = commit._default_manager.aggregate(n=Sum("count"))["n"] or 0
    uncommitted = _uncommitted_readings(reading, commit)
    on_no_shipment = reading._default_manager.filter(shipment__isnull=True, commit__isnull=True).count()
    return Inbox(
        messages={outcome: by_outcome.get(outcome, 0) for outcome in _choices(message, "outcome")},
        rejections={reason: by_reason.get(reason, 0) for reason in _choices(message, "reason")},
        oldest_pending_at=oldest,
        readings=committed + uncommitted + on_no_shipment,
        urgent_pending=urgent,
        uncommitted=uncommitted,
    )


def _uncommitted_readings(reading: Any, commit: Any) -> int:
    """Readings on shipments that no commit covers yet: two index probes a shipment, then the few readings of
    each above its commits' range."""
    above = reading.uncommitted(OuterRef("pk"), OuterRef("after")).order_by().values("shipment")
    shipments = Shipment.objects.annotate(after=commit.covered_through(OuterRef("pk")))
    counted = shipments.annotate(fresh=Coalesce(Subquery(above.annotate(n=Count("pk")).values("n")), 0))
    total: int = counted.aggregate(total=Sum("fresh"))["total"] or 0
    return total


def unresolved_alerts() -> dict[tuple[str, str], int]:
    """Open and acknowledged alerts by ``(status, severity)``, every pair present (the ``alert_inbox`` index)."""
    rows = Alert.objects.filter(status__in=UNRESOLVED).order_by().values_list("status", "severity")
    counts = {(status, severity): n for status, severity, n in rows.annotate(n=Count("pk"))}
    return {(str(s), str(v)): counts.get((s, v), 0) for s in UNRESOLVED for v in Alert.Severity.values}


@dataclass(frozen=True)
class Ledger:
    entries: int
    pending_events: int
    checkpoint_size: int | None
    checkpoint_at: datetime.datetime | None

    def checkpoint_age(self, now: datetime.datetime) -> float | None:
        return _age(self.checkpoint_at, now)


def ledger_state() -> Ledger:
    """Entries (sequence numbers run from 0 without gaps: the greatest + 1), the outbox, the newest checkpoint."""
    greatest = Entry.objects.aggregate(seq=Max("seq"))["seq"]
    newest = Checkpoint.objects.order_by("-size").values("size", "created_at").first()
    return Ledger(
        entries=0 if greatest is None else greatest + 1,
        pending_events=PendingEvent.objects.count(),
        checkpoint_size=newest["size"] if newest else None,
        checkpoint_at=newest["created_at"] if newest else None,
    )


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str


def database_check() -> Check:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:  # the page reports any failure instead of failing itself
        return Check(False, f"{type(error).__name__}: {error}")
    return Check(True, connection.vendor)


def broker_check(timeout: float = 3.0) -> Check:
    """Connects to Celery's broker (Redis in production) once; the detail is its URL, password masked."""
    try:
        with celery_app.connection_for_write() as broker:
            broker.ensure_connection(max_retries=1, interval_start=0, timeout=timeout)
            return Check(True, broker.as_uri())
    except Exception as error:  # unreachable, refused, bad credentials: all "down"
        return Check(False, f"{type(error).__name__}: {error}")


def workers_ping(timeout: float = 1.0) -> list[str] | None:
    """The Celery workers that answered a broadcast ping within ``timeout`` seconds, by node name.

    None when the ping could not be sent (the broker failed meanwhile).
    """
    try:
        answers: dict[str, Any] | None = celery_app.control.inspect(timeout=timeout).ping()
    except Exception:  # reported as "could not ask", like a broker that is down
        return None
    return sorted(answers or {})
