"""The bidder's analytics events: what each decision and each counted notice emits, exactly,
and a bid's events arriving in `analytics_events` through the stream and the sink."""

from __future__ import annotations

import asyncio
import html
import json
import re
import uuid
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

import msgspec
import pytest

from analytics.clickhouse import AnalyticsBackend, ChdbBackend, ClickHouseBackend
from analytics.events import Event
from analytics.migrate import migrations_apply
from analytics.pipeline import EventBuffer
from analytics.sink import Sink
from bidding.agents import AgentPool
from bidding.budget import to_micros, user_key
from bidding.events import BidEvents, wire_micros
from bidding.handler import Answer
from bidding.openrtb.response import wire_price
from bidding.service import BidderService
from campaign_express.backends.bus import InProcessBus
from campaign_express.backends.store import MemoryStore
from inference.modelfile import default_model_manifest
from tests.bidding.bidder_fixtures import campaign, client, config, creative, fixture, snapshot

NODE = "bidder-7"
BASE = "http://127.0.0.1:8080"
MODEL_VERSION = str(default_model_manifest()["version"])


async def bidder(tmp_path, **config_overrides) -> BidderService:
    """A bidder on one banner campaign of advertiser 7. The publisher waits a minute between
    batches, so the events of a test stay in the buffer for the test to read."""
    settings = config(tmp_path, node_id=NODE, analytics_publish_interval_ms=60_000,
                      **config_overrides)
    service = BidderService(config=settings, bus=InProcessBus(), store=MemoryStore())
    await service.start()
    service.install(snapshot(campaign(1, creative(11, "banner"), advertiser_id=7,
                                      pacing="accelerated")))
    return service


@pytest.fixture
async def service(tmp_path):
    service = await bidder(tmp_path)
    yield service
    await service.stop()


def emitted(service: BidderService) -> list[dict[str, object]]:
    """The events emitted since the last call, without their random id and clock time."""
    return [plain(event) for event in service.events.buffer.drain(10_000)]


def plain(event: Event) -> dict[str, object]:
    values = msgspec.structs.asdict(event)
    del values["event_id"], values["timestamp"]
    values["event_type"] = str(values["event_type"])
    return values


def expected(event_type: str, **fields: object) -> dict[str, object]:
    return plain(Event(event_type=event_type, node=NODE, **fields))  # type: ignore[arg-type]


def without_latency(events: list[dict[str, object]]) -> list[dict[str, object]]:
    """The bid_request's latency is measured: positive and under a second here."""
    assert all(0 < event["latency_us"] < 1_000_000 for event in events  # type: ignore[operator]
               if event["event_type"] == "bid_request")
    return [{**event, "latency_us": 0} for event in events]


async def bid(service: BidderService, request: dict | None = None) -> dict:
    async with client(service) as http:
        response = await http.post("/v1/bid", json=request or fixture("banner-site-2.6.json"))
    assert response.status_code == 200
    return response.json()["seatbid"][0]["bid"][0]


async def get(service: BidderService, url: str, **macros: str):
    for name, value in macros.items():
        url = url.replace("${" + name + "}", value)
    async with client(service) as http:
        return await http.get(url.removeprefix(BASE))


def signed(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))


def pixel(adm: str, kind: str) -> str:
    return html.unescape(re.search(rf'"({re.escape(BASE)}/v1/{kind}[^"]*)"', adm)[1])


def bid_ids(offer: dict) -> dict[str, object]:
    """The ids every notice event of `offer` carries."""
    return {"request_id": "req-banner-26", "impression_id": "1", "offer_id": offer["id"],
            "campaign_id": "1", "creative_id": "11", "advertiser_id": "7", "exchange": "open",
            "user_id": user_key("ce-user-123")}


async def test_a_bid_emits_its_request_and_its_bid_with_ids_price_and_consent(service):
    offer = await bid(service)

    assert without_latency(emitted(service)) == [
        expected("bid_request", request_id="req-banner-26", exchange="open",
                 user_id="ce-user-123",
                 attributes={"consent": "1", "scored": "2", "model_version": MODEL_VERSION}),
        expected("bid", request_id="req-banner-26", impression_id="1", offer_id=offer["id"],
                 campaign_id="1", creative_id="11", advertiser_id="7", user_id="ce-user-123",
                 exchange="open", price_micros=to_micros(Decimal(str(offer["price"]))),
                 currency="USD", attributes={"media": "banner"}),
    ]


@pytest.mark.parametrize("price", ["0", "0.00009", "0.5", "1.23456789", "10", "123.45675",
                                   "20.00019999"])
def test_a_bids_price_micros_are_those_of_the_price_on_the_wire(price):
    assert wire_micros(Decimal(price)) == to_micros(wire_price(Decimal(price)))


