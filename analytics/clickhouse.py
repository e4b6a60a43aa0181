"""The one ClickHouse client module: nothing else imports clickhouse_driver or chdb.

`ClickHouseBackend` talks to a ClickHouse server over the native protocol (production);
`ChdbBackend` runs ClickHouse inside this process on a data directory (embedded mode). Both
take the same SQL with clickhouse-driver's `%(name)s` parameters, return rows as tuples of the
same Python types, and pass `tests/analytics/test_clickhouse_contract.py`.

Parameters are substituted client-side (clickhouse-driver's escaping, for chDB too), so a
literal `%` in a statement with parameters is written `%%`, as with clickhouse-driver.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import chdb.session
import clickhouse_driver
import clickhouse_driver.errors
from clickhouse_driver.util.escape import escape_param, escape_params

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TABLE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*")
_COLUMN = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
_TIMEZONE = re.compile(r"'([^']+)'")


class AnalyticsError(Exception):
    """Base of the errors this module raises; callers never see a driver's exception."""


class AnalyticsUnavailable(AnalyticsError):
    """ClickHouse cannot be reached (or chDB cannot open its data directory)."""


class AnalyticsQueryError(AnalyticsError):
    """ClickHouse rejected the statement or the data."""


class AnalyticsBackend(Protocol):
    """Synchronous on purpose: callers are Celery tasks, management commands and the sink,
    which batch their writes; the bid path never calls ClickHouse."""

    database: str

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None: ...

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]: ...

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        """One INSERT statement for all `rows`; returns how many were inserted."""
        ...

    def insert_columns(
        self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]
    ) -> int:
        """`insert` with the values given column by column (`data[i]` for `columns[i]`), the
        shape the native protocol sends: the sink builds it without making rows first."""
        ...

    def ping(self) -> None: ...

    def server_version(self) -> tuple[int, ...]: ...

    def close(self) -> None: ...


def _check_insert(table: str, columns: Sequence[str]) -> None:
    if not _TABLE.fullmatch(table):
        raise ValueError(f"invalid table name {table!r}")
    for column in columns:
        if not _COLUMN.fullmatch(column):
            raise ValueError(f"invalid column name {column!r}")


