"""The logistics pages: a live board of shipments in transit, the alert inbox, and a shipment's page.

Every shipment and alert is reached through ``selectors.visible_shipments``, so
another organisation's is a 404. Acknowledging and resolving go through the
services, which decide who may (``PermissionDenied``: 403) and what is valid
(``ValidationError``: 400); the page shows their reason. Readings and loggers
are read through the shipment's relations (``readings``,
``device_assignments``), so ``traceability`` imports nothing of ``iot_ingest``.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Concatenate, cast

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db import models
from django.db.models import Case, Count, Exists, F, IntegerField, OuterRef, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST, require_safe

from traceability import coldchain, selectors, services
from traceability.models import (
    Alert,
    Excursion,
    Membership,
    Organisation,
    Recall,
    RecallShipment,
    Shipment,
    TemperatureContract,
)
from traceability.pages import charts, shipment_ledger

TEMPERATURE = "temperature"  # iot_ingest.models.Reading.Kind.TEMPERATURE
UNRESOLVED = (Alert.Status.OPEN, Alert.Status.ACKNOWLEDGED)
SEVERITY_RANK = {Alert.Severity.INFO: 1, Alert.Severity.WARNING: 2, Alert.Severity.ALARM: 3, Alert.Severity.CRITICAL: 4}
BOARD_LIMIT = 200  # rows on the board, those needing attention first
ALERTS_PER_PAGE = 50
CHART_POINTS = 300


def _member[**P](
    view: Callable[Concatenate[HttpRequest, Membership, P], HttpResponse],
) -> Callable[Concatenate[HttpRequest, P], HttpResponse]:
    """Signed in (else to the login page), and a member of an organisation (else what ``views.home`` says)."""

    @functools.wraps(view)
    def wrapper(request: HttpRequest, /, *args: P.args, **kwargs: P.kwargs) -> HttpResponse:
        membership: Membership | None = getattr(request.user, "membership", None)
        if membership is None:
            return render(request, "traceability/no_membership.html", status=403)
        return view(request, membership, *args, **kwargs)

    return cast(Callable[Concatenate[HttpRequest, P], HttpResponse], login_required(wrapper))


def _duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``4 h``, ``3 h 20 min``, ``2 d 5 h``."""
    seconds = int(seconds)
    if seconds < 60:
        return _("%(seconds)d s") % {"seconds": seconds}
    minutes = seconds // 60
    if minutes < 60:
        return _("%(minutes)d min") % {"minutes": minutes}
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        if not minutes:
            return _("%(hours)d h") % {"hours": hours}
        return _("%(hours)d h %(minutes)d min") % {"hours": hours, "minutes": minutes}
    days, hours = divmod(hours, 24)
    if not hours:
        return _("%(days)d d") % {"days": days}
    return _("%(days)d d %(hours)d h") % {"days": days, "hours": hours}


def _degrees(celsius: float | Decimal) -> str:
    return _("%(celsius)s °C") % {"celsius": f"{float(celsius):.1f}"}


def _severity_rank() -> Case:
    return Case(
        *(When(severity=severity, then=Value(rank)) for severity, rank in SEVERITY_RANK.items()),
        default=Value(0),
        output_field=IntegerField(),
    )


# The board -------------------------------------------------------------------------


class ContractState(models.TextChoices):
    """How a shipment stands against its contract: a breach (a breach or critical rule fired, so
    ``contract.breached`` is in the ledger) outranks an open excursion, which outranks having no readings."""

    NO_DATA = "no_data", gettext_lazy("No readings yet")
    WITHIN = "within", gettext_lazy("Within range")
    EXCURSION = "excursion", gettext_lazy("Excursion open")
    BREACHED = "breached", gettext_lazy("Breached")

    @classmethod
    def of(cls, *, breached: bool, excursion_open: bool, has_readings: bool) -> ContractState:
        if breached:
            return cls.BREACHED
        if excursion_open:
            return cls.EXCURSION
        return cls.WITHIN if has_readings else cls.NO_DATA


def _breached() -> Exists:
    # monitoring.ALERT_SEVERITY: breach and critical rules raise critical alerts, and only they do.
    return Exists(Alert.objects.filter(shipment=OuterRef("pk"), severity=Alert.Severity.CRITICAL))


def _excursion_open() -> Exists:
    return Exists(Excursion.objects.filter(shipment=OuterRef("pk"), ended_at__isnull=True))


def _count(alerts: QuerySet[Alert]) -> Coalesce:
    counted = alerts.order_by().values("shipment").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted), Value(0))


