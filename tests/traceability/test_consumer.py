"""The consumer page at the GS1 Digital Link paths, as the person holding the pack sees it.

``manufacturer`` (Manufacturer) makes the Morbivax vaccine and ships it by
``carrier`` (Carrier) to ``pharmacy`` (Pharmacy). The person who scans the
pack is anonymous: no login, and nothing private may reach them.
"""

from __future__ import annotations

import ast
import datetime
import gettext
import re
from pathlib import Path
from typing import Any

import pytest
import time_machine
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from django.utils.translation.template import templatize
from rest_framework.test import APIClient

from ledger import services as ledger
from ledger.models import Entry
from tests.conftest import Persona
from tests.scenarios import log_temperatures as log
from tests.scenarios import register_batch
from traceability import gs1, services
from traceability.consumer import cache, verdict, words
from traceability.models import Batch, Product, Recall, RecallItem, SerialNumber, Shipment

ROOT = Path(settings.BASE_DIR)
HOUR = 3600
LINKSET = "application/linkset+json"
BATCH_QUANTITY = 4321  # distinctive, so the tests can say it never reaches the page
ITEM_QUANTITY = 37


# The world -------------------------------------------------------------------------


@pytest.fixture
def batch(manufacturer: Persona, product: Product) -> Batch:
    batch = register(manufacturer, product)
    ledger.ledger_commit()
    return batch


def serial_of(batch: Batch) -> str:
    return batch.serials.values_list("serial", flat=True)[0]


def ship(
    batch: Batch,
    manufacturer: Persona,
    carrier: Persona,
    pharmacy: Persona,
    *,
    hours: float,
    deliver: bool = True,
    ended_hours_ago: float = 0,
) -> Shipment:
    """One leg of ``hours``: planned, dispatched, and (unless ``deliver`` is False) received."""
    now = timezone.now()
    shipment = services.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[services.ItemSpec(batch=batch, quantity=ITEM_QUANTITY)],
    )
    start = now - datetime.timedelta(hours=hours + ended_hours_ago)
    shipment = services.shipment_dispatch(actor=manufacturer.user, shipment=shipment, occurred_at=start)
    if deliver:
        end = now - datetime.timedelta(hours=ended_hours_ago)
        shipment = services.shipment_receive(actor=pharmacy.user, shipment=shipment, accept=True, occurred_at=end)
    return shipment


def cold(hours: float) -> float:
    return 5.0


def path(batch: Batch, serial: str | None = None, **query: str) -> str:
    link = gs1.DigitalLink(gtin=batch.product.gtin, lot=batch.lot, serial=serial)
    return link.path() + (("?" + "&".join(f"{k}={v}" for k, v in query.items())) if query else "")


def page(url: str, **environ: str) -> tuple[int, str, Any]:
    response = APIClient().get(url, **environ)
    return response.status_code, response.content.decode(), response


