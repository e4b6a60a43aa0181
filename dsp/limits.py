"""Partner pacing shared by every bidder: QPS limit, daily spend cap and circuit breaker.

The state lives in the store (Redis in production), so two bidders together stay within a
partner's QPS and cap, and a partner one bidder found failing is rested by all. Each request
costs one atomic script per partner (`ADMIT`), each answer one more (`RECORD`); keys are
hash-tagged by partner so each script touches one Redis Cluster slot.

The breaker: `threshold` errors or timeouts within `window` seconds open it for `cooldown`
seconds; after that one request at a time probes the partner (half open); a good answer
closes it, a bad one opens it again.

Django-free: the bidder imports it.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from campaign_express.backends.store import Script, ScriptContext, Store

ADMITTED, QPS_LIMITED, SPEND_CAPPED, BREAKER_OPEN = 0, 1, 2, 3
ADMIT_REASONS = {QPS_LIMITED: "qps_limit", SPEND_CAPPED: "spend_cap",
                 BREAKER_OPEN: "breaker_open"}


def keys(partner_id: int) -> dict[str, str]:
    tag = f"dsp:{{p{partner_id}}}"
    return {"qps": f"{tag}:qps", "spend": f"{tag}:spend", "open_until": f"{tag}:open_until",
            "probe": f"{tag}:probe", "failures": f"{tag}:failures", "latency": f"{tag}:latency"}


def qps_key(partner_id: int, second: int) -> str:
    return f"{keys(partner_id)['qps']}:{second}"


def spend_key(partner_id: int, day: int) -> str:
    return f"{keys(partner_id)['spend']}:{day}"


# KEYS qps(second), spend(day), open_until, probe; ARGV qps_limit, cap_micros (0: none),
# now_ms, probe_ttl_s. Checks cost nothing when they refuse: a refused call counts no QPS.
_ADMIT_LUA = """
local open_until = tonumber(redis.call('GET', KEYS[3]) or '0')
if open_until > 0 then
  if tonumber(ARGV[3]) < open_until then return 3 end
  if tonumber(redis.call('GET', KEYS[4]) or '0') > 0 then return 3 end
end
local cap = tonumber(ARGV[2])
if cap > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= cap then return 2 end
if tonumber(redis.call('GET', KEYS[1]) or '0') + 1 > tonumber(ARGV[1]) then return 1 end
redis.call('INCRBY', KEYS[1], 1)
redis.call('EXPIRE', KEYS[1], 2)
if open_until > 0 then
  redis.call('INCRBY', KEYS[4], 1)
  redis.call('EXPIRE', KEYS[4], tonumber(ARGV[4]))
end
return 0
"""


def _admit_twin(store: ScriptContext, keys: Sequence[str], args: Sequence[int]) -> int:
    qps, spend, open_until_key, probe = keys
    limit, cap, now_ms, probe_ttl = args
    open_until = store.get(open_until_key)
    if open_until > 0 and (now_ms < open_until or store.get(probe) > 0):
        return BREAKER_OPEN
    if cap > 0 and store.get(spend) >= cap:
        return SPEND_CAPPED
    if store.get(qps) + 1 > limit:
        return QPS_LIMITED
    store.incrby(qps, 1, ttl_seconds=2)
    if open_until > 0:
        store.incrby(probe, 1, ttl_seconds=probe_ttl)
    return ADMITTED


ADMIT = Script("dsp_admit", _ADMIT_LUA, _admit_twin)

# KEYS failures, open_until, probe; ARGV is_ok, threshold, window_s, cooldown_ms, now_ms.
# Returns 1 when this answer opened the breaker.
_RECORD_LUA = """
if tonumber(ARGV[1]) == 1 then
  redis.call('DEL', KEYS[1])
  if redis.call('DEL', KEYS[2]) == 1 then redis.call('DEL', KEYS[3]) end
  return 0
end
local failures = redis.call('INCRBY', KEYS[1], 1)
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
local was_open = tonumber(redis.call('GET', KEYS[2]) or '0') > 0
if was_open or failures >= tonumber(ARGV[2]) then
  redis.call('SET', KEYS[2], tonumber(ARGV[5]) + tonumber(ARGV[4]))
  redis.call('DEL', KEYS[1])
  redis.call('DEL', KEYS[3])
  return 1
end
return 0
"""


def _record_twin(store: ScriptContext, keys: Sequence[str], args: Sequence[int]) -> int:
    failures_key, open_until, probe = keys
    is_ok, threshold, window, cooldown_ms, now_ms = args
    if is_ok:
        store.delete(failures_key)
        if store.delete(open_until):
            store.delete(probe)
        return 0
    failures = store.incrby(failures_key, 1, ttl_seconds=window)
    if store.get(open_until) > 0 or failures >= threshold:
        store.set(open_until, now_ms + cooldown_ms)
        store.delete(failures_key)
        store.delete(probe)
        return 1
    return 0


RECORD = Script("dsp_record", _RECORD_LUA, _record_twin)


@dataclass(frozen=True)
class BreakerSettings:
    threshold: int = 5  # errors or timeouts in a row within the window
    window_seconds: int = 30
    cooldown_ms: int = 10_000  # open this long before a probe
    probe_ttl_seconds: int = 5  # a probe that never reports frees the slot after this


class PartnerLimits:
    def __init__(self, store: Store, *, breaker: BreakerSettings | None = None) -> None:
        self.store = store
        self.breaker = breaker or BreakerSettings()

    async def admit(self, *, partner_id: int, qps_limit: int, cap_micros: int,
                    now: float | None = None) -> int:
        """ADMITTED, or why not (QPS_LIMITED, SPEND_CAPPED, BREAKER_OPEN)."""
        now = time.time() if now is None else now
        names = keys(partner_id)
        return await self.store.run(
            ADMIT, [qps_key(partner_id, int(now)), spend_key(partner_id, int(now // 86_400)),
                    names["open_until"], names["probe"]],
            [qps_limit, cap_micros, int(now * 1000), self.breaker.probe_ttl_seconds])

    async def record(self, *, partner_id: int, is_ok: bool, now: float | None = None) -> bool:
        """Count an answer (True) or an error or timeout; True when this opened the breaker."""
        now = time.time() if now is None else now
        names = keys(partner_id)
        settings = self.breaker
        opened = await self.store.run(
            RECORD, [names["failures"], names["open_until"], names["probe"]],
            [int(is_ok), settings.threshold, settings.window_seconds, settings.cooldown_ms,
             int(now * 1000)])
        return opened == 1

    async def add_spend(self, *, partner_id: int, micros: int, now: float | None = None) -> None:
        """Spend on a partner's won and billed impressions, toward its daily cap (UTC day)."""
        now = time.time() if now is None else now
        await self.store.incr_within(spend_key(partner_id, int(now // 86_400)), micros,
                                     limit=2**62, ttl_seconds=2 * 86_400)

    async def state(self, *, partner_id: int, now: float | None = None) -> dict[str, object]:
        """What `GET /v1/dsp/status` shows of one partner."""
        now = time.time() if now is None else now
        names = keys(partner_id)
        qps, spend, open_until, latency = await self.store.get_many(
            [qps_key(partner_id, int(now) - 1), spend_key(partner_id, int(now // 86_400)),
             names["open_until"], names["latency"]])
        opened = int(open_until or 0)
        breaker = "closed" if not opened else "open" if now * 1000 < opened else "half_open"
        return {"breaker": breaker, "qps": int(qps or 0), "spend_today_micros": int(spend or 0),
                "latency_ms": int(latency or 0) if latency is not None else None}
