"""Traces and request ids: spans reach a real OTLP receiver the test runs (HTTP and gRPC), the
caller's `traceparent` becomes their parent, and log lines carry the request's id."""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from bidding import grpc_stubs
from bidding.app import HttpRequestContext
from bidding.service import BidderService
from campaign_express import env, telemetry
from campaign_express.backends.bus import InProcessBus
from campaign_express.backends.store import MemoryStore
from campaign_express.logs import REQUEST, JsonFormatter, RequestContextFilter
from tests.bidding.bidder_fixtures import broad_campaigns, config, fixture, snapshot
from tests.bidding.bidder_fixtures import client as bidder_client

ROOT = Path(__file__).resolve().parents[1]
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT_SPAN_ID}-01"


class _OtlpHttpHandler(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        self.server.posts.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format, *args) -> None:  # noqa: A002 - http.server's name
        pass


class _OtlpGrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.exports: list[trace_service_pb2.ExportTraceServiceRequest] = []

    def Export(self, request, context):  # noqa: N802 - gRPC name
        self.exports.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


@pytest.fixture
def otlp_http() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _OtlpHttpHandler)
    server.posts = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def tracing_over_http(otlp_http, tmp_path) -> Iterator[ThreadingHTTPServer]:
    endpoint = f"http://127.0.0.1:{otlp_http.server_address[1]}/v1/traces"
    telemetry.configure(dataclasses.replace(config(tmp_path), otlp_traces_endpoint=endpoint,
                                            otlp_protocol="http/protobuf"),
                        service_name=telemetry.BIDDER_SERVICE)
    yield otlp_http
    telemetry.shutdown()


def exported_spans(requests) -> list:
    return [(resource_spans.resource, span) for request in requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans for span in scope_spans.spans]


def http_exports(server) -> list:
    assert telemetry.provider is not None
    assert telemetry.provider.force_flush()
    requests = []
    for path, content_type, body in server.posts:
        assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
        requests.append(trace_service_pb2.ExportTraceServiceRequest.FromString(body))
    return exported_spans(requests)


def attributes(span) -> dict:
    return {attribute.key: getattr(attribute.value, attribute.value.WhichOneof("value"))
            for attribute in span.attributes}


async def test_a_bid_is_exported_as_a_server_span_child_of_the_callers(tracing_over_http,
                                                                       tmp_path):
    service = await started_service_at(tmp_path)
    try:
        async with bidder_client(service) as http:
            response = await http.post("/v1/bid", json=fixture("banner-site-2.6.json"),
                                       headers={"traceparent": TRACEPARENT})
    finally:
        await service.stop()
    assert response.status_code == 200

    [(resource, span)] = http_exports(tracing_over_http)
    assert span.name == "POST /v1/bid"
    assert span.kind == span.SPAN_KIND_SERVER
    assert span.trace_id.hex() == TRACE_ID
    assert span.parent_span_id.hex() == PARENT_SPAN_ID
    assert attributes(span) == {
        "http.request.method": "POST", "url.path": "/v1/bid", "openrtb.exchange": "open",
        "http.response.status_code": 200, "openrtb.request.id": "req-banner-26",
        "openrtb.bid.count": 1}
    assert {"key": "service.name", "value": telemetry.BIDDER_SERVICE} in [
        {"key": attribute.key, "value": attribute.value.string_value}
        for attribute in resource.attributes]


async def test_a_no_bid_span_carries_the_reason_and_a_new_trace_without_traceparent(
        tracing_over_http, tmp_path):
    service = await started_service_at(tmp_path)
    try:
        async with bidder_client(service) as http:
            response = await http.post("/v1/bid/reasons",
                                       json={**fixture("banner-site-2.6.json"), "tmax": 10})
    finally:
        await service.stop()
    assert response.json() == {"id": "req-banner-26", "nbr": 15}

    [(_, span)] = http_exports(tracing_over_http)
    assert span.parent_span_id == b""
    assert span.trace_id.hex() != TRACE_ID
    assert attributes(span) == {
        "http.request.method": "POST", "url.path": "/v1/bid/reasons",
        "openrtb.exchange": "reasons", "http.response.status_code": 200,
        "openrtb.request.id": "req-banner-26", "openrtb.bid.count": 0, "openrtb.nbr": 15,
        "openrtb.no_bid.reason": "insufficient_time"}


