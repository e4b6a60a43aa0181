"""Win, billing and loss notices, impressions, VAST tracking and clicks.

Every URL we hand out is signed (`bidding.signing`): a forged or altered one is refused and
counts nothing. Each notice counts once per (auction, imp, bid) — a repeat is answered and
ignored. The billing notice is where money moves: the bid's hold becomes spend at the clearing
price (`${AUCTION_PRICE}`, CPM in the bid's currency), and the impression counts toward the
user's frequency caps. Those are two scripts in two Redis slots (the campaign's, the user's),
and a store error may come between them or after a script ran unheard: each script marks the
bid as counted in its own slot, so the exchange's retry counts what is missing and nothing
twice. An empty price or `AUDIT` (a test render) counts no spend; so does an
encrypted price (`bidding.pricecrypt`) that fails its integrity check. Such a notice does not
use the bid's billing up: the one with the real price that follows still counts, once. A
price or conversion value too large to count (its micros past an Int64) is answered 400 and
counts nothing.
The spend counts in the campaign's currency and on its day in its time zone, taken from the
served snapshot or, for a campaign it no longer holds, from the URL's signed `ccur` and `tz`.
The loss notice releases the hold and records the loss reason code (in the metric, an OpenRTB
code below 1000, `exchange` for the exchange-specific ones, `invalid` for anything else: the
macro is not signed, so its value must not become a label of its own). A click redirects to the
landing page with a `ce_click` token; the advertiser's conversion postback
(`/v1/conversion?click=TOKEN&value=...`) counts one conversion per click.

Each notice that counts becomes an analytics event (`bidding.events`); a duplicate, a forged
one, a test auction's or a billing that counted no spend does not, so reports built from the
events count what the budget counted.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from urllib.parse import parse_qsl

from prometheus_client import Counter

from bidding.budget import COUNTED_TTL, MAX_MICROS, MICROS, Ledger, to_micros
from bidding.engine import CAMPAIGN_NOTICE_FIELDS, NOTICE_FIELDS
from bidding.events import BidEvents
from bidding.index import CampaignIndex
from bidding.markup import VAST_EVENTS
from bidding.pricecrypt import PriceDecryptionError, decrypt_price
from bidding.pricing import UnknownCurrency, convert
from bidding.signing import signed_query, verify
from campaign_express.backends.store import Script, ScriptContext, Store, StoreUnavailable

logger = logging.getLogger(__name__)

KINDS = ("win", "billing", "loss", "impression", "tracking", "click")
CONVERSION_FIELDS = ("campaign", "creative", "bid")
ONCE_TTL_SECONDS = COUNTED_TTL

NOTICES = Counter("bids_notices_total", "Notices received, by kind and what became of them "
                  "(counted, duplicate, forged, no_price, out_of_range, test, unavailable).",
                  ["kind", "outcome"])
LOSSES = Counter("bids_losses_total", "Loss notices by OpenRTB loss reason code.", ["code"])


@dataclass(frozen=True)
class NoticeAnswer:
    status: int  # 204 counted or ignored, 302 click redirect, 400 amount out of range,
    # 403 forged, 404, 503
    location: str = ""


# KEYS: the campaign's conversion count and value, the click's counted marker. ARGV: the
# value in micros, the marker's ttl. Counts the conversion once per click (bid). Returns 1
# counted, 0 counted before.
_COUNT_CONVERSION_LUA = """
if not redis.call('SET', KEYS[3], 1, 'NX', 'EX', tonumber(ARGV[2])) then return 0 end
redis.call('INCRBY', KEYS[1], 1)
redis.call('INCRBY', KEYS[2], ARGV[1])
return 1
"""


def _count_conversion(ctx: ScriptContext, keys: Sequence[str], args: Sequence[int]) -> int:
    if ctx.get(keys[2]):
        return 0
    ctx.set(keys[2], 1, args[1])
    ctx.incrby(keys[0], 1)
    ctx.incrby(keys[1], args[0])
    return 1


COUNT_CONVERSION = Script("conversion-count", _COUNT_CONVERSION_LUA, _count_conversion)


class AmountOutOfRange(ValueError):
    """A price or conversion value too large to count (`MAX_MICROS`): answered 400, and
    nothing counts."""


@dataclass(frozen=True)
class _Counted:
    outcome: str  # the NOTICES label: counted, no_price, test
    price_micros: int = 0  # for the event: the clearing CPM of a win, the spend of a billing
    currency: str = ""


class NoticeHandler:
    """`events`: where counted notices become analytics events (None: nowhere)."""

    def __init__(self, *, store: Store, ledger: Ledger, secret: bytes,
                 events: BidEvents | None = None) -> None:
        self.store = store
        self.ledger = ledger
        self.secret = secret
        self.events = events

    async def handle(self, kind: str, query: dict[str, str], *, index: CampaignIndex | None,
                     now: float | None = None) -> NoticeAnswer:
        if kind not in KINDS:
            return NoticeAnswer(404)
        signed = NOTICE_FIELDS + tuple(field for field in CAMPAIGN_NOTICE_FIELDS
                                       if field in query)
        if not verify(self.secret, kind, query, signed):
            NOTICES.labels(kind, "forged").inc()
            return NoticeAnswer(403)
        campaign = index.campaign(int(query["campaign"])) if index is not None else None
        location = ""
        if kind == "click":
            creative = next((creative for creative in (campaign.creatives if campaign else ())
                             if str(creative.id) == query["creative"]), None)
            if creative is None or not creative.click_url:
                return NoticeAnswer(404)
            location = _with_click_token(creative.click_url, self.secret, query)
        once = f"notice:{kind}:{query['auction']}:{query['imp']}:{query['bid']}"
        if kind == "tracking":
            if query.get("event") not in VAST_EVENTS:  # not signed: only the events we wrote
                return NoticeAnswer(404)
            once += ":" + query["event"]
        try:
            price = _clearing_price(query, index) if kind in ("win", "billing") else None
        except AmountOutOfRange:
            return _out_of_range(kind, query["bid"], query.get("price", ""))
        try:
            if await self.store.incr_within(once, 1, limit=1, ttl_seconds=ONCE_TTL_SECONDS) is None:
                NOTICES.labels(kind, "duplicate").inc()
                return NoticeAnswer(302 if location else 204, location)
            try:
                counted = await self._count(kind, query, index, price, now or time.time())
            except StoreUnavailable:
                # Let a retry count it. What this attempt did count (perhaps without hearing
                # the reply) is marked in its own slot, so the retry finishes only the rest.
                await self.store.delete(once)
                raise
            except AmountOutOfRange:
                await self.store.delete(once)  # nothing counted: a sound notice still may
                return _out_of_range(kind, query["bid"], query.get("price", ""))
            if counted.outcome == "no_price":
                await self.store.delete(once)  # let the notice with the real price count
        except StoreUnavailable:
            NOTICES.labels(kind, "unavailable").inc()
            logger.warning("store unavailable: %s notice for bid %s not counted", kind,
                           query["bid"])
            return NoticeAnswer(302 if location else 503, location)
        NOTICES.labels(kind, counted.outcome).inc()
        if self.events is not None and counted.outcome == "counted":
            self.events.notice(kind, query, index=index, price_micros=counted.price_micros,
                               currency=counted.currency)
        return NoticeAnswer(302 if location else 204, location)

    async def conversion(self, query: dict[str, str], *,
                         index: CampaignIndex | None = None) -> NoticeAnswer:
        """The advertiser's postback: `click` is the token the click added to the landing
        URL (`ce_click`); one conversion counts per click, with an optional `value`."""
        try:
            token = base64.urlsafe_b64decode(query.get("click", "") + "==").decode()
        except (ValueError, UnicodeDecodeError):
            token = ""
        fields = dict(parse_qsl(token, keep_blank_values=True))
        if not verify(self.secret, "conversion", fields, CONVERSION_FIELDS):
            NOTICES.labels("conversion", "forged").inc()
            return NoticeAnswer(403)
        try:
            value = notice_amount(query.get("value", "")) or Decimal(0)
        except AmountOutOfRange:
            return _out_of_range("conversion", fields["bid"], query.get("value", ""))
        tag = f"conversions:{{c{fields['campaign']}}}"
        once = f"notice:conversion:{fields['bid']}"
        try:
            if await self.store.incr_within(once, 1, limit=1,
                                            ttl_seconds=ONCE_TTL_SECONDS) is None:
                NOTICES.labels("conversion", "duplicate").inc()
                return NoticeAnswer(204)
            try:
                await self.store.run(COUNT_CONVERSION, [
                    f"{tag}:count", f"{tag}:value", f"{tag}:counted:{fields['bid']}"],
                    [to_micros(value), ONCE_TTL_SECONDS])
            except StoreUnavailable:
                # Let a retry count it: the script marks what it counted in its own slot,
                # so a retry after it ran unheard counts nothing twice.
                await self.store.delete(once)
                raise
        except StoreUnavailable:
            NOTICES.labels("conversion", "unavailable").inc()
            return NoticeAnswer(503)
        NOTICES.labels("conversion", "counted").inc()
        if self.events is not None:
            self.events.conversion(fields, index=index, value_micros=to_micros(value))
        return NoticeAnswer(204)

    async def _count(self, kind: str, query: dict[str, str], index: CampaignIndex | None,
                     price: Decimal | None, now: float) -> _Counted:
        campaign_id, hold = int(query["campaign"]), int(query["hold"])
        if kind == "loss":
            await self.ledger.release(campaign_id=campaign_id, hold_id=query["bid"],
                                      minute=hold)
            if query.get("user"):
                await self.ledger.release_cap(user=query["user"], campaign_id=campaign_id,
                                              hold_id=query["bid"], minute=hold)
            LOSSES.labels(_loss_label(query.get("loss", ""))).inc()
            return _Counted("counted")
        if kind == "win":
            if price is None:
                return _Counted("counted")
            return _Counted("counted", to_micros(price), query["cur"])
        if kind != "billing":
            return _Counted("counted")
        if query.get("test") == "1":
            return _Counted("test")  # a test auction's billing moves no money, counts no cap
        if price is None:
            # Release the hold all the same: the auction is over.
            await self.ledger.release(campaign_id=campaign_id, hold_id=query["bid"],
                                      minute=hold)
            return _Counted("no_price")
        campaign = index.campaign(campaign_id) if index is not None else None
        if campaign is not None:
            currency, time_zone = campaign.currency, campaign.time_zone
        else:  # no longer served (paused, ended): what the URL signed, if it is that recent
            currency, time_zone = query.get("ccur") or query["cur"], query.get("tz") or "UTC"
        rates = index.snapshot.usd_rates if index is not None else {}
        try:
            spend = convert(price / 1000, source=query["cur"], target=currency, usd_rates=rates)
        except UnknownCurrency:
            logger.error("no rate from %s to %s: bid %s billed %s not counted", query["cur"],
                         currency, query["bid"], price)
            return _Counted("no_price")
        spend_micros = to_micros(spend)
        if spend_micros > MAX_MICROS:  # a price within range, at a rate that takes it out
            raise AmountOutOfRange(str(spend))
        await self.ledger.commit(campaign_id=campaign_id, time_zone=time_zone,
                                 hold_id=query["bid"], minute=hold, spend=spend_micros,
                                 now=now)
        if query.get("user"):
            await self.ledger.count_impression(user=query["user"], campaign_id=campaign_id,
                                               bid_id=query["bid"], minute=hold, now=now)
        return _Counted("counted", spend_micros, currency)


def _clearing_price(query: dict[str, str], index: CampaignIndex | None) -> Decimal | None:
    """The notice's `price` (CPM in the bid's currency), decrypted for exchanges that encrypt
    it; None when it is absent, `AUDIT`, malformed or fails its integrity check. Raises
    `AmountOutOfRange` for a price too large to count."""
    exchange = index.exchange(query["exchange"]) if index is not None else None
    raw_price = query.get("price", "")
    is_token = raw_price not in ("", "AUDIT") and not raw_price.startswith("${")
    if exchange is not None and exchange.price_decryption and is_token:
        try:
            price = decrypt_price(exchange.price_decryption, raw_price,
                                  key_ref=exchange.price_key_ref)
        except PriceDecryptionError as error:
            logger.error("exchange %s: price of bid %s not counted: %s", exchange.slug,
                         query["bid"], error)
            return None
        if to_micros(price) > MAX_MICROS:
            raise AmountOutOfRange(str(price))
        return price
    return notice_amount(raw_price)


def _out_of_range(kind: str, bid: str, raw: str) -> NoticeAnswer:
    NOTICES.labels(kind, "out_of_range").inc()
    logger.warning("%s notice for bid %s: amount %.40s out of range, not counted", kind, bid,
                   raw)
    return NoticeAnswer(400)


def _loss_label(code: str) -> str:
    """The loss metric's label for a `${AUCTION_LOSS}` value: a bounded set of values."""
    if not code or code.startswith("${"):
        return "unknown"
    if not (code.isascii() and code.isdigit()):
        return "invalid"
    return str(int(code)) if len(code.lstrip("0")) <= 3 else "exchange"


