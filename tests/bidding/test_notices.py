"""Notices from a real bid: signatures, idempotency, spend, caps, loss and clicks."""

import base64
import hashlib
import hmac
import os
from datetime import UTC, datetime
from decimal import Decimal
from urllib.parse import parse_qsl, urlsplit

import pytest
from prometheus_client import REGISTRY

from bidding.budget import COMMIT, COUNT_IMPRESSION, spend_keys, user_key
from bidding.engine import CAMPAIGN_NOTICE_FIELDS, NOTICE_FIELDS
from bidding.notices import COUNT_CONVERSION, AmountOutOfRange, NoticeHandler, notice_amount
from bidding.signing import signed_query
from bidding.snapshot import ExchangeEntry
from tests.bidding.bidder_fixtures import (
    EXCHANGES,
    SECRET,
    FailsOnce,
    campaign,
    client,
    creative,
    fixture,
    snapshot,
    started_service,
)


@pytest.fixture
async def bidder(tmp_path):
    service = await started_service(tmp_path, campaign(
        1, creative(11, "banner", click_url="https://brand.example/landing?from=ad"),
        frequency_cap_day=1, pacing="accelerated"))
    handler = NoticeHandler(store=service.store, ledger=service.engine.ledger, secret=SECRET)
    yield service, handler
    await service.stop()


async def bid_urls(service) -> dict[str, str]:
    async with client(service) as http:
        response = await http.post("/v1/bid", json=fixture("banner-site-2.6.json"))
    bid = response.json()["seatbid"][0]["bid"][0]
    adm = bid["adm"]
    click = adm[adm.index("http://127.0.0.1:8080/v1/click"):].split('"')[0].replace("&amp;", "&")
    return {"win": bid["nurl"], "billing": bid["burl"], "loss": bid["lurl"], "click": click}


def query(url: str, **macros: str) -> tuple[str, dict[str, str]]:
    for name, value in macros.items():
        url = url.replace("${" + name + "}", value)
    parts = urlsplit(url)
    return parts.path.rsplit("/", 1)[1], dict(parse_qsl(parts.query, keep_blank_values=True))


async def notice(service, handler, url: str, **macros: str):
    kind, fields = query(url, **macros)
    return await handler.handle(kind, fields, index=service.engine.index)


async def test_a_billing_notice_turns_the_hold_into_spend_once_and_counts_the_cap(bidder):
    service, handler = bidder
    urls = await bid_urls(service)

    first = await notice(service, handler, urls["billing"], AUCTION_PRICE="1.5")
    repeat = await notice(service, handler, urls["billing"], AUCTION_PRICE="1.5")

    assert (first.status, repeat.status) == (204, 204)
    assert await service.engine.ledger.spent(1) == 1500  # 1.5 CPM is 0.0015 per impression
    assert await service.engine.ledger.capped(
        user=user_key("ce-user-123"), campaigns=service.engine.index.snapshot.campaigns) == {1}


async def test_a_forged_or_altered_notice_is_refused_and_counts_nothing(bidder):
    service, handler = bidder
    kind, fields = query((await bid_urls(service))["billing"], AUCTION_PRICE="9")

    altered = await handler.handle(kind, {**fields, "campaign": "2"},
                                   index=service.engine.index)
    unsigned = await handler.handle(kind, {**fields, "sig": "0" * 32},
                                    index=service.engine.index)

    assert (altered.status, unsigned.status) == (403, 403)
    assert await service.engine.ledger.spent(1) == 0


@pytest.mark.parametrize("price", ["", "AUDIT", "${AUCTION_PRICE}", "abc", "-1"])
async def test_a_billing_notice_without_a_usable_price_counts_no_spend(bidder, price):
    service, handler = bidder
    url = (await bid_urls(service))["billing"]

    answer = await notice(service, handler, url.replace("${AUCTION_PRICE}", price))

    assert answer.status == 204
    assert await service.engine.ledger.spent(1) == 0


async def test_an_audit_billing_notice_leaves_the_real_one_to_count_once(bidder):
    service, handler = bidder
    url = (await bid_urls(service))["billing"]

    answers = [await notice(service, handler, url, AUCTION_PRICE=price)
               for price in ("AUDIT", "", "2", "2")]

    assert [answer.status for answer in answers] == [204, 204, 204, 204]
    assert await service.engine.ledger.spent(1) == 2000  # 2 CPM, counted once


async def test_a_loss_notice_releases_the_hold(bidder):
    service, handler = bidder
    urls = await bid_urls(service)
    kind, fields = query(urls["loss"], AUCTION_LOSS="102", AUCTION_PRICE="")

    answer = await handler.handle(kind, fields, index=service.engine.index)

    assert answer.status == 204
    released = await service.engine.ledger.release(campaign_id=1, hold_id=fields["bid"],
                                                   minute=int(fields["hold"]))
    assert released == 0  # already released by the notice


