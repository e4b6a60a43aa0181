"""Websocket routes of the web process (campaign_express.asgi puts them behind auth)."""

from django.urls import path

from analytics.consumers import LiveConsumer

websocket_urlpatterns = [
    path("ws/analytics/live/", LiveConsumer.as_asgi(), name="analytics-live-socket"),
]
