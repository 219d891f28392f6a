"""Log lines that can be followed across processes: JSON on stdout, each carrying its request or task id.

``RequestIdMiddleware`` gives every HTTP request an id (the caller's
``X-Request-ID`` when it looks like one, else a new one), returns it in the
response header and logs one line per request. Celery's ``task_prerun`` and
``task_postrun`` signals do the same for a task's id and name. ``ContextFilter``
copies both onto every log record, whichever logger wrote it, and
``JsonFormatter`` writes one JSON object per line. ``LOGGING`` in
``settings.py`` wires them together (``LOG_FORMAT``: ``json`` or ``text``).
"""

from __future__ import annotations

import contextvars
import datetime
import json
import logging
import re
import time
import uuid
from collections.abc import Callable
from typing import Any

from celery.signals import task_postrun, task_prerun
from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse

REQUEST_ID_HEADER = "X-Request-ID"
# What a proxy or a caller may reasonably send (UUIDs, hex, ULIDs, nginx's $request_id);
# anything else (too long, spaces, quotes, newlines) is replaced, so it never forges log lines.
SANE_REQUEST_ID = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._:-]{7,127}\Z")
QUIET_PATHS = frozenset({"/health/"})  # polled every few seconds: logged at DEBUG only

current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
current_task: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("task", default=None)

logger = logging.getLogger("coldtrace.request")

# The attributes every LogRecord has; anything else on a record came from ``extra=`` and is logged as a field.
# ``request`` (Django's HttpRequest on django.request records) is left out: its repr has the query string.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {
    "message",
    "asctime",
    "request_id",
    "task_id",
    "task",
    "request",
}


def incoming_request_id(value: str | None) -> str:
    """The caller's id when it is sane, else a fresh one (32 hex digits)."""
    if value and SANE_REQUEST_ID.match(value):
        return value
    return uuid.uuid4().hex


class RequestIdMiddleware:
    """Sets the request id for everything the request logs; answers it in ``X-Request-ID``; logs the request."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        rid = incoming_request_id(request.headers.get(REQUEST_ID_HEADER))
        # Kept until request_finished, not reset here: Django logs a 4xx/5xx ("Not Found: ...") after
        # the middleware has returned.
        current_request_id.set(rid)
        started = time.monotonic()
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = rid
        level = logging.DEBUG if request.path in QUIET_PATHS else logging.INFO
        # The path without its query string: queries may carry identifiers worth keeping out of logs.
        logger.log(
            level,
            "%s %s %s",
            request.method,
            request.path,
            response.status_code,
            extra={
                "method": request.method,
                "path": request.path,
                "status": response.status_code,
                "duration_ms": round((time.monotonic() - started) * 1000, 1),
            },
        )
        return response


class ContextFilter(logging.Filter):
    """Adds ``request_id``, ``task_id`` and ``task`` (None outside a request or task) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = current_request_id.get()
        current = current_task.get()
        record.task_id, record.task = current if current else (None, None)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC), level, logger, message, ids, ``extra`` fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in ("request_id", "task_id", "task"):
            if getattr(record, name, None):
                line[name] = getattr(record, name)
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """The developer's format: time, level, logger, message, then the request or task id when there is one."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:  # before the traceback, if any
        text = super().formatMessage(record)
        request_id, task_id = getattr(record, "request_id", None), getattr(record, "task_id", None)
        if request_id:
            text += f" [request {request_id}]"
        if task_id:
            text += f" [task {getattr(record, 'task', '')} {task_id}]"
        return text


@request_finished.connect
def _request_finished(**kwargs: Any) -> None:
    current_request_id.set(None)


@task_prerun.connect
def _task_started(task_id: str | None = None, task: Any = None, **kwargs: Any) -> None:
    _task_set(task_id, getattr(task, "name", None))


@task_postrun.connect
def _task_finished(**kwargs: Any) -> None:
    _task_set(None, None)


def _task_set(task_id: str | None, name: str | None) -> None:
    # A worker runs one task at a time per process (or thread): set and clear, no token to keep.
    current_task.set((task_id, name or "") if task_id else None)
