"""Scheduled reports: what to report to whom and how often, and each period's run.

A run is unique per (definition, period): running a period again finds the same row, so a
retried or duplicated task never makes a second file or a second email.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import models
from django.db.models import F, Q

from analytics.reports import GroupBy, ReportKind


def recipients_parse(text: str) -> list[str]:
    """Addresses separated by commas, semicolons or new lines; order kept, duplicates once."""
    addresses: list[str] = []
    for part in text.replace(";", ",").replace("\n", ",").split(","):
        address = part.strip()
        if address and address not in addresses:
            addresses.append(address)
    return addresses


def validate_recipients(text: str) -> None:
    invalid = []
    for address in recipients_parse(text):
        try:
            validate_email(address)
        except ValidationError:
            invalid.append(address)
    if invalid:
        raise ValidationError(f"Not an email address: {', '.join(invalid)}.")


class ReportDefinition(models.Model):
    class Kind(models.TextChoices):
        PERFORMANCE = ReportKind.PERFORMANCE.value, "Campaign performance"
        NO_BID_REASONS = ReportKind.NO_BID_REASONS.value, "No-bid reasons"
        LOYALTY = ReportKind.LOYALTY.value, "Loyalty summary"
        DSP = ReportKind.DSP.value, "DSP summary"

    class Grouping(models.TextChoices):
        ADVERTISER = GroupBy.ADVERTISER.value
        CAMPAIGN = GroupBy.CAMPAIGN.value
        CREATIVE = GroupBy.CREATIVE.value
        EXCHANGE = GroupBy.EXCHANGE.value

    class Cadence(models.TextChoices):
        DAILY = "daily", "Daily (yesterday)"
        WEEKLY = "weekly", "Weekly (last Monday to Sunday)"
        MONTHLY = "monthly", "Monthly (last calendar month)"

    name = models.CharField(max_length=200)
    kind = models.CharField(max_length=30, choices=Kind.choices, default=Kind.PERFORMANCE)
    advertisers = models.ManyToManyField(
        "campaigns.Advertiser", blank=True, related_name="report_definitions",
        help_text="Empty: every advertiser the owner may see (all of them for ops).")
    grouping = models.CharField(max_length=20, choices=Grouping.choices,
                                default=Grouping.CAMPAIGN)
    cadence = models.CharField(max_length=10, choices=Cadence.choices, default=Cadence.DAILY)
    recipients = models.TextField(blank=True, validators=[validate_recipients],
                                  help_text="Email addresses, one per line or comma-separated.")
    is_active = models.BooleanField(default=True)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                              related_name="report_definitions")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=[kind.value for kind in ReportKind]),
                                   name="report_definition_kind_valid"),
            models.CheckConstraint(condition=Q(cadence__in=["daily", "weekly", "monthly"]),
                                   name="report_definition_cadence_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    def recipient_list(self) -> list[str]:
        return recipients_parse(self.recipients)


class ReportRun(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    definition = models.ForeignKey(ReportDefinition, on_delete=models.CASCADE,
                                   related_name="runs")
    period_start = models.DateField(help_text="First day of the period (UTC).")
    period_end = models.DateField(help_text="Last day of the period (UTC), included.")
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PENDING)
    csv_file = models.FileField(upload_to="reports/%Y/%m/", blank=True)
    summary_html = models.TextField(blank=True)
    row_count = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    emailed_at = models.DateTimeField(null=True, blank=True,
                                      help_text="When the result was sent to the recipients.")

    class Meta:
        ordering = ["-period_start", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["definition", "period_start", "period_end"],
                                    name="report_run_one_per_period"),
            models.CheckConstraint(condition=Q(period_end__gte=F("period_start")),
                                   name="report_run_period_ordered"),
        ]

    def __str__(self) -> str:
        return f"{self.definition} {self.period_start}..{self.period_end}"
