"""Scheduled report runs: compute a definition's report for a closed period, keep the CSV and
the summary, and email them.

Idempotent by construction: a run is unique per (definition, period), a worker claims it with
one conditional UPDATE (so two workers never both compute it), and the email is claimed the
same way through `emailed_at` (so a retried task never sends twice).
"""

from __future__ import annotations

import logging
import smtplib
from datetime import UTC, date, datetime, timedelta

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.mail import EmailMultiAlternatives
from django.db.models import Q
from django.template.loader import render_to_string
from django.utils import timezone
from django.utils.text import slugify

from analytics import selectors
from analytics.clickhouse import AnalyticsError
from analytics.exports import table_csv
from analytics.models import ReportDefinition, ReportRun
from analytics.reports import Grain, GroupBy, ReportKind, ReportScope
from campaigns import selectors as campaign_selectors

logger = logging.getLogger(__name__)

# Events reach ClickHouse through the pipeline within seconds; an hour after a period ends
# it is treated as closed, so a late batch still lands inside its report.
CLOSE_GRACE = timedelta(hours=1)
# A run left `running` this long (its worker died) may be claimed again.
STALE_RUN = timedelta(hours=1)
SUMMARY_ROWS = 50


def period_last_closed(*, cadence: str, now: datetime) -> tuple[date, date]:
    """The latest whole period (first and last day, UTC) that ended at least CLOSE_GRACE ago."""
    today = (now.astimezone(UTC) - CLOSE_GRACE).date()
    if cadence == ReportDefinition.Cadence.DAILY:
        yesterday = today - timedelta(days=1)
        return yesterday, yesterday
    if cadence == ReportDefinition.Cadence.WEEKLY:
        last_sunday = today - timedelta(days=today.weekday() + 1)
        return last_sunday - timedelta(days=6), last_sunday
    last_day = today.replace(day=1) - timedelta(days=1)
    return last_day.replace(day=1), last_day


def definition_scope(*, definition: ReportDefinition, period_start: date,
                     period_end: date) -> ReportScope:
    """The definition's advertisers, within what its owner may see (empty: all of those)."""
    owner = definition.owner
    chosen = {str(pk) for pk in definition.advertisers.values_list("pk", flat=True)}
    advertiser_ids: frozenset[str] | None
    if campaign_selectors.user_sees_all_advertisers(user=owner):
        advertiser_ids = frozenset(chosen) if chosen else None
    else:
        visible = {str(pk) for pk in campaign_selectors.advertiser_list(user=owner)
                   .values_list("pk", flat=True)}
        advertiser_ids = frozenset(chosen & visible if chosen else visible)
    return ReportScope(start=selectors.day_start(period_start),
                       end=selectors.day_start(period_end + timedelta(days=1)),
                       grain=Grain.DAY, group_by=GroupBy(definition.grouping),
                       advertiser_ids=advertiser_ids)


def report_run_file_name(*, run: ReportRun) -> str:
    """What the CSV is called in downloads and emails (the stored name may carry a suffix)."""
    return (f"{slugify(run.definition.name) or 'report'}-{run.period_start}-"
            f"{run.period_end}.csv")


def _claim(run: ReportRun) -> bool:
    now = timezone.now()
    claimable = (Q(status__in=[ReportRun.Status.PENDING, ReportRun.Status.FAILED])
                 | Q(status=ReportRun.Status.RUNNING, started_at__lt=now - STALE_RUN))
    return bool(ReportRun.objects.filter(claimable, pk=run.pk).update(
        status=ReportRun.Status.RUNNING, started_at=now, error=""))


def report_run_execute(*, definition: ReportDefinition, period_start: date,
                       period_end: date) -> ReportRun:
    """Run the definition for the period once: a period already done (or being done) is
    returned as it is. ClickHouse being unavailable fails the run, which the next beat
    retries; the email is sent (or retried) after a success."""
    run, _ = ReportRun.objects.get_or_create(definition=definition, period_start=period_start,
                                             period_end=period_end)
    if _claim(run):
        _compute(run)
    run.refresh_from_db()
    report_run_email(run=run)
    return run


def _compute(run: ReportRun) -> None:
    definition = run.definition
    kind = ReportKind(definition.kind)
    scope = definition_scope(definition=definition, period_start=run.period_start,
                             period_end=run.period_end)
    try:
        report = selectors.report_labelled(kind=kind, scope=scope)
    except AnalyticsError as error:
        logger.warning("report %s for %s..%s failed: %s", definition.pk, run.period_start,
                       run.period_end, error)
        ReportRun.objects.filter(pk=run.pk).update(status=ReportRun.Status.FAILED,
                                                   error=str(error), finished_at=timezone.now())
        return
    table = report.table()
    run.summary_html = render_to_string("analytics/report_summary.html", {
        "definition": definition, "kind": definition.get_kind_display(), "run": run,
        "headers": table.headers, "rows": table.rows[:SUMMARY_ROWS],
        "more": max(len(table.rows) - SUMMARY_ROWS, 0)})
    run.csv_file.save(report_run_file_name(run=run), ContentFile(table_csv(table).encode()),
                      save=False)
    run.row_count = len(table.rows)
    run.status = ReportRun.Status.SUCCEEDED
    run.finished_at = timezone.now()
    run.save(update_fields=["summary_html", "csv_file", "row_count", "status", "finished_at"])


def report_run_email(*, run: ReportRun) -> bool:
    """Email a succeeded run to its recipients once, when mail is configured (EMAIL_HOST)."""
    recipients = run.definition.recipient_list()
    if not settings.EMAIL_HOST or not recipients or run.status != ReportRun.Status.SUCCEEDED:
        return False
    if not ReportRun.objects.filter(pk=run.pk, emailed_at__isnull=True).update(
            emailed_at=timezone.now()):
        return False
    subject = f"{run.definition.name}: {run.period_start} to {run.period_end}"
    message = EmailMultiAlternatives(
        subject=subject,
        body=(f"{run.definition.get_kind_display()} for {run.period_start} to "
              f"{run.period_end}: {run.row_count} rows, attached as CSV."),
        to=recipients)
    message.attach_alternative(run.summary_html, "text/html")
    with run.csv_file.open("rb") as csv_file:
        message.attach(report_run_file_name(run=run), csv_file.read(), "text/csv")
    try:
        message.send()
    except (OSError, smtplib.SMTPException) as error:
        logger.warning("report run %s not emailed: %s", run.pk, error)
        ReportRun.objects.filter(pk=run.pk).update(emailed_at=None,
                                                   error=f"email not sent: {error}")
        return False
    run.refresh_from_db(fields=["emailed_at"])
    return True


def reports_run_due(*, now: datetime | None = None) -> dict[str, int]:
    """Run every active definition for its last closed period; counts runs by status."""
    now = now or timezone.now()
    counts: dict[str, int] = {}
    for definition in ReportDefinition.objects.filter(is_active=True).select_related("owner"):
        period_start, period_end = period_last_closed(cadence=definition.cadence, now=now)
        run = report_run_execute(definition=definition, period_start=period_start,
                                 period_end=period_end)
        counts[run.status] = counts.get(run.status, 0) + 1
    return counts
