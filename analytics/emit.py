"""Publish a few analytics events at once from sync Django code (services, tasks).

Long-running async processes (the bidder) own an `analytics.pipeline` buffer and publisher;
code that emits rarely — a model rollout changing stage — has neither, so it publishes its
events as one batch right away, on the same stream and subject the publisher uses. The
message id is the first event's id: a caller retrying the same events within JetStream's
duplicate window is stored once, and ClickHouse collapses a later replay by `event_id`.

Analytics must never fail the change it reports: when the bus is away, the batch is logged
and dropped, and the caller carries on.
"""

from __future__ import annotations

import logging

from analytics.events import Event, encode_batch
from analytics.pipeline import DUPLICATE_WINDOW_SECONDS, STREAM, SUBJECT
from campaign_express.backends.bus import Bus, BusTimeout, BusUnavailable
from campaign_express.platform import bus_call

logger = logging.getLogger(__name__)


def events_publish(events: list[Event]) -> bool:
    """Publish `events` as one message now; False (logged) when the bus could not take it."""
    if not events:
        return True
    payload = encode_batch(events)

    async def publish(bus: Bus) -> None:
        await bus.stream_ensure(STREAM, (SUBJECT,), duplicate_window=DUPLICATE_WINDOW_SECONDS)
        await bus.stream_publish(SUBJECT, payload, msg_id=str(events[0].event_id))

    try:
        bus_call(publish)
    except (BusUnavailable, BusTimeout) as error:
        logger.warning("analytics: %d %s event(s) not published: %s", len(events),
                       events[0].event_type, error)
        return False
    return True
