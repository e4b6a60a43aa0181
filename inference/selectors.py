"""Registry reads, including what bidders reported through the store."""

from __future__ import annotations

from typing import Any

import msgspec

from campaign_express.platform import store_call
from inference.models import ModelVersion
from inference.runtime import load_key, stats_key

COUNTERS = ("requests", "errors", "latency_us")


def model_version_runtime_state(*, model_version: ModelVersion) -> dict[str, Any]:
    """Bidders' load outcomes and serving counters for one version (empty if the store is
    unreachable: the page still renders)."""
    name, version = model_version.name, model_version.version
    keys = [load_key(name, version, "loaded"), load_key(name, version, "failed"),
            load_key(name, version, "last-failure"),
            *(stats_key(name, version, counter) for counter in COUNTERS)]

    async def read(store) -> list[bytes | None]:
        return await store.get_many(keys)

    try:
        loaded, failed, last_failure, *counters = store_call(read)
    except Exception as error:  # noqa: BLE001 - the registry page must render without the store
        return {"error": f"{type(error).__name__}: {error}"}
    state: dict[str, Any] = {"bidders_loaded": int(loaded or 0),
                             "bidders_failed": int(failed or 0),
                             "last_failure": msgspec.json.decode(last_failure)
                             if last_failure else None}
    state.update({counter: int(value or 0) for counter, value in zip(COUNTERS, counters,
                                                                     strict=True)})
    if state["requests"]:
        state["mean_latency_us"] = round(state["latency_us"] / state["requests"], 1)
        state["error_rate"] = state["errors"] / state["requests"]
    return state
