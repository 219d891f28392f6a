"""The Celery app. JSON only; a task is acknowledged after it ran (at-least-once)."""

from __future__ import annotations

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "traceability.settings")

app = Celery("traceability")
# Every CELERY_* setting in settings.py (serializers, acks_late, prefetch, limits).
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
