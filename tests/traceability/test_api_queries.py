"""List endpoints cost the same number of queries for 1 row as for 50 (a full page).

Each list is read with a token, as a real client would (so nothing is cached on
a user object between requests), by the regulator (who sees everything) and by
the manufacturer (whose view is filtered by the visibility subqueries). Rows
are made through the services, so shipments come with their items, contract
rules and custody events.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from tests import factories
from tests.conftest import Persona
from traceability import services
from traceability.models import Batch, Organisation, Product, SerialNumber

Kind = Organisation.Kind
READERS = ("regulator", "manufacturer")
PAGE = 50  # the default page size: 50 rows fit on the first page


# Making rows ---------------------------------------------------------------------


def product(personas: dict[str, Persona], index: int = 0) -> Product:
    return services.product_register(
        actor=personas["manufacturer"].user,
        gtin=factories.gtin(),
        name=f"Vaccine {index}",
        dosage_form="suspension for injection",
        storage_profile="2-8C",
    )


def batch(personas: dict[str, Persona], of: Product, index: int = 0, serials: int = 2) -> Batch:
    today = timezone.localdate()
    return services.batch_register(
        actor=personas["manufacturer"].user,
        product=of,
        lot=f"L{index}",
        manufactured_on=today - datetime.timedelta(days=10),
        expires_on=today + datetime.timedelta(days=300),
        quantity=1000,
        serial_count=serials,
    )


def add_organisations(personas: dict[str, Persona], count: int) -> None:
    factories.OrganisationFactory.create_batch(count, kind=Kind.WHOLESALER)


def add_sites(personas: dict[str, Persona], count: int) -> None:
    factories.SiteFactory.create_batch(count, organisation=personas["carrier"].organisation, country="DE")


def add_products(personas: dict[str, Persona], count: int) -> None:
    start = Product.objects.count()
    for index in range(start, start + count):
        product(personas, index)


def add_batches(personas: dict[str, Persona], count: int) -> None:
    made = Product.objects.first() or product(personas)
    start = Batch.objects.count()
    for index in range(start, start + count):
        batch(personas, made, index)


def serial_batch(personas: dict[str, Persona]) -> Batch:
    return Batch.objects.first() or batch(personas, product(personas), serials=0)


def add_serials(personas: dict[str, Persona], count: int) -> None:
    lot = serial_batch(personas)
    start = lot.serials.count()
    SerialNumber.objects.bulk_create(
        SerialNumber(product=lot.product, batch=lot, serial=f"S{index:05d}") for index in range(start, start + count)
    )


def add_shipments(personas: dict[str, Persona], count: int) -> None:
    """Delivered shipments of two batches: dispatched, handed from carrier to carrier2, received."""
    manufacturer, carrier, carrier2, pharmacy = (
        personas[n] for n in ("manufacturer", "carrier", "carrier2", "pharmacy")
    )
    stock = list(Batch.objects.order_by("id")[:2])
    if not stock:
        made = product(personas)
        stock = [batch(personas, made, 0, serials=0), batch(personas, made, 1, serials=0)]
    for _ in range(count):
        shipment = services.shipment_create(
            actor=manufacturer.user,
            carrier=carrier.organisation,
            consignee=pharmacy.organisation,
            origin=manufacturer.site,
            destination=pharmacy.site,
            items=[services.ItemSpec(batch=lot, quantity=1) for lot in stock],
        )
        services.shipment_dispatch(actor=manufacturer.user, shipment=shipment)
        services.custody_transfer(actor=carrier.user, shipment=shipment, to_organisation=carrier2.organisation)
        services.shipment_receive(actor=pharmacy.user, shipment=shipment, accept=True)


@dataclass
class ListEndpoint:
    add: Callable[[dict[str, Persona], int], None]
    url: Callable[[dict[str, Persona]], str]
    params: dict[str, str]  # narrows the list to the rows ``add`` makes


LISTS = {
    "organisations": ListEndpoint(
        add_organisations, lambda p: reverse("api-organisation-list"), {"kind": "wholesaler"}
    ),
    "sites": ListEndpoint(add_sites, lambda p: reverse("api-site-list"), {"country": "DE"}),
    "products": ListEndpoint(add_products, lambda p: reverse("api-product-list"), {}),
    "batches": ListEndpoint(add_batches, lambda p: reverse("api-batch-list"), {}),
    "batch serials": ListEndpoint(add_serials, lambda p: reverse("api-batch-serials", args=[serial_batch(p).pk]), {}),
    "shipments": ListEndpoint(add_shipments, lambda p: reverse("api-shipment-list"), {}),
}


# Counting ---------------------------------------------------------------------------


def reader(persona: Persona) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {services.api_token_issue(user=persona.user).key}")
    # A token's first use records when it was used (one UPDATE, then none for a minute): spend it here, so that
    # the reads compared below cost the same.
    assert client.get(reverse("api-me")).status_code == 200
    return client


def queries(client: APIClient, url: str, params: dict[str, str], rows: int) -> list[str]:
    """The SQL one read of the list runs; checks that the list holds ``rows`` rows."""
    with CaptureQueriesContext(connection) as captured:
        response = client.get(url, params)
    assert response.status_code == 200, response.content
    assert response.json()["count"] == rows
    assert len(response.json()["results"]) == rows
    return [query["sql"] for query in captured.captured_queries]


def listing(label: str, sql: list[str]) -> str:
    return f"{label}: {len(sql)} queries\n" + "\n".join(f"  {statement}" for statement in sql)


@pytest.mark.parametrize("name", LISTS)
def test_a_list_costs_the_same_queries_for_one_row_as_for_a_page(personas: dict[str, Persona], name: str) -> None:
    endpoint = LISTS[name]
    clients = {who: reader(personas[who]) for who in READERS}

    endpoint.add(personas, 1)
    one = {who: queries(client, endpoint.url(personas), endpoint.params, 1) for who, client in clients.items()}
    endpoint.add(personas, PAGE - 1)
    many = {who: queries(client, endpoint.url(personas), endpoint.params, PAGE) for who, client in clients.items()}

    for who in READERS:
        assert len(one[who]) == len(many[who]), (
            f"{name} as the {who}\n{listing('1 row', one[who])}\n{listing(f'{PAGE} rows', many[who])}"
        )
