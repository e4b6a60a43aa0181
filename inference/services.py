"""Registry writes: upload, validate, activate, retire, and rollouts that judge themselves.

Validation and rollouts run in the worker (Celery, or in-process in embedded mode). Bidders
hear of a version through `models.update` and the `models` key-value bucket; what they
report back (load status, per-version counters) comes through the store. Each rollout stage
change (canary start, promotion, roll-back, failure) is also a `model_rollout` analytics event,
so reports can line bidding figures up with the model that produced them.
"""

from __future__ import annotations

import statistics
import time
from datetime import datetime, timedelta
from typing import Any

import msgspec
import numpy as np
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.core.files.base import ContentFile
from django.db import transaction
from django.utils import timezone

from analytics.emit import events_publish
from analytics.events import Event, EventType
from campaign_express.errors import DomainError
from campaign_express.platform import bus_call, store_call
from campaign_express.tasks import enqueue_on_commit
from inference.modelfile import (
    DEFAULT_MODEL_PATH,
    ModelFileError,
    check_schema,
    default_model_manifest,
    golden_check,
    inspect_model,
)
from inference.models import ModelVersion, Rollout
from inference.providers import ModelSource, create_provider
from inference.runtime import (
    MODELS_BUCKET,
    UPDATES_SUBJECT,
    ModelUpdate,
    kv_key,
    kv_value,
    stats_key,
)

Status = ModelVersion.Status
Stage = Rollout.Stage
LATENCY_BATCHES = (1, 8, 32)
LATENCY_RUNS = 30


def _object_name(name: str, version: str) -> str:
    return f"{name}/{version}"


@transaction.atomic
def model_version_upload(*, actor: AbstractBaseUser | None, name: str, version: str,
                         data: bytes, filename: str = "", description: str = "") -> ModelVersion:
    """Register an ONNX file: its identity is read and checked before anything is stored."""
    if ModelVersion.objects.filter(name=name, version=version).exists():
        raise ValidationError({"version": f"{name} {version} already exists."})
    try:
        info = inspect_model(data)
    except ModelFileError as error:
        raise ValidationError({"file": str(error)}) from error
    model_version = ModelVersion(name=name, version=version, description=description,
                                 sha256=info.sha256, size_bytes=len(data),
                                 schema_version=info.schema_version, created_by=actor)
    model_version.full_clean(exclude=["file", "location", "sha256"])
    model_version.file.save(filename or f"{name}-{version}.onnx", ContentFile(data), save=False)
    if settings.NATS_URL:
        object_name = _object_name(name, version)
        bus_call(lambda bus: bus.object_put(MODELS_BUCKET, object_name, data))
        model_version.location = f"objectstore://{MODELS_BUCKET}/{object_name}"
    else:
        # Embedded mode: the in-process object store does not outlive the process; the
        # uploaded copy on local media storage does.
        model_version.location = f"file://{model_version.file.path}"
    model_version.save()
    return model_version


@transaction.atomic
def model_version_register(*, actor: AbstractBaseUser | None, name: str, version: str,
                           location: str, description: str = "") -> ModelVersion:
    """Register a file already on the model volume (``file://``) without copying it."""
    if not location.startswith("file://"):
        raise ValidationError({"location": "Give a file:// path on the model volume."})
    path = location.removeprefix("file://")
    try:
        with open(path, "rb") as handle:
            data = handle.read()
        info = inspect_model(data)
    except (OSError, ModelFileError) as error:
        raise ValidationError({"location": str(error)}) from error
    model_version, _ = ModelVersion.objects.get_or_create(
        name=name, version=version,
        defaults={"location": location, "sha256": info.sha256, "size_bytes": len(data),
                  "schema_version": info.schema_version, "description": description,
                  "created_by": actor})
    return model_version


def _read(model_version: ModelVersion) -> bytes:
    if model_version.file:
        with model_version.file.open("rb") as handle:
            return handle.read()
    with open(model_version.location.removeprefix("file://"), "rb") as handle:
        return handle.read()


def model_version_validate(*, model_version: ModelVersion) -> ModelVersion:
    """Load with the CPU provider, check schema and golden inputs, measure latency."""
    results: dict[str, Any] = {"validated_at": timezone.now().isoformat()}
    try:
        data = _read(model_version)
        info = inspect_model(data)
        if info.sha256 != model_version.sha256:
            raise ModelFileError(f"the stored file's sha256 is {info.sha256}, registered "
                                 f"{model_version.sha256}")
        check_schema(info)
        provider = create_provider("cpu", settings.CONFIG)
        loaded = provider.load(ModelSource(data, model_version.name, model_version.version))
        try:
            loaded.warm_up()
            results["loads"] = True
            results["golden_max_error"] = golden_check(loaded.infer, info)
            results["latency_us"] = _latency(loaded.infer, width=info.golden_inputs.shape[1],
                                             max_batch=loaded.max_batch)
        finally:
            loaded.close()
    except Exception as error:  # noqa: BLE001 - any failure is the version's validation result
        results["error"] = f"{type(error).__name__}: {error}"
        model_version.validation = results
        model_version.status = Status.FAILED
        model_version.failure_reason = results["error"]
        model_version.save(update_fields=["validation", "status", "failure_reason"])
        return model_version
    model_version.validation = results
    if model_version.status in (Status.UPLOADED, Status.FAILED):
        model_version.status = Status.VALIDATED
        model_version.failure_reason = ""
    model_version.save(update_fields=["validation", "status", "failure_reason"])
    return model_version


