"""A marketer's first look, in a real browser: log in, open a campaign's report, watch bids live.

Drives Debian's `chromium` through its `chromium-driver` (Selenium) against the real embedded
platform (`manage.py run --demo`). Without them the tests skip, except in CI (CI=true), where
a missing browser fails: `scripts/services.sh` installs both.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from tests.campaign_express.platform import ROOT, running_platform

pytestmark = [pytest.mark.slow, pytest.mark.browser]

T = TypeVar("T")
CAMPAIGN = "Coffee Everywhere"  # the demo campaign that bids on docs/examples/bid-request.json


def _browser_paths() -> tuple[str, str]:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    try:
        import selenium  # noqa: F401
    except ImportError:
        chromium = None
    if chromium is None or driver is None:
        reason = ("headless browser tests need Debian's chromium and chromium-driver and the "
                  "selenium package (scripts/services.sh and the `test` extra install them)")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return chromium, driver


def _wait(what: str, probe: Callable[[], T | None], seconds: float = 15) -> T:
    """Poll `probe` until it returns something truthy; a bounded wait, as a person would."""
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"waited {seconds} s for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """The running demo platform's base URL and the marketer's password (shown once at seed)."""
    _browser_paths()
    data_dir = tmp_path_factory.mktemp("platform")
    with running_platform(data_dir, demo=True) as base:
        log = (data_dir / "platform.log").read_text()
        password = re.search(r"marketer\s+marketer\s+password: (\S+)", log)
        assert password, log[-2000:]
        yield base, password.group(1)


@pytest.fixture(scope="module")
def browser(platform: tuple[str, str]) -> Iterator[Any]:
    """Headless Chromium, logged into the admin as the demo marketer."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By

    chromium, driver_path = _browser_paths()
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1400,1000"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.implicitly_wait(0)
    base, password = platform
    try:
        driver.get(f"{base}/admin/login/?next=/admin/")
        driver.find_element(By.ID, "id_username").send_keys("marketer")
        driver.find_element(By.ID, "id_password").send_keys(password)
        driver.find_element(By.CSS_SELECTOR, "input[type=submit]").click()
        _wait("the admin index", lambda: "Log out" in driver.page_source)
        yield driver
    finally:
        driver.quit()


def _open_campaign(browser: Any, base: str) -> None:
    from selenium.webdriver.common.by import By

    browser.get(f"{base}/admin/campaigns/campaign/")
    browser.find_element(By.LINK_TEXT, CAMPAIGN).click()
    _wait("the campaign's change page", lambda: CAMPAIGN in browser.title)


def test_a_marketer_opens_a_campaign_and_sees_its_report_chart(platform, browser):
    from selenium.webdriver.common.by import By

    _open_campaign(browser, platform[0])

    charts = _wait("the campaign's report chart", lambda: browser.find_elements(
        By.CSS_SELECTOR, ".analytics-campaign-performance svg.analytics-chart"))
    browser.execute_script("arguments[0].scrollIntoView()", charts[0])
    assert charts[0].is_displayed()
    assert charts[0].size["width"] > 200
    assert charts[0].get_attribute("aria-label").startswith(f"{CAMPAIGN}: the last 7 days")


def test_a_marketer_sees_the_live_view_update_while_bids_flow(platform, browser):
    from selenium.webdriver.common.by import By

    base = platform[0]
    browser.get(f"{base}/admin/campaigns/campaign/")
    browser.find_element(By.CSS_SELECTOR, ".object-tools a[href='/admin/analytics/live/']").click()
    status = browser.find_element(By.ID, "live-status")
    _wait("a first snapshot", lambda: int(status.get_attribute("data-updates")) >= 1)
    rows = {row.get_attribute("data-campaign"): row.find_element(By.CSS_SELECTOR, "td.name").text
            for row in browser.find_elements(By.CSS_SELECTOR, "#live-campaigns tr[data-campaign]")}
    assert CAMPAIGN in rows.values()
    assert "Weekend Getaways" not in rows.values()  # another advertiser's active campaign

    campaign_id, bids_sent = _send_bids(base, count=20)
    updates = int(status.get_attribute("data-updates"))
    _wait("the live view to update after the bids",
          lambda: int(status.get_attribute("data-updates")) >= updates + 2)
    row = browser.find_element(By.CSS_SELECTOR, f'tr[data-campaign="{campaign_id}"]')
    assert row.find_element(By.CSS_SELECTOR, "td.name").text == CAMPAIGN

    _wait(f"the campaign's {bids_sent} bids in the live view",
          lambda: row.get_attribute("data-window-bids") == str(bids_sent))
    assert row.find_element(By.CSS_SELECTOR, "td.win-rate").text == "0%"  # no win notices
    assert status.text.startswith("Live · updated")


def _send_bids(base: str, *, count: int) -> tuple[str, int]:
    """POST the README's sample request `count` times (as different users); the campaign that
    bid, and how many bids it made."""
    sample = json.loads((ROOT / "docs" / "examples" / "bid-request.json").read_text())
    campaigns = []
    with httpx.Client(timeout=5) as client:
        for index in range(count):
            request = {**sample, "id": f"live-view-{index}",
                       "user": {"id": f"live-view-user-{index}"}}
            answer = client.post(f"{base}/v1/bid", json=request)
            if answer.status_code == 200:
                campaigns.append(answer.json()["seatbid"][0]["bid"][0]["cid"])
            time.sleep(0.05)
    assert campaigns, "the platform did not bid on the sample request"
    assert len(set(campaigns)) == 1, campaigns
    return campaigns[0], len(campaigns)
