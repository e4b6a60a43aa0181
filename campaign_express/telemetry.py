"""Traces: OpenTelemetry spans, exported over OTLP when an endpoint is configured.

Off (neither `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` nor `OTEL_EXPORTER_OTLP_ENDPOINT` set), the
SDK is never imported and `tracer` stays None: a transport checks that one module attribute
per request and does nothing else. On, `configure` installs a tracer provider whose batch
processor exports from a background thread, so a request only records its span.

The web process configures tracing when Django loads `RequestTelemetryMiddleware`; the bidder
(`python -m bidding`) in its `main`. In embedded mode both run in one process: the first
service name configured is the one the spans carry.

Django-free: the bidder imports it (the middleware imports Django only when Django builds it).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import msgspec
from asgiref.sync import iscoroutinefunction, markcoroutinefunction

from campaign_express.env import Config
from campaign_express.logs import REQUEST, REQUEST_ID_HEADER, RequestContext

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.sampling import Sampler
    from opentelemetry.trace import Span, Tracer

BIDDER_SERVICE = "campaign-express-bidder"
WEB_SERVICE = "campaign-express-web"

tracer: Tracer | None = None
provider: TracerProvider | None = None
# `opentelemetry.trace` and the W3C propagator, imported by `configure`: not on every span.
_api: Any = None
_propagator: Any = None


def configure(config: Config, *, service_name: str) -> TracerProvider | None:
    """Start exporting spans when an OTLP endpoint is configured; the provider, or None.

    Once per process: a second call keeps the first provider (embedded mode calls twice).
    """
    global tracer, provider, _api, _propagator
    if provider is not None or not config.otlp_traces_endpoint:
        return provider
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    provider = TracerProvider(
        resource=Resource.create({"service.name": config.otel_service_name or service_name,
                                  "service.instance.id": config.node_id}),
        sampler=_sampler(config))
    provider.add_span_processor(BatchSpanProcessor(_exporter(config)))
    # The API's global provider can be set once per process; ours is used through `tracer`.
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        trace.set_tracer_provider(provider)
    tracer = provider.get_tracer("campaign_express")
    _api, _propagator = trace, TraceContextTextMapPropagator()
    return provider


def shutdown() -> None:
    """Export what is buffered and stop tracing (the SDK also does this at exit)."""
    global tracer, provider
    if provider is not None:
        provider.shutdown()
    tracer = provider = None


def _exporter(config: Config) -> Any:
    if config.otlp_protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[assignment]
            OTLPSpanExporter,
        )
    return OTLPSpanExporter(endpoint=config.otlp_traces_endpoint)


def _sampler(config: Config) -> Sampler:
    """The standard OTEL_TRACES_SAMPLER names; `parentbased_*` follow the caller's decision."""
    from opentelemetry.sdk.trace import sampling

    name = config.otel_traces_sampler
    root = {"always_on": sampling.ALWAYS_ON, "always_off": sampling.ALWAYS_OFF}.get(
        name.removeprefix("parentbased_")) or sampling.TraceIdRatioBased(
        config.otel_traces_sampler_ratio)
    return sampling.ParentBased(root) if name.startswith("parentbased_") else root


@contextmanager
def server_span(name: str, *, carrier: Mapping[str, str],
                attributes: Mapping[str, str | int]) -> Iterator[Span]:
    """A server span around the block, the caller's span its parent when `carrier` holds a
    W3C `traceparent`; an exception leaving the block is recorded and marks it an error.
    Only while tracing is on (`tracer` set)."""
    assert tracer is not None
    parent = _propagator.extract(carrier) if carrier else None
    span = tracer.start_span(name, context=parent, kind=_api.SpanKind.SERVER,
                             attributes=attributes)
    with _api.use_span(span, end_on_exit=True):
        yield span


class _RequestId(msgspec.Struct):
    id: str = ""


class _SeatBid(msgspec.Struct):
    bid: list[msgspec.Raw] = []


class _Response(msgspec.Struct):
    id: str = ""
    seatbid: list[_SeatBid] = []


