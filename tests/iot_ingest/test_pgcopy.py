"""PostgreSQL's binary COPY format: rows packed by ``iot_ingest.pgcopy`` read back exactly as written."""

from __future__ import annotations

import datetime
import io
from typing import Any

import pytest
from django.db import connection
from hypothesis import given, settings
from hypothesis import strategies as st

from iot_ingest import pgcopy
from tests.conftest import unavailable

pytestmark = [pytest.mark.services, pytest.mark.django_db]
COLUMNS = "(b bigint, i integer, s smallint, d double precision, f boolean, t text, v varchar(12), at timestamptz)"
TYPES = [
    "bigint",
    "integer",
    "smallint",
    "double precision",
    "boolean",
    "text",
    "varchar(12)",
    "timestamp with time zone",
]


@pytest.fixture(autouse=True)
def _postgresql() -> None:
    if connection.vendor != "postgresql":
        unavailable("binary COPY is PostgreSQL's: set DATABASE_URL to PostgreSQL")


def _copied(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The rows COPYed into a new temporary table, as PostgreSQL reads them back."""
    packed = []
    for row in rows:
        codes, values = zip(*(_field(value, name) for value, name in zip(row, TYPES, strict=True)), strict=True)
        packed.append(pgcopy.Layout(codes).pack(values))
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMPORARY TABLE copied {COLUMNS}")
        try:
            cursor.cursor.copy_expert("COPY copied FROM STDIN WITH (FORMAT binary)", io.BytesIO(pgcopy.stream(packed)))
            cursor.execute("SELECT * FROM copied")
            return [tuple(row) for row in cursor.fetchall()]
        finally:
            cursor.execute("DROP TABLE copied")


def _field(value: Any, db_type: str) -> tuple[str | None, Any]:
    """A value's struct code (None: NULL) and what the layout packs for it."""
    if value is None:
        return None, None
    if db_type in ("text", "varchar(12)"):
        return pgcopy.text(value)
    if db_type == "timestamp with time zone":
        return pgcopy.code(db_type), pgcopy.timestamptz(value)
    return pgcopy.code(db_type), value


UTC = datetime.UTC
times = st.datetimes(
    min_value=datetime.datetime(1900, 1, 1), max_value=datetime.datetime(2200, 1, 1), timezones=st.just(UTC)
)
rows = st.tuples(
    st.none() | st.integers(-(2**63), 2**63 - 1),
    st.none() | st.integers(-(2**31), 2**31 - 1),
    st.none() | st.integers(-(2**15), 2**15 - 1),
    st.none() | st.floats(allow_nan=False),
    st.none() | st.booleans(),
    st.none() | st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=40),
    st.none() | st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=12),
    st.none() | times,
)


@settings(max_examples=40, deadline=None)
@given(st.lists(rows, max_size=20))
def test_rows_read_back_exactly_as_written(written: list[tuple[Any, ...]]) -> None:
    assert sorted(_copied(written), key=repr) == sorted(written, key=repr)


def test_times_before_and_after_the_postgresql_epoch() -> None:
    before = datetime.datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC)
    after = datetime.datetime(2026, 11, 29, 12, 0, 0, 1, tzinfo=datetime.timezone(datetime.timedelta(hours=8)))
    assert pgcopy.timestamptz(before) == -1
    assert pgcopy.timestamptz(pgcopy.POSTGRES_EPOCH) == 0
    [(*_, back_before), (*_, back_after)] = _copied([(*[None] * 7, before), (*[None] * 7, after)])
    assert (back_before, back_after) == (before, after)


def test_an_unknown_type_is_refused() -> None:
    with pytest.raises(ValueError, match="numeric"):
        pgcopy.code("numeric(10,2)")
