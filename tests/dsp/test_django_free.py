"""The DSP runtime runs in the bidder: it must not load Django."""

import subprocess
import sys

from tests.campaign_express.platform import ROOT

RUNTIME = ["dsp.partners", "dsp.convert", "dsp.limits", "dsp.validation", "dsp.routing",
           "dsp.auction", "dsp.forwarding", "dsp.service", "dsp.bidder"]


def test_the_dsp_runtime_imports_without_django():
    code = (f"import sys\nfor name in {RUNTIME!r}: __import__(name)\n"
            "print(sorted(m for m in sys.modules if m == 'django' or m.startswith('django.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "[]"
