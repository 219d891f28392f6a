"""The logistics pages as their users meet them: the live board, the alert inbox and a shipment's page.

Readings arrive the way loggers send them (signed messages through the ingest
services) and are evaluated by the monitoring workers' function, so the board,
the alerts and the chart show what the real path produces.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from iot_ingest import evaluation, protocol
from iot_ingest import services as ingest
from ledger import merkle
from ledger import services as ledger
from ledger.models import Checkpoint, Entry, PendingEvent
from tests.conftest import Persona, make_persona
from tests.factories import BatchFactory, ProductFactory, UserFactory
from traceability import coldchain, services
from traceability.models import Alert, Batch, Membership, Shipment
from traceability.pages import shipment_ledger

pytestmark = pytest.mark.django_db
MINUTE = datetime.timedelta(minutes=1)
EVERY = 5 * MINUTE


def signed_in(persona: Persona) -> Client:
    client = Client()
    client.force_login(persona.user)
    return client


class Logger:
    """A logger of ``owner`` riding with the shipment, reporting every 5 minutes, readings ending now."""

    def __init__(
        self,
        owner: Persona,
        shipment: Shipment,
        device_id: str = "LOG-P1",
        *,
        starts_at: datetime.datetime | None = None,
    ) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.device_id = device_id
        device, _ = ingest.device_register(
            device_id=device_id, organisation=owner.organisation, public_key=self.key.public_key().public_bytes_raw()
        )
        ingest.device_assign(
            actor=owner.user, device=device, shipment=shipment, starts_at=starts_at or shipment.dispatched_at
        )
        self.shipment = shipment
        self.seq = 0

    def report(self, temperatures: list[float], *, last_at: datetime.datetime | None = None) -> list[Alert]:
        """Readings every 5 minutes up to ``last_at`` (a minute ago), delivered and evaluated; the alerts raised."""
        last_at = last_at or timezone.now() - MINUTE
        first = last_at - EVERY * (len(temperatures) - 1)
        records = [
            {"n": "temp", "u": "Cel", "t": (first + EVERY * i).timestamp(), "v": v} for i, v in enumerate(temperatures)
        ]
        raws = []
        for start in range(0, len(records), 12):
            self.seq += 1
            raws.append(protocol.message(self.key, self.device_id, self.seq, records[start : start + 12]))
        rows = ingest.inbox_receive([ingest.RawMessage(raw, "mqtt") for raw in raws], enqueue=False)
        ingest.messages_process([row.pk for row in rows])
        return evaluation.shipment_evaluate(self.shipment.pk)


def warm_day() -> list[float]:
    """5 °C for an hour, 9.5 °C for 11 hours (a failed reefer), then 5 °C for half an hour: 150 readings."""
    return [5.0] * 12 + [9.5] * 132 + [5.0] * 6


@pytest.fixture
def batch(manufacturer: Persona) -> Batch:
    return BatchFactory(product=ProductFactory(manufacturer=manufacturer.organisation, stability_budget_minutes=240))


def ship(manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch, *, hours: float = 12.5) -> Shipment:
    """In transit since ``hours`` ago: as long as 150 readings every 5 minutes ending now (``warm_day``)."""
    planned = services.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[services.ItemSpec(batch=batch, quantity=10)],
    )
    return services.shipment_dispatch(
        actor=manufacturer.user, shipment=planned, occurred_at=timezone.now() - datetime.timedelta(hours=hours)
    )


@pytest.fixture
def shipment(manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch) -> Shipment:
    return ship(manufacturer, carrier, pharmacy, batch)


@pytest.fixture
def critical(manufacturer: Persona, shipment: Shipment) -> Alert:
    """The shipment's logger reads 26 °C at last: the hard ceiling fires, a critical alert (and nothing else)."""
    Logger(manufacturer, shipment).report([5.0] * 148 + [26.0] * 2)
    return Alert.objects.get(shipment=shipment, key="rule:hard ceiling")


