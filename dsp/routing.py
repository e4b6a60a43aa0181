"""Fan-out: one bid request to the partner DSPs that want it, in parallel, within our time.

Only partners whose filters match (format, country, device) and whose seat the request
allows are considered; each must then pass `PartnerLimits.admit` (shared QPS limit, daily
spend cap, breaker). Requests go out over one pooled keep-alive `httpx.AsyncClient`; the
whole fan-out ends at the deadline the caller gives (the request's `tmax` minus our own
processing and a safety margin): a partner that has not answered by then is cut off,
counted as a timeout and recorded against its breaker, and the answer goes out in time.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import msgspec

from bidding.openrtb import InvalidResponse, RequestView, decode_response
from bidding.pricing import UnknownCurrency, convert
from campaign_express.backends.store import StoreUnavailable
from dsp import metrics
from dsp.convert import gross_price, partner_request
from dsp.limits import ADMIT_REASONS, ADMITTED, PartnerLimits
from dsp.partners import PartnerEntry, partner_secret
from dsp.validation import PartnerBid, valid_bids

logger = logging.getLogger(__name__)

MIN_PARTNER_MS = 5  # below this much time left a partner is not called at all


@dataclass
class PartnerCall:
    """What became of one partner for one request (the source of its analytics events)."""

    partner: PartnerEntry
    outcome: str  # sent states: bid, no_bid, timeout, error; skipped: its ADMIT reason
    latency_ms: int = 0
    bids: list[PartnerBid] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)


@dataclass
class Routing:
    calls: list[PartnerCall] = field(default_factory=list)

    @property
    def bids(self) -> list[PartnerBid]:
        return [bid for call in self.calls for bid in call.bids]


def wanted_imps(partner: PartnerEntry, request: RequestView) -> set[str]:
    """The impressions ``partner``'s filters take from ``request`` (empty: do not call it)."""
    if request.blocked_seats and partner.seat in request.blocked_seats:
        return set()
    if request.allowed_seats and partner.seat not in request.allowed_seats:
        return set()
    if partner.countries and request.country not in partner.countries:
        return set()
    if partner.device_types and request.device_type not in partner.device_types:
        return set()
    return {imp.imp_id for imp in request.imps
            if not partner.formats or set(imp.media_types) & set(partner.formats)}


