"""The live view's admin page; its figures arrive over the websocket (analytics.consumers)."""

from __future__ import annotations

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse


def live_view_page(request: HttpRequest) -> HttpResponse:
    """Marketers, approvers and ops: whoever may view campaigns (the socket filters them)."""
    if not request.user.has_perm("campaigns.view_campaign"):
        raise PermissionDenied
    context = {**admin.site.each_context(request), "title": "Live view"}
    return TemplateResponse(request, "analytics/live.html", context)


live_view = admin.site.admin_view(live_view_page)
