"""The regulator's pages: the overview of everything, and the ledger verified on the server.

``manufacturer`` ships its vaccine by ``carrier`` to ``pharmacy``; the
``regulator`` watches. Everyone else signed in is told the pages do not exist.
The ledger page's verdicts are checked against proofs computed here from the
entries' leaf bytes alone (``merkle.MemoryTree``), and against tampering done
the way an attacker with database access would: rows altered in place, or a
forged checkpoint appended.
"""

from __future__ import annotations

import datetime
import html
import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import rfc8785
import time_machine
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from ledger import merkle, note, triggers
from ledger import services as ledger
from ledger.models import Checkpoint, Entry, PendingEvent
from tests import factories
from tests.conftest import Persona
from tests.scenarios import log_temperatures as log
from tests.scenarios import register_batch
from traceability import services
from traceability.models import Alert, Batch, Excursion, Product, Shipment
from traceability.pages import regulator as regulator_pages

pytestmark = pytest.mark.django_db

OVERVIEW = reverse("regulator-overview")
LEDGER = reverse("regulator-ledger")
HOUR = 3600


# Helpers ---------------------------------------------------------------------------------


def signed_in(user: AbstractBaseUser | None) -> Client:
    client = Client(raise_request_exception=True)
    if user is not None:
        client.force_login(user)
    return client


def get(persona: Persona, url: str, **query: str) -> tuple[int, str]:
    response = signed_in(persona.user).get(url, query)
    return response.status_code, response.content.decode()


def text_of(page: str) -> str:
    """The page as read: tags dropped, entities decoded, whitespace collapsed."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page))).strip()


def section(page: str, name: str) -> str:
    found = re.search(rf'<section id="{name}".*?</section>', page, re.S)
    assert found, f"no section {name}"
    return text_of(found.group())


def articles(page: str) -> dict[int, str]:
    """The entries listed by a subject search, by seq, as read."""
    found = re.findall(r'<article class="entry" id="entry-(\d+)"(.*?)</article>', page, re.S)
    return {int(seq): text_of(body) for seq, body in found}


def product_of(manufacturer: Persona, name: str = "Morbivax measles vaccine") -> Product:
    return services.product_register(
        actor=manufacturer.user,
        gtin=factories.gtin(),
        name=name,
        dosage_form="suspension for injection",
        strength="0.5 ml",
        storage_profile="2-8C",
        freeze_sensitive=True,
    )


def ship(batch: Batch, shipper: Persona, carrier: Persona, consignee: Persona, *, hours_ago: float = 6) -> Shipment:
    shipment = services.shipment_create(
        actor=shipper.user,
        carrier=carrier.organisation,
        consignee=consignee.organisation,
        origin=shipper.site,
        destination=consignee.site,
        items=[services.ItemSpec(batch=batch, quantity=1)],
    )
    start = timezone.now() - datetime.timedelta(hours=hours_ago)
    return services.shipment_dispatch(actor=shipper.user, shipment=shipment, occurred_at=start)


def warm_then_cold(hours: float) -> float:
    """Warm from hour 1 to 3 (an excursion that ended), then cold again."""
    return 12.0 if 1 <= hours < 3 else 5.0


def freezing_now(hours: float) -> float:
    """Frozen from hour 2 on, still frozen at the last reading: an excursion that has not ended."""
    return -3.0 if hours >= 2 else 5.0


@pytest.fixture
def tamperable() -> Iterator[None]:
    """Lets the test alter ledger rows in place, as someone with database access could.

    The append-only triggers are dropped inside the test's transaction, which
    is rolled back at its end, so they are back for every other test.
    """
    with connection.cursor() as cursor:
        for sql in triggers.drop_statements(connection.vendor):
            cursor.execute(sql)
    yield
    with connection.cursor() as cursor:
        for sql in triggers.create_statements(connection.vendor):
            cursor.execute(sql)


def alter(table: str, column: str, value: object, where: str, *params: object) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {table} SET {column} = %s WHERE {where}", [value, *params])  # noqa: S608
        assert cursor.rowcount == 1


def proof_shown(page: str) -> list[str]:
    """The consistency proof's hashes as the page lists them."""
    found = re.search(r'data-fact="consistency-proof">(.*?)</ol>', page, re.S)
    assert found
    return re.findall(r'<li><code class="hash">([0-9a-f]{64})</code></li>', found.group(1))


