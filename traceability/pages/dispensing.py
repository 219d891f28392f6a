"""The pharmacy's counter: packs scanned as they are handed out, recorded as dispensed (``services.units_dispense``).

A pharmacist scans each pack's QR code into one field, a line per pack (a
scanner types the GS1 Digital Link and a newline), picks the pharmacy, and
submits. Every pack is recorded, or none: one refusal (a recalled or expired
batch, a serial never issued or already dispensed, more packs than the
pharmacy holds) changes nothing and says which lot and why.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy, ngettext
from django.views.decorators.http import require_http_methods

from traceability import gs1, selectors, services
from traceability.models import Batch, Organisation, Site
from traceability.pages import access


class DispenseForm(forms.Form):
    site = forms.ModelChoiceField(queryset=Site.objects.none(), label=gettext_lazy("Pharmacy"))
    packs = forms.CharField(
        label=gettext_lazy("Packs handed out"),
        help_text=gettext_lazy(
            "Scan each pack's QR code, one per line: the address it holds (GS1 Digital Link), with its lot and "
            "serial number."
        ),
        widget=forms.Textarea(attrs={"rows": 8, "autocomplete": "off", "spellcheck": "false"}),
        error_messages={"required": gettext_lazy("Scan at least one pack.")},
    )

    def __init__(self, *args: Any, organisation: Organisation, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        sites = organisation.sites.order_by("name")
        field = self.fields["site"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = sites
        if len(sites) == 1:
            field.initial = sites[0].pk

    def clean_packs(self) -> list[gs1.DigitalLink]:
        links, problems = [], []
        today = timezone.localdate()
        for number, line in enumerate(self.cleaned_data["packs"].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                link = gs1.parse_digital_link(line.strip(), today=today).link
            except gs1.GS1Error as error:
                problems.append(_("Line %(number)d: %(error)s") % {"number": number, "error": error})
                continue
            if link.lot is None or link.serial is None:
                problems.append(
                    _("Line %(number)d: the code names no lot and serial number; scan the pack's own code.")
                    % {"number": number}
                )
                continue
            links.append(link)
        if problems:
            raise ValidationError(problems)
        return links


@require_http_methods(["GET", "POST"])
@login_required
def dispense(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST: every pack recorded as dispensed, then back to an empty form; or the refusals."""
    organisation = access.organisation(request)
    if organisation.kind != Organisation.Kind.DISPENSER:
        raise Http404
    form = DispenseForm(request.POST if request.method == "POST" else None, organisation=organisation)
    if request.method == "POST" and form.is_valid():
        if not access.can_write(request):
            form.add_error(None, _("Your role may read but not record."))
        else:
            try:
                count = _dispense(request, organisation, form.cleaned_data["site"], form.cleaned_data["packs"])
            except ValidationError as error:
                access.form_errors(form, error)
            else:
                messages.success(
                    request,
                    ngettext("%(count)d pack recorded as dispensed.", "%(count)d packs recorded as dispensed.", count)
                    % {"count": count},
                )
                return redirect("logistics-dispense")
    status = 400 if form.errors else 200
    return render(request, "logistics/dispense.html", {"form": form}, status=status)


def _dispense(request: HttpRequest, organisation: Organisation, site: Site, links: list[gs1.DigitalLink]) -> int:
    """Every pack dispensed in one transaction, batch by batch; a refusal names its lot and undoes them all."""
    serials: dict[tuple[str, str], list[str]] = defaultdict(list)
    for link in links:
        assert link.lot is not None  # DispenseForm.clean_packs refused links without a lot or serial
        assert link.serial is not None
        serials[link.gtin, link.lot].append(link.serial)
    visible = selectors.visible_batches(organisation).select_related("product")
    with transaction.atomic():
        for (gtin, lot), batch_serials in serials.items():
            batch = visible.filter(product__gtin=gtin, lot=lot).first()
            if batch is None:
                raise ValidationError({"packs": _("Lot %(lot)s of GTIN %(gtin)s was never delivered to you.") % {
                    "lot": lot, "gtin": gtin}})  # fmt: skip
            try:
                services.units_dispense(actor=access.actor(request), batch=batch, serials=batch_serials, site=site)
            except ValidationError as error:
                raise _of_lot(batch, error) from None
    return len(links)


def _of_lot(batch: Batch, error: ValidationError) -> ValidationError:
    """The service's refusal, each message on this form's field and naming the lot it is about."""
    fields = error.message_dict if hasattr(error, "error_dict") else {"packs": error.messages}
    found: dict[str, list[str]] = defaultdict(list)
    for field, reasons in fields.items():
        for reason in reasons:
            if field == "site":
                found["site"].append(reason)
            else:
                found["packs"].append(_("Lot %(lot)s: %(reason)s") % {"lot": batch.lot, "reason": reason})
    return ValidationError(dict(found))
