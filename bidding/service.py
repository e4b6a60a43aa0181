"""A bidder's long-lived state: the model runtime, the served snapshot, and what feeds them.

`BidderService.start` loads the latest snapshot and model versions from the bus's key-value
buckets (falling back to the shipped model when the registry has published none), then
follows `config.snapshot` and `models.update` so every change reaches the running bidder.
It owns the agent pool every transport bids through, and starts the transports besides HTTP:
bid agents on the bus (always) and the gRPC server (when given a port). It also owns the
process's analytics buffer and its publisher (`analytics.pipeline`): every decision and
counted notice becomes an event there, published in batches on the `ANALYTICS` stream, and
`stop` publishes what is left.

Django-free: the bidder process and the embedded platform both run it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from typing import TYPE_CHECKING

from analytics.pipeline import EventBuffer, Publisher
from bidding import metrics
from bidding import snapshot as snapshots
from bidding.agents import AgentPool
from bidding.budget import Ledger
from bidding.bus_agents import BusAgents
from bidding.engine import BidEngine, EngineSettings
from bidding.events import BidEvents
from bidding.gateway import Gateway
from bidding.handler import BidHandler
from bidding.notices import NoticeHandler
from bidding.profiles import PROFILE_UPDATED_SUBJECT, ProfileCache
from campaign_express.backends.bus import Bus, BusUnavailable, Message, Subscription
from campaign_express.backends.store import Store
from campaign_express.env import Config
from dsp.bidder import DspBidder
from inference.modelfile import DEFAULT_MODEL_PATH, default_model_manifest
from inference.providers import provider_from_config
from inference.runtime import ModelRuntime, ModelUpdate, make_fetch

if TYPE_CHECKING:
    from bidding.grpc_server import GrpcServer

logger = logging.getLogger(__name__)


class BidderService:
    """`grpc_port`: None serves no gRPC (the embedded platform), 0 any free port (tests)."""

    def __init__(self, *, config: Config, bus: Bus, store: Store, grpc_port: int | None = None,
                 agent_queue_size: int | None = None) -> None:
        self.config = config
        self.bus = bus
        self.store = store
        self.runtime = ModelRuntime(
            provider=provider_from_config(config), name=config.npu_model_name,
            fetch=make_fetch(bus), node=config.node_id, store=store,
            max_items=config.npu_batcher_max_items, flush_us=config.npu_batcher_flush_us)
        self.engine = BidEngine(runtime=self.runtime, ledger=Ledger(store),
                                profiles=ProfileCache(store),
                                settings=EngineSettings(public_url=config.public_url,
                                                        secret=config.secret_key.encode()))
        self._subscription: Subscription | None = None
        self._poll: asyncio.Task[None] | None = None
        self._profile_subscription: Subscription | None = None
        self.events = BidEvents(buffer=EventBuffer(capacity=config.analytics_buffer_events),
                                node=config.node_id)
        self.publisher = Publisher(buffer=self.events.buffer, bus=bus,
                                   batch_size=config.analytics_publish_batch,
                                   interval=config.analytics_publish_interval_ms / 1000)
        self.notices = NoticeHandler(store=store, ledger=self.engine.ledger,
                                     secret=config.secret_key.encode(), events=self.events)
        # Partner DSPs compete only when routing is on; off, nothing is ever sent to them.
        self.dsp = DspBidder(store=store, secret=config.secret_key.encode(),
                             public_url=config.public_url, node=config.node_id,
                             buffer=self.events.buffer) if config.dsp_enabled else None
        self.handler = BidHandler(self)
        self.agents = AgentPool(self.handler, agents=config.agents_per_node,
                                queue_size=agent_queue_size, on_turned_away=self.events.no_bid)
        self.gateway = Gateway(handler=self.handler, agents=self.agents,
                               is_ready=lambda: self.is_ready)
        self.bus_agents = BusAgents(bus=bus, gateway=self.gateway)
        self.grpc_port = grpc_port
        self.grpc: GrpcServer | None = None

    @property
    def is_ready(self) -> bool:
        return self.engine.index is not None and self.runtime.is_ready

    def state(self) -> dict[str, object]:
        index = self.engine.index
        return {"snapshot_version": index.version if index is not None else None,
                "campaigns": len(index.snapshot.campaigns) if index is not None else 0,
                "model": self.runtime.serving()}

    async def start(self) -> None:
        await self.bus.connect()
        self.publisher.start()
        await self.runtime.restore(self.bus)
        if not self.runtime.is_ready:
            await self.runtime.apply(self._shipped_model())
        await self.runtime.follow(self.bus)
        self.runtime.start_stats()
        self._subscription = await self.bus.subscribe(snapshots.SUBJECT, self._on_snapshot)
        self._profile_subscription = await self.bus.subscribe(PROFILE_UPDATED_SUBJECT,
                                                              self._on_profile_updated)
        latest = await self.bus.kv_get(snapshots.BUCKET, snapshots.KEY)
        if latest:
            await self.receive(latest)
        self._poll = asyncio.create_task(self._poll_bucket(), name="snapshot-poll")
        await self.agents.start()
        await self.bus_agents.start()
        if self.grpc_port is not None:
            from bidding.grpc_server import GrpcServer  # grpc stays off the embedded path

            self.grpc = GrpcServer(self, host=self.config.api_host, port=self.grpc_port)
            await self.grpc.start()

    def _shipped_model(self) -> ModelUpdate:
        """The model in the package, for a registry that has published nothing yet."""
        path = self.config.npu_model_path or str(DEFAULT_MODEL_PATH)
        manifest = default_model_manifest()
        return ModelUpdate(name=self.config.npu_model_name, version=str(manifest["version"]),
                           location=f"file://{path}", sha256=manifest["sha256"]
                           if path == str(DEFAULT_MODEL_PATH) else _file_sha256(path))

    async def _on_profile_updated(self, message: Message) -> None:
        self.engine.profiles.forget(message.data.decode(errors="replace"))

    async def _on_snapshot(self, message: Message) -> None:
        await self.receive(message.data)

    async def _poll_bucket(self) -> None:
        """The bucket's pointer every `snapshot_poll_seconds`: a snapshot published while
        this bidder was cut off from NATS (its message lost) still arrives; one already
        served costs a key read, not a download."""
        while True:
            await asyncio.sleep(self.config.snapshot_poll_seconds)
            try:
                latest = await self.bus.kv_get(snapshots.BUCKET, snapshots.KEY)
                if latest:
                    await self.receive(latest)
            except BusUnavailable as error:
                logger.warning("could not read the config bucket: %s", error)

    async def receive(self, pointer: bytes) -> None:
        """Fetch and serve the snapshot a published pointer names (unless it is served)."""
        index = self.engine.index
        version = snapshots.pointer_version(pointer)
        if index is not None and version is not None and version <= index.version:
            return
        try:
            snapshot = await snapshots.fetch(self.bus, pointer)
        except snapshots.SnapshotError as error:
            logger.error("refused a config snapshot: %s", error)
            return
        self._serve(snapshot)

    def install(self, data: bytes) -> None:
        """Serve a snapshot given whole (gzipped or plain JSON)."""
        try:
            snapshot = snapshots.decode(data)
        except snapshots.SnapshotError as error:
            logger.error("refused a config snapshot: %s", error)
            return
        self._serve(snapshot)

    def _serve(self, snapshot: snapshots.Snapshot) -> None:
        if self.engine.install(snapshot):
            metrics.SNAPSHOT_VERSION.set(snapshot.version)
            metrics.SNAPSHOT_CAMPAIGNS.set(len(snapshot.campaigns))
            logger.info("serving config snapshot %d (%d campaigns)", snapshot.version,
                        len(snapshot.campaigns))

    async def stop(self) -> None:
        if self._poll is not None:
            self._poll.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poll
        if self.grpc is not None:
            await self.grpc.stop()
        await self.bus_agents.stop()
        await self.agents.stop()
        for subscription in (self._subscription, self._profile_subscription):
            if subscription is not None:
                await subscription.unsubscribe()
        await self.runtime.close()
        if self.dsp is not None:
            await self.dsp.close()
        await self.publisher.stop()


def _file_sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.sha256(handle.read()).hexdigest()
