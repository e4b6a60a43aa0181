"""`/v1/loyalty/*` over HTTP: API keys, exact answers, idempotent retries, refusals."""

import dataclasses
from decimal import Decimal

import pytest

from loyalty import services
from loyalty.models import ApiKey, LedgerEntry, Member

pytestmark = pytest.mark.django_db

EARN = {"member": "u-1", "amount": "10.00", "currency": "USD", "channel": "in_store",
        "transaction_id": "T-1", "referral": False, "digital": False}


def test_a_call_without_a_valid_key_is_401_and_changes_nothing(program, api_key, client_for):
    _, revoked_secret = services.api_key_create(actor=None, program=program, name="Old till",
                                                actions=["earn"])
    services.api_key_revoke(api_key=ApiKey.objects.get(name="Old till"), actor=None)

    answers = [client_for(secret).post("/v1/loyalty/earn", EARN, format="json")
               for secret in (None, "lk_not-a-key", revoked_secret)]
    wrong_scheme = client_for(None).post("/v1/loyalty/earn", EARN, format="json",
                                         HTTP_AUTHORIZATION=f"Token {api_key('earn')}")

    assert [answer.status_code for answer in [*answers, wrong_scheme]] == [401] * 4
    assert answers[0]["WWW-Authenticate"] == 'Bearer realm="loyalty"'
    assert answers[1].json() == {"detail": "Unknown or revoked API key."}
    assert not Member.objects.exists() and not LedgerEntry.objects.exists()


def test_a_key_may_call_only_its_actions_and_only_its_program(program, other_program, api_key,
                                                              client_for):
    balance_only = client_for(api_key("balance"))
    other = client_for(api_key("earn", "balance", for_program=other_program))

    refused = balance_only.post("/v1/loyalty/earn", EARN, format="json")
    earned_elsewhere = other.post("/v1/loyalty/earn", {**EARN, "currency": "EUR"}, format="json")

    assert refused.status_code == 403
    assert refused.json() == {"detail": "This API key may not call earn; it may call balance."}
    assert earned_elsewhere.status_code == 200
    assert list(Member.objects.values_list("program_id", "user_id")) == [(other_program.pk, "u-1")]
    assert balance_only.get("/v1/loyalty/balance/u-1").status_code == 404


def test_earn_answers_exactly_and_a_retry_gets_the_first_answer(program, api_key, client_for):
    client = client_for(api_key("earn"))

    first = client.post("/v1/loyalty/earn", EARN, format="json")
    retry = client.post("/v1/loyalty/earn", {**EARN, "amount": "500.00"}, format="json")

    assert first.status_code == retry.status_code == 200
    assert first.json() == {"member": "u-1", "transaction_id": "T-1", "points_earned": 10,
                            "balance": 10, "earn_rate": "1.0000", "tier": "green",
                            "tier_changed": False, "previous_tier": None}
    assert retry.json() == first.json()
    assert (first.has_header("Idempotent-Replayed"), retry["Idempotent-Replayed"]) == (
        False, "true")
    assert LedgerEntry.objects.count() == 1


def test_earn_referral_and_digital_and_a_tier_change(program, api_key, client_for):
    client = client_for(api_key("earn"))

    answer = client.post("/v1/loyalty/earn", {**EARN, "amount": "250.00", "referral": True,
                                              "digital": True}, format="json")

    assert answer.json() == {"member": "u-1", "transaction_id": "T-1", "points_earned": 600,
                             "balance": 600, "earn_rate": "2.4000", "tier": "gold",
                             "tier_changed": True, "previous_tier": "green"}


def test_invalid_input_is_400_naming_the_field(program, api_key, client_for):
    client = client_for(api_key("earn"))

    missing = client.post("/v1/loyalty/earn", {"member": "u-1", "amount": "10"}, format="json")
    negative = client.post("/v1/loyalty/earn", {**EARN, "amount": "-1"}, format="json")

    assert missing.status_code == negative.status_code == 400
    assert missing.json() == {"transaction_id": ["This field is required."]}
    assert negative.json() == {"amount": ["The amount must be more than 0."], "code": "invalid"}
    assert not Member.objects.exists()


