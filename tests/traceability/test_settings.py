"""The configuration contract: production is safe by default, every variable documented."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection
from django.test import Client

from tests.conftest import require_services

ROOT = Path(__file__).resolve().parents[2]


def manage(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    # The browser tests' DJANGO_ALLOW_ASYNC_UNSAFE must not leak into a production check.
    ours = ("DEBUG", "SECRET_KEY", "ALLOWED_HOSTS", "DJANGO_ALLOW_ASYNC_UNSAFE")
    clean = {k: v for k, v in os.environ.items() if k not in ours}
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def production_env(**extra: str) -> dict[str, str]:
    return {"DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(60), "ALLOWED_HOSTS": "id.example.com", **extra}


def test_check_deploy_is_clean_with_production_settings() -> None:
    result = manage("check", "--deploy", "--fail-level", "WARNING", **production_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = manage("check", DEBUG="0")
    assert result.returncode != 0
    assert "Set SECRET_KEY" in result.stderr


def test_the_secret_key_can_come_from_a_mounted_file(tmp_path: Path) -> None:
    key_file = tmp_path / "secret"
    key_file.write_text(secrets.token_urlsafe(60) + "\n")
    env = production_env(SECRET_KEY_FILE=str(key_file))
    env["SECRET_KEY"] = ""
    result = manage("check", "--deploy", "--fail-level", "WARNING", **env)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.django_db
def test_health_answers_when_the_database_does() -> None:
    response = Client().get("/health/")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


def test_the_embedded_sqlite_database_runs_in_wal_mode(tmp_path: Path) -> None:
    """WAL lets the web process, workers and ingest read while one of them writes."""
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    code = (
        "from django.db import connection; c = connection.cursor(); "
        "c.execute('PRAGMA journal_mode'); print(c.fetchone()[0])"
    )
    result = manage("shell", "-c", code, DEBUG="1", DATABASE_URL=database)
    assert result.stdout.strip().splitlines()[-1] == "wal", result.stdout + result.stderr


@pytest.mark.django_db
def test_ci_runs_the_suite_on_postgresql() -> None:
    if require_services():
        assert connection.vendor == "postgresql", "CI must run the suite on PostgreSQL (DATABASE_URL)"
    else:
        assert connection.vendor in ("sqlite", "postgresql")
