"""The manufacturer's pages: products, batches, registering a batch, a batch's page, quarantine and release, labels.

The pages are for members of a manufacturer organisation, about its own
products and batches; a regulator reads a batch's page too. Anyone else, and
any other organisation's batch, gets a 404. Objects are reached only through
``_manufacturer`` and ``_batch_for_user``, so access is decided in one place;
what may be changed is decided by the services.
"""

from __future__ import annotations

import datetime
import json
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from ledger.selectors import readable_entries
from traceability import gs1, qr, selectors, trace
from traceability.consumer import reads, verdict, words
from traceability.models import Alert, Batch, Excursion, Organisation, Product, Shipment, ShipmentItem
from traceability.pages import access
from traceability.services import batch_register
from traceability.services.batch_status import batch_quarantine, batch_release
from traceability.services.monitoring import GAP
from traceability.services.recalls import NOT_RECALLABLE

Kind = Organisation.Kind
PAGE_SIZE = 50
LABELS_PER_SHEET = 24  # an A4 sheet of 4 columns and 6 rows (manufacturer.css)
SHEETS_PER_PAGE = 4  # a QR code takes about 20 ms to draw: a page of 96 labels renders in about 2 s
STATUS_EVENTS = ("batch.registered", "batch.quarantined", "batch.released")
SVG = "http://www.w3.org/2000/svg"


# Access ---------------------------------------------------------------------------


def _manufacturer(request: HttpRequest) -> Organisation:
    """The signed-in user's organisation when it is a manufacturer; a 404 for anyone else."""
    organisation = access.organisation(request)
    if organisation.kind != Kind.MANUFACTURER:
        raise Http404
    return organisation


def _batch_for_user(request: HttpRequest, pk: int, *, regulator: bool = True) -> Batch:
    """One of the manufacturer's own batches, or (``regulator``) any batch for a regulator; else a 404."""
    organisation = access.organisation(request)
    batches = selectors.visible_batches(organisation)
    if organisation.kind == Kind.MANUFACTURER:
        batches = batches.filter(product__manufacturer=organisation)
    elif not (regulator and organisation.is_regulator):
        raise Http404
    return get_object_or_404(batches.select_related("product__manufacturer"), pk=pk)


def _own_products(manufacturer: Organisation) -> QuerySet[Product]:
    return selectors.visible_products(manufacturer).filter(manufacturer=manufacturer).order_by("name", "id")


# Forms ----------------------------------------------------------------------------


class _ProductChoice(forms.ModelChoiceField):  # type: ignore[type-arg]
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.name} {obj.strength} ({obj.gtin})".replace("  ", " ")


class BatchFilterForm(forms.Form):
    product = _ProductChoice(
        queryset=Product.objects.none(), required=False, label=gettext_lazy("Product"), empty_label=gettext_lazy("All")
    )
    status = forms.ChoiceField(
        choices=[("", gettext_lazy("All")), *Batch.Status.choices], required=False, label=gettext_lazy("Status")
    )

    def __init__(self, data: Any, *, products: QuerySet[Product]) -> None:
        super().__init__(data)
        self.fields["product"].queryset = products  # type: ignore[attr-defined]


class BatchForm(forms.Form):
    """The fields of ``batch_register``; the rules are the service's, and its errors come back to these fields."""

    product = _ProductChoice(queryset=Product.objects.none(), label=gettext_lazy("Product"))
    lot = forms.CharField(label=gettext_lazy("Lot"), help_text=gettext_lazy("Up to 20 letters, digits or symbols."))
    manufactured_on = forms.DateField(
        label=gettext_lazy("Manufactured on"), widget=forms.DateInput(attrs={"type": "date"})
    )
    expires_on = forms.DateField(label=gettext_lazy("Expires on"), widget=forms.DateInput(attrs={"type": "date"}))
    quantity = forms.IntegerField(label=gettext_lazy("Quantity (units)"), max_value=2**31 - 1)
    serial_count = forms.IntegerField(
        label=gettext_lazy("Serial numbers to generate"),
        max_value=2**31 - 1,
        initial=0,
        help_text=gettext_lazy("Random, one per unit; at most the quantity."),
    )

    def __init__(self, *args: Any, products: QuerySet[Product], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["product"].queryset = products  # type: ignore[attr-defined]


class ReasonForm(forms.Form):
    # Not required here: the service says what is missing, after saying who may do it at all.
    reason = forms.CharField(
        label=gettext_lazy("Reason"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3, "required": True}),
        help_text=gettext_lazy("Recorded in the ledger with your name."),
    )


