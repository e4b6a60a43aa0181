"""ClickHouse migrations: the runner and `manage.py migrate_clickhouse`, on chDB and on the
ClickHouse 18.16 server, each test in a database of its own."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.core.management import CommandError, call_command

from analytics.clickhouse import (
    AnalyticsBackend,
    AnalyticsQueryError,
    ChdbBackend,
    ClickHouseBackend,
)
from analytics.maintenance import ttl_supported
from analytics.migrate import (
    MigrationError,
    migration_context,
    migrations_applied,
    migrations_apply,
    migrations_load,
    migrations_plan,
    replicated_engines,
    sql_statements,
)
from campaign_express import platform
from tests.campaign_express.platform import ROOT

NAMES = ["0001_analytics_events", "0002_analytics_events_ttl", "0003_analytics_hourly"]
# The TTL counts from the real clock; tests that keep events of fixed past dates use this.
CENTURY = 36_500


def server_database_url(clickhouse_url: str, database: str) -> str:
    return urlsplit(clickhouse_url)._replace(path=f"/{database}").geturl()


@pytest.fixture(params=["chdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AnalyticsBackend]:
    database = f"test_{uuid.uuid4().hex}"
    if request.param == "chdb":
        embedded = ChdbBackend(tmp_path / "chdb", database=database)
        yield embedded
        embedded.close()
        return
    server = ClickHouseBackend(
        server_database_url(request.getfixturevalue("clickhouse_url"), database))
    yield server
    server.execute(f"DROP DATABASE IF EXISTS {database}")
    server.close()


@pytest.fixture(params=["chdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def platform_backend(request: pytest.FixtureRequest, settings,
                     tmp_path: Path) -> Iterator[AnalyticsBackend]:
    """The platform's own analytics client, on a fresh chDB path or server database."""
    database = f"test_{uuid.uuid4().hex}"
    if request.param == "chdb":
        settings.CLICKHOUSE_URL = ""
        settings.CHDB_PATH = tmp_path / "chdb"
    else:
        settings.CLICKHOUSE_URL = server_database_url(
            request.getfixturevalue("clickhouse_url"), database)
    platform.analytics_close()
    opened = platform.analytics()
    yield opened
    if request.param == "clickhouse":
        opened.execute(f"DROP DATABASE IF EXISTS {database}")
    platform.analytics_close()


def tables(backend: AnalyticsBackend) -> list[tuple[str, str, str]]:
    return [tuple(row) for row in backend.query(  # type: ignore[misc]
        "SELECT name, partition_key, sorting_key FROM system.tables "
        "WHERE database = %(database)s ORDER BY name", {"database": backend.database})]


def engine_full(backend: AnalyticsBackend, table: str) -> str:
    return str(backend.query(
        "SELECT engine_full FROM system.tables WHERE database = %(database)s AND name = %(table)s",
        {"database": backend.database, "table": table})[0][0])


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_migrations_from_empty_create_the_schema(backend: AnalyticsBackend) -> None:
    applied = migrations_apply(backend=backend, retention_days=90)

    assert applied == NAMES
    assert tables(backend) == [
        ("analytics_events", "toYYYYMM(timestamp)",
         "advertiser_id, campaign_id, event_type, timestamp, event_id"),
        ("analytics_hourly", "toYYYYMM(hour)",
         "advertiser_id, campaign_id, hour, creative_id, exchange, event_type, reason"),
        ("analytics_rollup_hours", "", "hour"),
        ("clickhouse_migrations", "", "name"),
    ]
    assert [tuple(row[:2]) for row in backend.query("DESCRIBE TABLE analytics_hourly")] == [
        ("hour", "DateTime('UTC')"), ("advertiser_id", "String"), ("campaign_id", "String"),
        ("creative_id", "String"), ("exchange", "String"), ("event_type", "String"),
        ("reason", "String"), ("events", "UInt64"), ("price_micros", "Int64"),
        ("latency_us", "Int64"), ("computed_at", "DateTime('UTC')"),
    ]
    assert "ReplacingMergeTree(computed_at)" in engine_full(backend, "analytics_hourly")
    assert "ReplacingMergeTree(computed_at)" in engine_full(backend, "analytics_rollup_hours")


def test_in_a_replicated_database_tables_get_replicated_engines() -> None:
    assert replicated_engines(
        "CREATE TABLE t (a UInt8)\nENGINE = ReplacingMergeTree(computed_at)\nORDER BY a"
    ) == "CREATE TABLE t (a UInt8)\nENGINE = ReplicatedReplacingMergeTree(computed_at)\nORDER BY a"
    assert replicated_engines("ENGINE=MergeTree() ORDER BY name") == (
        "ENGINE = ReplicatedMergeTree() ORDER BY name")
    assert replicated_engines("ENGINE = ReplicatedMergeTree() ORDER BY name") == (
        "ENGINE = ReplicatedMergeTree() ORDER BY name")
    assert replicated_engines("ALTER TABLE t MODIFY TTL x") == "ALTER TABLE t MODIFY TTL x"


