from rest_framework.routers import DefaultRouter

from dsp import apis

router = DefaultRouter()
router.register("dsp-partners", apis.DspPartnerViewSet, basename="dsp-partner")

urlpatterns = router.urls
