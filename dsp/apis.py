"""REST API for DSP partners (`/api/v1/dsp-partners/`) and the routing status
(`GET /v1/dsp/status`)."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from rest_framework import serializers, viewsets

from dsp import selectors, services
from dsp.models import DspPartner


class DspPartnerSerializer(serializers.ModelSerializer):
    """The credential is only a variable name (``credential_ref``): no secret is accepted or
    returned here."""

    class Meta:
        model = DspPartner
        fields = ["id", "name", "seat", "endpoint_url", "openrtb_version", "timeout_ms",
                  "qps_limit", "margin", "formats", "countries", "device_types",
                  "daily_spend_cap", "currency", "credential_ref", "is_enabled", "created_at",
                  "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class DspPartnerViewSet(viewsets.ModelViewSet):
    queryset = DspPartner.objects.all()
    serializer_class = DspPartnerSerializer
    filterset_fields = ["is_enabled", "openrtb_version", "currency"]
    search_fields = ["name", "seat"]
    ordering_fields = ["name", "created_at"]

    def perform_create(self, serializer):
        serializer.instance = services.dsp_partner_create(
            actor=self.request.user, data=dict(serializer.validated_data))

    def perform_update(self, serializer):
        serializer.instance = services.dsp_partner_update(
            partner=serializer.instance, actor=self.request.user,
            data=dict(serializer.validated_data))

    def perform_destroy(self, instance):
        services.dsp_partner_delete(partner=instance, actor=self.request.user)


def dsp_status_view(request: HttpRequest) -> JsonResponse:
    """Partner states from the store the bidders share: breaker, QPS in the last second,
    today's spend, last latency. Open like /health: it holds no secret and no spend detail
    beyond totals ops already see in metrics."""
    return JsonResponse(selectors.dsp_status())
