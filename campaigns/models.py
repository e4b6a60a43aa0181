"""Advertisers, campaigns, creatives, exchanges, currency rates, the audit log and the config
snapshot outbox.

Rules live in three places on purpose: `clean()` names the field a rule fails on, the
database constraints hold the same rules against any other writer, and the services
(`campaigns.services`) own the workflow. Nothing here saves side effects.
"""

from __future__ import annotations

import contextlib
from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import FileExtensionValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

from bidding.snapshot import PRICE_DECRYPTION_HOOKS
from campaigns import targeting

MONEY = {"max_digits": 14, "decimal_places": 4}
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "gif", "webp")
VIDEO_EXTENSIONS = ("mp4", "webm", "mov")
AUDIO_EXTENSIONS = ("mp3", "ogg", "m4a", "wav")
ENVIRONMENT_VARIABLE = r"^[A-Z_][A-Z0-9_]*$"


class Advertiser(models.Model):
    name = models.CharField(max_length=200, unique=True)
    domain = models.CharField(max_length=253, blank=True,
                              help_text="The advertiser's own domain, e.g. example.com.")
    time_zone = models.CharField(max_length=64, default="UTC",
                                 validators=[targeting.validate_time_zone],
                                 help_text="Dayparts of this advertiser's campaigns use it.")
    currency = models.CharField(max_length=3, default="USD",
                                validators=[targeting.validate_currency])
    marketers = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True,
                                       related_name="advertisers",
                                       help_text="Marketers who manage this advertiser.")
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        permissions = [("access_all_advertisers", "Can see every advertiser's campaigns")]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.domain:
            self.domain = self.domain.strip().lower()
            try:
                targeting.validate_domains([self.domain])
            except ValidationError as error:
                raise ValidationError({"domain": error.messages}) from None


