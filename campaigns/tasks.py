"""Campaign tasks: thin wrappers over services, idempotent, safe to run twice."""

from __future__ import annotations

from celery import shared_task

from campaigns import services


@shared_task(name="campaigns.tasks.campaigns_advance", ignore_result=True)
def campaigns_advance() -> dict[str, int]:
    return services.campaigns_advance()
