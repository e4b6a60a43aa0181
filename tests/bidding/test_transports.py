"""gRPC, NATS and the agent pool: every transport answers a request exactly as HTTP does."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import grpc.aio
import nats
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from prometheus_client import REGISTRY

from bidding import grpc_stubs
from bidding.agents import AgentPool
from bidding.bus_agents import QUEUE, SUBJECT
from bidding.grpc_server import peer_address
from bidding.handler import BidHandler
from bidding.nbr import NoBid
from bidding.service import BidderService
from bidding.snapshot import ExchangeEntry
from campaign_express.backends.bus import Bus, InProcessBus
from campaign_express.backends.nats_bus import NatsBus
from campaign_express.backends.store import MemoryStore
from tests.bidding.bidder_fixtures import (
    EXCHANGES,
    broad_campaigns,
    client,
    config,
    fixture,
    snapshot,
)

messages, services = grpc_stubs.load()

TOKEN = "exchange-token"
# Bodies keyed by a name, each with the exchange to send it to: bids of every format, a deal,
# a no-bid for too little time (nbr 15) on an exchange that wants reasons, an unreadable body.
CASES = {
    "banner-2.6": ("", json.dumps(fixture("banner-site-2.6.json")).encode()),
    "banner-2.5": ("", json.dumps(fixture("banner-site-2.5.json")).encode()),
    "video": ("open", json.dumps(fixture("video-app.json")).encode()),
    "native": ("", json.dumps(fixture("native-site.json")).encode()),
    "deal": ("", json.dumps(fixture("pmp-deals.json")).encode()),
    "no-time": ("reasons", json.dumps({**fixture("banner-site-2.6.json"), "tmax": 10}).encode()),
    "invalid": ("", b"{not json"),
}
RANDOM_BID_FIELDS = ("id", "nurl", "burl", "lurl", "adm")


def comparable(status: int, body: bytes) -> tuple[int, object]:
    """The answer without what differs on every bid: bid ids and the URLs carrying them."""
    if not body:
        return status, None
    parsed = json.loads(body)
    parsed.pop("bidid", None)
    for seatbid in parsed.get("seatbid", ()):
        for bid in seatbid["bid"]:
            assert all(bid.get(field) for field in ("id", "nurl", "burl", "lurl", "adm"))
            for field in RANDOM_BID_FIELDS:
                bid.pop(field)
    return status, parsed


async def http_answer(service: BidderService, exchange: str, body: bytes,
                      headers: dict[str, str] | None = None) -> tuple[int, object]:
    path = f"/v1/bid/{exchange}" if exchange else "/v1/bid"
    async with client(service) as http:
        response = await http.post(path, content=body, headers=headers or {})
    return comparable(response.status_code, response.content)


async def start_bidder(tmp_path, bus: Bus, *, grpc_port: int | None = None,
                       version: int = 1, install: bool = True) -> BidderService:
    tmp_path.mkdir(parents=True, exist_ok=True)
    service = BidderService(config=config(tmp_path, api_host="127.0.0.1"), bus=bus,
                            store=MemoryStore(), grpc_port=grpc_port)
    await service.start()
    if install:
        service.install(snapshot(*broad_campaigns(), version=version))
    return service


@pytest.fixture
async def service(tmp_path):
    service = await start_bidder(tmp_path, InProcessBus(), grpc_port=0)
    yield service
    await service.stop()


@pytest.fixture
async def channel(service):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc.port}") as channel:
        yield channel


def bid_request(name: str, **fields) -> object:
    exchange, body = CASES[name]
    return messages.BidRequest(openrtb=body, exchange=exchange, request_id=name, **fields)


# --- gRPC --------------------------------------------------------------------------------


def test_stale_stubs_are_generated_again_from_the_proto():
    grpc_stubs.STAMP.write_text("stubs from another .proto\n")
    assert not grpc_stubs.is_current()

    generated, _ = grpc_stubs.load()

    assert grpc_stubs.is_current()
    assert generated.DESCRIPTOR.package == "campaign.bidding.v1"


@pytest.mark.parametrize("name", list(CASES))
async def test_process_bid_answers_as_http_does(service, channel, name):
    exchange, body = CASES[name]

    response = await services.BiddingServiceStub(channel).ProcessBid(bid_request(name))

    assert response.request_id == name
    assert comparable(response.status, response.body) == await http_answer(
        service, exchange, body)


async def test_process_bid_carries_the_no_bid_reason_and_its_code(channel):
    stub = services.BiddingServiceStub(channel)

    too_late = await stub.ProcessBid(bid_request("no-time"))
    invalid = await stub.ProcessBid(bid_request("invalid"))
    bid = await stub.ProcessBid(bid_request("banner-2.6"))

    assert (too_late.status, json.loads(too_late.body)) == (200, {"id": "req-banner-26",
                                                                   "nbr": 15})
    assert (too_late.nbr, too_late.reason) == (15, "insufficient_time")
    assert (invalid.status, invalid.body, invalid.nbr, invalid.reason) == (
        400, b"", 2, "invalid_request")
    assert (bid.status, bid.HasField("nbr"), bid.reason) == (200, False, "")


async def test_stream_bids_answers_every_request_on_one_stream_matched_by_id(service, channel):
    names = ["banner-2.6", "invalid", "video", "native", "no-time", "banner-2.5"]

    async def requests():
        for name in names:
            yield bid_request(name)

    answers = {response.request_id: comparable(response.status, response.body)
               async for response in services.BiddingServiceStub(channel).StreamBids(requests())}

    assert sorted(answers) == sorted(names)
    for name in names:
        assert answers[name] == await http_answer(service, *CASES[name]), name


async def test_health_check_reports_snapshot_model_and_serving(service, channel):
    response = await services.BiddingServiceStub(channel).HealthCheck(
        messages.HealthCheckRequest())

    assert response.status == messages.HealthCheckResponse.SERVING
    assert (response.snapshot_version, response.model_version, response.campaigns,
            response.node_id) == (1, "1", 3, service.config.node_id)


async def test_standard_health_is_serving_only_once_the_bidder_is_ready(tmp_path):
    service = await start_bidder(tmp_path, InProcessBus(), grpc_port=0, install=False)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc.port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        bidding = services.BiddingServiceStub(channel)

        before = await health.Check(health_pb2.HealthCheckRequest(service=""))
        own_before = await bidding.HealthCheck(messages.HealthCheckRequest())
        service.install(snapshot(*broad_campaigns()))
        overall = await health.Check(health_pb2.HealthCheckRequest(service=""))
        named = await health.Check(health_pb2.HealthCheckRequest(
            service="campaign.bidding.v1.BiddingService"))
    await service.stop()

    assert before.status == health_pb2.HealthCheckResponse.NOT_SERVING
    assert (own_before.status, own_before.HasField("snapshot_version")) == (
        messages.HealthCheckResponse.NOT_SERVING, False)
    assert overall.status == named.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_bidding_and_health_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)

    async def ask():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    (response,) = [response async for response in stub.ServerReflectionInfo(ask())]

    assert {service.name for service in response.list_services_response.service} == {
        "campaign.bidding.v1.BiddingService", "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection"}


async def test_an_exchange_with_a_token_refuses_grpc_calls_without_it(channel):
    stub = services.BiddingServiceStub(channel)
    _, body = CASES["banner-2.6"]

    def secured(**fields):
        return messages.BidRequest(openrtb=body, exchange="secured", **fields)

    missing = await stub.ProcessBid(secured())
    wrong = await stub.ProcessBid(secured(), metadata=(("authorization", "Bearer nope"),))
    in_metadata = await stub.ProcessBid(secured(),
                                        metadata=(("authorization", f"Bearer {TOKEN}"),))
    in_message = await stub.ProcessBid(secured(token=TOKEN))

    assert (missing.status, missing.body, missing.HasField("nbr")) == (401, b"", False)
    assert (wrong.status, in_metadata.status, in_message.status) == (401, 200, 200)


async def test_grpc_applies_ip_lists_to_the_peer_and_knows_unknown_exchanges(channel):
    stub = services.BiddingServiceStub(channel)
    _, body = CASES["banner-2.6"]

    private = await stub.ProcessBid(messages.BidRequest(openrtb=body, exchange="private"))
    unknown = await stub.ProcessBid(messages.BidRequest(openrtb=body, exchange="nobody"))

    assert (private.status, unknown.status) == (403, 404)


async def test_grpc_admits_a_peer_inside_an_exchanges_ip_list(service, channel):
    local = ExchangeEntry(slug="local", name="Local", seat="ce-seat", auth="ip",
                          allowed_networks=("127.0.0.0/8",))
    service.install(snapshot(*broad_campaigns(), version=2, exchanges=(*EXCHANGES, local)))
    _, body = CASES["banner-2.6"]

    response = await services.BiddingServiceStub(channel).ProcessBid(
        messages.BidRequest(openrtb=body, exchange="local"))

    assert response.status == 200


async def test_behind_a_trusted_proxy_grpc_checks_the_forwarded_address(tmp_path):
    """The private exchange admits 10.0.0.0/8; the call comes from 127.0.0.1, a trusted proxy
    (HAProxy) forwarding for an exchange address."""
    service = BidderService(config=config(tmp_path, api_host="127.0.0.1",
                                          trusted_proxies=("127.0.0.0/8",)),
                            bus=InProcessBus(), store=MemoryStore(), grpc_port=0)
    await service.start()
    service.install(snapshot(*broad_campaigns()))
    _, body = CASES["banner-2.6"]
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{service.grpc.port}") as channel:
            stub = services.BiddingServiceStub(channel)
            statuses = [(await stub.ProcessBid(
                messages.BidRequest(openrtb=body, exchange="private"),
                metadata=metadata)).status for metadata in (
                    (("x-forwarded-for", "10.9.8.7"),),
                    (("x-forwarded-for", "10.9.8.7, 203.0.113.5"),),
                    ())]
    finally:
        await service.stop()

    assert statuses == [200, 403, 403]


@pytest.mark.parametrize(("peer", "address"), [
    ("ipv4:10.1.2.3:50000", "10.1.2.3"),
    ("ipv6:%5B::1%5D:50000", "::1"),
    ("ipv6:[2001:db8::7]:443", "2001:db8::7"),
    ("unix:/run/bidder.sock", ""),
])
def test_the_peer_address_is_read_from_grpc_peer_strings(peer, address):
    assert peer_address(peer) == address


# --- NATS --------------------------------------------------------------------------------


def test_bid_agents_use_the_contract_subject_and_queue_group():
    assert (SUBJECT, QUEUE) == ("campaign-bids.bid-requests", "bid-agents")


async def bus_answer(bus: Bus, exchange: str, body: bytes,
                     headers: dict[str, str] | None = None) -> tuple[int, object]:
    reply = await bus.request_message(SUBJECT, body, timeout=5,
                                      headers={"exchange": exchange, **(headers or {})})
    return comparable(int(reply.headers["status"]), reply.data)


@pytest.mark.parametrize("name", list(CASES))
async def test_a_bid_request_on_the_in_process_bus_is_answered_as_over_http(service, name):
    exchange, body = CASES[name]

    assert await bus_answer(service.bus, exchange, body) == await http_answer(
        service, exchange, body)


async def test_the_bus_applies_the_exchange_token_from_the_authorization_header(service):
    _, body = CASES["banner-2.6"]

    missing = await bus_answer(service.bus, "secured", body)
    right = await bus_answer(service.bus, "secured", body, {"authorization": f"Bearer {TOKEN}"})

    assert (missing, right[0]) == ((401, None), 200)


class Counting:
    """Counts the requests an agent pool hands its handler."""

    def __init__(self, handler: BidHandler) -> None:
        self.handler = handler
        self.count = 0

    async def handle(self, body, *, exchange, received_at=None):
        self.count += 1
        return await self.handler.handle(body, exchange=exchange, received_at=received_at)


def numbered_request(number: int) -> bytes:
    return json.dumps({**fixture("banner-site-2.6.json"), "id": f"req-{number}"}).encode()


async def test_two_bidders_on_the_in_process_bus_share_requests_answering_each_once(tmp_path):
    bus = InProcessBus()
    first = await start_bidder(tmp_path / "a", bus)
    second = await start_bidder(tmp_path / "b", bus)
    counters = [Counting(first.handler), Counting(second.handler)]
    first.agents.handler, second.agents.handler = counters

    answers = [await bus.request_message(SUBJECT, numbered_request(number), timeout=5)
               for number in range(40)]
    await first.stop()
    await second.stop()

    assert [json.loads(answer.data)["id"] for answer in answers] == [
        f"req-{number}" for number in range(40)]
    assert {answer.headers["status"] for answer in answers} == {"200"}
    assert sum(counter.count for counter in counters) == 40
    assert all(counter.count > 0 for counter in counters)


# Another run's snapshot may sit in the real server's `config` bucket: ours must be newer.
LATEST_VERSION = 9_000_000_000_000


@pytest.mark.nats
async def test_a_bid_request_over_nats_is_answered_as_over_http(tmp_path, nats_url):
    service = await start_bidder(tmp_path, NatsBus(nats_url), version=LATEST_VERSION)
    try:
        for name, (exchange, body) in CASES.items():
            assert await bus_answer(service.bus, exchange, body) == await http_answer(
                service, exchange, body), name
    finally:
        await service.stop()
        await service.bus.close()


@pytest.mark.nats
async def test_two_bidders_in_the_nats_queue_group_answer_each_request_exactly_once(
        tmp_path, nats_url):
    bidders = [await start_bidder(tmp_path / name, NatsBus(nats_url), version=LATEST_VERSION)
               for name in ("a", "b")]
    counters = [Counting(bidder.handler) for bidder in bidders]
    for bidder, counter in zip(bidders, counters, strict=True):
        bidder.agents.handler = counter
    requester = await nats.connect(nats_url)
    inbox = f"_INBOX.{uuid.uuid4().hex}"
    replies = []
    everything_answered = asyncio.Event()

    async def collect(message):
        replies.append(message)
        if len(replies) == 40:
            everything_answered.set()

    await requester.subscribe(inbox, cb=collect)
    try:
        for number in range(40):
            await requester.publish(SUBJECT, numbered_request(number), reply=inbox,
                                    headers={"exchange": "open"})
        await asyncio.wait_for(everything_answered.wait(), 10)
        await requester.flush()
        await asyncio.sleep(0.2)  # room for a duplicate answer to arrive, if any were sent
    finally:
        for bidder in bidders:
            await bidder.stop()
            await bidder.bus.close()
        await requester.close()

    assert sorted(json.loads(reply.data)["id"] for reply in replies) == sorted(
        f"req-{number}" for number in range(40))
    assert {reply.headers["status"] for reply in replies} == {"200"}
    assert sum(counter.count for counter in counters) == 40
    assert all(counter.count > 0 for counter in counters)


# --- agent pool --------------------------------------------------------------------------


class Slow:
    """A handler that takes `seconds` per request, to fill an agent pool's queue."""

    def __init__(self, handler: BidHandler, seconds: float) -> None:
        self.handler = handler
        self.seconds = seconds
        self.started = asyncio.Event()

    async def handle(self, body, *, exchange, received_at=None):
        self.started.set()
        await asyncio.sleep(self.seconds)
        return await self.handler.handle(body, exchange=exchange, received_at=received_at)