def test_redeem_then_a_refusal_with_its_reason(program, api_key, client_for):
    services.points_earn(program=program, user_id="u-1", amount=Decimal("130.00"),
                         transaction_id="T-1")
    client = client_for(api_key("redeem"))

    redeemed = client.post("/v1/loyalty/redeem", {"member": "u-1", "reward": "basic_item",
                                                  "channel": "app"},
                           format="json", HTTP_IDEMPOTENCY_KEY="R-1")
    retried = client.post("/v1/loyalty/redeem", {"member": "u-1", "reward": "basic_item",
                                                 "idempotency_key": "R-1"}, format="json")
    short = client.post("/v1/loyalty/redeem", {"member": "u-1", "reward": "basic_item",
                                               "idempotency_key": "R-2"}, format="json")
    low_tier = client.post("/v1/loyalty/redeem", {"member": "u-1",
                                                  "reward": "exclusive_service",
                                                  "idempotency_key": "R-3"}, format="json")

    assert redeemed.json() == {"member": "u-1", "idempotency_key": "R-1",
                               "reward": "basic_item", "description": "basic item",
                               "value": "3.5000", "points_redeemed": 100, "balance": 30,
                               "tier": "green"}
    assert (retried.status_code, retried.json(), retried["Idempotent-Replayed"]) == (
        200, redeemed.json(), "true")
    assert (short.status_code, short.json()) == (409, {
        "reward": ["basic_item costs 100 points; the balance is 30."],
        "code": "insufficient_points"})
    assert (low_tier.status_code, low_tier.json()) == (409, {
        "reward": ["exclusive_service needs the gold tier or above; the member is green."],
        "code": "tier_too_low"})
    assert list(LedgerEntry.objects.order_by("id").values_list("kind", "points")) == [
        ("earn", 130), ("redeem", -100)]


def test_balance(program, api_key, client_for):
    services.points_earn(program=program, user_id="u-1", amount=Decimal("600.00"),
                         transaction_id="T-1")
    member = Member.objects.get()
    client = client_for(api_key("balance"))

    answer = client.get("/v1/loyalty/balance/u-1")

    assert answer.status_code == 200
    assert answer.json() == {
        "member": "u-1", "program": program.pk, "tier": "gold", "balance": 600,
        "qualifying_points": 600, "previous_qualifying_points": 0,
        "qualifying_period_start": member.qualifying_period_start.isoformat(),
        "tier_progress": "0.240", "next_tier": "reserve", "points_to_next_tier": 1900,
        "effective_earn_rate": "1.2000", "lifetime_points": 600, "total_redemptions": 0,
        "last_earn_at": answer.json()["last_earn_at"], "last_redeem_at": None}
    assert client.get("/v1/loyalty/balance/nobody").status_code == 404


def test_reward_signals_are_accepted(program, api_key, client_for):
    client = client_for(api_key("reward_signal"))

    accepted = client.post("/v1/loyalty/reward-signal", {
        "offer_id": "offer-1", "member": "u-1", "signal_type": "clicked",
        "reward_value": "1.0", "tier": "gold", "timestamp": "2026-05-01T10:00:00Z"},
        format="json")
    unknown = client.post("/v1/loyalty/reward-signal", {
        "offer_id": "offer-1", "member": "u-1", "signal_type": "liked"}, format="json")

    assert (accepted.status_code, accepted.json()) == (202, {"accepted": True})
    assert unknown.status_code == 400


def test_with_loyalty_disabled_the_paths_are_not_found(program, api_key, client_for, settings):
    settings.CONFIG = dataclasses.replace(settings.CONFIG, loyalty_enabled=False)

    answer = client_for(api_key("earn")).post("/v1/loyalty/earn", EARN, format="json")

    assert answer.status_code == 404
    assert not Member.objects.exists()
