"""Test settings: the same as base, with fast password hashing and media in a temporary folder."""

import tempfile
from pathlib import Path

from campaign_express.settings.base import *  # noqa: F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = Path(tempfile.mkdtemp(prefix="campaign-express-media-"))
CHDB_PATH = Path(tempfile.mkdtemp(prefix="campaign-express-chdb-")) / "chdb"
# Enqueued tasks run at once in the test's thread and transaction (see tasks.InlineRunner).
TASKS_INLINE = True
# Websocket tests run in one process: the in-memory channel layer, even when REDIS_URL is set.
CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