async def test_a_click_is_a_span_named_for_its_route(tracing_over_http, tmp_path):
    service = await started_service_at(tmp_path)
    try:
        async with bidder_client(service) as http:
            response = await http.get("/v1/click", params={"id": "unsigned"},
                                      headers={"traceparent": TRACEPARENT})
    finally:
        await service.stop()

    [(_, span)] = http_exports(tracing_over_http)
    assert (span.name, span.parent_span_id.hex()) == ("GET /v1/click", PARENT_SPAN_ID)
    assert attributes(span)["http.response.status_code"] == response.status_code


async def test_process_bid_over_grpc_is_exported_to_a_grpc_receiver(tmp_path):
    receiver = _OtlpGrpcReceiver()
    collector = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, collector)
    port = collector.add_insecure_port("127.0.0.1:0")
    collector.start()
    bidder_config = dataclasses.replace(config(tmp_path), api_host="127.0.0.1",
                                        otlp_traces_endpoint=f"http://127.0.0.1:{port}",
                                        otlp_protocol="grpc")
    telemetry.configure(bidder_config, service_name=telemetry.BIDDER_SERVICE)
    service = BidderService(config=bidder_config, bus=InProcessBus(), store=MemoryStore(),
                            grpc_port=0)
    messages, services = grpc_stubs.load()
    try:
        await service.start()
        service.install(snapshot(*broad_campaigns()))
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc.port}") as channel:
            response = await services.BiddingServiceStub(channel).ProcessBid(
                messages.BidRequest(openrtb=json.dumps(fixture("banner-site-2.6.json")).encode(),
                                    request_id="call-1"),
                metadata=(("traceparent", TRACEPARENT),))
        assert response.status == 200
        assert telemetry.provider.force_flush()
    finally:
        await service.stop()
        telemetry.shutdown()
        collector.stop(None)

    [(_, span)] = exported_spans(receiver.exports)
    assert span.name == "campaign.bidding.v1.BiddingService/ProcessBid"
    assert (span.trace_id.hex(), span.parent_span_id.hex()) == (TRACE_ID, PARENT_SPAN_ID)
    assert attributes(span) == {
        "rpc.system": "grpc", "rpc.service": "campaign.bidding.v1.BiddingService",
        "rpc.method": "ProcessBid", "openrtb.exchange": "", "http.response.status_code": 200,
        "openrtb.request.id": "req-banner-26", "openrtb.bid.count": 1}


async def started_service_at(tmp_path) -> BidderService:
    service = BidderService(config=config(tmp_path), bus=InProcessBus(), store=MemoryStore())
    await service.start()
    service.install(snapshot(*broad_campaigns()))
    return service


