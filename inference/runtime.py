"""The model runtime of a bidder: the active model, an optional canary, and hot swaps.

A model version reaches a bidder as a `ModelUpdate` (on `models.update`, and kept in the
`models` key-value bucket so a restarted bidder finds it). Before a version serves, the
runtime fetches its file, checks the sha256, the feature schema, that the provider loads it,
warms it up and checks its golden inputs; only then does it replace the old version, between
batches: requests already in the old version's batcher finish there, new ones go to the new
one. Any failure keeps the old version serving and is reported (log, metric, and a load
status in the store that the registry shows).

A canary serves a share of requests chosen by a stable hash of the request id, so one
request always meets the same version. A canary batch that fails is retried on the active
model: the caller never sees the canary's errors, the counters do.

Per-version counters (requests, errors, total latency) are kept here and added to the store
every ``stats_interval`` seconds; the rollout task judges versions by them.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlsplit

import msgspec

from campaign_express.backends.bus import Bus, Message, Subscription
from campaign_express.backends.store import Store, StoreUnavailable
from inference.batcher import InferenceBatcher, LoopBatcher, Matrix
from inference.metrics import ACTIVE_MODEL, INFERENCE_ERRORS, MODEL_LOAD_FAILURES
from inference.modelfile import (
    ChecksumMismatch,
    GoldenMismatch,
    ModelFileError,
    ModelInfo,
    SchemaMismatch,
    check_schema,
    golden_check,
    inspect_model,
    verify_sha256,
)
from inference.providers import LoadedModel, ModelLoadError, ModelSource, Provider

logger = logging.getLogger(__name__)

UPDATES_SUBJECT = "models.update"
MODELS_BUCKET = "models"  # the key-value bucket of active/canary, and the object store
COUNTER_LIMIT = 2**62
STATS_TTL_SECONDS = 7 * 24 * 3600
# onnxruntime on the host's CPU answers a batch in tens of microseconds: its batches run on
# the event loop (`LoopBatcher`); other providers wait on a device or a server, on a thread.
LOOP_BATCHED_PROVIDERS = frozenset({"cpu", "ampere"})


class ModelUpdate(msgspec.Struct, frozen=True, kw_only=True):
    """Serve ``version`` of ``name``: as the active model when ``share`` is 1, as a canary
    for that share of requests when it is between 0 and 1; 0 withdraws the canary."""

    name: str
    version: str
    location: str  # file:///models/offer-scoring-3.onnx or objectstore://models/<object>
    sha256: str
    share: float = 1.0


class ModelRejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Scores:
    values: Matrix
    version: str


@dataclass
class _Stats:
    requests: int = 0
    errors: int = 0
    latency_us: int = 0


@dataclass
class _Slot:
    update: ModelUpdate
    info: ModelInfo
    model: LoadedModel
    batcher: InferenceBatcher | LoopBatcher
    stats: _Stats = field(default_factory=_Stats)


Fetch = Callable[[str], Awaitable[bytes]]


def stats_key(name: str, version: str, counter: str) -> str:
    return f"model-stats:{name}:{version}:{counter}"


def load_key(name: str, version: str, what: str) -> str:
    """``loaded`` and ``failed`` count bidders' loads of a version; ``last-failure`` says why."""
    return f"model-load:{name}:{version}:{what}"


def kv_key(name: str, role: str) -> str:
    return f"{name}.{role}"


def share_bucket(routing_key: str) -> float:
    """A stable number in [0, 1) for a request id: the same request, the same version."""
    return (zlib.crc32(routing_key.encode()) % 10_000) / 10_000


def make_fetch(bus: Bus | None) -> Fetch:
    """Read a model file from ``file://`` paths or the bus's object store."""

    async def fetch(location: str) -> bytes:
        parts = urlsplit(location)
        if parts.scheme == "file":
            return await asyncio.to_thread(Path(unquote(parts.path)).read_bytes)
        if parts.scheme == "objectstore" and bus is not None:
            data = await bus.object_get(parts.netloc, unquote(parts.path.lstrip("/")))
            if data is None:
                raise FileNotFoundError(f"{location} is not in the object store")
            return data
        raise ValueError(f"cannot fetch {location!r}: use file:// or objectstore://")

    return fetch


