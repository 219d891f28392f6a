"""GS1's EPCIS 2.0 JSON Schema (shipped in ``schema/``), and the errors a document has against it."""

from __future__ import annotations

import datetime
import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft7Validator, FormatChecker  # type: ignore[import-untyped]  # no stubs published

SCHEMA_PATH = Path(__file__).parent / "schema" / "EPCIS-JSON-Schema.json"
MAX_ERRORS = 50

# RFC 3339 date-time (JSON Schema's "date-time"), with the offset it requires.
_DATE_TIME = re.compile(r"\d{4}-\d\d-\d\d[Tt]\d\d:\d\d:\d\d(\.\d+)?([Zz]|[+-]\d\d:\d\d)")
# RFC 3986 absolute URI: a scheme, then no spaces or control characters.
_URI = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*:[^\s\x00-\x1f\x7f<>\"{}|\\^`]+")

_formats = FormatChecker(formats=())


@_formats.checks("date-time")
def _is_date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _DATE_TIME.fullmatch(value):
        return False
    try:
        datetime.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


@_formats.checks("uri")
def _is_uri(value: object) -> bool:
    return not isinstance(value, str) or bool(_URI.fullmatch(value))


@dataclass(frozen=True)
class SchemaError:
    path: str  # JSONPath of the offending value, e.g. $.epcisBody.eventList[0].eventTime
    message: str


@functools.cache
def validator() -> Draft7Validator:
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    return Draft7Validator(schema, format_checker=_formats)


def errors(document: Any) -> list[SchemaError]:
    """What is wrong with the document, at most ``MAX_ERRORS``, in document order; [] when it is valid."""
    found = []
    for error in validator().iter_errors(document):
        # An if/then failure says only "the event is not valid"; its causes name the fields.
        leaves = _leaves(error)
        found += [SchemaError(leaf.json_path, leaf.message) for leaf in leaves]
        if len(found) >= MAX_ERRORS:
            break
    unique = list(dict.fromkeys(found))
    return sorted(unique, key=lambda e: e.path)[:MAX_ERRORS]


def _leaves(error: Any) -> list[Any]:
    if not error.context:
        return [error]
    # anyOf/oneOf: the branch that got furthest is the one the sender meant.
    deepest = max(len(e.absolute_path) for e in error.context)
    if deepest <= len(error.absolute_path):
        return [error]
    return [leaf for e in error.context if len(e.absolute_path) == deepest for leaf in _leaves(e)]
