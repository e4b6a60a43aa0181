"""ASGI entry point of the web process (Django admin, REST API, health)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "campaign_express.settings.base")

application = get_asgi_application()
