"""Pages. Each looks objects up through ``selectors`` so access is checked in one place."""

from __future__ import annotations

import secrets
from typing import Any

from django.conf import settings
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.db import connection
from django.db.models import Count, QuerySet, TextChoices
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from traceability import metrics as platform_metrics
from traceability import operations, selectors
from traceability.models import Batch, Organisation, Shipment

Kind = Organisation.Kind


@require_safe
@never_cache
def health(request: HttpRequest) -> HttpResponse:
    """200 when the database answers; load balancers poll this."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception:  # any database failure means "not healthy", never a 500 page
        return JsonResponse({"status": "unavailable", "database": "down"}, status=503)
    return JsonResponse({"status": "ok", "database": "ok"})


@never_cache
def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics for ``Authorization: Bearer <METRICS_KEY>``; with no key configured there is no such page."""
    key: str = settings.METRICS_KEY
    if not key:
        raise Http404("metrics are off: set METRICS_KEY")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not secrets.compare_digest(given.strip().encode(), key.encode()):
        response = HttpResponse("Send Authorization: Bearer <METRICS_KEY>.\n", status=401, content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    if request.method not in ("GET", "HEAD"):
        return HttpResponse(status=405, headers={"Allow": "GET, HEAD"})
    body, content_type = platform_metrics.exposition(request.headers.get("Accept", ""))
    return HttpResponse(body, content_type=content_type)


@staff_member_required
@require_safe
@never_cache
def ops_status(request: HttpRequest) -> HttpResponse:
    """For staff: are the database, the broker and the workers up; how far behind are ingest and the ledger."""
    now = timezone.now()
    database, broker = operations.database_check(), operations.broker_check()
    context: dict[str, Any] = {
        "now": now,
        "database": database,
        "broker": broker,
        "workers": operations.workers_ping() if broker.ok else None,
    }
    if database.ok:
        inbox, ledger = operations.inbox_state(), operations.ledger_state()
        context |= {
            "inbox": inbox,
            "ingest_lag": inbox.oldest_pending_age(now),
            "ledger": ledger,
            "checkpoint_age": ledger.checkpoint_age(now),
        }
    return render(request, "ops/status.html", context)


def status_tiles(statuses: type[TextChoices], rows: QuerySet[Any]) -> list[tuple[str, str, int]]:
    """(status, label, count) for every status, zeros included."""
    counts = dict(rows.order_by().values_list("status").annotate(n=Count("id")))
    return [(value, str(label), counts.get(value, 0)) for value, label in statuses.choices]


@require_safe
@login_required
def home(request: HttpRequest) -> HttpResponse:
    """The landing page of the signed-in user's organisation, shaped by its kind."""
    membership = getattr(request.user, "membership", None)
    if membership is None:
        return render(request, "traceability/no_membership.html", status=403)
    organisation = membership.organisation
    shipments = selectors.visible_shipments(organisation).select_related(
        "shipper", "carrier", "consignee", "custodian", "origin", "destination"
    )
    batches = selectors.visible_batches(organisation).select_related("product")
    if organisation.kind == Kind.MANUFACTURER:
        batches = batches.filter(product__manufacturer=organisation)
    context = {
        "organisation": organisation,
        "membership": membership,
        "shipment_tiles": status_tiles(Shipment.Status, shipments),
        "in_transit": shipments.filter(status=Shipment.Status.IN_TRANSIT)[:20],
        "recent_shipments": shipments[:10],
        "batches": batches[:20] if organisation.kind in (Kind.MANUFACTURER, Kind.REGULATOR) else [],
        "batch_tiles": status_tiles(Batch.Status, batches),
        "organisations": Organisation.objects.all() if organisation.is_regulator else [],
    }
    return render(request, "traceability/home.html", context)
