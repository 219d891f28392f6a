"""Who may do what: every URL, every method, every persona, against one table.

The world: the manufacturer's product and batch (three serials) travel in two
shipments to the pharmacy by the carrier, one still planned and one in
transit; the competitor has its own product and batch and ships nothing;
carrier2 has no part in anything. Each request runs in a savepoint that is
rolled back, so every cell of the table sees the same world.

Adding a URL without adding its row to ``TABLE`` fails
``test_every_url_is_in_the_table``.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth.models import AbstractBaseUser
from django.core.cache import cache
from django.db import transaction
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone
from rest_framework.test import APIClient

from iot_ingest import evaluation, protocol
from iot_ingest import services as ingest
from iot_ingest.models import Reading
from ledger import services as ledger
from ledger.models import Entry
from tests import factories
from tests.conftest import Persona
from traceability import services
from traceability.models import Alert, ApiToken, Batch, Membership, Product, Recall, Shipment, Site

PASSWORD = "correct horse battery staple"  # the factories' password
SIGNED_IN = ("manufacturer", "competitor", "carrier", "carrier2", "pharmacy", "regulator")
EVERYONE = (*SIGNED_IN, "anonymous")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")

Cells = dict[str, int]


def everyone(status: int) -> Cells:
    return dict.fromkeys(EVERYONE, status)


def members(status: int, **exceptions: int) -> Cells:
    """Every signed-in persona gets ``status`` unless named; anonymous callers get 401 unless named."""
    cells = dict.fromkeys(SIGNED_IN, status) | {"anonymous": 401}
    unknown = set(exceptions) - set(cells)
    assert not unknown, f"unknown personas {unknown}"
    return cells | exceptions


def members_only(**methods: Cells) -> dict[str, Cells]:
    """A view that checks sign-in first: methods not named are 405 for members, 401 for anonymous callers."""
    return {method: methods.get(method, members(405)) for method in METHODS}


def anyone(**methods: Cells) -> dict[str, Cells]:
    """A view that checks the method first (pages, and API views needing no sign-in): others are 405 for all."""
    return {method: methods.get(method, everyone(405)) for method in METHODS}


# The manufacturer's own objects: visible to the parties of the shipments
# carrying them and to the regulator; the competitor and the uninvolved
# carrier2 are told they do not exist.
OUTSIDERS = {"competitor": 404, "carrier2": 404}
MANUFACTURERS_OBJECT = members(200, **OUTSIDERS)

TABLE: dict[str, dict[str, Cells]] = {
    # Pages. "home" asks anonymous visitors to sign in; accounts/login/ re-renders
    # its (empty, so invalid) form on POST and on PUT, which Django's FormView
    # treats as POST; logout accepts POST only and redirects.
    "home": anyone(GET=members(200, anonymous=302)),
    "health": anyone(GET=everyone(200)),
    # Logistics pages: members read what they see; anonymous visitors are sent to sign in. The table's bodies
    # are JSON, which a form does not read: acknowledging needs no comment (302 back), resolving does (400).
    # The regulator reads alerts but only the shipment's parties handle them (403).
    "logistics-board": anyone(GET=members(200, anonymous=302)),
    "logistics-board-json": anyone(GET=members(200, anonymous=302)),
    "logistics-alerts": anyone(GET=members(200, anonymous=302)),
    "logistics-alert-acknowledge": anyone(POST=members(302, regulator=403, anonymous=302, **OUTSIDERS)),
    "logistics-alert-resolve": anyone(POST=members(400, regulator=403, anonymous=302, **OUTSIDERS)),
    "logistics-shipment": anyone(GET=members(200, anonymous=302, **OUTSIDERS)),
    # The dispensing page is a pharmacy's alone; a JSON body is an empty form to it (400).
    "logistics-dispense": anyone(
        GET=members(404, pharmacy=200, anonymous=302), POST=members(404, pharmacy=400, anonymous=302)
    ),
    # The manufacturer's pages (traceability/pages/manufacturer.py): for members of a manufacturer, about
    # its own products and batches (the competitor has its own lists, without ours); a regulator reads the
    # batch page too; anyone else is told nothing exists, and anonymous visitors are sent to sign in. The
    # table posts JSON, which a form reads as empty: an empty registration and a status change without a
    # reason are 400s for the manufacturer; the regulator sees the batch but may not change it.
    "manufacturer-products": anyone(GET=members(404, manufacturer=200, competitor=200, anonymous=302)),
    "manufacturer-batches": anyone(GET=members(404, manufacturer=200, competitor=200, anonymous=302)),
    "manufacturer-batch-new": anyone(
        GET=members(404, manufacturer=200, competitor=200, anonymous=302),
        POST=members(404, manufacturer=400, competitor=400, anonymous=302),
    ),
    "manufacturer-batch": anyone(GET=members(404, manufacturer=200, regulator=200, anonymous=302)),
    "manufacturer-batch-quarantine": anyone(POST=members(404, manufacturer=400, regulator=403, anonymous=302)),
    "manufacturer-batch-release": anyone(POST=members(404, manufacturer=400, regulator=403, anonymous=302)),
    "manufacturer-batch-labels": anyone(GET=members(404, manufacturer=200, anonymous=302)),
    # The regulator's pages: other members are told they do not exist, anonymous visitors asked to sign in.
    "regulator-overview": anyone(GET=members(404, regulator=200, anonymous=302)),
    "regulator-ledger": anyone(GET=members(404, regulator=200, anonymous=302)),
    # Recalls and traces (traceability/pages/recalls.py). The world holds the competitor's voluntary recall
    # of its own batch: the competitor (its notice) and regulators see it, everyone else is told it does not
    # exist. The table posts JSON, which a form reads as empty: 400s. Closing with no reason: 400 for the
    # regulator, 403 for the competitor, who may see the recall but not close it.
    "recalls": anyone(GET=members(200, anonymous=302)),
    "recall-new": anyone(
        GET=members(404, manufacturer=200, competitor=200, regulator=200, anonymous=302),
        POST=members(404, manufacturer=400, competitor=400, regulator=400, anonymous=302),
    ),
    "recall-detail": anyone(GET=members(404, competitor=200, regulator=200, anonymous=302)),
    "recall-acknowledge": anyone(POST=members(404, competitor=400, regulator=400, anonymous=302)),
    "recall-close": anyone(POST=members(404, competitor=403, regulator=400, anonymous=302)),
    "batch-trace": anyone(GET=members(404, manufacturer=200, regulator=200, anonymous=302)),
    # Consumer pages at the GS1 Digital Link paths: public.
    "digital-link-gtin": anyone(GET=everyone(200)),
    "digital-link-lot": anyone(GET=everyone(200)),
    "digital-link-serial": anyone(GET=everyone(200)),
    "digital-link-other": anyone(GET=everyone(400)),  # any other path under /01/: malformed, 400 with the reason
    "login": anyone(GET=everyone(200), POST=everyone(200), PUT=everyone(200)),
    "logout": anyone(POST=everyone(302)),
    # The whole admin/ subtree is one row, checked on /admin/: nobody in the
    # world is staff, so every method sends every persona to the admin login.
    "admin/": {method: everyone(302) for method in METHODS},
    # Identity. The token endpoint takes no authentication: the manufacturer's
    # credentials in the body earn a token whoever sends them. DELETE revokes
    # the token it is sent with, and a session is no token: 401 for all.
    "api-token": anyone(POST=everyone(200), DELETE=everyone(401)),
    "api-me": members_only(GET=members(200)),
    # The directory: every member reads every organisation and site.
    "api-organisation-list": members_only(GET=members(200)),
    "api-organisation-detail": members_only(GET=members(200)),
    # Only an administrator adds a site, and every persona is an operator.
    "api-site-list": members_only(GET=members(200), POST=members(403)),
    "api-site-detail": members_only(GET=members(200)),
    # Any manufacturer registers its own product; nobody else registers any.
    "api-product-list": members_only(GET=members(200), POST=members(403, manufacturer=201, competitor=201)),
    "api-product-detail": members_only(GET=MANUFACTURERS_OBJECT),
    # A batch of the manufacturer's product: the manufacturer registers it;
    # those who see the product (carrier, pharmacy, regulator) are refused;
    # those who do not see it are told no product of theirs has that GTIN.
    "api-batch-list": members_only(GET=members(200), POST=members(403, manufacturer=201, competitor=400, carrier2=400)),
    "api-batch-detail": members_only(GET=MANUFACTURERS_OBJECT),
    "api-batch-serials": members_only(GET=MANUFACTURERS_OBJECT),
    "api-batch-qr": members_only(GET=MANUFACTURERS_OBJECT),
    "api-serial-qr": members_only(GET=MANUFACTURERS_OBJECT),
    # Five units of the manufacturer's batch from its site to the pharmacy's:
    # the manufacturer plans it; the regulator ships nothing; those who cannot
    # see the batch are told so; the carrier and pharmacy see it but the
    # origin is not their site (400 naming "origin").
    "api-shipment-list": members_only(
        GET=members(200), POST=members(400, manufacturer=201, regulator=403, competitor=400, carrier2=400)
    ),
    "api-shipment-detail": members_only(GET=MANUFACTURERS_OBJECT),
    # On the planned shipment: only its shipper dispatches it.
    "api-shipment-dispatch": members_only(POST=members(403, manufacturer=200, **OUTSIDERS)),
    # On the shipment in transit: only the custodian (the carrier) hands it on, to carrier2.
    "api-shipment-handover": members_only(POST=members(403, carrier=200, **OUTSIDERS)),
    # On the shipment in transit: only the consignee receives it.
    "api-shipment-receive": members_only(POST=members(403, pharmacy=200, **OUTSIDERS)),
    # Monitoring. Loggers: any member but a regulator registers its own; the
    # manufacturer's logger (on the shipment in transit) is seen by its owner
    # and the regulator. Only the owner puts it on a shipment; the shipment's
    # other parties see the shipment but not the logger (400 naming device_id).
    "ingest-readings": anyone(POST=everyone(400)),  # the message is the credential; {} is no message
    "api-device-list": members_only(GET=members(200), POST=members(201, regulator=403)),
    "api-device-detail": members_only(GET=members(404, manufacturer=200, regulator=200)),
    "api-shipment-devices": members_only(POST=members(400, manufacturer=201, **OUTSIDERS)),
    # Readings, excursions and alerts of the shipment in transit: its parties and the regulator.
    "api-shipment-readings": members_only(GET=MANUFACTURERS_OBJECT),
    "api-reading-proof": members_only(GET=MANUFACTURERS_OBJECT),
    "api-shipment-excursions": members_only(GET=MANUFACTURERS_OBJECT),
    "api-alert-list": members_only(GET=members(200)),
    "api-alert-detail": members_only(GET=MANUFACTURERS_OBJECT),
    # The regulator sees alerts but the shipment's parties handle them.
    "api-alert-acknowledge": members_only(POST=members(200, regulator=403, **OUTSIDERS)),
    "api-alert-resolve": members_only(POST=members(200, regulator=403, **OUTSIDERS)),
    # Recalls: a manufacturer recalls its own batch, a regulator any; the carrier and pharmacy see the batch
    # but may not recall it (403); those who do not see it are told no such batch exists (400 naming items).
    # The competitor's recall (see the pages above): its holder acknowledges, only a regulator closes.
    "api-recall-list": members_only(
        GET=members(200), POST=members(403, manufacturer=201, regulator=201, competitor=400, carrier2=400)
    ),
    "api-recall-preview": members_only(
        POST=members(403, manufacturer=200, regulator=200, competitor=400, carrier2=400)
    ),
    "api-recall-detail": members_only(GET=members(404, competitor=200, regulator=200)),
    "api-recall-acknowledge": members_only(POST=members(404, competitor=200, regulator=403)),
    "api-recall-close": members_only(POST=members(404, competitor=403, regulator=200)),
    # Traces: a batch's for its manufacturer and regulators; a shipment's for whoever sees it; a site's
    # (the manufacturer's) for its organisation and regulators.
    "api-batch-trace": members_only(GET=members(404, manufacturer=200, regulator=200)),
    # Dispensing: only a dispenser dispenses (403 for the others who see the batch); the pharmacy holds
    # none of it yet (nothing delivered in the world): 400.
    "api-batch-dispense": members_only(POST=members(403, pharmacy=400, competitor=404, carrier2=404)),
    "api-shipment-trace": members_only(GET=MANUFACTURERS_OBJECT),
    "api-site-trace": members_only(GET=members(404, manufacturer=200, regulator=200)),
    # EPCIS 2.0: every member queries the events it may see; capture refuses the table's empty body
    # (not an EPCISDocument: 400) for every member, since every persona may write.
    "api-epcis-events": members_only(GET=members(200)),
    "api-epcis-capture": members_only(POST=members(400)),
    # /metrics with no METRICS_KEY configured (the tests' world) does not exist, for any method.
    "metrics": {method: everyone(404) for method in METHODS},
    # The staff status page: nobody in the world is staff, so every method sends every persona to the admin login.
    "ops-status": {method: everyone(302) for method in METHODS},
    # The API's description is public.
    "api-schema": anyone(GET=everyone(200)),
    "api-docs": anyone(GET=everyone(200)),
    # The ledger (spec/ledger.md): checkpoints, keys and proofs are public, hashes
    # only; an entry is readable by its parties and regulators, public types by
    # anyone. The entry in the table is the planned shipment's "shipment.created".
    "ledger-checkpoint": anyone(GET=everyone(200)),
    "ledger-keys": anyone(GET=everyone(200)),
    "ledger-entry-list": anyone(GET=everyone(200)),
    "ledger-entry-detail": anyone(
        GET={**everyone(200), "competitor": 404, "carrier2": 404, "anonymous": 404},
    ),
    "ledger-proof-inclusion": anyone(GET=everyone(200)),
    "ledger-proof-consistency": anyone(GET=everyone(200)),
}


# The world -------------------------------------------------------------------


@dataclass
class World:
    personas: dict[str, Persona]
    product: Product
    batch: Batch
    planned: Shipment
    in_transit: Shipment
    competitor_product: Product
    competitor_batch: Batch
    competitor_recall: Recall

    def __getitem__(self, name: str) -> Persona:
        return self.personas[name]


def register_stock(persona: Persona, *, lot: str = "L1", serials: int = 3) -> Batch:
    """A refrigerated product of the persona's organisation and one batch of 100 units, via the services."""
    today = timezone.localdate()
    product = services.product_register(
        actor=persona.user,
        gtin=factories.gtin(),
        name=f"{persona.name.title()} vaccine",
        dosage_form="suspension for injection",
        storage_profile="2-8C",
    )
    return services.batch_register(
        actor=persona.user,
        product=product,
        lot=lot,
        manufactured_on=today - datetime.timedelta(days=30),
        expires_on=today + datetime.timedelta(days=365),
        quantity=100,
        serial_count=serials,
    )


