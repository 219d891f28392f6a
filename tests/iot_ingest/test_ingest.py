"""From raw bytes to readings: the inbox, the outcomes of the spec, exactly-once, attribution to shipments."""

from __future__ import annotations

import datetime
import io
import json
import threading
from collections.abc import Callable
from typing import Any

import pytest
import rfc8785
from celery.exceptions import SoftTimeLimitExceeded
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.test import Client, TestCase
from django.utils import timezone
from hypothesis import given
from hypothesis import strategies as st
from rest_framework.test import APIClient

from iot_ingest import api, evaluation, protocol, services, tasks
from iot_ingest.models import Device, DeviceAssignment, InboxMessage, Reading, ReadingCommit
from ledger import merkle
from ledger import services as ledger
from ledger.models import Entry, PendingEvent
from tests.conftest import Persona, unavailable
from tests.factories import UserFactory
from traceability import operations
from traceability import services as traceability

pytestmark = pytest.mark.django_db
UTC = datetime.UTC

# The spec's test vector (spec/device-protocol.md).
VECTOR_KEY = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
VECTOR_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
VECTOR = (
    b"eyJhbGciOiJFZDI1NTE5Iiwia2lkIjoiTE9HLTAwMDEifQ.eyJkZXYiOiJMT0ctMDAwMSIsInNlcSI6NDIsInNlbm1sIjpbeyJibiI6InVybjpk"
    b"ZXY6TE9HLTAwMDE6IiwiYnQiOjE3OTU4NjcyMDAsImJ1IjoiQ2VsIiwibiI6InRlbXAiLCJ2Ijo1LjF9LHsibiI6InRlbXAiLCJ0Ijo2MCwidiI6"
    b"NS4zfSx7Im4iOiJ0ZW1wIiwidCI6MTIwLCJ2Ijo4LjZ9LHsibiI6InJoIiwidSI6IiVSSCIsInQiOjEyMCwidiI6NDF9XX0.vFQ5f9xZ6h8XgSB7"
    b"OhFIqF0lxL5ue8dj7UhjFJNv3sOELHhNHyom7WE4AZbUSrCNmHwlV06PJHav0rx1Ez7LAQ"
)
VECTOR_RECEIVED = datetime.datetime(2026, 11, 28, 12, 3, tzinfo=UTC)
TOPIC = "coldtrace/v1/devices/LOG-0001/readings"  # the MQTT topic of the logger the fixture registers
HOUR = datetime.timedelta(hours=1)


@pytest.fixture
def logger(manufacturer: Persona) -> Device:
    device, _ = services.device_register(
        device_id="LOG-0001", organisation=manufacturer.organisation, public_key=VECTOR_PUBLIC
    )
    return device


def receive(*raws: bytes, at: datetime.datetime = VECTOR_RECEIVED, topic: str = "") -> list[InboxMessage]:
    rows = services.inbox_receive([services.RawMessage(raw, "mqtt", topic, at) for raw in raws], enqueue=False)
    services.messages_process([row.pk for row in rows])
    return list(InboxMessage.objects.filter(pk__in=[row.pk for row in rows]).order_by("id"))


def signed(seq: int, records: list[dict[str, Any]], device_id: str = "LOG-0001", key: bytes = VECTOR_KEY) -> bytes:
    return protocol.message(Ed25519PrivateKey.from_private_bytes(key), device_id, seq, records)


def at(minutes: float) -> float:
    return (VECTOR_RECEIVED + datetime.timedelta(minutes=minutes)).timestamp()


def test_the_spec_vector_is_accepted_and_resolved(logger: Device) -> None:
    [row] = receive(VECTOR)
    assert (row.outcome, row.seq, row.device) == ("accepted", 42, logger)
    temperatures = list(Reading.objects.filter(kind="temperature").values_list("measured_at", "value"))
    assert temperatures == [
        (datetime.datetime(2026, 11, 28, 12, 0, tzinfo=UTC), 5.1),
        (datetime.datetime(2026, 11, 28, 12, 1, tzinfo=UTC), 5.3),
        (datetime.datetime(2026, 11, 28, 12, 2, tzinfo=UTC), 8.6),
    ]
    assert list(Reading.objects.filter(kind="humidity").values_list("value", flat=True)) == [41]
    assert all(reading.received_at == VECTOR_RECEIVED for reading in Reading.objects.all())
    logger.refresh_from_db()
    assert logger.last_seen_at == VECTOR_RECEIVED


def test_a_redelivery_is_a_duplicate_and_stored_once(logger: Device) -> None:
    first, again = receive(VECTOR, VECTOR)
    assert (first.outcome, again.outcome) == ("accepted", "duplicate")
    [later] = receive(VECTOR)
    assert later.outcome == "duplicate"
    assert Reading.objects.count() == 4


def test_the_same_seq_with_other_bytes_is_a_replay(logger: Device) -> None:
    receive(VECTOR)
    [row] = receive(signed(42, [{"n": "temp", "u": "Cel", "v": 4.0, "t": at(-1)}]))
    assert (row.outcome, row.reason) == ("rejected", "replay")
    assert Reading.objects.count() == 4


def test_processing_twice_changes_nothing(logger: Device) -> None:
    [row] = receive(VECTOR)
    assert services.messages_process([row.pk]) == {}
    assert Reading.objects.count() == 4


@pytest.mark.parametrize(
    ("raw", "topic", "reason"),
    [
        (b"x" * (protocol.MAX_MESSAGE_BYTES + 1), "", "too_large"),
        (b"not a jws", "", "malformed"),
        (VECTOR[:-2] + b"AA", "", "bad_signature"),
        (VECTOR, "coldtrace/v1/devices/LOG-0002/readings", "device_mismatch"),
    ],
)
def test_a_bad_message_is_stored_with_its_reason(logger: Device, raw: bytes, topic: str, reason: str) -> None:
    [row] = receive(raw, topic=topic)
    assert (row.outcome, row.reason) == ("rejected", reason)
    assert bytes(row.raw) == raw[: protocol.MAX_MESSAGE_BYTES]
    assert row.detail
    assert Reading.objects.count() == 0


def test_an_unknown_or_disabled_logger_is_refused(manufacturer: Persona) -> None:
    [row] = receive(VECTOR)
    assert row.reason == "unknown_device"
    Device.objects.create(
        device_id="LOG-0001", organisation=manufacturer.organisation, public_key=VECTOR_PUBLIC, status="disabled"
    )
    [row] = receive(VECTOR)
    assert row.reason == "device_disabled"


