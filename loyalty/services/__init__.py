"""Loyalty writes. Modules by concern: `points` (earn, redeem), `programs` (programs, tiers,
promotions, rewards, members' details), `maintenance` (the daily run), `keys` (API keys),
`effects` (what follows a committed change: profile, analytics, metrics)."""

from loyalty.services.effects import member_profiles_sync, profile_write
from loyalty.services.keys import (
    api_key_authenticate,
    api_key_create,
    api_key_revoke,
)
from loyalty.services.maintenance import member_maintain, members_maintain, program_members_evaluate
from loyalty.services.points import EarnResult, RedeemResult, points_earn, points_redeem
from loyalty.services.programs import (
    DEFAULT_TIERS,
    member_enroll,
    member_update,
    program_create,
    program_default_tiers_create,
    program_delete,
    program_update,
    promotion_delete,
    promotion_save,
    reward_delete,
    reward_save,
    tier_create,
    tier_delete,
    tier_update,
)

__all__ = [
    "DEFAULT_TIERS", "EarnResult", "RedeemResult", "api_key_authenticate", "api_key_create",
    "api_key_revoke", "member_enroll", "member_maintain", "member_profiles_sync",
    "member_update", "members_maintain", "points_earn", "points_redeem", "profile_write",
    "program_create", "program_default_tiers_create", "program_delete",
    "program_members_evaluate", "program_update", "promotion_delete", "promotion_save",
    "reward_delete", "reward_save", "tier_create", "tier_delete", "tier_update",
]
