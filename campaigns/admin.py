"""The marketer's admin, scoped to the user's advertisers, and ops' exchanges and currency rates;
every write goes through the services."""

from __future__ import annotations

from django.contrib import admin, messages
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.template.response import TemplateResponse
from django.utils.html import format_html, format_html_join
from django.utils.translation import ngettext

from analytics.admin import campaign_performance_panel
from campaign_express.errors import DomainError
from campaigns import exchanges, selectors, services
from campaigns.forms import CampaignForm, CreativeForm, CurrencyRateForm, ExchangeForm, NoteForm
from campaigns.models import (
    Advertiser,
    AuditEntry,
    Campaign,
    CampaignDailySpend,
    Creative,
    CurrencyRate,
    Exchange,
)

READ_ONLY_STATUSES = (Campaign.Status.COMPLETED, Campaign.Status.ARCHIVED)


def _changed(form) -> dict:
    return {name: form.cleaned_data[name] for name in form.changed_data
            if name in form.cleaned_data}


def _report(modeladmin: admin.ModelAdmin, request, done: int, failures: list[str],
            verb: str, noun: str) -> None:
    if done:
        modeladmin.message_user(request, ngettext(f"{verb} %d {noun}.", f"{verb} %d {noun}s.",
                                                  done) % done, messages.SUCCESS)
    for failure in failures:
        modeladmin.message_user(request, failure, messages.ERROR)


