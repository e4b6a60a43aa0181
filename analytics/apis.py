"""Report API: campaign performance, no-bid reasons, loyalty and DSP summaries.

Views validate the query, scope it to the user (a marketer's advertisers, filtered in SQL;
a campaign or advertiser they cannot see is a 404), run one selector and serialize. Money is
a decimal string per currency (`{"USD": "12.500000"}`), never a float.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.exceptions import APIException
from rest_framework.permissions import BasePermission
from rest_framework.response import Response
from rest_framework.views import APIView

from analytics import selectors
from analytics.clickhouse import AnalyticsError
from analytics.reports import Grain, GroupBy, ReportKind, range_errors


class CanViewReports(BasePermission):
    """Reports show campaigns' numbers: whoever may view campaigns may read them, within the
    advertisers they see."""

    def has_permission(self, request, view) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.has_perm("campaigns.view_campaign"))


class AnalyticsUnavailableError(APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "Analytics is unavailable; try again shortly."
    default_code = "analytics_unavailable"


class ReportQuerySerializer(serializers.Serializer):
    start = serializers.DateField(help_text="First day (UTC), YYYY-MM-DD.")
    end = serializers.DateField(help_text="Last day (UTC, included), YYYY-MM-DD.")
    grain = serializers.ChoiceField(choices=[grain.value for grain in Grain], default="day",
                                    help_text="One row per hour or per day.")
    group_by = serializers.ChoiceField(choices=[group.value for group in GroupBy],
                                       default="campaign", help_text="What a row is about.")
    campaign = serializers.IntegerField(required=False, min_value=1,
                                        help_text="Only this campaign.")
    advertiser = serializers.IntegerField(required=False, min_value=1,
                                          help_text="Only this advertiser.")

    def validate(self, attrs: dict) -> dict:
        errors = range_errors(start=attrs["start"], end=attrs["end"],
                              grain=Grain(attrs["grain"]))
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class _Labelled(serializers.Serializer):
    bucket = serializers.DateTimeField(help_text="Start of the hour or day (UTC).")
    key = serializers.CharField(help_text="The id the events carry ('' when none).")
    name = serializers.SerializerMethodField()

    @extend_schema_field(OpenApiTypes.STR)
    def get_name(self, row) -> str:
        return self.context.get("labels", {}).get(row.key, "")


def _money() -> serializers.DictField:
    return serializers.DictField(child=serializers.DecimalField(max_digits=30,
                                                                decimal_places=6),
                                 help_text="Per currency code.")


class PerformanceRowSerializer(_Labelled):
    bucket = serializers.DateTimeField(allow_null=True,
                                       help_text="Start of the hour or day (UTC); null in "
                                                 "the total.")
    requests = serializers.IntegerField(help_text="Bid requests seen (not tied to a campaign).")
    bids = serializers.IntegerField()
    wins = serializers.IntegerField()
    losses = serializers.IntegerField()
    impressions = serializers.IntegerField()
    clicks = serializers.IntegerField()
    conversions = serializers.IntegerField()
    spend = _money()
    ecpm = _money()
    ctr = serializers.FloatField(allow_null=True, help_text="Clicks per impression.")
    win_rate = serializers.FloatField(allow_null=True, help_text="Wins per bid.")
    no_bids = serializers.IntegerField()
    no_bid_reasons = serializers.DictField(child=serializers.IntegerField())
    latency_p50_us = serializers.IntegerField(allow_null=True)
    latency_p95_us = serializers.IntegerField(allow_null=True)
    latency_p99_us = serializers.IntegerField(allow_null=True)


class NoBidRowSerializer(_Labelled):
    reason = serializers.CharField()
    count = serializers.IntegerField()


class LoyaltyRowSerializer(_Labelled):
    earned = serializers.IntegerField()
    earned_points = serializers.IntegerField()
    redeemed = serializers.IntegerField()
    redeemed_points = serializers.IntegerField()
    tier_changes = serializers.IntegerField()


class DspRowSerializer(_Labelled):
    sent = serializers.IntegerField()
    won = serializers.IntegerField()
    lost = serializers.IntegerField()
    timeouts = serializers.IntegerField()
    win_rate = serializers.FloatField(allow_null=True)


class _ReportSerializer(serializers.Serializer):
    start = serializers.DateField()
    end = serializers.DateField()
    grain = serializers.CharField()
    group_by = serializers.CharField()


class PerformanceReportSerializer(_ReportSerializer):
    rows = PerformanceRowSerializer(many=True)
    total = PerformanceRowSerializer()


class NoBidReportSerializer(_ReportSerializer):
    rows = NoBidRowSerializer(many=True)


class LoyaltyReportSerializer(_ReportSerializer):
    rows = LoyaltyRowSerializer(many=True)


class DspReportSerializer(_ReportSerializer):
    rows = DspRowSerializer(many=True)


class ReportApi(APIView):
    permission_classes = [CanViewReports]
    kind: ReportKind
    row_serializer: type[serializers.Serializer]

    def get(self, request):
        query = ReportQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        data = query.validated_data
        scope = selectors.report_scope(
            user=request.user, start=data["start"], end=data["end"], grain=Grain(data["grain"]),
            group_by=GroupBy(data["group_by"]), campaign_id=data.get("campaign"),
            advertiser_id=data.get("advertiser"))
        try:
            report = selectors.report_labelled(kind=self.kind, scope=scope)
        except AnalyticsError as error:
            raise AnalyticsUnavailableError() from error
        context = {"labels": report.labels}
        body = {"start": data["start"].isoformat(), "end": data["end"].isoformat(),
                "grain": data["grain"], "group_by": data["group_by"]}
        if self.kind is ReportKind.PERFORMANCE:
            body["rows"] = PerformanceRowSerializer(report.result.rows, many=True,
                                                    context=context).data
            body["total"] = PerformanceRowSerializer(report.result.total, context=context).data
        else:
            body["rows"] = self.row_serializer(report.result, many=True, context=context).data
        return Response(body)


def _schema(operation: str, response: type[serializers.Serializer], description: str):
    return extend_schema(operation_id=f"reports_{operation}", parameters=[ReportQuerySerializer],
                         responses=response, description=description)


class CampaignPerformanceApi(ReportApi):
    kind = ReportKind.PERFORMANCE
    row_serializer = PerformanceRowSerializer

    @_schema("campaign_performance", PerformanceReportSerializer,
             "Requests, bids, wins, impressions, clicks, conversions, spend, eCPM, CTR, win "
             "rate, no-bid reasons and bid latency percentiles per hour or day, grouped per "
             "advertiser, campaign, creative or exchange; `total` covers the whole range.")
    def get(self, request):
        return super().get(request)


class NoBidReasonsApi(ReportApi):
    kind = ReportKind.NO_BID_REASONS
    row_serializer = NoBidRowSerializer

    @_schema("no_bid_reasons", NoBidReportSerializer,
             "How often each no-bid reason occurred, per hour or day and group.")
    def get(self, request):
        return super().get(request)


class LoyaltyApi(ReportApi):
    kind = ReportKind.LOYALTY
    row_serializer = LoyaltyRowSerializer

    @_schema("loyalty", LoyaltyReportSerializer,
             "Loyalty earn, redeem and tier-change events and points per advertiser.")
    def get(self, request):
        return super().get(request)


class DspApi(ReportApi):
    kind = ReportKind.DSP
    row_serializer = DspRowSerializer

    @_schema("dsp", DspReportSerializer,
             "Requests sent to each partner DSP and how they ended (won, lost, timed out).")
    def get(self, request):
        return super().get(request)
