"""The Celery app. JSON only; a task is acknowledged after it ran (at-least-once)."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "traceability.settings")

app = Celery("traceability")
# Every CELERY_* setting in settings.py (serializers, acks_late, prefetch, limits).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.task_prerun.connect
@signals.task_postrun.connect
def _connections_checked(task: Any = None, **_: Any) -> None:
    """Before and after each task a worker runs, as Django does around each request: a connection past
    CONN_MAX_AGE, or left unusable by an error or in a transaction, is closed; a sound one is kept for the
    next task. Not around a task run eagerly, in its caller's process and maybe inside its transaction."""
    from django.db import close_old_connections

    if task is not None and not getattr(task.request, "is_eager", False):
        close_old_connections()