async def test_a_no_bid_emits_its_reason_and_the_refusals_behind_it(service):
    request = fixture("banner-site-2.6.json")
    request["imp"][0]["bidfloor"] = 50
    async with client(service) as http:
        response = await http.post("/v1/bid/reasons", json=request)

    assert response.json() == {"id": "req-banner-26", "nbr": 0}
    assert without_latency(emitted(service)) == [
        expected("bid_request", request_id="req-banner-26", exchange="reasons",
                 user_id="ce-user-123", reason="below_floor",
                 attributes={"consent": "1", "scored": "2", "model_version": MODEL_VERSION,
                             "refused.below_floor": "2"}),
        expected("no_bid", request_id="req-banner-26", exchange="reasons",
                 reason="below_floor"),
    ]


async def test_without_consent_no_user_id_is_emitted_and_the_request_says_so(service):
    offer = await bid(service, {**fixture("banner-site-2.6.json"), "regs": {"coppa": 1},
                                "test": 1})

    events = without_latency(emitted(service))

    assert [event["event_type"] for event in events] == ["bid_request", "bid"]
    assert [event["user_id"] for event in events] == ["", ""]
    assert events[0]["attributes"] == {"consent": "0", "scored": "2",
                                       "model_version": MODEL_VERSION, "test": "1"}
    assert events[1]["attributes"] == {"media": "banner", "test": "1"}
    assert events[1]["offer_id"] == offer["id"]
    assert "user=&" in offer["burl"]


async def test_an_unreadable_request_emits_one_no_bid_without_a_request_id(service):
    async with client(service) as http:
        response = await http.post("/v1/bid", content=b'{"id": "x", "imp": "not a list"')

    assert response.status_code == 400
    assert emitted(service) == [expected("no_bid", exchange="open", reason="invalid_request")]


class Stuck:
    """A handler that holds every request until released, to fill an agent pool."""

    def __init__(self) -> None:
        self.started, self.release = asyncio.Event(), asyncio.Event()

    async def handle(self, body, *, exchange, received_at=None) -> Answer:
        self.started.set()
        await self.release.wait()
        return Answer(204)


async def test_shed_and_turned_away_requests_emit_a_no_bid_each(service):
    events = BidEvents(buffer=EventBuffer(capacity=10), node=NODE)
    stuck = Stuck()
    pool = AgentPool(stuck, agents=1, queue_size=1, on_turned_away=events.no_bid)
    await pool.start()
    body = json.dumps(fixture("banner-site-2.6.json")).encode()
    exchange = service.handler.exchange("")

    working = asyncio.create_task(pool.submit(body, exchange=exchange))
    await stuck.started.wait()
    queued = asyncio.create_task(pool.submit(body, exchange=exchange))
    await asyncio.sleep(0)
    shed = await pool.submit(body, exchange=exchange)
    stuck.release.set()
    await asyncio.gather(working, queued)
    await pool.stop()
    after_stop = await pool.submit(b"not json", exchange=exchange)

    assert (shed.status, after_stop.status) == (204, 204)
    assert [plain(event) for event in events.buffer.drain(10)] == [
        expected("no_bid", request_id="req-banner-26", exchange="open", reason="overloaded"),
        expected("no_bid", exchange="open", reason="technical_error"),
    ]


async def test_a_billing_notice_emits_the_spend_it_counted_once(service):
    offer = await bid(service)
    emitted(service)

    counted = await get(service, offer["burl"], AUCTION_PRICE="1.5")
    repeat = await get(service, offer["burl"], AUCTION_PRICE="1.5")

    assert (counted.status_code, repeat.status_code) == (204, 204)
    assert await service.engine.ledger.spent(1) == 1500
    assert emitted(service) == [expected("billing", price_micros=1500, currency="USD",
                                         **bid_ids(offer))]


async def test_forged_unpriced_and_test_billing_notices_emit_nothing(service):
    offer = await bid(service)
    test_offer = await bid(service, {**fixture("banner-site-2.6.json"), "test": 1})
    emitted(service)

    forged = await get(service, offer["burl"].replace("campaign=1", "campaign=2"),
                       AUCTION_PRICE="1.5")
    audit = await get(service, offer["burl"], AUCTION_PRICE="AUDIT")
    test = await get(service, test_offer["burl"], AUCTION_PRICE="1.5")

    assert (forged.status_code, audit.status_code, test.status_code) == (403, 204, 204)
    assert await service.engine.ledger.spent(1) == 0
    assert emitted(service) == []


