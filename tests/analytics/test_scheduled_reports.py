"""Scheduled reports: closed periods, a run's stored result and email, idempotency, retries,
and the task on a real Celery worker with the Redis broker."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from django.conf import settings
from django.core import mail
from django.utils import timezone

from analytics import services
from analytics.clickhouse import AnalyticsBackend, ClickHouseBackend
from analytics.events import EventType
from analytics.models import ReportDefinition, ReportRun
from tests.analytics.report_django_fixtures import (
    People,
    chdb_platform_backend,
    people,
    platform_backend,
    use_analytics,
)
from tests.analytics.report_fixtures import (
    analytics_tables_create,
    close_backend,
    events_insert,
    make_event,
)
from tests.campaign_express.platform import ROOT, free_port

__all__ = ["chdb_platform_backend", "people", "platform_backend"]

DAY = date(2024, 5, 17)
AFTER_DAY = datetime(2024, 5, 18, 2, tzinfo=UTC)


@pytest.mark.parametrize(("cadence", "now", "period"), [
    ("daily", datetime(2024, 5, 18, 0, 59, tzinfo=UTC), (date(2024, 5, 16), date(2024, 5, 16))),
    ("daily", datetime(2024, 5, 18, 1, 0, tzinfo=UTC), (date(2024, 5, 17), date(2024, 5, 17))),
    ("weekly", datetime(2024, 5, 20, 0, 30, tzinfo=UTC), (date(2024, 5, 6), date(2024, 5, 12))),
    ("weekly", datetime(2024, 5, 20, 1, 30, tzinfo=UTC), (date(2024, 5, 13), date(2024, 5, 19))),
    ("weekly", datetime(2024, 5, 22, 9, 0, tzinfo=UTC), (date(2024, 5, 13), date(2024, 5, 19))),
    ("monthly", datetime(2024, 6, 1, 0, 30, tzinfo=UTC), (date(2024, 4, 1), date(2024, 4, 30))),
    ("monthly", datetime(2024, 6, 1, 1, 0, tzinfo=UTC), (date(2024, 5, 1), date(2024, 5, 31))),
    ("monthly", datetime(2024, 3, 15, 12, 0, tzinfo=UTC), (date(2024, 2, 1), date(2024, 2, 29))),
])
def test_the_last_closed_period_ended_an_hour_ago(cadence: str, now: datetime,
                                                  period: tuple[date, date]) -> None:
    assert services.period_last_closed(cadence=cadence, now=now) == period


def _insert_day(backend: AnalyticsBackend, people: People, day: date = DAY) -> None:
    at = datetime(day.year, day.month, day.day, 9, 30, tzinfo=UTC)
    ours = {"campaign_id": str(people.campaign.pk), "advertiser_id": str(people.advertiser.pk)}
    theirs = {"campaign_id": str(people.other_campaign.pk),
              "advertiser_id": str(people.other_advertiser.pk)}
    billing = make_event(EventType.BILLING, at, price_micros=2_000_000, **ours)
    events_insert(backend, [
        make_event(EventType.BID_REQUEST, at, request_id=f"{day}-a", latency_us=700),
        make_event(EventType.BID, at, request_id=f"{day}-a", **ours),
        make_event(EventType.WIN, at, **ours),
        make_event(EventType.IMPRESSION, at, **ours),
        billing,
        make_event(EventType.BID_REQUEST, at, request_id=f"{day}-b", latency_us=900),
        make_event(EventType.BID, at, request_id=f"{day}-b", **theirs),
    ])
    events_insert(backend, [billing])


def _definition(people: People, **fields: object) -> ReportDefinition:
    values: dict[str, object] = {"name": "Daily campaigns", "owner": people.ops,
                                 "recipients": "ops@example.com\nboss@example.com"}
    return ReportDefinition.objects.create(**(values | fields))


def _csv(run: ReportRun) -> str:
    with run.csv_file.open("rb") as csv_file:
        return csv_file.read().decode()


def test_a_due_run_stores_its_csv_and_summary_and_emails_it_once(
        platform_backend: AnalyticsBackend, people: People, settings) -> None:
    settings.EMAIL_HOST = "smtp.example.com"
    _insert_day(platform_backend, people)
    _definition(people)

    first = services.reports_run_due(now=AFTER_DAY)
    again = services.reports_run_due(now=AFTER_DAY + timedelta(minutes=30))

    assert first == again == {"succeeded": 1}
    run = ReportRun.objects.get()
    assert (run.period_start, run.period_end, run.status, run.row_count) == (DAY, DAY,
                                                                            "succeeded", 4)
    lines = _csv(run).splitlines()
    assert lines[0] == ("period,campaign,name,requests,bids,wins,win_rate,impressions,clicks,"
                        "ctr,conversions,spend_USD,ecpm_USD,no_bids,"
                        "no_bid_reasons,latency_p50_us,latency_p95_us,latency_p99_us")
    assert sorted(lines[1:4]) == sorted([
        "2024-05-17,,,2,0,0,,0,0,,0,,,0,,,,",
        f"2024-05-17,{people.campaign.pk},Morning Rush,0,1,1,1.0,1,0,0.0,0,2.000000,"
        "2000.000000,0,,700,700,700",
        f"2024-05-17,{people.other_campaign.pk},Weekend Getaways,0,1,0,0.0,0,0,,0,,,0,,"
        "900,900,900"])
    assert lines[4] == "total,,,2,2,1,0.5,1,0,0.0,0,2.000000,2000.000000,0,,800,890,898"
    assert "Morning Rush" in run.summary_html
    assert len(mail.outbox) == 1
    message = mail.outbox[0]
    assert message.to == ["ops@example.com", "boss@example.com"]
    assert message.subject == "Daily campaigns: 2024-05-17 to 2024-05-17"
    assert message.alternatives[0][0] == run.summary_html
    assert message.attachments == [("daily-campaigns-2024-05-17-2024-05-17.csv",
                                    _csv(run), "text/csv")]
    assert run.emailed_at is not None


def test_without_a_mail_server_the_run_is_kept_but_not_sent(
        chdb_platform_backend: AnalyticsBackend, people: People, settings) -> None:
    settings.EMAIL_HOST = ""
    _insert_day(chdb_platform_backend, people)
    definition = _definition(people)

    run = services.report_run_execute(definition=definition, period_start=DAY, period_end=DAY)

    assert (run.status, run.emailed_at, mail.outbox) == ("succeeded", None, [])


def test_unavailable_analytics_fails_the_run_and_the_next_beat_retries_it(
        chdb_platform_backend: AnalyticsBackend, people: People, settings) -> None:
    settings.EMAIL_HOST = "smtp.example.com"
    _insert_day(chdb_platform_backend, people)
    _definition(people)
    unreachable = ClickHouseBackend(f"clickhouse://default@127.0.0.1:{free_port()}/nowhere",
                                    connect_timeout=1)

    use_analytics(unreachable)
    failed = services.reports_run_due(now=AFTER_DAY)
    run = ReportRun.objects.get()
    assert (failed, run.status, bool(run.csv_file), mail.outbox) == ({"failed": 1}, "failed",
                                                                     False, [])
    assert run.error.startswith("clickhouse: Code: 210.")

    use_analytics(chdb_platform_backend)
    retried = services.reports_run_due(now=AFTER_DAY)

    run.refresh_from_db()
    assert (retried, run.status, run.error, run.row_count) == ({"succeeded": 1}, "succeeded",
                                                               "", 4)
    assert ReportRun.objects.count() == 1
    assert len(mail.outbox) == 1


def test_a_marketers_report_covers_only_their_advertisers(
        chdb_platform_backend: AnalyticsBackend, people: People) -> None:
    _insert_day(chdb_platform_backend, people)
    everything_visible = _definition(people, name="Mine", owner=people.marketer)
    not_visible = _definition(people, name="Theirs", owner=people.marketer)
    not_visible.advertisers.set([people.other_advertiser])

    mine = services.report_run_execute(definition=everything_visible, period_start=DAY,
                                       period_end=DAY)
    theirs = services.report_run_execute(definition=not_visible, period_start=DAY,
                                         period_end=DAY)

    assert [line.split(",")[1] for line in _csv(mine).splitlines()[1:]] == [
        str(people.campaign.pk), ""]
    assert _csv(theirs).splitlines()[1].startswith("total,,,0,0,0,")


def test_inactive_definitions_do_not_run(chdb_platform_backend: AnalyticsBackend,
                                        people: People) -> None:
    _definition(people, is_active=False)

    assert services.reports_run_due(now=AFTER_DAY) == {}
    assert ReportRun.objects.count() == 0


# --- on a real Celery worker -------------------------------------------------------------

@pytest.fixture
def worker_analytics(clickhouse_url: str) -> Iterator[tuple[str, AnalyticsBackend]]:
    """A ClickHouse database the worker (by URL) and this test (as the platform's client)
    share."""
    url = urlsplit(clickhouse_url)._replace(path=f"/test_{uuid.uuid4().hex}").geturl()
    backend = ClickHouseBackend(url)
    analytics_tables_create(backend)
    use_analytics(backend)
    yield url, backend
    use_analytics(None)
    close_backend(backend)


@pytest.fixture
def report_worker(redis_url: str, worker_analytics: tuple[str, AnalyticsBackend],
                  tmp_path: Path) -> Iterator[str]:
    """A Celery worker on the test database, consuming a queue of its own; yields the queue."""
    from campaign_express.celery import app

    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the Celery worker shares the test database only on PostgreSQL")
    queue = f"reports-{uuid.uuid4().hex[:8]}"
    broker = redis_url.rsplit("/", 1)[0] + "/14"
    environ = {**os.environ,
               "DATABASE_URL": (f"postgres://{database['USER']}@{database['HOST']}:"
                                f"{database['PORT']}/{database['NAME']}"),
               "CELERY_BROKER_URL": broker, "CLICKHOUSE_URL": worker_analytics[0],
               "CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path / "worker"),
               "CAMPAIGN_EXPRESS__EMAIL__HOST": "",
               "DJANGO_SETTINGS_MODULE": "campaign_express.settings.base"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "campaign_express.celery", "worker",
         "--pool=solo", "--without-mingle", "--without-gossip", "--loglevel=warning",
         "-Q", queue],
        cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    app.conf.broker_url = broker
    try:
        yield queue
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0].decode()
        assert "Traceback" not in output, output


def _wait_for_run(definition: ReportDefinition, seconds: float = 60) -> ReportRun:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        run = ReportRun.objects.filter(definition=definition,
                                       status=ReportRun.Status.SUCCEEDED).first()
        if run is not None:
            return run
        time.sleep(0.2)
    pytest.fail(f"no succeeded run of {definition} after {seconds} s: "
                f"{list(ReportRun.objects.values('status', 'error'))}")


@pytest.mark.django_db(transaction=True)
@pytest.mark.redis
@pytest.mark.clickhouse
@pytest.mark.slow
def test_the_task_runs_due_reports_on_a_real_worker_once_per_period(
        report_worker: str, worker_analytics: tuple[str, AnalyticsBackend], people: People,
        tmp_path: Path, settings) -> None:
    from campaign_express.celery import app

    settings.MEDIA_ROOT = tmp_path / "worker" / "media"
    day, _ = services.period_last_closed(cadence="daily", now=timezone.now())
    _insert_day(worker_analytics[1], people, day)
    first = _definition(people)

    app.send_task("analytics.tasks.reports_run_due", queue=report_worker)
    run = _wait_for_run(first)
    # The second call also meets a new definition: its run shows the call has finished.
    second = _definition(people, name="Second")
    app.send_task("analytics.tasks.reports_run_due", queue=report_worker)
    _wait_for_run(second)

    assert ReportRun.objects.filter(definition=first).count() == 1
    unchanged = ReportRun.objects.get(definition=first)
    assert (unchanged.finished_at, unchanged.csv_file.name) == (run.finished_at,
                                                                run.csv_file.name)
    assert (run.period_start, run.period_end, run.row_count) == (day, day, 4)
    assert _csv(run).splitlines()[-1].startswith("total,,,2,2,1,0.5,1,0,0.0,0,")
