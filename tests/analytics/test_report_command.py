"""`manage.py report`: ops' reports as CSV or a table, and a clear answer in embedded mode
while the running platform holds the chDB data."""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from analytics.clickhouse import AnalyticsBackend
from analytics.events import EventType
from campaign_express import platform
from tests.analytics.report_django_fixtures import People, people, platform_backend
from tests.analytics.report_fixtures import events_insert, make_event
from tests.campaign_express.platform import ROOT

__all__ = ["people", "platform_backend"]

AT = datetime(2024, 5, 17, 10, tzinfo=UTC)


def _report(*arguments: str) -> str:
    out = io.StringIO()
    call_command("report", *arguments, stdout=out)
    return out.getvalue()


def _insert(backend: AnalyticsBackend, people: People) -> None:
    ids = {"campaign_id": str(people.campaign.pk), "advertiser_id": str(people.advertiser.pk),
           "exchange": "xa"}
    events_insert(backend, [
        make_event(EventType.BID_REQUEST, AT, request_id="r1", exchange="xa", latency_us=500),
        make_event(EventType.BID, AT, request_id="r1", **ids),
        make_event(EventType.BILLING, AT, price_micros=1_250_000, **ids),
        make_event(EventType.BID_REQUEST, AT, request_id="r2", exchange="xa", latency_us=800,
                   reason="no_eligible_campaign"),
        make_event(EventType.NO_BID, AT, request_id="r2", exchange="xa",
                   reason="no_eligible_campaign"),
        make_event(EventType.DSP_SENT, AT, partner="acme"),
    ])


def test_ops_get_a_csv_of_every_advertiser(platform_backend: AnalyticsBackend,
                                           people: People) -> None:
    _insert(platform_backend, people)

    output = _report("campaign-performance", "--start", "2024-05-17", "--group-by", "exchange",
                     "--format", "csv")

    assert output == (
        "period,exchange,name,requests,bids,wins,win_rate,impressions,clicks,ctr,conversions,"
        "spend_USD,ecpm_USD,no_bids,no_bid_reasons,latency_p50_us,latency_p95_us,"
        "latency_p99_us\n"
        "2024-05-17,xa,,2,1,0,0.0,0,0,,0,1.250000,,1,no_eligible_campaign=1,650,785,797\n"
        "total,,,2,1,0,0.0,0,0,,0,1.250000,,1,no_eligible_campaign=1,650,785,797\n")


def test_a_table_for_the_terminal(platform_backend: AnalyticsBackend, people: People) -> None:
    _insert(platform_backend, people)

    table = _report("dsp", "--start", "2024-05-16", "--end", "2024-05-17")
    no_bids = _report("no-bid-reasons", "--start", "2024-05-17", "--grain", "hour",
                      "--group-by", "exchange")

    assert table == ("period      partner  sent  won  lost  timeouts  win_rate\n"
                     "----------  -------  ----  ---  ----  --------  --------\n"
                     "2024-05-17  acme     1     0    0     0         0.0\n")
    assert no_bids.splitlines()[2] == "2024-05-17 10:00  xa              no_eligible_campaign  1"


def test_an_advertiser_limits_the_report(platform_backend: AnalyticsBackend,
                                         people: People) -> None:
    _insert(platform_backend, people)

    output = _report("campaign-performance", "--start", "2024-05-17", "--advertiser",
                     str(people.other_advertiser.pk), "--format", "csv")

    assert output.splitlines()[1:] == ["total,,,0,0,0,,0,0,,0,0,,,,"]


def test_bad_arguments_are_command_errors(people: People) -> None:
    with pytest.raises(CommandError, match="no advertiser with id 999"):
        _report("loyalty", "--start", "2024-05-17", "--advertiser", "999")
    with pytest.raises(CommandError, match=r"^'2024-13-01' is not a date \(YYYY-MM-DD\)$"):
        _report("loyalty", "--start", "2024-13-01")
    with pytest.raises(CommandError, match="^The end must not be before the start.$"):
        _report("loyalty", "--start", "2024-05-17", "--end", "2024-05-16")


@pytest.fixture
def chdb_held_by_another_process(tmp_path: Path) -> Iterator[Path]:
    """A process holding chDB on a data directory, as the running platform does."""
    path = tmp_path / "chdb"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys; from pathlib import Path; from analytics.clickhouse import ChdbBackend; "
         f"backend = ChdbBackend(Path({str(path)!r})); backend.ping(); print('ready', "
         "flush=True); sys.stdin.read()"],
        cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline() == "ready\n"
        yield path
    finally:
        holder.terminate()
        holder.wait(timeout=30)


def test_in_embedded_mode_a_running_platform_is_pointed_to(
        chdb_held_by_another_process: Path, people: People, settings) -> None:
    settings.CLICKHOUSE_URL = ""
    settings.CHDB_PATH = chdb_held_by_another_process
    platform.analytics_close()

    with pytest.raises(CommandError) as raised:
        _report("campaign-performance", "--start", "2024-05-17", "--end", "2024-05-18")

    assert str(raised.value) == (
        f"The analytics data (chDB in {chdb_held_by_another_process}) is held by the running "
        "platform: in embedded mode only one process can open it. Read the report from the "
        "platform's API instead: GET /api/v1/reports/campaign-performance/?start=2024-05-17"
        "&end=2024-05-18 (with an API token), or stop the platform and run this command again.")
