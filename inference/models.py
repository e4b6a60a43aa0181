"""The model registry: model versions and their rollouts (Django; the runtime never imports it)."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q


class ModelVersion(models.Model):
    class Status(models.TextChoices):
        UPLOADED = "uploaded"
        VALIDATED = "validated"
        CANARY = "canary"
        ACTIVE = "active"
        RETIRED = "retired"
        FAILED = "failed"

    name = models.CharField(max_length=100, default="offer-scoring")
    version = models.CharField(max_length=50)
    file = models.FileField(upload_to="models/", blank=True,
                            help_text="The uploaded ONNX file (a copy; bidders fetch it from "
                                      "the location).")
    location = models.CharField(max_length=500, editable=False,
                                help_text="Where bidders fetch it: objectstore://models/... "
                                          "or file:// on the model volume.")
    sha256 = models.CharField(max_length=64, editable=False)
    size_bytes = models.PositiveIntegerField(default=0, editable=False)
    schema_version = models.PositiveIntegerField(null=True, editable=False,
                                                 help_text="Feature schema the model expects.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.UPLOADED,
                              editable=False)
    failure_reason = models.TextField(blank=True, editable=False)
    validation = models.JSONField(default=dict, blank=True, editable=False,
                                  help_text="Load, golden inputs and latency results.")
    description = models.TextField(blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, editable=False, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    activated_at = models.DateTimeField(null=True, editable=False)

    class Meta:
        ordering = ["name", "-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["name", "version"], name="model_version_unique"),
            # One active version per model name: bidders must never be told two.
            models.UniqueConstraint(fields=["name"], condition=Q(status="active"),
                                    name="model_one_active_version"),
        ]

    def __str__(self) -> str:
        return f"{self.name} {self.version}"


class Rollout(models.Model):
    class Stage(models.TextChoices):
        VALIDATING = "validating"
        CANARY = "canary"
        PROMOTED = "promoted"
        ROLLED_BACK = "rolled_back", "Rolled back"
        FAILED = "failed"

    FINISHED = (Stage.PROMOTED, Stage.ROLLED_BACK, Stage.FAILED)

    model_version = models.ForeignKey(ModelVersion, on_delete=models.CASCADE,
                                      related_name="rollouts")
    stage = models.CharField(max_length=20, choices=Stage.choices, default=Stage.VALIDATING,
                             editable=False)
    canary_share = models.FloatField(default=0.1, validators=[MinValueValidator(0.001),
                                                              MaxValueValidator(0.5)],
                                     help_text="Share of requests the canary serves.")
    soak_seconds = models.PositiveIntegerField(default=600,
                                               help_text="How long the canary serves before "
                                                         "it is judged.")
    min_requests = models.PositiveIntegerField(default=500,
                                               help_text="Canary requests needed to judge.")
    max_error_rate = models.FloatField(default=0.01, validators=[MinValueValidator(0)],
                                       help_text="Highest share of failed canary requests.")
    max_latency_ratio = models.FloatField(default=1.5, validators=[MinValueValidator(1)],
                                          help_text="Highest canary / active mean latency.")
    baseline_version = models.CharField(max_length=50, blank=True, editable=False)
    baseline_counters = models.JSONField(default=dict, blank=True, editable=False)
    decision = models.JSONField(default=dict, blank=True, editable=False)
    started_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, editable=False, related_name="+")
    started_at = models.DateTimeField(auto_now_add=True)
    canary_started_at = models.DateTimeField(null=True, editable=False)
    finished_at = models.DateTimeField(null=True, editable=False)

    class Meta:
        ordering = ["-started_at", "-id"]
        constraints = [
            # One rollout at a time per model version.
            models.UniqueConstraint(fields=["model_version"],
                                    condition=Q(stage__in=["validating", "canary"]),
                                    name="rollout_one_running_per_version"),
        ]

    def __str__(self) -> str:
        return f"rollout of {self.model_version} ({self.stage})"