async def test_loss_codes_label_the_loss_metric_only_as_integers(bidder):
    service, handler = bidder

    def losses(code: str) -> float:
        return REGISTRY.get_sample_value("bids_losses_total", {"code": code}) or 0.0

    before = {code: losses(code) for code in ("102", "exchange", "invalid", "unknown")}
    for loss in ("0102", "1042", "<script>", "1e3", "${AUCTION_LOSS}", ""):
        await notice(service, handler, (await bid_urls(service))["loss"], AUCTION_LOSS=loss,
                     AUCTION_PRICE="")

    assert {code: losses(code) - count for code, count in before.items()} == {
        "102": 1, "exchange": 1, "invalid": 2, "unknown": 2}
    assert (losses("0102"), losses("<script>"), losses("1042")) == (0, 0, 0)


async def test_a_click_redirects_to_the_landing_page(bidder):
    service, handler = bidder
    answer = await notice(service, handler, (await bid_urls(service))["click"])

    assert answer.status == 302
    assert answer.location.startswith("https://brand.example/landing?from=ad&ce_click=")


async def test_notice_urls_answer_over_http_get_and_post(bidder):
    service, _ = bidder
    urls = await bid_urls(service)
    billing = urls["billing"].replace("${AUCTION_PRICE}", "2").removeprefix(
        "http://127.0.0.1:8080")
    async with client(service) as http:
        counted = await http.get(billing)
        again = await http.post(billing)
        forged = await http.get(billing.replace("campaign=1", "campaign=9"))
        click = await http.get(urls["click"].removeprefix("http://127.0.0.1:8080"))

    assert (counted.status_code, again.status_code, forged.status_code) == (204, 204, 403)
    assert click.status_code == 302
    assert click.headers["location"].startswith("https://brand.example/landing?from=ad&ce_click=")
    assert await service.engine.ledger.spent(1) == 2000


def encrypt_doubleclick(micros: int, encryption_key: bytes, integrity_key: bytes) -> str:
    """The exchange's side of the scheme, to make tokens for the test."""
    iv = os.urandom(16)
    price = micros.to_bytes(8, "big")
    pad = hmac.new(encryption_key, iv, hashlib.sha1).digest()[:8]
    signature = hmac.new(integrity_key, price + iv, hashlib.sha1).digest()[:4]
    ciphertext = bytes(a ^ b for a, b in zip(price, pad, strict=True))
    return base64.urlsafe_b64encode(iv + ciphertext + signature).decode().rstrip("=")


async def test_an_encrypted_price_is_decrypted_with_the_exchanges_keys(tmp_path, monkeypatch):
    encryption, integrity = os.urandom(32), os.urandom(32)
    monkeypatch.setenv("TEST_ADX_KEYS", ",".join(
        base64.urlsafe_b64encode(key).decode() for key in (encryption, integrity)))
    exchanges = (*EXCHANGES, ExchangeEntry(slug="adx", name="AdX", seat="ce-seat",
                                           price_decryption="doubleclick",
                                           price_key_ref="TEST_ADX_KEYS"))
    service = await started_service(tmp_path)
    service.install(snapshot(campaign(1, creative(11, "banner"), pacing="accelerated"),
                             version=2, exchanges=exchanges))
    handler = NoticeHandler(store=service.store, ledger=service.engine.ledger, secret=SECRET)
    async with client(service) as http:
        bid = (await http.post("/v1/bid/adx", json=fixture("banner-site-2.6.json"))).json()
    burl = bid["seatbid"][0]["bid"][0]["burl"]

    forged = await notice(service, handler, burl, AUCTION_PRICE=encrypt_doubleclick(
        2_500_000, encryption, os.urandom(32)))
    counted = await notice(service, handler, burl, AUCTION_PRICE=encrypt_doubleclick(
        2_500_000, encryption, integrity))

    assert (forged.status, counted.status) == (204, 204)
    # The forged price counted nothing and left the notice to the genuine one.
    assert await service.engine.ledger.spent(1) == 2500  # 2.50 CPM: 0.0025 an impression
    await service.stop()


async def test_a_conversion_postback_counts_once_per_click_and_refuses_forged_tokens(bidder):
    service, _ = bidder
    urls = await bid_urls(service)
    async with client(service) as http:
        landing = (await http.get(urls["click"].removeprefix("http://127.0.0.1:8080")))
        token = dict(parse_qsl(urlsplit(landing.headers["location"]).query))["ce_click"]
        first = await http.get(f"/v1/conversion?click={token}&value=19.90")
        again = await http.post(f"/v1/conversion?click={token}&value=19.90")
        forged = await http.get(f"/v1/conversion?click={token[:-4]}AAAA")

    assert (first.status_code, again.status_code, forged.status_code) == (204, 204, 403)
    assert await service.store.get("conversions:{c1}:count") == b"1"
    assert await service.store.get("conversions:{c1}:value") == b"19900000"