def test_without_an_endpoint_no_sdk_is_loaded_and_a_bid_exports_nothing(otlp_http, tmp_path):
    """In a fresh interpreter: nothing else in the suite has configured tracing there. The
    receiver runs and the standard variables name everything but an endpoint."""
    script = f"""
import asyncio, sys
from opentelemetry import trace
from campaign_express import env, telemetry
from bidding.service import BidderService
from campaign_express.backends.bus import InProcessBus
from campaign_express.backends.store import MemoryStore
from tests.bidding.bidder_fixtures import broad_campaigns, client, fixture, snapshot

assert telemetry.configure(env.load(), service_name=telemetry.BIDDER_SERVICE) is None

async def bid():
    service = BidderService(config=env.load(), bus=InProcessBus(), store=MemoryStore())
    await service.start()
    service.install(snapshot(*broad_campaigns()))
    async with client(service) as http:
        response = await http.post("/v1/bid", json=fixture("banner-site-2.6.json"),
                                   headers={{"traceparent": "{TRACEPARENT}"}})
    await service.stop()
    return response.status_code

print(asyncio.run(bid()), telemetry.tracer, telemetry.provider,
      type(trace.get_tracer_provider()).__name__, "opentelemetry.sdk" in sys.modules)
"""
    environ = {"PATH": "/usr/bin:/bin", "CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path),
               "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
               "OTEL_SERVICE_NAME": "not-exported"}
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=environ,
                            capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["200", "None", "None", "ProxyTracerProvider", "False"]
    assert otlp_http.posts == []


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """Log lines as the configured JSON handler writes them (`logs.logging_config`)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RequestContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    yield stream
    root.removeHandler(handler)


def log_lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_api_log_lines_carry_the_callers_request_id_which_is_echoed(client, json_log):
    response = client.get("/api/v1/campaigns/", HTTP_X_REQUEST_ID="caller-id-1")

    assert response.status_code == 401
    assert response["X-Request-ID"] == "caller-id-1"
    [line] = log_lines(json_log)
    del line["ts"]
    assert line == {"level": "warning", "logger": "django.request",
                    "message": "Unauthorized: /api/v1/campaigns/", "request_id": "caller-id-1"}

    logging.getLogger("after").warning("outside any request")
    assert "request_id" not in log_lines(json_log)[-1]


def test_an_api_request_without_an_id_gets_a_new_one(client, json_log):
    first = client.get("/api/v1/campaigns/")["X-Request-ID"]
    second = client.get("/api/v1/campaigns/", HTTP_X_REQUEST_ID="bad id\n")["X-Request-ID"]

    assert len(first) == len(second) == 32 and first != second
    assert [line["request_id"] for line in log_lines(json_log)] == [first, second]


def test_a_traced_api_request_logs_its_trace_and_span_ids(client, json_log, tracing_over_http):
    response = client.get("/api/v1/campaigns/", headers={"traceparent": TRACEPARENT})

    [(_, span)] = http_exports(tracing_over_http)
    assert span.name == "GET api/v1/campaigns/$"  # a DRF router route is a regex
    assert (span.trace_id.hex(), span.parent_span_id.hex()) == (TRACE_ID, PARENT_SPAN_ID)
    assert attributes(span) == {"http.request.method": "GET", "url.path": "/api/v1/campaigns/",
                                "http.route": "api/v1/campaigns/$",
                                "http.response.status_code": 401}
    [line] = log_lines(json_log)
    assert (line["request_id"], line["trace_id"], line["span_id"]) == (
        response["X-Request-ID"], TRACE_ID, span.span_id.hex())


def test_a_bid_requests_log_context_names_the_openrtb_id_else_the_callers(json_log):
    scope = {"headers": [(b"X-Request-ID", b"caller-id-2")]}
    context = HttpRequestContext(scope)
    token = REQUEST.set(context)
    try:
        logging.getLogger("bidding").warning("before the body is read")
        context.body = json.dumps(fixture("banner-site-2.6.json")).encode()
        context_with_body = HttpRequestContext(scope)
        context_with_body.body = context.body
        REQUEST.set(context_with_body)
        logging.getLogger("bidding").warning("once it is")
    finally:
        REQUEST.reset(token)

    assert [line["request_id"] for line in log_lines(json_log)] == ["caller-id-2",
                                                                    "req-banner-26"]


async def test_lines_logged_by_the_bid_agent_carry_the_requests_id(json_log, tmp_path):
    """The agent pool answers in its own tasks: the transport's log context goes with the
    request (`bidding.agents`)."""
    service = BidderService(config=config(tmp_path), bus=InProcessBus(), store=MemoryStore())
    await service.start()
    service.install(snapshot(*broad_campaigns()))

    async def broken(*args, **kwargs):
        raise RuntimeError("engine bug")

    service.engine.bid = broken  # type: ignore[method-assign]
    async with bidder_client(service) as http:
        response = await http.post("/v1/bid", json=fixture("banner-site-2.6.json"))
    await service.stop()

    assert response.status_code == 204
    failures = [line for line in log_lines(json_log) if line["message"].startswith("bid on")]
    assert [line["request_id"] for line in failures] == ["req-banner-26"]


@pytest.mark.parametrize(("variables", "endpoint"), [
    ({}, ""),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4317"}, "http://tempo:4317"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318/", "OTEL_EXPORTER_OTLP_PROTOCOL":
      "http/protobuf"}, "http://tempo:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://tempo:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
      "https://traces.example/otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
     "https://traces.example/otlp"),
])
def test_the_traces_endpoint_follows_the_otlp_rules(variables, endpoint, tmp_path):
    loaded = env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path), **variables})

    assert loaded.otlp_traces_endpoint == endpoint


@pytest.mark.parametrize(("name", "value", "message"), [
    ("OTEL_TRACES_SAMPLER", "ratio", "OTEL_TRACES_SAMPLER must be one of"),
    ("OTEL_TRACES_SAMPLER_ARG", "1.5", "OTEL_TRACES_SAMPLER_ARG must be between 0 and 1"),
    ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json", "OTEL_EXPORTER_OTLP_PROTOCOL must be one of"),
    ("OTEL_EXPORTER_OTLP_ENDPOINT", "tempo:4317", "OTEL_EXPORTER_OTLP_ENDPOINT must be a http"),
])
def test_malformed_tracing_variables_stop_start_up_naming_them(name, value, message, tmp_path):
    with pytest.raises(env.ConfigError, match=message):
        env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path), name: value})
