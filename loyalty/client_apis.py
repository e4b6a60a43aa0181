"""`/v1/loyalty/*`: earn, redeem, balance and reward signals for machine callers.

The paths are the original design's. A caller authenticates with an API key of one program
(`loyalty.auth`); members are named by the platform's user id. Earn and redeem are idempotent
(transaction id, idempotency key): a repeated call gets the first call's answer, marked with
the header ``Idempotent-Replayed: true``. A refused redeem is a 4xx with ``detail`` and
``code`` (``insufficient_points``, ``tier_too_low``, ...) and changes nothing.
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from django.utils import timezone
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from loyalty import metrics, selectors
from loyalty.auth import ApiKeyAuthentication, KeyAllowsAction
from loyalty.models import CODE, ApiKey
from loyalty.services import EarnResult, RedeemResult, points_earn, points_redeem

SIGNAL_TYPES = ("clicked", "redeemed", "ignored")


class ClientView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [KeyAllowsAction]
    key_action = ""

    def initial(self, request, *args, **kwargs):
        if not settings.CONFIG.loyalty_enabled:
            raise Http404("Loyalty is not enabled on this platform.")
        super().initial(request, *args, **kwargs)

    @property
    def api_key(self) -> ApiKey:
        return self.request.auth


def _answer(data: dict, *, is_replay: bool) -> Response:
    response = Response(data, status=status.HTTP_200_OK)
    if is_replay:
        response["Idempotent-Replayed"] = "true"
    return response


class EarnInput(serializers.Serializer):
    member = serializers.CharField(max_length=200, help_text="The platform's user id.")
    amount = serializers.DecimalField(max_digits=14, decimal_places=4)
    currency = serializers.CharField(max_length=3, required=False, allow_blank=True,
                                     help_text="ISO 4217; the program's currency when absent.")
    channel = serializers.CharField(max_length=50, required=False, allow_blank=True,
                                    validators=[CODE])
    transaction_id = serializers.CharField(max_length=200)
    referral = serializers.BooleanField(required=False, default=False)
    digital = serializers.BooleanField(required=False, default=False)


class EarnOutput(serializers.Serializer):
    member = serializers.CharField()
    transaction_id = serializers.CharField()
    points_earned = serializers.IntegerField(source="points")
    balance = serializers.IntegerField()
    earn_rate = serializers.DecimalField(max_digits=10, decimal_places=4, coerce_to_string=True)
    tier = serializers.CharField()
    tier_changed = serializers.BooleanField()
    previous_tier = serializers.CharField(allow_null=True)


class EarnView(ClientView):
    key_action = ApiKey.Action.EARN

    @extend_schema(operation_id="loyalty_earn", request=EarnInput, responses=EarnOutput,
                   description="Award the points a purchase earns (enrolling a new buyer).")
    def post(self, request):
        data = EarnInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        result: EarnResult = points_earn(
            program=self.api_key.program, user_id=values["member"], amount=values["amount"],
            currency=values.get("currency", ""), channel=values.get("channel", ""),
            transaction_id=values["transaction_id"], is_referral=values["referral"],
            is_digital=values["digital"])
        return _answer(EarnOutput(result).data, is_replay=result.is_replay)


class RedeemInput(serializers.Serializer):
    member = serializers.CharField(max_length=200)
    reward = serializers.CharField(max_length=50, help_text="The reward's code.")
    channel = serializers.CharField(max_length=50, required=False, allow_blank=True,
                                    validators=[CODE])
    idempotency_key = serializers.CharField(max_length=200, required=False, allow_blank=True,
                                            help_text="Or the Idempotency-Key header.")


class RedeemOutput(serializers.Serializer):
    member = serializers.CharField()
    idempotency_key = serializers.CharField()
    reward = serializers.CharField()
    description = serializers.CharField()
    value = serializers.DecimalField(max_digits=14, decimal_places=4, coerce_to_string=True)
    points_redeemed = serializers.IntegerField(source="points")
    balance = serializers.IntegerField()
    tier = serializers.CharField()


class RedeemView(ClientView):
    key_action = ApiKey.Action.REDEEM

    @extend_schema(operation_id="loyalty_redeem", request=RedeemInput, responses=RedeemOutput,
                   description="Spend a member's points on a reward; 409 with code "
                               "insufficient_points or tier_too_low changes nothing.")
    def post(self, request):
        data = RedeemInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        result: RedeemResult = points_redeem(
            program=self.api_key.program, user_id=values["member"],
            reward_code=values["reward"], channel=values.get("channel", ""),
            idempotency_key=values.get("idempotency_key")
            or request.headers.get("Idempotency-Key", ""))
        return _answer(RedeemOutput(result).data, is_replay=result.is_replay)


class BalanceOutput(serializers.Serializer):
    member = serializers.CharField()
    program = serializers.IntegerField()
    tier = serializers.CharField()
    balance = serializers.IntegerField()
    qualifying_points = serializers.IntegerField()
    previous_qualifying_points = serializers.IntegerField()
    qualifying_period_start = serializers.DateField()
    tier_progress = serializers.DecimalField(max_digits=5, decimal_places=3)
    next_tier = serializers.CharField(allow_null=True)
    points_to_next_tier = serializers.IntegerField(allow_null=True)
    effective_earn_rate = serializers.DecimalField(max_digits=10, decimal_places=4)
    lifetime_points = serializers.IntegerField()
    total_redemptions = serializers.IntegerField()
    last_earn_at = serializers.DateTimeField(allow_null=True)
    last_redeem_at = serializers.DateTimeField(allow_null=True)


class BalanceView(ClientView):
    key_action = ApiKey.Action.BALANCE

    @extend_schema(operation_id="loyalty_balance", responses=BalanceOutput)
    def get(self, request, member: str):
        balance = selectors.member_balance(program=self.api_key.program, user_id=member,
                                           now=timezone.now())
        if balance is None:
            raise Http404(f"{member!r} is not a member of this program.")
        return Response(BalanceOutput(balance).data)


class RewardSignalInput(serializers.Serializer):
    offer_id = serializers.CharField(max_length=200)
    member = serializers.CharField(max_length=200)
    signal_type = serializers.ChoiceField(choices=SIGNAL_TYPES)
    reward_value = serializers.DecimalField(max_digits=14, decimal_places=4, required=False)
    tier = serializers.CharField(max_length=30, required=False)
    timestamp = serializers.DateTimeField(required=False)


class RewardSignalView(ClientView):
    key_action = ApiKey.Action.REWARD_SIGNAL

    @extend_schema(operation_id="loyalty_reward_signal", request=RewardSignalInput,
                   responses={202: inline_serializer("RewardSignalAccepted", {
                       "accepted": serializers.BooleanField()})},
                   description="How a member responded to a loyalty offer; counted.")
    def post(self, request):
        data = RewardSignalInput(data=request.data)
        data.is_valid(raise_exception=True)
        metrics.REWARD_SIGNALS.labels(type=data.validated_data["signal_type"]).inc()
        return Response({"accepted": True}, status=status.HTTP_202_ACCEPTED)
