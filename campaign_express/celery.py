"""The Celery app and the beat schedule, the one place queues and cadences are named.

Start a worker with beat: ``celery -A campaign_express.celery worker --beat``. Without
CELERY_BROKER_URL the same schedule runs inside the platform process
(`campaign_express.tasks.InProcessRunner`).
"""

from __future__ import annotations

import os
from datetime import timedelta

from celery import Celery
from celery.schedules import crontab, schedule

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "campaign_express.settings.base")

QUEUE_DEFAULT = "default"

# Each entry: the task by its dotted name, its cadence, and an expiry no longer than the
# cadence, so a worker that was down does not replay a backlog of identical runs.
BEAT_SCHEDULE: dict[str, dict] = {
    # Starts approved campaigns at their scheduled start and completes ended or spent ones;
    # a minute is the resolution marketers schedule at.
    "campaigns-advance": {
        "task": "campaigns.tasks.campaigns_advance",
        "schedule": schedule(timedelta(seconds=60)),
        "options": {"expires": 55},
    },
    # Publishes the config snapshot when a request is pending: the retry for a publish that
    # failed (bus down), and a catch-up for one that commit order left behind. Ten seconds
    # bounds how long a saved change can wait; a run with nothing pending is one query.
    "config-snapshot-publish": {
        "task": "campaigns.tasks.snapshot_publish",
        "schedule": schedule(timedelta(seconds=10)),
        "options": {"expires": 9},
    },
    # Publishes the config again when the `config` bucket holds no snapshot or an older one
    # than the latest published (the bucket lost, or recreated empty), so a starting bidder is
    # not left not-ready until someone saves a change. Running bidders keep serving what they
    # hold, so half a minute is soon enough; a run with the bucket up to date is one key read
    # and one indexed query.
    "config-snapshot-restore": {
        "task": "campaigns.tasks.snapshot_restore",
        "schedule": schedule(timedelta(seconds=30)),
        "options": {"expires": 25},
    },
    # Copies the bidders' spend counters into PostgreSQL (and rebuilds lost ones from it);
    # a minute keeps the admin's figures and the budget-complete check close to live.
    "campaigns-spend-reconcile": {
        "task": "campaigns.tasks.spend_reconcile",
        "schedule": schedule(timedelta(seconds=60)),
        "options": {"expires": 55},
    },
    # Moves model rollouts along (validation, canary, judgement); soak periods are minutes,
    # so ten seconds keeps a decision close to its due time.
    "inference-rollouts": {
        "task": "inference.tasks.rollouts_advance",
        "schedule": schedule(timedelta(seconds=10)),
        "options": {"expires": 9},
    },
    # Hourly rollups of closed hours, plus the last few again for late events. Five minutes
    # puts a closed hour into the rollups soon after it ends (reports read raw events for the
    # hours not rolled up yet, so this bounds their cost, not their correctness); a run with
    # nothing new recomputes three hours, a small read.
    "analytics-rollups": {
        "task": "analytics.tasks.rollups_compute",
        "schedule": schedule(timedelta(minutes=5)),
        "options": {"expires": 270},
    },
    # Retention: the TTL kept at the setting, and months wholly past it dropped (the only
    # retention on servers without TTL). Hourly, because a run with nothing due is two small
    # system-table reads, and a month then outlives its retention by at most an hour.
    "analytics-retention": {
        "task": "analytics.tasks.retention_enforce",
        "schedule": schedule(timedelta(hours=1)),
        "options": {"expires": 3000},
    },
    # Scheduled reports: each active definition for its last closed period (a period closes
    # an hour after it ends, UTC). Hourly runs a newly closed period within the hour; a period
    # already run is a single lookup, and a failed one (ClickHouse down) is retried here.
    "analytics-reports": {
        "task": "analytics.tasks.reports_run_due",
        "schedule": schedule(timedelta(hours=1)),
        "options": {"expires": 3000},
    },
    # Loyalty's daily run: qualifying-period resets, tier downgrades, point expiry and
    # birthday rewards, all keyed by day or year, so a second run the same day does nothing.
    # 03:15 UTC, a quiet hour for retail; a worker back within the day still runs it.
    "loyalty-daily": {
        "task": "loyalty.tasks.members_maintain",
        "schedule": crontab(minute=15, hour=3),
        "options": {"expires": 20 * 3600},
    },
}

app = Celery("campaign_express")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_default_queue = QUEUE_DEFAULT
app.conf.beat_schedule = BEAT_SCHEDULE
app.autodiscover_tasks()
