"""Database triggers that make tables append-only (PostgreSQL and SQLite): the ledger's, and any other's.

``AppendOnly`` names a set of tables and the word its refusals use; the
ledger's set is ``LEDGER``, and the module-level functions (which the
migrations call) are its.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

APPEND_ONLY_TABLES = ("ledger_entry", "ledger_entryreader", "ledger_treenode", "ledger_checkpoint")


@dataclass(frozen=True)
class AppendOnly:
    label: str  # "ledger": the refusals say "ledger table ... is append-only"
    tables: tuple[str, ...]

    @property
    def function(self) -> str:
        return f"{self.label}_refuse_change"

    def create_statements(self, vendor: str) -> list[str]:
        if vendor == "postgresql":
            return [self._postgres_function()] + [sql for table in self.tables for sql in self._postgres(table)]
        if vendor == "sqlite":
            return [sql for table in self.tables for sql in self._sqlite(table)]
        raise RuntimeError(
            f"ColdTrace supports PostgreSQL and SQLite; the {self.label} triggers do not exist for {vendor}"
        )

    def drop_statements(self, vendor: str) -> list[str]:
        if vendor == "postgresql":
            return [
                f"DROP TRIGGER IF EXISTS {table}_{suffix} ON {table};"
                for table in self.tables
                for suffix in ("no_change", "no_truncate")
            ]
        return [f"DROP TRIGGER IF EXISTS {table}_no_{op};" for table in self.tables for op in ("update", "delete")]

    def install(self, apps: Any, schema_editor: Any) -> None:
        for sql in self.create_statements(schema_editor.connection.vendor):
            schema_editor.execute(sql, params=None)

    def uninstall(self, apps: Any, schema_editor: Any) -> None:
        for sql in self.drop_statements(schema_editor.connection.vendor):
            schema_editor.execute(sql, params=None)

    def _postgres_function(self) -> str:
        return f"""
CREATE OR REPLACE FUNCTION {self.function}() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '{self.label} table % is append-only: % refused', TG_TABLE_NAME, TG_OP;
END $$;
"""

    def _postgres(self, table: str) -> list[str]:
        return [
            f"CREATE OR REPLACE TRIGGER {table}_no_change BEFORE UPDATE OR DELETE ON {table} "
            f"FOR EACH ROW EXECUTE FUNCTION {self.function}();",
            f"CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
            f"FOR EACH STATEMENT EXECUTE FUNCTION {self.function}();",
        ]

    def _sqlite(self, table: str) -> list[str]:
        return [
            f"CREATE TRIGGER IF NOT EXISTS {table}_no_{operation.lower()} BEFORE {operation} ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{self.label} table {table} is append-only: {operation} refused'); END;"
            for operation in ("UPDATE", "DELETE")
        ]


LEDGER = AppendOnly("ledger", APPEND_ONLY_TABLES)


def create_statements(vendor: str) -> list[str]:
    return LEDGER.create_statements(vendor)


def drop_statements(vendor: str) -> list[str]:
    return LEDGER.drop_statements(vendor)


def install(apps: Any, schema_editor: Any) -> None:
    LEDGER.install(apps, schema_editor)


def uninstall(apps: Any, schema_editor: Any) -> None:
    LEDGER.uninstall(apps, schema_editor)
