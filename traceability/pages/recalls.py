"""Recall pages: the list, a new recall with its scope previewed before it is issued, a recall's progress.

Every member reaches ``/recalls/``: it lists the recalls their organisation
issued, made the goods of, or was sent a notice of (a regulator's lists them
all). A recall anyone else asks for is a 404. Regulators and manufacturers
start recalls; the services decide who may do what, and their refusals come
back next to the fields they name.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core import signing
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from django.views.decorators.http import require_http_methods, require_POST, require_safe

from traceability import gs1, security, selectors, services, trace
from traceability.models import Batch, Organisation, Recall
from traceability.pages import access

Kind = Organisation.Kind
RECALLS_SHOWN = 200
MAX_LINES = 100


# Forms ------------------------------------------------------------------------------------


class RecallForm(forms.Form):
    batches = forms.CharField(
        label=gettext_lazy("Batches"),
        widget=forms.Textarea(attrs={"rows": 4, "spellcheck": "false"}),
        help_text=gettext_lazy(
            "One batch per line: its GTIN and lot, and to recall only some packs, the first and last serial number."
        ),
    )
    classification = forms.ChoiceField(label=gettext_lazy("Class"), choices=Recall.Class.choices)
    depth = forms.ChoiceField(
        label=gettext_lazy("Depth"),
        choices=Recall.Depth.choices,
        initial=Recall.Depth.CONSUMER,
        help_text=gettext_lazy("How far down the supply chain: wholesale stops short of pharmacies."),
    )
    reason = forms.CharField(label=gettext_lazy("Reason"), widget=forms.Textarea(attrs={"rows": 3}))
    instructions = forms.CharField(
        label=gettext_lazy("Instructions to holders and the public"), widget=forms.Textarea(attrs={"rows": 3})
    )


class ConfirmForm(forms.Form):
    password = forms.CharField(
        label=gettext_lazy("Your password, to confirm"),
        widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}),
        required=False,  # the service says it is wrong or missing, with the other errors
    )


class AcknowledgeForm(forms.Form):
    units_found = forms.IntegerField(
        label=gettext_lazy("Units found and quarantined"), min_value=0, max_value=2**31 - 1
    )
    note = forms.CharField(label=gettext_lazy("Note"), required=False, widget=forms.Textarea(attrs={"rows": 2}))


class CloseForm(forms.Form):
    note = forms.CharField(
        label=gettext_lazy("Why the recall can close"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 2}),
        help_text=gettext_lazy("Published in the public ledger with the recall: name no holder."),
    )


def _items(form: RecallForm, organisation: Organisation) -> list[services.RecallItemSpec]:
    """The batches the form names, looked up among those the organisation sees; errors go to ``batches``."""
    lines = [line.split() for line in form.cleaned_data["batches"].splitlines() if line.strip()]
    if len(lines) > MAX_LINES:
        raise ValidationError({"batches": _("Name at most %(count)d batches.") % {"count": MAX_LINES}})
    visible = selectors.visible_batches(organisation).select_related("product__manufacturer")
    items, problems = [], []
    for number, words in enumerate(lines, start=1):
        if len(words) not in (2, 4):
            problems.append(
                _("Line %(number)d: write a GTIN and a lot, then optionally two serials.") % {"number": number}
            )
            continue
        try:
            gtin = gs1.normalize_gtin(words[0])
            for serial in words[2:]:
                gs1.validate_serial(serial)
        except gs1.GS1Error as error:
            problems.append(_("Line %(number)d: %(error)s") % {"number": number, "error": error})
            continue
        batch = visible.filter(product__gtin=gtin, lot=words[1]).first()
        if batch is None:
            problems.append(
                _("Line %(number)d: no batch with GTIN %(gtin)s and lot %(lot)s.")
                % {"number": number, "gtin": gtin, "lot": words[1]}
            )
            continue
        items.append(services.RecallItemSpec(batch, *words[2:]))
    if problems:
        raise ValidationError({"batches": problems})
    return items


# Pages ------------------------------------------------------------------------------------


@require_safe
@login_required
def recall_list(request: HttpRequest) -> HttpResponse:
    organisation = access.organisation(request)
    recalls = selectors.visible_recalls(organisation).prefetch_related("items__batch__product")[:RECALLS_SHOWN]
    waiting = set(selectors.waiting_notices(organisation).values_list("recall", flat=True))
    context = {"recalls": recalls, "waiting": waiting, "may_start": _may_start(request)}
    return render(request, "recalls/list.html", context)


@require_http_methods(["GET", "HEAD", "POST"])
@login_required
def recall_new(request: HttpRequest) -> HttpResponse:
    """GET: the form. POST: its scope previewed (``preview``), or the recall issued (``issue``)."""
    organisation = access.organisation(request)
    if not _may_start(request):
        raise Http404
    if request.method != "POST":
        return render(request, "recalls/new.html", {"form": RecallForm(initial=_initial(request, organisation))})
    form, confirm = RecallForm(request.POST), ConfirmForm(request.POST)
    if "issue" in request.POST and (wait := security.password_recheck_wait(request)) is not None:
        return _too_many_guesses(request, form, wait)
    scope, previewed = None, ""
    if form.is_valid() and confirm.is_valid():
        try:
            items = _items(form, organisation)
            previewed = _previewed(request, form)
            if "issue" in request.POST and request.POST.get("previewed") != previewed:
                form.add_error(None, _("The recall changed since its scope was shown: check the scope below again."))
            elif "issue" in request.POST:
                recall = _issue(request, form, confirm, items)
                if recall is not None:
                    messages.success(request, _("Recall %(reference)s issued.") % {"reference": recall.reference})
                    return redirect("recall-detail", recall.pk)
            # The scope again, beside any refusal, so a mistyped password needs no second preview.
            scope = services.recall_preview(actor=access.actor(request), items=items, depth=form.cleaned_data["depth"])
        except ValidationError as error:
            access.form_errors(form, error)
    context = {"form": form, "confirm": confirm, "scope": scope, "previewed": previewed if scope else ""}
    status = 400 if form.errors or confirm.errors else 200
    return render(request, "recalls/new.html", context, status=status)


def _too_many_guesses(request: HttpRequest, form: RecallForm, wait: int) -> HttpResponse:
    """The form as sent, not issued: a password may be re-entered only as often as through the API (scope ``auth``)."""
    form.add_error(
        None,
        _("Too many attempts to confirm with your password. Wait %(seconds)d seconds, then preview the recall again.")
        % {"seconds": wait},
    )
    response = render(request, "recalls/new.html", {"form": form, "scope": None, "previewed": ""}, status=429)
    response["Retry-After"] = str(wait)
    return response


def _previewed(request: HttpRequest, form: RecallForm) -> str:
    """A token of exactly what the form says and who previews it: issuing needs the token of what was shown.

    So what is issued is what was previewed; editing the form after the
    preview asks for another look at the scope first.
    """
    facts = {name: form.cleaned_data[name] for name in RecallForm.base_fields}
    digest = hashlib.sha256(json.dumps([request.user.pk, facts], sort_keys=True).encode()).hexdigest()
    return signing.Signer(salt="recall-preview").sign(digest)


def _issue(
    request: HttpRequest, form: RecallForm, confirm: ConfirmForm, items: list[services.RecallItemSpec]
) -> Recall | None:
    """The recall issued; None when refused, with each reason next to its field (the password's in ``confirm``)."""
    facts = {name: form.cleaned_data[name] for name in ("classification", "depth", "reason", "instructions")}
    try:
        return services.recall_issue(
            actor=access.actor(request), items=items, password=confirm.cleaned_data["password"], **facts
        )
    except ValidationError as error:
        refusals = dict(error.message_dict)
        if "password" in refusals:
            confirm.add_error("password", refusals.pop("password"))
        if refusals:
            access.form_errors(form, ValidationError(refusals))
        return None


@require_safe
@login_required
def recall_detail(request: HttpRequest, pk: int) -> HttpResponse:
    return _detail(request, _recall(request, pk))


@require_POST
@login_required
def recall_acknowledge(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, AcknowledgeForm, services.recall_acknowledge, _("Acknowledgement recorded."))


@require_POST
@login_required
def recall_close(request: HttpRequest, pk: int) -> HttpResponse:
    return _act(request, pk, CloseForm, services.recall_close, _("Recall closed."))


def _act(
    request: HttpRequest, pk: int, form_class: type[forms.Form], service: Callable[..., object], done: str
) -> HttpResponse:
    """The form posted to the recall's service: back to the recall page, or the page again with the reasons."""
    recall = _recall(request, pk)
    form = form_class(request.POST)
    if form.is_valid():
        try:
            service(actor=access.actor(request), recall=recall, **form.cleaned_data)
        except ValidationError as error:
            access.form_errors(form, error)
        else:
            messages.success(request, done)
            return redirect("recall-detail", recall.pk)
    return _detail(request, recall, posted=form, status=400)


def _recall(request: HttpRequest, pk: int) -> Recall:
    return get_object_or_404(selectors.visible_recalls(access.organisation(request)), pk=pk)


def _may_start(request: HttpRequest) -> bool:
    organisation = access.organisation(request)
    return organisation.kind in (Kind.REGULATOR, Kind.MANUFACTURER) and access.can_write(request)


def _initial(request: HttpRequest, organisation: Organisation) -> dict[str, str]:
    """``?batch=<id>`` fills in one batch the organisation sees (the batch page links here)."""
    batch_id = request.GET.get("batch", "")
    batch = None
    if batch_id.isdigit() and len(batch_id) < 19:
        batch = selectors.visible_batches(organisation).select_related("product").filter(pk=int(batch_id)).first()
    return {"batches": f"{batch.product.gtin} {batch.lot}"} if batch else {}


def _detail(
    request: HttpRequest,
    recall: Recall,
    *,
    posted: forms.Form | None = None,
    status: int = 200,
) -> HttpResponse:
    """The recall's page; ``posted``, a form sent back with its errors, takes the place of the empty one."""
    organisation = access.organisation(request)
    everyone = selectors.sees_progress(organisation, recall)
    notices = recall.notices.select_related("organisation", "acknowledged_by")
    own = next((notice for notice in notices if notice.organisation_id == organisation.pk), None)
    writer = access.can_write(request) and recall.status == Recall.Status.OPEN
    context = {
        "recall": recall,
        "items": recall.items.select_related("batch__product"),
        "notices": notices if everyone else [own] if own else [],
        "everyone": everyone,
        "acknowledged": sum(notice.acknowledged_at is not None for notice in notices),
        "notice_count": len(notices),
        "flagged": recall.flagged.select_related("shipment__custodian", "shipment__consignee") if everyone else [],
        "acknowledge": _form(posted, AcknowledgeForm) if writer and own and own.acknowledged_at is None else None,
        "close": _form(posted, CloseForm) if writer and organisation.is_regulator else None,
    }
    return render(request, "recalls/detail.html", context, status=status)


def _form(posted: forms.Form | None, form_class: type[forms.Form]) -> forms.Form:
    return posted if isinstance(posted, form_class) else form_class()


# A batch's trace ----------------------------------------------------------------------------


@require_safe
@login_required
def batch_trace(request: HttpRequest, pk: int) -> HttpResponse:
    """The batch's life and whereabouts: for its manufacturer and regulators (anyone else: 404)."""
    organisation = access.organisation(request)
    batches = selectors.visible_batches(organisation).select_related("product__manufacturer")
    if not organisation.is_regulator:
        batches = batches.filter(product__manufacturer=organisation)
    batch: Batch = get_object_or_404(batches, pk=pk)
    found = trace.batch_trace(batch)
    return render(request, "recalls/trace.html", {"batch": found.batch, "trace": found})
