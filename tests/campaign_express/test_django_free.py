"""What the bid path imports must not load Django: it runs without the ORM or settings."""

import subprocess
import sys

from tests.campaign_express.platform import ROOT

DJANGO_FREE = ["campaign_express.env", "campaign_express.backends.store",
               "campaign_express.backends.bus", "analytics.events", "bidding", "bidding.service",
               "bidding.app", "bidding.grpc_server", "inference"]


def test_bid_path_modules_import_without_django():
    code = (f"import sys\nfor name in {DJANGO_FREE!r}: __import__(name)\n"
            "loaded = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
            "print(loaded)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
