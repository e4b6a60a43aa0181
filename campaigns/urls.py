from rest_framework.routers import DefaultRouter

from campaigns import apis

router = DefaultRouter()
router.register("advertisers", apis.AdvertiserViewSet, basename="advertiser")
router.register("campaigns", apis.CampaignViewSet, basename="campaign")
router.register("creatives", apis.CreativeViewSet, basename="creative")
router.register("exchanges", apis.ExchangeViewSet, basename="exchange")

urlpatterns = router.urls