_REQUEST_ID = msgspec.json.Decoder(_RequestId)
_RESPONSE = msgspec.json.Decoder(_Response)


def openrtb_request_id(body: bytes) -> str:
    """The `id` of an OpenRTB request or response body, or '' when it has none."""
    try:
        return _REQUEST_ID.decode(body).id
    except msgspec.DecodeError:
        return ""


def bid_count(body: bytes) -> int:
    """How many bids an OpenRTB response body holds (0 for a no-bid or an empty body)."""
    try:
        return sum(len(seat.bid) for seat in _RESPONSE.decode(body).seatbid)
    except msgspec.DecodeError:
        return 0


def bid_attributes(span: Span, *, status: int, body: bytes, request_body: bytes,
                   reason: Any = None) -> None:
    """The outcome of a bid request on its span: OpenRTB id, status, no-bid reason, bids.
    Nothing is decoded for a span that was not sampled."""
    if not span.is_recording():
        return
    http_status(span, status)
    if request_id := openrtb_request_id(request_body):
        span.set_attribute("openrtb.request.id", request_id)
    span.set_attribute("openrtb.bid.count", bid_count(body) if status == 200 else 0)
    if reason is not None:
        span.set_attribute("openrtb.nbr", int(reason.nbr))
        span.set_attribute("openrtb.no_bid.reason", str(reason.value))


_VALID_REQUEST_ID = re.compile(r"[\w.:@/+=-]{1,128}", re.ASCII)


def request_id_from(header: str) -> str:
    """The caller's request id when it is a sane token, else a new uuid4 hex."""
    return header if _VALID_REQUEST_ID.fullmatch(header) else uuid.uuid4().hex


class RequestTelemetryMiddleware:
    """Django: every request gets an id (the caller's `X-Request-ID`, else a new one), echoed
    in the response's `X-Request-ID` and carried by every line logged meanwhile; with tracing
    on, a server span `METHOD route` with the caller's `traceparent` as its parent."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable[[Any], Any]) -> None:
        from django.conf import settings  # type: ignore[import-untyped, unused-ignore]
        from django.core.signals import request_finished  # type: ignore[import-untyped, unused-ignore]

        configure(settings.CONFIG, service_name=WEB_SERVICE)
        request_finished.connect(_request_finished, dispatch_uid="campaign_express.telemetry")
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: Any) -> Any:
        if self.is_async:
            return self._acall(request)
        with self._handling(request) as respond:
            return respond(self.get_response(request))

    async def _acall(self, request: Any) -> Any:
        get_response: Callable[[Any], Awaitable[Any]] = self.get_response
        with self._handling(request) as respond:
            return respond(await get_response(request))

    @contextmanager
    def _handling(self, request: Any) -> Iterator[Callable[[Any], Any]]:
        request_id = request.request_id = request_id_from(
            request.headers.get(REQUEST_ID_HEADER, ""))
        context = RequestContext(request_id)
        # Set, not reset on the way out: Django logs a 4xx or 5xx response after the whole
        # middleware chain has returned. `request_finished` clears it.
        REQUEST.set(context)
        if tracer is None:
            yield lambda response: _echo(response, request_id)
            return
        carrier = {name: request.headers[name] for name in ("traceparent", "tracestate")
                   if name in request.headers}
        with server_span(request.method, carrier=carrier, attributes={
                "http.request.method": request.method, "url.path": request.path}) as span:
            context.span = span

            def respond(response: Any) -> Any:
                match = getattr(request, "resolver_match", None)
                if match is not None:
                    span.update_name(f"{request.method} {match.route}")
                    span.set_attribute("http.route", match.route)
                http_status(span, response.status_code)
                return _echo(response, request_id)

            yield respond


def _request_finished(**kwargs: Any) -> None:
    REQUEST.set(None)


def http_status(span: Span, status: int) -> None:
    """An HTTP status on a server span: 5xx marks it an error (4xx is the caller's)."""
    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(_api.StatusCode.ERROR)


def _echo(response: Any, request_id: str) -> Any:
    response[REQUEST_ID_HEADER] = request_id
    return response
