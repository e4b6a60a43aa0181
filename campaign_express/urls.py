from django.conf import settings
from django.contrib import admin
from django.urls import include, path
from django.views.static import serve
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.authtoken.views import obtain_auth_token

from analytics.admin_views import live_view
from campaign_express import health
from dsp.apis import dsp_status_view

admin.site.site_header = "Campaign Express"
admin.site.site_title = "Campaign Express"
admin.site.index_title = "Campaigns, creatives and partners"

urlpatterns = [
    path("health", health.health, name="health"),
    path("live", health.live, name="live"),
    path("ready", health.ready, name="ready"),
    path("admin/analytics/live/", live_view, name="analytics-live"),
    path("admin/", admin.site.urls),
    path("api/v1/auth/token/", obtain_auth_token, name="api-token"),
    path("api/v1/", include("campaigns.urls")),
    path("api/v1/", include("inference.urls")),
    path("api/v1/", include("analytics.urls")),
    path("api/v1/", include("loyalty.urls")),
    path("api/v1/", include("dsp.urls")),
    path("v1/dsp/status", dsp_status_view, name="dsp-status"),
    path("v1/loyalty/", include("loyalty.client_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api-schema"), name="api-docs"),
    path("", include("django_prometheus.urls")),
]

if not settings.STORAGES["default"]["BACKEND"].endswith("S3Storage"):
    # Uploaded creative assets in embedded mode; production serves them from object storage.
    urlpatterns.append(path(f"{settings.MEDIA_URL.strip('/')}/<path:path>", serve,
                            {"document_root": settings.MEDIA_ROOT}))