def test_a_plain_database_keeps_the_engines_as_written(backend: AnalyticsBackend) -> None:
    # Neither ClickHouse 18.16 nor chDB has Replicated databases; the pair in deploy/clickhouse
    # does (its engine is then "Replicated").
    assert migration_context(backend=backend, retention_days=90).replicated is False
    migrations_apply(backend=backend, retention_days=90)

    assert "Replicated" not in engine_full(backend, "analytics_events")


def test_running_again_applies_nothing(backend: AnalyticsBackend) -> None:
    migrations_apply(backend=backend, retention_days=90)

    assert migrations_apply(backend=backend, retention_days=90) == []
    assert backend.query("SELECT name FROM clickhouse_migrations ORDER BY name") == [
        (name,) for name in NAMES]
    assert migrations_plan(backend=backend).pending == []


def test_the_ttl_migration_adds_a_ttl_only_where_the_server_has_one(
        backend: AnalyticsBackend) -> None:
    migrations_apply(backend=backend, retention_days=90)

    version = backend.server_version()
    recorded = dict(backend.query("SELECT name, server_version FROM clickhouse_migrations"))
    assert recorded["0002_analytics_events_ttl"] == ".".join(map(str, version))
    if ttl_supported(version):
        assert "TTL timestamp + toIntervalDay(90)" in engine_full(backend, "analytics_events")
    else:
        assert version[:2] == (18, 16)
        assert "TTL" not in engine_full(backend, "analytics_events")


def test_plan_lists_every_migration_of_a_fresh_database_and_changes_nothing(
        backend: AnalyticsBackend) -> None:
    plan = migrations_plan(backend=backend)

    assert [migration.name for migration in plan.pending] == NAMES
    assert plan.changed == []
    assert migrations_applied(backend=backend) == {}
    assert tables(backend) == []


def test_a_failing_migration_stops_the_run_and_stays_pending(
        backend: AnalyticsBackend, tmp_path: Path) -> None:
    directory = tmp_path / "migrations"
    directory.mkdir()
    write(directory / "0001_first.sql",
          "CREATE TABLE IF NOT EXISTS first (id UInt32) ENGINE = MergeTree() ORDER BY id;\n")
    broken = write(directory / "0002_second.sql",
                   "CREATE TABLE IF NOT EXISTS second (id UInt32) ENGINE = MergeTree() "
                   "ORDER BY id;\nSELECT no_such_column FROM second;\n")
    write(directory / "0003_third.sql",
          "CREATE TABLE IF NOT EXISTS third (id UInt32) ENGINE = MergeTree() ORDER BY id;\n")

    with pytest.raises(AnalyticsQueryError, match="no_such_column"):
        migrations_apply(backend=backend, retention_days=90, directory=directory)

    assert list(migrations_applied(backend=backend)) == ["0001_first"]
    assert [name for name, _, _ in tables(backend)] == ["clickhouse_migrations", "first",
                                                        "second"]
    write(broken, "CREATE TABLE IF NOT EXISTS second (id UInt32) ENGINE = MergeTree() "
                  "ORDER BY id;\nSELECT count() FROM second;\n")
    assert migrations_apply(backend=backend, retention_days=90, directory=directory) == [
        "0002_second", "0003_third"]


def test_an_applied_migration_edited_afterwards_is_reported_as_changed(
        backend: AnalyticsBackend, tmp_path: Path) -> None:
    migration = write(tmp_path / "0001_first.sql",
                      "CREATE TABLE IF NOT EXISTS first (id UInt32) ENGINE = MergeTree() "
                      "ORDER BY id;\n")
    migrations_apply(backend=backend, retention_days=90, directory=tmp_path)

    migration.write_text(migration.read_text() + "-- edited\n")

    plan = migrations_plan(backend=backend, directory=tmp_path)
    assert [changed.name for changed in plan.changed] == ["0001_first"]
    assert plan.pending == []


def test_sql_files_split_at_line_ending_semicolons_and_skip_comment_only_chunks() -> None:
    text = ("-- a comment; not a statement end\nCREATE TABLE a (x UInt8)\n"
            "-- why this engine\nENGINE = Memory;\n\n-- trailing comment only;\n"
            "SELECT 'a;b' ;  \n")

    assert sql_statements(text) == [
        "-- a comment; not a statement end\nCREATE TABLE a (x UInt8)\n"
        "-- why this engine\nENGINE = Memory",
        "SELECT 'a;b'",
    ]


def test_migration_files_need_a_number_and_unique_numbers(tmp_path: Path) -> None:
    (tmp_path / "first").mkdir()
    write(tmp_path / "first" / "create_things.sql", "SELECT 1;\n")
    (tmp_path / "twice").mkdir()
    write(tmp_path / "twice" / "0001_a.sql", "SELECT 1;\n")
    write(tmp_path / "twice" / "0001_b.py", "")

    with pytest.raises(MigrationError, match=r"^create_things.sql: a migration is named "):
        migrations_load(tmp_path / "first")
    with pytest.raises(MigrationError, match="^two migrations are numbered 0001$"):
        migrations_load(tmp_path / "twice")