def sample(name: str) -> float:
    return REGISTRY.get_sample_value(name) or 0.0


async def test_a_full_agent_queue_sheds_at_once_with_a_no_bid_and_counts_it(service):
    slow = Slow(service.handler, seconds=0.5)
    pool = AgentPool(slow, agents=1, queue_size=2)
    await pool.start()
    body = CASES["banner-2.6"][1]
    open_exchange, reasons = service.handler.exchange(""), service.handler.exchange("reasons")
    shed_before = sample("bids_shed_total")

    working = asyncio.create_task(pool.submit(body, exchange=open_exchange))
    await slow.started.wait()
    queued = [asyncio.create_task(pool.submit(body, exchange=open_exchange)) for _ in range(2)]
    await asyncio.sleep(0)
    depth_when_full = sample("bids_agent_queue_depth")
    shed = [await pool.submit(body, exchange=open_exchange),
            await pool.submit(body, exchange=reasons)]
    slow_ones_done_when_shed = [task.done() for task in (working, *queued)]
    slow_answers = await asyncio.gather(working, *queued)
    await pool.stop()

    assert depth_when_full == 2
    assert slow_ones_done_when_shed == [False, False, False]
    assert (shed[0].status, shed[0].body, shed[0].reason) == (204, b"", NoBid.OVERLOADED)
    assert (shed[1].status, json.loads(shed[1].body), shed[1].reason) == (
        200, {"id": "req-banner-26", "nbr": 1}, NoBid.OVERLOADED)
    # Bid on by the handler, only after the exchange's tmax had passed in the queue.
    assert [(answer.status, answer.reason) for answer in slow_answers] == [
        (204, NoBid.INSUFFICIENT_TIME)] * 3
    assert sample("bids_shed_total") - shed_before == 2
    assert sample("bids_agent_queue_depth") == 0