def text_of(html: str) -> str:
    """The page as read: tags dropped, whitespace collapsed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def section(html: str, name: str) -> str:
    found = re.search(rf'<section id="{name}".*?</section>', html, re.S)
    assert found, f"no section {name}"
    return text_of(found.group())


# The page ----------------------------------------------------------------------------


def test_a_safe_pack_shows_what_it_is_and_that_its_cold_chain_held(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    for hours in (20, 12, 9):
        log(ship(batch, manufacturer, carrier, pharmacy, hours=hours), cold)
    serial = serial_of(batch)

    status, html, response = page(path(batch, serial, **{"17": gs1.format_expiry(batch.expires_on)}))

    assert status == 200
    assert response["Content-Type"].startswith("text/html")
    body = text_of(html)
    assert "Morbivax measles vaccine" in body
    assert "suspension for injection by Manufacturer" in body
    assert "MV2405" in body
    assert f"{batch.expires_on:%-d %B %Y}" in body
    assert "No problems found" in body
    assert "Genuine serial number" in section(html, "status")
    assert f"Serial number {serial} was issued by Manufacturer for this batch." in body
    assert "Released for use" in section(html, "status")
    chain = section(html, "cold-chain")
    assert "Kept between 2 and 8 °C for all 3 legs, 41 h" in chain
    assert "Leg 1: delivered Kept between 2 and 8 °C, 20 h." in chain
    assert "Leg 3: delivered Kept between 2 and 8 °C, 9 h." in chain
    assert html.count("<h1") == 1


def test_a_leg_with_an_excursion_is_named_with_how_warm_and_how_long(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    log(ship(batch, manufacturer, carrier, pharmacy, hours=20), cold)
    # A reefer failure from hour 4 to hour 7 of the second leg, at 12.4 °C.
    log(ship(batch, manufacturer, carrier, pharmacy, hours=12), lambda h: 12.4 if 4 <= h < 7 else 5.0)
    log(ship(batch, manufacturer, carrier, pharmacy, hours=9), cold)

    status, html, _ = page(path(batch))

    assert status == 200
    chain = section(html, "cold-chain")
    assert "Temperature problem on leg 2 of 3" in chain
    assert "Leg 2: delivered Too warm: 8 °C or more for 3 h, up to 12.4 °C." in chain
    assert "Leg 1: delivered Kept between 2 and 8 °C, 20 h." in chain
    assert "Kept between 2 and 8 °C for all" not in chain
    # The manufacturer has not stopped the batch: check with a pharmacist, rather than "do not use".
    assert "Check before use" in text_of(html)


def test_a_batch_on_many_legs_lists_ten_the_troubled_first_and_counts_the_rest(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    log(ship(batch, manufacturer, carrier, pharmacy, hours=30), lambda h: 12.4 if 4 <= h < 7 else 5.0)
    for hours in range(29, 18, -1):
        log(ship(batch, manufacturer, carrier, pharmacy, hours=hours), cold)

    chain = section(page(path(batch))[1], "cold-chain")

    assert "Temperature problem on leg 1 of 12" in chain
    listed = re.findall(r"Leg (\d+):", chain)
    assert listed == ["1", "4", "5", "6", "7", "8", "9", "10", "11", "12"]
    assert "2 more legs are not listed here." in chain


def test_a_leg_still_in_transit_says_so_and_judges_only_the_record_so_far(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    # On the minute: the page counts a leg in transit to the minute.
    with time_machine.travel(timezone.now().replace(second=0, microsecond=0), tick=False):
        log(ship(batch, manufacturer, carrier, pharmacy, hours=20), cold)
        log(ship(batch, manufacturer, carrier, pharmacy, hours=5, deliver=False), cold)

        chain = section(page(path(batch))[1], "cold-chain")

    assert "Kept between 2 and 8 °C for all 2 legs, 25 h" in chain
    assert "1 leg is still in transit: this is the record so far." in chain
    assert "Leg 2: in transit Kept between 2 and 8 °C so far, 5 h." in chain


def test_a_leg_in_transit_shows_its_time_so_far_to_the_minute(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    with time_machine.travel(timezone.now().replace(second=0, microsecond=0), tick=False) as clock:
        ship(batch, manufacturer, carrier, pharmacy, hours=2, deliver=False)
        assert "so far, 2 h." in section(page(path(batch))[1], "cold-chain")

        clock.shift(datetime.timedelta(seconds=59))
        assert "so far, 2 h." in section(page(path(batch))[1], "cold-chain")

        clock.shift(datetime.timedelta(seconds=1))
        assert "so far, 2 h 1 min." in section(page(path(batch))[1], "cold-chain")


def test_an_excursion_still_going_on_in_transit_is_said_to_be_ongoing(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    log(ship(batch, manufacturer, carrier, pharmacy, hours=3, deliver=False), lambda h: 1.0 if h >= 1 else 5.0)

    chain = section(page(path(batch))[1], "cold-chain")

    assert "Leg 1: in transit Too cold now: 2 °C or less for" in chain
    assert "so far, down to 1 °C." in chain


def test_a_leg_whose_logger_fell_silent_makes_the_record_incomplete_not_held(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    log(ship(batch, manufacturer, carrier, pharmacy, hours=10), lambda h: 5.0 if h < 4 else None)

    html = page(path(batch))[1]

    chain = section(html, "cold-chain")
    assert "The temperature record of leg 1 has gaps" in chain
    assert "For part of this leg the temperature logger recorded nothing." in chain
    assert "Kept between" not in chain
    assert "Check before use" in text_of(html)


def test_a_batch_never_shipped_has_no_cold_chain_to_show(batch: Batch) -> None:
    chain = section(page(path(batch))[1], "cold-chain")
    assert "Not shipped yet" in chain


def test_a_quarantined_batch_carries_a_banner(batch: Batch) -> None:
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.QUARANTINED)  # no service sets it yet

    status, html, _ = page(path(batch))

    assert status == 200
    assert "This batch is on hold (quarantined)" in section(html, "status")
    assert "Released for use" not in html
    assert "Do not use this pack" in text_of(html)


def test_a_recalled_batch_carries_a_recall_banner(batch: Batch) -> None:
    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.RECALLED)  # recalls are a later issue

    html = page(path(batch))[1]

    assert "This batch has been recalled" in section(html, "status")
    links = APIClient().get(path(batch, linkType="linkset")).json()["linkset"][0]
    assert links["https://gs1.org/voc/recallStatus"][0]["title"] == "Recall status: recalled"


def recall(
    batch: Batch,
    persona: Persona,
    *,
    reference: str,
    days_ago: int = 0,
    classification: str = "II",
    serials: tuple[str, str] | None = None,
) -> Recall:
    """A recall as ``recall_issue`` records it: the rows, then the statuses it sets (the ORM, as tests may)."""
    issued = Recall.objects.create(
        reference=reference,
        kind=Recall.Kind.VOLUNTARY,
        classification=classification,
        depth=Recall.Depth.CONSUMER,
        reason=f"Internal reason {reference}",
        instructions=f"Stop using packs of lot {batch.lot} and bring them back ({reference}).",
        manufacturer=persona.organisation,
        initiated_by=persona.organisation,
        issued_by=persona.user,
        issued_at=timezone.now() - datetime.timedelta(days=days_ago),
    )
    low, high = serials or ("", "")
    RecallItem.objects.create(recall=issued, batch=batch, serial_from=low, serial_to=high)
    if serials is None:
        Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.RECALLED)
        batch.serials.filter(status=SerialNumber.Status.ACTIVE).update(status=SerialNumber.Status.RECALLED)
    else:
        batch.serials.filter(serial__in=serials).update(status=SerialNumber.Status.RECALLED)
    return issued


def test_a_recall_banner_gives_the_public_facts_of_the_newest_recall_naming_the_batch(
    batch: Batch, manufacturer: Persona
) -> None:
    recall(batch, manufacturer, reference="RC-OLDER", days_ago=40, classification="III")
    newest = recall(batch, manufacturer, reference="RC-NEWEST", days_ago=2, classification="I")

    status_text = section(page(path(batch, serial_of(batch)))[1], "status")

    assert "Recall RC-NEWEST" in status_text
    assert "RC-OLDER" not in status_text
    assert f"Issued on {timezone.localdate(newest.issued_at):%-d %B %Y}" in status_text
    assert "Class I: the most serious; using the medicine may cause serious harm" in status_text
    assert f"Stop using packs of lot {batch.lot} and bring them back (RC-NEWEST)." in status_text
    assert "This batch has been recalled" in status_text
    assert "Internal reason" not in status_text


def test_a_recalled_serial_range_marks_its_packs_and_not_the_rest_of_the_batch(
    manufacturer: Persona, product: Product
) -> None:
    batch = register(manufacturer, product, serials=3)
    first, second, third = sorted(batch.serials.values_list("serial", flat=True), key=lambda s: (len(s), s))
    recall(batch, manufacturer, reference="RC-RANGE", serials=(first, second))

    recalled = section(page(path(batch, first))[1], "status")
    spared = section(page(path(batch, third))[1], "status")
    batch_page = section(page(path(batch))[1], "status")

    assert "This pack has been recalled" in recalled
    assert "Recall RC-RANGE" in recalled
    assert "Genuine serial number" in spared
    assert "RC-RANGE" not in spared
    assert "This batch is not recalled and not on hold." in spared
    assert "Released for use" in batch_page
    assert "Recall RC-RANGE" not in batch_page


def test_a_recall_shows_at_once_to_a_cache_that_held_the_page(batch: Batch, manufacturer: Persona) -> None:
    url = path(batch, serial_of(batch))
    before = APIClient().get(url)
    assert "Recall RC-NOW" not in before.content.decode()

    recall(batch, manufacturer, reference="RC-NOW")
    after = APIClient().get(url, HTTP_IF_NONE_MATCH=before["ETag"])

    assert after.status_code == 200
    assert "Recall RC-NOW" in section(after.content.decode(), "status")
    assert after["ETag"] != before["ETag"]
    links = APIClient().get(path(batch, serial_of(batch), linkType="linkset")).json()["linkset"][0]
    assert links["https://gs1.org/voc/recallStatus"][0]["title"] == "Recall status: recalled"


def test_a_quarantine_and_its_release_show_at_once(batch: Batch) -> None:
    assert "Released for use" in section(page(path(batch))[1], "status")  # now rendered and kept

    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.QUARANTINED)
    assert "This batch is on hold (quarantined)" in section(page(path(batch))[1], "status")

    Batch.objects.filter(pk=batch.pk).update(status=Batch.Status.ACTIVE)
    assert "Released for use" in section(page(path(batch))[1], "status")


@pytest.mark.parametrize("kept", [0, 1])
def test_each_process_keeps_at_most_consumer_pages_kept_pages_and_renders_the_rest(
    batch: Batch, settings: Any, kept: int
) -> None:
    settings.CONSUMER_PAGES_KEPT = kept
    cache.pages.clear()
    serials = list(batch.serials.values_list("serial", flat=True)[:3])

    for serial in serials * 2:
        status, html, _ = page(path(batch, serial))
        assert status == 200
        assert f"<code>{serial}</code>" in html

    assert len(cache.pages) == kept


def test_an_expired_batch_is_a_visible_warning(batch: Batch) -> None:
    with time_machine.travel(batch.expires_on + datetime.timedelta(days=1)):
        status, html, _ = page(path(batch))

    assert status == 200
    assert "This batch has expired" in section(html, "status")
    assert f"It expired on {batch.expires_on:%-d %B %Y}." in section(html, "status")


def test_an_expiry_date_in_the_code_that_is_not_the_batchs_is_a_warning(batch: Batch) -> None:
    wrong = batch.expires_on + datetime.timedelta(days=31)

    html = page(path(batch, **{"17": gs1.format_expiry(wrong)}))[1]

    assert "The expiry date in the code is wrong" in section(html, "status")


def test_an_unknown_serial_of_a_known_batch_is_a_counterfeit_warning_not_a_404(batch: Batch) -> None:
    status, html, _ = page(path(batch, "NEVERISSUED1"))

    assert status == 200
    status_text = section(html, "status")
    assert "Possible counterfeit" in status_text
    assert "This serial number was never issued for this batch." in status_text
    assert "Do not use this pack" in text_of(html)


def test_a_serial_issued_for_another_batch_of_the_product_is_not_genuine_for_this_one(
    batch: Batch, manufacturer: Persona, product: Product
) -> None:
    other = register(manufacturer, product, lot="MV2406")

    html = page(path(batch, serial_of(other)))[1]

    assert "This serial number was never issued for this batch." in section(html, "status")


def test_a_dispensed_serial_is_a_warning(batch: Batch) -> None:
    serial = serial_of(batch)
    SerialNumber.objects.filter(batch=batch, serial=serial).update(status=SerialNumber.Status.DISPENSED)

    html = page(path(batch, serial))[1]

    assert "This pack was already dispensed" in section(html, "status")
    assert "Check before use" in text_of(html)


def test_the_gtin_alone_shows_the_product_and_its_registration(product: Product) -> None:
    ledger.ledger_commit()

    status, html, _ = page(f"/01/{product.gtin}")

    assert status == 200
    body = text_of(html)
    assert "Morbivax measles vaccine" in body
    assert "Manufacturer" in body
    assert "Scan the full code on the pack" in body
    assert 'id="cold-chain"' not in html
    assert "registration of this product is entry" in section(html, "ledger")


def test_a_trailing_slash_is_tolerated(batch: Batch) -> None:
    assert page(path(batch) + "/")[0] == 200


def test_a_lot_with_an_encoded_slash_is_read_from_the_target_as_sent(manufacturer: Persona, product: Product) -> None:
    batch = register(manufacturer, product, lot="A/7")
    sent = path(batch)
    assert sent.endswith("/10/A%2F7")

    # The test client decodes the path, as WSGI does; gunicorn keeps the target as sent in RAW_URI.
    response = APIClient().get(sent, RAW_URI=sent)

    assert response.status_code == 200
    assert "A/7" in text_of(response.content.decode())


def test_head_is_answered_and_other_methods_are_not(batch: Batch) -> None:
    assert APIClient().head(path(batch)).status_code == 200
    assert APIClient().post(path(batch)).status_code == 405


# Redirects and errors ------------------------------------------------------------------


@pytest.mark.parametrize("length", [8, 12, 13])
def test_a_short_gtin_is_redirected_to_the_14_digit_form_keeping_path_and_query(
    manufacturer: Persona, length: int
) -> None:
    body = "9" * (length - 1) if length != 8 else "9638507"
    short = body + gs1.check_digit(body)
    product = services.product_register(
        actor=manufacturer.user, gtin=short, name="Short", dosage_form="tablet", storage_profile="2-8C"
    )
    assert product.gtin == short.zfill(14)

    response = APIClient().get(f"/01/{short}/10/L%2B1/21/S1?17=271200&linkType=linkset")

    assert response.status_code == 301
    assert response["Location"] == f"/01/{product.gtin}/10/L%2B1/21/S1?17=271200&linkType=linkset"


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("/01/09506000134353", "GTIN check digit is 3, expected 2"),
        ("/01/09506000134352/10/L%C3%A91", "lot (AI 10) has 'é' (U+00E9) at position 2"),
        ("/01/09506000134352/17/271231", "AI 17 is not allowed in the path"),
        ("/01/09506000134352/21/S1/10/L1", "key qualifier 10 comes after 21"),
        ("/01/09506000134352/10/L1?17=271331", "the month (MM) must be 01 to 12"),
        ("/01/", "the GTIN after /01/ is empty"),
    ],
)
def test_a_malformed_link_gets_a_400_page_saying_what_is_wrong(db: None, url: str, reason: str) -> None:
    status, html, response = page(url)

    assert status == 400
    assert response["Content-Type"].startswith("text/html")
    assert "This is not a valid GS1 Digital Link" in html
    assert reason in text_of(html).replace("&#x27;", "'")


def test_a_malformed_link_asked_for_as_json_gets_problem_json(db: None) -> None:
    response = APIClient().get("/01/09506000134353", headers={"Accept": LINKSET})

    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == 400
    assert "GTIN check digit is 3, expected 2" in problem["detail"]


def test_an_unknown_gtin_or_lot_is_a_404_page(batch: Batch) -> None:
    unknown_gtin = "0400999999999" + gs1.check_digit("0400999999999")

    status, html, _ = page(f"/01/{unknown_gtin}/10/MV2405")
    assert status == 404
    assert "Unknown product" in html

    status, html, _ = page(path(batch).replace("MV2405", "MV9999"))
    assert status == 404
    assert "Manufacturer registered no batch MV9999 of Morbivax measles vaccine." in text_of(html)

    status, html, _ = page(f"/01/{batch.product.gtin}/22/V1/10/MV2405")
    assert status == 404
    assert "Unknown product variant" in html

    response = APIClient().get(path(batch, linkType="linkset").replace("MV2405", "MV9999"))
    assert response.status_code == 404
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["title"] == "Unknown batch"


# The linkset ----------------------------------------------------------------------------


def test_the_linkset_is_served_for_the_media_type_and_for_link_type_linkset(batch: Batch) -> None:
    serial = serial_of(batch)
    anchor = f"{settings.BASE_URL}{path(batch, serial)}"

    by_accept = APIClient().get(path(batch, serial), headers={"Accept": LINKSET})
    by_query = APIClient().get(path(batch, serial, linkType="linkset"))

    for response in (by_accept, by_query):
        assert response.status_code == 200
        assert response["Content-Type"] == LINKSET
        assert "json-ld#context" in response["Link"]
    document = by_accept.json()
    assert document == by_query.json()
    assert list(document) == ["linkset"]
    (context,) = document["linkset"]
    assert context["anchor"] == anchor
    assert context["itemDescription"] == "Morbivax measles vaccine 0.5 ml"
    assert context["https://gs1.org/voc/pip"] == [
        {
            "href": anchor,
            "title": "Product information: Morbivax measles vaccine 0.5 ml",
            "type": "text/html",
            "hreflang": ["en", "zh-Hans"],
        }
    ]
    assert context["https://gs1.org/voc/defaultLink"] == context["https://gs1.org/voc/pip"]
    assert context["https://gs1.org/voc/recallStatus"][0]["href"] == f"{anchor}#status"
    assert context["https://gs1.org/voc/recallStatus"][0]["title"] == "Recall status: not recalled"
    (certification,) = context["https://gs1.org/voc/certificationInfo"]
    entry = ledger_seq(batch)
    assert certification["href"] == f"{settings.BASE_URL}/api/v1/ledger/proof/inclusion?seq={entry}"
    assert certification["type"] == "application/json"


def ledger_seq(batch: Batch) -> int:
    return Entry.objects.get(type="batch.registered", subject=f"batch:{batch.product.gtin}:{batch.lot}").seq


def test_the_ledger_links_answer_an_anonymous_consumer(batch: Batch) -> None:
    html = page(path(batch))[1]
    seq = ledger_seq(batch)
    ledger_text = section(html, "ledger")
    assert f"registration of this batch is entry {seq} of the ColdTrace ledger" in ledger_text

    proof_href = re.search(r'href="(/api/v1/ledger/proof/inclusion\?seq=\d+)"', html).group(1)
    entry_href = re.search(r'href="(/api/v1/ledger/entries/\d+)"', html).group(1)
    proof = APIClient().get(proof_href)
    entry = APIClient().get(entry_href)

    assert proof.status_code == 200, proof.content
    assert proof.json()["seq"] == seq
    assert entry.status_code == 200
    assert entry.json()["hash"] in ledger_text


def test_before_the_sequencer_runs_the_page_says_the_entry_is_coming(manufacturer: Persona, product: Product) -> None:
    batch = register(manufacturer, product)  # no ledger_commit: the event is still pending

    html = page(path(batch))[1]

    assert "still being written to the ledger" in section(html, "ledger")
    assert "certificationInfo" not in APIClient().get(path(batch, linkType="linkset")).content.decode()


def test_before_a_checkpoint_covers_the_entry_no_proof_is_offered(manufacturer: Persona, product: Product) -> None:
    batch = register(manufacturer, product)
    ledger.entries_sequence()  # an entry, but no checkpoint yet

    ledger_text = section(page(path(batch))[1], "ledger")

    assert "is ready once the next checkpoint is signed" in ledger_text
    assert "proof/inclusion" not in ledger_text


def test_another_link_type_redirects_to_its_target_or_is_a_404(batch: Batch) -> None:
    response = APIClient().get(path(batch, linkType="gs1:certificationInfo"))
    assert response.status_code == 307
    assert response["Location"].endswith(f"/api/v1/ledger/proof/inclusion?seq={ledger_seq(batch)}")

    assert APIClient().get(path(batch, linkType="gs1:pip")).status_code == 200

    status, html, _ = page(path(batch, linkType="gs1:epil"))
    assert status == 404
    assert "This code has no link of type gs1:epil." in html
    assert "gs1:certificationInfo" in html

    response = APIClient().get(path(batch, linkType="gs1:epil"), headers={"Accept": "application/json"})
    assert response.status_code == 404
    assert "gs1:pip" in response.json()["availableLinkTypes"]


# Language --------------------------------------------------------------------------------


@pytest.mark.parametrize("accept_language", ["zh-Hans", "zh-CN,zh;q=0.9,en;q=0.5"])
def test_a_chinese_reader_gets_the_page_in_simplified_chinese(batch: Batch, accept_language: str) -> None:
    serial = serial_of(batch)

    status, html, response = page(path(batch, serial), HTTP_ACCEPT_LANGUAGE=accept_language)

    assert status == 200
    assert '<html lang="zh-Hans">' in html
    assert "状态" in html  # "Status"
    assert "序列号真实" in html  # "Genuine serial number"
    assert "未发货" in html  # "Not shipped yet"
    assert f"{batch.expires_on.year}年{batch.expires_on.month}月{batch.expires_on.day}日" in html
    assert "Pack details" not in html
    assert response["Content-Language"] == "zh-hans"


def test_an_english_reader_gets_english_with_lang_en(batch: Batch) -> None:
    html = page(path(batch), HTTP_ACCEPT_LANGUAGE="en-GB,en;q=0.8")[1]
    assert '<html lang="en">' in html


def test_a_malformed_link_is_explained_in_chinese_with_the_technical_reason_marked_english(db: None) -> None:
    status, html, _ = page("/01/09506000134353", HTTP_ACCEPT_LANGUAGE="zh-Hans")

    assert status == 400
    assert "这不是有效的 GS1 数字链接" in html
    assert '<p class="reason" lang="en">GTIN check digit is 3, expected 2' in html


# Privacy, caching, queries ------------------------------------------------------------------


def test_nothing_private_reaches_the_page(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    legs = [ship(batch, manufacturer, carrier, pharmacy, hours=h, deliver=h > 5) for h in (20, 4)]

    for url in (path(batch), path(batch, serial_of(batch)), path(batch, linkType="linkset")):
        content = APIClient().get(url).content.decode()
        for leg in legs:
            assert leg.reference not in content
        for name in ("Pharmacy", "Carrier", pharmacy.site.name, manufacturer.site.name, pharmacy.site.gln):
            assert name not in content, name
        for number in (BATCH_QUANTITY, ITEM_QUANTITY, BATCH_QUANTITY - 2 * ITEM_QUANTITY):
            assert not re.search(rf"\b{number}\b", content), number
        assert "/api/v1/shipments/" not in content
        assert "/api/v1/batches/" not in content


def test_answers_from_the_database_may_be_cached_only_if_checked_again_and_vary_by_accept_and_language(
    batch: Batch,
) -> None:
    for url in (path(batch), path(batch, linkType="linkset"), "/01/09506000134353", path(batch).replace("MV", "XX")):
        response = APIClient().get(url)
        expected = "public, max-age=86400" if response.status_code == 400 else "public, no-cache"
        assert response["Cache-Control"] == expected, url
        vary = {part.strip() for part in response["Vary"].split(",")}
        assert {"Accept", "Accept-Language"} <= vary, url
        assert "Cookie" not in vary, url
        assert not response.cookies, url
        assert response["Access-Control-Allow-Origin"] == "*"


def test_a_cache_asking_again_gets_a_304_while_nothing_changed(batch: Batch) -> None:
    first = APIClient().get(path(batch))
    etag = first["ETag"]

    again = APIClient().get(path(batch), HTTP_IF_NONE_MATCH=etag)

    assert again.status_code == 304
    assert again.content == b""
    assert again["ETag"] == etag
    assert again["Cache-Control"] == "public, no-cache"


def test_the_page_refers_to_its_linkset(batch: Batch) -> None:
    response = APIClient().get(path(batch))
    assert response["Link"] == f'<{path(batch)}?linkType=linkset>; rel="linkset"; type="{LINKSET}"'


def test_the_number_of_queries_does_not_grow_with_the_legs(
    batch: Batch, manufacturer: Persona, carrier: Persona, pharmacy: Persona, django_assert_max_num_queries: Any
) -> None:
    serial = serial_of(batch)

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert APIClient().get(path(batch, serial)).status_code == 200
        return len(captured)

    queries()  # PostgreSQL prepares the statement at a connection's first request
    log(ship(batch, manufacturer, carrier, pharmacy, hours=2), cold)
    one_leg = queries()
    for _ in range(9):
        log(ship(batch, manufacturer, carrier, pharmacy, hours=2), lambda h: 9.0 if h > 1 else 5.0)
    ten_legs = queries()

    assert ten_legs == one_leg
    with django_assert_max_num_queries(1):  # the pack and its legs in one
        APIClient().get(path(batch, serial))


# The verdict and its words, without a database ------------------------------------------------


def leg(number: int, **changes: Any) -> verdict.Leg:
    facts: dict[str, Any] = {
        "number": number,
        "state": verdict.LegState.DELIVERED,
        "min_celsius": verdict.Decimal("2.00"),
        "max_celsius": verdict.Decimal("8.00"),
        "seconds": 10 * HOUR,
    }
    return verdict.Leg(**(facts | changes))


def test_the_verdict_is_broken_before_incomplete_before_held() -> None:
    warm = verdict.ExcursionFact(verdict.Direction.ABOVE, 9.5, HOUR, ongoing=False)
    assert verdict.judge(()).outcome is verdict.Outcome.NOT_SHIPPED
    assert verdict.judge((leg(1), leg(2))).outcome is verdict.Outcome.HELD
    assert verdict.judge((leg(1), leg(2, data_gaps=1))).outcome is verdict.Outcome.INCOMPLETE
    broken = verdict.judge((leg(1, data_gaps=1), leg(2, excursions=(warm,)), leg(3, limits_exceeded={"mkt"})))
    assert broken.outcome is verdict.Outcome.BROKEN
    assert broken.failed_legs == (2, 3)
    assert broken.incomplete_legs == (1,)
    mixed = verdict.judge((leg(1), leg(2, min_celsius=verdict.Decimal(15), max_celsius=verdict.Decimal(25))))
    assert mixed.common_range is None
    assert mixed.total_seconds == 20 * HOUR


def test_legs_of_different_ranges_are_summed_up_without_a_range(db: None) -> None:
    result = verdict.judge((leg(1), leg(2, min_celsius=verdict.Decimal(15), max_celsius=verdict.Decimal(25))))
    assert words.cold_chain_summary(result).title == "Kept in its required temperature range for all 2 legs, 20 h"


@pytest.mark.parametrize(
    ("seconds", "said"),
    [(20, "less than a minute"), (45 * 60, "45 min"), (3 * HOUR, "3 h"), (3 * HOUR + 1200, "3 h 20 min"),
     (41 * HOUR + 1000, "41 h"), (100 * HOUR, "4 d 4 h")],
)  # fmt: skip
def test_durations_are_said_at_the_precision_a_person_needs(seconds: int, said: str) -> None:
    assert words.duration(seconds) == said


def test_temperatures_are_written_without_trailing_zeros() -> None:
    assert [words.celsius(v) for v in (verdict.Decimal("8.00"), verdict.Decimal("-0.50"), 12.44, -0.01)] == [
        "8",
        "-0.5",
        "12.4",
        "0",
    ]


# The translations ------------------------------------------------------------------------------------

CATALOGUE = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES"
CONSUMER_SOURCES = [*sorted((ROOT / "traceability" / "consumer").glob("*.py"))]
CONSUMER_TEMPLATES = [*sorted((ROOT / "templates" / "consumer").glob("*.html"))]
_PO_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def po_entries() -> list[dict[str, Any]]:
    """The catalogue's entries: msgctxt, msgid, msgid_plural, msgstr (or msgstr[n]) and whether fuzzy."""
    entries, entry, key = [], {"flags": ""}, ""
    for line in [*(CATALOGUE / "django.po").read_text().splitlines(), ""]:
        if not line.strip():
            if "msgid" in entry:
                entries.append(entry)
            entry, key = {"flags": ""}, ""
        elif line.startswith("#,"):
            entry["flags"] += line[2:]
        elif line.startswith("#"):
            continue
        elif line.startswith('"'):
            entry[key] += ast.literal_eval(line)
        else:
            key, _, rest = line.partition(" ")
            entry[key] = ast.literal_eval(rest)
    return entries


