"""Rollout stage changes become `model_rollout` analytics events on the platform's stream
(embedded mode: the in-process bus), and a bus that is away never fails the rollout."""

import uuid

import pytest

from analytics.emit import events_publish
from analytics.events import Event, EventType, decode_batch
from analytics.pipeline import DUPLICATE_WINDOW_SECONDS, STREAM, SUBJECT
from campaign_express.platform import bus_call, store_call
from inference import services
from inference.modelfile import DEFAULT_MODEL_PATH
from inference.models import Rollout
from inference.runtime import stats_key
from tests.inference.variants import variant

pytestmark = pytest.mark.django_db


@pytest.fixture
def name():
    return f"rollout-events-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def consumer():
    """A stream consumer made before the test publishes, so it sees every message."""
    consumer = f"test-{uuid.uuid4().hex}"

    async def register(bus) -> None:
        await bus.stream_ensure(STREAM, (SUBJECT,), duplicate_window=DUPLICATE_WINDOW_SECONDS)
        await bus.stream_fetch(STREAM, consumer, batch=1, timeout=0)

    bus_call(register)
    return consumer


def published(consumer: str, name: str) -> list[Event]:
    async def fetch(bus) -> list[Event]:
        messages = await bus.stream_fetch(STREAM, consumer, batch=10_000, timeout=0.05)
        for message in messages:
            await message.ack()
        return [event for message in messages for event in decode_batch(message.data)]

    return [event for event in bus_call(fetch) if event.attributes.get("model") == name]


def summary(event: Event) -> tuple[str, str, dict[str, str]]:
    return str(event.event_type), event.reason, event.attributes


@pytest.fixture
def active_v1(name, django_capture_on_commit_callbacks):
    version = services.model_version_register(actor=None, name=name, version="1",
                                              location=f"file://{DEFAULT_MODEL_PATH}")
    services.model_version_validate(model_version=version)
    with django_capture_on_commit_callbacks(execute=True):
        return services.model_version_activate(model_version=version)


def canary(name: str, data: bytes, version: str) -> Rollout:
    model_version = services.model_version_upload(actor=None, name=name, version=version,
                                                  data=data)
    rollout = services.rollout_start(model_version=model_version, actor=None,
                                     canary_share=0.25, soak_seconds=0, min_requests=50)
    return services.rollout_advance(rollout_id=rollout.pk)


def attributes(rollout: Rollout, name: str, version: str, decision: str) -> dict[str, str]:
    return {"rollout": str(rollout.pk), "model": name, "version": version,
            "baseline_version": "1", "canary_share": "0.25", "decision": decision}


def test_a_canary_start_and_a_promotion_each_emit_a_model_rollout_event(
        name, consumer, active_v1, django_capture_on_commit_callbacks):
    rollout = canary(name, variant(version="2", scale=1.1), "2")

    async def traffic(store) -> None:
        for version in ("1", "2"):
            await store.incr_within(stats_key(name, version, "requests"), 100, limit=2**62)
            await store.incr_within(stats_key(name, version, "latency_us"), 10_000,
                                    limit=2**62)

    store_call(traffic)
    with django_capture_on_commit_callbacks(execute=True):
        promoted = services.rollout_advance(rollout_id=rollout.pk)

    assert promoted.stage == Rollout.Stage.PROMOTED
    events = published(consumer, name)
    assert [summary(event) for event in events] == [
        ("model_rollout", "canary", attributes(rollout, name, "2", "")),
        ("model_rollout", "promoted", attributes(rollout, name, "2", "canary healthy")),
    ]
    assert events[1].timestamp == promoted.finished_at
    assert {event.node for event in events} == {services.settings.CONFIG.node_id}


def test_a_roll_back_emits_its_reason(name, consumer, active_v1):
    rollout = canary(name, variant(version="3", scale=1.1), "3")

    rolled_back = services.rollout_advance(rollout_id=rollout.pk)  # no canary traffic at all

    reason = "only 0 canary requests in three soak periods; 50 needed"
    assert (rolled_back.stage, rolled_back.decision["reason"]) == (Rollout.Stage.ROLLED_BACK,
                                                                   reason)
    assert [summary(event) for event in published(consumer, name)] == [
        ("model_rollout", "canary", attributes(rollout, name, "3", "")),
        ("model_rollout", "rolled_back", attributes(rollout, name, "3", reason)),
    ]


def test_a_failed_validation_emits_a_failed_rollout(name, consumer, active_v1):
    model_version = services.model_version_upload(
        actor=None, name=name, version="4", data=variant(version="4", wrong_golden=True))
    rollout = services.rollout_start(model_version=model_version, actor=None)

    failed = services.rollout_advance(rollout_id=rollout.pk)

    (event,) = published(consumer, name)
    assert (failed.stage, event.event_type, event.reason) == (Rollout.Stage.FAILED,
                                                               EventType.MODEL_ROLLOUT, "failed")
    assert event.attributes["decision"].startswith("GoldenMismatch")


def test_events_publish_stores_a_batch_once_under_its_first_events_id(name, consumer):
    events = [Event(event_type=EventType.MODEL_ROLLOUT, node="worker-1", reason="canary",
                    attributes={"model": name, "version": str(number)}) for number in range(3)]

    assert events_publish(events) is True
    assert events_publish(events) is True  # a retry within the duplicate window

    assert published(consumer, name) == events


def test_without_a_bus_the_rollout_goes_on_and_the_event_is_dropped(
        name, consumer, active_v1, settings, caplog):
    model_version = services.model_version_upload(
        actor=None, name=name, version="5", data=variant(version="5", wrong_golden=True))
    rollout = services.rollout_start(model_version=model_version, actor=None)
    settings.NATS_URL = "nats://127.0.0.1:9"  # nothing listens on the discard port

    failed = services.rollout_advance(rollout_id=rollout.pk)

    assert failed.stage == Rollout.Stage.FAILED
    assert "1 model_rollout event(s) not published" in caplog.text
    settings.NATS_URL = ""
    assert published(consumer, name) == []
