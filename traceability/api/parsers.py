"""A JSON parser that refuses, with a 400, what would otherwise fail deep inside."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_BODY_BYTES = 1024 * 1024


MAX_DEPTH = 32


def _check_values(data: Any) -> None:
    """Refuses nesting deeper than MAX_DEPTH (no request needs it) and strings that cannot be stored.

    Lone surrogates parse as JSON but are not UTF-8; PostgreSQL would refuse them.
    """
    stack = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels.")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as error:
                raise ParseError("JSON strings must be valid Unicode (no lone surrogates).") from error
        elif isinstance(value, Mapping):
            stack.extend((item, depth + 1) for pair in value.items() for item in pair)
        elif isinstance(value, list):
            stack.extend((item, depth + 1) for item in value)


class StrictJSONParser(JSONParser):
    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        raw = stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
        if len(raw) > MAX_BODY_BYTES:
            raise ParseError(f"Request body exceeds {MAX_BODY_BYTES} bytes.")
        try:
            data = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            raise ParseError(f"JSON parse error: {error}") from error
        _check_values(data)
        return data


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")
