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

# Keys are kept for ever too, but a key is retired by setting its retired_at, once: that one change is allowed.
KEYS_TABLE = "ledger_signingkey"
_KEY_UNCHANGED = ("id", "name", "key_id", "public_key", "active_from")
_KEY_REFUSAL = f"ledger table {KEYS_TABLE} keeps every key as it was: only retiring an active key is allowed"


def key_guard_statements(vendor: str) -> list[str]:
    """Triggers that refuse any change to a signing key but its retirement, and any deletion."""
    if vendor == "postgresql":
        same = " AND ".join(f"NEW.{column} IS NOT DISTINCT FROM OLD.{column}" for column in _KEY_UNCHANGED)
        return [
            f"""
CREATE OR REPLACE FUNCTION ledger_key_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'UPDATE' AND OLD.retired_at IS NULL AND NEW.retired_at IS NOT NULL AND {same} THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '{_KEY_REFUSAL}: % refused', TG_OP;
END $$;
""",
            f"CREATE OR REPLACE TRIGGER {KEYS_TABLE}_guard BEFORE UPDATE OR DELETE ON {KEYS_TABLE} "
            "FOR EACH ROW EXECUTE FUNCTION ledger_key_guard();",
            f"CREATE OR REPLACE TRIGGER {KEYS_TABLE}_no_truncate BEFORE TRUNCATE ON {KEYS_TABLE} "
            "FOR EACH STATEMENT EXECUTE FUNCTION ledger_key_guard();",
        ]
    if vendor == "sqlite":
        same = " AND ".join(f"NEW.{column} IS OLD.{column}" for column in _KEY_UNCHANGED)
        retiring = f"OLD.retired_at IS NULL AND NEW.retired_at IS NOT NULL AND {same}"
        return [
            f"CREATE TRIGGER IF NOT EXISTS {KEYS_TABLE}_no_update BEFORE UPDATE ON {KEYS_TABLE} "
            f"WHEN NOT ({retiring}) BEGIN SELECT RAISE(ABORT, '{_KEY_REFUSAL}: UPDATE refused'); END;",
            f"CREATE TRIGGER IF NOT EXISTS {KEYS_TABLE}_no_delete BEFORE DELETE ON {KEYS_TABLE} "
            f"BEGIN SELECT RAISE(ABORT, '{_KEY_REFUSAL}: DELETE refused'); END;",
        ]
    raise RuntimeError(f"ColdTrace supports PostgreSQL and SQLite; the key guard does not exist for {vendor}")


def key_guard_drop_statements(vendor: str) -> list[str]:
    if vendor == "postgresql":
        return [f"DROP TRIGGER IF EXISTS {KEYS_TABLE}_{suffix} ON {KEYS_TABLE};" for suffix in ("guard", "no_truncate")]
    return [f"DROP TRIGGER IF EXISTS {KEYS_TABLE}_no_{op};" for op in ("update", "delete")]


def install_key_guard(apps: Any, schema_editor: Any) -> None:
    for sql in key_guard_statements(schema_editor.connection.vendor):
        schema_editor.execute(sql, params=None)


def uninstall_key_guard(apps: Any, schema_editor: Any) -> None:
    for sql in key_guard_drop_statements(schema_editor.connection.vendor):
        schema_editor.execute(sql, params=None)


def create_statements(vendor: str) -> list[str]:
    """Every trigger of the ledger's tables: the append-only ones and the key guard."""
    return LEDGER.create_statements(vendor) + key_guard_statements(vendor)


def drop_statements(vendor: str) -> list[str]:
    return LEDGER.drop_statements(vendor) + key_guard_drop_statements(vendor)


def install(apps: Any, schema_editor: Any) -> None:
    LEDGER.install(apps, schema_editor)


def uninstall(apps: Any, schema_editor: Any) -> None:
    LEDGER.uninstall(apps, schema_editor)
