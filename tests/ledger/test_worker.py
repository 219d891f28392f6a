"""The real path: a committed event reaches the ledger through the broker and a Celery worker process."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings
from django.db import connection, transaction

from ledger import services
from ledger.models import Entry
from tests.conftest import require_services, unavailable
from traceability.celery import app as celery_app

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.services, pytest.mark.django_db(transaction=True)]


def _database_url() -> str:
    db = connection.settings_dict
    if connection.vendor != "postgresql":
        return ""
    return f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    url = _database_url()
    if not url:
        unavailable("a worker process needs a database it can share: set DATABASE_URL to PostgreSQL")
    broker = os.environ.get("CELERY_BROKER_URL", "")
    if require_services():
        assert broker.startswith("redis://"), "CI runs the worker against Redis (CELERY_BROKER_URL)"
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "LEDGER_KEY_FILE": str(settings.LEDGER_KEY_FILE),
        "LEDGER_CREATE_KEY": "1",
        "DEBUG": "1",
    }
    command = [sys.executable, "-m", "celery", "-A", "traceability", "worker", "--pool", "solo", "-Q", queue(tmp_path)]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    yield process
    process.terminate()
    process.wait(timeout=30)


def queue(tmp_path: Path) -> str:
    """A queue of this test's own, so no other worker on the broker takes its tasks."""
    return f"coldtrace-test-{tmp_path.name}"


@pytest.fixture
def through_the_broker(tmp_path: Path) -> Iterator[None]:
    """Tasks go to the broker, on this test's queue, instead of running in the test's process."""
    conf = celery_app.conf
    saved = conf.task_always_eager, conf.task_default_queue
    conf.task_always_eager, conf.task_default_queue = False, queue(tmp_path)
    yield
    conf.task_always_eager, conf.task_default_queue = saved


def test_a_committed_event_is_sequenced_by_a_worker_within_seconds(
    worker: subprocess.Popen[bytes], through_the_broker: None
) -> None:
    with transaction.atomic():
        services.entry_append(type="shipment.dispatched", subject="shipment:SHP-1", data={"n": 1}, readers=["org:1"])
    deadline = time.monotonic() + 30
    while not Entry.objects.exists() and time.monotonic() < deadline and worker.poll() is None:
        time.sleep(0.1)
    assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
    entry = Entry.objects.get()
    assert (entry.seq, entry.type, entry.subject) == (0, "shipment.dispatched", "shipment:SHP-1")
