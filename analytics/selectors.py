"""Reports as a user may see them: the scope (which advertisers, which campaign), the
currencies and names that come from PostgreSQL, and the query against ClickHouse.

A marketer's scope is their advertisers' ids, filtered in SQL; a campaign or advertiser they
cannot see is a 404, exactly as in the campaigns API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from django.contrib.auth.models import AbstractBaseUser

from analytics import reports, summaries
from analytics.exports import ReportResult, Table, report_table
from analytics.reports import Grain, GroupBy, ReportKind, ReportScope
from campaign_express import platform
from campaign_express.errors import DomainError
from campaigns import selectors as campaign_selectors
from campaigns.models import Advertiser, Campaign, Creative


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(), tzinfo=UTC)


def report_scope(*, user: AbstractBaseUser, start: date, end: date, grain: Grain,
                 group_by: GroupBy, campaign_id: int | None = None,
                 advertiser_id: int | None = None) -> ReportScope:
    """The days `start` to `end` (both included, UTC) as far as `user` may see them."""
    visible = campaign_selectors.advertiser_list(user=user)
    advertiser_ids: frozenset[str] | None = None
    if not campaign_selectors.user_sees_all_advertisers(user=user):
        advertiser_ids = frozenset(str(pk) for pk in visible.values_list("pk", flat=True))
    if advertiser_id is not None:
        if not visible.filter(pk=advertiser_id).exists():
            raise DomainError("No such advertiser.", field="advertiser", status=404,
                              code="not_found")
        advertiser_ids = frozenset({str(advertiser_id)})
    campaign_ids: frozenset[str] | None = None
    if campaign_id is not None:
        if not campaign_selectors.campaign_list(user=user).filter(pk=campaign_id).exists():
            raise DomainError("No such campaign.", field="campaign", status=404,
                              code="not_found")
        campaign_ids = frozenset({str(campaign_id)})
    return ReportScope(start=day_start(start), end=day_start(end + timedelta(days=1)),
                       grain=grain, group_by=group_by, advertiser_ids=advertiser_ids,
                       campaign_ids=campaign_ids)


def campaign_currencies(*, scope: ReportScope) -> dict[str, str]:
    """Campaign id (as events carry it) to the currency its prices are in."""
    campaigns = Campaign.objects.all()
    if scope.advertiser_ids is not None:
        campaigns = campaigns.filter(advertiser_id__in=[int(pk) for pk in scope.advertiser_ids])
    if scope.campaign_ids is not None:
        campaigns = campaigns.filter(pk__in=[int(pk) for pk in scope.campaign_ids])
    return {str(pk): currency for pk, currency in campaigns.values_list("pk", "currency")}


def report_labels(*, kind: ReportKind, group_by: GroupBy, keys: set[str]) -> dict[str, str]:
    """Names for the keys of a report; keys that are not primary keys keep no name."""
    if kind is ReportKind.DSP or (kind is not ReportKind.LOYALTY
                                  and group_by is GroupBy.EXCHANGE):
        return {}
    model: type[Advertiser] | type[Campaign] | type[Creative] = {
        GroupBy.ADVERTISER: Advertiser, GroupBy.CAMPAIGN: Campaign, GroupBy.CREATIVE: Creative,
    }[GroupBy.ADVERTISER if kind is ReportKind.LOYALTY else group_by]
    ids = [int(key) for key in keys if key.isdigit()]
    return {str(pk): name for pk, name in
            model.objects.filter(pk__in=ids).values_list("pk", "name")}


def report_key_name(*, kind: ReportKind, group_by: GroupBy) -> str:
    if kind is ReportKind.LOYALTY:
        return "advertiser"
    if kind is ReportKind.DSP:
        return "partner"
    return group_by.value


def report_compute(*, kind: ReportKind, scope: ReportScope) -> ReportResult:
    """Run the report on the process's analytics backend; raises AnalyticsError if
    ClickHouse (or chDB) cannot answer."""
    backend = platform.analytics()
    if kind is ReportKind.PERFORMANCE:
        return reports.performance_report(backend=backend, scope=scope,
                                          currencies=campaign_currencies(scope=scope))
    if kind is ReportKind.NO_BID_REASONS:
        return reports.no_bid_report(backend=backend, scope=scope)
    if kind is ReportKind.LOYALTY:
        return summaries.loyalty_report(backend=backend, scope=scope)
    return summaries.dsp_report(backend=backend, scope=scope)


def result_keys(result: ReportResult) -> set[str]:
    rows = result.rows if isinstance(result, reports.PerformanceReport) else result
    return {row.key for row in rows}


@dataclass(frozen=True)
class LabelledReport:
    kind: ReportKind
    scope: ReportScope
    result: ReportResult
    labels: dict[str, str]

    def table(self) -> Table:
        return report_table(kind=self.kind, result=self.result, grain=self.scope.grain,
                            key_name=report_key_name(kind=self.kind,
                                                     group_by=self.scope.group_by),
                            labels=self.labels)


def report_labelled(*, kind: ReportKind, scope: ReportScope) -> LabelledReport:
    result = report_compute(kind=kind, scope=scope)
    labels = report_labels(kind=kind, group_by=scope.group_by, keys=result_keys(result))
    return LabelledReport(kind=kind, scope=scope, result=result, labels=labels)


def campaign_recent_performance(*, campaign: Campaign, days: int = 7,
                                today: date | None = None) -> reports.PerformanceReport:
    """The campaign's last `days` days (today included, UTC), one row per day."""
    today = today or datetime.now(UTC).date()
    scope = ReportScope(start=day_start(today - timedelta(days=days - 1)),
                        end=day_start(today + timedelta(days=1)), grain=Grain.DAY,
                        group_by=GroupBy.CAMPAIGN, campaign_ids=frozenset({str(campaign.pk)}))
    return reports.performance_report(backend=platform.analytics(), scope=scope,
                                      currencies={str(campaign.pk): campaign.currency})