# Lists ----------------------------------------------------------------------------


@require_safe
@login_required
def products(request: HttpRequest) -> HttpResponse:
    """The organisation's products with how many batches each has."""
    manufacturer = _manufacturer(request)
    rows = _own_products(manufacturer).annotate(batch_count=Count("batches"))
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "manufacturer/products.html", {"page": page, "can_write": access.can_write(request)})


@require_safe
@login_required
def batches(request: HttpRequest) -> HttpResponse:
    """The organisation's batches, newest first, filtered by product and status."""
    manufacturer = _manufacturer(request)
    form = BatchFilterForm(request.GET or None, products=_own_products(manufacturer))
    rows = (
        selectors.visible_batches(manufacturer)
        .filter(product__manufacturer=manufacturer)
        .select_related("product")
        .annotate(serial_count=Count("serials"))
        .order_by("-created_at", "-id")
    )
    status = 200
    if form.is_bound and not form.is_valid():
        rows, status = rows.none(), 400
    elif form.is_bound:
        if form.cleaned_data["product"]:
            rows = rows.filter(product=form.cleaned_data["product"])
        if form.cleaned_data["status"]:
            rows = rows.filter(status=form.cleaned_data["status"])
    page = Paginator(rows, PAGE_SIZE).get_page(request.GET.get("page"))
    context = {"form": form, "page": page, "can_write": access.can_write(request)}
    return render(request, "manufacturer/batches.html", context, status=status)


# Registering a batch -----------------------------------------------------------------


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def batch_new(request: HttpRequest) -> HttpResponse:
    """The registration form; a valid one registers the batch (``batch_register``) and shows its page."""
    manufacturer = _manufacturer(request)
    if not access.can_write(request):
        raise PermissionDenied(_("Your role is read-only; ask an administrator of your organisation."))
    products = _own_products(manufacturer)
    if request.method != "POST":
        initial = {"product": request.GET.get("product"), "manufactured_on": timezone.localdate()}
        form = BatchForm(initial=initial, products=products)
        return render(request, "manufacturer/batch_new.html", {"form": form})
    form = BatchForm(request.POST, products=products)
    if form.is_valid():
        try:
            batch = batch_register(actor=access.actor(request), **form.cleaned_data)
        except ValidationError as error:
            access.form_errors(form, error)
        else:
            messages.success(request, _("Batch %(lot)s registered.") % {"lot": batch.lot})
            return redirect("manufacturer-batch", pk=batch.pk)
    return render(request, "manufacturer/batch_new.html", {"form": form}, status=400)


# A batch's page -------------------------------------------------------------------------


@dataclass(frozen=True)
class Carried:
    """A shipment that carried the batch, and what its temperature record says."""

    item: ShipmentItem
    verdict: str
    level: str  # ok, info, warning or danger (the CSS class)
    details: tuple[str, ...]


def _carried(items: Sequence[ShipmentItem], now: datetime.datetime) -> list[Carried]:
    dispatched = sorted(
        (item for item in items if item.shipment.dispatched_at is not None),
        key=lambda item: (item.shipment.dispatched_at, item.shipment.pk),
    )
    legs = {item.pk: _leg(number, item.shipment, now) for number, item in enumerate(dispatched, start=1)}
    rows = []
    for item in items:
        leg = legs.get(item.pk)
        if leg is None:
            rows.append(Carried(item, _("Not dispatched yet"), words.INFO, ()))
            continue
        lines = words.leg_view(leg).lines
        if leg.failed:
            rows.append(Carried(item, _("Excursion"), words.DANGER, lines))
        elif leg.data_gaps:
            rows.append(Carried(item, _("Record incomplete"), words.WARNING, lines))
        else:
            rows.append(Carried(item, _("Kept in range"), words.OK, lines))
    return rows