def plan_shipment(shipper: Persona, carrier: Persona, consignee: Persona, batch: Batch, quantity: int = 10) -> Shipment:
    return services.shipment_create(
        actor=shipper.user,
        carrier=carrier.organisation,
        consignee=consignee.organisation,
        origin=shipper.site,
        destination=consignee.site,
        items=[services.ItemSpec(batch=batch, quantity=quantity)],
    )


def build_world(personas: dict[str, Persona]) -> World:
    manufacturer, carrier, pharmacy = personas["manufacturer"], personas["carrier"], personas["pharmacy"]
    batch = register_stock(manufacturer)
    planned = plan_shipment(manufacturer, carrier, pharmacy, batch)
    in_transit = services.shipment_dispatch(
        actor=manufacturer.user,
        shipment=plan_shipment(manufacturer, carrier, pharmacy, batch),
        occurred_at=timezone.now() - datetime.timedelta(hours=1),
    )
    competitor_batch = register_stock(personas["competitor"], lot="C1")
    competitor_recall = services.recall_issue(
        actor=personas["competitor"].user,
        password=PASSWORD,
        items=[services.RecallItemSpec(competitor_batch)],
        classification="II",
        depth="retail",
        reason="Label misprint.",
        instructions="Return to the manufacturer.",
    )
    watch(manufacturer, in_transit)
    ledger.ledger_commit()
    return World(
        personas=personas,
        product=batch.product,
        batch=batch,
        planned=planned,
        in_transit=in_transit,
        competitor_product=competitor_batch.product,
        competitor_batch=competitor_batch,
        competitor_recall=competitor_recall,
    )