def board_shipments(organisation: Organisation) -> QuerySet[Shipment]:
    """Shipments in transit the organisation sees, with their newest temperature and their alerts: one query."""
    newest = Shipment.objects.filter(pk=OuterRef("pk"), readings__kind=TEMPERATURE).order_by(
        "-readings__measured_at", "-readings__id"
    )
    unresolved = Alert.objects.filter(shipment=OuterRef("pk"), status__in=UNRESOLVED)
    ranked = unresolved.annotate(rank=_severity_rank()).order_by("-rank").values("rank")[:1]
    return (
        selectors.visible_shipments(organisation)
        .filter(status=Shipment.Status.IN_TRANSIT)
        .select_related("origin", "destination", "carrier", "contract")
        .annotate(
            last_celsius=Subquery(newest.values("readings__value")[:1]),
            last_measured_at=Subquery(newest.values("readings__measured_at")[:1]),
            alerts_unresolved=_count(unresolved),
            alerts_new=_count(unresolved.filter(status=Alert.Status.OPEN)),
            alert_rank=Subquery(ranked),
            breached=_breached(),
            excursion_open=_excursion_open(),
            recalled=Exists(RecallShipment.objects.filter(shipment=OuterRef("pk"))),
        )
        .order_by(F("alert_rank").desc(nulls_last=True), "dispatched_at", "id")
    )


@dataclass(frozen=True)
class BoardRow:
    """One shipment on the board; the page renders it and board.json sends it, so both say the same."""

    id: int
    reference: str
    url: str
    recalled: bool  # flagged by a recall: it carries recalled goods (its page says which recall)
    recalled_text: str
    route: str
    carrier: str
    temperature: float | None
    temperature_text: str
    temperature_out: bool  # outside the contract's range (inclusive, as the rules judge it)
    last_reading_at: str | None
    age_text: str
    stale: bool  # silent for longer than the contract's data-gap limit
    state: str
    state_text: str
    alerts: int
    alerts_new: int
    alerts_text: str
    severity: str
    severity_text: str
    alerts_url: str


def _board_row(shipment: Any, now: datetime.datetime) -> BoardRow:
    contract: TemperatureContract = shipment.contract
    celsius, measured_at = shipment.last_celsius, shipment.last_measured_at
    age = None if measured_at is None else max((now - measured_at).total_seconds(), 0.0)
    severity = next((s for s, rank in SEVERITY_RANK.items() if rank == shipment.alert_rank), "")
    state = ContractState.of(
        breached=shipment.breached, excursion_open=shipment.excursion_open, has_readings=celsius is not None
    )
    count, new = shipment.alerts_unresolved, shipment.alerts_new
    alerts_text = ngettext("%(count)d unresolved", "%(count)d unresolved", count) % {"count": count}
    if new:
        alerts_text += " " + ngettext("(%(new)d new)", "(%(new)d new)", new) % {"new": new}
    return BoardRow(
        id=shipment.pk,
        reference=shipment.reference,
        url=reverse("logistics-shipment", args=[shipment.pk]),
        recalled=shipment.recalled,
        recalled_text=_("Recalled goods") if shipment.recalled else "",
        route=f"{shipment.origin.name} → {shipment.destination.name}",
        carrier=shipment.carrier.name,
        temperature=celsius,
        temperature_text=_("no reading") if celsius is None else _degrees(celsius),
        temperature_out=celsius is not None and not float(contract.min_celsius) < celsius < float(contract.max_celsius),
        last_reading_at=None if measured_at is None else measured_at.isoformat(),
        age_text="—" if age is None else _("%(duration)s ago") % {"duration": _duration(age)},
        stale=age is not None and age > contract.max_gap_seconds,
        state=state.value,
        state_text=str(state.label),
        alerts=count,
        alerts_new=new,
        alerts_text=alerts_text if count else _("none"),
        severity=severity,
        severity_text=str(Alert.Severity(severity).label) if severity else "",
        alerts_url=f"{reverse('logistics-alerts')}?status=unresolved&shipment={shipment.pk}",
    )


def _board(organisation: Organisation, now: datetime.datetime) -> dict[str, Any]:
    shipments = list(board_shipments(organisation)[: BOARD_LIMIT + 1])
    return {
        "rows": [_board_row(shipment, now) for shipment in shipments[:BOARD_LIMIT]],
        "more": len(shipments) > BOARD_LIMIT,
        "updated_at": now.isoformat(),
        "updated_text": _("Updated %(time)s UTC") % {"time": now.astimezone(datetime.UTC).strftime("%H:%M:%S")},
    }


