"""Bid path metrics, named as the dashboards and alerts query them: the Grafana dashboard
(`deploy/monitoring/grafana/dashboards/campaign-express-main.json`) and the Prometheus rules
(`deploy/monitoring/prometheus/rules/campaign-express.yml`). Renaming one breaks them."""

from __future__ import annotations

from functools import cache

from prometheus_client import Counter, Gauge, Histogram

LATENCY_BUCKETS_US = (250, 500, 1_000, 2_000, 3_000, 5_000, 7_500, 10_000, 15_000, 25_000,
                      50_000, 100_000)

REQUESTS = Counter("bids_requests_total", "Bid requests received.", ["exchange"])
RESPONSES = Counter("bids_responses_total", "Bid requests answered, by outcome "
                    "(bid, no_bid, invalid, refused).", ["exchange", "outcome"])
NO_BIDS = Counter("bids_no_bid_total", "No-bids by our reason.", ["reason"])
FREQUENCY_CAPPED = Counter("bids_frequency_capped_total",
                           "Candidates left out because the user reached a frequency cap.")
LATENCY_US = Histogram("bids_total_latency_us",
                       "Time from receiving a bid request to answering it, in microseconds.",
                       buckets=LATENCY_BUCKETS_US)
SNAPSHOT_VERSION = Gauge("bids_snapshot_version", "Version of the config snapshot served.")
SNAPSHOT_CAMPAIGNS = Gauge("bids_snapshot_campaigns", "Active campaigns in the served snapshot.")
AGENT_QUEUE_DEPTH = Gauge("bids_agent_queue_depth",
                          "Bid requests waiting for a bid agent (bidding/agents.py).")
SHED = Counter("bids_shed_total", "Bid requests answered with a no-bid at once because the "
               "agent queue was full.")

# A labelled child per label values, kept: `labels()` validates and locks on every call, a few
# µs each, several times per bid. The label values are few (exchanges, outcomes, reasons).
requests = cache(REQUESTS.labels)
responses = cache(RESPONSES.labels)
no_bids = cache(NO_BIDS.labels)
