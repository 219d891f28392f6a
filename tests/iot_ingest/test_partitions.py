"""The readings table partitioned by month on PostgreSQL, with the ingest path running on it unchanged.

Each test converts the table inside its own transaction, which pytest-django
rolls back at the end: DDL is transactional on PostgreSQL, so the next test
finds the plain table again.
"""

from __future__ import annotations

import datetime
import io
from collections.abc import Iterator
from typing import Any

import psycopg2
import psycopg2.errors
import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.management import CommandError, call_command
from django.db import IntegrityError, connection, transaction

from iot_ingest import partitions, protocol, services, tasks
from iot_ingest.models import InboxMessage, Reading
from ledger import merkle
from tests.conftest import Persona, unavailable
from tests.factories import ProductFactory
from tests.scenarios import register_batch, ship
from traceability.models import Shipment

pytestmark = [pytest.mark.services, pytest.mark.django_db]
UTC = datetime.UTC
NOW = datetime.datetime(2026, 5, 14, 12, tzinfo=UTC)
MARCH, APRIL, MAY = (datetime.datetime(2026, month, 10, 9, tzinfo=UTC) for month in (3, 4, 5))
KEY = Ed25519PrivateKey.generate()
TABLE = "iot_ingest_reading"
MONTHS = [f"{TABLE}_y2026m{month:02d}" for month in range(3, 9)]  # March's readings to three months after May


@pytest.fixture(autouse=True)
def _postgresql() -> None:
    if connection.vendor != "postgresql":
        unavailable("partitioning is PostgreSQL's: set DATABASE_URL to PostgreSQL")


@pytest.fixture(autouse=True)
def _clock() -> Iterator[None]:
    with time_machine.travel(NOW, tick=True):
        yield


@pytest.fixture
def shipment(manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> Shipment:
    """In transit since February with logger LOG-P1 on board."""
    with time_machine.travel(datetime.datetime(2026, 2, 20, tzinfo=UTC), tick=True):
        batch = register_batch(manufacturer, ProductFactory(manufacturer=manufacturer.organisation))
        shipment = ship(batch, manufacturer, carrier, pharmacy, outcome="in_transit", hours=1)
        public = KEY.public_key().public_bytes_raw()
        device, _ = services.device_register(
            device_id="LOG-P1", organisation=manufacturer.organisation, public_key=public
        )
        services.device_assign(
            actor=manufacturer.user, device=device, shipment=shipment, starts_at=shipment.dispatched_at
        )
    return shipment


def deliver(seq: int, received_at: datetime.datetime, values: tuple[float, ...] = (4.0, 5.0)) -> InboxMessage:
    """LOG-P1's message through the real path: inbox, then processing (readings a minute apart before receipt)."""
    records = [{"n": "temp", "u": "Cel", "t": -60 * (len(values) - i), "v": v} for i, v in enumerate(values)]
    raw = protocol.message(KEY, "LOG-P1", seq, records)
    [row] = services.inbox_receive([services.RawMessage(raw, "mqtt", "", received_at)], enqueue=False)
    services.messages_process([row.pk])
    row.refresh_from_db()
    return row


def partition(*args: str) -> str:
    """``manage.py readings_partition``; what it printed."""
    with connection.cursor() as cursor:
        # The test's own rows are checked now: PostgreSQL alters no table with checks pending in the transaction.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
    out = io.StringIO()
    call_command("readings_partition", *args, stdout=out)
    return out.getvalue()


def rows() -> list[tuple[Any, ...]]:
    return list(Reading.objects.order_by("id").values_list())


def homes() -> dict[int, str]:
    """Each reading's partition."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT id, tableoid::regclass::text FROM {TABLE}")  # noqa: S608
        return dict(cursor.fetchall())


def constraints() -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = %s::regclass", [TABLE]
        )
        return dict(cursor.fetchall())


def indexes() -> dict[str, str]:
    """The table's indexes and their kinds: ``I`` a partitioned index, ``i`` a plain one."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, c.relkind FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid "
            "WHERE x.indrelid = %s::regclass",
            [TABLE],
        )
        return dict(cursor.fetchall())


def catalogue() -> tuple[Any, ...]:
    return constraints(), indexes(), partitions.readings_partitions()


def test_the_conversion_keeps_every_reading_with_its_id_in_the_partition_of_its_month(shipment: Shipment) -> None:
    messages = [deliver(seq, at) for seq, at in enumerate((MARCH, APRIL, MAY), start=1)]
    before = rows()
    assert len(before) == 6

    printed = partition()

    assert "converted iot_ingest_reading to monthly partitions by received_at: 6 readings kept" in printed
    assert rows() == before
    assert [name for name, _ in partitions.readings_partitions()] == sorted([*MONTHS, f"{TABLE}_default"])
    month_of = {message.pk: f"{TABLE}_y2026m{message.received_at.month:02d}" for message in messages}
    assert homes() == {reading.pk: month_of[reading.message_id] for reading in Reading.objects.all()}
    keys = constraints()
    assert keys["iot_ingest_reading_pkey"] == "PRIMARY KEY (id, received_at)"
    assert keys["reading_once_per_record"] == "UNIQUE (message_id, index, received_at)"
    assert keys["iot_ingest_reading_index_check"] == "CHECK ((index >= 0))"
    assert [d for d in keys.values() if d.startswith("FOREIGN KEY")] == [
        "FOREIGN KEY (commit_id) REFERENCES iot_ingest_readingcommit(id) DEFERRABLE INITIALLY DEFERRED"
    ]
    assert set(indexes().values()) == {"I"}  # all partitioned, each partition has its own
    assert {"reading_shipment_time", "reading_shipment_id"} <= set(indexes())
    # The id sequence goes on where it was.
    newest = deliver(4, NOW)
    assert min(newest.readings.values_list("id", flat=True)) > before[-1][0]


