from django.contrib import admin

from dsp import services
from dsp.models import DspPartner


@admin.register(DspPartner)
class DspPartnerAdmin(admin.ModelAdmin):
    """Ops manage partners here; writes go through the services (audit, snapshot push)."""

    list_display = ["name", "seat", "endpoint_url", "openrtb_version", "timeout_ms",
                    "qps_limit", "margin", "daily_spend_cap", "currency", "is_enabled"]
    list_filter = ["is_enabled", "openrtb_version", "currency"]
    search_fields = ["name", "seat"]
    readonly_fields = ["created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "seat", "endpoint_url", "openrtb_version", "is_enabled"]}),
        ("Limits and money", {"fields": ["timeout_ms", "qps_limit", "margin",
                                         "daily_spend_cap", "currency"]}),
        ("What it wants", {"fields": ["formats", "countries", "device_types"]}),
        ("Credential", {"fields": ["credential_ref"]}),
        (None, {"fields": ["created_at", "updated_at"]}),
    ]

    def save_model(self, request, obj, form, change):
        data = {name: form.cleaned_data[name] for name in form.changed_data
                if name in services.EDITABLE}
        if change:
            form.instance = services.dsp_partner_update(
                partner=DspPartner.objects.get(pk=obj.pk), actor=request.user, data=data)
        else:
            data = {name: form.cleaned_data[name] for name in services.EDITABLE
                    if name in form.cleaned_data}
            form.instance = services.dsp_partner_create(actor=request.user, data=data)
        obj.pk = form.instance.pk

    def delete_model(self, request, obj):
        services.dsp_partner_delete(partner=obj, actor=request.user)