class Router:
    def __init__(self, *, limits: PartnerLimits, max_connections: int = 200) -> None:
        self.limits = limits
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections,
                                max_keepalive_connections=max_connections,
                                keepalive_expiry=30.0))

    async def close(self) -> None:
        await self.client.aclose()

    async def route(self, raw: dict[str, Any], request: RequestView, *,
                    partners: tuple[PartnerEntry, ...], budget_ms: float,
                    usd_rates: dict[str, Decimal]) -> Routing:
        """Ask every matching partner within ``budget_ms``; the valid bids and each partner's
        outcome. Never raises: a partner's failure is its own outcome."""
        deadline = time.perf_counter() + budget_ms / 1000
        routing = Routing()
        tasks: dict[asyncio.Task[None], PartnerCall] = {}
        for partner in partners:
            imps = wanted_imps(partner, request)
            if not imps:
                continue
            call = PartnerCall(partner, outcome="pending")
            routing.calls.append(call)
            task = asyncio.create_task(self._call(call, raw, request, imps, deadline, usd_rates))
            tasks[task] = call
        if not tasks:
            return routing
        _, pending = await asyncio.wait(tasks, timeout=max(0.0, deadline - time.perf_counter()))
        for task in pending:
            task.cancel()
            call = tasks[task]
            call.outcome = "timeout"
            call.latency_ms = int(budget_ms)
            metrics.TIMEOUTS.labels(call.partner.seat).inc()
        if pending:
            await asyncio.wait(pending)
            await asyncio.gather(*(self._record(call.partner, is_ok=False)
                                   for task, call in tasks.items() if task in pending))
        return routing

    async def _record(self, partner: PartnerEntry, *, is_ok: bool) -> None:
        try:
            await self.limits.record(partner_id=partner.id, is_ok=is_ok)
        except StoreUnavailable:
            logger.warning("store unavailable: outcome of partner %s not recorded", partner.seat)

    async def _call(self, call: PartnerCall, raw: dict[str, Any], request: RequestView,
                    imps: set[str], deadline: float, usd_rates: dict[str, Decimal]) -> None:
        partner = call.partner
        left_ms = (deadline - time.perf_counter()) * 1000
        timeout_ms = min(float(partner.timeout_ms), left_ms)
        if timeout_ms < MIN_PARTNER_MS:
            call.outcome = "no_time"
            metrics.SKIPPED.labels(partner.seat, "no_time").inc()
            return
        try:
            admitted = await self.limits.admit(
                partner_id=partner.id, qps_limit=partner.qps_limit,
                cap_micros=int(partner.daily_spend_cap * 1_000_000))
        except StoreUnavailable:
            admitted = -1
        if admitted != ADMITTED:
            call.outcome = ADMIT_REASONS.get(admitted, "store_unavailable")
            metrics.SKIPPED.labels(partner.seat, call.outcome).inc()
            return
        floors = self._floors(request, partner, imps, usd_rates)
        body = partner_request(raw, partner=partner, imp_ids=set(floors),
                               tmax_ms=int(timeout_ms), has_user_consent=request.has_user_consent)
        headers = {"content-type": "application/json",
                   "x-openrtb-version": partner.openrtb_version}
        secret = partner_secret(partner)
        if secret:
            headers["authorization"] = f"Bearer {secret}"
        metrics.REQUESTS.labels(partner.seat).inc()
        started = time.perf_counter()
        try:
            answer = await self.client.post(partner.endpoint_url, content=msgspec.json.encode(body),
                                            headers=headers, timeout=timeout_ms / 1000)
        except httpx.TimeoutException:
            call.outcome, call.latency_ms = "timeout", int(timeout_ms)
            metrics.TIMEOUTS.labels(partner.seat).inc()
            await self._record(partner, is_ok=False)
            return
        except httpx.HTTPError as error:
            call.outcome = "error"
            metrics.ERRORS.labels(partner.seat).inc()
            logger.info("partner %s: %s", partner.seat, type(error).__name__)
            await self._record(partner, is_ok=False)
            return
        call.latency_ms = int((time.perf_counter() - started) * 1000)
        metrics.LATENCY.labels(partner.seat).observe(call.latency_ms)
        if answer.status_code == 204:
            call.outcome = "no_bid"
        elif answer.status_code != 200:
            call.outcome = "error"
        else:
            try:
                response = decode_response(answer.content)
            except InvalidResponse:
                call.outcome = "error"
            else:
                if response.id and response.id != request.request_id:
                    call.outcome = "error"
                else:
                    call.bids, call.dropped = valid_bids(response, partner=partner,
                                                         request=request, floors=floors)
                    call.outcome = "bid" if call.bids else "no_bid"
        if call.outcome == "error":
            metrics.ERRORS.labels(partner.seat).inc()
        for reason in call.dropped:
            metrics.DROPPED.labels(partner.seat, reason).inc()
        metrics.BIDS.labels(partner.seat).inc(len(call.bids))
        await self._record(partner, is_ok=call.outcome != "error")
        with contextlib.suppress(StoreUnavailable):  # the status page's latency only
            await self.limits.store.set(f"dsp:{{p{partner.id}}}:latency",
                                        str(call.latency_ms).encode(), ttl_seconds=300)

    @staticmethod
    def _floors(request: RequestView, partner: PartnerEntry, imps: set[str],
                usd_rates: dict[str, Decimal]) -> dict[str, Decimal]:
        """Each wanted imp's floor in the partner's currency, raised by its margin; an imp
        whose floor cannot be converted is not offered."""
        floors = {}
        for imp in request.imps:
            if imp.imp_id not in imps:
                continue
            try:
                floor = convert(imp.floor, source=imp.floor_currency, target=partner.currency,
                                usd_rates=usd_rates)
            except UnknownCurrency:
                continue
            floors[imp.imp_id] = gross_price(floor, partner.margin) if partner.margin else floor
        return floors