def watch(owner: Persona, shipment: Shipment) -> None:
    """A logger of the owner on the shipment reports 26 °C: a critical alert, committed readings."""
    key = Ed25519PrivateKey.generate()
    device, _ = ingest.device_register(
        device_id="LOG-M1", organisation=owner.organisation, public_key=key.public_key().public_bytes_raw()
    )
    ingest.device_assign(actor=owner.user, device=device, shipment=shipment, starts_at=shipment.dispatched_at)
    now = timezone.now()
    records = [{"n": "temp", "u": "Cel", "t": (now - datetime.timedelta(minutes=m)).timestamp(), "v": 26.0 - m / 100}
               for m in (3, 2, 1)]  # fmt: skip
    rows = ingest.inbox_receive([ingest.RawMessage(protocol.message(key, "LOG-M1", 1, records), "mqtt")], enqueue=False)
    ingest.messages_process([row.pk for row in rows])
    evaluation.shipment_evaluate(shipment.pk)
    ingest.readings_commit(shipment)


@pytest.fixture
def world(personas: dict[str, Persona]) -> World:
    return build_world(personas)


def _today_plus(days: int) -> str:
    return (timezone.localdate() + datetime.timedelta(days=days)).isoformat()


def paths(world: World) -> dict[str, str]:
    """The URL each table row is checked on: the manufacturer's objects, in the state the row needs."""
    planned_created = Entry.objects.get(type="shipment.created", subject=f"shipment:{world.planned.reference}")
    reading = Reading.objects.filter(shipment=world.in_transit).first()
    alert = Alert.objects.filter(shipment=world.in_transit, severity="critical").get()
    batch, serial = world.batch.pk, world.batch.serials.values_list("serial", flat=True)[0]
    return {
        "home": reverse("home"),
        "health": reverse("health"),
        "logistics-board": reverse("logistics-board"),
        "logistics-board-json": reverse("logistics-board-json"),
        "logistics-alerts": reverse("logistics-alerts"),
        "logistics-alert-acknowledge": reverse("logistics-alert-acknowledge", args=[alert.pk]),
        "logistics-alert-resolve": reverse("logistics-alert-resolve", args=[alert.pk]),
        "logistics-shipment": reverse("logistics-shipment", args=[world.in_transit.pk]),
        "logistics-dispense": reverse("logistics-dispense"),
        "manufacturer-products": reverse("manufacturer-products"),
        "manufacturer-batches": reverse("manufacturer-batches"),
        "manufacturer-batch-new": reverse("manufacturer-batch-new"),
        "manufacturer-batch": reverse("manufacturer-batch", args=[batch]),
        "manufacturer-batch-quarantine": reverse("manufacturer-batch-quarantine", args=[batch]),
        "manufacturer-batch-release": reverse("manufacturer-batch-release", args=[batch]),
        "manufacturer-batch-labels": reverse("manufacturer-batch-labels", args=[batch]),
        "regulator-overview": reverse("regulator-overview"),
        "regulator-ledger": reverse("regulator-ledger"),
        "recalls": reverse("recalls"),
        "recall-new": reverse("recall-new"),
        "recall-detail": reverse("recall-detail", args=[world.competitor_recall.pk]),
        "recall-acknowledge": reverse("recall-acknowledge", args=[world.competitor_recall.pk]),
        "recall-close": reverse("recall-close", args=[world.competitor_recall.pk]),
        "batch-trace": reverse("batch-trace", args=[batch]),
        "api-epcis-events": reverse("api-epcis-events"),
        "api-epcis-capture": reverse("api-epcis-capture"),
        "metrics": reverse("metrics"),
        "ops-status": reverse("ops-status"),
        "api-recall-list": reverse("api-recall-list"),
        "api-recall-preview": reverse("api-recall-preview"),
        "api-recall-detail": reverse("api-recall-detail", args=[world.competitor_recall.pk]),
        "api-recall-acknowledge": reverse("api-recall-acknowledge", args=[world.competitor_recall.pk]),
        "api-recall-close": reverse("api-recall-close", args=[world.competitor_recall.pk]),
        "api-batch-trace": reverse("api-batch-trace", args=[batch]),
        "api-batch-dispense": reverse("api-batch-dispense", args=[batch]),
        "api-shipment-trace": reverse("api-shipment-trace", args=[world.in_transit.pk]),
        "api-site-trace": reverse("api-site-trace", args=[world["manufacturer"].site.pk]),
        "digital-link-gtin": reverse("digital-link-gtin", args=[world.product.gtin]),
        "digital-link-lot": reverse("digital-link-lot", args=[world.product.gtin, world.batch.lot]),
        "digital-link-serial": reverse("digital-link-serial", args=[world.product.gtin, world.batch.lot, serial]),
        "digital-link-other": f"/01/{world.product.gtin}/17/271231",
        "login": reverse("login"),
        "logout": reverse("logout"),
        "admin/": "/admin/",
        "api-token": reverse("api-token"),
        "api-me": reverse("api-me"),
        "api-organisation-list": reverse("api-organisation-list"),
        "api-organisation-detail": reverse("api-organisation-detail", args=[world["manufacturer"].organisation.pk]),
        "api-site-list": reverse("api-site-list"),
        "api-site-detail": reverse("api-site-detail", args=[world["manufacturer"].site.pk]),
        "api-product-list": reverse("api-product-list"),
        "api-product-detail": reverse("api-product-detail", args=[world.product.pk]),
        "api-batch-list": reverse("api-batch-list"),
        "api-batch-detail": reverse("api-batch-detail", args=[batch]),
        "api-batch-serials": reverse("api-batch-serials", args=[batch]),
        "api-batch-qr": reverse("api-batch-qr", args=[batch, "svg"]),
        "api-serial-qr": reverse("api-serial-qr", args=[batch, serial, "png"]),
        "api-shipment-list": reverse("api-shipment-list"),
        "api-shipment-detail": reverse("api-shipment-detail", args=[world.in_transit.pk]),
        "api-shipment-dispatch": reverse("api-shipment-dispatch", args=[world.planned.pk]),
        "api-shipment-handover": reverse("api-shipment-handover", args=[world.in_transit.pk]),
        "api-shipment-receive": reverse("api-shipment-receive", args=[world.in_transit.pk]),
        "api-schema": reverse("api-schema"),
        "api-docs": reverse("api-docs"),
        "ledger-checkpoint": reverse("ledger-checkpoint"),
        "ledger-keys": reverse("ledger-keys"),
        "ledger-entry-list": reverse("ledger-entry-list"),
        "ledger-entry-detail": reverse("ledger-entry-detail", args=[planned_created.seq]),
        "ledger-proof-inclusion": reverse("ledger-proof-inclusion") + "?seq=0",
        "ledger-proof-consistency": reverse("ledger-proof-consistency") + "?first=1",
        "ingest-readings": reverse("ingest-readings"),
        "api-device-list": reverse("api-device-list"),
        "api-device-detail": reverse("api-device-detail", args=["LOG-M1"]),
        "api-shipment-devices": reverse("api-shipment-devices", args=[world.in_transit.pk]),
        "api-shipment-readings": reverse("api-shipment-readings", args=[world.in_transit.pk]),
        "api-reading-proof": reverse("api-reading-proof", args=[world.in_transit.pk, reading.pk]),
        "api-shipment-excursions": reverse("api-shipment-excursions", args=[world.in_transit.pk]),
        "api-alert-list": reverse("api-alert-list"),
        "api-alert-detail": reverse("api-alert-detail", args=[alert.pk]),
        "api-alert-acknowledge": reverse("api-alert-acknowledge", args=[alert.pk]),
        "api-alert-resolve": reverse("api-alert-resolve", args=[alert.pk]),
    }


