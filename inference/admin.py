"""Model registry in the admin: upload, validate, activate, roll out, and watch rollouts."""

from __future__ import annotations

import json
from datetime import timedelta

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.html import format_html

from campaign_express.errors import DomainError
from inference import selectors, services
from inference.modelfile import ModelFileError, inspect_model
from inference.models import ModelVersion, Rollout


class ModelUploadForm(forms.ModelForm):
    upload = forms.FileField(label="ONNX file", help_text="Validated in the background.")

    class Meta:
        model = ModelVersion
        fields = ["name", "version", "description"]

    def clean_upload(self):
        upload = self.cleaned_data["upload"]
        try:
            inspect_model(upload.read())
        except ModelFileError as error:
            raise ValidationError(str(error)) from error
        upload.seek(0)
        return upload


def _pretty(value: object) -> str:
    return format_html("<pre style='margin:0'>{}</pre>", json.dumps(value, indent=2))


def _model_action(label: str, run):
    def action(modeladmin, request, queryset):
        for model_version in queryset:
            try:
                result = run(model_version, request)
                modeladmin.message_user(request, f"{model_version}: {result}", messages.SUCCESS)
            except (DomainError, ValidationError) as error:
                text = error.message if isinstance(error, DomainError) else "; ".join(
                    error.messages)
                modeladmin.message_user(request, f"{model_version}: {text}", messages.ERROR)

    action.__name__ = label.lower().replace(" ", "_")
    return admin.action(description=f"{label} selected versions")(action)


@admin.register(ModelVersion)
class ModelVersionAdmin(admin.ModelAdmin):
    list_display = ["name", "version", "status", "schema_version", "size_bytes", "created_at",
                    "activated_at"]
    list_filter = ["name", "status"]
    search_fields = ["name", "version", "description"]
    readonly_fields = ["status", "failure_reason", "location", "sha256", "size_bytes",
                       "schema_version", "validation_results", "bidders", "created_by",
                       "created_at", "activated_at"]
    actions = [
        _model_action("Validate", lambda version, request: services.model_version_validate(
            model_version=version).status),
        _model_action("Activate", lambda version, request: services.model_version_activate(
            model_version=version).status),
        _model_action("Start rollout of", lambda version, request: services.rollout_start(
            model_version=version, actor=request.user).stage),
        _model_action("Retire", lambda version, request: services.model_version_retire(
            model_version=version).status),
    ]

    def has_delete_permission(self, request, obj=None):
        # Bidders serve the active version and the canary; they must never lose the file.
        if obj is not None and obj.status in (ModelVersion.Status.ACTIVE,
                                              ModelVersion.Status.CANARY):
            return False
        return super().has_delete_permission(request, obj)

    def get_form(self, request, obj=None, change=False, **kwargs):
        if obj is None:
            kwargs["form"] = ModelUploadForm
        return super().get_form(request, obj, change, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["name", "version", "upload", "description"]
        return ["name", "version", "description", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "name", "version"] if obj else []

    @admin.display(description="validation")
    def validation_results(self, model_version: ModelVersion) -> str:
        return _pretty(model_version.validation) if model_version.validation else "—"

    @admin.display(description="on the bidders")
    def bidders(self, model_version: ModelVersion) -> str:
        return _pretty(selectors.model_version_runtime_state(model_version=model_version))

    def save_model(self, request, obj, form, change):
        if change:
            obj.save(update_fields=["description"])
            return
        upload = form.cleaned_data["upload"]
        created = services.model_version_upload(
            actor=request.user, name=obj.name, version=obj.version, data=upload.read(),
            filename=upload.name, description=obj.description)
        services.model_version_validate(model_version=created)
        obj.pk = created.pk


@admin.register(Rollout)
class RolloutAdmin(admin.ModelAdmin):
    list_display = ["model_version", "stage", "canary_share", "baseline_version", "progress",
                    "started_at", "finished_at"]
    list_filter = ["stage"]
    readonly_fields = ["model_version", "stage", "canary_share", "soak_seconds",
                       "min_requests", "max_error_rate", "max_latency_ratio",
                       "baseline_version", "progress", "canary_now", "decision_details",
                       "started_by", "started_at", "canary_started_at", "finished_at"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="where it stands")
    def progress(self, rollout: Rollout) -> str:
        if rollout.stage in Rollout.FINISHED:
            return f"{rollout.get_stage_display()}: {rollout.decision.get('reason', '')}"
        if rollout.stage == Rollout.Stage.VALIDATING:
            return "validating"
        judged_at = rollout.canary_started_at + timedelta(seconds=rollout.soak_seconds)
        remaining = (judged_at - timezone.now()).total_seconds()
        if remaining > 0:
            return f"canary at {rollout.canary_share:.1%}, judged in {remaining:.0f} s"
        return f"canary at {rollout.canary_share:.1%}, waiting for traffic to judge"

    @admin.display(description="canary on the bidders")
    def canary_now(self, rollout: Rollout) -> str:
        return _pretty(selectors.model_version_runtime_state(
            model_version=rollout.model_version))

    @admin.display(description="decision")
    def decision_details(self, rollout: Rollout) -> str:
        return _pretty(rollout.decision) if rollout.decision else "—"
