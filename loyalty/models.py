"""Loyalty programs, their tiers, promotions and rewards; members, the points ledger, tier
changes and the API keys machine callers use.

A member's `balance` is a running total kept for reads; the record is the ledger. Every write
that moves points inserts one `LedgerEntry` and updates the balance in the same short
transaction, under the member row's lock (`loyalty.services`), so the balance always equals
the sum of the member's entries. Entries are never changed or deleted. Nothing here saves
side effects.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from campaigns import targeting
from campaigns.models import Advertiser

TIER_NAME = RegexValidator(r"^[a-z0-9][a-z0-9_-]{0,29}$",
                           "Lower-case letters, digits, _ and -, up to 30 characters.")
CODE = RegexValidator(r"^[a-z0-9][a-z0-9_-]{0,49}$",
                      "Lower-case letters, digits, _ and -, up to 50 characters.")
MULTIPLIER = {"max_digits": 6, "decimal_places": 3}
MONEY = {"max_digits": 14, "decimal_places": 4}


class Program(models.Model):
    """One advertiser's loyalty program: what its points are worth, how they qualify, expire."""

    advertiser = models.OneToOneField(Advertiser, on_delete=models.PROTECT,
                                      related_name="loyalty_program")
    name = models.CharField(max_length=200)
    currency = models.CharField(max_length=3, default="USD",
                                validators=[targeting.validate_currency],
                                help_text="Purchases earn 1 point per unit of this currency.")
    qualifying_period_months = models.PositiveSmallIntegerField(
        default=12, validators=[MinValueValidator(1)],
        help_text="Each member's qualifying period, from enrolment; points earned in it decide "
                  "the tier for it and the next.")
    points_expiry_days = models.PositiveIntegerField(
        default=180, validators=[MinValueValidator(1)],
        help_text="Points older than this expire, for members in a tier whose points expire.")
    birthday_points = models.PositiveIntegerField(
        default=50, help_text="Points given once a year inside the tier's birthday window.")
    is_active = models.BooleanField(default=True,
                                    help_text="An inactive program earns and redeems nothing.")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Tier(models.Model):
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="tiers")
    name = models.CharField(max_length=30, validators=[TIER_NAME],
                            help_text="What campaigns target: green, gold, reserve.")
    qualifying_points = models.PositiveIntegerField(
        help_text="Points earned in a qualifying period to reach the tier; the lowest tier "
                  "starts at 0.")
    earn_multiplier = models.DecimalField(**MULTIPLIER, default=Decimal(1),
                                          validators=[MinValueValidator(Decimal(0))])
    bid_boost = models.DecimalField(**MULTIPLIER, default=Decimal(1),
                                    validators=[MinValueValidator(Decimal("0.001"))],
                                    help_text="Bids for members in this tier are multiplied "
                                              "by it (never above a campaign's max bid).")
    birthday_window_days = models.PositiveSmallIntegerField(
        default=1, help_text="The birthday reward is given up to this many days either side.")
    points_expire = models.BooleanField(default=True)

    class Meta:
        ordering = ["program", "qualifying_points"]
        constraints = [
            models.UniqueConstraint(fields=["program", "name"], name="tier_name_unique",
                                    violation_error_message="The program has a tier of that "
                                                            "name already."),
            models.UniqueConstraint(fields=["program", "qualifying_points"],
                                    name="tier_threshold_unique",
                                    violation_error_message="Another tier starts at that many "
                                                            "points."),
            models.CheckConstraint(condition=Q(earn_multiplier__gte=0) & Q(bid_boost__gt=0),
                                   name="tier_multipliers_valid"),
        ]

    def __str__(self) -> str:
        return self.name