# The body sent with POST, PUT and PATCH: one a permitted persona succeeds with.
BODIES: dict[str, Callable[[World], dict[str, Any]]] = {
    "api-token": lambda w: {"username": "manufacturer", "password": PASSWORD},
    "api-site-list": lambda w: {"name": "Depot", "gln": factories.gln(), "city": "Basel", "country": "CH"},
    "api-product-list": lambda w: {
        "gtin": factories.gtin(),
        "name": "Flu vaccine",
        "dosage_form": "suspension for injection",
        "storage_profile": "2-8C",
    },
    "api-batch-list": lambda w: {
        "gtin": w.product.gtin,
        "lot": "NEW1",
        "manufactured_on": _today_plus(-1),
        "expiry": _today_plus(365),
        "quantity": 10,
    },
    "api-shipment-list": lambda w: {
        "carrier": w["carrier"].organisation.gln,
        "consignee": w["pharmacy"].organisation.gln,
        "origin": w["manufacturer"].site.gln,
        "destination": w["pharmacy"].site.gln,
        "items": [{"batch": w.batch.pk, "quantity": 5}],
    },
    "api-shipment-dispatch": lambda w: {},
    "api-shipment-handover": lambda w: {"to_organisation": w["carrier2"].organisation.gln},
    "api-shipment-receive": lambda w: {"accept": True},
    "api-device-list": lambda w: {"device_id": "LOG-NEW", "public_key": "11" * 32},
    "api-shipment-devices": lambda w: {"device_id": "LOG-M1"},
    "api-recall-list": lambda w: {
        "items": [{"batch": w.batch.pk}],
        "classification": "I",
        "depth": "consumer",
        "reason": "Particles in vials.",
        "instructions": "Quarantine and return.",
        "password": PASSWORD,
    },
    "api-recall-preview": lambda w: {"items": [{"batch": w.batch.pk}], "depth": "consumer"},
    "api-batch-dispense": lambda w: {
        "serials": list(w.batch.serials.values_list("serial", flat=True)[:1]),
        "site": w["pharmacy"].site.gln,
    },
    "api-recall-acknowledge": lambda w: {"units_found": 100},
    "api-recall-close": lambda w: {"note": "All units accounted for."},
    "api-alert-acknowledge": lambda w: {"comment": "Checking the reefer unit."},
    "api-alert-resolve": lambda w: {"comment": "Unit repaired; QA informed."},
}