@require_safe
@never_cache
@_member
def board(request: HttpRequest, membership: Membership) -> HttpResponse:
    """Shipments in transit; board.js refreshes the table from ``board_json`` every few seconds."""
    context = _board(membership.organisation, timezone.now())
    return render(request, "logistics/board.html", context | {"limit": BOARD_LIMIT})


@require_safe
@never_cache
@_member
def board_json(request: HttpRequest, membership: Membership) -> HttpResponse:
    """The board's rows as JSON, display texts included, for board.js."""
    board = _board(membership.organisation, timezone.now())
    rows = [dataclasses.asdict(row) for row in board.pop("rows")]
    return JsonResponse(board | {"shipments": rows})


# Alerts --------------------------------------------------------------------------------


def _rule(key: str) -> str:
    """An alert's key as people say it: the rule's name, or the limit it is about."""
    limits = {
        "mkt": _("Mean kinetic temperature"),
        "freeze_thaw": _("Freeze-thaw cycles"),
        "gap": _("Data gap"),
    }
    return limits.get(key, key.removeprefix("rule:"))


@dataclass(frozen=True)
class AlertItem:
    alert: Alert
    rule: str


def _items(alerts: Sequence[Alert]) -> list[AlertItem]:
    return [AlertItem(alert, _rule(alert.key)) for alert in alerts]


def _visible_alerts(organisation: Organisation) -> QuerySet[Alert]:
    return Alert.objects.filter(shipment__in=selectors.visible_shipments(organisation)).select_related(
        "shipment", "acknowledged_by", "resolved_by"
    )


def _alert_for_user(membership: Membership, pk: int) -> Alert:
    """The alert if the member's organisation sees its shipment; a 404 otherwise, whether or not it exists."""
    return get_object_or_404(_visible_alerts(membership.organisation), pk=pk)


def _inbox_order(alerts: QuerySet[Alert]) -> QuerySet[Alert]:
    """Open first, then acknowledged, then resolved; the most severe and the newest first within each."""
    waiting = Case(
        When(status=Alert.Status.OPEN, then=Value(0)),
        When(status=Alert.Status.ACKNOWLEDGED, then=Value(1)),
        default=Value(2),
        output_field=IntegerField(),
    )
    return alerts.annotate(waiting=waiting, rank=_severity_rank()).order_by("waiting", "-rank", "-triggered_at", "-id")


def _can_handle(membership: Membership) -> bool:
    """Whether to offer the forms: the role writes, and the organisation is a party (a regulator only reads).

    Every shipment a non-regulator sees is one it is party to
    (``selectors.shipment_parties``); the services check again anyway.
    """
    return membership.can_write and not membership.organisation.is_regulator


UNRESOLVED_FILTER = "unresolved"


class AlertFilter(forms.Form):
    status = forms.ChoiceField(
        label=gettext_lazy("Status"),
        required=False,
        choices=[
            ("", gettext_lazy("Any")),
            (UNRESOLVED_FILTER, gettext_lazy("Open or acknowledged")),
            *Alert.Status.choices,
        ],
    )
    severity = forms.ChoiceField(
        label=gettext_lazy("Severity"), required=False, choices=[("", gettext_lazy("Any")), *Alert.Severity.choices]
    )
    shipment = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)
    page = forms.IntegerField(required=False, min_value=1, widget=forms.HiddenInput)


@require_safe
@never_cache
@_member
def alert_inbox(request: HttpRequest, membership: Membership) -> HttpResponse:
    """The alerts of the shipments the organisation sees, waiting ones first; filtered by status and severity."""
    organisation = membership.organisation
    query = AlertFilter(request.GET)
    context: dict[str, Any] = {"query": query, "can_handle": _can_handle(membership), "back": request.get_full_path()}
    if not query.is_valid():
        return render(request, "logistics/alerts.html", context, status=400)
    wanted = query.cleaned_data
    alerts = _visible_alerts(organisation)
    if wanted["shipment"]:
        context["shipment"] = selectors.visible_shipments(organisation).filter(pk=wanted["shipment"]).first()
        alerts = alerts.filter(shipment_id=wanted["shipment"])
    context["counts"] = dict(alerts.order_by().values_list("status").annotate(n=Count("id")))
    if wanted["status"] == UNRESOLVED_FILTER:
        alerts = alerts.filter(status__in=UNRESOLVED)
    elif wanted["status"]:
        alerts = alerts.filter(status=wanted["status"])
    if wanted["severity"]:
        alerts = alerts.filter(severity=wanted["severity"])
    page = Paginator(_inbox_order(alerts), ALERTS_PER_PAGE).get_page(wanted["page"] or 1)
    filters = request.GET.copy()
    filters.pop("page", None)
    context |= {"page": page, "items": _items(list(page.object_list)), "filters": filters.urlencode()}
    return render(request, "logistics/alerts.html", context)


