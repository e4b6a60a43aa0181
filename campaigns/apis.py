"""REST API for marketers (advertisers, campaigns, creatives and the workflow actions) and for
ops (exchanges).

Views validate input, call one service or selector, and serialize. Querysets always come from
the selectors, so an object of another advertiser is a 404, never a leak.
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.response import Response

from campaign_express.permissions import CanView
from campaigns import exchanges, selectors, services
from campaigns.models import Advertiser, AuditEntry, Campaign, Creative, Exchange

User = get_user_model()
ACTION_PATTERN = "|".join(services.TRANSITIONS)


class AuditEntrySerializer(serializers.ModelSerializer):
    actor = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = AuditEntry
        fields = ["id", "at", "actor", "action", "entity", "entity_id", "entity_name",
                  "campaign_id", "changes", "from_status", "to_status", "note"]


class NoteSerializer(serializers.Serializer):
    note = serializers.CharField(required=False, allow_blank=True, default="")


# --- advertisers -----------------------------------------------------------------------------

class AdvertiserSerializer(serializers.ModelSerializer):
    marketers = serializers.SlugRelatedField(slug_field="username", many=True, required=False,
                                             queryset=User.objects.filter(is_active=True))

    class Meta:
        model = Advertiser
        fields = ["id", "name", "domain", "time_zone", "currency", "marketers", "is_active",
                  "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]


class AdvertiserViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin,
                        viewsets.ReadOnlyModelViewSet):
    serializer_class = AdvertiserSerializer
    search_fields = ["name", "domain"]
    filterset_fields = ["is_active", "currency"]
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return selectors.advertiser_list(user=self.request.user).prefetch_related("marketers")

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        marketers = data.pop("marketers", None)
        serializer.instance = services.advertiser_create(actor=self.request.user, data=data,
                                                         marketers=marketers)

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        marketers = data.pop("marketers", None)
        serializer.instance = services.advertiser_update(
            advertiser=serializer.instance, actor=self.request.user, data=data,
            marketers=marketers)


# --- campaigns -------------------------------------------------------------------------------

class CampaignSerializer(serializers.ModelSerializer):
    advertiser_name = serializers.CharField(source="advertiser.name", read_only=True)
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    submitted_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    approved_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Campaign
        fields = ["id", "advertiser", "advertiser_name", "name", "status", "start_at", "end_at",
                  "dayparts", "currency", "total_budget", "daily_budget", "spent", "pacing",
                  "base_bid_cpm", "max_bid_cpm", "frequency_cap_hour", "frequency_cap_day",
                  "frequency_cap_lifetime", *Campaign.TARGETING_FIELDS, "created_by",
                  "submitted_by", "approved_by", "approved_at", "review_note", "created_at",
                  "updated_at"]
        read_only_fields = ["status", "spent", "approved_at", "review_note", "created_at",
                            "updated_at"]
        extra_kwargs = {"currency": {"required": False}}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None and "advertiser" in self.fields:
            self.fields["advertiser"].queryset = selectors.advertiser_list(user=request.user)


class CampaignFilter(filters.FilterSet):
    status = filters.MultipleChoiceFilter(choices=Campaign.Status.choices)
    starts_after = filters.IsoDateTimeFilter(field_name="start_at", lookup_expr="gte")
    ends_before = filters.IsoDateTimeFilter(field_name="end_at", lookup_expr="lte")

    class Meta:
        model = Campaign
        fields = ["advertiser", "status", "pacing", "currency"]


class CampaignViewSet(viewsets.ModelViewSet):
    serializer_class = CampaignSerializer
    filterset_class = CampaignFilter
    search_fields = ["name", "advertiser__name"]
    ordering_fields = ["name", "start_at", "end_at", "created_at", "total_budget"]

    def get_queryset(self):
        return selectors.campaign_list(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = services.campaign_create(actor=self.request.user,
                                                       data=serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.campaign_update(
            campaign=serializer.instance, actor=self.request.user,
            data=serializer.validated_data)

    def perform_destroy(self, instance):
        services.campaign_delete(campaign=instance, actor=self.request.user)

    @extend_schema(
        operation_id="campaigns_transition", request=NoteSerializer,
        responses=CampaignSerializer,
        parameters=[OpenApiParameter("transition", OpenApiTypes.STR, OpenApiParameter.PATH,
                                     enum=list(services.TRANSITIONS),
                                     description="The workflow action.")],
        description="Move the campaign along its workflow: " + ", ".join(
            f"{name} ({' or '.join(t.sources)} → {t.target})"
            for name, t in services.TRANSITIONS.items()) + ". `reject` needs a note.")
    @action(detail=True, methods=["post"], url_path=f"(?P<transition>{ACTION_PATTERN})",
            permission_classes=[CanView])
    def transition(self, request, pk=None, transition: str = ""):
        campaign = self.get_object()
        note = NoteSerializer(data=request.data)
        note.is_valid(raise_exception=True)
        campaign = services.campaign_transition(campaign=campaign, actor=request.user,
                                                action=transition,
                                                note=note.validated_data["note"])
        return Response(CampaignSerializer(campaign, context={"request": request}).data)

    @extend_schema(responses=AuditEntrySerializer(many=True))
    @action(detail=True, methods=["get"], permission_classes=[CanView])
    def history(self, request, pk=None):
        campaign = self.get_object()
        entries = selectors.audit_list(user=request.user, campaign_id=campaign.pk)
        page = self.paginate_queryset(entries)
        return self.get_paginated_response(AuditEntrySerializer(page, many=True).data)


# --- creatives -------------------------------------------------------------------------------

class CreativeSerializer(serializers.ModelSerializer):
    created_by = serializers.SlugRelatedField(slug_field="username", read_only=True)
    reviewed_by = serializers.SlugRelatedField(slug_field="username", read_only=True)

    class Meta:
        model = Creative
        fields = ["id", "campaign", "name", "format", "sizes", "asset", "markup", "click_url",
                  "adomain", "app_bundle", "categories", "attributes", "mimes", "protocols",
                  "duration_seconds", "approval_status", "created_by", "reviewed_by",
                  "reviewed_at", "review_note", "created_at", "updated_at"]
        read_only_fields = ["approval_status", "reviewed_at", "review_note", "created_at",
                            "updated_at"]

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        if request is not None and "campaign" in self.fields:
            self.fields["campaign"].queryset = selectors.campaign_list(user=request.user)


class CreativeViewSet(viewsets.ModelViewSet):
    serializer_class = CreativeSerializer
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    filterset_fields = ["campaign", "format", "approval_status", "campaign__advertiser"]
    search_fields = ["name", "adomain", "campaign__name"]
    ordering_fields = ["name", "created_at"]

    def get_queryset(self):
        return selectors.creative_list(user=self.request.user)

    def perform_create(self, serializer):
        serializer.instance = services.creative_create(actor=self.request.user,
                                                       data=serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.creative_update(
            creative=serializer.instance, actor=self.request.user,
            data=serializer.validated_data)

    def perform_destroy(self, instance):
        services.creative_delete(creative=instance, actor=self.request.user)

    def _review(self, request, *, approve: bool) -> Response:
        creative = self.get_object()
        note = NoteSerializer(data=request.data)
        note.is_valid(raise_exception=True)
        creative = services.creative_review(creative=creative, actor=request.user,
                                            approve=approve, note=note.validated_data["note"])
        return Response(CreativeSerializer(creative, context={"request": request}).data)

    @extend_schema(request=NoteSerializer, responses=CreativeSerializer)
    @action(detail=True, methods=["post"], permission_classes=[CanView])
    def approve(self, request, pk=None):
        return self._review(request, approve=True)

    @extend_schema(request=NoteSerializer, responses=CreativeSerializer,
                   description="Reject the creative; a note saying why is required.")
    @action(detail=True, methods=["post"], permission_classes=[CanView])
    def reject(self, request, pk=None):
        return self._review(request, approve=False)


# --- exchanges (ops) -------------------------------------------------------------------------

class ExchangeSerializer(serializers.ModelSerializer):
    """``token`` is write-only and never read back (neither is its hash): ``has_token`` says
    whether one is set. Omit it on update to keep the current one."""

    token = serializers.CharField(write_only=True, required=False, min_length=16,
                                  max_length=200, trim_whitespace=True,
                                  help_text="The bearer token the exchange sends (auth: token); "
                                            "stored only as its sha256.")
    has_token = serializers.BooleanField(read_only=True)

    class Meta:
        model = Exchange
        fields = ["id", "name", "slug", "seat", "is_default", "auth", "token", "has_token",
                  "allowed_networks", "price_decryption", "price_key_ref", "currency",
                  "no_bid_style", "is_active", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        # The one-default constraint is checked by the service's full_clean, with its message.
        extra_kwargs = {"is_default": {"validators": []}}


class ExchangeViewSet(viewsets.ModelViewSet):
    queryset = Exchange.objects.all()
    serializer_class = ExchangeSerializer
    filterset_fields = ["is_active", "auth", "currency"]
    search_fields = ["name", "slug", "seat"]
    ordering_fields = ["name", "slug", "created_at"]

    def perform_create(self, serializer):
        data = dict(serializer.validated_data)
        token = data.pop("token", None)
        serializer.instance = exchanges.exchange_create(actor=self.request.user, data=data,
                                                       token=token)

    def perform_update(self, serializer):
        data = dict(serializer.validated_data)
        token = data.pop("token", None)
        serializer.instance = exchanges.exchange_update(
            exchange=serializer.instance, actor=self.request.user, data=data, token=token)

    def perform_destroy(self, instance):
        exchanges.exchange_delete(exchange=instance, actor=self.request.user)