def call(user: AbstractBaseUser | None, method: str, path: str, body: dict[str, Any] | None = None) -> int:
    """The status of one request by a session-signed-in user (None: anonymous), with its writes rolled back."""
    # The token endpoint is throttled per client; the matrix would trip it.
    cache.clear()
    with transaction.atomic():
        client = APIClient(raise_request_exception=False)
        if user is not None:
            client.force_login(user)
        if method == "GET":
            response = client.get(path)
        else:
            response = client.generic(method, path, json.dumps(body or {}), content_type="application/json")
        transaction.set_rollback(True)
    return response.status_code


# The matrix -------------------------------------------------------------------


def url_keys(patterns: list[URLPattern | URLResolver] | None = None, prefix: str = "") -> set[str]:
    """Every URL pattern's name (its route when unnamed); the admin site counts as the one key "admin/"."""
    keys: set[str] = set()
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            keys |= {"admin/"} if pattern.app_name == "admin" else url_keys(pattern.url_patterns, route)
        else:
            keys.add(pattern.name or route)
    return keys


def test_every_url_is_in_the_table() -> None:
    keys = url_keys()
    assert not keys - set(TABLE), f"URLs missing from the access table: {sorted(keys - set(TABLE))}"
    assert not set(TABLE) - keys, f"table rows for URLs that no longer exist: {sorted(set(TABLE) - keys)}"
    for name, row in TABLE.items():
        assert set(row) == set(METHODS), name
        assert all(set(cells) == set(EVERYONE) for cells in row.values()), name


