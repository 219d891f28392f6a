"""The sequencer and checkpoint tasks; beat runs them every few seconds as a safety net."""

from __future__ import annotations

from celery import shared_task

from ledger import services


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def sequence() -> int:
    """Turns pending events into entries (woken after every commit that appended one)."""
    return services.entries_sequence()


@shared_task(ignore_result=True, soft_time_limit=60, time_limit=90)
def checkpoint() -> int | None:
    """Sequences, then signs a checkpoint if the tree grew."""
    signed = services.ledger_commit()
    return None if signed is None else signed.size
