"""The readings table partitioned by month of ``received_at`` on PostgreSQL (DESIGN.md, "Where data lives").

An operator's step, not a migration: the model does not change, and SQLite
(the embedded default) needs none of it. The first run converts the plain
table, in one transaction under an ACCESS EXCLUSIVE lock: processing that
writes readings meanwhile waits, then writes into the partitioned table (a
statement waiting for a lock looks its table's name up again once it has it).
Later runs only add the months ahead. Nothing else changes for Django: the
table keeps its name, columns, id sequence, foreign keys and index names.

PostgreSQL wants the partition key in every unique index of a partitioned
table, so the primary key becomes ``(id, received_at)`` and ``(message,
index)`` becomes ``(message, index, received_at)``: as strict as before,
since every reading of a message carries the message's ``received_at``. A
``DEFAULT`` partition takes any reading outside the monthly partitions, so
none is ever refused; creating its month later moves it there.

Django's migrations know nothing of this. A later migration that touches
``iot_ingest_reading`` must be tried against a partitioned copy first: adding
a column or an index works (no ``CONCURRENTLY``), a unique constraint without
``received_at`` does not, and one that rebuilds the table would undo this.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

from django.db import OperationalError, connection, transaction
from django.utils import timezone

from iot_ingest.models import Reading

TABLE = Reading._meta.db_table
KEY = "received_at"  # the partition key: server time, never missing, the same for all readings of a message
ID = "id"
DEFAULT = f"{TABLE}_default"
UNPARTITIONED = f"{TABLE}_unpartitioned"  # the old table, for the moment of the conversion
LOCK_TIMEOUT = "10s"  # waiting longer would stall ingest queued behind our lock
MONTHS_AHEAD = 3

Cursor = Any  # django.db.backends.utils.CursorWrapper


class PartitionError(Exception):
    """Partitioning cannot go ahead; nothing was changed. The message says why and what to do."""


@dataclass
class PartitionReport:
    partitioned: bool  # the table is partitioned now
    converted_rows: int | None = None  # rows kept by this run's conversion; None when nothing was converted
    created: list[str] = field(default_factory=list)  # partitions this run created, oldest first
    moved: int = 0  # readings moved from the DEFAULT partition into a month created now

    def lines(self) -> list[str]:
        """What was done, for an operator."""
        if not self.partitioned:
            return [f"{TABLE} is not partitioned: nothing done (run manage.py readings_partition to convert it)"]
        lines = []
        if self.converted_rows is not None:
            lines.append(f"converted {TABLE} to monthly partitions by {KEY}: {self.converted_rows} readings kept")
        lines += [f"created partition {name}" for name in self.created]
        if self.moved:
            lines.append(f"moved {self.moved} readings from {DEFAULT} into their new monthly partitions")
        if not self.created and self.converted_rows is None:
            lines.append(f"nothing to do: {TABLE} already has its partitions")
        return lines


def readings_partition(
    *, months_ahead: int = MONTHS_AHEAD, convert: bool = True, now: datetime.datetime | None = None
) -> PartitionReport:
    """Partitions the readings table by month; idempotent. PostgreSQL only.

    Converts the table the first time (unless ``convert`` is false), keeping
    every row and id; then creates the missing monthly partitions from the
    current month to ``months_ahead`` months ahead (UTC), and the DEFAULT
    partition. One transaction: it all happens or nothing does. Raises
    PartitionError on SQLite, or when the table stays busy for LOCK_TIMEOUT.
    """
    if connection.vendor != "postgresql":
        raise PartitionError(
            f"partitioning needs PostgreSQL; this database is {connection.vendor} (set DATABASE_URL to PostgreSQL)"
        )
    if months_ahead < 0:
        raise PartitionError("months ahead must be 0 or more")
    this_month = _month(now or timezone.now())
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %s, true)", [LOCK_TIMEOUT])
            report = PartitionReport(partitioned=_is_partitioned(cursor))
            if not report.partitioned and not convert:
                return report
            mode = "IN SHARE UPDATE EXCLUSIVE MODE" if report.partitioned else "IN ACCESS EXCLUSIVE MODE"
            cursor.execute(f"LOCK TABLE ONLY {_name(TABLE)} {mode}")
            first, shape = this_month, None
            if not _is_partitioned(cursor):  # not converted by another run while we waited
                shape, oldest = _convert_begin(cursor)
                first = min(first, _month(oldest)) if oldest else first
            report.partitioned = True
            report.created, report.moved = _months_ensure(cursor, first, _months_add(this_month, months_ahead))
            if shape is not None:
                report.converted_rows = _convert_finish(cursor, shape)
    except OperationalError as error:
        if getattr(error.__cause__, "pgcode", None) == "55P03":  # lock_not_available
            raise PartitionError(
                f"{TABLE} stayed in use for {LOCK_TIMEOUT} (a long query or transaction): nothing changed; try again"
            ) from error
        raise
    return report


def readings_partitions() -> list[tuple[str, str]]:
    """The partitions of the readings table and their bounds, by name; empty when it is not partitioned."""
    if connection.vendor != "postgresql":
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i "
            "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s) ORDER BY c.relname",
            [TABLE],
        )
        return [(name, bound) for name, bound in cursor.fetchall()]


def partition_name(month: datetime.date) -> str:
    return f"{TABLE}_y{month.year:04d}m{month.month:02d}"


# Months ----------------------------------------------------------------------------------


def _month(moment: datetime.datetime) -> datetime.date:
    return moment.astimezone(datetime.UTC).date().replace(day=1)


def _months_add(month: datetime.date, count: int) -> datetime.date:
    index = month.year * 12 + month.month - 1 + count
    return datetime.date(index // 12, index % 12 + 1, 1)


def _start(month: datetime.date) -> datetime.datetime:
    return datetime.datetime(month.year, month.month, 1, tzinfo=datetime.UTC)


def _months_ensure(cursor: Cursor, first: datetime.date, last: datetime.date) -> tuple[list[str], int]:
    """Creates the missing partitions from ``first`` to ``last`` (months) and the DEFAULT one.

    Readings in the DEFAULT partition that belong to a month created now move
    there (PostgreSQL refuses the month otherwise); they are put back through
    the parent table at the end, so the new partitions are created before any
    of their foreign-key checks are pending.
    """
    existing = {name for name, _ in readings_partitions()}
    created, moved = [], 0
    if DEFAULT in existing:
        cursor.execute(f"CREATE TEMPORARY TABLE readings_moving (LIKE {_name(DEFAULT)}) ON COMMIT DROP")
    month = first
    while month <= last:
        name, start, end = partition_name(month), _start(month), _start(_months_add(month, 1))
        if name not in existing:
            if DEFAULT in existing:
                cursor.execute(
                    f"WITH moved AS (DELETE FROM {_name(DEFAULT)} WHERE {_name(KEY)} >= %s "  # noqa: S608  (our tables)
                    f"AND {_name(KEY)} < %s RETURNING *) INSERT INTO readings_moving SELECT * FROM moved",
                    [start, end],
                )
                moved += cursor.rowcount
            cursor.execute(
                f"CREATE TABLE {_name(name)} PARTITION OF {_name(TABLE)} FOR VALUES FROM (%s) TO (%s)", [start, end]
            )
            created.append(name)
        month = _months_add(month, 1)
    if DEFAULT not in existing:
        cursor.execute(f"CREATE TABLE {_name(DEFAULT)} PARTITION OF {_name(TABLE)} DEFAULT")
        created.append(DEFAULT)
    elif moved:
        columns = ", ".join(_name(column) for column in _columns(cursor, TABLE))
        cursor.execute(
            f"INSERT INTO {_name(TABLE)} ({columns}) OVERRIDING SYSTEM VALUE "  # noqa: S608  (our tables)
            f"SELECT {columns} FROM readings_moving"
        )
    if DEFAULT in existing:
        cursor.execute("DROP TABLE readings_moving")
    return created, moved


# The conversion ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """What the plain table has that the partitioned one must have again, read from the catalogue."""

    columns: list[str]
    identity: bool  # id is an identity column (Django's default) rather than a serial
    sequence: str  # the id sequence, qualified and quoted
    primary_key: str  # the constraint's name
    uniques: list[tuple[str, list[str]]]  # name, columns
    foreign_keys: list[tuple[str, str]]  # name, definition
    indexes: list[str]  # CREATE INDEX statements, naming the table by its name
    grants: list[tuple[str, str, bool]]  # privilege, grantee (quoted, or PUBLIC), with grant option


def _convert_begin(cursor: Cursor) -> tuple[_Shape, datetime.datetime | None]:
    """Puts a partitioned table, still empty and without partitions, in place of the plain one.

    Returns the old table's shape and the time of its oldest reading; its
    rows move over in ``_convert_finish``, once the partitions exist.
    """
    shape = _shape(cursor)
    cursor.execute(f"SELECT min({_name(KEY)}) FROM {_name(TABLE)}")  # noqa: S608  (our table)
    oldest: datetime.datetime | None = cursor.fetchone()[0]
    cursor.execute(f"ALTER TABLE {_name(TABLE)} RENAME TO {_name(UNPARTITIONED)}")
    if shape.identity:  # so that the new identity sequence takes the usual name
        cursor.execute(f"ALTER SEQUENCE {shape.sequence} RENAME TO {_name(UNPARTITIONED + '_id_seq')}")
    cursor.execute(
        f"CREATE TABLE {_name(TABLE)} (LIKE {_name(UNPARTITIONED)} INCLUDING DEFAULTS INCLUDING CONSTRAINTS "
        f"INCLUDING IDENTITY INCLUDING STORAGE INCLUDING COMMENTS) PARTITION BY RANGE ({_name(KEY)})"
    )
    if shape.identity:
        cursor.execute(f"SELECT last_value, is_called FROM {_name(UNPARTITIONED + '_id_seq')}")  # noqa: S608
        last_value, is_called = cursor.fetchone()
        cursor.execute("SELECT setval(pg_get_serial_sequence(%s, %s), %s, %s)", [TABLE, ID, last_value, is_called])
    else:  # a serial: the new table's default already uses it; keep it when the old table goes
        cursor.execute(f"ALTER SEQUENCE {shape.sequence} OWNED BY {_name(TABLE)}.{_name(ID)}")
    for privilege, grantee, grantable in shape.grants:
        option = " WITH GRANT OPTION" if grantable else ""
        cursor.execute(f"GRANT {privilege} ON {_name(TABLE)} TO {grantee}{option}")
    return shape, oldest


def _convert_finish(cursor: Cursor, shape: _Shape) -> int:
    """Moves the rows into the partitions, drops the old table, adds keys and indexes; returns the row count."""
    columns = ", ".join(_name(column) for column in shape.columns)
    cursor.execute(
        f"INSERT INTO {_name(TABLE)} ({columns}) OVERRIDING SYSTEM VALUE "  # noqa: S608  (our tables)
        f"SELECT {columns} FROM {_name(UNPARTITIONED)}"
    )
    rows: int = cursor.rowcount
    cursor.execute(f"DROP TABLE {_name(UNPARTITIONED)}")
    _constraints_add(cursor, shape)
    cursor.execute(f"ANALYZE {_name(TABLE)}")  # autovacuum never analyses a partitioned parent
    return rows


def _constraints_add(cursor: Cursor, shape: _Shape) -> None:
    """The keys, with the partition key added; the foreign keys and indexes as they were (partitioned now)."""
    table = _name(TABLE)
    cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {_name(shape.primary_key)} PRIMARY KEY ({_keyed([ID])})")
    for name, columns in shape.uniques:
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {_name(name)} UNIQUE ({_keyed(columns)})")
    for name, definition in shape.foreign_keys:
        cursor.execute(f"ALTER TABLE {table} ADD CONSTRAINT {_name(name)} {definition}")
    for statement in shape.indexes:
        cursor.execute(statement)


def _shape(cursor: Cursor) -> _Shape:
    """Reads the plain table's shape; refuses what a partitioned table cannot have, before changing anything."""
    _owner_check(cursor)
    cursor.execute(
        "SELECT a.attidentity <> '', pg_get_serial_sequence(%s, %s) FROM pg_attribute a "
        "WHERE a.attrelid = to_regclass(%s) AND a.attname = %s",
        [TABLE, ID, TABLE, ID],
    )
    identity, sequence = cursor.fetchone()
    if sequence is None:
        raise PartitionError(f"{TABLE}.{ID} has no sequence; run manage.py migrate first")
    cursor.execute(
        "SELECT conname, contype, pg_get_constraintdef(oid), "
        "ARRAY(SELECT attname FROM unnest(conkey) WITH ORDINALITY k(n, i) "
        "JOIN pg_attribute ON attrelid = conrelid AND attnum = k.n ORDER BY k.i) "
        "FROM pg_constraint WHERE conrelid = to_regclass(%s) AND contype IN ('p', 'u', 'f', 'x') ORDER BY conname",
        [TABLE],
    )
    constraints = cursor.fetchall()
    if any(kind == "x" for _, kind, _, _ in constraints):
        raise PartitionError(f"{TABLE} has an exclusion constraint; partitioning does not know how to keep it")
    [primary_key] = [name for name, kind, _, _ in constraints if kind == "p"]
    cursor.execute(
        "SELECT pg_get_indexdef(x.indexrelid), x.indisunique FROM pg_index x WHERE x.indrelid = to_regclass(%s) "
        "AND NOT EXISTS (SELECT FROM pg_constraint c WHERE c.conindid = x.indexrelid AND c.conrelid = x.indrelid) "
        "ORDER BY x.indexrelid::regclass::text",
        [TABLE],
    )
    indexes = cursor.fetchall()
    if any(unique for _, unique in indexes):
        raise PartitionError(
            f"{TABLE} has a unique index that is not a constraint; PostgreSQL needs {KEY} in it to partition"
        )
    cursor.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND NOT tgisinternal", [TABLE])
    if cursor.fetchone()[0]:
        raise PartitionError(f"{TABLE} has triggers; partitioning would drop them: remove them first")
    return _Shape(
        columns=_columns(cursor, TABLE),
        identity=identity,
        sequence=sequence,
        primary_key=primary_key,
        uniques=[(name, columns) for name, kind, _, columns in constraints if kind == "u"],
        foreign_keys=[(name, definition) for name, kind, definition, _ in constraints if kind == "f"],
        indexes=[statement for statement, _ in indexes],
        grants=_grants(cursor),
    )