def test_a_python_migration_without_statements_is_an_error(
        backend: AnalyticsBackend, tmp_path: Path) -> None:
    write(tmp_path / "0001_nothing.py", "VALUE = 1\n")

    with pytest.raises(MigrationError, match="^0001_nothing.py: defines no statements"):
        migrations_apply(backend=backend, retention_days=90, directory=tmp_path)
    assert migrations_applied(backend=backend) == {}


def test_the_shipped_migrations_load_in_number_order() -> None:
    assert [migration.name for migration in migrations_load()] == NAMES


def test_command_plan_lists_pending_and_changes_nothing(
        platform_backend: AnalyticsBackend) -> None:
    out = io.StringIO()

    call_command("migrate_clickhouse", "--plan", stdout=out)

    assert out.getvalue() == ("Pending ClickHouse migrations:\n  0001_analytics_events\n"
                              "  0002_analytics_events_ttl\n  0003_analytics_hourly\n")
    assert tables(platform_backend) == []


def test_command_check_fails_naming_the_pending_migrations(
        platform_backend: AnalyticsBackend) -> None:
    with pytest.raises(CommandError) as raised:
        call_command("migrate_clickhouse", "--check", stdout=io.StringIO())

    assert str(raised.value) == (
        "3 ClickHouse migration(s) pending: 0001_analytics_events, 0002_analytics_events_ttl, "
        "0003_analytics_hourly; run manage.py migrate_clickhouse")
    assert raised.value.returncode == 1
    assert tables(platform_backend) == []


def test_command_applies_the_migrations_once(platform_backend: AnalyticsBackend) -> None:
    applied, again, check, plan = (io.StringIO() for _ in range(4))

    call_command("migrate_clickhouse", stdout=applied)
    call_command("migrate_clickhouse", stdout=again)
    call_command("migrate_clickhouse", "--check", stdout=check)
    call_command("migrate_clickhouse", "--plan", stdout=plan)

    version = platform_backend.server_version()
    ttl = ("1 statement" if ttl_supported(version)
           else f"nothing to do on ClickHouse {'.'.join(map(str, version))}")
    assert applied.getvalue() == ("Applied 0001_analytics_events (1 statement)\n"
                                  f"Applied 0002_analytics_events_ttl ({ttl})\n"
                                  "Applied 0003_analytics_hourly (2 statements)\n")
    assert again.getvalue() == "No ClickHouse migrations to apply.\n"
    assert check.getvalue() == "ClickHouse migrations are up to date.\n"
    assert plan.getvalue() == "No pending ClickHouse migrations.\n"
    assert sorted(migrations_applied(backend=platform_backend)) == NAMES


def test_command_sets_the_ttl_from_the_retention_setting(
        platform_backend: AnalyticsBackend, settings) -> None:
    settings.CONFIG = type(settings.CONFIG)(**{**vars(settings.CONFIG),
                                               "analytics_retention_days": 30})

    call_command("migrate_clickhouse", verbosity=0)

    if ttl_supported(platform_backend.server_version()):
        assert "TTL timestamp + toIntervalDay(30)" in engine_full(platform_backend,
                                                                  "analytics_events")
    else:
        assert "TTL" not in engine_full(platform_backend, "analytics_events")


def test_command_check_exits_non_zero_from_the_command_line(tmp_path: Path) -> None:
    environ = {**os.environ, "DJANGO_SETTINGS_MODULE": "campaign_express.settings.test",
               "CLICKHOUSE_URL": ""}

    result = subprocess.run([sys.executable, "manage.py", "migrate_clickhouse", "--check"],
                            cwd=ROOT, env=environ, capture_output=True, text=True, timeout=120)

    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "CommandError: 3 ClickHouse migration(s) pending: 0001_analytics_events, "
        "0002_analytics_events_ttl, 0003_analytics_hourly; run manage.py migrate_clickhouse")


def test_embedded_command_says_the_running_platform_holds_the_data(
        settings, tmp_path: Path) -> None:
    path = tmp_path / "chdb"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, pathlib\nfrom analytics.clickhouse import ChdbBackend\n"
         f"held = ChdbBackend(pathlib.Path({str(path)!r}))\nheld.ping()\n"
         "print('held', flush=True)\n"
         "sys.stdin.read()\n"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        settings.CLICKHOUSE_URL = ""
        settings.CHDB_PATH = path
        platform.analytics_close()

        with pytest.raises(CommandError) as raised:
            call_command("migrate_clickhouse", stdout=io.StringIO())
    finally:
        holder.communicate(input="", timeout=60)
        platform.analytics_close()

    assert str(raised.value) == (
        f"the embedded analytics data at {path} is held by another process: a running "
        "platform (manage.py run) holds it and applies the ClickHouse migrations itself when "
        "it starts. Stop it to run this command, or set CLICKHOUSE_URL to use a ClickHouse "
        "server.")