class ModelRuntime:
    def __init__(self, *, provider: Provider, name: str, fetch: Fetch, node: str,
                 store: Store | None = None, max_items: int = 16, flush_us: int = 500,
                 stats_interval: float = 1.0) -> None:
        self.provider = provider
        self.name = name
        self.node = node
        self._fetch = fetch
        self.store = store
        self._max_items = max_items
        self._flush_us = flush_us
        self._stats_interval = stats_interval
        self._active: _Slot | None = None
        self._canary: _Slot | None = None
        self._canary_share = 0.0
        self._apply_lock = asyncio.Lock()
        self._background: set[asyncio.Task[None]] = set()
        self._stats_task: asyncio.Task[None] | None = None
        self._subscription: Subscription | None = None

    # --- serving ----------------------------------------------------------------------------

    @property
    def is_ready(self) -> bool:
        return self._active is not None

    def serving(self) -> dict[str, object]:
        return {"name": self.name, "provider": self.provider.name,
                "active": self._active.update.version if self._active else None,
                "canary": self._canary.update.version if self._canary else None,
                "canary_share": self._canary_share if self._canary else 0.0}

    async def score(self, rows: Matrix, *, routing_key: str) -> Scores:
        active, canary = self._active, self._canary
        if active is None:
            raise RuntimeError(f"no version of model {self.name!r} is loaded")
        if canary is not None and share_bucket(routing_key) < self._canary_share:
            try:
                return await self._score_on(canary, rows)
            except Exception:  # noqa: BLE001 - counted on the canary, served by the active model
                logger.warning("canary %s %s failed a batch; served by the active model",
                               self.name, canary.update.version, exc_info=True)
        return await self._score_on(active, rows)

    async def _score_on(self, slot: _Slot, rows: Matrix) -> Scores:
        started = time.perf_counter()
        slot.stats.requests += 1
        try:
            values = await slot.batcher.infer(rows)
        except Exception:
            slot.stats.errors += 1
            INFERENCE_ERRORS.labels(self.provider.name, slot.update.version).inc()
            raise
        finally:
            slot.stats.latency_us += int((time.perf_counter() - started) * 1_000_000)
        return Scores(values, slot.update.version)

    # --- updates ----------------------------------------------------------------------------

    async def apply(self, update: ModelUpdate) -> None:
        """Serve ``update``; raises ModelRejected (and keeps what serves) when it fails."""
        if update.name != self.name:
            return
        async with self._apply_lock:
            if update.share <= 0:
                if self._canary is not None and self._canary.update.version == update.version:
                    self._retire(self._canary, "canary")
                    self._canary, self._canary_share = None, 0.0
                return
            current = self._active if update.share >= 1 else self._canary
            if current is not None and current.update == update:
                return
            reusable = next((slot for slot in (self._active, self._canary) if slot is not None
                             and slot.update.version == update.version
                             and slot.update.sha256 == update.sha256), None)
            slot = reusable or await self._load(update)
            if update.share >= 1:
                previous, self._active = self._active, slot
                if self._canary is slot:
                    self._canary, self._canary_share = None, 0.0
                if previous is not None and previous is not slot:
                    self._retire(previous, "active")
                ACTIVE_MODEL.labels(self.name, update.version, "active").set(1)
            else:
                previous, self._canary = self._canary, slot
                self._canary_share = update.share
                if previous is not None and previous is not slot:
                    self._retire(previous, "canary")
                ACTIVE_MODEL.labels(self.name, update.version, "canary").set(1)
            logger.info("model %s %s serving as %s (share %.3f)", self.name, update.version,
                        "active" if update.share >= 1 else "canary", update.share)

    async def _load(self, update: ModelUpdate) -> _Slot:
        try:
            data = await self._fetch(update.location)
            verify_sha256(data, update.sha256)
            info = inspect_model(data)
            check_schema(info)
            model = await asyncio.to_thread(
                self.provider.load, ModelSource(data, update.name, update.version))
            try:
                await asyncio.to_thread(model.warm_up)
                await asyncio.to_thread(golden_check, model.infer, info)
            except BaseException:
                model.close()
                raise
        except Exception as error:
            reason = _reason(error)
            MODEL_LOAD_FAILURES.labels(self.name, reason).inc()
            logger.error("refused model %s %s (%s): %s", update.name, update.version, reason,
                         error)
            await self._report_load(update, ok=False, reason=f"{reason}: {error}")
            raise ModelRejected(reason, f"model {update.name} {update.version} refused "
                                        f"({reason}): {error}") from error
        await self._report_load(update, ok=True, reason="")
        batcher: InferenceBatcher | LoopBatcher
        if self.provider.name in LOOP_BATCHED_PROVIDERS:
            batcher = LoopBatcher(model.infer, provider=self.provider.name,
                                  max_batch=model.max_batch)
        else:
            batcher = InferenceBatcher(model.infer, provider=self.provider.name,
                                       max_batch=model.max_batch, max_items=self._max_items,
                                       flush_us=self._flush_us)
        return _Slot(update, info, model, batcher)

    def _retire(self, slot: _Slot, role: str) -> None:
        with contextlib.suppress(KeyError):
            ACTIVE_MODEL.remove(self.name, slot.update.version, role)

        async def retire() -> None:
            await slot.batcher.drain()
            await self._flush_slot(slot)
            if slot not in (self._active, self._canary):
                slot.batcher.close()
                slot.model.close()

        self._spawn(retire())

    def _spawn(self, coroutine: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- following the bus ------------------------------------------------------------------

    async def restore(self, bus: Bus) -> None:
        """Load what the key-value bucket says serves now (a starting bidder)."""
        for role in ("active", "canary"):
            raw = await bus.kv_get(MODELS_BUCKET, kv_key(self.name, role))
            if raw:
                with contextlib.suppress(ModelRejected):
                    await self.apply(msgspec.json.decode(raw, type=ModelUpdate))

    async def follow(self, bus: Bus) -> None:
        """Apply every update published on `models.update` from now on."""

        async def on_update(message: Message) -> None:
            try:
                update = msgspec.json.decode(message.data, type=ModelUpdate)
            except msgspec.ValidationError as error:
                logger.error("ignored a malformed model update: %s", error)
                return
            with contextlib.suppress(ModelRejected):
                await self.apply(update)

        self._subscription = await bus.subscribe(UPDATES_SUBJECT, on_update)

    # --- counters ---------------------------------------------------------------------------

    def start_stats(self) -> None:
        if self.store is not None and self._stats_task is None:
            self._stats_task = asyncio.ensure_future(self._stats_loop())

    async def _stats_loop(self) -> None:
        while True:
            await asyncio.sleep(self._stats_interval)
            await self.flush_stats()

    async def flush_stats(self) -> None:
        for slot in (self._active, self._canary):
            if slot is not None:
                await self._flush_slot(slot)

    async def _flush_slot(self, slot: _Slot) -> None:
        if self.store is None:
            return
        stats, slot.stats = slot.stats, _Stats()
        try:
            for counter in ("requests", "errors", "latency_us"):
                amount = getattr(stats, counter)
                if amount:
                    await self.store.incr_within(
                        stats_key(self.name, slot.update.version, counter), amount,
                        limit=COUNTER_LIMIT, ttl_seconds=STATS_TTL_SECONDS)
        except StoreUnavailable:
            # Keep the counts for the next flush rather than lose them.
            slot.stats.requests += stats.requests
            slot.stats.errors += stats.errors
            slot.stats.latency_us += stats.latency_us

    async def _report_load(self, update: ModelUpdate, *, ok: bool, reason: str) -> None:
        """Count loads per outcome and keep the latest failure, for the registry to show."""
        if self.store is None:
            return
        outcome = "loaded" if ok else "failed"
        with contextlib.suppress(StoreUnavailable):
            await self.store.incr_within(load_key(update.name, update.version, outcome), 1,
                                          limit=COUNTER_LIMIT, ttl_seconds=STATS_TTL_SECONDS)
            if not ok:
                failure = {"node": self.node, "reason": reason, "sha256": update.sha256,
                           "at": datetime.now(UTC).isoformat()}
                await self.store.set(load_key(update.name, update.version, "last-failure"),
                                      msgspec.json.encode(failure),
                                      ttl_seconds=STATS_TTL_SECONDS)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None
        if self._stats_task is not None:
            self._stats_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._stats_task
        await self.flush_stats()
        for slot in (self._active, self._canary):
            if slot is not None:
                await slot.batcher.drain()
                slot.batcher.close()
                slot.model.close()
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)


def _reason(error: Exception) -> str:
    if isinstance(error, ChecksumMismatch):
        return "checksum"
    if isinstance(error, SchemaMismatch):
        return "schema"
    if isinstance(error, GoldenMismatch):
        return "golden"
    if isinstance(error, ModelFileError):
        return "file"
    if isinstance(error, ModelLoadError):
        return "provider"
    if isinstance(error, OSError | ValueError):
        return "fetch"
    return "provider"


def kv_value(update: ModelUpdate) -> bytes:
    return msgspec.json.encode(update)


__all__ = ["MODELS_BUCKET", "UPDATES_SUBJECT", "ModelRejected", "ModelRuntime", "ModelUpdate",
           "Scores", "kv_key", "kv_value", "load_key", "make_fetch", "share_bucket",
           "stats_key"]
