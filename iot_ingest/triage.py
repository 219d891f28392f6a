"""Which inbox messages to process first: those that appear to break their shipment's contract.

Behind a backlog (the workers slower than the loggers for a while, a fleet
uploading its buffers after an outage) a reading that breaks the contract
would otherwise wait its turn behind every calm one. As messages enter the
inbox, each is read at a glance (``protocol.peek``: nothing is verified) and
marked ``urgent`` when a temperature in it is not calm for the shipment its
logger rides now (``coldchain.calm``); processing takes urgent messages
before older ones. The mark only orders the work: the worker verifies and
judges an urgent message like any other, and a forged or mistaken mark costs
nothing but a place in the queue.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from iot_ingest import evaluation, protocol
from iot_ingest.models import DeviceAssignment

logger = logging.getLogger(__name__)

KEEP_SECONDS = 60.0  # how long a process trusts what it found of a logger's ride: assignments change rarely
KEPT_LOGGERS = 10_000
_rides: dict[str, tuple[float, int | None]] = {}  # device id -> (good until, the shipment it rides now, or None)


def urgent(messages: Sequence[bytes]) -> list[bool]:
    """For each raw message, whether it appears to carry a temperature outside its shipment's calm band.

    Never raises: a failed lookup (the database busy) marks nothing urgent,
    and the messages are processed in their turn, as without triage.
    """
    glances = [protocol.peek(raw) for raw in messages]
    try:
        with transaction.atomic():  # a savepoint when the caller's transaction is open: a failure here spoils none
            rides = _rides_of({glance[0] for glance in glances if glance and glance[1]})
            calm = evaluation.calm_bands(set(rides.values()))
        bands = {device: calm[shipment] for device, shipment in rides.items() if shipment in calm}
    except Exception:
        logger.warning("triage could not look up the loggers' shipments; nothing marked urgent", exc_info=True)
        return [False] * len(messages)
    return [
        glance is not None
        and (band := bands.get(glance[0])) is not None
        and not all(band[0] < value < band[1] for value in glance[1])
        for glance in glances
    ]


def _rides_of(device_ids: set[str]) -> dict[str, int]:
    """The shipment each of the loggers that rides one now rides (kept for ``KEEP_SECONDS``, and so is riding
    none); their contracts are evaluation's to keep."""
    now = time.monotonic()
    found = {device: entry[1] for device in device_ids if (entry := _rides.get(device)) and now < entry[0]}
    missing = device_ids - found.keys()
    if missing:
        moment = timezone.now()
        riding = dict(
            DeviceAssignment.objects.filter(device__device_id__in=missing, starts_at__lte=moment)
            .filter(Q(ends_at__isnull=True) | Q(ends_at__gt=moment))
            .values_list("device__device_id", "shipment_id")
        )
        if len(_rides) > KEPT_LOGGERS:
            _rides.clear()
        for device in missing:
            found[device] = riding.get(device)
            _rides[device] = (now + KEEP_SECONDS, found[device])
    return {device: shipment for device, shipment in found.items() if shipment is not None}


def forget() -> None:
    """Drops what this process kept of the loggers' rides (tests: ids are reused after a rollback)."""
    _rides.clear()
