"""Readings become excursions, alerts and ledger entries: exactly once, whatever the order of arrival."""

from __future__ import annotations

import datetime
import json
import random
from typing import Any

import pytest
import time_machine
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.core.cache import cache
from django.utils import timezone

from iot_ingest import evaluation, protocol, services, tasks
from iot_ingest.models import Device, Reading
from ledger import services as ledger
from ledger.models import Entry, PendingEvent
from tests.conftest import Persona
from tests.factories import BatchFactory, ProductFactory
from traceability import coldchain
from traceability import services as traceability
from traceability.models import Alert, Excursion, Shipment

pytestmark = pytest.mark.django_db
MINUTE = datetime.timedelta(minutes=1)


class Logger:
    """A logger on a shipment that left 12 h 27 min ago, reporting every 5 minutes, 12 readings a message."""

    def __init__(self, owner: Persona, shipment: Shipment) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.device, _ = services.device_register(
            device_id="LOG-T1", organisation=owner.organisation, public_key=self.key.public_key().public_bytes_raw()
        )
        services.device_assign(
            actor=owner.user, device=self.device, shipment=shipment, starts_at=shipment.dispatched_at
        )
        self.start = shipment.dispatched_at
        self.seq = 0

    def messages(self, temperatures: list[float]) -> list[bytes]:
        """Signed messages for one reading every 5 minutes from dispatch on."""
        raws = []
        for first in range(0, len(temperatures), 12):
            records = [
                {"n": "temp", "u": "Cel", "t": (self.start + 5 * MINUTE * i).timestamp(), "v": temperatures[i]}
                for i in range(first, min(first + 12, len(temperatures)))
            ]
            self.seq += 1
            raws.append(protocol.message(self.key, self.device.device_id, self.seq, records))
        return raws


def deliver(raws: list[bytes], shipment: Shipment, *, received_at: datetime.datetime | None = None) -> list[Alert]:
    rows = services.inbox_receive([services.RawMessage(raw, "mqtt", "", received_at) for raw in raws], enqueue=False)
    services.messages_process([row.pk for row in rows])
    return evaluation.shipment_evaluate(shipment.pk)


@pytest.fixture
def shipment(manufacturer: Persona, carrier: Persona, pharmacy: Persona) -> Shipment:
    batch = BatchFactory(product=ProductFactory(manufacturer=manufacturer.organisation, stability_budget_minutes=240))
    planned = traceability.shipment_create(
        actor=manufacturer.user,
        carrier=carrier.organisation,
        consignee=pharmacy.organisation,
        origin=manufacturer.site,
        destination=pharmacy.site,
        items=[traceability.ItemSpec(batch=batch, quantity=10)],
    )
    return traceability.shipment_dispatch(
        actor=manufacturer.user, shipment=planned, occurred_at=timezone.now() - datetime.timedelta(minutes=747)
    )


def warm_day() -> list[float]:
    """5 °C for an hour, then 9.5 °C for 11 hours (a failed reefer), then back to 5 °C for 30 minutes."""
    return [5.0] * 12 + [9.5] * 132 + [5.0] * 6


def ledger_facts() -> list[dict[str, Any]]:
    ledger.entries_sequence()
    return [json.loads(bytes(entry.leaf)) for entry in Entry.objects.order_by("seq")]


def monitoring(facts: list[dict[str, Any]]) -> list[str]:
    kinds = ("excursion.started", "excursion.ended", "contract.breached")
    return sorted(f"{fact['type']} {fact['data'].get('rule', '')}".strip() for fact in facts if fact["type"] in kinds)


