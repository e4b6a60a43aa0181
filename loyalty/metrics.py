"""Loyalty counters, as Prometheus metrics of the process that does the work (web, worker or
the ingest consumer)."""

from __future__ import annotations

from prometheus_client import Counter

POINTS_EARNED = Counter("loyalty_points_earned_total",
                        "Points added to members' balances, by kind (earn, birthday).", ["kind"])
POINTS_REDEEMED = Counter("loyalty_points_redeemed_total", "Points spent on rewards.")
POINTS_EXPIRED = Counter("loyalty_points_expired_total", "Points that expired.")
REDEMPTIONS = Counter("loyalty_redemptions_total", "Rewards redeemed.")
TIER_CHANGES = Counter("loyalty_tier_changes_total", "Tier upgrades and downgrades.",
                       ["direction"])
REWARD_SIGNALS = Counter("loyalty_reward_signals_total",
                         "Reward signals from apps (clicked, redeemed, ignored).", ["type"])
INGEST_MESSAGES = Counter("loyalty_ingest_messages_total",
                          "Ingest messages the loyalty consumer handled, by outcome (awarded, "
                          "ignored, parked).", ["outcome"])
PROFILE_WRITE_FAILURES = Counter("loyalty_profile_write_failures_total",
                                 "Profile writes that failed (the store could not be reached).")
