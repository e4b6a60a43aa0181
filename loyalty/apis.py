"""`/api/v1/loyalty/...` for marketers: programs, tiers, rewards, promotions, members, the
ledger and tier changes, within the advertisers they may see (another's is a 404).

Model permissions as everywhere in the API; every write goes through `loyalty.services`.
Points never move here: they move by earning and redeeming (`/v1/loyalty/*`, NATS ingest)
and by the daily task, so the ledger stays the record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, viewsets
from rest_framework.decorators import action

from campaign_express.permissions import CanView
from campaigns.selectors import advertiser_list
from loyalty import selectors, services
from loyalty.models import LedgerEntry, Member, Program, Promotion, Reward, Tier, TierChange

SCOPED_FIELDS: dict[str, Callable[..., Any]] = {
    "advertiser": advertiser_list, "program": selectors.program_list,
    "min_tier": selectors.tier_list,
}


class ScopedSerializer(serializers.ModelSerializer):
    """Related choices limited to what the requesting user may see."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        request = self.context.get("request")
        for name, select in SCOPED_FIELDS.items():
            field = self.fields.get(name)
            if request is not None and field is not None and not field.read_only:
                field.queryset = select(user=request.user)


class TierSerializer(ScopedSerializer):
    class Meta:
        model = Tier
        fields = ["id", "program", "name", "qualifying_points", "earn_multiplier", "bid_boost",
                  "birthday_window_days", "points_expire"]


class ProgramSerializer(ScopedSerializer):
    advertiser_name = serializers.CharField(source="advertiser.name", read_only=True)
    tiers = TierSerializer(many=True, read_only=True)

    class Meta:
        model = Program
        fields = ["id", "advertiser", "advertiser_name", "name", "currency",
                  "qualifying_period_months", "points_expiry_days", "birthday_points",
                  "is_active", "tiers", "created_at", "updated_at"]
        read_only_fields = ["created_at", "updated_at"]
        extra_kwargs = {"currency": {"required": False}}


class RewardSerializer(ScopedSerializer):
    class Meta:
        model = Reward
        fields = ["id", "program", "code", "description", "points_cost", "value", "min_tier",
                  "is_active"]


class PromotionSerializer(ScopedSerializer):
    class Meta:
        model = Promotion
        fields = ["id", "program", "name", "channel", "multiplier", "starts_at", "ends_at"]


class MemberSerializer(ScopedSerializer):
    tier = serializers.CharField(source="tier.name", read_only=True)

    class Meta:
        model = Member
        fields = ["id", "program", "user_id", "tier", "balance", "qualifying_points",
                  "previous_qualifying_points", "qualifying_period_start", "lifetime_points",
                  "total_redemptions", "birthday", "preferred_channel", "last_earn_at",
                  "last_redeem_at", "enrolled_at", "updated_at"]
        read_only_fields = ["updated_at"]


class MemberChangeSerializer(serializers.ModelSerializer):
    class Meta:
        model = Member
        fields = ["birthday", "preferred_channel"]


class LedgerEntrySerializer(serializers.ModelSerializer):
    member = serializers.CharField(source="member.user_id", read_only=True)
    reward = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = LedgerEntry
        fields = ["id", "program", "member", "kind", "transaction_id", "points",
                  "balance_after", "reason", "channel", "reward", "details", "created_at"]


class TierChangeSerializer(serializers.ModelSerializer):
    member = serializers.CharField(source="member.user_id", read_only=True)

    class Meta:
        model = TierChange
        fields = ["id", "member", "from_tier", "to_tier", "direction", "cause",
                  "qualifying_points", "created_at"]