def test_a_failed_reefer_raises_each_rule_once_and_records_the_excursion(
    manufacturer: Persona, shipment: Shipment
) -> None:
    logger = Logger(manufacturer, shipment)
    raised = deliver(logger.messages(warm_day()), shipment)
    assert sorted(alert.key for alert in raised) == [
        "rule:early warning, warm",
        "rule:heat excursion",
        "rule:stability budget 50 %",
        "rule:stability budget 80 %",
        "rule:stability budget spent",
    ]
    severities = {alert.key: alert.severity for alert in raised}
    assert severities["rule:heat excursion"] == "alarm"
    assert severities["rule:stability budget spent"] == "critical"
    [excursion] = Excursion.objects.filter(shipment=shipment)
    assert excursion.direction == "above"
    assert excursion.started_at == logger.start + 60 * MINUTE
    assert excursion.ended_at == logger.start + 720 * MINUTE
    assert excursion.peak_celsius == 9.5
    assert monitoring(ledger_facts()) == [
        "contract.breached rule:stability budget spent",
        "excursion.ended",
        "excursion.started",
    ]


def test_evaluating_again_raises_nothing_and_appends_nothing(manufacturer: Persona, shipment: Shipment) -> None:
    logger = Logger(manufacturer, shipment)
    deliver(logger.messages(warm_day()), shipment)
    alerts, entries = Alert.objects.count(), PendingEvent.objects.count()
    assert evaluation.shipment_evaluate(shipment.pk) == []
    assert evaluation.shipment_evaluate(shipment.pk) == []
    assert (Alert.objects.count(), PendingEvent.objects.count()) == (alerts, entries)


def test_readings_in_any_order_and_duplicated_give_the_same_outcome(manufacturer: Persona, shipment: Shipment) -> None:
    logger = Logger(manufacturer, shipment)
    messages = logger.messages(warm_day())
    shuffled = messages + messages[::3]
    random.Random(7).shuffle(shuffled)
    for start in range(0, len(shuffled), 2):  # arrives bit by bit, evaluated each time
        deliver(shuffled[start : start + 2], shipment)
    # While buffers arrive out of order the logger really was silent for a while, so
    # "gap" alerts may have been raised on the way; every contract rule fired once.
    rules = Alert.objects.filter(shipment=shipment).exclude(key="gap")
    assert sorted(rules.values_list("key", flat=True)) == [
        "rule:early warning, warm",
        "rule:heat excursion",
        "rule:stability budget 50 %",
        "rule:stability budget 80 %",
        "rule:stability budget spent",
    ]
    [excursion] = Excursion.objects.filter(shipment=shipment)
    assert (excursion.started_at, excursion.ended_at) == (logger.start + 60 * MINUTE, logger.start + 720 * MINUTE)
    assert monitoring(ledger_facts()) == [
        "contract.breached rule:stability budget spent",
        "excursion.ended",
        "excursion.started",
    ]


def test_an_open_alert_is_not_raised_again_until_resolved(
    manufacturer: Persona, carrier: Persona, shipment: Shipment
) -> None:
    logger = Logger(manufacturer, shipment)
    # Two hot spells of 40 minutes: the early warning fires in both.
    spells = [5.0] * 12 + [9.0] * 8 + [5.0] * 12 + [9.0] * 8 + [5.0] * 4
    deliver(logger.messages(spells[:32]), shipment)
    [first] = Alert.objects.filter(key="rule:early warning, warm")
    deliver(logger.messages(spells)[2:], shipment)
    assert Alert.objects.filter(key="rule:early warning, warm").count() == 1  # still open: no flood
    traceability.alert_resolve(actor=carrier.user, alert=first, comment="Reefer reset.")
    later = [5.0] * 48 + [9.0] * 8
    deliver(logger.messages(later)[4:], shipment)
    assert Alert.objects.filter(key="rule:early warning, warm").count() == 2