def test_readings_out_of_window_or_range_reject_the_whole_message(logger: Device) -> None:
    late = signed(1, [{"n": "temp", "u": "Cel", "v": 5.0, "t": at(-91 * 24 * 60)}])
    hot = signed(2, [{"n": "temp", "u": "Cel", "v": 5.0, "t": at(-1)}, {"n": "temp", "u": "Cel", "v": 101, "t": at(0)}])
    rows = receive(late, hot)
    assert [(row.outcome, row.reason) for row in rows] == [
        ("rejected", "time_out_of_window"),
        ("rejected", "value_out_of_range"),
    ]
    assert Reading.objects.count() == 0


def test_readings_belong_to_the_shipment_the_logger_rode_with_at_that_time(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device
) -> None:
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - datetime.timedelta(hours=1))
    services.device_assign(
        actor=manufacturer.user,
        device=logger,
        shipment=shipment,
        starts_at=datetime.datetime(2026, 11, 28, 12, 1, tzinfo=UTC),
    )
    receive(VECTOR)
    attributed = dict(Reading.objects.filter(kind="temperature").values_list("value", "shipment"))
    assert attributed == {5.1: None, 5.3: shipment.pk, 8.6: shipment.pk}


def test_only_those_who_handle_the_goods_put_loggers_on_a_shipment(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona
) -> None:
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=timezone.now() - datetime.timedelta(hours=1))
    own, _ = services.device_register(device_id="LOG-PHARMACY", organisation=pharmacy.organisation)
    devices = f"/api/v1/shipments/{shipment.pk}/devices"
    response = pharmacy.client().post(devices, {"device_id": "LOG-PHARMACY"}, format="json")
    assert response.status_code == 403  # the consignee sees the shipment, but its loggers are not on it
    with pytest.raises(PermissionDenied):
        services.device_assign(actor=pharmacy.user, device=own, shipment=shipment)
    assert not DeviceAssignment.objects.exists()
    carried, _ = services.device_register(device_id="LOG-CARRIER", organisation=carrier.organisation)
    assert services.device_assign(actor=carrier.user, device=carried, shipment=shipment).shipment == shipment


def test_a_shipment_carries_one_logger_at_a_time_and_rides_never_overlap(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device
) -> None:
    now = timezone.now()
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=now - datetime.timedelta(hours=3))
    spare, _ = services.device_register(device_id="LOG-0002", organisation=manufacturer.organisation)
    first = services.device_assign(actor=manufacturer.user, device=logger, shipment=shipment, starts_at=now - HOUR)
    second = services.device_assign(actor=manufacturer.user, device=spare, shipment=shipment)  # swapped in now
    first.refresh_from_db()
    assert first.ends_at == second.starts_at  # the swap ends the first logger's ride: one series per shipment
    for starts_at, said in [
        (now - 2 * HOUR, "must be after the logger's ride that began"),  # before its ride on this shipment
        (now - 4 * HOUR, "must not be before the shipment was created or dispatched"),
        (now + HOUR, "must not be in the future"),
    ]:
        with pytest.raises(ValidationError, match=said):
            services.device_assign(actor=manufacturer.user, device=logger, shipment=shipment, starts_at=starts_at)
    assert DeviceAssignment.objects.count() == 2


def test_a_swap_never_starts_before_the_last_reading_of_the_ride_it_ends(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device
) -> None:
    # The ride's readings keep their shipment: a swap dated before them would put two series on one shipment.
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - 2 * HOUR)
    services.device_assign(actor=manufacturer.user, device=logger, shipment=shipment, starts_at=shipment.dispatched_at)
    receive(VECTOR)  # readings up to 12:02
    spare, _ = services.device_register(device_id="LOG-0002", organisation=manufacturer.organisation)
    with pytest.raises(ValidationError, match="must be after logger LOG-0001's last reading on its ride"):
        services.device_assign(
            actor=manufacturer.user, device=spare, shipment=shipment, starts_at=VECTOR_RECEIVED - HOUR
        )
    assert DeviceAssignment.objects.filter(ends_at__isnull=True).get().device == logger


def test_the_inbox_keeps_each_message_as_received_in_the_order_given() -> None:
    too_large = b"x" * (protocol.MAX_MESSAGE_BYTES + 1)
    received = [
        services.RawMessage(VECTOR, "mqtt", "coldtrace/v1/devices/LOG-0001/readings", VECTOR_RECEIVED),
        services.RawMessage(too_large, "http"),
        services.RawMessage(bytes(range(256)), "mqtt", "", VECTOR_RECEIVED + datetime.timedelta(seconds=1)),
    ]
    rows = services.inbox_receive(received, enqueue=False)
    stored = InboxMessage.objects.in_bulk([row.pk for row in rows])
    assert [row.pk for row in rows] == sorted(stored)  # ids in the order given, each on its own row
    for message, row in zip(received, rows, strict=True):
        kept = stored[row.pk]
        assert (kept.transport, kept.topic, bytes(kept.raw)) == (message.transport, message.topic, bytes(row.raw))
        assert kept.received_at == row.received_at == (message.received_at or kept.received_at)
        assert (kept.outcome, kept.reason, kept.detail, kept.attempts) == (row.outcome, row.reason, row.detail, 0)
        assert (kept.processed_at, kept.device_id, kept.seq) == (row.processed_at, None, None)
    assert [bytes(stored[row.pk].raw) for row in rows] == [
        VECTOR,
        too_large[: protocol.MAX_MESSAGE_BYTES],
        bytes(range(256)),
    ]
    assert [stored[row.pk].outcome for row in rows] == ["pending", "rejected", "pending"]
    assert stored[rows[1].pk].reason == "too_large"
    assert stored[rows[1].pk].processed_at is not None


def test_the_inbox_insert_writes_every_column_a_new_message_has() -> None:
    # PostgreSQL's insert names its columns (services.INBOX_COLUMNS): one added to the model must be added there
    unset = {"id", "device_id", "seq"}  # the database's, and processing's
    assert set(services.INBOX_COLUMNS) == {f.attname for f in InboxMessage._meta.concrete_fields} - unset


def test_a_failing_row_becomes_a_dead_letter_after_repeated_attempts(logger: Device) -> None:
    [row] = services.inbox_receive([services.RawMessage(VECTOR, "mqtt", "", VECTOR_RECEIVED)], enqueue=False)
    for _ in range(services.MAX_ATTEMPTS):
        services.inbox_failed([row.pk], RuntimeError("database went away"))
    row.refresh_from_db()
    assert (row.outcome, row.attempts) == ("dead", services.MAX_ATTEMPTS)
    assert "database went away" in row.detail


