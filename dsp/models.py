"""Partner DSPs the bidder routes bid requests to (when `CAMPAIGN_EXPRESS__DSP__ENABLED`)."""

from __future__ import annotations

from decimal import Decimal

from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

from campaigns import targeting
from campaigns.models import ENVIRONMENT_VARIABLE

FORMATS = ("banner", "video", "native", "audio")


def validate_formats(values: object) -> None:
    if not isinstance(values, list) or any(value not in FORMATS for value in values):
        raise ValidationError(f"Enter formats from: {', '.join(FORMATS)}.", code="invalid_value")


class DspPartner(models.Model):
    """A partner DSP. The credential is never stored here: ``credential_ref`` names the
    environment variable (or secret-store entry mounted as one) each bidder reads it from,
    so neither the database, the snapshot, the admin nor the API ever holds the secret."""

    class Version(models.TextChoices):
        V25 = "2.5", "OpenRTB 2.5"
        V26 = "2.6", "OpenRTB 2.6"

    name = models.CharField(max_length=200, unique=True)
    seat = models.CharField(max_length=100, unique=True,
                            help_text="The partner's buyer seat id (checked against wseat/bseat).")
    endpoint_url = models.URLField(max_length=500)
    openrtb_version = models.CharField(max_length=3, choices=Version.choices,
                                       default=Version.V26)
    timeout_ms = models.PositiveIntegerField(
        default=200, validators=[MinValueValidator(10), MaxValueValidator(5000)],
        help_text="At most this long per request; never beyond the exchange's tmax.")
    qps_limit = models.PositiveIntegerField(default=1000, validators=[MinValueValidator(1)],
                                            help_text="Requests per second, all bidders together.")
    margin = models.DecimalField(
        max_digits=5, decimal_places=4, default=Decimal(0),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal("0.9"))],
        help_text="Share of the partner's bid we keep (0.15 = 15%); never taken from deal bids.")
    formats = models.JSONField(default=list, blank=True, validators=[validate_formats],
                               help_text="Formats it wants; empty for all.")
    countries = models.JSONField(default=list, blank=True,
                                 validators=[targeting.validate_countries],
                                 help_text="ISO 3166-1 alpha-3; empty for all.")
    device_types = models.JSONField(default=list, blank=True,
                                    validators=[targeting.validate_device_types],
                                    help_text="Empty for all.")
    daily_spend_cap = models.DecimalField(max_digits=14, decimal_places=4, default=Decimal(0),
                                          validators=[MinValueValidator(Decimal(0))],
                                          help_text="Per UTC day in the currency; 0 for none.")
    currency = models.CharField(max_length=3, default="USD",
                                validators=[targeting.validate_currency])
    credential_ref = models.CharField(
        "credential variable", max_length=100, blank=True,
        validators=[RegexValidator(ENVIRONMENT_VARIABLE,
                                   "Name an environment variable: A-Z, 0-9 and _.")],
        help_text="Name of the environment variable holding the partner's bearer token "
                  "(never the token itself).")
    is_enabled = models.BooleanField(default=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "DSP partner"
        constraints = [
            models.CheckConstraint(condition=models.Q(margin__gte=0, margin__lt=1),
                                   name="dsp_partner_margin_range"),
        ]

    def __str__(self) -> str:
        return self.name