def _with_click_token(landing: str, secret: bytes, query: dict[str, str]) -> str:
    """The landing URL with `ce_click`: what the advertiser's conversion postback sends back."""
    fields = {field: query[field] for field in CONVERSION_FIELDS}
    token = base64.urlsafe_b64encode(
        signed_query(secret, "conversion", fields).encode()).decode().rstrip("=")
    return f"{landing}{'&' if '?' in landing else '?'}ce_click={token}"


# The largest power of ten (`Decimal.adjusted`) an amount within MAX_MICROS may have.
_MAX_ADJUSTED = len(str(MAX_MICROS // MICROS)) - 1


def notice_amount(raw: str) -> Decimal | None:
    """A price (CPM) or conversion value from a macro or the advertiser's postback; None for
    an empty, `AUDIT`, unsubstituted, negative or malformed one. Raises `AmountOutOfRange`
    when its micros pass MAX_MICROS. The size is judged by the exponent before any arithmetic:
    `1e999999999` overflows a multiplication, `int()` of `1e200000` takes seconds."""
    if not raw or raw == "AUDIT" or raw.startswith("${"):
        return None
    try:
        amount = Decimal(raw)
    except InvalidOperation:
        return None
    if not amount.is_finite() or amount < 0:
        return None
    if amount.adjusted() > _MAX_ADJUSTED or to_micros(amount) > MAX_MICROS:
        raise AmountOutOfRange(raw)
    return amount


def notice_price(raw: str) -> Decimal | None:
    """The clearing CPM, or None for an empty, `AUDIT`, unsubstituted, malformed or out of
    range price (`notice_amount`)."""
    try:
        return notice_amount(raw)
    except AmountOutOfRange:
        return None
