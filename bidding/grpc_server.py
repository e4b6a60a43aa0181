"""The bidder's gRPC server (`campaign.bidding.v1.BiddingService`), beside HTTP in one process.

`ProcessBid` and `StreamBids` answer exactly as `POST /v1/bid[/{exchange}]` does (same
exchange check, same agent pool, same statuses and bodies), with the HTTP status in the
message: the RPC fails only when gRPC itself does, so one refused request does not end a
stream. The token comes from the message, else from `authorization: Bearer ...` metadata; the
address for IP-listed exchanges is the peer's. The server also carries the standard
`grpc.health.v1` service (SERVING only while the bidder is ready) and server reflection, so
`grpcurl` and load balancers work without the .proto.

Each bid's log lines carry the OpenRTB request's id (else the message's `request_id`); with
tracing on, each bid is a server span, its parent the caller's `traceparent` metadata.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import grpc
import grpc.aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from bidding import grpc_stubs
from bidding.gateway import bearer_token, caller_address, networks
from bidding.handler import Answer
from campaign_express import telemetry
from campaign_express.logs import REQUEST, RequestContext

if TYPE_CHECKING:  # the service starts this server: importing it here would be circular
    from bidding.service import BidderService

logger = logging.getLogger(__name__)

messages, services = grpc_stubs.load()
SERVICE_NAME: str = messages.DESCRIPTOR.services_by_name["BiddingService"].full_name
READINESS_POLL_SECONDS = 1.0

Context = grpc.aio.ServicerContext[Any, Any]


def peer_address(peer: str) -> str:
    """The IP in a gRPC peer string (`ipv4:10.0.0.1:5000`, `ipv6:%5B::1%5D:5000`), or ''."""
    kind, _, rest = unquote(peer).partition(":")
    if kind in ("ipv4", "ipv6"):
        return rest.rpartition(":")[0].strip("[]")
    return ""


def metadata_token(context: Context) -> str:
    for key, value in context.invocation_metadata() or ():
        if key.lower() == "authorization":
            return bearer_token(value if isinstance(value, str) else value.decode("latin-1"))
    return ""


def trace_carrier(context: Context) -> dict[str, str]:
    return {key.lower(): value if isinstance(value, str) else value.decode("latin-1")
            for key, value in context.invocation_metadata() or ()
            if key.lower() in ("traceparent", "tracestate")}


class _BidMessage(RequestContext):
    """A bid message's log context; its id is read only when a line is logged."""

    __slots__ = ("message",)

    def __init__(self, message: Any, span: Any) -> None:
        super().__init__("", span)
        self.message = message

    @property
    def request_id(self) -> str:
        if not self._request_id:
            self._request_id = (telemetry.openrtb_request_id(self.message.openrtb)
                                or self.message.request_id)
        return str(self._request_id)


def bid_response(request_id: str, answer: Answer) -> Any:
    response = messages.BidResponse(request_id=request_id, status=answer.status,
                                    body=answer.body)
    if answer.reason is not None:
        response.nbr = int(answer.reason.nbr)
        response.reason = answer.reason.value
    return response


