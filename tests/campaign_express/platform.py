"""Start the real platform (`manage.py run`) in a subprocess, and private service instances.

Used by tests that boot the platform as a user would, or stop a backend under it: they run
their own Redis or PostgreSQL on a free port and stop that one, never the shared services.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
BOOT_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


def _clean_environment(data_dir: Path, extra: dict[str, str]) -> dict[str, str]:
    environ = {key: value for key, value in os.environ.items()
               if not key.startswith("CAMPAIGN_EXPRESS__") and key not in (
                   "DATABASE_URL", "REDIS_URL", "NATS_URL", "CLICKHOUSE_URL",
                   "CELERY_BROKER_URL", "DJANGO_SETTINGS_MODULE")}
    environ.update({"CAMPAIGN_EXPRESS__DATA_DIR": str(data_dir), **extra})
    return environ


@contextmanager
def running_platform(data_dir: Path, *, demo: bool = False,
                     environ: dict[str, str] | None = None,
                     grpc_port: int | None = None) -> Iterator[str]:
    """Yield the base URL of a platform started with `manage.py run`; stop it by its pid."""
    port = free_port()
    log = (data_dir / "platform.log").open("w")
    arguments = [sys.executable, "manage.py", "run", "--host", "127.0.0.1", "--port", str(port),
                 "--grpc-port", str(grpc_port or free_port())]
    process = subprocess.Popen(arguments + (["--demo"] if demo else []), cwd=ROOT,
                               env=_clean_environment(data_dir, environ or {}),
                               stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + BOOT_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"the platform exited with {process.returncode}:\n"
                            + (data_dir / "platform.log").read_text()[-3000:])
            try:
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the platform did not answer /health in time:\n"
                            + (data_dir / "platform.log").read_text()[-3000:])
            time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@contextmanager
def private_redis(data_dir: Path, port: int | None = None
                  ) -> Iterator[tuple[int, subprocess.Popen]]:
    """A throw-away redis-server on a free port (or on ``port``, to bring one back)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (scripts/services.sh installs it)")
    port = port or free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1",
                                "--save", "", "--appendonly", "no", "--dir", str(data_dir)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, 10)
        yield port, process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)


def _postgres_bin() -> Path:
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not candidates:
        pytest.fail("PostgreSQL server binaries are not installed (scripts/services.sh "
                    "installs them)")
    return candidates[-1].parent


@contextmanager
def private_postgres() -> Iterator[tuple[int, Callable[[], None]]]:
    """A throw-away PostgreSQL cluster on a free port; yields (port, stop)."""
    bindir = _postgres_bin()
    # Its own folder outside pytest's (which only root may enter): the server runs as postgres.
    cluster = Path(tempfile.mkdtemp(prefix="campaign-express-pg-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(cluster, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run([*as_postgres, str(bindir / "initdb"), "-D", str(cluster), "-U", "postgres",
                    "--auth=trust"], check=True, capture_output=True)
    pg_ctl = [*as_postgres, str(bindir / "pg_ctl"), "-D", str(cluster), "-w"]
    subprocess.run([*pg_ctl, "-o", f"-p {port} -k {cluster} -c listen_addresses=127.0.0.1",
                    "-l", str(cluster / "log"), "start"], check=True, capture_output=True)
    stopped = False

    def stop() -> None:
        nonlocal stopped
        if not stopped:
            subprocess.run([*pg_ctl, "-m", "fast", "stop"], check=True, capture_output=True)
            stopped = True

    try:
        yield port, stop
    finally:
        stop()
        shutil.rmtree(cluster, ignore_errors=True)


class PrivateClickHouse:
    """A throw-away clickhouse-server on free ports over one data folder; `stop` and `start`
    bring the same server (and its data) down and up again."""

    def __init__(self, data_dir: Path) -> None:
        binary = shutil.which("clickhouse-server")
        if binary is None:
            pytest.fail("clickhouse-server is not installed (scripts/services.sh installs it)")
        self.binary = binary
        self.data_dir = data_dir
        self.port = free_port()
        self.process: subprocess.Popen | None = None
        config = data_dir / "config.xml"
        config.write_text(f"""<yandex>
  <logger><level>warning</level><log>{data_dir}/server.log</log>
    <errorlog>{data_dir}/server.err.log</errorlog></logger>
  <listen_host>127.0.0.1</listen_host>
  <tcp_port>{self.port}</tcp_port><http_port>{free_port()}</http_port>
  <interserver_http_port>{free_port()}</interserver_http_port>
  <path>{data_dir}/data/</path><tmp_path>{data_dir}/tmp/</tmp_path>
  <user_files_path>{data_dir}/user_files/</user_files_path>
  <format_schema_path>{data_dir}/format_schemas/</format_schema_path>
  <users_config>/etc/clickhouse-server/users.xml</users_config>
  <default_profile>default</default_profile><default_database>default</default_database>
  <mark_cache_size>268435456</mark_cache_size>
  <timezone>UTC</timezone>
</yandex>
""")
        self.config = config

    @property
    def url(self) -> str:
        return f"clickhouse://default@127.0.0.1:{self.port}/campaign_express"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, f"--config-file={self.config}"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, 30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)
        self.process = None


@contextmanager
def private_clickhouse(data_dir: Path) -> Iterator[PrivateClickHouse]:
    server = PrivateClickHouse(data_dir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class PrivateNats:
    """A nats-server with JetStream of the test's own, on a free port; stopped by its pid."""

    def __init__(self, data_dir) -> None:
        self.binary = shutil.which("nats-server", path="/usr/sbin:/usr/bin:/usr/local/bin")
        if self.binary is None:
            pytest.fail("nats-server is not installed (scripts/services.sh installs it)")
        self.port = free_port()
        self.data_dir = data_dir
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "-a", "127.0.0.1", "-p", str(self.port), "-js", "-sd",
             str(self.data_dir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, 10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)
