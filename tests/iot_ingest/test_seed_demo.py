"""The demo data: what `make demo` prints leads to working pages."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.test import Client

from iot_ingest.management.commands import seed_demo
from traceability.models import Recall

pytestmark = pytest.mark.django_db


def test_the_demo_prints_the_logins_and_a_consumer_page_that_answers(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.BASE_URL = "https://id.example-pharma.com"
    output = io.StringIO()
    monkeypatch.setattr(seed_demo, "DEVICE_KEYS", tmp_path / "devices.json")  # the demo's own keys stay in var/
    call_command("seed_demo", password="demo-password-for-tests", stdout=output)

    text = output.getvalue()
    assert "with password 'demo-password-for-tests' as:" in text
    [link] = re.findall(r"consumer page \(the address in its QR code\): (\S+)", text)
    path = link.removeprefix(settings.BASE_URL)
    assert re.fullmatch(r"/01/\d{14}/10/[^/]+/21/[^/?]+\?17=\d{6}", path)
    response = Client().get(path)
    assert response.status_code == 200
    assert b"Genuine serial number" in response.content


def test_the_demo_has_a_recall_the_pharmacy_has_yet_to_acknowledge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(seed_demo, "DEVICE_KEYS", tmp_path / "devices.json")
    for _ in range(2):  # idempotent: the second run adds nothing
        call_command("seed_demo", password="demo-password-for-tests", stdout=io.StringIO())

    recall = Recall.objects.get()
    assert (recall.kind, recall.status) == (Recall.Kind.VOLUNTARY, Recall.Status.OPEN)
    waiting = recall.notices.filter(acknowledged_at__isnull=True).values_list("organisation__name", flat=True)
    assert "CityCare Pharmacies" in waiting