async def test_a_stopped_pool_answers_what_it_holds_and_then_turns_requests_away(service):
    slow = Slow(service.handler, seconds=5)
    pool = AgentPool(slow, agents=1, queue_size=4, drain_seconds=0.05)
    await pool.start()
    body = CASES["banner-2.6"][1]
    exchange = service.handler.exchange("reasons")

    waiting = [asyncio.create_task(pool.submit(body, exchange=exchange)) for _ in range(3)]
    await slow.started.wait()
    await pool.stop()
    answers = await asyncio.gather(*waiting)
    after = await pool.submit(body, exchange=exchange)

    assert {(answer.status, answer.body, answer.reason) for answer in [*answers, after]} == {
        (200, b'{"id":"req-banner-26","nbr":1}', NoBid.TECHNICAL_ERROR)}
    assert sample("bids_agent_queue_depth") == 0


class AtOnce:
    """A handler that records how many requests it works on at once."""

    def __init__(self, handler: BidHandler, seconds: float) -> None:
        self.handler = handler
        self.seconds = seconds
        self.now = self.most = 0

    async def handle(self, body, *, exchange, received_at=None):
        self.now += 1
        self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.seconds)
            return await self.handler.handle(body, exchange=exchange)
        finally:
            self.now -= 1


async def test_no_more_than_the_agents_bid_at_once_and_a_caller_gone_from_the_queue_frees_nothing(
        service):
    at_once = AtOnce(service.handler, seconds=0.05)
    pool = AgentPool(at_once, agents=2, queue_size=10)
    await pool.start()
    body = CASES["banner-2.6"][1]
    exchange = service.handler.exchange("")

    tasks = [asyncio.create_task(pool.submit(body, exchange=exchange)) for _ in range(7)]
    await asyncio.sleep(0)
    tasks[3].cancel()  # waiting in the queue: leaves it without taking a slot
    answers = await asyncio.gather(*tasks, return_exceptions=True)
    later = await pool.submit(body, exchange=exchange)
    await pool.stop()

    assert at_once.most == 2
    assert isinstance(answers[3], asyncio.CancelledError)
    assert [answer.status for number, answer in enumerate(answers) if number != 3] == [200] * 6
    assert later.status == 200 and pool.depth == 0
