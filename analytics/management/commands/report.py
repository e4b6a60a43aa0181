"""`manage.py report <kind>`: a report for ops in the terminal or as CSV, over every
advertiser unless one is named.

In embedded mode the analytics data is chDB inside the running platform's process, and chDB
lets one process at a time open a data directory: while the platform runs, this command
cannot read it and says so, pointing to the same report over the API.
"""

from __future__ import annotations

from datetime import date, timedelta

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from analytics import selectors
from analytics.clickhouse import AnalyticsQueryError, AnalyticsUnavailable
from analytics.exports import table_csv, table_text
from analytics.reports import Grain, GroupBy, ReportKind, ReportScope, range_errors
from campaigns.models import Advertiser, Campaign

KINDS = {kind.value.replace("_", "-"): kind for kind in ReportKind}


def _day(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CommandError(f"{text!r} is not a date (YYYY-MM-DD)") from None


class Command(BaseCommand):
    help = "Print a report (campaign performance, no-bid reasons, loyalty, DSP) for ops."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kind", choices=sorted(KINDS))
        parser.add_argument("--start", required=True, help="first day (UTC), YYYY-MM-DD")
        parser.add_argument("--end", help="last day (UTC, included); default: --start")
        parser.add_argument("--grain", choices=[grain.value for grain in Grain], default="day")
        parser.add_argument("--group-by", choices=[group.value for group in GroupBy],
                            default="campaign")
        parser.add_argument("--advertiser", type=int, help="only this advertiser (its id)")
        parser.add_argument("--campaign", type=int, help="only this campaign (its id)")
        parser.add_argument("--format", choices=["table", "csv"], default="table")

    def handle(self, *args, **options) -> None:
        kind = KINDS[options["kind"]]
        start = _day(options["start"])
        end = _day(options["end"]) if options["end"] else start
        grain = Grain(options["grain"])
        errors = range_errors(start=start, end=end, grain=grain)
        if errors:
            raise CommandError(" ".join(errors.values()))
        advertiser_ids = campaign_ids = None
        if options["advertiser"] is not None:
            if not Advertiser.objects.filter(pk=options["advertiser"]).exists():
                raise CommandError(f"no advertiser with id {options['advertiser']}")
            advertiser_ids = frozenset({str(options["advertiser"])})
        if options["campaign"] is not None:
            if not Campaign.objects.filter(pk=options["campaign"]).exists():
                raise CommandError(f"no campaign with id {options['campaign']}")
            campaign_ids = frozenset({str(options["campaign"])})
        scope = ReportScope(start=selectors.day_start(start),
                            end=selectors.day_start(end + timedelta(days=1)), grain=grain,
                            group_by=GroupBy(options["group_by"]),
                            advertiser_ids=advertiser_ids, campaign_ids=campaign_ids)
        try:
            report = selectors.report_labelled(kind=kind, scope=scope)
        except AnalyticsUnavailable as error:
            raise CommandError(self._unavailable(options["kind"], start, end, error)) from None
        except AnalyticsQueryError as error:
            raise CommandError(f"ClickHouse refused the report query ({error}); are its "
                               "migrations applied? Run manage.py migrate_clickhouse.") from None
        table = report.table()
        self.stdout.write(table_csv(table) if options["format"] == "csv" else table_text(table),
                          ending="")

    @staticmethod
    def _unavailable(kind: str, start: date, end: date, error: Exception) -> str:
        api = f"/api/v1/reports/{kind}/?start={start}&end={end}"
        if settings.CLICKHOUSE_URL:
            return f"ClickHouse is unavailable: {error}"
        return (f"The analytics data (chDB in {settings.CHDB_PATH}) is held by the running "
                "platform: in embedded mode only one process can open it. Read the report "
                f"from the platform's API instead: GET {api} (with an API token), or stop "
                "the platform and run this command again.")