async def test_a_test_auction_holds_no_budget_and_its_billing_counts_nothing(bidder):
    service, handler = bidder
    async with client(service) as http:
        response = await http.post("/v1/bid", json={**fixture("banner-site-2.6.json"), "test": 1})
    burl = response.json()["seatbid"][0]["bid"][0]["burl"]
    _, fields = query(burl)
    held = await service.engine.ledger.release(campaign_id=1, hold_id=fields["bid"],
                                               minute=int(fields["hold"]))

    answer = await notice(service, handler, burl, AUCTION_PRICE="2")

    assert held == 0  # nothing was held for it
    assert answer.status == 204
    assert fields["test"] == "1"
    assert await service.engine.ledger.spent(1) == 0
    assert await service.engine.ledger.capped(
        user=user_key("ce-user-123"), campaigns=service.engine.index.snapshot.campaigns) == set()


@pytest.mark.parametrize(("script", "ran"), [(COMMIT, True), (COUNT_IMPRESSION, False),
                                             (COUNT_IMPRESSION, True)],
                         ids=["commit-reply-lost", "cap-count-failed", "cap-count-reply-lost"])
async def test_a_billing_retried_after_a_store_error_counts_spend_and_cap_once(
        tmp_path, script, ran):
    store = FailsOnce()
    service = await started_service(tmp_path, campaign(
        1, creative(11, "banner"), frequency_cap_day=2, pacing="accelerated"), store=store)
    handler = NoticeHandler(store=store, ledger=service.engine.ledger, secret=SECRET)
    billing = (await bid_urls(service))["billing"]
    store.fail(script, ran=ran)

    failed = await notice(service, handler, billing, AUCTION_PRICE="1000")
    retried = await notice(service, handler, billing, AUCTION_PRICE="1000")
    repeated = await notice(service, handler, billing, AUCTION_PRICE="1000")

    assert (failed.status, retried.status, repeated.status) == (503, 204, 204)
    assert await service.engine.ledger.spent(1) == 1_000_000  # 1000 CPM: 1.00, counted once
    capped = service.engine.index.snapshot.campaigns
    user = user_key("ce-user-123")
    assert await service.engine.ledger.capped(user=user, campaigns=capped) == set()
    # One impression counted of the two the cap allows: the next one reaches it.
    await service.engine.ledger.count_impression(user=user, campaign_id=1)
    assert await service.engine.ledger.capped(user=user, campaigns=capped) == {1}
    await service.stop()


@pytest.mark.parametrize("ran", [False, True], ids=["count-failed", "count-reply-lost"])
async def test_a_conversion_retried_after_a_store_error_counts_once(tmp_path, ran):
    store = FailsOnce()
    service = await started_service(tmp_path, campaign(1, creative(11, "banner")), store=store)
    click = (await bid_urls(service))["click"]
    async with client(service) as http:
        landing = await http.get(click.removeprefix("http://127.0.0.1:8080"))
        token = dict(parse_qsl(urlsplit(landing.headers["location"]).query))["ce_click"]
        store.fail(COUNT_CONVERSION, ran=ran)
        answers = [(await http.get(f"/v1/conversion?click={token}&value=19.90")).status_code
                   for _ in range(3)]

    assert answers == [503, 204, 204]
    assert await store.get("conversions:{c1}:count") == b"1"
    assert await store.get("conversions:{c1}:value") == b"19900000"
    await service.stop()


@pytest.mark.parametrize("price", ["1e30", "1e999999999", "9223372036855", "1e200000"])
async def test_a_billing_or_win_price_too_large_is_refused_and_counts_nothing(bidder, price):
    service, handler = bidder
    urls = await bid_urls(service)

    billing = await notice(service, handler, urls["billing"], AUCTION_PRICE=price)
    win = await notice(service, handler, urls["win"], AUCTION_PRICE=price)

    assert (billing.status, win.status) == (400, 400)
    assert await service.engine.ledger.spent(1) == 0
    assert await service.engine.ledger.capped(
        user=user_key("ce-user-123"), campaigns=service.engine.index.snapshot.campaigns) == set()
    # The hold is still there, and the notice with a sound price still counts, once.
    assert (await notice(service, handler, urls["billing"], AUCTION_PRICE="2")).status == 204
    assert (await notice(service, handler, urls["billing"], AUCTION_PRICE="2")).status == 204
    assert await service.engine.ledger.spent(1) == 2000


