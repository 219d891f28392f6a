from __future__ import annotations

from django.apps import AppConfig


class IotIngestConfig(AppConfig):
    name = "iot_ingest"
    verbose_name = "IoT ingest"