def memory_tree() -> merkle.MemoryTree:
    """The Merkle tree built here from every entry's leaf bytes, independent of the stored nodes."""
    tree = merkle.MemoryTree()
    for leaf in Entry.objects.order_by("seq").values_list("leaf", flat=True):
        tree.append(merkle.leaf_hash(bytes(leaf)))
    return tree


# Who may look ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", [OVERVIEW, LEDGER])
def test_only_members_of_a_regulator_see_the_pages(personas: dict[str, Persona], url: str) -> None:
    for name, persona in personas.items():
        status, _ = get(persona, url)
        assert status == (200 if name == "regulator" else 404), name


@pytest.mark.parametrize("url", [OVERVIEW, LEDGER])
def test_a_user_of_no_organisation_is_told_the_pages_do_not_exist(url: str) -> None:
    assert signed_in(factories.UserFactory()).get(url).status_code == 404


@pytest.mark.parametrize("url", [OVERVIEW, LEDGER])
def test_anonymous_visitors_are_asked_to_sign_in(url: str) -> None:
    response = signed_in(None).get(url)
    assert response.status_code == 302
    assert response["Location"] == f"{reverse('login')}?next={url}"


@pytest.mark.parametrize("url", [OVERVIEW, LEDGER])
def test_the_pages_are_read_only(regulator: Persona, url: str) -> None:
    client = signed_in(regulator.user)
    for method in ("post", "put", "patch", "delete"):
        assert getattr(client, method)(url).status_code == 405, method


def test_the_regulators_navigation_links_both_pages_and_nobody_elses_does(
    regulator: Persona, manufacturer: Persona
) -> None:
    _, home = get(regulator, reverse("home"))
    nav = re.search(r'<nav aria-label="Main".*?</nav>', home, re.S)
    assert nav
    assert f'href="{OVERVIEW}"' in nav.group()
    assert f'href="{LEDGER}"' in nav.group()
    _, page = get(regulator, LEDGER)
    assert re.search(rf'href="{LEDGER}" aria-current="page"', page)
    _, theirs = get(manufacturer, reverse("home"))
    assert OVERVIEW not in theirs
    assert LEDGER not in theirs


# The overview ------------------------------------------------------------------------------


@pytest.fixture
def monitored(manufacturer: Persona, carrier: Persona, pharmacy: Persona, competitor: Persona) -> dict[str, Shipment]:
    """Four shipments: one freezing now, one whose warm spell ended with its alert open, one whose
    alerts were all resolved, one with no excursion at all."""
    product = product_of(manufacturer)
    batches = [register(manufacturer, product, lot) for lot in ("MV1", "MV2", "MV3")]
    register(competitor, product_of(competitor, "Rival vaccine"), "RV1")
    freezing = ship(batches[0], manufacturer, carrier, pharmacy)
    log(freezing, freezing_now)
    warmed = ship(batches[1], manufacturer, carrier, pharmacy)
    log(warmed, warm_then_cold)
    settled = ship(batches[2], manufacturer, carrier, pharmacy)
    log(settled, warm_then_cold)
    for alert in Alert.objects.filter(shipment=settled):
        services.alert_resolve(actor=carrier.user, alert=alert, comment="Reefer repaired; QA released the load.")
    calm = ship(batches[2], manufacturer, carrier, pharmacy)
    log(calm, lambda hours: 5.0)
    return {"freezing": freezing, "warmed": warmed, "settled": settled, "calm": calm}


def test_the_overview_lists_every_organisation_with_its_sites_and_shipments(
    regulator: Persona, monitored: dict[str, Shipment], personas: dict[str, Persona]
) -> None:
    factories.SiteFactory(organisation=personas["carrier"].organisation, name="Cross-dock")
    status, page = get(regulator, OVERVIEW)
    assert status == 200
    rows = {gln: text_of(row) for gln, row in re.findall(r'<tr data-gln="(\d{13})">(.*?)</tr>', page, re.S)}
    assert len(rows) == len(personas)

    def counts(name: str) -> list[str]:
        return rows[personas[name].organisation.gln].split()[-4:]

    assert rows[personas["manufacturer"].organisation.gln].startswith("Manufacturer Manufacturer ")
    assert counts("manufacturer") == ["1", "4", "0", "0"]  # sites, as shipper, as carrier, as consignee
    assert counts("carrier") == ["2", "0", "4", "0"]
    assert counts("pharmacy") == ["1", "0", "0", "4"]
    assert counts("regulator") == ["1", "0", "0", "0"]
    assert "Regulator" in rows[personas["regulator"].organisation.gln]