def test_staff_acknowledge_and_resolve_alerts_through_the_api(
    manufacturer: Persona, carrier: Persona, regulator: Persona, competitor: Persona, shipment: Shipment
) -> None:
    logger = Logger(manufacturer, shipment)
    deliver(logger.messages([5.0] * 12 + [26.0] * 2), shipment)
    alert = Alert.objects.get(key="rule:hard ceiling")
    assert alert.severity == "critical"
    listed = carrier.client().get("/api/v1/alerts/", {"status": "open", "severity": "critical"}).json()
    assert [item["id"] for item in listed["results"]] == [alert.pk]
    assert competitor.client().get(f"/api/v1/alerts/{alert.pk}/").status_code == 404
    assert regulator.client().post(f"/api/v1/alerts/{alert.pk}/acknowledge", {}, format="json").status_code == 403
    response = carrier.client().post(
        f"/api/v1/alerts/{alert.pk}/acknowledge", {"comment": "Driver checking the unit."}, format="json"
    )
    assert response.status_code == 200
    assert (response.json()["status"], response.json()["acknowledged_by"]) == ("acknowledged", "carrier")
    again = carrier.client().post(f"/api/v1/alerts/{alert.pk}/acknowledge", {}, format="json")
    assert again.status_code == 400
    unexplained = manufacturer.client().post(f"/api/v1/alerts/{alert.pk}/resolve", {}, format="json")
    assert unexplained.status_code == 400
    done = manufacturer.client().post(
        f"/api/v1/alerts/{alert.pk}/resolve", {"comment": "Batch quarantined."}, format="json"
    )
    assert done.json()["status"] == "resolved"
    types = [fact["type"] for fact in ledger_facts()]
    assert types.count("alert.acknowledged") == 1
    assert types.count("alert.resolved") == 1


def test_the_readings_api_downsamples_for_charts(manufacturer: Persona, pharmacy: Persona, shipment: Shipment) -> None:
    logger = Logger(manufacturer, shipment)
    deliver(logger.messages(warm_day()), shipment)
    response = pharmacy.client().get(f"/api/v1/shipments/{shipment.pk}/readings/", {"points": 10})
    points = response.json()["points"]
    assert 8 <= len(points) <= 10  # the 12.5 h spread over the buckets, not all in one
    times = [datetime.datetime.fromisoformat(point["at"]) for point in points]
    assert times == sorted(times)
    assert times[0] >= shipment.dispatched_at - datetime.timedelta(hours=2)  # in the shipment's time, not 1970
    assert sum(point["count"] for point in points) == len(warm_day())
    assert max(point["max"] for point in points) == 9.5
    assert min(point["min"] for point in points) == 5.0
    excursions = pharmacy.client().get(f"/api/v1/shipments/{shipment.pk}/excursions/").json()["results"]
    assert [(e["direction"], e["peak_celsius"]) for e in excursions] == [("above", 9.5)]


def test_a_logger_of_another_owner_cannot_be_put_on_a_shipment(
    manufacturer: Persona, carrier: Persona, shipment: Shipment
) -> None:
    Logger(manufacturer, shipment)
    response = carrier.client().post(f"/api/v1/shipments/{shipment.pk}/devices", {"device_id": "LOG-T1"}, format="json")
    assert response.status_code == 400
    assert "device_id" in response.json()
    assert Device.objects.get(device_id="LOG-T1").assignments.count() == 1


def test_a_buffer_uploaded_late_is_not_a_silent_logger(manufacturer: Persona, shipment: Shipment) -> None:
    logger = Logger(manufacturer, shipment)
    raised = deliver(logger.messages([5.0] * 24), shipment)  # the first two hours, arriving now
    assert [alert.key for alert in raised] == []


def test_a_logger_silent_for_longer_than_the_gap_limit_raises_a_data_gap(
    manufacturer: Persona, shipment: Shipment
) -> None:
    logger = Logger(manufacturer, shipment)
    quiet_since = timezone.now() - 30 * MINUTE
    raised = deliver(logger.messages([5.0] * 24), shipment, received_at=quiet_since)
    assert [alert.key for alert in raised] == ["gap"]
    assert raised[0].severity == "warning"