class ServiceViewSet(viewsets.ModelViewSet):
    """Writes through services: `create`, `update` and `delete` name them."""

    http_method_names = ["get", "post", "put", "patch", "delete", "head", "options"]

    def create_with(self, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def update_with(self, instance: Any, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def delete_with(self, instance: Any) -> None:
        raise NotImplementedError

    def perform_create(self, serializer):
        serializer.instance = self.create_with(dict(serializer.validated_data))

    def perform_update(self, serializer):
        serializer.instance = self.update_with(serializer.instance,
                                               dict(serializer.validated_data))

    def perform_destroy(self, instance):
        self.delete_with(instance)


class ProgramViewSet(ServiceViewSet):
    serializer_class = ProgramSerializer
    filterset_fields = ["advertiser", "is_active"]
    search_fields = ["name", "advertiser__name"]

    def get_queryset(self):
        return selectors.program_list(user=self.request.user).prefetch_related("tiers")

    def create_with(self, data):
        return services.program_create(actor=self.request.user, data=data)

    def update_with(self, instance, data):
        return services.program_update(program=instance, actor=self.request.user, data=data)

    def delete_with(self, instance):
        services.program_delete(program=instance, actor=self.request.user)


class TierViewSet(ServiceViewSet):
    serializer_class = TierSerializer
    filterset_fields = ["program"]

    def get_queryset(self):
        return selectors.tier_list(user=self.request.user)

    def create_with(self, data):
        return services.tier_create(actor=self.request.user, data=data)

    def update_with(self, instance, data):
        return services.tier_update(tier=instance, actor=self.request.user, data=data)

    def delete_with(self, instance):
        services.tier_delete(tier=instance, actor=self.request.user)


class RewardViewSet(ServiceViewSet):
    serializer_class = RewardSerializer
    filterset_fields = ["program", "is_active"]
    search_fields = ["code", "description"]

    def get_queryset(self):
        return selectors.reward_list(user=self.request.user)

    def create_with(self, data):
        return services.reward_save(actor=self.request.user, data=data)

    def update_with(self, instance, data):
        return services.reward_save(actor=self.request.user, data=data, reward=instance)

    def delete_with(self, instance):
        services.reward_delete(reward=instance, actor=self.request.user)


class PromotionViewSet(ServiceViewSet):
    serializer_class = PromotionSerializer
    filterset_fields = ["program", "channel"]

    def get_queryset(self):
        return selectors.promotion_list(user=self.request.user)

    def create_with(self, data):
        return services.promotion_save(actor=self.request.user, data=data)

    def update_with(self, instance, data):
        return services.promotion_save(actor=self.request.user, data=data, promotion=instance)

    def delete_with(self, instance):
        services.promotion_delete(promotion=instance, actor=self.request.user)


class MemberViewSet(mixins.CreateModelMixin, mixins.UpdateModelMixin,
                    viewsets.ReadOnlyModelViewSet):
    """Members: enrol one (`program`, `user_id`, optional `birthday`, `preferred_channel`),
    change those details; balances and tiers are read-only here."""

    filterset_fields = ["program", "tier__name", "user_id"]
    search_fields = ["user_id"]
    ordering_fields = ["balance", "lifetime_points", "enrolled_at"]

    def get_queryset(self):
        return selectors.member_list(user=self.request.user)

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return MemberChangeSerializer
        return MemberSerializer

    def perform_create(self, serializer):
        data = serializer.validated_data
        serializer.instance = services.member_enroll(
            actor=self.request.user, program=data["program"], user_id=data["user_id"],
            birthday=data.get("birthday"), preferred_channel=data.get("preferred_channel", ""))

    def perform_update(self, serializer):
        serializer.instance = services.member_update(
            member=serializer.instance, actor=self.request.user,
            data=dict(serializer.validated_data))

    @extend_schema(responses=LedgerEntrySerializer(many=True))
    @action(detail=True, methods=["get"], permission_classes=[CanView])
    def ledger(self, request, pk=None):
        member = self.get_object()
        page = self.paginate_queryset(member.ledger.select_related("member", "reward"))
        return self.get_paginated_response(LedgerEntrySerializer(page, many=True).data)

    @extend_schema(responses=TierChangeSerializer(many=True))
    @action(detail=True, methods=["get"], url_path="tier-changes", permission_classes=[CanView])
    def tier_changes(self, request, pk=None):
        member = self.get_object()
        page = self.paginate_queryset(member.tier_changes.select_related("member"))
        return self.get_paginated_response(TierChangeSerializer(page, many=True).data)


class LedgerViewSet(viewsets.ReadOnlyModelViewSet):
    """Every movement of points, newest first; filter by `program`, `member`, `kind`."""

    serializer_class = LedgerEntrySerializer
    filterset_fields = ["program", "member", "kind"]
    search_fields = ["transaction_id", "member__user_id"]

    def get_queryset(self):
        return selectors.ledger_list(user=self.request.user)