def two_pending(logger: Device) -> list[InboxMessage]:
    """Two messages in the inbox, not yet processed: the spec's vector (the older), and another."""
    later = signed(43, [{"n": "temp", "u": "Cel", "v": 4.0, "t": at(1)}])
    raws = [
        services.RawMessage(VECTOR, "mqtt", "", VECTOR_RECEIVED),
        services.RawMessage(later, "mqtt", "", VECTOR_RECEIVED),
    ]
    return services.inbox_receive(raws, enqueue=False)


def test_a_task_takes_on_the_oldest_pending_rows_of_others(logger: Device) -> None:
    older, mine = two_pending(logger)
    assert services.messages_process([mine.pk]) == {"accepted": 2}
    assert services.messages_process([older.pk]) == {}  # its own task finds it done


def test_without_adoption_a_task_processes_its_own_rows_only(logger: Device, settings: Any) -> None:
    settings.INBOX_ADOPTED = 0
    older, mine = two_pending(logger)
    assert services.messages_process([mine.pk]) == {"accepted": 1}
    assert services.messages_process([older.pk]) == {"accepted": 1}


@pytest.fixture
def riding(manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device) -> tuple[float, float]:
    """The logger on a moving shipment from an hour ago; returns the contract's calm band."""
    hour = datetime.timedelta(hours=1)
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=timezone.now() - 2 * hour)
    services.device_assign(actor=manufacturer.user, device=logger, shipment=shipment, starts_at=timezone.now() - hour)
    return evaluation.calm_bands({shipment.pk})[shipment.pk]


def celsius(seq: int, *values: float) -> bytes:
    return signed(seq, [{"n": "temp", "u": "Cel", "v": value} for value in values])


def test_a_message_that_appears_to_break_its_contract_is_marked_urgent(
    logger: Device, riding: tuple[float, float]
) -> None:
    low, high = riding
    middle = (low + high) / 2
    raws = [
        celsius(50, middle),
        celsius(51, middle, high),  # the band is open: its bounds are not calm
        signed(52, [{"n": "temp", "bu": "Cel", "bv": low, "v": 0}]),
        signed(53, [{"n": "rh", "u": "%RH", "v": 99}]),
        b"not a JWS",
    ]
    rows = services.inbox_receive([services.RawMessage(raw, "mqtt") for raw in raws], enqueue=False)
    stored = InboxMessage.objects.in_bulk([row.pk for row in rows])
    assert [stored[row.pk].urgent for row in rows] == [False, True, True, False, False]


def test_a_logger_on_no_shipment_marks_nothing_urgent(logger: Device) -> None:
    [row] = services.inbox_receive([services.RawMessage(celsius(50, 99.0), "mqtt")], enqueue=False)
    assert not InboxMessage.objects.get(pk=row.pk).urgent