def _parse_version(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


@contextmanager
def _driver_errors() -> Iterator[None]:
    try:
        yield
    except clickhouse_driver.errors.ServerException as error:
        raise AnalyticsQueryError(str(error)) from error
    except (
        clickhouse_driver.errors.NetworkError,
        clickhouse_driver.errors.SocketTimeoutError,
        clickhouse_driver.errors.UnexpectedPacketFromServerError,
        EOFError,
        OSError,
    ) as error:
        raise AnalyticsUnavailable(f"clickhouse: {error}") from error
    except clickhouse_driver.errors.Error as error:
        raise AnalyticsQueryError(str(error)) from error


class _Probes:
    """`ping` and `server_version`, the same SQL whichever engine answers it."""

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def ping(self) -> None:
        self.query("SELECT 1")

    def server_version(self) -> tuple[int, ...]:
        return _parse_version(self.query("SELECT version()")[0][0])


class ClickHouseBackend(_Probes):
    """A ClickHouse server, URL `clickhouse://user:password@host:9000/database`
    (`clickhouses://` for TLS, default port 9440).

    Connects on first use, not in the constructor, so a process starts while ClickHouse is
    down; the first use creates the database if missing. A network error drops the
    connection and the next call reconnects. The driver's client is not thread-safe, so
    calls are serialised by a lock.
    """

    def __init__(self, url: str, *, connect_timeout: float = 3.0, timeout: float = 60.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("clickhouse", "clickhouses"):
            raise ValueError(f"unsupported ClickHouse URL scheme {parts.scheme!r}")
        is_secure = parts.scheme == "clickhouses"
        self.database = unquote(parts.path.lstrip("/")) or "default"
        if not _IDENTIFIER.fullmatch(self.database):
            raise ValueError(f"invalid database name {self.database!r}")
        self._options: dict[str, Any] = {
            "host": parts.hostname or "localhost",
            "port": parts.port or (9440 if is_secure else 9000),
            "user": unquote(parts.username or "default"),
            "password": unquote(parts.password or ""),
            "secure": is_secure,
            "connect_timeout": connect_timeout,
            "send_receive_timeout": timeout,
            "sync_request_timeout": connect_timeout,
            "client_name": "campaign-express",
        }
        self._client: clickhouse_driver.Client | None = None
        self._lock = threading.Lock()

    def _connected(self) -> clickhouse_driver.Client:
        if self._client is None:
            bootstrap = clickhouse_driver.Client(database="default", **self._options)
            try:
                bootstrap.execute(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            finally:
                bootstrap.disconnect()
            self._client = clickhouse_driver.Client(database=self.database, **self._options)
        return self._client

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self.query(sql, params)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self._lock, _driver_errors():
            rows = self._connected().execute(sql, dict(params) if params is not None else None)
        return [tuple(row) for row in rows]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        _check_insert(table, columns)
        if not rows:
            return 0
        return self.insert_columns(table, columns, [list(column) for column in zip(*rows,
                                                                                   strict=True)])

    def insert_columns(
        self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]
    ) -> int:
        _check_insert(table, columns)
        if not data or not data[0]:
            return 0
        statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES"
        with self._lock, _driver_errors():
            return int(self._connected().execute(statement, data, columnar=True))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.disconnect()
                self._client = None


class _UtcServerInfo:
    @staticmethod
    def get_timezone() -> str:
        return "UTC"


class _UtcContext:
    """What clickhouse-driver's escaping needs to know: aware datetimes become UTC literals."""

    server_info = _UtcServerInfo()


_UTC_CONTEXT = _UtcContext()


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        value = int(value)
    return str(escape_param(value, _UTC_CONTEXT))


def _from_json(type_name: str, value: Any) -> Any:
    """A value of JSONCompact output as clickhouse-driver would return it."""
    if value is None:
        return None
    for wrapper in ("Nullable(", "LowCardinality("):
        if type_name.startswith(wrapper):
            return _from_json(type_name[len(wrapper) : -1], value)
    if type_name.startswith("Array("):
        return [_from_json(type_name[len("Array(") : -1], item) for item in value]
    if type_name.startswith(("Int", "UInt")):
        return int(value)
    if type_name.startswith("Float"):
        return float(value)
    if type_name.startswith("Decimal"):
        return Decimal(str(value))
    if type_name == "UUID":
        return uuid.UUID(value)
    if type_name.startswith("DateTime"):
        parsed = datetime.fromisoformat(value)
        timezone = _TIMEZONE.search(type_name)
        return parsed.replace(tzinfo=ZoneInfo(timezone.group(1))) if timezone else parsed
    if type_name in ("Date", "Date32"):
        return date.fromisoformat(value)
    return value


class ChdbBackend(_Probes):
    """ClickHouse embedded in this process (chDB), data kept under `path`.

    chDB runs one embedded server per process, bound to one data path: open one
    `ChdbBackend` per path per process, and never let two processes open the same path
    (embedded mode runs a single process). A second path in the same process fails until the
    first backend is closed. Opens on first use; the session runs in UTC like our servers.
    """

    def __init__(self, path: Path, *, database: str = "campaign_express") -> None:
        if not _IDENTIFIER.fullmatch(database):
            raise ValueError(f"invalid database name {database!r}")
        self.path = path
        self.database = database
        self._session: Any = None  # chdb.session.Session; chdb ships no type hints
        self._lock = threading.Lock()

    def _connected(self) -> Any:
        if self._session is None:
            self.path.mkdir(parents=True, exist_ok=True)
            session: Any
            try:
                session = chdb.session.Session(str(self.path))  # type: ignore[no-untyped-call]
            except RuntimeError as error:
                raise AnalyticsUnavailable(f"chdb at {self.path}: {error}") from error
            session.query(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            session.query(f"USE {self.database}")
            session.query("SET session_timezone = 'UTC'")
            self._session = session
        return self._session

    def _run(self, sql: str) -> bytes:
        with self._lock:
            session = self._connected()
            try:
                result = session.query(sql, "JSONCompactEachRowWithNamesAndTypes")
            except RuntimeError as error:
                raise AnalyticsQueryError(str(error)) from error
        return bytes(result.bytes())

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> None:
        self.query(sql, params)

    def query(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        if params is not None:
            sql = sql % escape_params(dict(params), _UTC_CONTEXT)
        lines = self._run(sql).splitlines()
        if len(lines) < 2:
            return []
        types = json.loads(lines[1])
        return [
            tuple(
                _from_json(type_name, value)
                for type_name, value in zip(types, json.loads(line), strict=True)
            )
            for line in lines[2:]
        ]

    def insert(self, table: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> int:
        _check_insert(table, columns)
        if not rows:
            return 0
        values = ", ".join("(" + ", ".join(_literal(value) for value in row) + ")" for row in rows)
        self._run(f"INSERT INTO {table} ({', '.join(columns)}) VALUES {values}")
        return len(rows)

    def insert_columns(
        self, table: str, columns: Sequence[str], data: Sequence[Sequence[Any]]
    ) -> int:
        return self.insert(table, columns, list(zip(*data, strict=True)))

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                self._session.close()
                self._session = None


def analytics_from_url(url: str, *, chdb_path: Path) -> AnalyticsBackend:
    """Empty URL: chDB under `chdb_path` (embedded mode); `clickhouse(s)://`: a server."""
    if not url:
        return ChdbBackend(chdb_path)
    scheme = urlsplit(url).scheme
    if scheme in ("clickhouse", "clickhouses"):
        return ClickHouseBackend(url)
    raise ValueError(
        f"unsupported analytics URL scheme {scheme!r}: use clickhouse:// or clickhouses://"
    )