async def test_win_impression_loss_click_and_conversion_notices_emit_their_events(service):
    offer = await bid(service)
    lost = await bid(service)
    emitted(service)

    win = await get(service, offer["nurl"], AUCTION_PRICE="1.25")
    impression = await get(service, pixel(offer["adm"], "notice/impression"),
                           AUCTION_PRICE="1.25")
    loss = await get(service, lost["lurl"], AUCTION_LOSS="102", AUCTION_PRICE="")
    click = await get(service, pixel(offer["adm"], "click"))
    token = signed(click.headers["location"])["ce_click"]
    conversion = await get(service, f"/v1/conversion?click={token}&value=19.90")
    repeated = [await get(service, offer["nurl"], AUCTION_PRICE="1.25"),
                await get(service, pixel(offer["adm"], "click")),
                await get(service, f"/v1/conversion?click={token}&value=19.90")]

    assert [answer.status_code for answer in (win, impression, loss, click, conversion)] == [
        204, 204, 204, 302, 204]
    assert [answer.status_code for answer in repeated] == [204, 302, 204]
    assert emitted(service) == [
        expected("win", price_micros=1_250_000, currency="USD", **bid_ids(offer)),
        expected("impression", **bid_ids(offer)),
        expected("loss", reason="102", **bid_ids(lost)),
        expected("click", **bid_ids(offer)),
        expected("conversion", offer_id=offer["id"], campaign_id="1", creative_id="11",
                 advertiser_id="7", price_micros=19_900_000, currency="USD"),
    ]


async def test_each_vast_tracking_event_is_emitted_once_per_bid(tmp_path):
    service = await bidder(tmp_path)
    service.install(snapshot(campaign(1, creative(11, "video"), advertiser_id=7,
                                      pacing="accelerated"), version=2))
    offer = await bid(service, fixture("video-app.json"))
    emitted(service)

    def tracking(event: str) -> str:
        return html.unescape(re.search(
            rf'<Tracking event="{event}"><!\[CDATA\[([^\]]*)\]\]>', offer["adm"])[1])

    answers = [await get(service, tracking("start")), await get(service, tracking("start")),
               await get(service, tracking("complete")),
               await get(service, tracking("start").replace("event=start", "event=mute2")),
               await get(service, tracking("start").replace("campaign=1", "campaign=2"))]
    events = emitted(service)
    await service.stop()

    assert [answer.status_code for answer in answers] == [204, 204, 204, 404, 403]
    ids = {"request_id": "req-video-app", "impression_id": "v1", "offer_id": offer["id"],
           "campaign_id": "1", "creative_id": "11", "advertiser_id": "7", "exchange": "open",
           "user_id": user_key(fixture("video-app.json")["device"]["ifa"])}
    assert events == [
        expected("vast_tracking", attributes={"event": "start"}, **ids),
        expected("vast_tracking", attributes={"event": "complete"}, **ids),
    ]


@pytest.fixture(params=["chdb", pytest.param("clickhouse", marks=pytest.mark.clickhouse)])
def backend(request: pytest.FixtureRequest, tmp_path):
    database = f"test_{uuid.uuid4().hex}"
    if request.param == "chdb":
        backend: AnalyticsBackend = ChdbBackend(tmp_path / "chdb", database=database)
    else:
        url = urlsplit(request.getfixturevalue("clickhouse_url"))._replace(path=f"/{database}")
        backend = ClickHouseBackend(url.geturl())
    migrations_apply(backend=backend, retention_days=90)
    yield backend
    if isinstance(backend, ClickHouseBackend):
        backend.execute(f"DROP DATABASE IF EXISTS {database}")
    backend.close()


async def test_a_bids_events_reach_analytics_events_through_the_stream_and_the_sink(
        tmp_path, backend):
    service = await bidder(tmp_path)
    offer = await bid(service)
    await get(service, offer["burl"], AUCTION_PRICE="2")
    await service.stop()  # publishes what the buffer holds
    sink = Sink(bus=service.bus, backend=backend, interval=0.2)

    inserted = await sink.flush_once()

    assert inserted == 3
    rows = backend.query(
        "SELECT event_type, node, request_id, offer_id, campaign_id, advertiser_id, user_id, "
        "price_micros, currency, attribute_keys, attribute_values FROM analytics_events FINAL "
        "ORDER BY event_type")
    price = to_micros(Decimal(str(offer["price"])))
    assert [tuple(row) for row in rows] == [
        ("bid", NODE, "req-banner-26", offer["id"], "1", "7", "ce-user-123", price, "USD",
         ["media"], ["banner"]),
        ("bid_request", NODE, "req-banner-26", "", "", "", "ce-user-123", 0, "",
         ["consent", "model_version", "scored"], ["1", MODEL_VERSION, "2"]),
        ("billing", NODE, "req-banner-26", offer["id"], "1", "7", user_key("ce-user-123"),
         2000, "USD", [], []),
    ]
