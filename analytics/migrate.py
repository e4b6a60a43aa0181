"""ClickHouse schema migrations: numbered files applied in order, recorded in ClickHouse.

A migration is a file in `analytics/clickhouse_migrations/` named `NNNN_description.sql` or
`NNNN_description.py`. A `.sql` file holds statements, each ending with `;` at the end of a
line. A `.py` file defines `statements(context: MigrationContext) -> list[str]`, for DDL that
depends on the server (what its version supports) or on a setting; it may return no
statements, and is recorded as applied all the same.

Applied migrations are rows of the table `clickhouse_migrations` (name, checksum of the file,
server version, time), in the backend's database. ClickHouse has no transactional DDL: a
migration that fails half-way is not recorded and runs again from its first statement, so
every statement must be safe to run twice (`IF NOT EXISTS`, `MODIFY`). Never edit an applied
migration; add a new one (the plan reports applied files whose checksum changed).

In a Replicated database (the deployment's ClickHouse replicas, `deploy/clickhouse`) DDL
reaches every replica, but a table's rows are copied between them only by a
`Replicated*MergeTree` engine: there every `ENGINE = ...MergeTree(` of a statement is applied
as `ENGINE = Replicated...MergeTree(` (path and replica name from the server's defaults), so
the migration files stay the same for one server, a replicated pair and chDB.

Run them from one place at a time (a deploy job, or `manage.py run` in embedded mode): two
concurrent runs would both apply a pending migration, harmless only because of the rule above.

Django-free: `manage.py migrate_clickhouse` and the tests call it with a backend.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from analytics.clickhouse import AnalyticsBackend

MIGRATIONS_DIR = Path(__file__).resolve().parent / "clickhouse_migrations"
MIGRATIONS_TABLE = "clickhouse_migrations"

_NAME = re.compile(r"[0-9]{4}_[a-z0-9_]+")
_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
_ENGINE = re.compile(r"ENGINE\s*=\s*(?!Replicated)(\w*)MergeTree\(")

# One row per applied migration; a few rows read whole, so unpartitioned and sorted by name.
_MIGRATIONS_TABLE_DDL = f"""
CREATE TABLE IF NOT EXISTS {MIGRATIONS_TABLE}
(
    name String,
    checksum String,
    server_version String,
    applied_at DateTime('UTC')
)
ENGINE = MergeTree()
ORDER BY name
""".strip()


class MigrationError(Exception):
    """A migration file is malformed, or a statement of it failed."""


@dataclass(frozen=True)
class MigrationContext:
    """What a `.py` migration may depend on."""

    database: str
    server_version: tuple[int, ...]
    retention_days: int
    replicated: bool = False  # the database's engine is Replicated


@dataclass(frozen=True)
class Migration:
    name: str
    path: Path
    checksum: str

    def statements(self, context: MigrationContext) -> list[str]:
        if self.path.suffix == ".sql":
            return sql_statements(self.path.read_text())
        spec = importlib.util.spec_from_file_location(
            f"analytics.clickhouse_migrations.{self.name}", self.path
        )
        if spec is None or spec.loader is None:
            raise MigrationError(f"{self.path.name}: cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        function = getattr(module, "statements", None)
        if not callable(function):
            raise MigrationError(f"{self.path.name}: defines no statements(context) function")
        result = cast(Callable[[MigrationContext], object], function)(context)
        if not isinstance(result, list) or not all(isinstance(item, str) for item in result):
            raise MigrationError(f"{self.path.name}: statements() must return a list of str")
        return cast(list[str], result)


@dataclass(frozen=True)
class MigrationPlan:
    pending: list[Migration]
    # Applied, but the file is no longer what was applied: someone edited history.
    changed: list[Migration]


def sql_statements(text: str) -> list[str]:
    """The statements of a `.sql` migration; chunks holding only comments are skipped."""
    statements = []
    for chunk in _STATEMENT_END.split(text):
        code = [line for line in chunk.splitlines() if not line.strip().startswith("--")]
        if "".join(code).strip():
            statements.append(chunk.strip())
    return statements


def migrations_load(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file in number order; a bad name or a reused number is an error."""
    migrations = []
    numbers: set[str] = set()
    for path in sorted(directory.iterdir()):
        if path.suffix not in (".sql", ".py") or path.name == "__init__.py":
            continue
        if not _NAME.fullmatch(path.stem):
            raise MigrationError(
                f"{path.name}: a migration is named NNNN_description.sql or .py "
                "(lower case, digits and underscores)"
            )
        number = path.stem[:4]
        if number in numbers:
            raise MigrationError(f"two migrations are numbered {number}")
        numbers.add(number)
        checksum = hashlib.sha256(path.read_bytes()).hexdigest()
        migrations.append(Migration(name=path.stem, path=path, checksum=checksum))
    return migrations