def test_django_reads_and_writes_the_partitioned_table_as_before(shipment: Shipment) -> None:
    deliver(1, MARCH)
    partition()
    deliver(2, MAY, values=(4.0, 5.0, 6.0))

    first = Reading.objects.order_by("id").first()
    assert first is not None
    assert Reading.objects.get(pk=first.pk).value == 4.0
    may = Reading.objects.filter(
        shipment=shipment, kind="temperature", measured_at__gte=MAY - datetime.timedelta(hours=1)
    )
    assert list(may.values_list("value", flat=True)) == [4.0, 5.0, 6.0]
    assert homes()[may[0].pk] == f"{TABLE}_y2026m05"
    first.value = 3.5
    first.save()
    assert Reading.objects.get(pk=first.pk).value == 3.5


def test_a_duplicate_message_still_stores_nothing_twice(shipment: Shipment) -> None:
    partition()
    raw = deliver(1, NOW).raw
    [again] = services.inbox_receive([services.RawMessage(bytes(raw), "mqtt", "", NOW)], enqueue=False)
    services.messages_process([again.pk])
    again.refresh_from_db()

    assert again.outcome == "duplicate"
    assert Reading.objects.count() == 2
    # The database itself still refuses a record of a message twice.
    reading = Reading.objects.first()
    assert reading is not None
    reading.pk = None
    with pytest.raises(IntegrityError), transaction.atomic():
        reading.save()


def test_committed_readings_in_several_months_each_have_a_proof(shipment: Shipment) -> None:
    deliver(1, MARCH)
    deliver(2, APRIL)
    partition()
    deliver(3, MAY)

    commit = services.readings_commit(shipment)

    assert commit is not None
    assert commit.count == 6
    assert services.readings_commit(shipment) is None  # all of them are committed, in every partition
    for reading in Reading.objects.all():
        proof = services.reading_proof(reading)
        assert proof is not None
        leaf = merkle.leaf_hash(proof.leaf)
        assert merkle.verify_inclusion(proof.index, commit.count, leaf, proof.path, bytes(commit.root))


def test_running_it_again_changes_nothing(shipment: Shipment) -> None:
    deliver(1, MARCH)
    partition()
    deliver(2, NOW)
    before = catalogue(), rows(), homes()

    printed = partition()

    assert printed == "nothing to do: iot_ingest_reading already has its partitions\n"
    assert (catalogue(), rows(), homes()) == before


def test_a_reading_past_the_partitions_is_kept_and_moves_to_its_month_when_that_is_created(shipment: Shipment) -> None:
    partition()
    november = datetime.datetime(2026, 11, 3, tzinfo=UTC)  # a server clock gone wrong, say
    [reading] = deliver(1, november, values=(4.0,)).readings.all()
    assert homes() == {reading.pk: f"{TABLE}_default"}

    with time_machine.travel(datetime.datetime(2026, 9, 1, tzinfo=UTC), tick=True):
        printed = partition()

    assert printed.splitlines() == [
        *(f"created partition {TABLE}_y2026m{month}" for month in ("09", "10", "11", "12")),
        f"moved 1 readings from {TABLE}_default into their new monthly partitions",
    ]
    assert homes() == {reading.pk: f"{TABLE}_y2026m11"}
    assert Reading.objects.get(pk=reading.pk).message.received_at == november


def test_ingest_waits_while_the_table_is_converted(shipment: Shipment) -> None:
    partition()  # not committed until the test ends
    params = connection.get_connection_params()
    other = psycopg2.connect(**{k: v for k, v in params.items() if k != "cursor_factory"})
    try:
        with other.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
            with pytest.raises(psycopg2.errors.LockNotAvailable):
                cursor.execute(f"SELECT count(*) FROM {TABLE}")  # noqa: S608
    finally:
        other.close()


def test_beat_adds_the_months_ahead_but_never_converts(shipment: Shipment) -> None:
    assert tasks.readings_partitions_ahead() == []
    assert partitions.readings_partitions() == []

    partition()
    with time_machine.travel(datetime.datetime(2026, 6, 2, tzinfo=UTC), tick=True):
        created = tasks.readings_partitions_ahead()

    assert created == [f"{TABLE}_y2026m09"]


def test_the_command_explains_that_sqlite_needs_no_partitions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "vendor", "sqlite")
    with pytest.raises(CommandError, match="needs PostgreSQL"):
        call_command("readings_partition")
    assert tasks.readings_partitions_ahead() == []
