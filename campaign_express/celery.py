"""The Celery app and the beat schedule, the one place queues and cadences are named.

Start a worker with beat: ``celery -A campaign_express.celery worker --beat``. Without
CELERY_BROKER_URL the same schedule runs inside the platform process
(`campaign_express.tasks.InProcessRunner`).
"""

from __future__ import annotations

import os
from datetime import timedelta

from celery import Celery
from celery.schedules import schedule

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
}

app = Celery("campaign_express")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_default_queue = QUEUE_DEFAULT
app.conf.beat_schedule = BEAT_SCHEDULE
app.autodiscover_tasks()