def test_when_triage_cannot_look_the_rides_up_the_messages_are_kept_all_the_same(
    logger: Device, riding: tuple[float, float], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(shipment_pks: set[int]) -> dict[int, tuple[float, float]]:
        raise RuntimeError("database went away")

    monkeypatch.setattr(evaluation, "calm_bands", broken)
    [row] = services.inbox_receive([services.RawMessage(celsius(50, 99.0), "mqtt")], enqueue=False)
    kept = InboxMessage.objects.get(pk=row.pk)
    assert (kept.urgent, kept.outcome, bytes(kept.raw)) == (False, "pending", celsius(50, 99.0))


def test_a_task_takes_on_urgent_rows_before_older_ones(
    logger: Device, riding: tuple[float, float], settings: Any
) -> None:
    settings.INBOX_ADOPTED = 2
    low, high = riding
    calm = [celsius(seq, (low + high) / 2) for seq in (60, 61, 62)]
    raws = [*calm, celsius(63, high + 5)]
    rows = services.inbox_receive([services.RawMessage(raw, "mqtt", TOPIC) for raw in raws], enqueue=False)
    mine, older, oldest_but_one, urgent = rows
    assert services.messages_process([mine.pk]) == {"accepted": 2}
    outcomes = dict(InboxMessage.objects.values_list("pk", "outcome"))
    assert [outcomes[row.pk] for row in (mine, urgent, older, oldest_but_one)] == [
        "accepted",
        "accepted",
        "pending",
        "pending",
    ]


Commit = tuple[list[int], dict[int, str]]  # the shipments evaluated at once, and every inbox row's outcome


@pytest.fixture
def commits(monkeypatch: pytest.MonkeyPatch) -> list[Commit]:
    """What each processing commit left behind, as its evaluation saw it (instead of evaluating)."""
    seen: list[Commit] = []

    def after_commit(touched: dict[int, list[float]], *, urgent: set[int]) -> None:
        seen.append((sorted(urgent), dict(InboxMessage.objects.values_list("pk", "outcome"))))

    monkeypatch.setattr(evaluation, "evaluation_after_processing", after_commit)
    return seen


def arriving(*messages: tuple[bytes, str]) -> list[InboxMessage]:
    """(raw, topic) messages received over MQTT a millisecond apart, in that order."""
    now = timezone.now()
    return services.inbox_receive(
        [
            services.RawMessage(raw, "mqtt", topic, now + datetime.timedelta(milliseconds=n))
            for n, (raw, topic) in enumerate(messages)
        ],
        enqueue=False,
    )


@pytest.mark.django_db(transaction=True)  # real commits: each runs its callbacks when it happens
def test_urgent_rows_commit_and_are_evaluated_before_the_task_s_own_rows(
    logger: Device, riding: tuple[float, float], commits: list[Commit]
) -> None:
    low, high = riding
    # The urgent one first: no earlier message of its logger waits.
    urgent, mine = arriving((celsius(71, high + 5), TOPIC), (celsius(70, (low + high) / 2), TOPIC))
    assert services.messages_process([mine.pk]) == {"accepted": 2}

    shipment = DeviceAssignment.objects.get(device=logger).shipment_id
    assert commits == [
        ([shipment], {mine.pk: "pending", urgent.pk: "accepted"}),  # its alert waits for nothing else
        ([], {mine.pk: "accepted", urgent.pk: "accepted"}),
    ]


@pytest.mark.django_db(transaction=True)
def test_an_urgent_message_takes_its_logger_s_earlier_messages_along_and_no_other(
    logger: Device, riding: tuple[float, float], commits: list[Commit]
) -> None:
    """Judged alone, the urgent message would leave a hole where its logger's earlier ones still wait: a gap."""
    low, high = riding
    calm = (low + high) / 2
    other, earlier, urgent, later = arriving(
        (celsius(80, calm), "coldtrace/v1/devices/LOG-0002/readings"),  # another logger's topic
        (celsius(81, calm), TOPIC),
        (celsius(82, high + 5), TOPIC),
        (celsius(83, calm), TOPIC),  # after it
    )
    services.messages_process([later.pk])

    [(_, first), (_, second)] = commits
    assert first == {other.pk: "pending", earlier.pk: "accepted", urgent.pk: "accepted", later.pk: "pending"}
    assert (second[later.pk], second[other.pk]) == ("accepted", "rejected")  # device_mismatch: LOG-0001 signed it


@pytest.mark.django_db(transaction=True)
def test_an_urgent_message_without_a_topic_stays_with_the_batch_it_came_in(
    logger: Device, riding: tuple[float, float], commits: list[Commit]
) -> None:
    """HTTPS names no logger beside the message: its earlier messages could not be found, so it is not singled out."""
    low, high = riding
    raws = [celsius(95, (low + high) / 2), celsius(96, high + 5)]
    rows = services.inbox_receive([services.RawMessage(raw, "http") for raw in raws], enqueue=False)
    assert services.messages_process([row.pk for row in rows]) == {"accepted": 2}
    assert [outcomes for _, outcomes in commits] == [{row.pk: "accepted" for row in rows}]  # one commit


def _held_while(
    pk: int, seconds: float, work: Callable[[], Any], *, change: Callable[[], object] = lambda: None
) -> Any:
    """``work``'s result, while another connection holds the inbox row's lock, for ``seconds`` at most, having
    made ``change`` (uncommitted until it lets go)."""
    if connection.vendor != "postgresql":
        unavailable("row locks are PostgreSQL's: set DATABASE_URL to PostgreSQL")
    locked, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        try:
            with transaction.atomic():
                InboxMessage.objects.select_for_update().get(pk=pk)
                change()
                locked.set()
                release.wait(seconds)
        finally:
            connection.close()

    holder = threading.Thread(target=other_worker)
    holder.start()
    try:
        assert locked.wait(10)
        return work()
    finally:
        release.set()
        holder.join()


def _earlier_and_urgent(riding: tuple[float, float]) -> list[InboxMessage]:
    low, high = riding
    return arriving((celsius(90, (low + high) / 2), TOPIC), (celsius(91, high + 5), TOPIC))


@pytest.mark.django_db(transaction=True)
def test_the_logger_s_earlier_messages_another_worker_holds_are_waited_for(
    logger: Device, riding: tuple[float, float], commits: list[Commit]
) -> None:
    earlier, urgent = _earlier_and_urgent(riding)
    _held_while(earlier.pk, 0.5, lambda: services.messages_process([urgent.pk]))  # released well within URGENT_WAIT
    assert commits[0][1] == {earlier.pk: "accepted", urgent.pk: "accepted"}  # one commit, after the wait


@pytest.mark.django_db(transaction=True)
def test_a_worker_stuck_holding_the_earlier_messages_is_waited_for_only_so_long(
    logger: Device, riding: tuple[float, float], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    earlier, urgent = _earlier_and_urgent(riding)
    monkeypatch.setattr(services, "URGENT_WAIT", 0.2)
    counts = _held_while(earlier.pk, 10, lambda: services.messages_process([urgent.pk]))
    assert counts == {"accepted": 1}
    assert dict(InboxMessage.objects.values_list("pk", "outcome")) == {earlier.pk: "pending", urgent.pk: "accepted"}
    assert f"held earlier messages of {TOPIC} for over 0.2s" in caplog.text  # staff see the stuck worker


@pytest.mark.django_db(transaction=True)
def test_a_failure_waits_for_a_worker_holding_its_rows_then_counts(logger: Device) -> None:
    held, free = two_pending(logger)
    _held_while(held.pk, 0.5, lambda: services.inbox_failed([held.pk, free.pk], RuntimeError("lost")))
    # Passed over, the held row's failure would go uncounted: an adopter that held it retries its own rows only.
    assert dict(InboxMessage.objects.values_list("pk", "attempts")) == {held.pk: 1, free.pk: 1}


@pytest.mark.django_db(transaction=True)
def test_a_failure_waits_for_a_stuck_worker_only_so_long(
    logger: Device, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    held, free = two_pending(logger)
    monkeypatch.setattr(services, "URGENT_WAIT", 0.2)
    _held_while(held.pk, 10, lambda: services.inbox_failed([held.pk, free.pk], RuntimeError("lost")))
    assert dict(InboxMessage.objects.values_list("pk", "attempts")) == {held.pk: 0, free.pk: 1}
    assert "was not counted on the rows another worker holds" in caplog.text


def test_a_row_that_failed_is_left_to_its_own_task(logger: Device) -> None:
    failed, other = two_pending(logger)
    services.inbox_failed([failed.pk], RuntimeError("a bug"))
    assert services.messages_process([other.pk]) == {"accepted": 1}  # took no other row on
    assert dict(InboxMessage.objects.values_list("pk", "outcome")) == {failed.pk: "pending", other.pk: "accepted"}


def _failing_on(poison: InboxMessage, monkeypatch: pytest.MonkeyPatch) -> None:
    """Processing fails on ``poison`` alone, as on a message that meets a bug."""
    settle = services._settle

    def fails_on_poison(row: Any, *args: Any) -> None:
        if row.pk == poison.pk:
            raise RuntimeError("cannot process this one")
        settle(row, *args)

    monkeypatch.setattr(services, "_settle", fails_on_poison)


def test_a_row_that_fails_counts_against_itself_not_against_the_rows_that_took_it_on(
    logger: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    poison, mine = two_pending(logger)
    _failing_on(poison, monkeypatch)
    tasks.process_messages.apply(args=[[mine.pk]])  # took the poison on, failed, then did its own alone
    mine.refresh_from_db()
    poison.refresh_from_db()
    assert (mine.outcome, mine.attempts) == ("accepted", 0)
    assert (poison.outcome, poison.attempts) == ("pending", 0)  # its own task counts its failures
    tasks.process_messages.apply(args=[[poison.pk]])
    poison.refresh_from_db()
    assert (poison.outcome, poison.attempts) == ("dead", services.MAX_ATTEMPTS)
    assert "cannot process this one" in poison.detail


def test_a_row_that_fails_takes_none_of_its_task_s_own_rows_to_the_dead_letters(
    logger: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    raws = [signed(50 + n, [{"n": "temp", "u": "Cel", "v": 4.0, "t": at(-n)}]) for n in range(5)]
    rows = services.inbox_receive(
        [services.RawMessage(raw, "mqtt", "", VECTOR_RECEIVED) for raw in raws], enqueue=False
    )
    poison = rows[3]
    _failing_on(poison, monkeypatch)
    tasks.process_messages.apply(args=[[row.pk for row in rows]])
    outcomes = dict(InboxMessage.objects.values_list("pk", "outcome"))
    assert outcomes == {row.pk: "dead" if row == poison else "accepted" for row in rows}
    attempts = dict(InboxMessage.objects.values_list("pk", "attempts"))
    assert attempts == {row.pk: services.MAX_ATTEMPTS if row == poison else 0 for row in rows}


def test_staff_process_dead_letters_again_once_their_cause_is_fixed(
    logger: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    dead, fine = two_pending(logger)
    for _ in range(services.MAX_ATTEMPTS):
        services.inbox_failed([dead.pk], RuntimeError("a bug, since deployed away"))
    queued: list[list[int]] = []
    monkeypatch.setattr(services, "enqueue_processing", lambda ids: queued.append(list(ids)))
    staff = Client()
    staff.force_login(UserFactory(username="root", is_staff=True, is_superuser=True))
    action = {"action": "process_again", "_selected_action": [dead.pk, fine.pk]}
    with TestCase.captureOnCommitCallbacks(execute=True):
        response = staff.post("/admin/iot_ingest/inboxmessage/", action, follow=True)
    assert "1 dead letter(s) queued to be processed again; 1 not dead letters, left as they were." in str(
        response.content, "utf-8"
    )
    dead.refresh_from_db()
    assert (dead.outcome, dead.attempts, dead.detail) == ("pending", 0, "")
    assert queued == [[dead.pk]]
    services.messages_process([dead.pk])
    dead.refresh_from_db()
    assert dead.outcome == "accepted"


def test_the_sweeper_requeues_rows_left_pending(logger: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    queued: list[list[int]] = []
    monkeypatch.setattr(services, "enqueue_processing", lambda ids: queued.append(list(ids)))
    old = datetime.datetime.now(UTC) - datetime.timedelta(minutes=5)
    [row] = services.inbox_receive([services.RawMessage(VECTOR, "mqtt", "", old)], enqueue=False)
    services.inbox_receive([services.RawMessage(b"fresh", "mqtt")], enqueue=False)
    assert services.inbox_sweep() == 1
    assert queued == [[row.pk]]


def test_readings_are_committed_to_the_ledger_and_each_can_be_proven(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device
) -> None:
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - datetime.timedelta(hours=1))
    services.device_assign(actor=manufacturer.user, device=logger, shipment=shipment, starts_at=shipment.dispatched_at)
    receive(VECTOR)
    commit = services.readings_commit(shipment)
    assert commit is not None
    assert commit.count == 4
    assert services.readings_commit(shipment) is None  # nothing new
    ledger.entries_sequence()
    entry = Entry.objects.get(type="readings.committed")
    assert json.loads(bytes(entry.leaf))["data"]["root"] == bytes(commit.root).hex()
    for reading in Reading.objects.all():
        proof = services.reading_proof(reading)
        assert proof is not None
        assert merkle.verify_inclusion(
            proof.index, commit.count, merkle.leaf_hash(proof.leaf), proof.path, bytes(commit.root)
        )
    response = manufacturer.client().get(f"/api/v1/shipments/{shipment.pk}/readings/{reading.pk}/proof")
    assert response.status_code == 200
    assert response.json()["root"] == bytes(commit.root).hex()


def _proven(reading: Reading) -> bool:
    proof = services.reading_proof(reading)
    if proof is None:
        return False
    leaf = merkle.leaf_hash(proof.leaf)
    return merkle.verify_inclusion(proof.index, proof.commit.count, leaf, proof.path, bytes(proof.commit.root))


def _stored_by_hand(shipment: Any, logger: Device, count: int, *, at: datetime.datetime) -> list[Reading]:
    [row] = services.inbox_receive([services.RawMessage(b"by hand", "mqtt")], enqueue=False)
    return [
        Reading.objects.create(
            device=logger,
            shipment=shipment,
            message=row,
            index=index,
            kind="temperature",
            value=5.0,
            measured_at=at,
            received_at=at,
        )
        for index in range(count)
    ]


def _transactions_in_flight_seen() -> None:
    if connection.vendor != "postgresql":
        unavailable("transactions in flight are PostgreSQL's: set DATABASE_URL to PostgreSQL")


@pytest.mark.django_db(transaction=True)  # two workers and a commit, each on its own connection
def test_a_commit_waits_for_the_readings_a_worker_is_storing_and_covers_them(
    manufacturer: Persona,
    carrier: Persona,
    pharmacy: Persona,
    logger: Device,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A commit covers its shipment's readings up to the greatest id it sees. A worker that took lower ids and
    has not committed yet must not be passed over: its readings would lie below every later commit's range."""
    _transactions_in_flight_seen()
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - HOUR)
    services.device_assign(actor=manufacturer.user, device=logger, shipment=shipment, starts_at=shipment.dispatched_at)
    [slow] = services.inbox_receive([services.RawMessage(VECTOR, "mqtt", "", VECTOR_RECEIVED)], enqueue=False)
    stored, release = threading.Event(), threading.Event()
    insert = services._readings_insert

    def pausing(rows: list[Any]) -> None:
        insert(rows)
        stored.set()
        release.wait(10)

    monkeypatch.setattr(services, "_readings_insert", pausing)
    done: dict[str, Any] = {}
    worker = _thread(done, "worker", lambda: services.messages_process([slow.pk]))
    try:
        assert stored.wait(10)
        monkeypatch.setattr(services, "_readings_insert", insert)
        [later] = _stored_by_hand(shipment, logger, 1, at=VECTOR_RECEIVED)  # another worker's, committed
        committer = _thread(done, "commits", tasks.commit_readings)
        committer.join(1.0)
        assert committer.is_alive(), "the commit did not wait for the worker storing readings"
    finally:
        release.set()
        worker.join()
    committer.join()

    assert (done["worker"], done["commits"]) == ({"accepted": 1}, 1)
    [commit] = ReadingCommit.objects.filter(shipment=shipment)
    assert (commit.count, commit.through_id) == (5, later.pk)  # the slow worker's four, below the later one
    assert all(_proven(reading) for reading in Reading.objects.filter(shipment=shipment))
    assert not Reading.objects.filter(commit__isnull=False).exists()  # none written again


def _thread(done: dict[str, Any], name: str, work: Callable[[], Any]) -> threading.Thread:
    """``work`` running on a connection of its own; its result in ``done[name]``."""

    def target() -> None:
        try:
            done[name] = work()
        finally:
            connection.close()

    thread = threading.Thread(target=target)
    thread.start()
    return thread


@pytest.mark.django_db(transaction=True)  # two writers and a commit, each on its own connection
def test_a_commit_waits_for_a_newer_transaction_that_took_a_lower_reading_id(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device
) -> None:
    """A snapshot lists no transaction newer than the newest that has ended, so on a quiet server it would not
    show the newer one (a review reproduced that): the writers are found by the readings table's lock."""
    _transactions_in_flight_seen()
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - HOUR)
    a_has_id, b_stored, a_go, b_go = (threading.Event() for _ in range(4))

    def reading() -> Reading:
        [stored] = _stored_by_hand(shipment, logger, 1, at=VECTOR_RECEIVED)
        return stored

    def transaction_id() -> None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_current_xact_id()")

    def older() -> Reading:
        with transaction.atomic():
            transaction_id()
            a_has_id.set()
            assert a_go.wait(10)
            return reading()

    def newer() -> Reading:
        assert a_has_id.wait(10)
        with transaction.atomic():
            transaction_id()
            stored = reading()  # the lower reading id
            b_stored.set()
            assert b_go.wait(10)
            return stored

    done: dict[str, Any] = {}
    writers = [_thread(done, "older", older), _thread(done, "newer", newer)]
    committer = None
    try:
        assert b_stored.wait(10)
        a_go.set()
        writers[0].join()  # the older transaction ends, with the higher reading id
        committer = _thread(done, "commits", tasks.commit_readings)
        committer.join(1.0)
        assert committer.is_alive(), "the commit did not wait for the newer transaction still writing"
    finally:
        a_go.set()
        b_go.set()
        for thread in [*writers, committer]:
            if thread is not None:
                thread.join()

    assert done["commits"] == 1
    [commit] = ReadingCommit.objects.filter(shipment=shipment)
    assert (commit.count, commit.through_id) == (2, done["older"].pk)
    assert done["newer"].pk < done["older"].pk
    assert all(_proven(reading) for reading in Reading.objects.filter(shipment=shipment))


@pytest.mark.django_db(transaction=True)
def test_no_commit_is_made_while_readings_are_still_being_written_after_the_wait(
    manufacturer: Persona,
    carrier: Persona,
    pharmacy: Persona,
    logger: Device,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _transactions_in_flight_seen()
    monkeypatch.setattr(services, "WRITES_WAIT", 0.2)
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - HOUR)
    _stored_by_hand(shipment, logger, 1, at=VECTOR_RECEIVED)
    stored, release = threading.Event(), threading.Event()

    def writing() -> None:
        with transaction.atomic():
            _stored_by_hand(shipment, logger, 1, at=VECTOR_RECEIVED)
            stored.set()
            release.wait(10)

    done: dict[str, Any] = {}
    writer = _thread(done, "writer", writing)
    try:
        assert stored.wait(10)
        assert services.readings_boundaries() == {}
        assert tasks.commit_readings() == 0
    finally:
        release.set()
        writer.join()
    assert "readings were still being written 0.2s later; none committed this time" in caplog.text
    assert tasks.commit_readings() == 1  # the next run, the writer gone


def test_reading_ids_are_handed_out_in_time_order() -> None:
    """What commits by id range rely on: a session caching a block of ids could store one below a range
    already committed."""
    if connection.vendor != "postgresql":
        unavailable("sequences are PostgreSQL's here: set DATABASE_URL to PostgreSQL")
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [Reading._meta.db_table])
        (sequence,) = cursor.fetchone()
        cursor.execute(
            "SELECT cache_size FROM pg_sequences WHERE format('%%I.%%I', schemaname, sequencename) = %s", [sequence]
        )
        assert cursor.fetchone() == (1,)


def test_a_commit_stops_at_the_boundary_it_was_given_and_is_made_once(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device
) -> None:
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - HOUR)
    first, second = _stored_by_hand(shipment, logger, 2, at=VECTOR_RECEIVED)
    assert services.readings_boundaries() == {shipment.pk: second.pk}

    commit = services.readings_commit(shipment, through=first.pk)

    assert commit is not None
    assert (commit.count, commit.after_id, commit.through_id) == (1, 0, first.pk)
    assert services.readings_commit(shipment, through=first.pk) is None  # another beat run with the same view
    entry = PendingEvent.objects.filter(type="readings.committed").get()
    assert (entry.data["readings_after"], entry.data["readings_through"]) == (0, first.pk)
    rest = services.readings_commit(shipment)
    assert rest is not None
    assert (rest.count, rest.after_id, rest.through_id) == (1, first.pk, second.pk)
    assert services.readings_boundaries() == {}


@pytest.mark.django_db(transaction=True)  # migrations
def test_going_back_before_commit_ranges_marks_each_reading_with_its_commit(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device
) -> None:
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - HOUR)
    first, second = _stored_by_hand(shipment, logger, 2, at=VECTOR_RECEIVED)
    commit = services.readings_commit(shipment)
    assert commit is not None
    [later] = _stored_by_hand(shipment, logger, 1, at=VECTOR_RECEIVED)
    executor = MigrationExecutor(connection)
    executor.migrate([("iot_ingest", "0006_inbox_pending_topic")])
    try:
        executor.loader.build_graph()
        old = executor.loader.project_state(("iot_ingest", "0006_inbox_pending_topic")).apps
        marked = old.get_model("iot_ingest", "Reading").objects.order_by("id").values_list("id", "commit_id")
        assert list(marked) == [(first.pk, commit.pk), (second.pk, commit.pk), (later.pk, None)]
    finally:
        executor.loader.build_graph()
        executor.migrate(executor.loader.graph.leaf_nodes())


def test_a_proof_is_refused_when_its_commit_s_readings_changed(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device
) -> None:
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - HOUR)
    first, second = _stored_by_hand(shipment, logger, 2, at=VECTOR_RECEIVED)
    commit = services.readings_commit(shipment)
    assert commit is not None
    Reading.objects.filter(pk=second.pk).update(shipment=None)  # what the range relies on never happening

    with pytest.raises(services.CommitMismatch, match="root is of 2 readings; the 1 in its range now differ"):
        services.reading_proof(Reading.objects.get(pk=first.pk))
    Reading.objects.filter(pk=second.pk).update(shipment=shipment, value=9.5)  # as many, one of them changed
    with pytest.raises(services.CommitMismatch, match="root is of 2 readings; the 2 in its range now differ"):
        services.reading_proof(Reading.objects.get(pk=first.pk))
    response = manufacturer.client().get(f"/api/v1/shipments/{shipment.pk}/readings/{first.pk}/proof")
    assert response.status_code == 500
    assert "no longer make its root" in response.json()["detail"]


def _proof_commit(reading: Reading) -> Any:
    proof = services.reading_proof(Reading.objects.get(pk=reading.pk))
    return proof and proof.commit


def test_commits_take_up_after_those_made_reading_by_reading(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device
) -> None:
    """Commits made before commits had ranges named each of their readings; their proofs hold, and the first
    commit with a range takes the shipment's other readings, below those old ones' ids too."""
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - HOUR)
    old, left_out, newer = (_stored_by_hand(shipment, logger, 3, at=VECTOR_RECEIVED) for _ in range(3))
    members = [*old, *newer[:1]]
    leaves = [services.reading_leaf(r, logger.device_id, 0) for r in members]
    root = merkle.root_of([merkle.leaf_hash(leaf) for leaf in leaves])
    legacy = ReadingCommit.objects.create(shipment=shipment, count=len(members), root=root)
    Reading.objects.filter(pk__in=[r.pk for r in members]).update(commit=legacy)
    assert list(services.shipments_uncommitted()) == [shipment]
    assert operations.inbox_state().readings == 9

    commit = services.readings_commit(shipment)

    assert commit is not None
    assert (commit.count, commit.after_id, commit.through_id) == (5, 0, newer[-1].pk)
    assert operations.inbox_state().readings == 9
    assert all(_proven(reading) for reading in Reading.objects.filter(shipment=shipment))
    assert {_proof_commit(r) for r in old} == {legacy}
    assert {_proof_commit(r) for r in [*left_out, *newer[1:]]} == {commit}
    assert list(services.shipments_uncommitted()) == []
    assert services.readings_commit(shipment) is None
    [next_one] = _stored_by_hand(shipment, logger, 1, at=VECTOR_RECEIVED)
    assert list(services.shipments_uncommitted()) == [shipment]
    assert operations.inbox_state().readings == 10
    following = services.readings_commit(shipment)
    assert following is not None
    assert (following.count, following.after_id, following.through_id) == (1, commit.through_id, next_one.pk)