def migrations_applied(*, backend: AnalyticsBackend) -> dict[str, str]:
    """Applied migration names and their checksums; reads only, so `--plan` changes nothing."""
    exists = backend.query(
        "SELECT count() FROM system.tables WHERE database = %(database)s AND name = %(table)s",
        {"database": backend.database, "table": MIGRATIONS_TABLE},
    )
    if exists[0][0] == 0:
        return {}
    rows = backend.query(f"SELECT name, checksum FROM {MIGRATIONS_TABLE} ORDER BY applied_at")
    return {str(name): str(checksum) for name, checksum in rows}


def migrations_plan(
    *, backend: AnalyticsBackend, directory: Path = MIGRATIONS_DIR
) -> MigrationPlan:
    applied = migrations_applied(backend=backend)
    migrations = migrations_load(directory)
    return MigrationPlan(
        pending=[m for m in migrations if m.name not in applied],
        changed=[m for m in migrations if m.name in applied and applied[m.name] != m.checksum],
    )


def migration_context(*, backend: AnalyticsBackend, retention_days: int) -> MigrationContext:
    engine = backend.query(
        "SELECT engine FROM system.databases WHERE name = %(database)s",
        {"database": backend.database},
    )
    return MigrationContext(
        database=backend.database,
        server_version=backend.server_version(),
        retention_days=retention_days,
        replicated=bool(engine) and engine[0][0] == "Replicated",
    )


def replicated_engines(statement: str) -> str:
    """``statement`` with its MergeTree-family engines replicated (`ReplacingMergeTree(v)` ->
    `ReplicatedReplacingMergeTree(v)`)."""
    return _ENGINE.sub(r"ENGINE = Replicated\1MergeTree(", statement)


def migration_apply(
    *, backend: AnalyticsBackend, migration: Migration, context: MigrationContext
) -> int:
    """Run one migration's statements, then record it; returns how many statements ran.

    Recorded only after its last statement succeeded, so a failed migration stays pending.
    """
    rewrite = replicated_engines if context.replicated else str
    backend.execute(rewrite(_MIGRATIONS_TABLE_DDL))
    statements = [rewrite(statement) for statement in migration.statements(context)]
    for statement in statements:
        backend.execute(statement)
    backend.insert(
        MIGRATIONS_TABLE,
        ("name", "checksum", "server_version", "applied_at"),
        [
            (
                migration.name,
                migration.checksum,
                ".".join(str(part) for part in context.server_version),
                datetime.now(UTC).replace(microsecond=0),
            )
        ],
    )
    return len(statements)


def migrations_apply(
    *, backend: AnalyticsBackend, retention_days: int, directory: Path = MIGRATIONS_DIR
) -> list[str]:
    """Apply the pending migrations in order; returns their names (empty when up to date).

    Stops at the first failure (the driver's error propagates); the ones before it stay
    applied and recorded.
    """
    pending = migrations_plan(backend=backend, directory=directory).pending
    if not pending:
        return []
    context = migration_context(backend=backend, retention_days=retention_days)
    for migration in pending:
        migration_apply(backend=backend, migration=migration, context=context)
    return [migration.name for migration in pending]