class Promotion(models.Model):
    """A promotion, or a channel bonus when it names a channel: while it runs it adds
    (multiplier − 1) to the earn rate of every purchase (on that channel)."""

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="promotions")
    name = models.CharField(max_length=200)
    channel = models.CharField(max_length=50, blank=True, validators=[CODE],
                               help_text="Only purchases on this channel (in_store, app, web, "
                                         "drive_through); empty for every channel.")
    multiplier = models.DecimalField(**MULTIPLIER, validators=[MinValueValidator(Decimal(1))])
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField(null=True, blank=True, help_text="Empty: runs until changed.")

    class Meta:
        ordering = ["program", "starts_at", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(multiplier__gte=1), name="promotion_multiplier"),
            models.CheckConstraint(condition=Q(ends_at__isnull=True)
                                   | Q(ends_at__gt=models.F("starts_at")),
                                   name="promotion_ends_after_start"),
        ]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if self.starts_at and self.ends_at and self.ends_at <= self.starts_at:
            raise ValidationError({"ends_at": "The end must be after the start."})


class Reward(models.Model):
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="rewards")
    code = models.CharField(max_length=50, validators=[CODE],
                            help_text="What callers redeem: basic_item, merchandise.")
    description = models.CharField(max_length=200)
    points_cost = models.PositiveIntegerField(validators=[MinValueValidator(1)])
    value = models.DecimalField(**MONEY, default=Decimal(0),
                                validators=[MinValueValidator(Decimal(0))],
                                help_text="What the reward is worth, in the program's currency.")
    min_tier = models.ForeignKey(Tier, on_delete=models.PROTECT, null=True, blank=True,
                                 related_name="+",
                                 help_text="Only members in this tier or above; empty: anyone.")
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["program", "points_cost", "code"]
        constraints = [
            models.UniqueConstraint(fields=["program", "code"], name="reward_code_unique",
                                    violation_error_message="The program has a reward with "
                                                            "that code already."),
            models.CheckConstraint(condition=Q(points_cost__gte=1), name="reward_costs_points"),
        ]

    def __str__(self) -> str:
        return f"{self.code} ({self.points_cost} points)"

    def clean(self) -> None:
        if self.min_tier_id is not None and self.min_tier.program_id != self.program_id:
            raise ValidationError({"min_tier": "Choose a tier of the same program."})


class Member(models.Model):
    """A person in one program, known by the platform's user id (the one bid requests and
    profiles use); the same person may be a member of several advertisers' programs."""

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="members")
    user_id = models.CharField(max_length=200)
    tier = models.ForeignKey(Tier, on_delete=models.PROTECT, related_name="members",
                             editable=False)
    balance = models.BigIntegerField(default=0, editable=False)
    qualifying_points = models.BigIntegerField(default=0, editable=False)
    previous_qualifying_points = models.BigIntegerField(
        default=0, editable=False, help_text="Earned in the previous qualifying period.")
    qualifying_period_start = models.DateField(editable=False)
    lifetime_points = models.BigIntegerField(default=0, editable=False)
    total_redemptions = models.PositiveIntegerField(default=0, editable=False)
    birthday = models.DateField(null=True, blank=True)
    birthday_reward_year = models.PositiveSmallIntegerField(null=True, editable=False)
    preferred_channel = models.CharField(max_length=50, blank=True, validators=[CODE])
    last_earn_at = models.DateTimeField(null=True, editable=False)
    last_redeem_at = models.DateTimeField(null=True, editable=False)
    enrolled_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["program", "user_id"]
        constraints = [
            models.UniqueConstraint(fields=["program", "user_id"], name="member_once_per_program",
                                    violation_error_message="Already a member of the program."),
            models.CheckConstraint(condition=Q(balance__gte=0), name="member_balance_not_negative"),
            models.CheckConstraint(condition=Q(qualifying_points__gte=0)
                                   & Q(previous_qualifying_points__gte=0)
                                   & Q(lifetime_points__gte=0),
                                   name="member_points_not_negative"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} in {self.program}"


class LedgerEntry(models.Model):
    """One movement of a member's points, and the balance it left. Append-only.

    `transaction_id` names what caused it: the purchase's transaction id, a redemption's
    idempotency key, or a key the daily task derives (``birthday:2026``, ``expire:2026-05-01``).
    It is unique per program and kind, which is what makes earning, redeeming and the daily
    task idempotent: a repeated call finds its entry instead of adding one.
    """

    class Kind(models.TextChoices):
        EARN = "earn"
        REDEEM = "redeem"
        EXPIRE = "expire"
        BIRTHDAY = "birthday"

    program = models.ForeignKey(Program, on_delete=models.PROTECT, related_name="+")
    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="ledger")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    transaction_id = models.CharField(max_length=200)
    points = models.BigIntegerField(help_text="Positive when added, negative when taken.")
    balance_after = models.BigIntegerField()
    reason = models.CharField(max_length=200)
    channel = models.CharField(max_length=50, blank=True)
    reward = models.ForeignKey(Reward, on_delete=models.PROTECT, null=True, related_name="+")
    details = models.JSONField(default=dict, blank=True,
                               help_text="How the points were computed, and the tier before "
                                         "and after.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        constraints = [
            models.UniqueConstraint(fields=["program", "kind", "transaction_id"],
                                    name="ledger_transaction_once"),
            models.CheckConstraint(condition=Q(balance_after__gte=0),
                                   name="ledger_balance_not_negative"),
            models.CheckConstraint(
                condition=(Q(kind__in=["earn", "birthday"], points__gte=0)
                           | Q(kind__in=["redeem", "expire"], points__lte=0)),
                name="ledger_points_sign_matches_kind"),
        ]
        indexes = [models.Index(fields=["member", "created_at"])]

    def __str__(self) -> str:
        return f"{self.kind} {self.points:+d} → {self.balance_after}"


