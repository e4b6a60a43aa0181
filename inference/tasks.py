"""Registry tasks: thin, idempotent, by id."""

from __future__ import annotations

from celery import shared_task

from inference import services
from inference.models import ModelVersion


@shared_task(name="inference.tasks.rollout_advance", ignore_result=True)
def rollout_advance(rollout_id: int) -> str:
    return services.rollout_advance(rollout_id=rollout_id).stage


@shared_task(name="inference.tasks.rollouts_advance", ignore_result=True)
def rollouts_advance() -> int:
    return services.rollouts_advance()


@shared_task(name="inference.tasks.model_version_validate", ignore_result=True)
def model_version_validate(model_version_id: int) -> str:
    model_version = ModelVersion.objects.get(pk=model_version_id)
    return services.model_version_validate(model_version=model_version).status