class Campaign(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        IN_REVIEW = "in_review", "In review"
        APPROVED = "approved"
        REJECTED = "rejected"
        ACTIVE = "active"
        PAUSED = "paused"
        COMPLETED = "completed"
        ARCHIVED = "archived"

    class Pacing(models.TextChoices):
        EVEN = "even", "Even (spread the daily budget over the day)"
        ACCELERATED = "accelerated", "Accelerated (spend as fast as opportunities allow)"

    advertiser = models.ForeignKey(Advertiser, on_delete=models.PROTECT,
                                   related_name="campaigns")
    name = models.CharField(max_length=200)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.DRAFT,
                              editable=False)

    start_at = models.DateTimeField()
    end_at = models.DateTimeField()
    dayparts = models.JSONField(default=dict, blank=True,
                                validators=[targeting.validate_dayparts],
                                help_text="Weekday to hours in the advertiser's time zone; "
                                          "empty runs at all hours.")

    currency = models.CharField(max_length=3, default="USD",
                                validators=[targeting.validate_currency])
    total_budget = models.DecimalField(**MONEY, validators=[MinValueValidator(Decimal(0))])
    daily_budget = models.DecimalField(**MONEY, validators=[MinValueValidator(Decimal(0))])
    spent = models.DecimalField(**MONEY, default=Decimal(0), editable=False,
                                help_text="Spend reconciled from billing notices.")
    pacing = models.CharField(max_length=20, choices=Pacing.choices, default=Pacing.EVEN)
    base_bid_cpm = models.DecimalField(**MONEY, validators=[MinValueValidator(Decimal(0))])
    max_bid_cpm = models.DecimalField(**MONEY, validators=[MinValueValidator(Decimal(0))])

    frequency_cap_hour = models.PositiveIntegerField(null=True, blank=True)
    frequency_cap_day = models.PositiveIntegerField(null=True, blank=True)
    frequency_cap_lifetime = models.PositiveIntegerField(null=True, blank=True)

    countries = models.JSONField(default=list, blank=True,
                                 validators=[targeting.validate_countries])
    regions = models.JSONField(default=list, blank=True, validators=[targeting.validate_regions])
    device_types = models.JSONField(default=list, blank=True,
                                    validators=[targeting.validate_device_types])
    operating_systems = models.JSONField(default=list, blank=True,
                                         validators=[targeting.validate_operating_systems])
    site_domains_allow = models.JSONField(default=list, blank=True,
                                          validators=[targeting.validate_domains])
    site_domains_block = models.JSONField(default=list, blank=True,
                                          validators=[targeting.validate_domains])
    app_bundles_allow = models.JSONField(default=list, blank=True,
                                         validators=[targeting.validate_bundles])
    app_bundles_block = models.JSONField(default=list, blank=True,
                                         validators=[targeting.validate_bundles])
    categories = models.JSONField(default=list, blank=True,
                                  validators=[targeting.validate_categories],
                                  help_text="IAB content categories of the site or app.")
    segments = models.JSONField(default=list, blank=True, validators=[targeting.validate_tokens])
    loyalty_tiers = models.JSONField(default=list, blank=True,
                                     validators=[targeting.validate_tokens],
                                     help_text="Tier names of the advertiser's loyalty program.")
    deal_ids = models.JSONField(default=list, blank=True, validators=[targeting.validate_tokens])

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                   related_name="+", editable=False)
    submitted_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                     related_name="+", null=True, editable=False)
    approved_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                    related_name="+", null=True, editable=False)
    approved_at = models.DateTimeField(null=True, editable=False)
    review_note = models.TextField(blank=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    # Fields whose change sends an approved or running campaign back to review.
    REVIEWED_FIELDS = (
        "total_budget", "daily_budget", "currency", "base_bid_cpm", "max_bid_cpm",
        "countries", "regions", "device_types", "operating_systems", "site_domains_allow",
        "site_domains_block", "app_bundles_allow", "app_bundles_block", "categories",
        "segments", "loyalty_tiers", "deal_ids",
    )
    TARGETING_FIELDS = REVIEWED_FIELDS[5:]

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [("approve_campaign", "Can approve or reject campaigns")]
        indexes = [models.Index(fields=["status", "end_at"])]
        constraints = [
            models.CheckConstraint(condition=Q(total_budget__gte=0) & Q(daily_budget__gte=0),
                                   name="campaign_budget_not_negative"),
            models.CheckConstraint(condition=Q(daily_budget__lte=F("total_budget")),
                                   name="campaign_daily_within_total"),
            models.CheckConstraint(condition=Q(end_at__gt=F("start_at")),
                                   name="campaign_ends_after_start"),
            models.CheckConstraint(condition=Q(max_bid_cpm__gte=F("base_bid_cpm")),
                                   name="campaign_max_bid_at_least_base"),
            models.CheckConstraint(condition=Q(approved_by__isnull=True)
                                   | ~Q(approved_by=F("created_by")),
                                   name="campaign_approver_not_author"),
            models.CheckConstraint(condition=Q(status__in=["draft", "in_review", "approved",
                                                          "rejected", "active", "paused",
                                                          "completed", "archived"]),
                                   name="campaign_status_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if (self.total_budget is not None and self.daily_budget is not None
                and self.daily_budget > self.total_budget):
            errors["daily_budget"] = "The daily budget cannot exceed the total budget."
        if self.start_at and self.end_at and self.end_at <= self.start_at:
            errors["end_at"] = "The end must be after the start."
        if (self.base_bid_cpm is not None and self.max_bid_cpm is not None
                and self.max_bid_cpm < self.base_bid_cpm):
            errors["max_bid_cpm"] = "The maximum bid must be at least the base bid."
        caps = [("frequency_cap_hour", self.frequency_cap_hour),
                ("frequency_cap_day", self.frequency_cap_day),
                ("frequency_cap_lifetime", self.frequency_cap_lifetime)]
        for (_, shorter), (name, longer) in zip(caps, caps[1:], strict=False):
            if shorter is not None and longer is not None and longer < shorter:
                errors[name] = "A cap over a longer period cannot be lower than a shorter one."
        tiers_error = self._loyalty_tiers_error()
        if tiers_error:
            errors["loyalty_tiers"] = tiers_error
        if errors:
            raise ValidationError(errors)

    def _loyalty_tiers_error(self) -> str:
        """Targeted tiers must be tier names of the advertiser's loyalty program."""
        if not self.loyalty_tiers or not isinstance(self.loyalty_tiers, list) or (
                self.advertiser_id is None):
            return ""
        from loyalty.selectors import program_tier_names  # loyalty builds on campaigns

        names = program_tier_names(advertiser_id=self.advertiser_id)
        if names is None:
            return "The advertiser has no loyalty program, so there are no tiers to target."
        unknown = [tier for tier in self.loyalty_tiers if tier not in names]
        if unknown:
            return (f"Not a tier of the advertiser's loyalty program: "
                    f"{', '.join(map(str, unknown))} (its tiers: {', '.join(names)}).")
        return ""


class Creative(models.Model):
    class Format(models.TextChoices):
        BANNER = "banner"
        VIDEO = "video"
        NATIVE = "native"
        AUDIO = "audio"

    class Approval(models.TextChoices):
        PENDING = "pending"
        APPROVED = "approved"
        REJECTED = "rejected"

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="creatives")
    name = models.CharField(max_length=200)
    format = models.CharField(max_length=10, choices=Format.choices)
    sizes = models.JSONField(default=list, blank=True, validators=[targeting.validate_sizes],
                             help_text="WIDTHxHEIGHT, e.g. 300x250 (banner and video).")
    asset = models.FileField(
        upload_to="creatives/%Y/%m/", blank=True,
        validators=[FileExtensionValidator(IMAGE_EXTENSIONS + VIDEO_EXTENSIONS
                                           + AUDIO_EXTENSIONS)],
        help_text="An uploaded image, video or audio file; or give third-party markup instead.")
    markup = models.TextField(blank=True,
                              help_text="Third-party ad markup: HTML tag, VAST XML or native JSON.")
    click_url = models.URLField(max_length=2000, blank=True)
    adomain = models.CharField("landing domain", max_length=253,
                               help_text="Advertiser domain declared to exchanges (adomain).")
    app_bundle = models.CharField(
        "advertised app", max_length=255, blank=True,
        help_text="For an app-install ad: the app's store bundle or id, declared to exchanges "
                  "(bid.bundle); a request that blocks it (bapp) gets no bid from it.")
    categories = models.JSONField(default=list, blank=True,
                                  validators=[targeting.validate_categories],
                                  help_text="IAB categories of the ad itself.")
    attributes = models.JSONField(default=list, blank=True,
                                  validators=[targeting.IntListValidator(1, 17, "attribute")],
                                  help_text="OpenRTB creative attributes (1-17).")
    mimes = models.JSONField(default=list, blank=True, validators=[targeting.validate_mimes],
                             help_text="Video and audio: MIME types, e.g. video/mp4.")
    protocols = models.JSONField(default=list, blank=True,
                                 validators=[targeting.IntListValidator(1, 14, "protocol")],
                                 help_text="Video and audio: OpenRTB protocols (VAST 2.0 = 2).")
    duration_seconds = models.PositiveIntegerField(null=True, blank=True)
    approval_status = models.CharField(max_length=10, choices=Approval.choices,
                                       default=Approval.PENDING, editable=False)
    reviewed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                    related_name="+", null=True, editable=False)
    reviewed_at = models.DateTimeField(null=True, editable=False)
    review_note = models.TextField(blank=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT,
                                   related_name="+", editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["campaign", "name", "id"]
        permissions = [("approve_creative", "Can approve or reject creatives")]
        constraints = [
            models.CheckConstraint(condition=~Q(asset="") | ~Q(markup=""),
                                   name="creative_has_asset_or_markup"),
            models.CheckConstraint(condition=Q(reviewed_by__isnull=True)
                                   | ~Q(reviewed_by=F("created_by")),
                                   name="creative_reviewer_not_author"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors: dict[str, str] = {}
        has_asset, has_markup = bool(self.asset), bool(self.markup.strip())
        if has_asset == has_markup:
            errors["asset"] = "Upload an asset or give third-party markup (one of the two)."
        if has_asset and not errors:
            extension = self.asset.name.rsplit(".", 1)[-1].lower()
            allowed = {self.Format.BANNER: IMAGE_EXTENSIONS, self.Format.NATIVE: IMAGE_EXTENSIONS,
                       self.Format.VIDEO: VIDEO_EXTENSIONS,
                       self.Format.AUDIO: AUDIO_EXTENSIONS}.get(self.format, ())
            if extension not in allowed:
                errors["asset"] = (f"A {self.format} asset must be one of: "
                                   f"{', '.join(allowed)}.")
        if self.format == self.Format.BANNER and not self.sizes:
            errors["sizes"] = "A banner needs at least one size."
        if self.format in (self.Format.VIDEO, self.Format.AUDIO):
            if not self.mimes:
                errors["mimes"] = f"A {self.format} creative needs its MIME types."
            if not self.duration_seconds:
                errors["duration_seconds"] = f"A {self.format} creative needs its duration."
            if not self.protocols:
                errors["protocols"] = f"A {self.format} creative needs its protocols."
        self.app_bundle = self.app_bundle.strip()
        if self.adomain:
            self.adomain = self.adomain.strip().lower()
            try:
                targeting.validate_domains([self.adomain])
            except ValidationError as error:
                errors["adomain"] = error.messages[0]
        if errors:
            raise ValidationError(errors)


class AuditEntry(models.Model):
    """One change: who, when, what (before and after), and any status transition.

    Ids are plain integers, not foreign keys, so the history outlives what it describes.
    """

    class Action(models.TextChoices):
        CREATE = "create"
        UPDATE = "update"
        DELETE = "delete"
        TRANSITION = "transition"

    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True,
                              related_name="+", help_text="Empty for scheduled system changes.")
    at = models.DateTimeField(auto_now_add=True, db_index=True)
    action = models.CharField(max_length=20, choices=Action.choices)
    entity = models.CharField(max_length=30)
    entity_id = models.BigIntegerField()
    entity_name = models.CharField(max_length=200)
    advertiser_id = models.BigIntegerField(null=True, db_index=True)
    campaign_id = models.BigIntegerField(null=True, db_index=True)
    changes = models.JSONField(default=dict, blank=True,
                               help_text="Field name to [before, after].")
    from_status = models.CharField(max_length=20, blank=True)
    to_status = models.CharField(max_length=20, blank=True)
    note = models.TextField(blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit entries"

    def __str__(self) -> str:
        return f"{self.action} {self.entity} {self.entity_id} at {self.at:%Y-%m-%d %H:%M:%S}"


class Exchange(models.Model):
    """An ad exchange that sends us bid requests at ``/v1/bid/{slug}``.

    The bearer token is kept only as its sha256: the bidder hashes what the exchange sends and
    compares, so neither the database nor the snapshot holds a usable credential. The price
    decryption key stays in the environment; ``price_key_ref`` names the variable.
    """

    class Auth(models.TextChoices):
        NONE = "none", "None"
        TOKEN = "token", "Bearer token"
        IP = "ip", "Source IP in the allowed networks"

    class NoBidStyle(models.TextChoices):
        NO_CONTENT = "204", "HTTP 204 No Content"
        NBR = "nbr", "HTTP 200 with a no-bid reason (nbr)"

    name = models.CharField(max_length=200, unique=True)
    slug = models.SlugField(max_length=50, unique=True,
                            help_text="Path segment of the bid endpoint: /v1/bid/{slug}.")
    seat = models.CharField(max_length=100, help_text="Our seat id at this exchange.")
    is_default = models.BooleanField(default=False,
                                     help_text="Serves /v1/bid without a slug; at most one.")
    auth = models.CharField(max_length=10, choices=Auth.choices, default=Auth.NONE)
    token_sha256 = models.CharField(max_length=64, blank=True, editable=False)
    allowed_networks = models.JSONField(default=list, blank=True,
                                        validators=[targeting.validate_networks],
                                        help_text="CIDRs requests may come from (auth: ip).")
    price_decryption = models.CharField(
        max_length=30, blank=True,
        choices=[("", "None (plain prices)")] + [(hook, hook) for hook in
                                                 PRICE_DECRYPTION_HOOKS],
        help_text="How this exchange encrypts the winning price in notices.")
    price_key_ref = models.CharField(
        "price key variable", max_length=100, blank=True,
        validators=[RegexValidator(ENVIRONMENT_VARIABLE,
                                   "Name an environment variable: A-Z, 0-9 and _.")],
        help_text="Name of the environment variable holding the decryption key (never the "
                  "key itself).")
    currency = models.CharField(max_length=3, default="USD",
                                validators=[targeting.validate_currency])
    no_bid_style = models.CharField(max_length=3, choices=NoBidStyle.choices,
                                    default=NoBidStyle.NO_CONTENT)
    is_active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=Q(is_default=True),
                                    name="exchange_one_default",
                                    violation_error_message="Another exchange is already the "
                                                            "default; unset it first."),
            models.CheckConstraint(condition=Q(auth__in=["none", "token", "ip"]),
                                   name="exchange_auth_valid"),
            models.CheckConstraint(condition=~Q(auth="token") | ~Q(token_sha256=""),
                                   name="exchange_token_auth_has_token"),
            models.CheckConstraint(condition=~Q(auth="ip") | ~Q(allowed_networks=[]),
                                   name="exchange_ip_auth_has_networks"),
            models.CheckConstraint(condition=Q(price_decryption="") | ~Q(price_key_ref=""),
                                   name="exchange_decryption_has_key_ref"),
            models.CheckConstraint(condition=Q(no_bid_style__in=["204", "nbr"]),
                                   name="exchange_no_bid_style_valid"),
            models.CheckConstraint(condition=Q(is_default=False) | Q(is_active=True),
                                   name="exchange_default_is_active"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def has_token(self) -> bool:
        return bool(self.token_sha256)

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.auth == self.Auth.TOKEN and not self.token_sha256:
            errors["token"] = "Token authentication needs a token."
        if self.auth == self.Auth.IP and not self.allowed_networks:
            errors["allowed_networks"] = "IP authentication needs at least one network."
        with contextlib.suppress(ValueError, TypeError):  # the field validator names bad ones
            self.allowed_networks = targeting.normalize_networks(self.allowed_networks)
        if self.price_decryption and not self.price_key_ref:
            errors["price_key_ref"] = "Name the environment variable holding the key."
        if self.is_default and not self.is_active:
            errors["is_default"] = "The default exchange must be active."
        if errors:
            raise ValidationError(errors)


class CurrencyRate(models.Model):
    """Units of a currency per 1 USD, as ops set them; USD itself is always 1."""

    currency = models.CharField(max_length=3, unique=True,
                                validators=[targeting.validate_currency])
    units_per_usd = models.DecimalField(max_digits=20, decimal_places=8,
                                        validators=[MinValueValidator(Decimal("0.00000001"))],
                                        help_text="How many units of this currency 1 USD buys.")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["currency"]
        constraints = [
            models.CheckConstraint(condition=Q(units_per_usd__gt=0),
                                   name="currency_rate_positive"),
            models.CheckConstraint(condition=~Q(currency="USD"),
                                   name="currency_rate_not_usd"),
        ]

    def __str__(self) -> str:
        return f"{self.currency} {self.units_per_usd} per USD"

    def clean(self) -> None:
        if self.currency == "USD":
            raise ValidationError({"currency": "USD is the base currency: its rate is 1."})


class SnapshotOutbox(models.Model):
    """One requested config snapshot publish; the id is the published snapshot's version.

    A service that changes what bidding sees inserts a row in its own transaction, so the
    request commits with the change or not at all. The publisher marks a row published only
    after the bus took the snapshot; an unpublished row is retried until it is.
    """

    created_at = models.DateTimeField(auto_now_add=True)
    published_at = models.DateTimeField(null=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "snapshot outbox"

    def __str__(self) -> str:
        state = f"published {self.published_at:%Y-%m-%d %H:%M:%S}" if self.published_at \
            else "pending"
        return f"snapshot {self.pk} ({state})"


class CampaignDailySpend(models.Model):
    """Spend per campaign and day (the advertiser's day), reconciled from the bidders' counters.

    It is what a lost Redis is rebuilt from, with `Campaign.spent` for the total.
    """

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="daily_spend")
    date = models.DateField()
    amount = models.DecimalField(**MONEY, default=Decimal(0))
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-date"]
        constraints = [models.UniqueConstraint(fields=["campaign", "date"],
                                               name="daily_spend_one_row_per_day")]

    def __str__(self) -> str:
        return f"{self.campaign} {self.date}: {self.amount}"
