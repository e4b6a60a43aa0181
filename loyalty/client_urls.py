"""`/v1/loyalty/`: the machine callers' paths, as the original design named them."""

from django.urls import path

from loyalty import client_apis

urlpatterns = [
    path("earn", client_apis.EarnView.as_view(), name="loyalty-earn"),
    path("redeem", client_apis.RedeemView.as_view(), name="loyalty-redeem"),
    path("balance/<str:member>", client_apis.BalanceView.as_view(), name="loyalty-balance"),
    path("reward-signal", client_apis.RewardSignalView.as_view(), name="loyalty-reward-signal"),
]