def _leg(number: int, shipment: Shipment, now: datetime.datetime) -> verdict.Leg:
    """The shipment's temperature record as the consumer page judges it."""
    limits = {limit.value for limit in verdict.Limit}
    keys = [alert.key for alert in shipment.alerts.all() if alert.key in limits or _unfilled_gap(alert)]
    return reads.leg(
        number,
        status=shipment.status,
        celsius=(shipment.contract.min_celsius, shipment.contract.max_celsius),
        dispatched_at=shipment.dispatched_at,
        closed_at=shipment.closed_at,
        excursions=[
            reads.excursion_fact(e.direction, e.peak_celsius, e.duration_seconds, e.ended_at)
            for e in shipment.excursions.all()
        ],
        keys=keys,
        now=now,
    )


def _unfilled_gap(alert: Alert) -> bool:
    """A data gap counts unless late readings filled it (then the system resolved it, nobody did)."""
    return alert.key == GAP and (alert.status != Alert.Status.RESOLVED or alert.resolved_by_id is not None)


def _carrying(batch: Batch) -> list[ShipmentItem]:
    """Every shipment that carried the batch, oldest first, with parties, contract, excursions and alerts."""
    shipment = ("shipper", "carrier", "consignee", "custodian", "origin", "destination", "contract")
    return list(
        ShipmentItem.objects.filter(batch=batch)
        .select_related(*(f"shipment__{name}" for name in shipment))
        .prefetch_related(
            Prefetch("shipment__excursions", queryset=Excursion.objects.order_by("started_at", "id")),
            Prefetch("shipment__alerts", queryset=Alert.objects.order_by("-triggered_at", "-id")),
        )
        .order_by("shipment__created_at", "shipment__id")
    )


@dataclass(frozen=True)
class StatusEvent:
    seq: int
    time: datetime.datetime
    type: str
    status: str
    by: str
    reason: str


def _history(request: HttpRequest, batch: Batch) -> list[StatusEvent]:
    """The batch's registration, quarantines and releases as the ledger records them."""
    entries = readable_entries(request).filter(
        subject=f"batch:{batch.product.gtin}:{batch.lot}", type__in=STATUS_EVENTS
    )
    events = []
    for entry in entries.order_by("seq"):
        data = json.loads(bytes(entry.leaf))["data"]
        status = str(Batch.Status(data.get("status", Batch.Status.ACTIVE)).label)
        events.append(
            StatusEvent(entry.seq, entry.time, entry.type, status, data.get("by", ""), data.get("reason", ""))
        )
    return events


def _status_change(batch: Batch) -> dict[str, str] | None:
    """The change the batch's status allows from the page: quarantine an active batch, release a quarantined one."""
    if batch.status == Batch.Status.ACTIVE:
        return {"url_name": "manufacturer-batch-quarantine", "button": _("Quarantine this batch")}
    if batch.status == Batch.Status.QUARANTINED:
        return {"url_name": "manufacturer-batch-release", "button": _("Release this batch")}
    return None


def _batch_page(
    request: HttpRequest, batch: Batch, *, form: ReasonForm | None = None, status: int = 200
) -> HttpResponse:
    items = _carrying(batch)
    alerts = sorted(
        (alert for item in items for alert in item.shipment.alerts.all()),
        key=lambda alert: (alert.triggered_at, alert.pk),
        reverse=True,
    )
    own = batch.product.manufacturer_id == access.organisation(request).pk
    context = {
        "batch": batch,
        "product": batch.product,
        "digital_link": batch.digital_link(),
        "serial_count": batch.serials.count(),
        "whereabouts": trace.batch_whereabouts(batch, items),
        "carried": _carried(items, timezone.now()),
        "alerts": alerts,
        "history": _history(request, batch),
        "own": own,
        "status_change": _status_change(batch) if own and access.can_write(request) else None,
        "may_recall": (own or access.organisation(request).is_regulator)
        and access.can_write(request)
        and batch.status not in NOT_RECALLABLE,
        "form": form or ReasonForm(),
    }
    return render(request, "manufacturer/batch.html", context, status=status)


