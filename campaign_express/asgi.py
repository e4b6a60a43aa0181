"""ASGI entry point of the web process: Django over HTTP, the live view over websockets.

Django is set up (`get_asgi_application`) before the websocket routes are imported, since
the consumers import models. Websockets authenticate with the admin's session cookie and
only from origins in ALLOWED_HOSTS, so another site cannot open one with a user's cookie.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "campaign_express.settings.base")

django_application = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from analytics.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter({
    "http": django_application,
    "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
})