class CommentForm(forms.Form):
    comment = forms.CharField(required=False, max_length=2000)


def _back(request: HttpRequest) -> str:
    """Where the form was: ``next`` if it is a page of this site, else the inbox."""
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return target
    return reverse("logistics-alerts")


ACTIONS: dict[str, tuple[Callable[..., Alert], Any, Any]] = {
    # action: (service, what the message says after, the heading when refused)
    "acknowledge": (
        services.alert_acknowledge,
        gettext_lazy("Alert acknowledged: %(rule)s on %(reference)s."),
        gettext_lazy("The alert was not acknowledged"),
    ),
    "resolve": (
        services.alert_resolve,
        gettext_lazy("Alert resolved: %(rule)s on %(reference)s."),
        gettext_lazy("The alert was not resolved"),
    ),
}


def _alert_act(request: HttpRequest, membership: Membership, pk: int, action: str) -> HttpResponse:
    """Calls the action's service; back where the form was with a message, or the reason it was refused."""
    alert = _alert_for_user(membership, pk)
    service, done, refused = ACTIONS[action]
    form = CommentForm(request.POST)
    status, reasons = 400, [str(error) for errors in form.errors.values() for error in errors]
    if form.is_valid():
        try:
            service(actor=cast(User, request.user), alert=alert, comment=form.cleaned_data["comment"])
        except PermissionDenied as error:
            status, reasons = 403, [str(error)]
        except ValidationError as error:
            status, reasons = 400, error.messages
        else:
            messages.success(request, done % {"rule": _rule(alert.key), "reference": alert.shipment.reference})
            return redirect(_back(request))
    alert.refresh_from_db()
    context = {
        "heading": refused,
        "reasons": reasons,
        "item": AlertItem(alert, _rule(alert.key)),
        "can_handle": _can_handle(membership),
        "back": _back(request),
        "action": action,
        "comment": request.POST.get("comment", ""),
    }
    return render(request, "logistics/alert_refused.html", context, status=status)