def test_the_overview_counts_batches_by_status_and_lists_the_newest(
    regulator: Persona, manufacturer: Persona, competitor: Persona
) -> None:
    product = product_of(manufacturer)
    register(manufacturer, product, "OLD1")
    recalled = register(manufacturer, product, "RC1")
    Batch.objects.filter(pk=recalled.pk).update(status=Batch.Status.RECALLED)
    register(competitor, product_of(competitor, "Rival vaccine"), "NEW1")
    _, page = get(regulator, OVERVIEW)
    tiles = dict(re.findall(r'data-status="(\w+)"><span class="figure">(\d+)</span>', page))
    assert tiles == {"active": "2", "quarantined": "0", "recalled": "1", "expired": "0", "destroyed": "0"}
    batches = section(page, "batches")
    assert batches.index("NEW1") < batches.index("RC1") < batches.index("OLD1")
    expiry = (timezone.localdate() + datetime.timedelta(days=400)).isoformat()
    row = re.search(r"Rival vaccine 0\.5 ml \d{14} Competitor NEW1 (\S+) Active", batches)
    assert row, batches
    assert row.group(1) == expiry
    assert "Recalled" in batches


def test_the_overview_lists_open_excursions_newest_first_with_their_facts(
    regulator: Persona, monitored: dict[str, Shipment]
) -> None:
    _, page = get(regulator, OVERVIEW)
    excursions = section(page, "excursions")
    assert "2 excursions are still going on or have alerts not yet resolved" in excursions
    freezing, warmed = monitored["freezing"].reference, monitored["warmed"].reference
    # The freeze started 2 h after a dispatch 6 h ago; the warm spell 1 h after: the freeze is newer.
    assert excursions.index(freezing) < excursions.index(warmed)
    assert monitored["settled"].reference not in excursions  # ended, and every alert resolved
    assert monitored["calm"].reference not in excursions
    # Its first frozen reading, 2 h after dispatch on the logger's 5-minute grid.
    frozen = Excursion.objects.get(shipment=monitored["freezing"]).started_at
    assert datetime.timedelta(hours=2) <= frozen - monitored["freezing"].dispatched_at < datetime.timedelta(hours=2.1)
    frozen_from = timezone.localtime(frozen).strftime("%Y-%m-%d %H:%M")
    assert re.search(
        rf"{freezing} Below range {frozen_from} ongoing -3 °C 3 h \d+ min early warning, cold; freeze "
        "still going on; alerts not resolved",
        excursions,
    ), excursions
    assert re.search(
        rf"{warmed} Above range \S+ \S+ \S+ \S+ 12 °C 2 h early warning, warm; stability budget 50 % "
        "alerts not resolved",
        excursions,
    ), excursions
    link = f'href="{LEDGER}?subject=shipment:{freezing}"'
    assert link in page


def test_the_overview_counts_open_alerts_by_severity(
    regulator: Persona, monitored: dict[str, Shipment], carrier: Persona
) -> None:
    open_alerts = Alert.objects.filter(status=Alert.Status.OPEN)
    services.alert_acknowledge(
        actor=carrier.user, alert=open_alerts.filter(severity="warning").first(), comment="On it."
    )
    expected = {
        severity: (
            Alert.objects.filter(severity=severity, status=Alert.Status.OPEN).count(),
            Alert.objects.filter(severity=severity, status=Alert.Status.ACKNOWLEDGED).count(),
        )
        for severity in ("critical", "alarm", "warning", "info")
    }
    assert expected["critical"][0] >= 1  # the freeze of a freeze-sensitive vaccine
    assert sum(ack for _, ack in expected.values()) == 1
    _, page = get(regulator, OVERVIEW)
    shown = {
        severity: (int(opened), int(acknowledged))
        for severity, opened, acknowledged in re.findall(
            r'<tr data-severity="(\w+)"><th[^>]*>[^<]*</th><td class="number">(\d+)</td><td class="number">(\d+)</td>',
            page,
        )
    }
    assert shown == expected
    listed = re.findall(r"<tr><td>[^<]+</td><td class=\"severity-(\w+)\">[^<]+</td>\s*<td>(\w+)</td>", page)
    unresolved = Alert.objects.exclude(status=Alert.Status.RESOLVED).order_by("-raised_at", "-id")
    assert listed == [(alert.severity, alert.get_status_display()) for alert in unresolved]
    assert ("warning", "Acknowledged") in listed
    assert monitored["settled"].reference not in section(page, "alerts")  # its alerts are resolved


