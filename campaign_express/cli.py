"""Command-line entry: `manage.py` and the `campaign-express` console script run this."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "campaign_express.settings.base")
    from django.core.management import execute_from_command_line

    from campaign_express.env import ConfigError

    try:
        execute_from_command_line(sys.argv)
    except ConfigError as error:
        sys.exit(f"configuration error: {error}")