def _owner_check(cursor: Cursor) -> None:
    """The new tables belong to whoever creates them: only the owner keeps the readings its own."""
    cursor.execute("SELECT pg_get_userbyid(relowner), current_user FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
    owner, user = cursor.fetchone()
    if user != owner:
        raise PartitionError(f"run this as {owner}, the owner of {TABLE} (the role that runs migrate), not as {user}")


def _grants(cursor: Cursor) -> list[tuple[str, str, bool]]:
    """Privileges other roles hold on the table (a reporting role, say), to grant again on the new one."""
    cursor.execute(
        "SELECT a.privilege_type, CASE a.grantee WHEN 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) "
        "END, a.is_grantable FROM pg_class c, aclexplode(c.relacl) a "
        "WHERE c.oid = to_regclass(%s) AND a.grantee <> c.relowner ORDER BY 2, 1",
        [TABLE],
    )
    return [(privilege, grantee, grantable) for privilege, grantee, grantable in cursor.fetchall()]


# Catalogue helpers ---------------------------------------------------------------------------


def _is_partitioned(cursor: Cursor) -> bool:
    cursor.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", [TABLE])
    row = cursor.fetchone()
    if row is None:
        raise PartitionError(f"{TABLE} does not exist; run manage.py migrate first")
    return bool(row[0] == "p")


def _columns(cursor: Cursor, table: str) -> list[str]:
    cursor.execute(
        "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped "
        "ORDER BY attnum",
        [table],
    )
    return [name for (name,) in cursor.fetchall()]


def _keyed(columns: list[str]) -> str:
    """The columns of a unique key, with the partition key added."""
    return ", ".join(_name(column) for column in [*columns, *([KEY] if KEY not in columns else [])])


def _name(identifier: str) -> str:
    return str(connection.ops.quote_name(identifier))
