"""Database triggers that make the ledger tables append-only (PostgreSQL and SQLite)."""

from __future__ import annotations

from typing import Any

APPEND_ONLY_TABLES = ("ledger_entry", "ledger_entryreader", "ledger_treenode", "ledger_checkpoint")

_POSTGRES_FUNCTION = """
CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'ledger table % is append-only: % refused', TG_TABLE_NAME, TG_OP;
END $$;
"""


def _postgres(table: str) -> list[str]:
    return [
        f"CREATE OR REPLACE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change();",
        f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change();",
    ]


def _sqlite(table: str) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
        f"BEGIN SELECT RAISE(ABORT, 'ledger table {table} is append-only: {operation} refused'); END;"
        for operation in ("UPDATE", "DELETE")
    ]


def create_statements(vendor: str) -> list[str]:
    if vendor == "postgresql":
        return [_POSTGRES_FUNCTION] + [sql for table in APPEND_ONLY_TABLES for sql in _postgres(table)]
    if vendor == "sqlite":
        return [sql for table in APPEND_ONLY_TABLES for sql in _sqlite(table)]
    raise RuntimeError(f"ColdTrace supports PostgreSQL and SQLite; the ledger triggers do not exist for {vendor}")


def drop_statements(vendor: str) -> list[str]:
    if vendor == "postgresql":
        return [
            f"DROP TRIGGER IF EXISTS {table}_{suffix} ON {table};"
            for table in APPEND_ONLY_TABLES
            for suffix in ("no_change", "no_truncate")
        ]
    return [f"DROP TRIGGER IF EXISTS {table}_no_{op};" for table in APPEND_ONLY_TABLES for op in ("update", "delete")]


def install(apps: Any, schema_editor: Any) -> None:
    for sql in create_statements(schema_editor.connection.vendor):
        schema_editor.execute(sql, params=None)


def uninstall(apps: Any, schema_editor: Any) -> None:
    for sql in drop_statements(schema_editor.connection.vendor):
        schema_editor.execute(sql, params=None)
