"""A JSON parser that refuses, with a 400, what would otherwise fail deep inside."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any, NoReturn

from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

MAX_BODY_BYTES = 1024 * 1024


MAX_DEPTH = 32
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_@$:-]+")  # written after a dot in a path; any other key in brackets


def _check_values(data: Any) -> None:
    """Refuses, naming where, what no request needs and what PostgreSQL cannot store.

    - nesting deeper than MAX_DEPTH;
    - strings and keys with lone surrogates (they parse as JSON but are not UTF-8) or NUL characters (text
      and JSONB hold none);
    - numbers beyond a double's range (``1e400`` is valid JSON, but reads as infinity, which JSON cannot
      carry back out).

    Checked before any view runs, so a document is refused whole: nothing of it is applied. The 400 gives
    the JSON path, under the body's top-level field as the API's other field errors are.
    """
    # (value, its JSONPath, the top-level field it is in, depth); popped in document order
    stack: list[tuple[Any, str, str | None, int]] = [(data, "$", None, 1)]
    while stack:
        value, path, field, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels.")
        if isinstance(value, str):
            _check_text(value, path, field, "string")
        elif isinstance(value, float) and not math.isfinite(value):
            _refuse(path, field, "a number too large to store (beyond ±1.8e308); send a smaller one.")
        elif isinstance(value, Mapping):
            for key, item in reversed(list(value.items())):
                child = _child(path, key)
                _check_text(key, child, field, "key")
                stack.append((item, child, key if field is None else field, depth + 1))
        elif isinstance(value, list):
            stack.extend((item, f"{path}[{n}]", field, depth + 1) for n, item in reversed(list(enumerate(value))))


def _check_text(text: str, path: str, field: str | None, what: str) -> None:
    if "\x00" in text:
        _refuse(path, field, f"the {what} holds a NUL character (\\u0000), which cannot be stored; remove it.")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        _refuse(path, field, f"the {what} is not valid Unicode (it holds a lone surrogate); send UTF-8 text.")


def _child(path: str, key: str) -> str:
    """An object member's JSONPath, as the EPCIS schema errors write it (``$.epcisBody.eventList[0]``);
    any other key in brackets, escaped."""
    return f"{path}.{key}" if _PLAIN_KEY.fullmatch(key) else f"{path}[{json.dumps(key)}]"


def _refuse(path: str, field: str | None, reason: str) -> NoReturn:
    message = f"{path}: {reason}"
    raise ParseError({field: [message]} if field is not None else message)


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