def test_a_shipment_whose_readings_cannot_be_committed_holds_back_no_other(
    manufacturer: Persona,
    carrier: Persona,
    pharmacy: Persona,
    logger: Device,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    left = VECTOR_RECEIVED - HOUR
    broken, fine = (_dispatched_shipment(manufacturer, carrier, pharmacy, left=left) for _ in range(2))
    [row] = services.inbox_receive([services.RawMessage(b"x", "mqtt")], enqueue=False)
    for index, shipment in enumerate((broken, fine)):
        Reading.objects.create(
            device=logger, shipment=shipment, message=row, index=index, kind="temperature", value=5.0,
            measured_at=left, received_at=left,
        )  # fmt: skip
    commit = services.readings_commit

    def failing(shipment: Any, **boundary: Any) -> Any:
        if shipment.pk == broken.pk:
            raise FloatingPointError("cannot hash this reading")
        return commit(shipment, **boundary)

    monkeypatch.setattr(services, "readings_commit", failing)
    assert tasks.commit_readings() == 1
    committed = {r.shipment_id: services.reading_proof(r) is not None for r in Reading.objects.all()}
    assert committed == {broken.pk: False, fine.pk: True}
    assert f"could not commit the readings of shipment {broken.pk}" in caplog.text  # tried again next time


def test_committing_readings_stops_when_out_of_time(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - HOUR)
    services.device_assign(actor=manufacturer.user, device=logger, shipment=shipment, starts_at=shipment.dispatched_at)
    receive(VECTOR)

    def out_of_time(shipment: Any, **boundary: Any) -> Any:
        raise SoftTimeLimitExceeded()

    monkeypatch.setattr(services, "readings_commit", out_of_time)
    with pytest.raises(SoftTimeLimitExceeded):  # not taken for one shipment's failure, carrying on to the hard limit
        tasks.commit_readings()


def test_a_commit_run_out_of_time_is_taken_up_where_it_stopped(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readings keep coming for every shipment, and each run has time for one: all are committed in turn."""
    shipments = [_dispatched_shipment(manufacturer, carrier, pharmacy, left=VECTOR_RECEIVED - HOUR) for _ in range(3)]
    commit = services.readings_commit
    committed: list[int] = []
    runs = 0

    def one_a_run(shipment: Any, **boundary: Any) -> Any:
        if len(committed) == runs:
            raise SoftTimeLimitExceeded()
        committed.append(shipment.pk)
        return commit(shipment, **boundary)

    monkeypatch.setattr(services, "readings_commit", one_a_run)
    while runs < 4:
        runs += 1
        for shipment in shipments:
            _stored_by_hand(shipment, logger, 1, at=VECTOR_RECEIVED)
        with pytest.raises(SoftTimeLimitExceeded):
            tasks.commit_readings()
    first, second, third = (shipment.pk for shipment in shipments)
    assert committed == [first, second, third, first]  # not the first every time


@given(
    device_id=st.from_regex(protocol.DEVICE_ID, fullmatch=True),
    seq=st.integers(0, protocol.MAX_SEQ),
    index=st.integers(0, protocol.MAX_RECORDS - 1),
    kind=st.sampled_from(Reading.Kind.values),
    value=st.floats(allow_nan=False, allow_infinity=False),
    measured_at=st.datetimes(
        timezones=st.builds(
            datetime.timezone, st.timedeltas(-datetime.timedelta(hours=23), datetime.timedelta(hours=23))
        )
    ),
)
def test_a_reading_s_leaf_is_its_rfc_8785_canonical_json(
    device_id: str, seq: int, index: int, kind: str, value: float, measured_at: datetime.datetime
) -> None:
    reading = Reading(index=index, kind=kind, value=value, measured_at=measured_at)
    utc = measured_at.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    canonical = {"device": device_id, "seq": seq, "index": index, "kind": kind, "value": value, "measured_at": utc}
    assert services.reading_leaf(reading, device_id, seq) == rfc8785.dumps(canonical)


def test_devices_register_from_the_command_line(manufacturer: Persona) -> None:
    out = io.StringIO()
    call_command("device_register", "LOG-0009", org=manufacturer.organisation.gln, stdout=out)
    private = next(line.split()[-1] for line in out.getvalue().splitlines() if line.startswith("private key"))
    device = Device.objects.get(device_id="LOG-0009")
    public = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(private)).public_key().public_bytes_raw()
    assert bytes(device.public_key) == public
    call_command(
        "device_register", "LOG-0010", org=manufacturer.organisation.gln, public_key=VECTOR_PUBLIC.hex(), stdout=out
    )
    assert bytes(Device.objects.get(device_id="LOG-0010").public_key) == VECTOR_PUBLIC


def test_a_weak_public_key_is_refused_wherever_a_logger_is_registered(manufacturer: Persona) -> None:
    zeros = bytes(32).hex()  # a point of small order: one forged message in four verifies under it
    with pytest.raises(CommandError, match="public_key: the key is a point of small order"):
        call_command("device_register", "LOG-WEAK", org=manufacturer.organisation.gln, public_key=zeros)
    response = manufacturer.client().post(
        "/api/v1/devices/", {"device_id": "LOG-WEAK", "public_key": zeros}, format="json"
    )
    assert response.status_code == 400
    assert "small order" in response.json()["public_key"][0]
    genuine = Ed25519PrivateKey.generate().public_key().public_bytes_raw().hex()
    numbered = manufacturer.client().post("/api/v1/devices/", {"device_id": 1234, "public_key": genuine}, format="json")
    assert numbered.status_code == 400  # a device id is a string: DRF would have made "1234" of it
    assert "device_id" in numbered.json()
    assert not Device.objects.filter(device_id="LOG-WEAK").exists()


# HTTPS ---------------------------------------------------------------------------


def test_https_takes_one_message_as_application_jose(logger: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services.timezone, "now", lambda: VECTOR_RECEIVED)
    response = APIClient().post("/api/v1/ingest/readings", VECTOR, content_type="application/jose")
    assert response.status_code == 202
    assert response.json() == {"results": [{"seq": 42, "outcome": "accepted"}]}
    assert Reading.objects.count() == 4


def test_https_takes_a_docked_loggers_buffer(logger: Device, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(services.timezone, "now", lambda: VECTOR_RECEIVED)
    other = signed(43, [{"n": "temp", "u": "Cel", "v": 4.0, "t": at(-1)}])
    body = {"messages": [VECTOR.decode(), other.decode(), VECTOR.decode(), "junk", "ünïcode", {"a": 1}, 7]}
    response = APIClient().post("/api/v1/ingest/readings", body, format="json")
    assert response.status_code == 202
    malformed = {"seq": None, "outcome": "rejected", "reason": "malformed"}
    assert response.json()["results"] == [
        {"seq": 42, "outcome": "accepted"},
        {"seq": 43, "outcome": "accepted"},
        {"seq": 42, "outcome": "duplicate"},
        *[malformed] * 4,  # each stored and rejected on its own, holding back none of the others
    ]
    kept = InboxMessage.objects.filter(reason="malformed").order_by("id").values_list("raw", flat=True)
    assert [bytes(raw) for raw in kept] == [b"junk", "ünïcode".encode(), b'{"a": 1}', b"7"]


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"garbage", "application/jose"),
        (b'{"messages": []}', "application/json"),
        (b"[1]", "application/json"),
        (b"", "application/jose"),
        (b"", "application/json"),
        (b"", ""),
    ],
)
def test_https_refuses_what_cannot_be_parsed_at_all(logger: Device, body: bytes, content_type: str) -> None:
    response = APIClient().generic("POST", "/api/v1/ingest/readings", body, content_type=content_type)
    assert response.status_code == 400


@pytest.mark.django_db(transaction=True)
def test_https_answers_with_the_outcome_of_a_worker_that_took_its_messages(logger: Device) -> None:
    # A worker adopting the oldest pending rows may take a request's messages before the request does.
    [row] = services.inbox_receive([services.RawMessage(b"junk", "http")], enqueue=False)
    rejected = {"outcome": "rejected", "reason": "malformed", "detail": "by the worker", "processed_at": timezone.now()}
    [settled] = _held_while(  # the worker still processing when the request looks
        row.pk,
        1,
        lambda: api._settled([row.pk]),
        change=lambda: InboxMessage.objects.filter(pk=row.pk).update(**rejected),
    )
    assert (settled.outcome, settled.reason) == ("rejected", "malformed")  # not "accepted" while it was pending


def _dispatched_shipment(manufacturer: Persona, carrier: Persona, pharmacy: Persona, *, left: datetime.datetime) -> Any:
    from tests.factories import BatchFactory, ProductFactory

    batch = BatchFactory(product=ProductFactory(manufacturer=manufacturer.organisation))
    shipment = traceability.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[traceability.ItemSpec(batch=batch, quantity=10)],
    )
    return traceability.shipment_dispatch(actor=manufacturer.user, shipment=shipment, occurred_at=left)


def test_a_chart_s_first_bucket_starts_with_the_first_reading(
    manufacturer: Persona, carrier: Persona, pharmacy: Persona, logger: Device
) -> None:
    # SQLite keeps times to the millisecond in its date functions: the first reading must not fall before start.
    now = timezone.now().replace(microsecond=0)
    shipment = _dispatched_shipment(manufacturer, carrier, pharmacy, left=now - 3 * HOUR)
    [row] = services.inbox_receive([services.RawMessage(b"x", "mqtt")], enqueue=False)
    first = now - 2 * HOUR + datetime.timedelta(microseconds=924_400)
    for index in range(10):
        Reading.objects.create(
            device=logger, shipment=shipment, message=row, index=index, kind="temperature", value=5.0 + index,
            measured_at=first + index * datetime.timedelta(minutes=10), received_at=now,
        )  # fmt: skip
    response = pharmacy.client().get(f"/api/v1/shipments/{shipment.pk}/readings/", {"points": 10})
    points = response.json()["points"]
    assert datetime.datetime.fromisoformat(points[0]["at"]) >= first - datetime.timedelta(milliseconds=1)
    assert len(points) <= 10
    assert sum(point["count"] for point in points) == 10


def test_https_messages_whose_processing_fails_in_the_request_go_to_the_workers(
    logger: Device, monkeypatch: pytest.MonkeyPatch
) -> None:
    queued: list[list[int]] = []
    monkeypatch.setattr(services, "enqueue_processing", lambda ids: queued.append(list(ids)))
    monkeypatch.setattr(services, "messages_process", lambda ids, adopt: 1 / 0)
    response = APIClient(raise_request_exception=False).post(
        "/api/v1/ingest/readings", VECTOR, content_type="application/jose"
    )
    assert response.status_code == 500
    assert queued == [list(InboxMessage.objects.values_list("pk", flat=True))]  # not left for the sweeper


def test_last_seen_moves_forward_only(logger: Device) -> None:
    receive(VECTOR)
    receive(
        signed(43, [{"n": "temp", "u": "Cel", "v": 4.0, "t": at(-30)}]),
        at=VECTOR_RECEIVED - datetime.timedelta(minutes=20),
    )
    logger.refresh_from_db()
    assert logger.last_seen_at == VECTOR_RECEIVED
    receive(
        signed(44, [{"n": "temp", "u": "Cel", "v": 4.0, "t": at(1)}]),
        at=VECTOR_RECEIVED + datetime.timedelta(minutes=2),
    )
    logger.refresh_from_db()
    assert logger.last_seen_at == VECTOR_RECEIVED + datetime.timedelta(minutes=2)