def text(response: Any) -> str:
    """The page's text without tags and with runs of whitespace as one space."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def ledger_facts() -> list[dict[str, Any]]:
    ledger.entries_sequence()
    return [json.loads(bytes(entry.leaf)) for entry in Entry.objects.order_by("seq")]


# Access ----------------------------------------------------------------------------


def test_anonymous_visitors_are_asked_to_sign_in(anonymous: Any, shipment: Shipment) -> None:
    for url in ("/logistics/", "/logistics/board.json", "/logistics/alerts/", f"/logistics/shipments/{shipment.pk}/"):
        response = Client().get(url)
        assert response.status_code == 302
        assert response["Location"].startswith(f"{reverse('login')}?next=")


def test_a_user_of_no_organisation_is_told_so(db: None) -> None:
    client = Client()
    client.force_login(UserFactory())
    for url in ("/logistics/", "/logistics/board.json", "/logistics/alerts/"):
        response = client.get(url)
        assert response.status_code == 403
        assert "Your account is not a member of any organisation" in text(response)


def test_another_organisations_shipment_and_alerts_do_not_exist_for_it(
    carrier2: Persona, competitor: Persona, shipment: Shipment, critical: Alert
) -> None:
    for outsider in (carrier2, competitor):
        client = signed_in(outsider)
        assert client.get(f"/logistics/shipments/{shipment.pk}/").status_code == 404
        assert shipment.reference not in text(client.get("/logistics/"))
        assert shipment.reference not in text(client.get("/logistics/alerts/"))
        assert client.get("/logistics/board.json").json()["shipments"] == []
        for action in ("acknowledge", "resolve"):
            response = client.post(f"/logistics/alerts/{critical.pk}/{action}", {"comment": "Not ours."})
            assert response.status_code == 404
    critical.refresh_from_db()
    assert critical.status == Alert.Status.OPEN


def test_every_party_and_the_regulator_see_the_shipment(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, regulator: Persona, shipment: Shipment
) -> None:
    for persona in (manufacturer, carrier, pharmacy, regulator):
        assert signed_in(persona).get(f"/logistics/shipments/{shipment.pk}/").status_code == 200


def test_the_landing_page_links_each_shipment_to_its_page_for_every_party_and_the_regulator(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, regulator: Persona, shipment: Shipment
) -> None:
    link = f'<a href="/logistics/shipments/{shipment.pk}/">{shipment.reference}</a>'
    for persona in (manufacturer, carrier, pharmacy, regulator):
        client = signed_in(persona)
        assert client.get("/").content.decode().count(link) == 2  # in transit, and most recent
        assert client.get(f"/logistics/shipments/{shipment.pk}/").status_code == 200


def test_a_viewer_reads_alerts_but_is_refused_handling_them(carrier: Persona, critical: Alert) -> None:
    viewer = make_persona("viewer", carrier.organisation.kind, role=Membership.Role.VIEWER)
    Membership.objects.filter(user=viewer.user).update(organisation=carrier.organisation)
    client = signed_in(viewer)
    inbox = client.get("/logistics/alerts/")
    assert "hard ceiling" in text(inbox)
    assert "/acknowledge" not in inbox.content.decode()  # no forms offered
    response = client.post(f"/logistics/alerts/{critical.pk}/acknowledge", {"comment": "Seen."})
    assert response.status_code == 403
    assert "Your role is read-only; ask an administrator of your organisation." in text(response)
    critical.refresh_from_db()
    assert critical.status == Alert.Status.OPEN


def test_the_regulator_reads_alerts_but_only_parties_handle_them(regulator: Persona, critical: Alert) -> None:
    client = signed_in(regulator)
    assert "hard ceiling" in text(client.get("/logistics/alerts/"))
    assert "/resolve" not in client.get("/logistics/alerts/").content.decode()
    response = client.post(f"/logistics/alerts/{critical.pk}/resolve", {"comment": "Closing."})
    assert response.status_code == 403
    assert "Only the organisations party to the shipment handle its alerts." in text(response)
    critical.refresh_from_db()
    assert critical.status == Alert.Status.OPEN


def test_the_forms_need_the_csrf_token(carrier: Persona, critical: Alert) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(carrier.user)
    assert client.post(f"/logistics/alerts/{critical.pk}/acknowledge", {"comment": "x"}).status_code == 403
    inbox = client.get("/logistics/alerts/").content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', inbox)
    assert token is not None
    response = client.post(
        f"/logistics/alerts/{critical.pk}/acknowledge", {"comment": "x", "csrfmiddlewaretoken": token.group(1)}
    )
    assert response.status_code == 302


def test_the_action_urls_take_posts_only(carrier: Persona, critical: Alert) -> None:
    assert signed_in(carrier).get(f"/logistics/alerts/{critical.pk}/acknowledge").status_code == 405


# The board -------------------------------------------------------------------------


@pytest.fixture
def three(manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch) -> dict[str, Shipment]:
    """A breached shipment now back in range, one warm right now, one with no readings, and a planned one."""
    breached = ship(manufacturer, carrier, pharmacy, batch)
    Logger(manufacturer, breached, "LOG-B").report(warm_day())
    warm = ship(manufacturer, carrier, pharmacy, batch, hours=1.75)
    Logger(manufacturer, warm, "LOG-W").report([5.0] * 12 + [9.0] * 8)  # 40 min at 9 °C: the early warning
    silent = ship(manufacturer, carrier, pharmacy, batch, hours=1)
    planned = services.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[services.ItemSpec(batch=batch, quantity=5)],
    )
    return {"breached": breached, "warm": warm, "silent": silent, "planned": planned}


def rows(response: Any) -> list[str]:
    body = response.content.decode()
    return [text_of(row) for row in re.findall(r"<tr data-shipment=.*?</tr>", body, re.S)]


def text_of(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def test_the_board_shows_what_is_in_transit_most_urgent_first(carrier: Persona, three: dict[str, Shipment]) -> None:
    response = signed_in(carrier).get("/logistics/")
    assert response.status_code == 200
    breached, warm, silent = rows(response)
    assert breached.startswith(three["breached"].reference)
    assert "Manufacturer site → Pharmacy site Carrier 5.0 °C 1 min ago Breached" in breached
    assert "5 unresolved (5 new) Critical" in breached
    assert warm.startswith(three["warm"].reference)
    assert "9.0 °C 1 min ago Excursion open 1 unresolved (1 new) Warning" in warm
    assert silent.startswith(three["silent"].reference)
    assert "no reading — No readings yet none" in silent
    assert three["planned"].reference not in text(response)
    # The page works without JavaScript, and loads ours from our origin.
    assert 'src="/static/traceability/board.js" defer' in response.content.decode()
    assert 'href="/logistics/"' in response.content.decode()  # the reload link


def test_the_board_marks_readings_out_of_range_and_silent_loggers(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    quiet = ship(manufacturer, carrier, pharmacy, batch, hours=3)
    Logger(manufacturer, quiet).report([9.5] * 3, last_at=timezone.now() - 40 * MINUTE)
    row = re.search(r"<tr data-shipment=.*?</tr>", signed_in(carrier).get("/logistics/").content.decode(), re.S)
    assert row is not None
    assert '<td class="temperature out">9.5 °C</td>' in row.group(0)
    assert '<td class="age stale">' in row.group(0)  # 40 minutes of silence, the gap limit is 10
    assert "40 min ago" in row.group(0)


def test_the_board_json_says_what_the_page_shows(carrier: Persona, three: dict[str, Shipment]) -> None:
    client = signed_in(carrier)
    response = client.get("/logistics/board.json")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert "no-cache" in response["Cache-Control"]
    board = response.json()
    assert [row["reference"] for row in board["shipments"]] == [
        three[name].reference for name in ("breached", "warm", "silent")
    ]
    breached = board["shipments"][0]
    assert breached | {"last_reading_at": None} == {
        "id": three["breached"].pk,
        "reference": three["breached"].reference,
        "url": f"/logistics/shipments/{three['breached'].pk}/",
        "recalled": False,
        "recalled_text": "",
        "route": "Manufacturer site → Pharmacy site",
        "carrier": "Carrier",
        "temperature": 5.0,
        "temperature_text": "5.0 °C",
        "temperature_out": False,
        "last_reading_at": None,
        "age_text": "1 min ago",
        "stale": False,
        "state": "breached",
        "state_text": "Breached",
        "alerts": 5,
        "alerts_new": 5,
        "alerts_text": "5 unresolved (5 new)",
        "severity": "critical",
        "severity_text": "Critical",
        "alerts_url": f"/logistics/alerts/?status=unresolved&shipment={three['breached'].pk}",
    }
    assert datetime.datetime.fromisoformat(breached["last_reading_at"]) > timezone.now() - 2 * MINUTE
    assert board["more"] is False
    assert board["updated_text"].startswith("Updated ")
    page_rows = rows(client.get("/logistics/"))
    for row, shown in zip(board["shipments"], page_rows, strict=True):
        for key in ("reference", "route", "carrier", "temperature_text", "age_text", "state_text", "alerts_text"):
            assert row[key] in shown


def test_the_board_marks_a_shipment_carrying_recalled_goods(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch, shipment: Shipment
) -> None:
    other = BatchFactory(product=batch.product)
    spared = ship(manufacturer, carrier, pharmacy, other)
    services.recall_issue(
        actor=manufacturer.user,
        password="correct horse battery staple",  # the factories' password
        items=[services.RecallItemSpec(batch)],
        classification="II",
        depth="consumer",
        reason="Label misprint.",
        instructions="Return.",
    )
    client = signed_in(carrier)

    page = client.get("/logistics/").content.decode()
    board = {row["reference"]: row for row in client.get("/logistics/board.json").json()["shipments"]}

    flagged = re.search(rf'<tr data-shipment="{shipment.pk}">.*?</tr>', page, re.S)
    assert flagged is not None
    assert f'{shipment.reference}</a> <span class="recalled">Recalled goods</span></th>' in flagged.group(0)
    assert (board[shipment.reference]["recalled"], board[shipment.reference]["recalled_text"]) == (
        True,
        "Recalled goods",
    )
    assert (board[spared.reference]["recalled"], board[spared.reference]["recalled_text"]) == (False, "")
    assert page.count('class="recalled"') == 1


def test_a_new_alert_shows_on_the_board_json_at_once(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    client = signed_in(carrier)
    logger = Logger(manufacturer, ship(manufacturer, carrier, pharmacy, batch, hours=0.5))
    logger.report([5.0] * 6)
    assert client.get("/logistics/board.json").json()["shipments"][0]["state"] == "within"
    logger.report([26.0], last_at=timezone.now())
    [row] = client.get("/logistics/board.json").json()["shipments"]
    assert (row["state"], row["alerts"], row["severity"]) == ("breached", 1, "critical")


def populate(count: int, manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch) -> None:
    """``count`` shipments in transit, each with readings, an excursion and a critical alert."""
    for n in range(count):
        shipment = ship(manufacturer, carrier, pharmacy, batch, hours=2)
        Logger(manufacturer, shipment, f"LOG-Q{Shipment.objects.count()}-{n}").report([5.0] * 3 + [26.0])


@pytest.mark.parametrize("url", ["/logistics/", "/logistics/board.json", "/logistics/alerts/"])
def test_the_queries_do_not_grow_with_the_shipments(
    url: str,
    manufacturer: Persona,
    carrier: Persona,
    pharmacy: Persona,
    batch: Batch,
    django_assert_max_num_queries: Any,
) -> None:
    client = signed_in(carrier)
    populate(1, manufacturer, carrier, pharmacy, batch)
    client.get(url)  # the session is read and cached the same way each time after this
    with CaptureQueriesContext(connection) as one:
        assert client.get(url).status_code == 200
    populate(19, manufacturer, carrier, pharmacy, batch)
    with django_assert_max_num_queries(len(one.captured_queries)):
        response = client.get(url)
    assert response.status_code == 200
    assert response.content.decode().count("hard ceiling" if "alerts" in url else "Breached") >= 20


# The alert inbox ----------------------------------------------------------------------


def test_the_inbox_puts_waiting_alerts_first_and_filters(
    manufacturer: Persona, carrier: Persona, shipment: Shipment
) -> None:
    Logger(manufacturer, shipment).report(warm_day())
    alerts = {alert.key.removeprefix("rule:"): alert for alert in Alert.objects.filter(shipment=shipment)}
    services.alert_acknowledge(actor=carrier.user, alert=alerts["stability budget spent"], comment="On it.")
    services.alert_resolve(actor=carrier.user, alert=alerts["heat excursion"], comment="Reefer replaced.")
    client = signed_in(carrier)

    def shown(query: str = "") -> list[str]:
        body = client.get(f"/logistics/alerts/{query}").content.decode()
        return [text_of(h) for h in re.findall(r"<h3 id=\"alert-\d+-heading\">(.*?)</h3>", body, re.S)]

    assert shown() == [  # open ones first, the most severe and then the newest first
        "Warning stability budget 80 %",
        "Warning stability budget 50 %",
        "Warning early warning, warm",
        "Critical stability budget spent",  # acknowledged: after the open ones
        "Alarm heat excursion",  # resolved: last
    ]
    assert shown("?status=acknowledged") == ["Critical stability budget spent"]
    assert shown("?status=unresolved&severity=critical") == ["Critical stability budget spent"]
    assert shown("?severity=alarm") == ["Alarm heat excursion"]
    assert shown(f"?shipment={shipment.pk + 1000}") == []
    inbox = text(client.get("/logistics/alerts/"))
    assert "3 open · 1 acknowledged · 1 resolved" in inbox
    assert "Acknowledged by carrier at" in inbox
    assert "“On it.”" in inbox
    assert "“Reefer replaced.”" in inbox


@pytest.mark.parametrize(
    ("query", "reason"),
    [
        ("?status=closed", "status: Select a valid choice. closed is not one of the available choices."),
        ("?severity=panic", "severity: Select a valid choice. panic is not one of the available choices."),
        ("?shipment=x", "shipment: Enter a whole number."),
        ("?page=0", "page: Ensure this value is greater than or equal to 1."),
    ],
)
def test_a_malformed_filter_is_a_400_saying_why(carrier: Persona, critical: Alert, query: str, reason: str) -> None:
    response = signed_in(carrier).get(f"/logistics/alerts/{query}")
    assert response.status_code == 400
    assert reason in text(response)
    assert "hard ceiling" not in text(response)


def test_staff_acknowledge_then_resolve_an_alert_through_the_forms(
    carrier: Persona, shipment: Shipment, critical: Alert
) -> None:
    client = signed_in(carrier)
    back = f"/logistics/alerts/?status=unresolved&shipment={shipment.pk}"
    response = client.post(
        f"/logistics/alerts/{critical.pk}/acknowledge", {"comment": "Driver checking the unit.", "next": back}
    )
    assert (response.status_code, response["Location"]) == (302, back)
    page = text(client.get(back))
    assert f"Alert acknowledged: hard ceiling on {shipment.reference}." in page
    assert "“Driver checking the unit.”" in page
    critical.refresh_from_db()
    assert (critical.status, critical.acknowledged_by, critical.acknowledgement) == (
        Alert.Status.ACKNOWLEDGED,
        carrier.user,
        "Driver checking the unit.",
    )

    shipment_page = f"/logistics/shipments/{shipment.pk}/"
    response = client.post(
        f"/logistics/alerts/{critical.pk}/resolve", {"comment": "Door was open; closed.", "next": shipment_page}
    )
    assert (response.status_code, response["Location"]) == (302, shipment_page)
    assert f"Alert resolved: hard ceiling on {shipment.reference}." in text(client.get(shipment_page))
    critical.refresh_from_db()
    assert (critical.status, critical.resolved_by, critical.resolution) == (
        Alert.Status.RESOLVED,
        carrier.user,
        "Door was open; closed.",
    )
    handled = [fact for fact in ledger_facts() if fact["type"].startswith("alert.")]
    assert [(f["type"], f["subject"], f["data"]["by"], f["data"]["comment"]) for f in handled] == [
        ("alert.acknowledged", f"shipment:{shipment.reference}", "carrier", "Driver checking the unit."),
        ("alert.resolved", f"shipment:{shipment.reference}", "carrier", "Door was open; closed."),
    ]


def test_resolving_without_saying_how_is_a_400_and_changes_nothing(carrier: Persona, critical: Alert) -> None:
    events = PendingEvent.objects.count()
    response = signed_in(carrier).post(f"/logistics/alerts/{critical.pk}/resolve", {"comment": "   "})
    assert response.status_code == 400
    page = text(response)
    assert "The alert was not resolved" in page
    assert "say how the alert was resolved." in page
    assert 'id="resolve-' in response.content.decode()  # the form again, to try once more
    critical.refresh_from_db()
    assert critical.status == Alert.Status.OPEN
    assert PendingEvent.objects.count() == events


def test_acknowledging_twice_is_a_400_naming_the_state(carrier: Persona, critical: Alert) -> None:
    client = signed_in(carrier)
    assert client.post(f"/logistics/alerts/{critical.pk}/acknowledge", {"comment": "First."}).status_code == 302
    events = PendingEvent.objects.count()
    response = client.post(f"/logistics/alerts/{critical.pk}/acknowledge", {"comment": "Second."})
    assert response.status_code == 400
    assert "the alert is acknowledged; only an open alert is acknowledged." in text(response)
    critical.refresh_from_db()
    assert critical.acknowledgement == "First."
    assert PendingEvent.objects.count() == events


def test_an_overlong_comment_is_a_400(carrier: Persona, critical: Alert) -> None:
    response = signed_in(carrier).post(f"/logistics/alerts/{critical.pk}/acknowledge", {"comment": "x" * 2001})
    assert response.status_code == 400
    assert "Ensure this value has at most 2000 characters (it has 2001)." in text(response)
    critical.refresh_from_db()
    assert critical.status == Alert.Status.OPEN


def test_a_return_address_off_the_site_is_ignored(carrier: Persona, critical: Alert) -> None:
    response = signed_in(carrier).post(
        f"/logistics/alerts/{critical.pk}/acknowledge", {"next": "https://phish.example/logistics/"}
    )
    assert (response.status_code, response["Location"]) == (302, "/logistics/alerts/")


# The shipment page -------------------------------------------------------------------


def test_the_shipment_page_tells_the_whole_story(manufacturer: Persona, pharmacy: Persona, shipment: Shipment) -> None:
    logger = Logger(manufacturer, shipment)
    logger.report(warm_day())
    ledger.ledger_commit()
    response = signed_in(pharmacy).get(f"/logistics/shipments/{shipment.pk}/")
    assert response.status_code == 200
    page = text(response)
    assert f"Shipment {shipment.reference}" in page
    assert "In transit Breached" in page
    for fact in ("Shipper Manufacturer", "Carrier Carrier", "Consignee Pharmacy", "Held by Carrier"):
        assert fact in page
    assert "Contract 2 to 8 °C (storage profile 2-8C)" in page
    # MKT and the stability budget, as the monitoring evaluates them.
    readings = shipment.readings.filter(kind="temperature").values_list("measured_at", "value")
    samples = [coldchain.Sample(at, value) for at, value in readings]
    expected_mkt = coldchain.mkt(samples, max_hold_seconds=shipment.contract.max_gap_seconds)
    assert f"{expected_mkt:.1f} °C over the readings of the last 24 h (limit 8.0 °C)" in page
    assert "11 h of 4 h spent above the range; 0 s remaining" in page
    assert "Above range" in page
    assert "peak" in page
    # Custody, loggers, alerts.
    assert "Dispatch Manufacturer Carrier" in page
    assert "LOG-P1" in page
    assert "riding now" in page
    assert page.count("Resolve") == 5  # the pharmacy, an operator party to it, may handle all five alerts
    # The ledger: every entry so far is in the checkpoint and its proof verifies.
    body = response.content.decode()
    assert "shipment.created" in body
    assert "shipment.dispatched" in body
    assert "contract.breached" in body
    size = ledger.tree_size()
    assert body.count(f"verified in checkpoint {size}") == body.count("<tr data-seq=") >= 5
    assert "awaiting the next checkpoint" not in body


def test_the_shipment_page_queries_do_not_grow_with_its_history(
    manufacturer: Persona, carrier: Persona, carrier2: Persona, shipment: Shipment, django_assert_max_num_queries: Any
) -> None:
    logger = Logger(manufacturer, shipment)
    logger.report([5.0] * 140 + [26.0], last_at=timezone.now() - 12 * EVERY)
    ledger.ledger_commit()
    client = signed_in(carrier)
    client.get(f"/logistics/shipments/{shipment.pk}/")
    with CaptureQueriesContext(connection) as short:
        client.get(f"/logistics/shipments/{shipment.pk}/")
    for alert in Alert.objects.filter(shipment=shipment):
        services.alert_acknowledge(actor=carrier.user, alert=alert, comment="Seen.")
    services.custody_transfer(actor=carrier.user, shipment=shipment, to_organisation=carrier2.organisation)
    Logger(carrier2, shipment, "LOG-P2", starts_at=timezone.now() - 10 * EVERY).report([5.0, 30.0, -3.0] * 3)
    ledger.ledger_commit()
    with django_assert_max_num_queries(len(short.captured_queries)):
        response = client.get(f"/logistics/shipments/{shipment.pk}/")
    assert "Hand-over Carrier Carrier2" in text(response)
    assert "LOG-P2" in text(response)


def test_the_stability_budget_left_is_what_the_warm_hour_did_not_spend(
    manufacturer: Persona, carrier: Persona, shipment: Shipment
) -> None:
    Logger(manufacturer, shipment).report([5.0] * 12 + [9.0] * 12 + [5.0] * 126)  # one hour at 9 °C
    page = text(signed_in(carrier).get(f"/logistics/shipments/{shipment.pk}/"))
    assert "1 h of 4 h spent above the range; 3 h remaining" in page
    body = signed_in(carrier).get(f"/logistics/shipments/{shipment.pk}/").content.decode()
    assert '<meter min="0" max="14400" value="3600" low="7200" high="11520" optimum="0"' in body


def test_an_entry_after_the_newest_checkpoint_awaits_the_next(carrier: Persona, critical: Alert) -> None:
    ledger.ledger_commit()
    services.alert_acknowledge(actor=carrier.user, alert=critical, comment="Seen.")
    ledger.entries_sequence()  # an entry now, but no checkpoint yet
    body = signed_in(carrier).get(f"/logistics/shipments/{critical.shipment_id}/").content.decode()
    acknowledged = re.search(r"<tr data-seq=\"\d+\">(?:(?!</tr>).)*alert\.acknowledged.*?</tr>", body, re.S)
    assert acknowledged is not None
    assert "awaiting the next checkpoint" in acknowledged.group(0)
    assert "verified in checkpoint" in body  # the earlier ones


def test_a_fact_not_yet_sequenced_is_counted(carrier: Persona, critical: Alert) -> None:
    services.alert_acknowledge(actor=carrier.user, alert=critical, comment="Seen.")
    pending = PendingEvent.objects.filter(subject=f"shipment:{critical.shipment.reference}").count()
    page = text(signed_in(carrier).get(f"/logistics/shipments/{critical.shipment_id}/"))
    assert f"{pending} more facts are waiting to be written to the ledger." in page


def test_an_altered_entry_does_not_verify(carrier: Persona, critical: Alert) -> None:
    ledger.ledger_commit()
    entry = Entry.objects.filter(subject=f"shipment:{critical.shipment.reference}").order_by("seq").first()
    assert entry is not None
    verifiers = ledger.verifiers()
    keys = {verifier.key_id.hex(): verifier for verifier in verifiers}
    signed, problem = shipment_ledger.signed_checkpoint(Checkpoint.objects.order_by("-size").first(), verifiers)
    assert signed is not None
    assert problem == ""
    leaf = bytes(entry.leaf)
    nodes = ledger.nodes(merkle.inclusion_keys(entry.seq, signed.size))
    assert shipment_ledger.entry_state(entry, keys, signed, nodes) == ("verified", "")
    entry.leaf = leaf.replace(b'"reference"', b'"Reference"')
    assert shipment_ledger.entry_state(entry, keys, signed, nodes) == ("failed", "its hash is not the hash of its data")
    entry.leaf, entry.signature = leaf, bytes(64)
    assert shipment_ledger.entry_state(entry, keys, signed, nodes)[0] == "failed"


def test_a_checkpoint_signed_for_another_log_is_not_trusted(carrier: Persona, critical: Alert, settings: Any) -> None:
    ledger.ledger_commit()
    settings.LEDGER_ORIGIN = "ledger.elsewhere.example"  # the stored keys and checkpoint are another log's now
    body = signed_in(carrier).get(f"/logistics/shipments/{critical.shipment_id}/").content.decode()
    problem = "the newest checkpoint is signed for another log, ledger.coldtrace.local"
    assert f'<strong class="error">{problem}</strong>' in body
    assert body.count(f"does not verify: {problem}") == body.count("<tr data-seq=") >= 3
    assert "verified in checkpoint" not in body


def test_the_chart_shades_the_range_and_marks_excursions(
    manufacturer: Persona, carrier: Persona, shipment: Shipment
) -> None:
    Logger(manufacturer, shipment).report(warm_day())
    body = signed_in(carrier).get(f"/logistics/shipments/{shipment.pk}/").content.decode()
    svg = re.search(r"<svg .*?</svg>", body, re.S)
    assert svg is not None
    chart = svg.group(0)
    assert 'role="img" aria-labelledby="chart-title chart-desc"' in chart
    assert f'<title id="chart-title">Temperature of shipment {shipment.reference}</title>' in chart
    assert "150 readings from" in chart
    assert "between 5.0 and 9.5 °C" in chart
    assert "1 excursion is shaded." in chart
    band = re.search(r'<rect class="band" x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)">', chart)
    assert band is not None
    marks = re.findall(r'<rect class="excursion excursion-above" x="([\d.]+)" y="[\d.]+" width="([\d.]+)"', chart)
    assert len(marks) == 1
    # The excursion (1 h to 12 h after the first reading) covers most of the chart's width.
    assert float(marks[0][1]) > 0.8 * float(band.group(3))
    assert "Contract range 2 to 8 °C" in chart
    assert chart.count('<path class="mean"') == 1
    assert re.search(r'<text class="tick tick-y"[^>]*>8 °C</text>', chart)
    assert "style=" not in chart  # the strict CSP allows no inline styles


def test_a_planned_shipment_has_no_readings_yet(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, batch: Batch
) -> None:
    planned = services.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[services.ItemSpec(batch=batch, quantity=5)],
    )
    page = text(signed_in(carrier).get(f"/logistics/shipments/{planned.pk}/"))
    assert "Planned No readings yet" in page
    assert "No temperature readings yet." in page
    assert "Not dispatched yet: the contract is judged from dispatch on." in page


def test_the_navigation_links_the_board_and_the_inbox(pharmacy: Persona, regulator: Persona) -> None:
    for persona in (pharmacy, regulator):
        body = signed_in(persona).get("/").content.decode()
        assert 'href="/logistics/"' in body
        assert 'href="/logistics/alerts/"' in body
    board = signed_in(pharmacy).get("/logistics/").content.decode()
    assert '<a href="/logistics/" aria-current="page">Live board</a>' in board