@pytest.mark.parametrize("name", TABLE)
def test_access_matches_the_table(world: World, name: str) -> None:
    path = paths(world)[name]
    body = BODIES.get(name, lambda w: {})(world)
    mismatches = []
    for method, cells in TABLE[name].items():
        for persona, expected in cells.items():
            user = None if persona == "anonymous" else world[persona].user
            got = call(user, method, path, body)
            if got != expected:
                mismatches.append(f"{method} {path} as {persona}: expected {expected}, got {got}")
    assert not mismatches, "\n".join(mismatches)


def test_admin_sends_non_staff_to_its_login(world: World) -> None:
    for persona in SIGNED_IN:
        client = APIClient()
        client.force_login(world[persona].user)
        response = client.get("/admin/")
        assert response.status_code == 302
        assert response["Location"].startswith("/admin/login/"), persona


# What each persona finds in the lists ---------------------------------------


def listed(persona: Persona, url_name: str, key: str) -> set[Any]:
    response = persona.client().get(reverse(url_name), {"page_size": 500})
    assert response.status_code == 200
    return {row[key] for row in response.json()["results"]}


def test_lists_show_each_persona_what_it_may_see(world: World) -> None:
    ours, theirs = world.product.gtin, world.competitor_product.gtin
    shipments = {world.planned.reference, world.in_transit.reference}
    expected = {
        "manufacturer": ({ours}, shipments),
        "competitor": ({theirs}, set()),
        "carrier": ({ours}, shipments),
        "carrier2": (set(), set()),
        "pharmacy": ({ours}, shipments),
        "regulator": ({ours, theirs}, shipments),
    }
    for name, (gtins, references) in expected.items():
        persona = world[name]
        assert listed(persona, "api-product-list", "gtin") == gtins, name
        assert listed(persona, "api-batch-list", "gtin") == gtins, name
        assert listed(persona, "api-shipment-list", "reference") == references, name


