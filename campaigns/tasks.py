"""Campaign tasks: thin wrappers over services, idempotent, safe to run twice."""

from __future__ import annotations

import logging

from celery import shared_task

from campaign_express.backends.bus import BusUnavailable
from campaigns import services, snapshot, spend

logger = logging.getLogger(__name__)


@shared_task(name="campaigns.tasks.campaigns_advance", ignore_result=True)
def campaigns_advance() -> dict[str, int]:
    return services.campaigns_advance()


@shared_task(name="campaigns.tasks.snapshot_publish", ignore_result=True)
def snapshot_publish() -> int | None:
    """Publish the config snapshot if a request is pending. A bus that is down is logged, not
    raised: the rows stay unpublished and the beat entry calls this again in a few seconds."""
    try:
        return snapshot.snapshot_publish()
    except BusUnavailable as error:
        logger.warning("config snapshot not published, the bus is unavailable: %s", error)
        return None


@shared_task(name="campaigns.tasks.snapshot_restore", ignore_result=True)
def snapshot_restore() -> int | None:
    """Publish the config again if the bucket lost it (or holds an older one). A bus that is
    down is logged, not raised: the beat entry calls this again."""
    try:
        return snapshot.snapshot_restore()
    except BusUnavailable as error:
        logger.warning("config bucket not checked, the bus is unavailable: %s", error)
        return None


@shared_task(name="campaigns.tasks.spend_reconcile", ignore_result=True)
def spend_reconcile() -> dict[str, int]:
    return spend.spend_reconcile()