class BiddingServicer:
    def __init__(self, service: BidderService) -> None:
        self.service = service
        self.trusted_proxies = networks(service.config.trusted_proxies)

    def _caller(self, context: Context) -> str:
        """The peer's address, or behind trusted proxies the one they forwarded for."""
        forwarded = [value if isinstance(value, str) else value.decode("latin-1")
                     for key, value in context.invocation_metadata() or ()
                     if key.lower() == "x-forwarded-for"]
        return caller_address(peer_address(context.peer()), forwarded, self.trusted_proxies)

    async def _answer(self, request: Any, *, token: str, address: str,
                      span: Any = None) -> Any:
        log_context = REQUEST.set(_BidMessage(request, span))
        try:
            answer = await self.service.gateway.answer(
                request.openrtb, exchange_slug=request.exchange, token=request.token or token,
                address=address)
        finally:
            REQUEST.reset(log_context)
        if span is not None:
            telemetry.bid_attributes(span, status=answer.status, body=answer.body,
                                     request_body=request.openrtb, reason=answer.reason)
        return bid_response(request.request_id, answer)

    async def _traced_answer(self, method: str, request: Any, context: Context, *, token: str,
                             address: str) -> Any:
        with telemetry.server_span(f"{SERVICE_NAME}/{method}", carrier=trace_carrier(context),
                                   attributes={"rpc.system": "grpc", "rpc.service": SERVICE_NAME,
                                               "rpc.method": method,
                                               "openrtb.exchange": request.exchange}) as span:
            return await self._answer(request, token=token, address=address, span=span)

    async def ProcessBid(self, request: Any, context: Context) -> Any:  # noqa: N802 - gRPC name
        token, address = metadata_token(context), self._caller(context)
        if telemetry.tracer is None:
            return await self._answer(request, token=token, address=address)
        return await self._traced_answer("ProcessBid", request, context, token=token,
                                         address=address)

    async def StreamBids(self, requests: AsyncIterator[Any],  # noqa: N802 - gRPC name
                         context: Context) -> AsyncIterator[Any]:
        """Answers in the order they are ready; every request is bid on concurrently."""
        token, address = metadata_token(context), self._caller(context)
        answers: asyncio.Queue[Any] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()
        done = object()

        async def answer(request: Any) -> None:
            if telemetry.tracer is None:
                response = await self._answer(request, token=token, address=address)
            else:
                response = await self._traced_answer("StreamBids", request, context,
                                                     token=token, address=address)
            await answers.put(response)

        async def read() -> None:
            try:
                async for request in requests:
                    task = asyncio.create_task(answer(request))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                await asyncio.gather(*pending)
            finally:
                await answers.put(done)

        reader = asyncio.create_task(read())
        try:
            while (response := await answers.get()) is not done:
                yield response
            await reader
        finally:
            reader.cancel()
            for task in list(pending):
                task.cancel()

    async def HealthCheck(self, request: Any, context: Context) -> Any:  # noqa: N802 - gRPC name
        service = self.service
        index = service.engine.index
        active = service.runtime.serving().get("active")
        status = messages.HealthCheckResponse.SERVING if service.is_ready else \
            messages.HealthCheckResponse.NOT_SERVING
        response = messages.HealthCheckResponse(
            status=status, model_version=str(active) if active is not None else "",
            campaigns=len(index.snapshot.campaigns) if index is not None else 0,
            node_id=service.config.node_id)
        if index is not None:
            response.snapshot_version = index.version
        return response


class ReadinessHealth(health.aio.HealthServicer):
    """`grpc.health.v1` for the whole server and for BiddingService, following readiness."""

    def __init__(self, service: BidderService) -> None:
        super().__init__()
        self.service = service

    async def refresh(self) -> None:
        status = (health_pb2.HealthCheckResponse.SERVING if self.service.is_ready
                  else health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in ("", SERVICE_NAME):
            await self.set(name, status)

    async def Check(self, request: health_pb2.HealthCheckRequest,  # noqa: N802 - gRPC name
                    context: grpc.aio.ServicerContext[health_pb2.HealthCheckRequest,
                                                      health_pb2.HealthCheckResponse],
                    ) -> health_pb2.HealthCheckResponse:
        await self.refresh()
        return await super().Check(request, context)

    async def follow(self) -> None:
        """Keep `Watch` callers told: readiness changes with snapshots and models."""
        while True:
            await self.refresh()
            await asyncio.sleep(READINESS_POLL_SECONDS)


class GrpcServer:
    """A grpc.aio server on `host:port` (port 0: any free port, see `port` once started)."""

    def __init__(self, service: BidderService, *, host: str, port: int,
                 grace_seconds: float = 2.0) -> None:
        self.service = service
        self.host = host
        self.port = port
        self.grace_seconds = grace_seconds
        self._server: grpc.aio.Server | None = None
        self._health: ReadinessHealth | None = None
        self._follower: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # SO_REUSEPORT off: a second bidder on a taken port must fail, not share it.
        server = grpc.aio.server(options=(("grpc.so_reuseport", 0),))
        services.add_BiddingServiceServicer_to_server(BiddingServicer(self.service), server)
        self._health = ReadinessHealth(self.service)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
        host = f"[{self.host}]" if ":" in self.host else self.host
        try:
            bound = server.add_insecure_port(f"{host}:{self.port}")
        except RuntimeError as error:
            raise OSError(f"gRPC cannot listen on {host}:{self.port}: {error}") from error
        if bound == 0:
            raise OSError(f"gRPC cannot listen on {host}:{self.port}")
        await self._health.refresh()
        await server.start()
        self._server, self.port = server, bound
        self._follower = asyncio.create_task(self._health.follow())
        logger.info("gRPC listening on %s:%d", host, bound)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if self._follower is not None:
            self._follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
            self._follower = None
        if server is None:
            return
        if self._health is not None:
            await self._health.enter_graceful_shutdown()
        await server.stop(self.grace_seconds)