def _latency(infer, *, width: int, max_batch: int) -> dict[str, dict[str, float]]:
    """Median and worst of LATENCY_RUNS calls per batch size, in microseconds (measured)."""
    measured = {}
    for size in (size for size in LATENCY_BATCHES if size <= max_batch):
        batch = np.zeros((size, width), dtype=np.float32)
        samples = []
        for _ in range(LATENCY_RUNS):
            started = time.perf_counter()
            infer(batch)
            samples.append((time.perf_counter() - started) * 1_000_000)
        measured[str(size)] = {"p50": round(statistics.median(samples), 1),
                               "max": round(max(samples), 1)}
    return measured


def _update(model_version: ModelVersion, share: float) -> ModelUpdate:
    return ModelUpdate(name=model_version.name, version=model_version.version,
                       location=model_version.location, sha256=model_version.sha256,
                       share=share)


def _publish(update: ModelUpdate, *, role: str) -> None:
    """Tell bidders: the key-value bucket (for restarts) first, then the live message."""

    async def publish(bus) -> None:
        await bus.kv_put(MODELS_BUCKET, kv_key(update.name, role),
                         kv_value(update) if update.share > 0 else b"")
        await bus.publish(UPDATES_SUBJECT, msgspec.json.encode(update))

    bus_call(publish)


def model_version_activate(*, model_version: ModelVersion) -> ModelVersion:
    """Make this version the one every bidder serves (hot reload)."""
    if model_version.status not in (Status.VALIDATED, Status.CANARY, Status.ACTIVE,
                                    Status.RETIRED):
        raise DomainError(f"Only a validated version can be activated; {model_version} is "
                          f"{model_version.status}.", field="status", status=409,
                          code="not_validated")
    with transaction.atomic():
        previous = ModelVersion.objects.select_for_update().filter(
            name=model_version.name, status=Status.ACTIVE).exclude(pk=model_version.pk)
        previous.update(status=Status.RETIRED)
        model_version.status = Status.ACTIVE
        model_version.activated_at = timezone.now()
        model_version.save(update_fields=["status", "activated_at"])
        transaction.on_commit(lambda: _publish(_update(model_version, 1.0), role="active"))
    return model_version


def model_version_retire(*, model_version: ModelVersion) -> ModelVersion:
    if model_version.status == Status.ACTIVE:
        raise DomainError("The active version serves every bidder; activate another one "
                          "first.", field="status", status=409, code="is_active")
    model_version.status = Status.RETIRED
    model_version.save(update_fields=["status"])
    return model_version


# --- rollouts --------------------------------------------------------------------------------

def rollout_start(*, model_version: ModelVersion, actor: AbstractBaseUser | None,
                  canary_share: float = 0.1, soak_seconds: int = 600, min_requests: int = 500,
                  max_error_rate: float = 0.01, max_latency_ratio: float = 1.5) -> Rollout:
    if model_version.status == Status.ACTIVE:
        raise DomainError(f"{model_version} is already active.", field="status", status=409,
                          code="is_active")
    active = ModelVersion.objects.filter(name=model_version.name, status=Status.ACTIVE).first()
    if active is None:
        raise DomainError(f"{model_version.name} has no active version to compare a canary "
                          "with; activate one directly.", field="status", status=409,
                          code="no_active_version")
    rollout = Rollout(model_version=model_version, canary_share=canary_share,
                      soak_seconds=soak_seconds, min_requests=min_requests,
                      max_error_rate=max_error_rate, max_latency_ratio=max_latency_ratio,
                      baseline_version=active.version, started_by=actor)
    rollout.full_clean(exclude=["model_version"])
    if Rollout.objects.filter(model_version=model_version,
                              stage__in=[Stage.VALIDATING, Stage.CANARY]).exists():
        raise DomainError(f"{model_version} is already rolling out.", field="model_version",
                          status=409, code="rollout_running")
    with transaction.atomic():
        rollout.save()
        enqueue_on_commit("inference.tasks.rollout_advance", rollout_id=rollout.pk)
    return rollout


def _counters(name: str, version: str) -> dict[str, int]:
    async def read(store) -> list[bytes | None]:
        return await store.get_many([stats_key(name, version, counter)
                                     for counter in ("requests", "errors", "latency_us")])

    values = store_call(read)
    return {counter: int(value or 0)
            for counter, value in zip(("requests", "errors", "latency_us"), values, strict=True)}


def _delta(now: dict[str, int], then: dict[str, int]) -> dict[str, int]:
    return {counter: now[counter] - then.get(counter, 0) for counter in now}


def _mean_latency(counters: dict[str, int]) -> float | None:
    return counters["latency_us"] / counters["requests"] if counters["requests"] else None


