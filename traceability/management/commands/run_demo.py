"""Runs the embedded platform for `make demo`: web server, Celery worker and beat; Ctrl-C stops all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Runs the web server and a Celery worker with beat (ledger sequencing, checkpoints) until Ctrl-C."

    def handle(self, *args: Any, **options: Any) -> None:
        commands = {
            "web": [sys.executable, "manage.py", "runserver", "127.0.0.1:8000", "--noreload"],
            "worker": [
                sys.executable, "-m", "celery", "-A", "traceability", "worker", "--beat", "--pool", "solo",
                "--loglevel", "WARNING", "--schedule", str(settings.VAR_DIR / "celerybeat-schedule"),
            ],
        }  # fmt: skip
        processes = {name: subprocess.Popen(command) for name, command in commands.items()}  # noqa: S603
        self.stdout.write(f"ColdTrace is running on {settings.BASE_URL}/ (Ctrl-C stops it)")
        try:
            while all(process.poll() is None for process in processes.values()):
                time.sleep(0.5)
            stopped = [name for name, process in processes.items() if process.poll() is not None]
            self.stderr.write(f"{', '.join(stopped)} stopped; shutting down the rest")
        except KeyboardInterrupt:
            pass
        finally:
            for process in processes.values():
                if process.poll() is None:
                    process.send_signal(signal.SIGTERM)
            for process in processes.values():
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