class TierChange(models.Model):
    """An upgrade or downgrade. Tier names are copied: the history outlives a renamed tier."""

    class Direction(models.TextChoices):
        UP = "up"
        DOWN = "down"

    member = models.ForeignKey(Member, on_delete=models.PROTECT, related_name="tier_changes")
    from_tier = models.CharField(max_length=30)
    to_tier = models.CharField(max_length=30)
    direction = models.CharField(max_length=4, choices=Direction.choices)
    cause = models.CharField(max_length=30, help_text="earn, period_reset, tiers_changed.")
    qualifying_points = models.BigIntegerField()
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.from_tier} → {self.to_tier}"


class ApiKey(models.Model):
    """A point-of-sale system's or app's credential for `/v1/loyalty/*`: one program, the
    actions it may call. Only the key's sha256 is kept; the key is shown once, at creation."""

    class Action(models.TextChoices):
        EARN = "earn"
        REDEEM = "redeem"
        BALANCE = "balance"
        REWARD_SIGNAL = "reward_signal", "Reward signal"

    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=200, help_text="Who uses it: Store 12 tills.")
    prefix = models.CharField(max_length=16, editable=False,
                              help_text="The key's first characters, to recognise it.")
    key_sha256 = models.CharField(max_length=64, unique=True, editable=False)
    actions = models.JSONField(default=list, help_text="earn, redeem, balance, reward_signal.")
    is_active = models.BooleanField(default=True, editable=False)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL,
                                   null=True, editable=False, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, editable=False)
    revoked_at = models.DateTimeField(null=True, editable=False)

    class Meta:
        ordering = ["program", "name"]
        verbose_name = "API key"
        constraints = [
            models.CheckConstraint(condition=Q(is_active=True) | Q(revoked_at__isnull=False),
                                   name="api_key_revoked_has_time"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"

    def clean(self) -> None:
        valid = self.Action.values
        if not isinstance(self.actions, list) or not self.actions or any(
                action not in valid for action in self.actions):
            raise ValidationError({"actions": f"Choose one or more of {', '.join(valid)}."})
        if len(set(self.actions)) != len(self.actions):
            raise ValidationError({"actions": "Remove the duplicate actions."})