def build_overview_world(n: int, manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> None:
    """``n`` more organisations, ``n`` batches, and ``n`` shipments each with an open excursion and alerts."""
    for _ in range(n):
        factories.SiteFactory(organisation=factories.OrganisationFactory(kind="wholesaler"))
    product = product_of(manufacturer)
    for i in range(n):
        shipment = ship(register(manufacturer, product, f"Q{i}"), manufacturer, carrier, pharmacy, hours_ago=4)
        log(shipment, freezing_now)


@pytest.mark.parametrize("n", [1, 20])
def test_the_overview_takes_the_same_few_queries_for_1_or_20_of_everything(
    n: int,
    regulator: Persona,
    manufacturer: Persona,
    carrier: Persona,
    pharmacy: Persona,
    django_assert_max_num_queries: Callable[..., object],
) -> None:
    build_overview_world(n, manufacturer, carrier, pharmacy)
    client = signed_in(regulator.user)
    with django_assert_max_num_queries(12):  # type: ignore[attr-defined]
        page = client.get(OVERVIEW).content.decode()
    assert len(re.findall(r"<tr data-gln=", page)) == 6 + n
    assert f"{n} excursion" in section(page, "excursions")
    assert section(page, "excursions").count("still going on;") == n


# The ledger page: checkpoints ----------------------------------------------------------------


def append(n: int, subject: str = "shipment:SHP-TEST", event_type: str = "shipment.dispatched") -> None:
    for i in range(n):
        ledger.entry_append(
            type=event_type, subject=subject, data={"reference": subject[9:], "i": i}, readers=["org:1"]
        )


@pytest.fixture
def two_checkpoints() -> tuple[Checkpoint, Checkpoint]:
    """Six entries and a checkpoint, five more and another: the ledger as beat leaves it."""
    append(6)
    first = ledger.ledger_commit()
    append(5, subject="shipment:SHP-OTHER")
    second = ledger.ledger_commit()
    assert first is not None
    assert second is not None
    assert (first.size, second.size) == (6, 11)
    return first, second


def test_the_ledger_page_verifies_the_newest_checkpoint_against_the_previous_one(
    regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint]
) -> None:
    first, second = two_checkpoints
    status, page = get(regulator, LEDGER)
    assert status == 200
    newest = section(page, "newest")
    assert re.search(r"Size 11 Root hash ([0-9a-f]{64})", newest).group(1) == bytes(second.root).hex()  # type: ignore[union-attr]
    assert "Origin ledger.coldtrace.local" in newest
    key = note.Verifier("ledger.coldtrace.local", ledger.active_signer().verifier.public_key)
    assert f"Signature Verified with the log key ledger.coldtrace.local+{key.key_id.hex()}" in newest
    assert second.note in html.unescape(page)  # the signed note, byte for byte
    previous = section(page, "previous")
    assert "Size 6" in previous
    assert "Signature Verified" in previous
    consistency = section(page, "consistency")
    assert "Consistent: yes." in consistency
    assert "Stored tree: matches." in consistency
    shown = proof_shown(page)
    expected = merkle.proof_to_hex(memory_tree().consistency_proof(6, 11))
    assert shown == expected
    assert len(shown) > 1
    assert merkle.verify_consistency(6, 11, bytes(first.root), bytes(second.root), merkle.proof_from_hex(shown))


def test_the_ledger_page_states_size_pending_events_and_the_newest_checkpoints_age(
    regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint]
) -> None:
    append(3)  # committed to the outbox, not yet sequenced
    with time_machine.travel(two_checkpoints[1].created_at + datetime.timedelta(hours=2, minutes=5)):
        _, page = get(regulator, LEDGER)
    state = section(page, "state")
    assert "Entries in the ledger 11" in state
    assert "Events waiting to be sequenced 3" in state
    assert "Age of the newest checkpoint 2 h 5 min" in state
    assert PendingEvent.objects.count() == 3


