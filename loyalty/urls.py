"""`/api/v1/loyalty/...`: programs and members for marketers."""

from rest_framework.routers import DefaultRouter

from loyalty import apis

router = DefaultRouter()
router.register("loyalty/programs", apis.ProgramViewSet, basename="loyalty-program")
router.register("loyalty/tiers", apis.TierViewSet, basename="loyalty-tier")
router.register("loyalty/rewards", apis.RewardViewSet, basename="loyalty-reward")
router.register("loyalty/promotions", apis.PromotionViewSet, basename="loyalty-promotion")
router.register("loyalty/members", apis.MemberViewSet, basename="loyalty-member")
router.register("loyalty/ledger", apis.LedgerViewSet, basename="loyalty-ledger")

urlpatterns = router.urls