@pytest.mark.parametrize("value", ["1e5000", "1e200000", "1e999999999", "9223372036855"])
async def test_a_conversion_value_too_large_is_refused_and_counts_nothing(bidder, value):
    service, _ = bidder
    urls = await bid_urls(service)
    async with client(service) as http:
        landing = await http.get(urls["click"].removeprefix("http://127.0.0.1:8080"))
        token = dict(parse_qsl(urlsplit(landing.headers["location"]).query))["ce_click"]
        refused = await http.get(f"/v1/conversion?click={token}&value={value}")
        counted_before = await service.store.get("conversions:{c1}:count")
        counted = await http.get(f"/v1/conversion?click={token}&value=19.90")

    assert (refused.status_code, counted.status_code) == (400, 204)
    assert counted_before is None
    assert await service.store.get("conversions:{c1}:count") == b"1"
    assert await service.store.get("conversions:{c1}:value") == b"19900000"


def test_an_amount_counts_up_to_what_an_int64_of_micros_holds():
    assert notice_amount("9223372036854.775807") == Decimal("9223372036854.775807")
    assert notice_amount("0.000001e-999999999") == Decimal("1e-1000000005")
    assert (notice_amount(""), notice_amount("AUDIT"), notice_amount("-1")) == (None, None, None)
    assert (notice_amount("NaN"), notice_amount("sNaN"), notice_amount("Inf")) == (None,) * 3
    for raw in ("9223372036854.775808", "1e13", "1" * 5000):
        with pytest.raises(AmountOutOfRange):
            notice_amount(raw)


async def test_a_notice_whose_signed_ids_hold_a_newline_is_refused_and_counts_nothing(bidder):
    service, handler = bidder
    _, fields = query((await bid_urls(service))["billing"], AUCTION_PRICE="2")
    # The review's case: a request id "r1\nbid=x" signed into the URL, then the text moved
    # from the auction into the bid, which names another hold and another once key.
    signed = dict(parse_qsl(signed_query(SECRET, "billing", {
        **{field: fields[field] for field in NOTICE_FIELDS + CAMPAIGN_NOTICE_FIELDS},
        "auction": "r1\nbid=x"}), keep_blank_values=True))
    moved = {**signed, "auction": "r1", "bid": "x\nbid=" + fields["bid"]}

    answers = [await handler.handle("billing", {**fields_, "price": "2"},
                                    index=service.engine.index) for fields_ in (signed, moved)]

    assert [answer.status for answer in answers] == [403, 403]
    assert await service.engine.ledger.spent(1) == 0


async def test_a_late_billing_for_a_campaign_no_longer_served_counts_in_its_currency_and_day(
        tmp_path):
    service = await started_service(tmp_path, campaign(
        1, creative(11, "banner"), pacing="accelerated", currency="EUR",
        time_zone="Pacific/Pago_Pago"))
    handler = NoticeHandler(store=service.store, ledger=service.engine.ledger, secret=SECRET)
    async with client(service) as http:
        bid = (await http.post("/v1/bid", json={**fixture("banner-site-2.6.json"),
                                                "cur": ["USD"]})).json()
    burl = bid["seatbid"][0]["bid"][0]["burl"]
    service.install(snapshot(campaign(2, creative(21, "banner")), version=2))  # 1 ended
    # 05:00 UTC: still the day before in Pago Pago (UTC-11).
    now = datetime.now(UTC).replace(hour=5, minute=0, second=0, microsecond=0).timestamp()

    kind, fields = query(burl, AUCTION_PRICE="1.0")
    answer = await handler.handle(kind, fields, index=service.engine.index, now=now)

    assert (fields["cur"], fields["ccur"], fields["tz"]) == ("USD", "EUR", "Pacific/Pago_Pago")
    assert answer.status == 204
    assert await service.engine.ledger.spent(1) == 920  # 1.0 USD CPM at 0.92 EUR a dollar
    local_day = spend_keys(1, "Pacific/Pago_Pago", now)[1]
    utc_day = spend_keys(1, "UTC", now)[1]
    assert local_day != utc_day
    assert await service.store.get_many([local_day, utc_day]) == [b"920", None]
    await service.stop()


async def test_a_late_billing_from_a_url_without_the_campaign_fields_counts_as_before(bidder):
    service, handler = bidder
    kind, fields = query((await bid_urls(service))["billing"], AUCTION_PRICE="1.5")
    signed = {field: fields[field] for field in NOTICE_FIELDS}
    minted_before = dict(parse_qsl(signed_query(SECRET, kind, signed) + "&price=1.5",
                                   keep_blank_values=True))
    service.install(snapshot(campaign(2, creative(21, "banner")), version=2))

    answer = await handler.handle(kind, minted_before, index=service.engine.index)

    assert answer.status == 204
    assert await service.engine.ledger.spent(1) == 1500  # the bid's currency, USD