def test_the_competitors_objects_are_its_own_and_the_regulators(world: World) -> None:
    theirs = world.competitor_batch
    urls = [
        reverse("api-product-detail", args=[theirs.product.pk]),
        reverse("api-batch-detail", args=[theirs.pk]),
        reverse("api-batch-serials", args=[theirs.pk]),
        reverse("api-batch-qr", args=[theirs.pk, "svg"]),
    ]
    for name in SIGNED_IN:
        expected = 200 if name in ("competitor", "regulator") else 404
        for url in urls:
            assert world[name].client().get(url).status_code == expected, (name, url)


def test_the_directory_lists_every_organisation_and_site_to_every_member(world: World) -> None:
    glns = {persona.organisation.gln for persona in world.personas.values()}
    site_glns = set(Site.objects.values_list("gln", flat=True))
    for persona in world.personas.values():
        assert listed(persona, "api-organisation-list", "gln") == glns, persona.name
        assert listed(persona, "api-site-list", "gln") == site_glns, persona.name


def test_a_carrier_that_held_the_goods_still_sees_the_shipment(world: World) -> None:
    carrier, carrier2 = world["carrier"], world["carrier2"]
    detail = reverse("api-shipment-detail", args=[world.in_transit.pk])
    assert carrier2.client().get(detail).status_code == 404

    services.custody_transfer(actor=carrier.user, shipment=world.in_transit, to_organisation=carrier2.organisation)
    services.custody_transfer(actor=carrier2.user, shipment=world.in_transit, to_organisation=carrier.organisation)

    # carrier2 is neither carrier nor custodian any more; it once held the goods.
    assert carrier2.client().get(detail).status_code == 200
    assert listed(carrier2, "api-batch-list", "gtin") == {world.product.gtin}
    assert listed(carrier2, "api-shipment-list", "reference") == {world.in_transit.reference}


