"""Win, billing and loss notices to partners, with their macros substituted.

A partner's winning bid goes to the exchange with our own signed notice URLs
(`/v1/notice/dsp-{win,billing,loss}`, served by the bidder); what the partner gave us (`nurl`,
`burl`, `lurl`, its price and our margin) is kept in the store under the bid id until the
notice arrives. Then the partner's URL is called with `${AUCTION_PRICE}` as the partner pays
it: the exchange's clearing price grossed up by our margin, never above what the partner bid.
A partner that lost our own auction gets its `lurl` at once, with the loss reason code.

Each notice is forwarded once per (auction, imp, bid), however often the exchange sends it.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import httpx
import msgspec

from bidding.notices import notice_price
from bidding.signing import signed_query, verify
from campaign_express.backends.store import Store, StoreUnavailable
from dsp import metrics
from dsp.limits import PartnerLimits

logger = logging.getLogger(__name__)

NOTICE_FIELDS = ("auction", "imp", "bid", "partner", "cur")
KINDS = {"win": "nurl", "billing": "burl", "loss": "lurl"}
RECORD_TTL_SECONDS = 86_400
FORWARD_TIMEOUT_SECONDS = 2.0


class WonBid(msgspec.Struct, frozen=True, kw_only=True):
    """What a notice needs to reach the partner whose bid we sent to the exchange."""

    partner_id: int
    seat: str
    auction: str
    imp: str
    partner_bid_id: str
    partner_bidid: str  # the partner's response `bidid`
    ad_id: str = ""
    price: Decimal  # what the partner bid, in `currency`
    margin: Decimal
    currency: str
    nurl: str = ""
    burl: str = ""
    lurl: str = ""


def substitute(url: str, *, auction: str, imp: str, response_bid_id: str,
               seat: str, ad_id: str, price: str, currency: str, loss: str = "",
               min_to_win: str = "") -> str:
    """The OpenRTB substitution macros of a partner's notice URL (§4.4)."""
    values = {"AUCTION_ID": auction, "AUCTION_BID_ID": response_bid_id,
              "AUCTION_IMP_ID": imp, "AUCTION_SEAT_ID": seat, "AUCTION_AD_ID": ad_id,
              "AUCTION_PRICE": price, "AUCTION_CURRENCY": currency, "AUCTION_LOSS": loss,
              "AUCTION_MIN_TO_WIN": min_to_win, "AUCTION_MBR": ""}
    for name, value in values.items():
        url = url.replace("${" + name + "}", value)
    return url


def partner_price(clearing: Decimal, won: WonBid) -> Decimal:
    """What the partner pays for a clearing price of ours: grossed up by the margin, capped
    at its own bid (our margin never costs it more than it offered)."""
    gross = clearing / (1 - won.margin) if won.margin else clearing
    return min(gross, won.price).quantize(Decimal("0.0001"))


def record_key(bid_id: str) -> str:
    return f"dsp:won:{bid_id}"


class Forwarder:
    def __init__(self, *, store: Store, limits: PartnerLimits, secret: bytes,
                 client: httpx.AsyncClient) -> None:
        self.store = store
        self.limits = limits
        self.secret = secret
        self.client = client
        self._tasks: set[asyncio.Task[None]] = set()

    def notice_query(self, kind: str, *, auction: str, imp: str, bid_id: str, partner_id: int,
                     currency: str) -> str:
        fields = {"auction": auction, "imp": imp, "bid": bid_id, "partner": str(partner_id),
                  "cur": currency}
        macros = {"price": "${AUCTION_PRICE}"}
        if kind == "loss":
            macros["loss"] = "${AUCTION_LOSS}"
        return signed_query(self.secret, f"dsp-{kind}", fields, macros)

    async def remember(self, bid_id: str, won: WonBid) -> None:
        await self.store.set(record_key(bid_id), msgspec.json.encode(won),
                             ttl_seconds=RECORD_TTL_SECONDS)

    def send(self, url: str, *, seat: str, kind: str) -> None:
        """Call a partner's notice URL in the background: the exchange's notice, or our bid
        answer, does not wait on the partner."""
        task = asyncio.create_task(self._get(url, seat=seat, kind=kind))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def drain(self) -> None:
        """Wait for the notices under way (shutdown and tests)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _get(self, url: str, *, seat: str, kind: str) -> None:
        try:
            answer = await self.client.get(url, timeout=FORWARD_TIMEOUT_SECONDS)
            result = "ok" if answer.status_code < 400 else "error"
        except httpx.HTTPError:
            result = "error"
        metrics.FORWARDED.labels(seat, kind, result).inc()

    async def handle(self, kind: str, query: dict[str, str]) -> int:
        """Our notice for a partner's bid: 204 forwarded or repeated, 403 forged, 404 unknown
        kind or bid, 503 store down."""
        if kind not in KINDS:
            return 404
        if not verify(self.secret, f"dsp-{kind}", query, NOTICE_FIELDS):
            return 403
        try:
            once = await self.store.incr_within(
                f"dsp:notice:{kind}:{query['auction']}:{query['imp']}:{query['bid']}", 1,
                limit=1, ttl_seconds=RECORD_TTL_SECONDS)
            if once is None:
                return 204
            data = await self.store.get(record_key(query["bid"]))
        except StoreUnavailable:
            return 503
        if data is None:
            return 404
        won = msgspec.json.decode(data, type=WonBid)
        clearing = notice_price(query.get("price", ""))
        price = partner_price(clearing, won) if clearing is not None else None
        url = getattr(won, KINDS[kind])
        if kind == "billing" and price is not None:
            try:
                await self.limits.add_spend(partner_id=won.partner_id,
                                            micros=int(price * 1000))  # CPM / 1000, in micros
            except StoreUnavailable:
                logger.warning("store unavailable: spend of partner %s not counted", won.seat)
        if kind == "win":
            metrics.WINS.labels(won.seat).inc()
        if url:
            self.send(substitute(url, auction=won.auction, imp=won.imp,
                                 response_bid_id=won.partner_bidid,
                                 seat=won.seat, ad_id=won.ad_id,
                                 price=str(price) if price is not None else "",
                                 currency=won.currency, loss=query.get("loss", "")),
                      seat=won.seat, kind=kind)
        return 204
