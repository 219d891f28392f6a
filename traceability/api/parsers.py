"""A JSON parser that refuses, with a 400, what would otherwise fail deep inside."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_BODY_BYTES = 1024 * 1024


def _check_text(value: Any) -> None:
    """Lone surrogates parse as JSON but cannot be stored as UTF-8; NUL cannot be stored in PostgreSQL."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ParseError("JSON strings must be valid Unicode (no lone surrogates).") from error
    elif isinstance(value, Mapping):
        for key, item in value.items():
            _check_text(key)
            _check_text(item)
    elif isinstance(value, list):
        for item in value:
            _check_text(item)


class StrictJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_BODY_BYTES:
            raise ParseError(f"Request body exceeds {MAX_BODY_BYTES} bytes.")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            raise ParseError(f"JSON parse error: {error}") from error
        _check_text(data)
        return data


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")
