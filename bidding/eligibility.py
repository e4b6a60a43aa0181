"""The checks a (campaign, creative) pair must pass after the index lookup.

Each check is a small pure function of the pair and the request, so a test can show one
rule failing on its own. `refusal` returns the first reason a pair is refused, or None.

Django-free: the bidder imports it.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache, lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bidding.markup import native_assets
from bidding.openrtb import ImpView, RequestView
from bidding.openrtb.view import native_request_assets
from bidding.profiles import Profile
from bidding.snapshot import CampaignEntry, CreativeEntry

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
BANNER_TYPE_XHTML, BANNER_TYPE_JAVASCRIPT = 2, 3


@cache
def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@lru_cache(maxsize=256)
def _local_day_and_hour(time_zone: str, minute: int) -> tuple[str, int]:
    """The weekday and hour in ``time_zone`` at a minute: the same for every campaign of the
    zone and every request of that minute, so worked out once."""
    local = datetime.fromtimestamp(minute * 60, _zone(time_zone))
    return WEEKDAYS[local.weekday()], local.hour


def in_schedule(campaign: CampaignEntry, now: float) -> bool:
    if not campaign.start_at <= now < campaign.end_at:
        return False
    if not campaign.dayparts:
        return True
    day, hour = _local_day_and_hour(campaign.time_zone, int(now // 60))
    return hour in campaign.dayparts.get(day, ())


def _domain_matches(domain: str, listed: tuple[str, ...]) -> bool:
    return any(domain == entry or domain.endswith("." + entry) for entry in listed)


def _category_blocked(categories: tuple[str, ...], blocked: frozenset[str]) -> bool:
    return any(category in blocked or category.split("-")[0] in blocked
               for category in categories)


def _category_allowed(categories: tuple[str, ...], allowed: frozenset[str]) -> bool:
    return not allowed or all(category in allowed or category.split("-")[0] in allowed
                              for category in categories)


def refusal(campaign: CampaignEntry, creative: CreativeEntry, *, request: RequestView,
            imp: ImpView, media: str, now: float, profile: Profile | None = None) -> str | None:
    """Why this pair may not bid on ``imp`` as ``media``, or None when it may.

    ``profile`` is the user's, read only with consent; segments and loyalty tiers need it or
    the request's own segments.
    """
    # The cheap tests guard the costlier ones: this runs for every candidate of a request.
    if not campaign.start_at <= now < campaign.end_at or (
            campaign.dayparts and not in_schedule(campaign, now)):
        return "schedule"
    if campaign.regions and request.region not in campaign.regions:
        return "region"
    if campaign.site_domains_allow or campaign.app_bundles_allow:
        reason = _allow_list_refusal(campaign, request)
        if reason is not None:
            return reason
    if campaign.site_domains_block and request.domain and _domain_matches(
            request.domain, campaign.site_domains_block):
        return "site_blocked"
    if campaign.app_bundles_block and request.bundle and (
            request.bundle in campaign.app_bundles_block):
        return "app_blocked"
    if campaign.segments and not (request.has_user_consent and (
            request.segments.intersection(campaign.segments)
            or (profile is not None and set(profile.segments).intersection(campaign.segments)))):
        return "segment"
    if campaign.loyalty_tiers and _loyalty_tier(campaign, profile) not in campaign.loyalty_tiers:
        return "loyalty_tier"
    if creative.categories and request.blocked_categories and _category_blocked(
            creative.categories, request.blocked_categories):
        return "bcat"
    if request.allowed_categories and not _category_allowed(creative.categories,
                                                            request.allowed_categories):
        return "acat"
    if creative.adomain and request.blocked_advertiser_domains and _domain_matches(
            creative.adomain, tuple(request.blocked_advertiser_domains)):
        return "badv"
    if creative.app_bundle and creative.app_bundle in request.blocked_app_bundles:
        return "bapp"
    if imp.is_secure and not creative.is_secure:
        return "secure"
    return _media_refusal(creative, imp=imp, media=media)


def _allow_list_refusal(campaign: CampaignEntry, request: RequestView) -> str | None:
    """A campaign with allow-lists bids where one of them names the request's site domain
    (an app's publisher domain too) or app bundle: with both lists, either will do."""
    if campaign.site_domains_allow and _domain_matches(request.domain,
                                                       campaign.site_domains_allow):
        return None
    if request.bundle and request.bundle in campaign.app_bundles_allow:
        return None
    if campaign.app_bundles_allow and (request.medium == "app"
                                       or not campaign.site_domains_allow):
        return "app_not_allowed"
    return "site_not_allowed"


def _loyalty_tier(campaign: CampaignEntry, profile: Profile | None) -> str:
    if profile is None or campaign.loyalty_program_id is None:
        return ""
    status = profile.loyalty.get(str(campaign.loyalty_program_id))
    return status.tier if status is not None else ""


def _media_refusal(creative: CreativeEntry, *, imp: ImpView, media: str) -> str | None:
    if media == "banner" and imp.banner is not None:
        if imp.banner.blocked_types:
            banner_type = BANNER_TYPE_JAVASCRIPT if "<script" in creative.markup.lower() else (
                BANNER_TYPE_XHTML)
            if banner_type in imp.banner.blocked_types:
                return "btype"
        if creative.attributes and imp.banner.blocked_attributes.intersection(
                creative.attributes):
            return "battr"
        return None
    if media == "native" and imp.native is not None:
        if imp.native.blocked_attributes.intersection(creative.attributes):
            return "battr"
        request_assets = native_request_assets(imp.native)
        if not request_assets:
            return "native_assets"  # none, or unreadable: nothing to answer with
        if not creative.markup and native_assets(creative, request_assets) is None:
            return "native_assets"  # a required asset it cannot fill: its markup would be empty
        return None
    timed = imp.timed(media)
    if timed is None:
        return "format"
    if timed.blocked_attributes.intersection(creative.attributes):
        return "battr"
    duration = creative.duration_seconds or 0
    if timed.required_durations and duration not in timed.required_durations:
        return "duration"
    if timed.min_duration is not None and duration < timed.min_duration:
        return "duration"
    if timed.max_duration is not None and timed.max_duration > 0 and (
            duration > timed.max_duration):
        return "duration"
    return None