@require_safe
@login_required
def batch_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """A batch: its facts and QR code, where its units are, every shipment's cold chain, alerts, status history."""
    return _batch_page(request, _batch_for_user(request, pk))


@require_POST
@login_required
def batch_quarantine_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _status_post(request, pk, batch_quarantine, _("Batch %(lot)s quarantined."))


@require_POST
@login_required
def batch_release_view(request: HttpRequest, pk: int) -> HttpResponse:
    return _status_post(request, pk, batch_release, _("Batch %(lot)s released."))


def _status_post(request: HttpRequest, pk: int, change: Callable[..., Batch], done: str) -> HttpResponse:
    """Quarantine or release with the reason posted; the batch page again, with the errors if refused."""
    batch = _batch_for_user(request, pk)
    form = ReasonForm(request.POST)
    form.is_valid()
    try:
        batch = change(actor=access.actor(request), batch=batch, reason=form.cleaned_data.get("reason", ""))
    except ValidationError as error:
        access.form_errors(form, error)
        return _batch_page(request, batch, form=form, status=400)
    messages.success(request, done % {"lot": batch.lot})
    return redirect("manufacturer-batch", pk=batch.pk)


# Labels -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    svg: SafeString  # the QR code, inline
    elements: tuple[str, ...]  # the human-readable interpretation, one element string each
    product: str


def hri(batch: Batch, serial: str | None = None) -> tuple[str, ...]:
    """The element strings the code carries, as GS1 prints them under it: "(01) 09506000134352", ...

    Application Identifiers in parentheses, then the data exactly as encoded
    (not percent-encoded): GTIN, expiry (YYMMDD), lot, then the serial.
    """
    elements = [("01", batch.product.gtin), ("17", gs1.format_expiry(batch.expires_on)), ("10", batch.lot)]
    if serial is not None:
        elements.append(("21", serial))
    return tuple(f"({ai}) {data}" for ai, data in elements)


def qr_svg(link: str, name: str) -> SafeString:
    """The QR code of ``link`` (``qr.render``: error correction M, quiet zone) as SVG to place in a page.

    Redrawn from the rendered code's one path, without the XML declaration (no
    place inside HTML) or its fixed id (it would repeat on every label), and
    named ``name`` for screen readers; every value is escaped.
    """
    image, _content_type = qr.render(link, "svg")
    root = ET.fromstring(image)  # noqa: S314  (markup we have just generated, not input)
    path = root.find(f"{{{SVG}}}path")
    assert path is not None  # SvgPathImage draws every dark module into one path
    return format_html(
        '<svg class="qr" xmlns="{}" viewBox="{}" width="{}" height="{}" role="img" aria-label="{}">'
        '<path d="{}" fill="#000"/></svg>',
        SVG,
        root.get("viewBox", ""),
        root.get("width", ""),
        root.get("height", ""),
        name,
        path.get("d", ""),
    )


def _label(batch: Batch, serial: str | None = None) -> Label:
    link = batch.digital_link(serial=serial)
    name = _("QR code: %(link)s") % {"link": link}
    product = f"{batch.product.name} {batch.product.strength}".strip()
    return Label(qr_svg(link, name), hri(batch, serial), product)


@require_safe
@login_required
def batch_labels(request: HttpRequest, pk: int) -> HttpResponse:
    """Printable A4 sheets: the batch's label, then one per serial number, a few sheets per page."""
    batch = _batch_for_user(request, pk, regulator=False)
    serial_count = batch.serials.count()
    # Label 0 is the batch's, label n the n-th serial's.
    page = Paginator(range(serial_count + 1), LABELS_PER_SHEET * SHEETS_PER_PAGE).get_page(request.GET.get("page"))
    first, last = page.start_index() - 1, page.end_index()
    serials = batch.serials.order_by("serial").values_list("serial", flat=True)[max(first - 1, 0) : last - 1]
    labels = ([_label(batch)] if first == 0 else []) + [_label(batch, serial) for serial in serials]
    sheets = [labels[start : start + LABELS_PER_SHEET] for start in range(0, len(labels), LABELS_PER_SHEET)]
    context = {"batch": batch, "page": page, "sheets": sheets, "serial_count": serial_count}
    return render(request, "manufacturer/labels.html", context)
