from django.urls import path

from analytics import apis

urlpatterns = [
    path("reports/campaign-performance/", apis.CampaignPerformanceApi.as_view(),
         name="report-campaign-performance"),
    path("reports/no-bid-reasons/", apis.NoBidReasonsApi.as_view(),
         name="report-no-bid-reasons"),
    path("reports/loyalty/", apis.LoyaltyApi.as_view(), name="report-loyalty"),
    path("reports/dsp/", apis.DspApi.as_view(), name="report-dsp"),
]
