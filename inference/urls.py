from rest_framework.routers import DefaultRouter

from inference import apis

router = DefaultRouter()
router.register("models", apis.ModelVersionViewSet, basename="model-version")
router.register("rollouts", apis.RolloutViewSet, basename="rollout")

urlpatterns = router.urls
