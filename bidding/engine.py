"""The bid engine: from a normalized request to a response, against the served snapshot.

For each impression and each format it offers, the index gives the candidate (campaign,
creative) pairs; `bidding.eligibility` refuses those the rest of the targeting or the
request's blocklists exclude; the survivors are scored together in one batched model call;
each is priced (`bidding.pricing`) against its floor in the response currency, and the best
per impression bids, with markup built from its creative and signed notice URLs.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import gc
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import NamedTuple, cast

from bidding import markup, metrics
from bidding.budget import RESERVE_DAILY, RESERVE_OK, Ledger, to_micros, user_key
from bidding.eligibility import refusal
from bidding.index import CampaignIndex, Candidate
from bidding.nbr import NoBid
from bidding.openrtb import Bid, BidResponse, DealView, ImpView, RequestView, SeatBid
from bidding.openrtb.view import native_request_assets
from bidding.pricing import (
    UnknownCurrency,
    agreed_price,
    bid_cpm,
    clear_floor,
    convert,
    response_currency,
    round_down,
)
from bidding.profiles import Profile, ProfileCache
from bidding.signing import Signer
from bidding.snapshot import CampaignEntry, ExchangeEntry, Snapshot
from campaign_express.backends.store import StoreUnavailable
from inference.batcher import Matrix
from inference.features import (
    ContextFeatures,
    EncodedOffers,
    OfferFeatures,
    UserFeatures,
    build_matrix_picked,
    encode_offers,
)
from inference.runtime import ModelRuntime

MTYPE = {"banner": 1, "video": 2, "audio": 3, "native": 4}
NOTICE_FIELDS = ("auction", "imp", "bid", "campaign", "creative", "exchange", "cur", "hold",
                 "user", "test")
# Also signed, when a URL carries them (those minted before they were added do not): the
# campaign's currency and time zone, so that a notice for a campaign the served snapshot no
# longer holds (paused, ended) still counts its spend in the right currency and day.
CAMPAIGN_NOTICE_FIELDS = ("ccur", "tz")


NO_BOOST = Decimal(1)  # the price multiplier without a loyalty tier (built once, not per offer)

@dataclass(frozen=True)
class EngineSettings:
    public_url: str  # where exchanges and browsers reach our notice and click endpoints
    secret: bytes  # signs notice, click and tracking URLs
    network_allowance_ms: int = 20  # tmax spent on the wire both ways, by our estimate
    min_processing_ms: int = 3  # below this much time left we no-bid with nbr 15
    store_retry_seconds: float = 1.0  # after a store failure, fail closed this long
    # Candidates scored per impression: the index gives the highest maximum CPM first, so
    # those left out could pay less than these; scoring each costs CPU at every request.
    max_offers_per_imp: int = 16


@dataclass
class Outcome:
    response: BidResponse | None = None
    reason: NoBid | None = None
    refusals: Counter[str] = field(default_factory=Counter)
    model_version: str = ""
    scored: int = 0  # candidate offers the model scored
    # The bids' holds, for `BidEngine.give_back`: bid id -> campaign, and the user and minute
    # they were taken for.
    holds: dict[str, CampaignEntry] = field(default_factory=dict)
    user: str = ""
    minute: int = 0


class _Offer(NamedTuple):  # a tuple: made for every candidate that passes eligibility
    imp: ImpView
    media: str
    size: tuple[int, int] | None
    deal: DealView | None
    candidate: Candidate


class BidEngine:
    def __init__(self, *, runtime: ModelRuntime, settings: EngineSettings, ledger: Ledger,
                 profiles: ProfileCache) -> None:
        self.runtime = runtime
        self.settings = settings
        self.ledger = ledger
        self.profiles = profiles
        # The served index and its pairs' model inputs (which never change while it serves),
        # replaced together.
        self._served: tuple[CampaignIndex, EncodedOffers] | None = None
        self._store_down_until = 0.0
        self._giving_back: set[asyncio.Task[None]] = set()

    @property
    def index(self) -> CampaignIndex | None:
        return self._served[0] if self._served is not None else None

    def install(self, snapshot: Snapshot) -> bool:
        """Serve ``snapshot`` if it is newer than the one served; the swap is one assignment,
        so a request sees the old index or the new one, never a mix."""
        if self._served is not None and snapshot.version <= self._served[0].version:
            return False
        index = CampaignIndex.build(snapshot)
        self._served = index, encode_offers([_offer_features(pair) for pair in index.pairs])
        # The snapshot's objects (hundreds of thousands for 10,000 campaigns) live until the
        # next one: out of the collector's sight, a full collection no longer walks them all
        # (160 ms on the loop at 10,000 campaigns, BENCHMARKS.md). Those of a replaced
        # snapshot are still freed, by reference counting (they hold no cycles); young
        # cyclic garbage is collected first so that it is not kept for good.
        gc.collect(1)
        gc.freeze()
        return True

    async def bid(self, request: RequestView, *, exchange: ExchangeEntry, received_at: float,
                  now: float | None = None) -> Outcome:
        served = self._served
        if served is None or not self.runtime.is_ready:
            return Outcome(reason=NoBid.TECHNICAL_ERROR)
        index, encoded = served
        if request.tmax_ms is not None:
            spent_ms = (time.perf_counter() - received_at) * 1000
            left_ms = request.tmax_ms - self.settings.network_allowance_ms - spent_ms
            if left_ms < self.settings.min_processing_ms:
                return Outcome(reason=NoBid.INSUFFICIENT_TIME)
        if exchange.seat in request.blocked_seats or (
                request.allowed_seats and exchange.seat not in request.allowed_seats):
            return Outcome(reason=NoBid.NO_ELIGIBLE_CAMPAIGN)
        rates = index.snapshot.usd_rates
        currency = response_currency(request.currencies, preferred=exchange.currency,
                                     usd_rates=rates)
        if currency is None:
            return Outcome(reason=NoBid.UNSUPPORTED_CURRENCY)
        outcome = Outcome()
        now = now or time.time()
        profile = None
        if request.has_user_consent and request.user_id:
            profile = await self.profiles.get(request.user_id)
        offers = self._offers(index, request, exchange, now, outcome, profile)
        user = user_key(request.user_id) if request.has_user_consent else ""
        if not user:
            offers = _without_capped_campaigns(offers, outcome)
        if not offers:
            outcome.reason = NoBid.NO_ELIGIBLE_CAMPAIGN
            if outcome.refusals["cap_without_user"]:
                outcome.reason = NoBid.NO_CONSENT if request.user_id else NoBid.UNMATCHED_USER
            return outcome
        scores = await self.runtime.score(self._features(request, offers, encoded, profile, now),
                                          routing_key=request.request_id)
        outcome.model_version = scores.version
        outcome.scored = len(offers)
        ranked: dict[str, list[tuple[Decimal, float, _Offer]]] = {}
        for offer, (ctr, _) in zip(offers, scores.values.tolist(), strict=True):
            price = self._price(offer, ctr, currency, rates,
                                boost=_loyalty_boost(offer.candidate.campaign, profile))
            if price is None:
                outcome.refusals["below_floor"] += 1
                continue
            ranked.setdefault(offer.imp.imp_id, []).append((price, ctr, offer))
        if not ranked:
            outcome.reason = NoBid.BELOW_FLOOR
            return outcome
        bids = []
        outcome.user, outcome.minute = user, int(now // 60)
        try:
            for choices in ranked.values():
                choices.sort(key=lambda choice: (choice[0], choice[1]), reverse=True)
                reached: set[int] = set()  # campaigns at this user's cap
                chosen = await self._choose(request, choices, currency=currency, rates=rates,
                                            now=now, outcome=outcome, reached=reached)
                if chosen is None:
                    continue
                bids.append(self._bid(request, exchange, *chosen, currency, user=user, now=now))
                offer = chosen[0]
                if offer.deal is None and any(choice[2].deal for choice in choices):
                    # An open bid would shadow the deal bids ranked after it: the exchange
                    # gets the best of those too, and picks (implementation notes 7.3).
                    position = next(number for number, choice in enumerate(choices)
                                    if choice[2] is offer)
                    after = choices[position + 1:]
                    deal = await self._choose(
                        request, [choice for choice in after if choice[2].deal is not None],
                        currency=currency, rates=rates, now=now, outcome=outcome,
                        reached=reached)
                    if deal is not None:
                        bids.append(self._bid(request, exchange, *deal, currency, user=user,
                                              now=now))
        except StoreUnavailable:
            self._give_back_later(outcome)
            return self._store_failed(outcome)
        if not bids:
            budget = outcome.refusals["daily_budget"] + outcome.refusals["total_budget"]
            capped = outcome.refusals["frequency_cap"]
            outcome.reason = NoBid.DAILY_USER_CAP if capped and not budget else (
                NoBid.BUDGET_EXHAUSTED)
            return outcome
        outcome.response = BidResponse(id=request.request_id, bidid=_unique_id(),
                                       cur=currency,
                                       seatbid=[SeatBid(seat=exchange.seat, bid=bids)])
        return outcome

    def _give_back_later(self, outcome: Outcome) -> None:
        """After a store error, the holds the request took are given back once the answer is
        on its way (the error may have passed; if not, they lapse)."""
        if outcome.holds:
            task = asyncio.ensure_future(self.give_back(outcome, list(outcome.holds)))
            self._giving_back.add(task)
            task.add_done_callback(self._giving_back.discard)

    async def give_back(self, outcome: Outcome, bid_ids: list[str]) -> None:
        """Gives back the budget and cap holds of bids of ``outcome`` that are not sent after
        all (a DSP partner's bid won their impression): no notice will ever come for them.
        Best effort: a hold the store cannot give back lapses."""
        for bid_id in bid_ids:
            campaign = outcome.holds.pop(bid_id, None)
            if campaign is None:
                continue
            try:
                await self.ledger.release(campaign_id=campaign.id, hold_id=bid_id,
                                          minute=outcome.minute)
                if _has_caps(campaign):
                    await self.ledger.release_cap(user=outcome.user, campaign_id=campaign.id,
                                                  hold_id=bid_id, minute=outcome.minute)
            except StoreUnavailable:
                return

    async def _choose(self, request: RequestView,
                      choices: list[tuple[Decimal, float, _Offer]], *, currency: str,
                      rates: dict[str, Decimal], now: float, outcome: Outcome,
                      reached: set[int]) -> tuple[_Offer, Decimal, str] | None:
        """The best of an impression's choices that may bid, its price and bid id: its cost
        held on its budget and, for a campaign with frequency caps, one impression of the
        user's caps held (`Ledger.hold_cap`), the two in one round trip to Redis. What one
        hold took when the other refused is given back. A test auction (`test=1`) is never
        billed: it holds nothing, and only reads the caps. ``reached`` gathers the campaigns
        found at the user's cap, not tried again. The holds are for `outcome.user` in
        `outcome.minute`."""
        user, minute = outcome.user, outcome.minute
        for price, _, offer in choices:
            campaign = offer.candidate.campaign
            if campaign.id in reached:
                continue
            bid_id = _unique_id()
            if not _has_caps(campaign):
                if await self._hold(request, offer, price, currency, rates, bid_id, now,
                                    outcome):
                    if not request.is_test:
                        outcome.holds[bid_id] = campaign
                    return offer, price, bid_id
                continue
            self._check_store(now)
            if request.is_test:
                cap_held = not await self.ledger.capped(user=user, campaigns=(campaign,),
                                                        now=now)
                held = True
            else:
                results = await asyncio.gather(
                    self.ledger.hold_cap(user=user, campaign=campaign, hold_id=bid_id, now=now),
                    self._hold(request, offer, price, currency, rates, bid_id, now, outcome),
                    return_exceptions=True)
                for result in results:
                    if isinstance(result, BaseException):
                        outcome.holds[bid_id] = campaign  # what the other took goes back too
                        raise result
                cap_held, held = cast(tuple[bool, bool], results)
            if not cap_held:
                metrics.FREQUENCY_CAPPED.inc()
                outcome.refusals["frequency_cap"] += 1
                reached.add(campaign.id)
                if held and not request.is_test:
                    await self.ledger.release(campaign_id=campaign.id, hold_id=bid_id,
                                              minute=minute)
                continue
            if held:
                if not request.is_test:
                    outcome.holds[bid_id] = campaign
                return offer, price, bid_id
            await self.ledger.release_cap(user=user, campaign_id=campaign.id, hold_id=bid_id,
                                          minute=minute)
        return None

    async def _hold(self, request: RequestView, offer: _Offer, price: Decimal, currency: str,
                    rates: dict[str, Decimal], bid_id: str, now: float,
                    outcome: Outcome) -> bool:
        """Holds the bid's cost (one impression at ``price`` CPM) on its campaign's budget;
        a test auction holds nothing."""
        if request.is_test:
            return True
        campaign = offer.candidate.campaign
        try:
            cost = convert(price / 1000, source=currency, target=campaign.currency,
                           usd_rates=rates)
        except UnknownCurrency:
            return False
        self._check_store(now)
        result = await self.ledger.reserve(campaign, amount=max(1, to_micros(cost)),
                                           hold_id=bid_id, now=now)
        if result != RESERVE_OK:
            outcome.refusals["daily_budget" if result == RESERVE_DAILY else "total_budget"] += 1
            return False
        return True

    def _check_store(self, now: float) -> None:
        """After the store failed, do not wait on it again for a while: fail closed at once."""
        if now < self._store_down_until:
            raise StoreUnavailable("store marked down after a recent failure")

    def _store_failed(self, outcome: Outcome) -> Outcome:
        self._store_down_until = time.time() + self.settings.store_retry_seconds
        outcome.reason = NoBid.STORE_UNAVAILABLE
        outcome.response = None
        return outcome

    def _offers(self, index: CampaignIndex, request: RequestView, exchange: ExchangeEntry,
                now: float, outcome: Outcome, profile: Profile | None) -> list[_Offer]:
        offers: list[_Offer] = []
        limit = self.settings.max_offers_per_imp
        refused = outcome.refusals
        for imp in request.imps:
            deals = tuple(deal for deal in imp.deals  # those our seat may bid on
                          if not deal.allowed_seats or exchange.seat in deal.allowed_seats)
            deal_ids = tuple(deal.deal_id for deal in deals)
            open_allowed = not (imp.is_private_auction and imp.deals)
            taken = 0
            for media in imp.media_types:
                sizes: tuple[tuple[int, int] | None, ...] = (None,)
                if media == "banner" and imp.banner is not None and imp.banner.sizes:
                    sizes = imp.banner.sizes
                timed = imp.timed(media)
                for size in sizes:
                    for candidate in index.candidates(
                            format=media, size=size, country=request.country,
                            device_type=request.device_type, deal_ids=deal_ids,
                            categories=request.content_categories, open_allowed=open_allowed,
                            os=request.os, mimes=timed.mimes if timed else (),
                            protocols=timed.protocols if timed else ()):
                        reason = refusal(candidate.campaign, candidate.creative,
                                         request=request, imp=imp, media=media, now=now,
                                         profile=profile)
                        deal = next((deal for deal in deals
                                     if deal.deal_id in candidate.campaign.deal_ids),
                                    None) if deals else None
                        if reason is None and deal is not None and (
                                deal.allowed_advertiser_domains
                                and candidate.creative.adomain
                                not in deal.allowed_advertiser_domains):
                            reason = "deal_adomain"
                        if reason is not None:
                            refused[reason] += 1
                            continue
                        offers.append(_Offer(imp, media, size, deal, candidate))
                        taken += 1
                        if taken >= limit:
                            break
                    if taken >= limit:
                        break
                if taken >= limit:
                    break
        return offers

    def _features(self, request: RequestView, offers: list[_Offer], encoded: EncodedOffers,
                  profile: Profile | None, now: float) -> Matrix:
        """One row per offer. The hour of week is UTC: requests rarely carry the user's
        offset reliably. Without consent the user part is empty (no profile was read)."""
        user = UserFeatures()
        if request.has_user_consent:
            user = UserFeatures(segments=request.segments)
        if profile is not None:
            statuses = sorted(profile.loyalty.values(), key=lambda status: status.balance)
            best = statuses[-1] if statuses else None
            user = UserFeatures(
                interests=frozenset(profile.interests),
                segments=request.segments | frozenset(profile.segments),
                loyalty_tier=best.tier if best is not None else "none",
                loyalty_balance=float(best.balance) if best is not None else 0.0,
                recency_hours=(now - profile.last_seen) / 3600 if profile.last_seen else None)
        moment = datetime.now(UTC)
        first_imp = request.imps[0]
        context = ContextFeatures(
            device_type=request.device_type, os=request.os,
            hour_of_week=moment.weekday() * 24 + moment.hour,
            site_category=request.content_categories[0] if request.content_categories else "",
            is_app=request.medium == "app", is_interstitial=first_imp.is_interstitial,
            ad_position=(first_imp.banner.position or 0) if first_imp.banner else 0)
        return build_matrix_picked(user=user, context=context, encoded=encoded,
                                   picks=[offer.candidate.position for offer in offers])

    def _price(self, offer: _Offer, ctr: float, currency: str,
               rates: dict[str, Decimal], *, boost: Decimal = NO_BOOST) -> Decimal | None:
        campaign = offer.candidate.campaign
        price = bid_cpm(base_cpm=campaign.base_bid_cpm, max_cpm=campaign.max_bid_cpm, ctr=ctr,
                        boost=boost)
        max_cpm = campaign.max_bid_cpm
        floor, floor_currency = _floor(offer)
        try:  # most amounts are in the response currency already: no call to convert them
            if campaign.currency != currency:
                price = round_down(convert(price, source=campaign.currency, target=currency,
                                           usd_rates=rates))
                max_cpm = convert(max_cpm, source=campaign.currency, target=currency,
                                  usd_rates=rates)
            if floor_currency != currency:
                floor = convert(floor, source=floor_currency, target=currency, usd_rates=rates)
        except UnknownCurrency:
            return None
        if offer.deal is not None and offer.deal.auction_type == 3:
            # at=3: the deal's floor is the agreed price, neither more nor less.
            return agreed_price(floor, max_cpm)
        return clear_floor(price, floor, max_cpm)

    def _bid(self, request: RequestView, exchange: ExchangeEntry, offer: _Offer,
             price: Decimal, bid_id: str, currency: str, *, user: str, now: float) -> Bid:
        campaign, creative = offer.candidate.campaign, offer.candidate.creative
        fields = {"auction": request.request_id, "imp": offer.imp.imp_id, "bid": bid_id,
                  "campaign": str(campaign.id), "creative": str(creative.id),
                  "exchange": exchange.slug, "cur": currency, "hold": str(int(now // 60)),
                  "user": user, "test": "1" if request.is_test else "",
                  "ccur": campaign.currency, "tz": campaign.time_zone}
        secret, base = self.settings.secret, self.settings.public_url.rstrip("/")

        signer = Signer(secret, fields)

        def url(kind: str, macros: dict[str, str] | None = None) -> str:
            return f"{base}/v1/notice/{kind}?" + signer.query(kind, macros)

        price_macro = {"price": "${AUCTION_PRICE}"}
        click_url = f"{base}/v1/click?" + signer.query("click")
        impression_url = url("impression", price_macro)
        width, height = offer.size or (creative.sizes[0] if creative.sizes else (0, 0))
        if offer.media == "banner":
            adm = markup.banner_html(creative, width=width, height=height,
                                     click_url=click_url, impression_url=impression_url)
        elif offer.media == "native" and offer.imp.native is not None:
            adm = markup.native_response(
                creative, request_assets=native_request_assets(offer.imp.native),
                click_url=click_url, impression_url=impression_url,
                version=offer.imp.native.version)
        else:
            video = offer.imp.video if offer.media == "video" else None
            if not width and video is not None:  # a creative without sizes fills the player
                width, height = video.w or 0, video.h or 0
            adm = markup.vast(creative, ad_id=bid_id, click_url=click_url,
                              impression_url=impression_url, tracking_url=url("tracking"),
                              width=width, height=height)
        timed = offer.media in ("video", "audio")
        return Bid(
            id=bid_id, impid=offer.imp.imp_id, price=price, adm=adm,
            nurl=url("win", price_macro), burl=url("billing", price_macro),
            lurl=url("loss", {"loss": "${AUCTION_LOSS}", "price": "${AUCTION_PRICE}"}),
            adomain=[creative.adomain] if creative.adomain else None,
            bundle=creative.app_bundle or None,
            cid=str(campaign.id), crid=str(creative.id),
            cat=list(creative.categories) or None, attr=list(creative.attributes) or None,
            w=width or None, h=height or None, mtype=MTYPE[offer.media],
            dealid=offer.deal.deal_id if offer.deal is not None else None,
            dur=creative.duration_seconds if timed else None)


def _unique_id() -> str:
    """32 hex digits from the process's PRNG (reseeded after fork), for bid ids: unique, not
    secret (the notice URLs carrying them are signed); `secrets` reads os.urandom, a system
    call per id."""
    return f"{random.getrandbits(128):032x}"


def _offer_features(pair: Candidate) -> OfferFeatures:
    return OfferFeatures(
        format=pair.creative.format,
        category=(pair.creative.categories or pair.campaign.categories or ("",))[0],
        bid_cpm=float(pair.campaign.base_bid_cpm),
        segments=frozenset(pair.campaign.segments))


def _loyalty_boost(campaign: CampaignEntry, profile: Profile | None) -> Decimal:
    """The member's tier boost in the campaign's loyalty program; 1 without one (no profile
    read without consent, no program, not a member)."""
    if profile is None or campaign.loyalty_program_id is None:
        return NO_BOOST
    status = profile.loyalty.get(str(campaign.loyalty_program_id))
    return Decimal(status.bid_boost) if status is not None else NO_BOOST


def _without_capped_campaigns(offers: list[_Offer], outcome: Outcome) -> list[_Offer]:
    """Without a user we may count (no id, or no consent), campaigns with frequency caps
    cannot know whether the cap is reached, and do not bid."""
    capped = {offer.candidate.campaign.id for offer in offers
              if _has_caps(offer.candidate.campaign)}
    if not capped:
        return offers
    outcome.refusals["cap_without_user"] += len(capped)
    return [offer for offer in offers if offer.candidate.campaign.id not in capped]


def _has_caps(campaign: CampaignEntry) -> bool:
    return (campaign.frequency_cap_hour is not None or campaign.frequency_cap_day is not None
            or campaign.frequency_cap_lifetime is not None)


def _floor(offer: _Offer) -> tuple[Decimal, str]:
    """The floor that applies, in its currency: the deal's first; then for video and audio
    the floor of the duration range (2.6 `durfloors`) holding the creative's duration and
    the price per second times that duration (the higher, when both apply); then the
    impression's (OpenRTB implementation notes 7.11.2)."""
    if offer.deal is not None:
        return offer.deal.floor, offer.deal.floor_currency
    imp = offer.imp
    timed = imp.timed(offer.media)
    duration = offer.candidate.creative.duration_seconds
    if timed is not None and duration:
        floor = next((floor for shortest, longest, floor in timed.duration_floors
                      if (shortest is None or shortest <= duration)
                      and (longest is None or duration <= longest)),
                     None) if timed.duration_floors else None
        if timed.min_cpm_per_second is not None:
            per_second = timed.min_cpm_per_second * duration
            floor = per_second if floor is None else max(floor, per_second)
        if floor is not None:
            return floor, imp.floor_currency
    return imp.floor, imp.floor_currency