def test_the_catalogue_is_complete_and_the_compiled_catalogue_matches_it() -> None:
    entries = po_entries()
    header, messages = entries[0], entries[1:]
    assert header["msgid"] == ""
    assert "Plural-Forms: nplurals=1; plural=0;" in header["msgstr"]
    with (CATALOGUE / "django.mo").open("rb") as compiled:
        mo = gettext.GNUTranslations(compiled)
    for entry in messages:
        assert "fuzzy" not in entry["flags"], entry["msgid"]
        msgid = entry["msgid"] if "msgctxt" not in entry else f"{entry['msgctxt']}\x04{entry['msgid']}"
        if "msgid_plural" in entry:
            assert entry["msgstr[0]"], entry["msgid"]
            assert mo.ngettext(msgid, entry["msgid_plural"], 1) == entry["msgstr[0]"], entry["msgid"]
        else:
            assert entry["msgstr"], entry["msgid"]
            assert mo.gettext(msgid) == entry["msgstr"], entry["msgid"]
    assert len(mo._catalog) - 1 == len(messages)  # type: ignore[attr-defined]  # one more: the header


def consumer_msgids() -> set[str]:
    """Every string the consumer sources and templates hand to a translation function."""
    found = set()
    for source in CONSUMER_SOURCES:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("_", "ngettext", "pgettext"):
                strings = [arg.value for arg in node.args if isinstance(arg, ast.Constant)]
                found.add(strings[1] if node.func.id == "pgettext" else strings[0])  # type: ignore[attr-defined]
    for template in CONSUMER_TEMPLATES:
        for literal in re.findall(r"\bgettext\((u'(?:[^'\\]|\\.)*')\)", templatize(template.read_text())):
            found.add(ast.literal_eval(literal))
    return found