def test_with_no_checkpoint_yet_the_page_says_so(regulator: Persona) -> None:
    append(2)
    status, page = get(regulator, LEDGER)
    assert status == 200
    assert "No checkpoint has been signed yet" in section(page, "newest")
    assert "There is no previous checkpoint." in section(page, "previous")
    assert "Events waiting to be sequenced 2" in section(page, "state")


def test_with_one_checkpoint_there_is_nothing_to_compare_yet(regulator: Persona) -> None:
    append(3)
    ledger.ledger_commit()
    _, page = get(regulator, LEDGER)
    assert "Signature Verified" in section(page, "newest")
    consistency = section(page, "consistency")
    assert "There is no previous checkpoint to compare the newest with." in consistency
    assert "Stored tree: matches." in consistency


def test_an_altered_stored_checkpoint_is_shown_as_not_verified(
    regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint], tamperable: None
) -> None:
    first, _ = two_checkpoints
    forged_root = bytes(32)
    lines = first.note.split("\n")
    lines[2] = note.checkpoint_body("ledger.coldtrace.local", 6, forged_root).split("\n")[2]
    alter("ledger_checkpoint", "note", "\n".join(lines), "size = %s", 6)
    _, page = get(regulator, LEDGER)
    previous = section(page, "previous")
    assert "Signature NOT verified" in previous
    assert "does not verify" in previous
    consistency = section(page, "consistency")
    assert "Consistent: no. The previous checkpoint does not verify." in consistency
    assert "Signature Verified" in section(page, "newest")


def test_a_stored_root_that_differs_from_the_signed_one_is_shown_as_not_verified(
    regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint], tamperable: None
) -> None:
    alter("ledger_checkpoint", "root", bytes(32), "size = %s", 11)
    _, page = get(regulator, LEDGER)
    newest = section(page, "newest")
    assert "Signature NOT verified" in newest
    assert "Its stored root hash differs from the root hash its note is signed for." in newest
    assert "Consistent: no. The newest checkpoint does not verify." in section(page, "consistency")


def test_an_altered_tree_node_breaks_the_consistency_proof(
    regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint], tamperable: None
) -> None:
    level, index = sorted(merkle.consistency_keys(6, 11))[0]
    alter("ledger_treenode", "hash", bytes(range(32)), "level = %s AND " + '"index" = %s', level, index)
    _, page = get(regulator, LEDGER)
    assert "Signature Verified" in section(page, "newest")
    assert "Signature Verified" in section(page, "previous")
    consistency = section(page, "consistency")
    assert "Consistent: no." in consistency
    assert "does not lead from the signed root of checkpoint 6 to the signed root of checkpoint 11" in consistency
    assert proof_shown(page) != merkle.proof_to_hex(memory_tree().consistency_proof(6, 11))


def test_a_forged_checkpoint_signed_with_the_log_key_is_caught_by_the_consistency_proof(
    regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint]
) -> None:
    """A log that signs a tree head for a fork: nothing is altered in place, only appended."""
    append(2)
    ledger.entries_sequence()
    forged_root = merkle.node_hash(bytes(32), bytes(32))
    body = note.checkpoint_body("ledger.coldtrace.local", 13, forged_root)
    Checkpoint.objects.create(size=13, root=forged_root, note=note.sign_note(body, [ledger.active_signer()]))
    _, page = get(regulator, LEDGER)
    assert "Signature Verified" in section(page, "newest")
    consistency = section(page, "consistency")
    assert "Consistent: no." in consistency
    assert "Stored tree: does NOT match." in consistency


def test_a_checkpoint_covering_entries_the_ledger_does_not_have_is_not_trusted(
    regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint]
) -> None:
    body = note.checkpoint_body("ledger.coldtrace.local", 40, bytes(32))
    Checkpoint.objects.create(size=40, root=bytes(32), note=note.sign_note(body, [ledger.active_signer()]))
    status, page = get(regulator, LEDGER)
    assert status == 200
    assert "The newest checkpoint covers 40 entries but the ledger stores only 11." in section(page, "consistency")


def test_a_checkpoint_signed_by_an_unknown_key_is_not_verified(
    regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint]
) -> None:
    stranger = note.Signer("ledger.coldtrace.local", Ed25519PrivateKey.generate())
    append(1)
    ledger.entries_sequence()
    root = ledger.root_at(12)
    Checkpoint.objects.create(
        size=12, root=root, note=note.sign_note(note.checkpoint_body("ledger.coldtrace.local", 12, root), [stranger])
    )
    _, page = get(regulator, LEDGER)
    newest = section(page, "newest")
    assert "Signature NOT verified" in newest
    assert "no signature by a known key" in newest


