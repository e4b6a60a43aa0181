"""Loyalty in the admin, scoped to the user's advertisers: programs with their tiers, rewards
and promotions; members with their ledger; API keys. Every write goes through the services,
and the ledger is read-only."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet

from campaign_express.errors import DomainError
from campaigns.admin import DeleteThroughServices, ReadOnlyAdmin
from campaigns.selectors import advertiser_list
from loyalty import selectors, services
from loyalty.models import (
    ApiKey,
    LedgerEntry,
    Member,
    Program,
    Promotion,
    Reward,
    Tier,
    TierChange,
)


def _changed(form) -> dict:
    return {name: form.cleaned_data[name] for name in form.changed_data
            if name in form.cleaned_data and name not in ("id", "DELETE", "program")}


class TierFormSet(forms.BaseInlineFormSet):
    """The program's tier rules, checked on the whole set before anything is saved."""

    def clean(self) -> None:
        super().clean()
        program = self.instance
        kept = [form for form in self.forms
                if getattr(form, "cleaned_data", None) and not form.cleaned_data.get("DELETE")]
        if program.pk is None and not kept:
            return  # a new program without tiers gets the default ones
        if not any(form.cleaned_data.get("qualifying_points") == 0 for form in kept):
            raise ValidationError("The lowest tier must start at 0 points.")
        if program.pk is None:
            return
        for form in self.forms:
            tier = form.instance
            if tier.pk is None or not getattr(form, "cleaned_data", None):
                continue
            renamed = form.cleaned_data.get("name") != Tier.objects.get(pk=tier.pk).name
            if form.cleaned_data.get("DELETE") or renamed:
                targeting = selectors.tier_targeted_by(
                    program=program, tier_name=Tier.objects.get(pk=tier.pk).name)
                if targeting:
                    raise ValidationError(f"Campaigns target this tier ({', '.join(targeting)}); "
                                          "change their targeting first.")


class TierInline(admin.TabularInline):
    model = Tier
    formset = TierFormSet
    extra = 0
    fields = ["name", "qualifying_points", "earn_multiplier", "bid_boost",
              "birthday_window_days", "points_expire"]