def test_a_late_reading_moves_the_excursion_end_earlier(manufacturer: Persona, shipment: Shipment) -> None:
    logger = Logger(manufacturer, shipment)
    hot_hour = [5.0] * 12 + [9.0] * 12 + [5.0] * 12
    messages = [
        protocol.message(logger.key, "LOG-T1", i + 1, [record]) for i, record in enumerate(_records(logger, hot_hour))
    ]
    back_in_range = messages[24]
    deliver(messages[:24] + messages[25:], shipment)
    assert Excursion.objects.get().ended_at == logger.start + 125 * MINUTE
    deliver([back_in_range], shipment)
    excursion = Excursion.objects.get()
    assert excursion.ended_at == logger.start + 120 * MINUTE
    assert excursion.duration_seconds == 3600
    assert [fact["type"] for fact in ledger_facts()].count("excursion.ended") == 1


def test_a_data_gap_filled_by_late_readings_resolves_its_alert(manufacturer: Persona, shipment: Shipment) -> None:
    logger = Logger(manufacturer, shipment)
    messages = [protocol.message(logger.key, "LOG-T1", i + 1, [r]) for i, r in enumerate(_records(logger, [5.0] * 149))]
    deliver(messages[:20] + messages[40:], shipment)
    [gap] = Alert.objects.filter(key="gap")
    deliver(messages[20:40], shipment)
    gap.refresh_from_db()
    assert gap.status == "resolved"
    assert "arrived late" in gap.resolution
    assert "alert.resolved" in [fact["type"] for fact in ledger_facts()]


def test_a_spent_stability_budget_is_a_breach_once_whatever_the_order(
    manufacturer: Persona, carrier: Persona, shipment: Shipment
) -> None:
    logger = Logger(manufacturer, shipment)
    warm = [5.0] * 12 + [9.5] * 60 + [5.0] * 12  # five hours above: the 4 h budget is spent
    messages = [protocol.message(logger.key, "LOG-T1", i + 1, [r]) for i, r in enumerate(_records(logger, warm))]
    deliver(messages[20:], shipment)  # the last 260 minutes above 8 °C arrive first
    spent = Alert.objects.get(key="rule:stability budget spent")
    traceability.alert_resolve(actor=carrier.user, alert=spent, comment="QA informed.")
    deliver(messages[:20], shipment)  # then the start of the excursion: the budget was spent earlier
    assert Alert.objects.filter(key="rule:stability budget spent").count() == 1
    assert [fact["type"] for fact in ledger_facts()].count("contract.breached") == 1


def _records(logger: Logger, temperatures: list[float]) -> list[dict[str, Any]]:
    return [
        {"n": "temp", "u": "Cel", "t": (logger.start + 5 * MINUTE * i).timestamp(), "v": value}
        for i, value in enumerate(temperatures)
    ]


