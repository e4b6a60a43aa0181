"""Loyalty programs: tiers, members, the points ledger, rewards and redemption."""