# The ledger page: entries by subject -------------------------------------------------------------


def search(regulator: Persona, subject: str, **more: str) -> tuple[int, str]:
    return get(regulator, LEDGER, subject=subject, **more)


def test_a_subjects_entries_are_listed_with_their_inclusion_verified(
    regulator: Persona, manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    batch = register(manufacturer, product_of(manufacturer), "MV9")
    shipment = ship(batch, manufacturer, carrier, pharmacy)
    ledger.ledger_commit()
    services.shipment_receive(actor=pharmacy.user, shipment=shipment, accept=True)
    ledger.entries_sequence()  # sequenced, but in no checkpoint yet
    status, page = search(regulator, f"shipment:{shipment.reference}")
    assert status == 200
    entries = Entry.objects.filter(subject=f"shipment:{shipment.reference}").order_by("-seq")
    assert [entry.type for entry in entries] == ["shipment.delivered", "shipment.dispatched", "shipment.created"]
    shown = articles(page)
    assert list(shown) == [entry.seq for entry in entries]  # newest first
    assert f"3 entries about shipment:{shipment.reference}" in section(page, "search")
    size = Checkpoint.objects.get().size
    tree = memory_tree()
    for entry in entries:
        text = shown[entry.seq]
        assert f"Type {entry.type}" in text
        assert f"Leaf hash {bytes(entry.hash).hex()}" in text
        assert "Signature Verified" in text
        assert ledger.entry_time(entry.time) in text
        data = json.loads(bytes(entry.leaf))["data"]
        assert json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) in html.unescape(page)
        if entry.type == "shipment.delivered":
            assert "Inclusion Not yet in a checkpoint" in text
            continue
        assert f"Inclusion Included in checkpoint {size}: verified" in text
        proof = merkle.proof_to_hex(tree.inclusion_proof(entry.seq, size))
        assert " ".join(proof) in text


def test_a_batch_subject_may_be_given_with_a_gtin_13(regulator: Persona, manufacturer: Persona) -> None:
    product = product_of(manufacturer)
    register(manufacturer, product, "L/7:A")
    ledger.ledger_commit()
    assert product.gtin.startswith("0")
    status, page = search(regulator, f" batch:{product.gtin[1:]}:L/7:A ")
    assert status == 200
    assert f"1 entry about batch:{product.gtin}:L/7:A" in section(page, "search")
    assert "Inclusion Included in checkpoint 2: verified" in section(page, "search")


def test_a_key_rotation_is_found_under_its_key_subject_and_both_keys_sign_its_checkpoint(
    regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint], settings: Any, tmp_path: Path
) -> None:
    # The rotation stages a new key file beside the key file: give it a copy of its own.
    key_file = tmp_path / "ledger.key"
    key_file.write_bytes(Path(settings.LEDGER_KEY_FILE).read_bytes())
    key_file.chmod(0o600)
    settings.LEDGER_KEY_FILE = key_file
    old = ledger.active_signer().verifier.key_id.hex()
    new = ledger.key_rotate().key_id
    status, page = search(regulator, "key:ledger.coldtrace.local")
    assert status == 200
    (text,) = articles(page).values()
    assert "Type key.rotated" in text
    assert f"Signature Verified with key {old}" in text
    assert "Inclusion Included in checkpoint 12: verified" in text
    newest = section(page, "newest")
    assert f"Verified with the log key ledger.coldtrace.local+{old}, ledger.coldtrace.local+{new}" in newest
    assert "Consistent: yes." in section(page, "consistency")


def test_an_unknown_subject_has_no_entries(regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint]) -> None:
    status, page = search(regulator, "shipment:SHP-20990101-DEADBEEF")
    assert status == 200
    assert "0 entries about shipment:SHP-20990101-DEADBEEF" in section(page, "search")
    assert "No entries about this subject." in section(page, "search")