def count_fed(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """From now on, how many readings each ``Monitor.feed_micros`` call is given, in call order."""
    fed: list[int] = []
    feed = coldchain.Monitor.feed_micros
    monkeypatch.setattr(
        coldchain.Monitor, "feed_micros", lambda self, readings: fed.append(len(readings)) or feed(self, readings)
    )
    return fed


Queued = list[tuple[list[int], int | None]]


@pytest.fixture
def queued(monkeypatch: pytest.MonkeyPatch) -> Queued:
    """The evaluation tasks queued, as (shipment ids, countdown), instead of sent."""
    sent: Queued = []
    monkeypatch.setattr(
        tasks.evaluate_shipments, "apply_async", lambda args, countdown=None: sent.append((args[0], countdown))
    )
    return sent


def test_a_reading_out_of_range_is_evaluated_at_once_by_its_worker_and_calm_ones_together_within_seconds(
    manufacturer: Persona,
    shipment: Shipment,
    queued: Queued,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    evaluated: list[int] = []
    evaluate = evaluation.shipment_evaluate
    monkeypatch.setattr(evaluation, "shipment_evaluate", lambda pk: evaluated.append(pk) or evaluate(pk))
    logger = Logger(manufacturer, shipment)

    def receive(temperatures: list[float]) -> None:
        rows = services.inbox_receive(
            [services.RawMessage(r, "mqtt") for r in logger.messages(temperatures)], enqueue=False
        )
        with django_capture_on_commit_callbacks(execute=True):
            services.messages_process([row.pk for row in rows])

    receive([5.0, 5.5])
    receive([6.0])  # already queued: taken by the same evaluation
    assert (queued, evaluated) == ([([shipment.pk], evaluation.CALM_SECONDS)], [])
    receive([5.0, 9.0])  # evaluated here, after the commit, not queued behind other work
    assert (queued[1:], evaluated) == ([], [shipment.pk])

    receive([5.0])  # that evaluation has read every reading so far: a later one needs another
    assert queued[1:] == [([shipment.pk], evaluation.CALM_SECONDS)]


def test_an_evaluation_task_out_of_time_queues_the_rest_anew_still_marked(shipment: Shipment, queued: Queued) -> None:
    later = shipment.pk + 1_000_000  # evaluated after it, in id order
    evaluation.evaluation_request([shipment.pk, later])
    evaluation.shipments_evaluate([shipment.pk, later], seconds=0)  # time for one shipment only

    assert queued[1:] == [([later], None)]  # at once, behind what was queued meanwhile
    assert cache.get(f"{evaluation.CALM}:{later}") == 1  # still queued: no other evaluation is queued for it
    assert cache.get(f"{evaluation.CALM}:{shipment.pk}") is None


def test_the_rest_stays_marked_however_long_it_waits_behind_other_work(shipment: Shipment, queued: Queued) -> None:
    later = shipment.pk + 1_000_000
    evaluation.evaluation_request([shipment.pk, later])
    with time_machine.travel(timezone.now() + datetime.timedelta(seconds=evaluation.CALM_SECONDS + 1)):
        evaluation.shipments_evaluate([shipment.pk, later], seconds=0)  # the request's marks are about to lapse
    with time_machine.travel(timezone.now() + datetime.timedelta(seconds=evaluation.CALM_SECONDS + 4)):
        evaluation.evaluation_request([later])  # a batch of its readings commits while the rest still waits

    assert queued[1:] == [([later], None)]  # no second evaluation queued


def test_an_urgent_evaluation_that_fails_is_queued_and_the_readings_stay_stored(
    manufacturer: Persona,
    shipment: Shipment,
    queued: Queued,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Any,
) -> None:
    def broken(pk: int) -> list[Any]:
        raise RuntimeError("database went away")

    monkeypatch.setattr(evaluation, "shipment_evaluate", broken)
    rows = services.inbox_receive(
        [services.RawMessage(r, "mqtt") for r in Logger(manufacturer, shipment).messages([9.5])], enqueue=False
    )
    with django_capture_on_commit_callbacks(execute=True):
        counts = services.messages_process([row.pk for row in rows])

    assert counts == {"accepted": 1}
    assert queued == [([shipment.pk], None)]
    assert Reading.objects.filter(shipment=shipment, value=9.5).count() == 1


def test_an_evaluation_reads_only_the_readings_that_arrived_since_the_last_one(
    manufacturer: Persona, shipment: Shipment, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = Logger(manufacturer, shipment)
    messages = [
        protocol.message(logger.key, "LOG-T1", i + 1, [record])
        for i, record in enumerate(_records(logger, [5.0] * 12 + [9.0] * 12 + [5.0] * 4))
    ]
    deliver(messages[:-1], shipment)
    fed = count_fed(monkeypatch)

    deliver(messages[-1:], shipment)

    assert fed == [1]
    assert Excursion.objects.get().ended_at == logger.start + 120 * MINUTE
    facts = ("started_at", "ended_at", "peak_celsius", "duration_seconds")
    incremental = Excursion.objects.values_list(*facts).get()
    alerts = list(Alert.objects.order_by("id").values_list("key", "triggered_at"))
    evaluation.watches_forget()  # a process that never saw this shipment judges all its readings: the same
    assert evaluation.shipment_evaluate(shipment.pk) == []
    assert fed[-1] == 28
    assert (
        Excursion.objects.values_list("started_at", "ended_at", "peak_celsius", "duration_seconds").get() == incremental
    )
    assert list(Alert.objects.order_by("id").values_list("key", "triggered_at")) == alerts


def test_a_late_reading_rewinds_the_evaluation_to_an_earlier_one_and_reads_only_what_came_after(
    manufacturer: Persona, shipment: Shipment, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = Logger(manufacturer, shipment)
    records = _records(logger, [5.0] * 10 + [9.0] * 8 + [5.0] * 10)
    messages = [protocol.message(logger.key, "LOG-T1", i + 1, [record]) for i, record in enumerate(records)]
    late = messages.pop(14)  # measured at 70 min, in the excursion; sent after everything else
    for start in range(0, len(messages), 3):  # an evaluation every three readings: a checkpoint each
        deliver(messages[start : start + 3], shipment)
    fed = count_fed(monkeypatch)

    deliver([late], shipment)

    # back to the evaluation whose last reading was at 55 min (12, 13 and 15 came next); fed again from
    # 60 min on: 16 of the 28 readings
    assert fed == [16]
    facts = ("started_at", "ended_at", "peak_celsius", "duration_seconds")
    rewound = Excursion.objects.values_list(*facts).get()
    alerts = list(Alert.objects.order_by("id").values_list("key", "triggered_at"))
    evaluation.watches_forget()
    assert evaluation.shipment_evaluate(shipment.pk) == []
    assert fed[-1] == 28  # judged from scratch: the same excursion and alerts
    assert Excursion.objects.values_list(*facts).get() == rewound
    assert list(Alert.objects.order_by("id").values_list("key", "triggered_at")) == alerts


def test_a_long_read_is_checkpointed_before_its_end_too_so_a_reading_late_by_a_little_rewinds_a_little(
    manufacturer: Persona, shipment: Shipment, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = Logger(manufacturer, shipment)
    records = _records(logger, [5.0] * 140)
    messages = [protocol.message(logger.key, "LOG-T1", i + 1, [record]) for i, record in enumerate(records)]
    late = messages.pop(120)
    deliver(messages, shipment)  # one read of 139 readings: checkpoints after 70, 105 and 139 of them
    fed = count_fed(monkeypatch)

    deliver([late], shipment)

    assert fed == [35]  # from the checkpoint after 105 readings: the 35 after it, the late one among them


def test_a_verdict_is_applied_once_whichever_process_evaluates_it_and_a_new_one_again(
    manufacturer: Persona, shipment: Shipment, monkeypatch: pytest.MonkeyPatch
) -> None:
    logger = Logger(manufacturer, shipment)
    deliver(logger.messages([5.0] * 12 + [9.0] * 12), shipment)
    applied: list[int] = []
    apply = traceability.monitoring_apply
    monkeypatch.setattr(traceability, "monitoring_apply", lambda **kw: applied.append(1) or apply(**kw))

    evaluation.shipment_evaluate(shipment.pk)
    evaluation.watches_forget()  # another process, which never saw this shipment: the verdict is the shipment's
    evaluation.shipment_evaluate(shipment.pk)
    assert applied == []
    peak = {"n": "temp", "u": "Cel", "t": (logger.start + 24 * 5 * MINUTE).timestamp(), "v": 9.5}
    deliver([protocol.message(logger.key, "LOG-T1", 99, [peak])], shipment)  # a new peak: a new verdict
    assert applied == [1]
    assert Excursion.objects.get().peak_celsius == 9.5
    evaluation.shipment_evaluate(shipment.pk)
    assert applied == [1]
    Shipment.objects.filter(pk=shipment.pk).update(verdict=b"")  # say, applied before this field existed
    evaluation.shipment_evaluate(shipment.pk)
    assert applied == [1, 1]
