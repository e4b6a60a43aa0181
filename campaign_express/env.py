"""The platform's configuration, read from the environment once and without Django.

Every process (web, bidder, worker, consumers) reads the same variables through this module,
so a variable means the same thing everywhere and the bid path can use it without importing
Django. ``VARIABLES`` is the single list of what exists; `.env.example` and
`docs/configuration.md` are checked against it by the test suite.

In production mode (``CAMPAIGN_EXPRESS__MODE=production``) a missing required variable stops
start-up with a ``ConfigError`` that names it; in embedded mode every backend URL left unset
selects the in-process default.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

PREFIX = "CAMPAIGN_EXPRESS__"
NATS_REPLICAS = f"{PREFIX}NATS__REPLICAS"
NATS_MAX_REPLICAS = 5  # JetStream's limit


class ConfigError(Exception):
    """A variable is missing or malformed; the message names it."""


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    meaning: str
    required_in_production: bool = False


VARIABLES: tuple[Variable, ...] = (
    Variable(f"{PREFIX}MODE", "embedded",
             "`embedded` (unset backends run in-process) or `production` (required variables "
             "must be set, start-up stops naming the first one missing)"),
    Variable(f"{PREFIX}SECRET_KEY", "(generated into DATA_DIR/secret_key)",
             "Django secret key: signs sessions and CSRF tokens", required_in_production=True),
    Variable(f"{PREFIX}DEBUG", "false", "Django debug pages; never true in production"),
    Variable(f"{PREFIX}ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]",
             "comma-separated host names the web process answers", required_in_production=True),
    Variable(f"{PREFIX}CSRF_TRUSTED_ORIGINS", "",
             "comma-separated origins (scheme://host) allowed to post forms across origins"),
    Variable(f"{PREFIX}DATA_DIR", "var",
             "where embedded mode keeps its SQLite file, chDB data, media uploads and secret key"),
    Variable(f"{PREFIX}NODE_ID", "(host name)",
             "this process's node id in events and metrics (Kubernetes sets the pod name)"),
    Variable(f"{PREFIX}AGENTS_PER_NODE", "20", "bid agents consuming `campaign-bids` per node"),
    Variable(f"{PREFIX}PUBLIC_URL", "http://127.0.0.1:8080",
             "public base URL of the web process; uploaded creative assets are served to "
             "exchanges under it (use https in production, or bids are not marked secure)"),
    Variable(f"{PREFIX}API__HOST", "0.0.0.0", "address the HTTP, gRPC and metrics servers bind"),
    Variable(f"{PREFIX}API__HTTP_PORT", "8080", "HTTP port (web and bidder)"),
    Variable(f"{PREFIX}API__GRPC_PORT", "9090", "gRPC port of the bidder"),
    Variable(f"{PREFIX}API__TRUSTED_PROXIES", "",
             "comma-separated networks (CIDR) of the load balancers in front of the bidder: "
             "from a peer in them, the caller's address is read from `X-Forwarded-For` (HTTP "
             "and gRPC; for exchanges checked by IP)"),
    Variable(f"{PREFIX}METRICS__PORT", "9091", "Prometheus metrics port of the bidder"),
    Variable(f"{PREFIX}GDPR__VENDOR_ID", "0",
             "the platform's id in the IAB TCF Global Vendor List: where GDPR applies, "
             "user-level data then also needs this vendor's consent in the TCF string; 0 "
             "reads the purposes only (1, 3 and 4)"),
    Variable(f"{PREFIX}ANALYTICS__SINK_BATCH_ROWS", "10000",
             "the analytics sink inserts when it holds this many events"),
    Variable(f"{PREFIX}ANALYTICS__SINK_INTERVAL_MS", "1000",
             "... or when this long has passed since the first event of the batch"),
    Variable(f"{PREFIX}ANALYTICS__RETENTION_DAYS", "90",
             "days analytics events are kept: a TTL where the ClickHouse server has one, and "
             "an hourly task dropping each month once wholly older, on every server"),
    Variable(f"{PREFIX}ANALYTICS__ROLLUP_LOOKBACK_HOURS", "3",
             "closed hours the rollup task computes again on every run, so events that reach "
             "ClickHouse late (a sink catching up after an outage) are counted"),
    Variable(f"{PREFIX}ANALYTICS__BUFFER_EVENTS", "100000",
             "analytics events a process holds while the bus is away; past it new events are "
             "dropped and counted in analytics_dropped_total"),
    Variable(f"{PREFIX}ANALYTICS__PUBLISH_BATCH", "1000",
             "analytics events per published message: a full batch goes at once"),
    Variable(f"{PREFIX}ANALYTICS__PUBLISH_INTERVAL_MS", "200",
             "... else what is buffered goes this often"),
    Variable(f"{PREFIX}NPU__DEVICE", "cpu",
             "inference device; `xdna` implies the `xdna` provider when PROVIDER is unset"),
    Variable(f"{PREFIX}NPU__PROVIDER", "(from DEVICE: cpu)",
             "inference provider: cpu, cuda, tensorrt, remote, xdna, ampere, groq, inferentia2, "
             "inferentia3, tenstorrent"),
    Variable(f"{PREFIX}NPU__MODEL_PATH", "(the shipped default model)",
             "path of the ONNX offer-scoring model"),
    Variable(f"{PREFIX}NPU__NUM_THREADS", "1",
             "onnxruntime intra-op threads; the default model's batches are small, so more "
             "threads cost CPU without lowering latency (BENCHMARKS.md)"),
    Variable(f"{PREFIX}NPU__MODEL_NAME", "offer-scoring",
             "the registry name of the offer-scoring model a bidder serves"),
    Variable(f"{PREFIX}NPU__BATCHER_MAX_ITEMS", "16",
             "rows that make the batching buffer run a batch at once (providers batched on "
             "a thread; cpu and ampere batch on the event loop, each turn's rows together)"),
    Variable(f"{PREFIX}NPU__BATCHER_FLUSH_US", "500",
             "microseconds the oldest waiting row may wait before its batch runs anyway "
             "(providers batched on a thread, as above)"),
    Variable(f"{PREFIX}NPU__REMOTE_URL", "",
             "`remote` provider: base URL of a KServe v2 / Open Inference Protocol server"),
    Variable(f"{PREFIX}NPU__REMOTE_MODEL", "(MODEL_NAME)",
             "`remote` provider: the model's name on that server"),
    Variable(f"{PREFIX}NPU__REMOTE_TIMEOUT_MS", "100",
             "timeout of one remote inference call, in milliseconds"),
    Variable(f"{PREFIX}NPU__GROQ_URL", "",
             "`groq` provider: KServe v2 endpoint of the inference server in front of Groq"),
    Variable(f"{PREFIX}NPU__INFERENTIA2_URL", "",
             "`inferentia2` provider: KServe v2 endpoint in front of AWS Inferentia2"),
    Variable(f"{PREFIX}NPU__INFERENTIA3_URL", "",
             "`inferentia3` provider: KServe v2 endpoint in front of AWS Inferentia3"),
    Variable(f"{PREFIX}NPU__TENSTORRENT_URL", "",
             "`tenstorrent` provider: KServe v2 endpoint in front of Tenstorrent cards"),
    Variable(f"{PREFIX}NPU__FALLBACK", "",
             "set to `cpu` to fall back to the CPU provider (with a warning and a metric) when "
             "the configured one is unavailable; empty means fail at start"),
    Variable(f"{PREFIX}LOYALTY__ENABLED", "true", "loyalty programs and loyalty-aware bidding"),
    Variable(f"{PREFIX}DSP__ENABLED", "false", "route bid requests to partner DSPs"),
    Variable(f"{PREFIX}SNAPSHOT__POLL_SECONDS", "30",
             "a bidder also reads the latest config snapshot from the `config` bucket this "
             "often, so one published while it was cut off from NATS still arrives"),
    Variable(f"{PREFIX}LOG", "info",
             "log filter in RUST_LOG style: a default level, then `logger=level` pairs, "
             "comma-separated (`info,campaigns=debug,django.db=warning`)"),
    Variable(f"{PREFIX}LOG_FORMAT", "text", "`text` for people, `json` for log collectors"),
    Variable("OTEL_EXPORTER_OTLP_ENDPOINT", "",
             "OpenTelemetry collector (OTLP) to send traces to, e.g. `http://tempo:4317`; "
             "empty (and no TRACES_ENDPOINT) turns tracing off (docs/observability.md)"),
    Variable("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "",
             "OTLP endpoint for traces only, used as is; wins over OTEL_EXPORTER_OTLP_ENDPOINT"),
    Variable("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
             "`grpc` or `http/protobuf` (posts to ENDPOINT/v1/traces)"),
    Variable("OTEL_SERVICE_NAME", "(campaign-express-bidder or campaign-express-web)",
             "service name on the spans a process exports"),
    Variable("OTEL_TRACES_SAMPLER", "parentbased_always_on",
             "always_on, always_off, traceidratio, parentbased_always_on, "
             "parentbased_always_off or parentbased_traceidratio"),
    Variable("OTEL_TRACES_SAMPLER_ARG", "1.0",
             "the ratio of traces kept by the `traceidratio` samplers, 0 to 1"),
    Variable(f"{PREFIX}EMAIL__HOST", "",
             "SMTP server that sends scheduled reports; empty sends no email"),
    Variable(f"{PREFIX}EMAIL__PORT", "587", "SMTP port"),
    Variable(f"{PREFIX}EMAIL__USER", "", "SMTP user name (empty: no login)"),
    Variable(f"{PREFIX}EMAIL__PASSWORD", "", "SMTP password"),
    Variable(f"{PREFIX}EMAIL__USE_TLS", "true", "STARTTLS on the SMTP connection"),
    Variable(f"{PREFIX}EMAIL__FROM", "Campaign Express <reports@localhost>",
             "sender address of report emails"),
    Variable(f"{PREFIX}MEDIA__S3_BUCKET", "",
             "store uploaded creative assets in this S3-compatible bucket instead of "
             "DATA_DIR/media"),
    Variable(f"{PREFIX}MEDIA__S3_ENDPOINT_URL", "",
             "endpoint of the S3-compatible store (empty: AWS); credentials come from "
             "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"),
    Variable("DATABASE_URL", "sqlite:///DATA_DIR/campaign_express.sqlite3",
             "relational store, e.g. `postgres://user:pass@host:5432/campaign_express`",
             required_in_production=True),
    Variable("REDIS_URL", "(in-process store)",
             "profiles, frequency caps and budget counters, e.g. `redis://host:6379/0`",
             required_in_production=True),
    Variable("NATS_URL", "(in-process bus)",
             "NATS with JetStream for config push, ingest, bid agents and analytics, "
             "e.g. `nats://host:4222`", required_in_production=True),
    Variable(NATS_REPLICAS, "1",
             "copies JetStream keeps of each stream, key-value bucket and object store the "
             "platform creates, 1 to 5; a NATS cluster of 3 wants 3 (ones that exist keep "
             "theirs)"),
    Variable(f"{PREFIX}CHANNELS__REDIS_URL", "(REDIS_URL)",
             "Redis (not a Redis Cluster) for the live dashboard's websocket channel layer, "
             "e.g. `redis://host:6379/2`; a REDIS_URL pointing at a Redis Cluster needs it; "
             "both empty: an in-process layer, for one process only"),
    Variable("CLICKHOUSE_URL", "(chDB in DATA_DIR/chdb)",
             "ClickHouse over the native protocol, e.g. `clickhouse://user:pass@host:9000/campaign_express`",
             required_in_production=True),
    Variable("CELERY_BROKER_URL", "(tasks run in-process)",
             "Celery broker, e.g. `redis://host:6379/1`; unset runs tasks and the beat schedule "
             "inside the platform process", required_in_production=True),
)

_DEFAULTS = {v.name: v.default for v in VARIABLES}


@dataclass(frozen=True)
class Config:
    mode: str
    secret_key: str
    debug: bool
    allowed_hosts: tuple[str, ...]
    csrf_trusted_origins: tuple[str, ...]
    data_dir: Path
    public_url: str
    node_id: str
    agents_per_node: int
    api_host: str
    http_port: int
    trusted_proxies: tuple[str, ...]
    gdpr_vendor_id: int | None
    grpc_port: int
    metrics_port: int
    npu_device: str
    npu_provider: str
    npu_model_path: str
    npu_num_threads: int
    npu_fallback: str
    npu_model_name: str
    npu_batcher_max_items: int
    analytics_sink_batch_rows: int
    analytics_sink_interval_ms: int
    analytics_retention_days: int
    analytics_rollup_lookback_hours: int
    analytics_buffer_events: int
    analytics_publish_batch: int
    analytics_publish_interval_ms: int
    npu_batcher_flush_us: int
    npu_remote_url: str
    npu_remote_model: str
    npu_remote_timeout_ms: int
    npu_groq_url: str
    npu_inferentia2_url: str
    npu_inferentia3_url: str
    npu_tenstorrent_url: str
    loyalty_enabled: bool
    dsp_enabled: bool
    snapshot_poll_seconds: int
    log_filter: str
    log_format: str
    otlp_traces_endpoint: str
    otlp_protocol: str
    otel_service_name: str
    otel_traces_sampler: str
    otel_traces_sampler_ratio: float
    email_host: str
    email_port: int
    email_user: str
    email_password: str
    email_use_tls: bool
    email_from: str
    media_s3_bucket: str
    media_s3_endpoint_url: str
    database_url: str
    redis_url: str
    nats_url: str
    nats_replicas: int
    channels_redis_url: str
    clickhouse_url: str
    celery_broker_url: str

    @property
    def is_production(self) -> bool:
        return self.mode == "production"


class _Reader:
    def __init__(self, environ: Mapping[str, str], production: bool) -> None:
        self.environ = environ
        self.production = production

    def raw(self, name: str) -> str:
        value = self.environ.get(name, "").strip()
        if not value and self.production and _required(name):
            raise ConfigError(f"{name} is required when {PREFIX}MODE=production; see .env.example")
        return value

    def text(self, name: str) -> str:
        return self.raw(name) or _plain_default(name)

    def integer(self, name: str, low: int = 0, high: int = 2**31) -> int:
        value = self.text(name)
        try:
            number = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be an integer, got {value!r}") from None
        if not low <= number <= high:
            raise ConfigError(f"{name} must be between {low} and {high}, got {number}")
        return number

    def boolean(self, name: str) -> bool:
        value = self.text(name).lower()
        if value in ("1", "true", "yes", "on"):
            return True
        if value in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"{name} must be true or false, got {value!r}")

    def choice(self, name: str, choices: tuple[str, ...]) -> str:
        value = self.text(name).lower()
        if value not in choices:
            raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
        return value

    def ratio(self, name: str) -> float:
        value = self.text(name)
        try:
            number = float(value)
        except ValueError:
            raise ConfigError(f"{name} must be a number, got {value!r}") from None
        if not 0.0 <= number <= 1.0:
            raise ConfigError(f"{name} must be between 0 and 1, got {number}")
        return number

    def url(self, name: str, schemes: tuple[str, ...]) -> str:
        value = self.text(name)
        parts = urlsplit(value)
        if parts.scheme not in schemes or not parts.netloc:
            raise ConfigError(f"{name} must be a {' or '.join(schemes)} URL, got {value!r}")
        return value

    def items(self, name: str) -> tuple[str, ...]:
        return tuple(item.strip() for item in self.text(name).split(",") if item.strip())


def _networks(read: _Reader, name: str) -> tuple[str, ...]:
    networks = read.items(name)
    for network in networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError as error:
            raise ConfigError(f"{name}: {network!r} is not a network (CIDR): {error}") from None
    return networks


def _required(name: str) -> bool:
    return any(v.name == name and v.required_in_production for v in VARIABLES)


def _plain_default(name: str) -> str:
    """The default when it is a literal value; descriptions in parentheses mean "computed"."""
    default = _DEFAULTS[name]
    return "" if default.startswith("(") or "DATA_DIR" in default else default


OTLP_PROTOCOLS = ("grpc", "http/protobuf")
SAMPLERS = ("always_on", "always_off", "traceidratio", "parentbased_always_on",
            "parentbased_always_off", "parentbased_traceidratio")


def _otlp_traces_endpoint(read: _Reader) -> str:
    """The OTLP spec's rule: the traces endpoint as given, else the base endpoint, to which
    `http/protobuf` adds `/v1/traces` (gRPC takes the base as it is)."""
    if read.raw("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        return read.url("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", ("http", "https"))
    if not read.raw("OTEL_EXPORTER_OTLP_ENDPOINT"):
        return ""
    endpoint = read.url("OTEL_EXPORTER_OTLP_ENDPOINT", ("http", "https"))
    if read.text("OTEL_EXPORTER_OTLP_PROTOCOL").lower() == "http/protobuf":
        return f"{endpoint.rstrip('/')}/v1/traces"
    return endpoint


PROVIDERS = ("cpu", "cuda", "tensorrt", "remote", "xdna", "ampere", "groq", "inferentia2",
             "inferentia3", "tenstorrent")


def load(environ: Mapping[str, str] | None = None) -> Config:
    """Read and check every variable; raise ConfigError naming the first bad one."""
    environ = os.environ if environ is None else environ
    mode = _Reader(environ, production=False).choice(f"{PREFIX}MODE", ("embedded", "production"))
    read = _Reader(environ, production=mode == "production")
    data_dir = Path(read.text(f"{PREFIX}DATA_DIR")).resolve()
    device = read.text(f"{PREFIX}NPU__DEVICE").lower()
    provider = read.raw(f"{PREFIX}NPU__PROVIDER").lower() or ("xdna" if device == "xdna" else "cpu")
    if provider not in PROVIDERS:
        raise ConfigError(f"{PREFIX}NPU__PROVIDER must be one of {', '.join(PROVIDERS)}, "
                          f"got {provider!r}")
    model_name = read.text(f"{PREFIX}NPU__MODEL_NAME")
    return Config(
        mode=mode,
        secret_key=read.raw(f"{PREFIX}SECRET_KEY") or _embedded_secret_key(data_dir),
        debug=read.boolean(f"{PREFIX}DEBUG"),
        allowed_hosts=read.items(f"{PREFIX}ALLOWED_HOSTS"),
        csrf_trusted_origins=read.items(f"{PREFIX}CSRF_TRUSTED_ORIGINS"),
        data_dir=data_dir,
        public_url=read.url(f"{PREFIX}PUBLIC_URL", ("http", "https")).rstrip("/"),
        node_id=read.raw(f"{PREFIX}NODE_ID") or socket.gethostname(),
        agents_per_node=read.integer(f"{PREFIX}AGENTS_PER_NODE", low=1, high=10_000),
        api_host=read.text(f"{PREFIX}API__HOST"),
        http_port=read.integer(f"{PREFIX}API__HTTP_PORT", high=65535),
        trusted_proxies=_networks(read, f"{PREFIX}API__TRUSTED_PROXIES"),
        gdpr_vendor_id=read.integer(f"{PREFIX}GDPR__VENDOR_ID", high=65535) or None,
        grpc_port=read.integer(f"{PREFIX}API__GRPC_PORT", high=65535),
        metrics_port=read.integer(f"{PREFIX}METRICS__PORT", high=65535),
        npu_device=device,
        npu_provider=provider,
        npu_model_path=read.raw(f"{PREFIX}NPU__MODEL_PATH"),
        npu_num_threads=read.integer(f"{PREFIX}NPU__NUM_THREADS", low=1, high=1024),
        npu_fallback=read.choice(f"{PREFIX}NPU__FALLBACK", ("", "cpu")),
        npu_model_name=model_name,
        analytics_sink_batch_rows=read.integer(f"{PREFIX}ANALYTICS__SINK_BATCH_ROWS", low=1),
        analytics_sink_interval_ms=read.integer(f"{PREFIX}ANALYTICS__SINK_INTERVAL_MS", low=1),
        analytics_retention_days=read.integer(f"{PREFIX}ANALYTICS__RETENTION_DAYS", low=1,
                                              high=36_500),
        analytics_rollup_lookback_hours=read.integer(
            f"{PREFIX}ANALYTICS__ROLLUP_LOOKBACK_HOURS", high=24 * 31),
        analytics_buffer_events=read.integer(f"{PREFIX}ANALYTICS__BUFFER_EVENTS", low=1,
                                             high=100_000_000),
        analytics_publish_batch=read.integer(f"{PREFIX}ANALYTICS__PUBLISH_BATCH", low=1,
                                             high=1_000_000),
        analytics_publish_interval_ms=read.integer(f"{PREFIX}ANALYTICS__PUBLISH_INTERVAL_MS",
                                                   low=1, high=60_000),
        npu_batcher_max_items=read.integer(f"{PREFIX}NPU__BATCHER_MAX_ITEMS", low=1,
                                           high=4096),
        npu_batcher_flush_us=read.integer(f"{PREFIX}NPU__BATCHER_FLUSH_US", low=0,
                                          high=1_000_000),
        npu_remote_url=read.raw(f"{PREFIX}NPU__REMOTE_URL"),
        npu_remote_model=read.raw(f"{PREFIX}NPU__REMOTE_MODEL") or model_name,
        npu_remote_timeout_ms=read.integer(f"{PREFIX}NPU__REMOTE_TIMEOUT_MS", low=1,
                                           high=60_000),
        npu_groq_url=read.raw(f"{PREFIX}NPU__GROQ_URL"),
        npu_inferentia2_url=read.raw(f"{PREFIX}NPU__INFERENTIA2_URL"),
        npu_inferentia3_url=read.raw(f"{PREFIX}NPU__INFERENTIA3_URL"),
        npu_tenstorrent_url=read.raw(f"{PREFIX}NPU__TENSTORRENT_URL"),
        loyalty_enabled=read.boolean(f"{PREFIX}LOYALTY__ENABLED"),
        dsp_enabled=read.boolean(f"{PREFIX}DSP__ENABLED"),
        snapshot_poll_seconds=read.integer(f"{PREFIX}SNAPSHOT__POLL_SECONDS", low=1,
                                           high=86_400),
        log_filter=read.text(f"{PREFIX}LOG"),
        log_format=read.choice(f"{PREFIX}LOG_FORMAT", ("text", "json")),
        otlp_traces_endpoint=_otlp_traces_endpoint(read),
        otlp_protocol=read.choice("OTEL_EXPORTER_OTLP_PROTOCOL", OTLP_PROTOCOLS),
        otel_service_name=read.raw("OTEL_SERVICE_NAME"),
        otel_traces_sampler=read.choice("OTEL_TRACES_SAMPLER", SAMPLERS),
        otel_traces_sampler_ratio=read.ratio("OTEL_TRACES_SAMPLER_ARG"),
        email_host=read.raw(f"{PREFIX}EMAIL__HOST"),
        email_port=read.integer(f"{PREFIX}EMAIL__PORT", low=1, high=65535),
        email_user=read.raw(f"{PREFIX}EMAIL__USER"),
        email_password=read.raw(f"{PREFIX}EMAIL__PASSWORD"),
        email_use_tls=read.boolean(f"{PREFIX}EMAIL__USE_TLS"),
        email_from=read.text(f"{PREFIX}EMAIL__FROM"),
        media_s3_bucket=read.raw(f"{PREFIX}MEDIA__S3_BUCKET"),
        media_s3_endpoint_url=read.raw(f"{PREFIX}MEDIA__S3_ENDPOINT_URL"),
        database_url=read.raw("DATABASE_URL")
        or f"sqlite:///{data_dir / 'campaign_express.sqlite3'}",
        redis_url=read.raw("REDIS_URL"),
        nats_url=read.raw("NATS_URL"),
        nats_replicas=nats_replicas(environ),
        channels_redis_url=_channels_redis_url(read),
        clickhouse_url=read.raw("CLICKHOUSE_URL"),
        celery_broker_url=read.raw("CELERY_BROKER_URL"),
    )


def nats_replicas(environ: Mapping[str, str] | None = None) -> int:
    """CAMPAIGN_EXPRESS__NATS__REPLICAS alone: the NATS bus, built from its URL, reads it."""
    environ = os.environ if environ is None else environ
    return _Reader(environ, production=False).integer(NATS_REPLICAS, low=1,
                                                      high=NATS_MAX_REPLICAS)


def _channels_redis_url(read: _Reader) -> str:
    """Empty means the default, REDIS_URL (itself empty in embedded mode)."""
    name = f"{PREFIX}CHANNELS__REDIS_URL"
    if not read.raw(name):
        return read.raw("REDIS_URL")
    return read.url(name, ("redis", "rediss"))


def _embedded_secret_key(data_dir: Path) -> str:
    """Embedded mode keeps one random key per data directory, so sessions survive restarts."""
    path = data_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(50)
    path.write_text(key)
    path.chmod(0o600)
    return key