class RewardInline(admin.TabularInline):
    model = Reward
    extra = 0
    fields = ["code", "description", "points_cost", "value", "min_tier", "is_active"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "min_tier":
            kwargs["queryset"] = selectors.tier_list(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class PromotionInline(admin.TabularInline):
    model = Promotion
    extra = 0
    fields = ["name", "channel", "multiplier", "starts_at", "ends_at"]
    verbose_name_plural = "promotions and channel bonuses"


@admin.register(Program)
class ProgramAdmin(DeleteThroughServices, admin.ModelAdmin):
    inlines = [TierInline, RewardInline, PromotionInline]
    list_display = ["name", "advertiser", "currency", "is_active", "member_count"]
    list_filter = ["is_active", "currency"]
    search_fields = ["name", "advertiser__name"]
    fields = ["advertiser", "name", "currency", "qualifying_period_months",
              "points_expiry_days", "birthday_points", "is_active"]

    def get_queryset(self, request):
        return selectors.program_list(user=request.user)

    def get_readonly_fields(self, request, obj=None):
        return ["advertiser"] if obj is not None else []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "advertiser":
            kwargs["queryset"] = advertiser_list(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="members")
    def member_count(self, program: Program) -> int:
        return program.members.count()

    def save_model(self, request, obj, form, change):
        data = _changed(form)
        if change:
            form.instance = services.program_update(program=obj, actor=request.user, data=data)
        else:
            # Tiers come from the inline below, or are the defaults when it has none.
            form.instance = services.program_create(
                actor=request.user, data={**data, "advertiser": obj.advertiser},
                with_default_tiers=False)
        obj.pk = form.instance.pk

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        if not change and not form.instance.tiers.exists():
            services.program_default_tiers_create(program=form.instance)

    def save_formset(self, request, form, formset, change):
        """Writes through the services, recording what was written for the change message.
        Tiers are saved first (Django saves inlines in order), so rewards may name new ones;
        new tiers from the lowest up, so the one at 0 points exists before the others."""
        program = form.instance
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        model = formset.model
        forms_in_order = sorted(
            formset.forms, key=lambda inline: (getattr(inline, "cleaned_data", None) or {}).get(
                "qualifying_points") or 0) if model is Tier else formset.forms
        for inline in forms_in_order:
            if not getattr(inline, "cleaned_data", None):
                continue
            instance = inline.instance
            if inline.cleaned_data.get("DELETE"):
                if instance.pk:
                    self._delete(request, model, model.objects.get(pk=instance.pk))
                    formset.deleted_objects.append(instance)
                continue
            data = _changed(inline)
            if instance.pk is None:
                formset.new_objects.append(self._save(request, model, None,
                                                      {**data, "program": program}))
            elif data:
                formset.changed_objects.append((self._save(
                    request, model, model.objects.get(pk=instance.pk), data), list(data)))

    @staticmethod
    def _save(request, model, instance, data):
        actor = request.user
        if model is Tier:
            return (services.tier_update(tier=instance, actor=actor, data=data) if instance
                    else services.tier_create(actor=actor, data=data))
        if model is Reward:
            return services.reward_save(actor=actor, data=data, reward=instance)
        return services.promotion_save(actor=actor, data=data, promotion=instance)

    @staticmethod
    def _delete(request, model, instance) -> None:
        if model is Tier:
            services.tier_delete(tier=instance, actor=request.user)
        elif model is Reward:
            services.reward_delete(reward=instance, actor=request.user)
        else:
            services.promotion_delete(promotion=instance, actor=request.user)

    def delete_model(self, request, obj):
        try:
            services.program_delete(program=obj, actor=request.user)
        except DomainError as error:
            self.message_user(request, error.message, messages.ERROR)


class ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    max_num = 0
    show_change_link = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class LedgerInline(ReadOnlyInline):
    model = LedgerEntry
    fields = ["created_at", "kind", "points", "balance_after", "reason", "transaction_id",
              "channel"]
    readonly_fields = fields
    ordering = ["-created_at", "-id"]
    verbose_name_plural = "ledger (newest first)"


class TierChangeInline(ReadOnlyInline):
    model = TierChange
    fields = ["created_at", "from_tier", "to_tier", "direction", "cause", "qualifying_points"]
    readonly_fields = fields


@admin.register(Member)
class MemberAdmin(admin.ModelAdmin):
    inlines = [TierChangeInline, LedgerInline]
    list_display = ["user_id", "program", "tier", "balance", "qualifying_points",
                    "lifetime_points", "enrolled_at"]
    list_filter = [("program", admin.RelatedOnlyFieldListFilter), "tier__name"]
    search_fields = ["user_id"]
    readonly_fields = ["tier", "balance", "qualifying_points", "previous_qualifying_points",
                       "qualifying_period_start", "lifetime_points", "total_redemptions",
                       "birthday_reward_year", "last_earn_at", "last_redeem_at", "enrolled_at"]

    def get_queryset(self, request):
        return selectors.member_list(user=request.user)

    def get_fields(self, request, obj=None):
        editable = ["birthday", "preferred_channel"]
        if obj is None:
            return ["program", "user_id", *editable]
        return ["program", "user_id", *editable, *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return [*self.readonly_fields, "program", "user_id"] if obj is not None else []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "program":
            kwargs["queryset"] = selectors.program_list(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:
            form.instance = services.member_update(
                member=obj, actor=request.user,
                data={name: form.cleaned_data[name] for name in form.changed_data})
        else:
            form.instance = services.member_enroll(
                actor=request.user, program=obj.program, user_id=obj.user_id,
                birthday=obj.birthday, preferred_channel=obj.preferred_channel)
        obj.pk = form.instance.pk

    def has_delete_permission(self, request, obj=None):
        return False  # the ledger is the record; a member is never deleted


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "member", "kind", "points", "balance_after", "reason",
                    "transaction_id"]
    list_filter = ["kind", ("program", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["transaction_id", "member__user_id"]
    date_hierarchy = "created_at"

    def get_queryset(self, request):
        return selectors.ledger_list(user=request.user)


class ApiKeyForm(forms.ModelForm):
    actions = forms.MultipleChoiceField(choices=ApiKey.Action.choices,
                                        widget=forms.CheckboxSelectMultiple)

    class Meta:
        model = ApiKey
        fields = ["program", "name", "actions"]


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    """The key is shown once, in the message after it is created; then only its prefix."""

    form = ApiKeyForm
    list_display = ["name", "program", "prefix", "actions", "is_active", "last_used_at"]
    list_filter = ["is_active", ("program", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "prefix"]
    actions = ["revoke_keys"]

    def get_queryset(self, request):
        return selectors.api_key_list(user=request.user)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["program", "name", "actions"]
        return ["program", "name", "actions", "prefix", "is_active", "created_by",
                "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        return self.get_fields(request, obj) if obj is not None else []

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "program":
            kwargs["queryset"] = selectors.program_list(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        api_key, secret = services.api_key_create(
            actor=request.user, program=form.cleaned_data["program"],
            name=form.cleaned_data["name"], actions=form.cleaned_data["actions"])
        form.instance = api_key
        obj.pk = api_key.pk
        self.message_user(request, f"The API key (shown only now; copy it): {secret}",
                          messages.WARNING)

    def has_delete_permission(self, request, obj=None):
        return False  # revoke instead: the record of who had access stays

    @admin.action(description="Revoke selected API keys")
    def revoke_keys(self, request, queryset: QuerySet[ApiKey]):
        for api_key in queryset:
            services.api_key_revoke(api_key=api_key, actor=request.user)
        self.message_user(request, f"Revoked {queryset.count()} key(s).", messages.SUCCESS)
