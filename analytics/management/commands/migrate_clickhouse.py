"""Apply the ClickHouse migrations (analytics/clickhouse_migrations/) in order.

`--plan` lists the pending ones and changes nothing; `--check` exits non-zero naming them, for
CI and deploy pipelines that must not start a release on an old schema. `manage.py run`
applies them at start, so embedded mode works out of the box.
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from analytics import migrate
from analytics.clickhouse import AnalyticsBackend, AnalyticsError, AnalyticsUnavailable
from campaign_express import platform


class Command(BaseCommand):
    help = "Apply pending ClickHouse migrations (--plan lists them, --check fails if any)."

    def add_arguments(self, parser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--plan", action="store_true",
                          help="list pending migrations and change nothing")
        mode.add_argument("--check", action="store_true",
                          help="exit non-zero when migrations are pending, naming them")

    def handle(self, *args, plan: bool, check: bool, verbosity: int, **options) -> None:
        backend = platform.analytics()
        try:
            migrations = migrate.migrations_plan(backend=backend)
            for changed in migrations.changed:
                self.stderr.write(f"Warning: {changed.name} was edited after it was applied; "
                                  "add a new migration instead.")
            if check:
                self._check(migrations)
            elif plan:
                self._plan(migrations)
            else:
                self._apply(backend, migrations, verbose=verbosity >= 1)
        except AnalyticsUnavailable as error:
            raise CommandError(self._unavailable(error)) from error
        except migrate.MigrationError as error:
            raise CommandError(str(error)) from error

    def _check(self, migrations: migrate.MigrationPlan) -> None:
        pending = [migration.name for migration in migrations.pending]
        if pending:
            raise CommandError(f"{len(pending)} ClickHouse migration(s) pending: "
                               f"{', '.join(pending)}; run manage.py migrate_clickhouse")
        self.stdout.write("ClickHouse migrations are up to date.")

    def _plan(self, migrations: migrate.MigrationPlan) -> None:
        if not migrations.pending:
            self.stdout.write("No pending ClickHouse migrations.")
            return
        self.stdout.write("Pending ClickHouse migrations:")
        for migration in migrations.pending:
            self.stdout.write(f"  {migration.name}")

    def _apply(self, backend: AnalyticsBackend, migrations: migrate.MigrationPlan, *,
               verbose: bool) -> None:
        if not migrations.pending:
            if verbose:
                self.stdout.write("No ClickHouse migrations to apply.")
            return
        context = migrate.migration_context(
            backend=backend, retention_days=settings.CONFIG.analytics_retention_days)
        for migration in migrations.pending:
            try:
                count = migrate.migration_apply(backend=backend, migration=migration,
                                                context=context)
            except AnalyticsUnavailable:
                raise
            except (AnalyticsError, migrate.MigrationError) as error:
                raise CommandError(f"{migration.name} failed and stays pending (the "
                                   f"migrations before it are applied): {error}") from error
            if verbose:
                version = ".".join(str(part) for part in context.server_version)
                done = (f"{count} statement{'' if count == 1 else 's'}" if count else
                        f"nothing to do on ClickHouse {version}")
                self.stdout.write(f"Applied {migration.name} ({done})")

    def _unavailable(self, error: AnalyticsUnavailable) -> str:
        if settings.CLICKHOUSE_URL:
            return f"ClickHouse is unavailable: {error}"
        if _held_by_another_process(settings.CHDB_PATH):
            return (f"the embedded analytics data at {settings.CHDB_PATH} is held by another "
                    "process: a running platform (manage.py run) holds it and applies the "
                    "ClickHouse migrations itself when it starts. Stop it to run this "
                    "command, or set CLICKHOUSE_URL to use a ClickHouse server.")
        return (f"the embedded analytics data at {settings.CHDB_PATH} cannot be opened (is a "
                f"platform running on it?): {error}")


def _held_by_another_process(path: Path) -> bool:
    """chDB, like a ClickHouse server, holds an exclusive lock on `status` in its data
    directory while it runs; chDB's own error does not always say so."""
    try:
        with (path / "status").open("rb") as status:
            fcntl.flock(status, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(status, fcntl.LOCK_UN)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False
