"""The dashboard and the alert rules query only series the code emits.

A real bidder (embedded backends, a snapshot built here) answers bid requests and a billing
notice; its metrics are scraped with prometheus_client as its :9091 endpoint serves them, and
the web's /metrics is fetched through Django. Every metric name in the dashboard's and the
rules' expressions that starts with a platform prefix must be in a scrape. Names of the
exporters' series (redis_*, container_*, kube_*, up) are left out: those processes are not
part of this codebase. The rules themselves are checked and unit-tested with promtool when it
is installed (Debian package `prometheus`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml
from prometheus_client import start_http_server

from tests.bidding.bidder_fixtures import client, fixture, started_service

MONITORING = Path(__file__).resolve().parents[2] / "deploy" / "monitoring"
RULES = MONITORING / "prometheus" / "rules" / "campaign-express.yml"
RULE_TESTS = MONITORING / "prometheus" / "tests" / "campaign-express-test.yml"
DASHBOARD = MONITORING / "grafana" / "dashboards" / "campaign-express-main.json"
PREFIXES = ("bids_", "profile_", "npu_", "inference_", "model_", "analytics_", "dsp_",
            "loyalty_", "django_")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    rules = yaml.safe_load(RULES.read_text())
    return ([target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
            + [rule["expr"] for group in rules["groups"] for rule in group["rules"]])


def platform_names(expr: str) -> set[str]:
    """Identifiers outside string literals (label values) that carry a platform prefix."""
    bare = re.sub(r'"[^"]*"', '""', expr)
    return {name for name in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare)
            if name.startswith(PREFIXES)}


def scraped_names(text: str) -> set[str]:
    """Names with samples, and the families the scrape declares (# TYPE): a labelled counter
    such as npu_model_load_failures_total{name,reason} has no sample until its first event."""
    samples = {line.split("{", 1)[0].split(" ", 1)[0] for line in text.splitlines()
               if line and not line.startswith("#")}
    return samples | {line.split()[2] for line in text.splitlines()
                      if line.startswith("# TYPE ")}


def missing(wanted: set[str], scraped: set[str]) -> set[str]:
    return {name for name in wanted if name not in scraped and not (
        name.endswith(HISTOGRAM_SUFFIXES) and f"{name.rsplit('_', 1)[0]}_bucket" in scraped)}


def test_the_expressions_name_the_platform_series_they_are_about():
    names = set().union(*map(platform_names, expressions()))

    assert {"bids_requests_total", "bids_total_latency_us_bucket", "bids_no_bid_total",
            "bids_responses_total", "bids_shed_total", "profile_cache_total",
            "npu_inference_latency_us_bucket", "npu_model_load_failures_total",
            "analytics_queued_total", "analytics_flushed_total", "analytics_dropped_total",
            "analytics_flush_errors_total",
            "django_http_responses_total_by_status_total"} == names


def scrape_metrics_port() -> str:
    """What the bidder's metrics port serves (`prometheus_client.start_http_server`, as
    `python -m bidding` starts it), fetched over HTTP on a free port."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server, thread = start_http_server(port, addr="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            return response.read().decode()
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


async def test_every_bidder_series_in_the_dashboard_and_the_rules_is_emitted(tmp_path):
    service = await started_service(tmp_path)
    try:
        async with client(service) as http:
            bid = await http.post("/v1/bid", json=fixture("banner-site-2.6.json"))
            no_bid = await http.post("/v1/bid/reasons",
                                     json={**fixture("banner-site-2.6.json"), "tmax": 10})
            invalid = await http.post("/v1/bid", content=b"{")
            burl = bid.json()["seatbid"][0]["bid"][0]["burl"]
            billing = await http.get(burl.replace("${AUCTION_PRICE}", "2").removeprefix(
                "http://127.0.0.1:8080"))
    finally:
        await service.stop()
    scraped = scraped_names(scrape_metrics_port())
    wanted = {name for expr in expressions() for name in platform_names(expr)
              if not name.startswith("django_")}

    assert (bid.status_code, billing.status_code, invalid.status_code) == (200, 204, 400)
    assert no_bid.json() == {"id": "req-banner-26", "nbr": 15}
    assert missing(wanted, scraped) == set()


def test_every_web_series_in_the_dashboard_and_the_rules_is_emitted(client):
    client.get("/live")
    scraped = scraped_names(client.get("/metrics").content.decode())
    wanted = {name for expr in expressions() for name in platform_names(expr)
              if name.startswith("django_")}

    assert missing(wanted, scraped) == set()


def test_the_rules_pass_promtool_check_and_their_unit_tests():
    if shutil.which("promtool") is None:
        message = "promtool is not installed (scripts/services.sh installs Debian's prometheus)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    check = subprocess.run(["promtool", "check", "rules", str(RULES)],
                           capture_output=True, text=True, check=False)
    unit = subprocess.run(["promtool", "test", "rules", RULE_TESTS.name], cwd=RULE_TESTS.parent,
                          capture_output=True, text=True, check=False)

    assert (check.returncode, check.stderr) == (0, "")
    assert "SUCCESS: 15 rules found" in check.stdout
    assert (unit.returncode, unit.stderr) == (0, "")
    assert unit.stdout.strip().endswith("SUCCESS")