def rollout_advance(*, rollout_id: int, now: datetime | None = None) -> Rollout:
    """One step of a rollout; idempotent, run by the scheduler until the rollout finishes."""
    now = now or timezone.now()
    rollout = Rollout.objects.select_related("model_version").get(pk=rollout_id)
    if rollout.stage in Rollout.FINISHED:
        return rollout
    model_version = rollout.model_version
    if rollout.stage == Stage.VALIDATING:
        model_version = model_version_validate(model_version=model_version)
        if model_version.status == Status.FAILED:
            return _finish(rollout, Stage.FAILED, now, {"reason": model_version.failure_reason})
        name = model_version.name
        rollout.baseline_counters = {
            "canary": _counters(name, model_version.version),
            "active": _counters(name, rollout.baseline_version)}
        rollout.stage, rollout.canary_started_at = Stage.CANARY, now
        rollout.save(update_fields=["stage", "canary_started_at", "baseline_counters"])
        model_version.status = Status.CANARY
        model_version.save(update_fields=["status"])
        _publish(_update(model_version, rollout.canary_share), role="canary")
        _rollout_event(rollout, now)
        return rollout

    if now < rollout.canary_started_at + timedelta(seconds=rollout.soak_seconds):
        return rollout
    canary = _delta(_counters(model_version.name, model_version.version),
                    rollout.baseline_counters.get("canary", {}))
    active = _delta(_counters(model_version.name, rollout.baseline_version),
                    rollout.baseline_counters.get("active", {}))
    decision: dict[str, Any] = {"canary": canary, "active": active}
    if canary["requests"] < rollout.min_requests:
        if now < rollout.canary_started_at + timedelta(seconds=3 * rollout.soak_seconds):
            return rollout  # not enough traffic yet: soak longer
        return _roll_back(rollout, now, {**decision, "reason": (
            f"only {canary['requests']} canary requests in three soak periods; "
            f"{rollout.min_requests} needed")})
    error_rate = canary["errors"] / canary["requests"]
    decision["canary_error_rate"] = error_rate
    if error_rate > rollout.max_error_rate:
        return _roll_back(rollout, now, {**decision, "reason": (
            f"canary error rate {error_rate:.4f} above {rollout.max_error_rate}")})
    canary_latency, active_latency = _mean_latency(canary), _mean_latency(active)
    decision["canary_mean_latency_us"] = canary_latency
    decision["active_mean_latency_us"] = active_latency
    if active_latency and canary_latency > active_latency * rollout.max_latency_ratio:
        return _roll_back(rollout, now, {**decision, "reason": (
            f"canary mean latency {canary_latency:.0f} µs above "
            f"{rollout.max_latency_ratio} × active {active_latency:.0f} µs")})
    model_version_activate(model_version=model_version)
    _publish(_update(model_version, 0.0), role="canary")
    return _finish(rollout, Stage.PROMOTED, now, {**decision, "reason": "canary healthy"})


def _roll_back(rollout: Rollout, now: datetime, decision: dict[str, Any]) -> Rollout:
    model_version = rollout.model_version
    _publish(_update(model_version, 0.0), role="canary")
    model_version.status = Status.FAILED
    model_version.failure_reason = f"rolled back: {decision['reason']}"
    model_version.save(update_fields=["status", "failure_reason"])
    return _finish(rollout, Stage.ROLLED_BACK, now, decision)


def _finish(rollout: Rollout, stage: str, now: datetime, decision: dict[str, Any]) -> Rollout:
    rollout.stage, rollout.finished_at, rollout.decision = stage, now, decision
    rollout.save(update_fields=["stage", "finished_at", "decision"])
    _rollout_event(rollout, now)
    return rollout


def _rollout_event(rollout: Rollout, now: datetime) -> None:
    """The stage the rollout just reached, as a `model_rollout` event (`reason` is the stage);
    a bus that is away costs the event, never the rollout."""
    model_version = rollout.model_version
    events_publish([Event(
        event_type=EventType.MODEL_ROLLOUT,
        timestamp=now if timezone.is_aware(now) else timezone.now(), node=settings.CONFIG.node_id,
        reason=str(rollout.stage),
        attributes={"rollout": str(rollout.pk), "model": model_version.name,
                    "version": model_version.version,
                    "baseline_version": rollout.baseline_version,
                    "canary_share": str(rollout.canary_share),
                    "decision": str(rollout.decision.get("reason", ""))})])


def rollouts_advance() -> int:
    running = Rollout.objects.exclude(stage__in=Rollout.FINISHED).values_list("pk", flat=True)
    for rollout_id in list(running):
        rollout_advance(rollout_id=rollout_id)
    return len(running)


def model_default_register() -> ModelVersion:
    """Register the shipped model as the active version if the registry has none yet."""
    manifest = default_model_manifest()
    existing = ModelVersion.objects.filter(name=manifest["name"]).order_by("-created_at").first()
    if existing is not None:
        return existing
    model_version = model_version_register(actor=None, name=manifest["name"],
                                           version=str(manifest["version"]),
                                           location=f"file://{DEFAULT_MODEL_PATH}",
                                           description="The shipped default model.")
    model_version_validate(model_version=model_version)
    return model_version_activate(model_version=model_version)
