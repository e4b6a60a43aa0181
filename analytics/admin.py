"""Scheduled reports in the admin (definitions, runs and their downloads), and the
performance panel of the campaign change page."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.loader import render_to_string
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.safestring import SafeString, mark_safe

from analytics import selectors, services
from analytics.charts import Series, bar_charts_svg
from analytics.clickhouse import AnalyticsError
from analytics.models import ReportDefinition, ReportRun
from campaigns import selectors as campaign_selectors
from campaigns.models import Campaign

PANEL_DAYS = 7


def campaign_performance_panel(*, campaign: Campaign, today: date | None = None) -> SafeString:
    """The campaign's last seven days: totals and a daily chart. ClickHouse (or chDB) being
    unavailable leaves a note instead, never a broken page."""
    today = today or datetime.now(UTC).date()
    days = [today - timedelta(days=offset) for offset in range(PANEL_DAYS - 1, -1, -1)]
    context: dict = {"campaign": campaign, "start": days[0], "end": days[-1]}
    try:
        report = selectors.campaign_recent_performance(campaign=campaign, days=PANEL_DAYS,
                                                       today=today)
    except AnalyticsError as error:
        context["unavailable"] = str(error)
        return render_to_string("analytics/campaign_performance.html", context)
    by_day = {row.bucket.date(): row for row in report.rows if row.bucket is not None}
    total = report.total
    currency = campaign.currency
    spend = [by_day[day].spend.get(currency, Decimal(0)) if day in by_day else Decimal(0)
             for day in days]

    def counts(name: str) -> list[int]:
        return [getattr(by_day[day], name) if day in by_day else 0 for day in days]

    chart = bar_charts_svg(
        title=f"{campaign.name}: the last {PANEL_DAYS} days, per day (UTC)",
        labels=[f"{day:%b %d}" for day in days],
        series=[Series("Bids", counts("bids"), f"{total.bids:,}"),
                Series("Wins", counts("wins"), f"{total.wins:,}"),
                Series("Impressions", counts("impressions"), f"{total.impressions:,}"),
                Series("Clicks", counts("clicks"), f"{total.clicks:,}"),
                Series(f"Spend ({currency})", spend,
                       f"{total.spend.get(currency, Decimal(0)):,.2f}")])
    context.update({
        "total": total, "currency": currency, "chart": mark_safe(chart),  # escaped in charts
        "spend": total.spend.get(currency, Decimal(0)),
        "ecpm": total.ecpm.get(currency), "other_spend": {
            code: amount for code, amount in total.spend.items() if code != currency}})
    return render_to_string("analytics/campaign_performance.html", context)


def _visible_definitions(request):
    definitions = ReportDefinition.objects.select_related("owner")
    if campaign_selectors.user_sees_all_advertisers(user=request.user):
        return definitions
    return definitions.filter(owner=request.user)


@admin.register(ReportDefinition)
class ReportDefinitionAdmin(admin.ModelAdmin):
    list_display = ["name", "kind", "grouping", "cadence", "recipients_count", "is_active",
                    "owner", "last_run"]
    list_filter = ["kind", "cadence", "is_active"]
    search_fields = ["name", "recipients"]
    filter_horizontal = ["advertisers"]
    readonly_fields = ["owner", "created_at", "updated_at"]
    fields = ["name", "kind", "grouping", "cadence", "advertisers", "recipients", "is_active",
              "owner", "created_at", "updated_at"]
    actions = ["run_last_period"]

    def get_queryset(self, request):
        return _visible_definitions(request)

    def formfield_for_manytomany(self, db_field, request, **kwargs):
        if db_field.name == "advertisers":
            kwargs["queryset"] = campaign_selectors.advertiser_list(user=request.user)
        return super().formfield_for_manytomany(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if not change:
            obj.owner = request.user
        super().save_model(request, obj, form, change)

    @admin.display(description="recipients")
    def recipients_count(self, definition: ReportDefinition) -> int:
        return len(definition.recipient_list())

    @admin.display(description="last run")
    def last_run(self, definition: ReportDefinition) -> str:
        run = definition.runs.order_by("-period_start", "-id").first()
        if run is None:
            return "—"
        return f"{run.period_start}..{run.period_end} {run.status}"

    @admin.action(description="Run selected reports for their last closed period")
    def run_last_period(self, request, queryset):
        now = timezone.now()
        for definition in queryset:
            start, end = services.period_last_closed(cadence=definition.cadence, now=now)
            run = services.report_run_execute(definition=definition, period_start=start,
                                              period_end=end)
            level = messages.SUCCESS if run.status == ReportRun.Status.SUCCEEDED else (
                messages.ERROR)
            self.message_user(request, f"{definition}: {start}..{end} {run.status}"
                              + (f" ({run.error})" if run.error else ""), level)


@admin.register(ReportRun)
class ReportRunAdmin(admin.ModelAdmin):
    list_display = ["definition", "period_start", "period_end", "status", "row_count",
                    "created_at", "emailed_at", "downloads"]
    list_filter = ["status", "definition__kind", "period_start"]
    search_fields = ["definition__name"]
    date_hierarchy = "period_start"
    fields = ["definition", "period_start", "period_end", "status", "row_count", "error",
              "created_at", "started_at", "finished_at", "emailed_at", "downloads"]
    readonly_fields = fields

    def get_queryset(self, request):
        return ReportRun.objects.select_related("definition").filter(
            definition__in=_visible_definitions(request))

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="downloads")
    def downloads(self, run: ReportRun) -> str:
        if run.pk is None or run.status != ReportRun.Status.SUCCEEDED:
            return "—"
        return format_html('<a href="{}">CSV</a> · <a href="{}">summary</a>',
                           reverse("admin:analytics_reportrun_csv", args=[run.pk]),
                           reverse("admin:analytics_reportrun_summary", args=[run.pk]))

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:run_id>/csv/", wrap(self.csv_view), name="analytics_reportrun_csv"),
            path("<int:run_id>/summary/", wrap(self.summary_view),
                 name="analytics_reportrun_summary"),
            *super().get_urls(),
        ]

    def _run(self, request, run_id: int) -> ReportRun:
        if not self.has_view_permission(request):
            raise PermissionDenied
        run = get_object_or_404(self.get_queryset(request), pk=run_id)
        if run.status != ReportRun.Status.SUCCEEDED or not run.csv_file:
            raise Http404("This run has no result.")
        return run

    def csv_view(self, request, run_id: int):
        run = self._run(request, run_id)
        return FileResponse(run.csv_file.open("rb"), as_attachment=True,
                            filename=services.report_run_file_name(run=run),
                            content_type="text/csv")

    def summary_view(self, request, run_id: int):
        return HttpResponse(self._run(request, run_id).summary_html)