@require_POST
@_member
def alert_acknowledge(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    return _alert_act(request, membership, pk, "acknowledge")


@require_POST
@_member
def alert_resolve(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    return _alert_act(request, membership, pk, "resolve")


# The shipment page -------------------------------------------------------------------


def _shipment_for_user(membership: Membership, pk: int) -> Shipment:
    """The shipment if the member's organisation may see it; a 404 otherwise, whether or not it exists."""
    shipments = selectors.visible_shipments(membership.organisation).select_related(
        "shipper", "carrier", "consignee", "custodian", "origin", "destination", "contract"
    )
    return get_object_or_404(
        shipments.prefetch_related("contract__rules").annotate(breached=_breached(), excursion_open=_excursion_open()),
        pk=pk,
    )


@dataclass(frozen=True)
class ColdChain:
    """MKT and the stability budget, evaluated as the monitoring workers do (iot_ingest.evaluation)."""

    mkt: str  # "" when the contract has no MKT window or there are no readings
    mkt_limit: str
    mkt_window: str
    budget_seconds: int | None  # None: the contract has no cumulative rule above the range
    used_seconds: int  # at most the budget, for the meter
    budget_low: int  # the meter turns amber here (half the budget) and red at four fifths, as the rules warn
    budget_high: int
    used: str
    budget: str
    remaining: str
    freeze_thaw_cycles: int


def _stability_budget(terms: coldchain.Contract) -> int | None:
    """The longest cumulative rule above the range: the product's stability budget (``coldchain.default_contract``)."""
    durations = [
        rule.duration_seconds
        for rule in terms.rules
        if rule.mode is coldchain.Mode.CUMULATIVE and rule.band is coldchain.Band.ABOVE
    ]
    return max(durations, default=None)


def _cold_chain(
    shipment: Shipment,
    terms: coldchain.Contract,
    readings: list[tuple[datetime.datetime, float]],
    now: datetime.datetime,
) -> ColdChain | None:
    """Evaluates the contract over the readings the way ``iot_ingest.evaluation.shipment_evaluate`` does."""
    if shipment.dispatched_at is None:
        return None
    closed = shipment.closed_at
    samples = [coldchain.Sample(at, value) for at, value in readings if closed is None or at <= closed]
    armed_from = shipment.dispatched_at + datetime.timedelta(seconds=terms.arming_seconds)
    evaluation = coldchain.evaluate(terms, samples, armed_from=armed_from, until=closed or now)
    budget = _stability_budget(terms)
    used = evaluation.stability_used_seconds
    return ColdChain(
        mkt="" if evaluation.mkt_celsius is None else _degrees(evaluation.mkt_celsius),
        mkt_limit="" if terms.mkt_limit_celsius is None else _degrees(terms.mkt_limit_celsius),
        mkt_window="" if terms.mkt_window_seconds is None else _duration(terms.mkt_window_seconds),
        budget_seconds=budget,
        used_seconds=min(used, budget) if budget else used,
        budget_low=(budget or 0) // 2,
        budget_high=(budget or 0) * 4 // 5,
        used=_duration(used),
        budget="" if budget is None else _duration(budget),
        remaining="" if budget is None else _duration(max(budget - used, 0)),
        freeze_thaw_cycles=evaluation.freeze_thaw_cycles,
    )


def _chart(
    shipment: Shipment,
    readings: list[tuple[datetime.datetime, float]],
    excursions: list[Excursion],
    now: datetime.datetime,
) -> charts.Chart | None:
    if not readings:
        return None
    contract = shipment.contract
    start = min(filter(None, [shipment.dispatched_at, readings[0][0]]))
    end = max(shipment.closed_at or now, readings[-1][0])
    spans = [charts.Span(e.started_at, e.ended_at, e.direction, e.peak_celsius) for e in excursions]
    return charts.chart_build(
        charts.downsample(readings, start=start, end=end, points=CHART_POINTS),
        start=start,
        end=end,
        band=(float(contract.min_celsius), float(contract.max_celsius)),
        excursions=spans,
        max_gap_seconds=contract.max_gap_seconds,
    )


def _recalls_flagging(organisation: Organisation, shipment: Shipment) -> list[tuple[Recall, bool]]:
    """The recalls that flagged the shipment, each with whether the organisation may open its page."""
    recalls = [flag.recall for flag in shipment.recall_flags.select_related("recall")]
    visible = set(
        selectors.visible_recalls(organisation).filter(pk__in=[r.pk for r in recalls]).values_list("pk", flat=True)
    )
    return [(recall, recall.pk in visible) for recall in recalls]


@require_safe
@never_cache
@_member
def shipment_page(request: HttpRequest, membership: Membership, pk: int) -> HttpResponse:
    """Facts, the temperature chart with MKT and stability budget, alerts, custody, loggers and ledger entries."""
    shipment = _shipment_for_user(membership, pk)
    now = timezone.now()
    readings = list(
        shipment.readings.filter(kind=TEMPERATURE).order_by("measured_at", "value").values_list("measured_at", "value")
    )
    excursions = list(shipment.excursions.all())
    has_readings = bool(readings)
    state = ContractState.of(
        breached=shipment.breached,  # type: ignore[attr-defined]
        excursion_open=shipment.excursion_open,  # type: ignore[attr-defined]
        has_readings=has_readings,
    )
    alerts = list(
        _inbox_order(Alert.objects.filter(shipment=shipment).select_related("acknowledged_by", "resolved_by"))
    )
    for alert in alerts:
        alert.shipment = shipment  # spares a query per alert card
    values = [value for _at, value in readings]
    context = {
        "readings": {
            "count": len(readings),
            "first": readings[0][0] if readings else None,
            "last": readings[-1][0] if readings else None,
            "lowest": min(values, default=None),
            "highest": max(values, default=None),
        },
        "shipment": shipment,
        "contract": shipment.contract,
        "rules": shipment.contract.rules.all(),
        "state": state.value,
        "state_text": state.label,
        "chart": _chart(shipment, readings, excursions, now),
        "cold_chain": _cold_chain(shipment, shipment.contract.as_rules(), readings, now),
        "excursions": excursions,
        "items": _items(alerts),
        "can_handle": _can_handle(membership),
        "back": request.get_full_path(),
        "custody": shipment.custody_events.select_related(
            "from_organisation", "to_organisation", "site", "recorded_by"
        ),
        "devices": shipment.device_assignments.select_related("device").order_by("starts_at", "id"),
        "ledger": shipment_ledger.section(request, shipment),
        "recalls": _recalls_flagging(membership.organisation, shipment),
    }
    return render(request, "logistics/shipment.html", context)