def test_every_consumer_string_is_in_the_catalogue() -> None:
    missing = consumer_msgids() - {entry["msgid"] for entry in po_entries()}
    assert not missing, f"translate these in {CATALOGUE / 'django.po'}: {sorted(missing)}"


# The style sheet ---------------------------------------------------------------------------------------


def luminance(hex_colour: str) -> float:
    channels = [int(hex_colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast(one: str, other: str) -> float:
    light, dark = sorted((luminance(one), luminance(other)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def test_every_text_colour_in_the_style_sheet_has_a_contrast_of_at_least_4_5() -> None:
    css = re.sub(r"/\*.*?\*/", "", (ROOT / "traceability/static/traceability/consumer.css").read_text(), flags=re.S)
    rules = re.findall(r"([^{}]+)\{([^}]*)\}", css)
    checked = 0
    for selector, body in rules:
        colour = re.search(r"(?:^|;)\s*color:\s*(#[0-9a-fA-F]{6})", body)
        if colour is None:
            continue
        background = re.search(r"background-color:\s*(#[0-9a-fA-F]{6})", body)
        assert background, f"{selector.strip()} sets a colour without its background"
        assert contrast(colour.group(1), background.group(1)) >= 4.5, selector.strip()
        checked += 1
    assert checked >= 8


def register(manufacturer: Persona, product: Product, lot: str = "MV2405", serials: int = 3) -> Batch:
    return register_batch(manufacturer, product, lot, serials, quantity=BATCH_QUANTITY)