# Roles and identity -------------------------------------------------------------


def member_of(persona: Persona, role: str, username: str) -> Persona:
    membership = factories.MembershipFactory(organisation=persona.organisation, role=role, user__username=username)
    return Persona(username, membership.user, persona.organisation, persona.site)


def test_a_viewer_reads_but_cannot_write_what_an_operator_of_its_organisation_can(world: World) -> None:
    viewer = member_of(world["manufacturer"], Membership.Role.VIEWER, "manufacturer-viewer")
    dispatch = reverse("api-shipment-dispatch", args=[world.planned.pk])

    assert viewer.client().get(reverse("api-shipment-detail", args=[world.planned.pk])).status_code == 200
    response = viewer.client().post(dispatch, {}, format="json")
    assert response.status_code == 403
    assert "read-only" in response.json()["detail"]
    response = viewer.client().post(reverse("api-product-list"), BODIES["api-product-list"](world), format="json")
    assert response.status_code == 403
    world.planned.refresh_from_db()
    assert world.planned.status == Shipment.Status.PLANNED
    assert Product.objects.count() == 2

    assert world["manufacturer"].client().post(dispatch, {}, format="json").status_code == 200


def test_an_administrator_adds_a_site_to_its_own_organisation(world: World) -> None:
    admin = member_of(world["manufacturer"], Membership.Role.ADMIN, "manufacturer-admin")
    body = BODIES["api-site-list"](world)

    response = admin.client().post(reverse("api-site-list"), body, format="json")

    assert response.status_code == 201, response.json()
    site = Site.objects.get(gln=body["gln"])
    assert site.organisation == admin.organisation
    assert response.json()["organisation"]["gln"] == admin.organisation.gln


def test_the_token_endpoint_issues_a_token_that_signs_requests_in(world: World) -> None:
    client = APIClient()
    response = client.post(reverse("api-token"), {"username": "pharmacy", "password": PASSWORD}, format="json")
    assert response.status_code == 200
    key = response.json()["token"]
    assert ApiToken.objects.get(digest=ApiToken.digest_of(key)).user == world["pharmacy"].user

    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    assert client.get(reverse("api-me")).json()["username"] == "pharmacy"
    assert client.get(reverse("api-shipment-detail", args=[world.in_transit.pk])).status_code == 200
    assert client.get(reverse("api-product-detail", args=[world.competitor_product.pk])).status_code == 404

    client.credentials(HTTP_AUTHORIZATION=f"Token {key[:-1]}{'y' if key.endswith('x') else 'x'}")
    assert client.get(reverse("api-me")).status_code == 401


def test_the_token_endpoint_refuses_a_wrong_password(world: World) -> None:
    response = APIClient().post(reverse("api-token"), {"username": "pharmacy", "password": "wrong"}, format="json")
    assert response.status_code == 400
    assert response.json() == {"non_field_errors": ["Unable to sign in with these credentials."]}
    assert not ApiToken.objects.exists()


def test_me_says_who_i_am_and_for_whom_i_work(world: World) -> None:
    carrier = world["carrier"]

    response = carrier.client().get(reverse("api-me"))

    assert response.status_code == 200
    assert response.json() == {
        "username": "carrier",
        "role": "operator",
        "organisation": {"name": "Carrier", "kind": "logistics", "gln": carrier.organisation.gln},
    }
