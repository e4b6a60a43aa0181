"""Per-partner DSP metrics (Prometheus), labelled by partner seat."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter("dsp_requests_total", "Bid requests sent to partner DSPs.", ["partner"])
BIDS = Counter("dsp_bids_total", "Valid bids received from partner DSPs.", ["partner"])
WINS = Counter("dsp_wins_total", "Partner bids that won our auction.", ["partner"])
TIMEOUTS = Counter("dsp_timeouts_total", "Partner requests cut off at the deadline.",
                   ["partner"])
ERRORS = Counter("dsp_errors_total", "Partner requests that failed (transport, status, body).",
                 ["partner"])
DROPPED = Counter("dsp_dropped_bids_total", "Partner bids dropped by validation, by reason.",
                  ["partner", "reason"])
SKIPPED = Counter("dsp_skipped_total", "Partners not called for a request, by reason "
                  "(qps_limit, spend_cap, breaker_open, no_time, store_unavailable).",
                  ["partner", "reason"])
FORWARDED = Counter("dsp_notices_forwarded_total", "Win, billing and loss notices forwarded "
                    "to partners, by kind and result.", ["partner", "kind", "result"])
LATENCY = Histogram("dsp_latency_ms", "Partner response time in milliseconds.", ["partner"],
                    buckets=(5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000))
