"""The task runner contract, against both implementations: in-process and Celery on Redis.

The task is the real scheduled one (`campaigns.tasks.campaigns_advance`), and the Celery case
runs a real worker process on the test database, so a passing test means the worker found the
task by name, reached the database and committed.
"""

import os
import subprocess
import sys
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from celery.schedules import schedule
from django.conf import settings
from django.contrib.auth.models import Group, User
from django.utils import timezone

from campaign_express.tasks import CeleryRunner, InProcessRunner
from campaigns import services
from campaigns.models import AuditEntry, Campaign
from tests.campaign_express.platform import ROOT

pytestmark = pytest.mark.django_db(transaction=True)
TASK = "campaigns.tasks.campaigns_advance"


def _approved_campaign_due_now() -> Campaign:
    marketer = User.objects.create_user("tasks-marketer", is_staff=True)
    marketer.groups.add(Group.objects.get(name="marketer"))
    approver = User.objects.create_user("tasks-approver", is_staff=True)
    approver.groups.add(Group.objects.get(name="approver"))
    ops = User.objects.create_user("tasks-ops", is_staff=True)
    ops.groups.add(Group.objects.get(name="ops"))
    advertiser = services.advertiser_create(actor=ops, data={"name": "Task Co"},
                                            marketers=[marketer])
    now = timezone.now()
    campaign = services.campaign_create(actor=marketer, data={
        "advertiser": advertiser, "name": "Starts now", "start_at": now - timedelta(minutes=5),
        "end_at": now + timedelta(days=1), "total_budget": Decimal(100),
        "daily_budget": Decimal(10), "base_bid_cpm": Decimal(1), "max_bid_cpm": Decimal(2)})
    creative = services.creative_create(actor=marketer, data={
        "campaign": campaign, "name": "Tag", "format": "native", "adomain": "task.example",
        "markup": '{"native": {}}'})
    services.creative_review(creative=creative, actor=approver, approve=True)
    services.campaign_transition(campaign=campaign, actor=marketer, action="submit")
    return services.campaign_transition(campaign=campaign, actor=approver, action="approve")


def _wait_for_status(campaign: Campaign, status: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        campaign.refresh_from_db()
        if campaign.status == status:
            return
        time.sleep(0.1)
    pytest.fail(f"campaign stayed {campaign.status!r}, expected {status!r}")


@pytest.fixture
def celery_runner(redis_url):
    from campaign_express.celery import app

    broker = redis_url.rsplit("/", 1)[0] + "/14"
    database = settings.DATABASES["default"]
    if database["ENGINE"] != "django.db.backends.postgresql":
        pytest.skip("the Celery worker shares the test database only on PostgreSQL")
    database_url = (f"postgres://{database['USER']}@{database['HOST']}:{database['PORT']}/"
                    f"{database['NAME']}")
    environ = {**os.environ, "DATABASE_URL": database_url, "CELERY_BROKER_URL": broker,
               "DJANGO_SETTINGS_MODULE": "campaign_express.settings.base"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "campaign_express.celery", "worker",
         "--pool=solo", "--without-mingle", "--without-gossip", "--loglevel=warning"],
        cwd=ROOT, env=environ, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    app.conf.broker_url = broker
    try:
        yield CeleryRunner()
    finally:
        worker.terminate()
        output = worker.communicate(timeout=30)[0].decode()
        assert "Traceback" not in output, output


def test_in_process_runner_runs_a_task_by_name():
    campaign = _approved_campaign_due_now()
    runner = InProcessRunner()
    try:
        runner.enqueue(TASK)
        _wait_for_status(campaign, "active")
    finally:
        runner.stop()
    entry = AuditEntry.objects.get(campaign_id=campaign.pk, to_status="active")
    assert (entry.actor, entry.from_status, entry.note) == (None, "approved", "Scheduled start")


def test_in_process_schedule_runs_due_entries():
    campaign = _approved_campaign_due_now()
    runner = InProcessRunner(tick_seconds=0.05)
    runner.start_schedule({"advance": {"task": TASK,
                                       "schedule": schedule(timedelta(seconds=60))}})
    try:
        _wait_for_status(campaign, "active")
    finally:
        runner.stop()


@pytest.mark.redis
@pytest.mark.slow
def test_celery_runner_runs_the_task_on_a_real_worker(celery_runner):
    campaign = _approved_campaign_due_now()
    celery_runner.enqueue(TASK)
    _wait_for_status(campaign, "active", seconds=60)
    entry = AuditEntry.objects.get(campaign_id=campaign.pk, to_status="active")
    assert (entry.actor, entry.note) == (None, "Scheduled start")