def _error_text(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(error.messages)
    return str(error)


class DeleteThroughServices:
    """Bulk deletes go one by one through `delete_model`, so each runs its service's rules
    and audit, as the single delete does (Django's default deletes the queryset at once)."""

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


class ScopedAdmin(DeleteThroughServices, admin.ModelAdmin):
    """Querysets and choices limited to the user's advertisers."""

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "advertiser":
            kwargs["queryset"] = selectors.advertiser_list(user=request.user)
        if db_field.name == "campaign":
            kwargs["queryset"] = selectors.campaign_list(user=request.user)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(Advertiser)
class AdvertiserAdmin(ScopedAdmin):
    list_display = ["name", "domain", "currency", "time_zone", "is_active", "campaign_count"]
    list_filter = ["is_active", "currency"]
    search_fields = ["name", "domain"]
    filter_horizontal = ["marketers"]

    def get_queryset(self, request):
        return selectors.advertiser_list(user=request.user)

    @admin.display(description="campaigns")
    def campaign_count(self, advertiser: Advertiser) -> int:
        return advertiser.campaigns.count()

    def save_model(self, request, obj, form, change):
        data = {name: value for name, value in _changed(form).items() if name != "marketers"}
        if change:
            services.advertiser_update(advertiser=Advertiser.objects.get(pk=obj.pk),
                                       actor=request.user, data=data)
        else:
            form.instance = services.advertiser_create(actor=request.user, data=data)
            obj.pk = form.instance.pk

    def save_related(self, request, form, formsets, change):
        if "marketers" in form.changed_data:
            services.advertiser_update(advertiser=form.instance, actor=request.user, data={},
                                       marketers=list(form.cleaned_data["marketers"]))


class CreativeInline(admin.StackedInline):
    model = Creative
    form = CreativeForm
    extra = 0
    show_change_link = True
    fields = ["name", "format", "sizes", "asset", "markup", "click_url", "adomain", "app_bundle",
              "categories", "attributes", "mimes", "protocols", "duration_seconds",
              "approval_status", "preview"]
    readonly_fields = ["approval_status", "preview"]

    @admin.display(description="preview")
    def preview(self, creative: Creative) -> str:
        return creative_preview(creative)


def creative_preview(creative: Creative) -> str:
    """The ad as a viewer would see it; third-party markup runs in a sandboxed frame."""
    if creative.asset:
        url = creative.asset.url
        if creative.format == Creative.Format.VIDEO:
            return format_html('<video src="{}" controls width="320"></video>', url)
        if creative.format == Creative.Format.AUDIO:
            return format_html('<audio src="{}" controls></audio>', url)
        return format_html('<img src="{}" alt="{}" style="max-width:320px;max-height:250px">',
                           url, creative.name)
    if creative.markup:
        width, _, height = (creative.sizes[0] if creative.sizes else "320x250").partition("x")
        return format_html('<iframe sandbox="allow-scripts" srcdoc="{}" width="{}" height="{}" '
                           'style="border:1px solid #ccc"></iframe>',
                           creative.markup, width, height)
    return "—"


class DailySpendInline(admin.TabularInline):
    """Spend per day, as reconciled from the bidders' counters every minute."""

    model = CampaignDailySpend
    extra = 0
    fields = ["date", "amount", "updated_at"]
    readonly_fields = fields
    can_delete = False
    verbose_name_plural = "daily spend"

    def has_add_permission(self, request, obj=None):
        return False


def _transition_action(name: str, description: str, past: str):
    def run(modeladmin, request, queryset: QuerySet[Campaign]):
        done, failures = 0, []
        for campaign in queryset:
            try:
                services.campaign_transition(campaign=campaign, actor=request.user, action=name)
                done += 1
            except (DomainError, ValidationError) as error:
                failures.append(f"{campaign}: {_error_text(error)}")
        _report(modeladmin, request, done, failures, past, "campaign")

    run.__name__ = f"{name}_campaigns"
    return admin.action(description=f"{description.capitalize()} selected campaigns")(run)


@admin.register(Campaign)
class CampaignAdmin(ScopedAdmin):
    form = CampaignForm
    inlines = [CreativeInline, DailySpendInline]
    list_display = ["name", "advertiser", "status", "start_at", "end_at", "budget", "pacing",
                    "approved_creatives"]
    # Only the advertisers the user can see: a plain related filter would list every one.
    list_filter = ["status", "pacing", ("advertiser", admin.RelatedOnlyFieldListFilter),
                   "currency", "start_at"]
    search_fields = ["name", "advertiser__name", "deal_ids"]
    date_hierarchy = "start_at"
    readonly_fields = ["status", "spent", "created_by", "submitted_by", "approved_by",
                       "approved_at", "review_note", "history", "performance"]
    fieldsets = [
        (None, {"fields": ["advertiser", "name", "status", "review_note"]}),
        ("Schedule", {"fields": ["start_at", "end_at", "dayparts"]}),
        ("Budget and bidding", {"fields": ["currency", "total_budget", "daily_budget", "spent",
                                           "pacing", "base_bid_cpm", "max_bid_cpm"]}),
        ("Frequency caps per user", {"fields": ["frequency_cap_hour", "frequency_cap_day",
                                                "frequency_cap_lifetime"]}),
        ("Targeting", {"fields": ["countries", "regions", "device_types", "operating_systems",
                                  "site_domains_allow", "site_domains_block",
                                  "app_bundles_allow", "app_bundles_block", "categories",
                                  "segments", "loyalty_tiers", "deal_ids"]}),
        ("Review", {"fields": ["created_by", "submitted_by", "approved_by", "approved_at"]}),
        ("Performance, last 7 days", {"fields": ["performance"]}),
        ("History", {"fields": ["history"]}),
    ]
    actions = [
        _transition_action("submit", "submit for review", "Submitted"),
        _transition_action("approve", "approve", "Approved"),
        "reject_campaigns",
        _transition_action("activate", "activate", "Activated"),
        _transition_action("pause", "pause", "Paused"),
        _transition_action("resume", "resume", "Resumed"),
        _transition_action("complete", "complete", "Completed"),
        _transition_action("archive", "archive", "Archived"),
        _transition_action("reopen", "reopen as draft", "Reopened"),
    ]

    def get_queryset(self, request):
        return selectors.campaign_list(user=request.user)

    def has_change_permission(self, request, obj=None):
        if obj is not None and obj.status in READ_ONLY_STATUSES:
            return False
        return super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        if obj is not None and obj.status not in services.DELETABLE_STATUSES:
            return False
        return super().has_delete_permission(request, obj)

    @admin.display(description="budget (daily / total)", ordering="total_budget")
    def budget(self, campaign: Campaign) -> str:
        return f"{campaign.daily_budget:,.2f} / {campaign.total_budget:,.2f} {campaign.currency}"

    @admin.display(description="approved creatives")
    def approved_creatives(self, campaign: Campaign) -> str:
        creatives = list(campaign.creatives.all())
        approved = sum(c.approval_status == Creative.Approval.APPROVED for c in creatives)
        return f"{approved} / {len(creatives)}"

    @admin.display(description="audit history")
    def history(self, campaign: Campaign) -> str:
        if campaign.pk is None:
            return "—"
        entries = AuditEntry.objects.filter(campaign_id=campaign.pk).select_related("actor")
        rows = format_html_join(
            "", "<tr><td>{}</td><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td></tr>",
            ((f"{entry.at:%Y-%m-%d %H:%M:%S}", entry.actor or "scheduler", entry.action,
              entry.entity, _status_change(entry), _changes_text(entry))
             for entry in entries[:200]))
        return format_html("<table><thead><tr><th>When</th><th>Who</th><th>What</th>"
                           "<th>Status</th><th>Changes</th></tr></thead><tbody>{}</tbody>"
                           "</table>", rows)

    @admin.display(description="numbers and chart")
    def performance(self, campaign: Campaign) -> str:
        return "—" if campaign.pk is None else campaign_performance_panel(campaign=campaign)

    @admin.action(description="Reject selected campaigns (with a note)")
    def reject_campaigns(self, request, queryset: QuerySet[Campaign]):
        form = NoteForm(request.POST if "note" in request.POST else None)
        if not form.is_valid():
            return TemplateResponse(request, "admin/campaigns/reject.html", {
                **self.admin_site.each_context(request), "title": "Reject campaigns",
                "campaigns": queryset, "form": form, "opts": self.model._meta,
                "action_checkbox_name": admin.helpers.ACTION_CHECKBOX_NAME})
        done, failures = 0, []
        for campaign in queryset:
            try:
                services.campaign_transition(campaign=campaign, actor=request.user,
                                             action="reject", note=form.cleaned_data["note"])
                done += 1
            except (DomainError, ValidationError) as error:
                failures.append(f"{campaign}: {_error_text(error)}")
        _report(self, request, done, failures, "Rejected", "campaign")
        return None

    def save_model(self, request, obj, form, change):
        try:
            if change:
                form.instance = services.campaign_update(campaign=obj, actor=request.user,
                                                         data=_changed(form))
            else:
                form.instance = services.campaign_create(actor=request.user, data=_changed(form))
        except DomainError as error:
            # Permissions and scoping make this rare: the form already checked every field.
            self.message_user(request, error.message, messages.ERROR)
            return
        obj.pk = form.instance.pk

    def save_formset(self, request, form, formset, change):
        """Writes through the services instead of ``formset.save()``, and records what it wrote
        as ``formset.save()`` would: the admin's change message reads these lists."""
        campaign = form.instance
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for inline in formset.forms:
            if not hasattr(inline, "cleaned_data") or not inline.cleaned_data:
                continue
            creative = inline.instance
            if inline.cleaned_data.get("DELETE"):
                if creative.pk:
                    services.creative_delete(creative=creative, actor=request.user)
                    formset.deleted_objects.append(creative)
                continue
            data = {name: value for name, value in _changed(inline).items()
                    if name not in ("id", "campaign", "DELETE")}
            if creative.pk is None:
                formset.new_objects.append(services.creative_create(
                    actor=request.user, data={**data, "campaign": campaign}))
            elif data:
                formset.changed_objects.append((services.creative_update(
                    creative=Creative.objects.get(pk=creative.pk), actor=request.user,
                    data=data), list(data)))

    def delete_model(self, request, obj):
        services.campaign_delete(campaign=obj, actor=request.user)


def _status_change(entry: AuditEntry) -> str:
    if entry.from_status or entry.to_status:
        return f"{entry.from_status or '—'} → {entry.to_status or '—'}"
    return ""


def _changes_text(entry: AuditEntry) -> str:
    if entry.action == AuditEntry.Action.CREATE:
        parts = [f"{name}: {after!r}" for name, (_, after) in entry.changes.items()
                 if after not in (None, "", [], {})]
    else:
        parts = [f"{name}: {before!r} → {after!r}"
                 for name, (before, after) in entry.changes.items()]
    if entry.note:
        parts.insert(0, entry.note)
    text = "; ".join(parts)
    return text if len(text) <= 400 else text[:400] + "…"


def _review_action(approve: bool):
    def run(modeladmin, request, queryset: QuerySet[Creative]):
        done, failures = 0, []
        for creative in queryset:
            try:
                services.creative_review(creative=creative, actor=request.user, approve=approve,
                                         note="" if approve else "Rejected in the admin")
                done += 1
            except (DomainError, ValidationError) as error:
                failures.append(f"{creative}: {_error_text(error)}")
        _report(modeladmin, request, done, failures, "Approved" if approve else "Rejected",
                "creative")

    run.__name__ = "approve_creatives" if approve else "reject_creatives"
    return admin.action(description=f"{'Approve' if approve else 'Reject'} selected creatives")(
        run)


@admin.register(Creative)
class CreativeAdmin(ScopedAdmin):
    form = CreativeForm
    list_display = ["name", "campaign", "format", "adomain", "approval_status", "reviewed_by"]
    list_filter = ["format", "approval_status",
                   ("campaign__advertiser", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["name", "adomain", "campaign__name"]
    readonly_fields = ["approval_status", "reviewed_by", "reviewed_at", "review_note",
                       "created_by", "preview"]
    actions = [_review_action(True), _review_action(False)]

    def get_queryset(self, request):
        return selectors.creative_list(user=request.user)

    @admin.display(description="preview")
    def preview(self, creative: Creative) -> str:
        return creative_preview(creative)

    def save_model(self, request, obj, form, change):
        data = {name: value for name, value in _changed(form).items()}
        if change:
            services.creative_update(creative=Creative.objects.get(pk=obj.pk),
                                     actor=request.user, data=data)
        else:
            form.instance = services.creative_create(actor=request.user, data=data)
            obj.pk = form.instance.pk

    def delete_model(self, request, obj):
        services.creative_delete(creative=obj, actor=request.user)


@admin.register(Exchange)
class ExchangeAdmin(DeleteThroughServices, admin.ModelAdmin):
    """Ops manage exchanges here; the token is write-only and shown only as set or not."""

    form = ExchangeForm
    list_display = ["name", "slug", "seat", "is_default", "auth", "token_is_set", "currency",
                    "no_bid_style", "is_active"]
    list_filter = ["is_active", "auth", "no_bid_style", "currency"]
    search_fields = ["name", "slug", "seat"]
    readonly_fields = ["token_is_set", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "slug", "seat", "is_default", "is_active"]}),
        ("Authentication", {"fields": ["auth", "token_is_set", "token", "allowed_networks"]}),
        ("Prices and answers", {"fields": ["currency", "price_decryption", "price_key_ref",
                                           "no_bid_style"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    @admin.display(description="token set", boolean=True)
    def token_is_set(self, exchange: Exchange) -> bool:
        return exchange.has_token

    def save_model(self, request, obj, form, change):
        data = {name: value for name, value in _changed(form).items() if name != "token"}
        token = form.cleaned_data.get("token") or None
        if change:
            form.instance = exchanges.exchange_update(
                exchange=Exchange.objects.get(pk=obj.pk), actor=request.user, data=data,
                token=token)
        else:
            form.instance = exchanges.exchange_create(actor=request.user, data=data,
                                                     token=token)
        obj.pk = form.instance.pk

    def delete_model(self, request, obj):
        exchanges.exchange_delete(exchange=obj, actor=request.user)


@admin.register(CurrencyRate)
class CurrencyRateAdmin(DeleteThroughServices, admin.ModelAdmin):
    """The rates bidders convert prices with (units per 1 USD); ops update them."""

    form = CurrencyRateForm
    list_display = ["currency", "units_per_usd", "updated_at"]
    list_editable = ["units_per_usd"]
    search_fields = ["currency"]
    readonly_fields = ["updated_at"]

    def get_readonly_fields(self, request, obj=None):
        return ["currency", "updated_at"] if obj is not None else ["updated_at"]

    def save_model(self, request, obj, form, change):
        rate = exchanges.currency_rate_set(actor=request.user, currency=obj.currency,
                                          units_per_usd=obj.units_per_usd)
        form.instance = rate
        obj.pk = rate.pk

    def delete_model(self, request, obj):
        exchanges.currency_rate_delete(rate=obj, actor=request.user)


class ReadOnlyAdmin(admin.ModelAdmin):
    """A record kept as written (an audit trail, a ledger): listed and shown, never added,
    changed or deleted in the admin."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(AuditEntry)
class AuditEntryAdmin(ReadOnlyAdmin):
    list_display = ["at", "actor", "action", "entity", "entity_name", "from_status",
                    "to_status"]
    list_filter = ["action", "entity", "at"]
    search_fields = ["entity_name", "note", "actor__username"]
    date_hierarchy = "at"

    def get_queryset(self, request):
        return selectors.audit_list(user=request.user)
