"""The three roles as Django groups: marketer, approver, ops.

`roles_sync` runs after every app's migrations (a permission appears once its app has
migrated), so groups always end up with exactly these permissions; adding a permission here is
how a role gains it.
"""

from __future__ import annotations

from django.contrib.auth.models import Group, Permission

MARKETER, APPROVER, OPS = "marketer", "approver", "ops"

ROLE_PERMISSIONS: dict[str, list[str]] = {
    MARKETER: [
        "campaigns.view_advertiser",
        "campaigns.add_campaign", "campaigns.change_campaign", "campaigns.delete_campaign",
        "campaigns.view_campaign",
        "campaigns.add_creative", "campaigns.change_creative", "campaigns.delete_creative",
        "campaigns.view_creative",
        "campaigns.view_auditentry", "campaigns.view_campaigndailyspend",
        # Scheduled reports over their own advertisers (the admin scopes them).
        "analytics.add_reportdefinition", "analytics.change_reportdefinition",
        "analytics.delete_reportdefinition", "analytics.view_reportdefinition",
        "analytics.view_reportrun",
        # Loyalty programs of their own advertisers (the admin and API scope them); points
        # move only by earning, redeeming and the daily task, so the ledger is read-only.
        "loyalty.add_program", "loyalty.change_program", "loyalty.view_program",
        "loyalty.add_tier", "loyalty.change_tier", "loyalty.delete_tier", "loyalty.view_tier",
        "loyalty.add_reward", "loyalty.change_reward", "loyalty.delete_reward",
        "loyalty.view_reward",
        "loyalty.add_promotion", "loyalty.change_promotion", "loyalty.delete_promotion",
        "loyalty.view_promotion",
        "loyalty.add_member", "loyalty.change_member", "loyalty.view_member",
        "loyalty.view_ledgerentry", "loyalty.view_tierchange",
        "loyalty.add_apikey", "loyalty.change_apikey", "loyalty.view_apikey",
        # Which partner DSPs compete for their impressions; ops manage them.
        "dsp.view_dsppartner",
    ],
    APPROVER: [
        "campaigns.access_all_advertisers", "campaigns.view_advertiser",
        "campaigns.view_campaign", "campaigns.change_campaign", "campaigns.approve_campaign",
        "campaigns.view_creative", "campaigns.change_creative", "campaigns.approve_creative",
        "campaigns.view_auditentry", "campaigns.view_campaigndailyspend",
    ],
}


def roles_sync() -> None:
    """Create or update the groups. Ops gets every permission there is, system settings too."""
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        wanted = [name.split(".") for name in names]
        permissions = [permission for permission in
                       Permission.objects.filter(codename__in=[c for _, c in wanted])
                       .select_related("content_type")
                       if [permission.content_type.app_label, permission.codename] in wanted]
        group.permissions.set(permissions)
    ops, _ = Group.objects.get_or_create(name=OPS)
    ops.permissions.set(Permission.objects.all())
