"""Processing on Celery: tasks take inbox ids, own their retries, and are idempotent."""

from __future__ import annotations

import logging

from celery import shared_task
from celery.exceptions import SoftTimeLimitExceeded
from django.db import connection

from iot_ingest import evaluation, partitions, services
from traceability.models import Shipment

logger = logging.getLogger(__name__)


@shared_task(bind=True, ignore_result=True, max_retries=services.MAX_ATTEMPTS + 1, soft_time_limit=60, time_limit=90)
def process_messages(self, ids: list[int], adopt: bool = True) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Turns inbox rows into readings; a row that fails is counted on itself alone, then retried with backoff.

    A batch that took on other tasks' rows and failed is tried again at once
    on its own rows only. If those fail too, they are split in halves, and
    halves of halves, down to the rows that fail on their own: the others
    are processed meanwhile, and only the failing rows count a failed
    attempt and are tried again. So one message that cannot be processed
    never takes the rows it happened to share a task with to the dead letters.
    """
    try:
        return services.messages_process(ids, adopt=adopt)
    except Exception as error:
        if adopt:
            raise self.retry(exc=error, countdown=0, kwargs={"ids": ids, "adopt": False}) from error
        failing = _failing_alone(ids, error)
        if not failing:
            return {}
        countdown = min(2**self.request.retries, 60)
        raise self.retry(exc=error, countdown=countdown, kwargs={"ids": failing, "adopt": False}) from error


def _failing_alone(ids: list[int], error: BaseException) -> list[int]:
    """The rows among ``ids`` (which failed together with ``error``) that fail on their own, each counted."""
    if len(ids) == 1:
        services.inbox_failed(ids, error)
        return ids
    failing = []
    middle = len(ids) // 2
    for half in (ids[:middle], ids[middle:]):
        try:
            services.messages_process(half, adopt=False)
        except SoftTimeLimitExceeded:
            raise  # out of time: what is left stays pending, for the sweeper
        except Exception as half_error:
            failing += _failing_alone(half, half_error)
    return failing


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def evaluate_shipments(shipment_ids: list[int]) -> int:
    """Evaluates the shipments' contracts, a slice of time at a time; returns how many alerts they raised."""
    return len(evaluation.shipments_evaluate(shipment_ids, seconds=evaluation.EVALUATION_SLICE))


@shared_task(ignore_result=True)
def sweep_inbox() -> int:
    """Beat: re-queues inbox rows that stayed pending (their task was lost)."""
    return services.inbox_sweep()


@shared_task(ignore_result=True)
def evaluate_moving() -> int:
    """Beat: evaluates every moving shipment, so data gaps alert even when no reading arrives."""
    ids = evaluation.moving_shipments()
    evaluation.evaluation_request(ids)
    return len(ids)


@shared_task(ignore_result=True, soft_time_limit=120, time_limit=150)
def commit_readings() -> int:
    """Beat: a ``readings.committed`` ledger entry per shipment with new readings; returns how many were made.

    Each shipment's commit is its own transaction: one that fails is logged
    and tried again next time, and holds back no other shipment's. The
    shipments committed longest ago go first, so a run out of time leaves
    the others for the next, which starts with them.
    """
    made = 0
    boundaries = services.readings_boundaries()  # one wait for the writes in flight, for every shipment
    shipments = Shipment.objects.in_bulk(boundaries)
    for pk, through in boundaries.items():  # in the order given: committed longest ago first
        shipment = shipments[pk]
        try:
            made += services.readings_commit(shipment, through=through) is not None
        except SoftTimeLimitExceeded:
            raise  # out of time: the rest waits for the next run
        except Exception:
            logger.exception("could not commit the readings of shipment %s; trying the others", shipment.pk)
    return made


@shared_task(ignore_result=True, soft_time_limit=120, time_limit=150)
def readings_partitions_ahead(months_ahead: int = partitions.MONTHS_AHEAD) -> list[str]:
    """Beat (daily): the readings table's partitions for the months ahead; returns those it created.

    Does nothing on SQLite, nor on PostgreSQL before an operator converted the
    table with ``manage.py readings_partition`` (a conversion locks ingest for
    as long as it copies the readings: never a surprise from beat).
    """
    if connection.vendor != "postgresql":
        return []
    return partitions.readings_partition(months_ahead=months_ahead, convert=False).created