@pytest.mark.parametrize(
    ("subject", "reason"),
    [
        ("", "Enter a subject to search for"),
        ("   ", "Enter a subject to search for"),
        ("SHP-20260101-0A1B2C3D", "it must begin with shipment:, batch:, product:, recall: or key:"),
        ("order:42", "it must begin with shipment:, batch:, product:, recall: or key:"),
        ("shipment:", "Give the name after “shipment:”, without spaces."),
        ("shipment:SHP 1", "Give the name after “shipment:”, without spaces."),
        ("batch:09506000134352", "A batch subject is batch:<GTIN>:<lot>"),
        ("batch:09506000134353:LOT1", "check digit"),
        ("batch:09506000134352:", "lot (AI 10) is empty"),
        ("product:12345", "GTIN has 5 digits"),
        ("shipment:" + "X" * 200, "A subject has at most 200 characters."),
    ],
)
def test_an_empty_or_malformed_subject_is_a_400_saying_why(regulator: Persona, subject: str, reason: str) -> None:
    status, page = search(regulator, subject)
    assert status == 400
    error = re.search(r'<p id="subject-error" class="error" role="alert">(.*?)</p>', page, re.S)
    assert error, page
    assert reason in html.unescape(error.group(1))
    assert 'aria-invalid="true"' in page
    assert "Newest checkpoint" in page  # the rest of the page is still there


def test_a_malformed_page_position_is_a_400(regulator: Persona) -> None:
    status, page = search(regulator, "shipment:SHP-1", before="-1")
    assert status == 400
    assert "“before” must be an entry's seq, a whole number." in html.unescape(page)


def test_long_histories_page_on_to_older_entries(
    regulator: Persona, monkeypatch: pytest.MonkeyPatch, two_checkpoints: tuple[Checkpoint, Checkpoint]
) -> None:
    monkeypatch.setattr(regulator_pages, "SUBJECT_ENTRIES", 4)
    _, page = search(regulator, "shipment:SHP-TEST")
    assert list(articles(page)) == [5, 4, 3, 2]
    older = re.search(r'<p class="pager"><a href="([^"]+)">Older entries</a>', page)
    assert older
    response = signed_in(regulator.user).get(LEDGER + html.unescape(older.group(1)))
    assert list(articles(response.content.decode())) == [1, 0]
    assert "Older entries" not in response.content.decode()


def test_an_altered_entry_is_shown_as_not_included_and_not_signed(
    regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint], tamperable: None
) -> None:
    entry = Entry.objects.get(seq=2)
    leaf = json.loads(bytes(entry.leaf))
    leaf["data"]["i"] = 99
    alter("ledger_entry", "leaf", rfc8785.dumps(leaf), "seq = %s", 2)
    _, page = search(regulator, "shipment:SHP-TEST")
    shown = articles(page)
    assert "Inclusion NOT verified" in shown[2]
    assert "does not lead from this entry's leaf hash to the checkpoint's signed root" in shown[2]
    assert "Signature NOT verified" in shown[2]
    assert "differs from the stored hash" in shown[2]
    assert '"i": 99' in shown[2]
    for seq in (0, 1, 3, 4, 5):
        assert "Included in checkpoint 11: verified" in shown[seq]


def test_an_altered_tree_node_breaks_the_inclusion_proofs_through_it(
    regulator: Persona, two_checkpoints: tuple[Checkpoint, Checkpoint], tamperable: None
) -> None:
    alter("ledger_treenode", "hash", bytes(32), "level = %s AND " + '"index" = %s', 0, 1)  # leaf 1, on leaf 0's path
    _, page = search(regulator, "shipment:SHP-TEST")
    shown = articles(page)
    assert "Inclusion NOT verified" in shown[0]
    assert "Included in checkpoint 11: verified" in shown[4]


def test_the_search_takes_the_same_few_queries_for_1_or_20_entries(
    regulator: Persona, django_assert_max_num_queries: Callable[..., object]
) -> None:
    append(1, subject="shipment:SHP-ONE")
    append(20, subject="shipment:SHP-TWENTY")
    append(40, subject="shipment:SHP-NOISE")
    ledger.ledger_commit()
    append(3, subject="shipment:SHP-TWENTY")
    ledger.ledger_commit()
    client = signed_in(regulator.user)
    for subject, n in (("shipment:SHP-ONE", 1), ("shipment:SHP-TWENTY", 23)):
        with django_assert_max_num_queries(12):  # type: ignore[attr-defined]
            page = client.get(LEDGER, {"subject": subject}).content.decode()
        assert len(articles(page)) == n
        assert page.count("verified</span>") == n


def register(manufacturer: Persona, product: Product, lot: str) -> Batch:
    return register_batch(manufacturer, product, lot, serials=0)
