"""The model runtime: serving, hot swaps under load, refusals, canaries, counters.

Embedded-mode backends (in-process bus and store, contract-tested against NATS and Redis)
carry most cases; the last test runs the same flow over real NATS and Redis.
"""

import asyncio
import dataclasses

import msgspec
import nats
import numpy as np
import pytest
from prometheus_client import REGISTRY

from campaign_express import env
from campaign_express.backends.bus import InProcessBus
from campaign_express.backends.nats_bus import NatsBus
from campaign_express.backends.store import MemoryStore, RedisStore
from inference.features import FEATURE_COUNT
from inference.modelfile import DEFAULT_MODEL_PATH
from inference.providers import InferenceError, LoadedModel, ModelSource, create_provider
from inference.runtime import (
    MODELS_BUCKET,
    UPDATES_SUBJECT,
    ModelRejected,
    ModelRuntime,
    ModelUpdate,
    kv_key,
    kv_value,
    load_key,
    make_fetch,
    share_bucket,
    stats_key,
)
from tests.inference.variants import cpu_scores, sha256, variant

NAME = "offer-scoring"
ROWS = np.random.default_rng(11).random((5, FEATURE_COUNT), dtype=np.float32)


@pytest.fixture
def cpu(tmp_path):
    return create_provider("cpu", env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)}))


@pytest.fixture
def files(tmp_path):
    """Writes model bytes to the model volume and returns its update."""

    def write(data: bytes, version: str, share: float = 1.0, sha: str | None = None):
        path = tmp_path / f"{NAME}-{version}-{sha256(data)[:8]}.onnx"
        path.write_bytes(data)
        return ModelUpdate(name=NAME, version=version, location=f"file://{path}",
                           sha256=sha or sha256(data), share=share)

    return write


@pytest.fixture
async def runtime(cpu, files):
    store = MemoryStore()
    runtime = ModelRuntime(provider=cpu, name=NAME, fetch=make_fetch(None), node="bidder-1",
                           store=store)
    await runtime.apply(files(DEFAULT_MODEL_PATH.read_bytes(), "1"))
    yield runtime
    await runtime.close()


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("npu_model_load_failures_total",
                                     {"name": NAME, "reason": reason}) or 0.0


async def test_the_active_model_scores_rows_and_says_which_version(runtime):
    scores = await runtime.score(ROWS, routing_key="request-1")
    assert scores.version == "1"
    np.testing.assert_allclose(scores.values, cpu_scores(DEFAULT_MODEL_PATH.read_bytes(), ROWS),
                               rtol=0, atol=1e-6)
    assert runtime.serving() == {"name": NAME, "provider": "cpu", "active": "1",
                                 "canary": None, "canary_share": 0.0}


async def test_a_swap_while_requests_flow_fails_none_and_each_answer_matches_its_version(
        runtime, files):
    newer = variant(version="2", scale=1.1)
    expected = {"1": cpu_scores(DEFAULT_MODEL_PATH.read_bytes(), ROWS),
                "2": cpu_scores(newer, ROWS)}
    answers, swapped = [], asyncio.Event()

    async def caller(number: int) -> None:
        calls_after_swap = 0
        while calls_after_swap < 20:
            scores = await runtime.score(ROWS, routing_key=f"r{number}")
            answers.append(scores)
            calls_after_swap += swapped.is_set()

    callers = [asyncio.create_task(caller(n)) for n in range(16)]
    await asyncio.sleep(0.05)
    await runtime.apply(files(newer, "2"))
    swapped.set()
    await asyncio.gather(*callers)

    versions = [scores.version for scores in answers]
    assert set(versions) == {"1", "2"}
    assert versions[-16:] == ["2"] * 16
    for scores in answers:
        np.testing.assert_allclose(scores.values, expected[scores.version], rtol=0, atol=1e-6)


@pytest.mark.parametrize(("reason", "make"), [
    ("file", lambda files: files(b"not an onnx model", "2")),
    ("checksum", lambda files: files(variant(version="2", scale=1.1), "2", sha="0" * 64)),
    ("schema", lambda files: files(variant(version="2", schema_version=2), "2")),
    ("golden", lambda files: files(variant(version="2", wrong_golden=True), "2")),
    ("fetch", lambda files: ModelUpdate(name=NAME, version="2", location="file:///nowhere.onnx",
                                        sha256="0" * 64)),
])
async def test_a_bad_version_is_refused_and_the_old_one_keeps_serving(reason, make, runtime,
                                                                     files):
    before = failures(reason)
    update = make(files)

    with pytest.raises(ModelRejected) as refused:
        await runtime.apply(update)

    assert refused.value.reason == reason
    assert failures(reason) == before + 1
    assert (await runtime.score(ROWS, routing_key="after")).version == "1"
    assert runtime.serving()["active"] == "1"
    assert await runtime.store.get(load_key(NAME, "2", "failed")) == b"1"
    last = msgspec.json.decode(await runtime.store.get(load_key(NAME, "2", "last-failure")))
    assert last["node"] == "bidder-1" and last["reason"].startswith(f"{reason}: ")


async def test_a_schema_mismatch_names_both_schemas(runtime, files):
    with pytest.raises(ModelRejected, match="uses feature schema 2; this bidder builds "
                                            "schema 1"):
        await runtime.apply(files(variant(version="2", schema_version=2), "2"))


async def test_a_canary_serves_its_share_by_a_stable_hash_and_can_be_withdrawn(runtime, files):
    await runtime.apply(files(variant(version="2", scale=1.1), "2", share=0.3))
    keys = [f"request-{number}" for number in range(400)]

    first = [(await runtime.score(ROWS, routing_key=key)).version for key in keys]
    second = [(await runtime.score(ROWS, routing_key=key)).version for key in keys]

    assert first == second
    assert first.count("2") == sum(share_bucket(key) < 0.3 for key in keys)
    assert 80 <= first.count("2") <= 160
    assert runtime.serving()["canary"] == "2"
    await runtime.apply(ModelUpdate(name=NAME, version="2", location="", sha256="", share=0))
    assert {(await runtime.score(ROWS, routing_key=key)).version for key in keys} == {"1"}


@dataclasses.dataclass
class FailingModel:
    """A loaded model whose batches fail: stands for a canary that breaks under traffic."""

    inner: LoadedModel
    provider: str = "cpu"

    @property
    def max_batch(self) -> int:
        return self.inner.max_batch

    def infer(self, batch):
        if batch.shape[0] != 8:  # golden inputs (8 rows) pass, traffic fails
            raise InferenceError("device lost")
        return self.inner.infer(batch)

    def warm_up(self) -> None: ...

    def close(self) -> None:
        self.inner.close()


@dataclasses.dataclass
class BreakingProvider:
    inner: object
    breaks_version: str
    name: str = "cpu"
    max_batch: int = 32

    def load(self, source: ModelSource):
        loaded = self.inner.load(source)
        return FailingModel(loaded) if source.version == self.breaks_version else loaded

    def health(self) -> None: ...


async def test_a_failing_canary_batch_is_served_by_the_active_model_and_counted(cpu, files):
    store = MemoryStore()
    runtime = ModelRuntime(provider=BreakingProvider(cpu, breaks_version="2"), name=NAME,
                           fetch=make_fetch(None), node="bidder-1", store=store)
    await runtime.apply(files(DEFAULT_MODEL_PATH.read_bytes(), "1"))
    await runtime.apply(files(variant(version="2", scale=1.1), "2", share=0.5))
    keys = [f"k{number}" for number in range(100)]
    to_canary = sum(share_bucket(key) < 0.5 for key in keys)

    versions = [(await runtime.score(ROWS, routing_key=key)).version for key in keys]
    await runtime.flush_stats()

    assert versions == ["1"] * 100
    assert await store.get(stats_key(NAME, "2", "requests")) == str(to_canary).encode()
    assert await store.get(stats_key(NAME, "2", "errors")) == str(to_canary).encode()
    assert await store.get(stats_key(NAME, "1", "requests")) == b"100"
    assert await store.get(stats_key(NAME, "1", "errors")) is None
    await runtime.close()


async def test_counters_reach_the_store_per_version(runtime):
    for number in range(25):
        await runtime.score(ROWS, routing_key=f"r{number}")
    await runtime.flush_stats()

    assert await runtime.store.get(stats_key(NAME, "1", "requests")) == b"25"
    assert int(await runtime.store.get(stats_key(NAME, "1", "latency_us"))) > 0
    assert await runtime.store.get(load_key(NAME, "1", "loaded")) == b"1"


async def test_a_starting_runtime_restores_active_and_canary_from_the_bucket(cpu, files):
    bus = InProcessBus()
    await bus.connect()
    await bus.kv_put(MODELS_BUCKET, kv_key(NAME, "active"),
                     kv_value(files(DEFAULT_MODEL_PATH.read_bytes(), "1")))
    await bus.kv_put(MODELS_BUCKET, kv_key(NAME, "canary"),
                     kv_value(files(variant(version="2", scale=1.1), "2", share=0.25)))
    runtime = ModelRuntime(provider=cpu, name=NAME, fetch=make_fetch(bus), node="b")

    await runtime.restore(bus)

    assert runtime.serving() == {"name": NAME, "provider": "cpu", "active": "1",
                                 "canary": "2", "canary_share": 0.25}
    await runtime.close()
    await bus.close()


@pytest.mark.nats
@pytest.mark.redis
async def test_updates_over_nats_with_files_in_the_object_store_and_counters_in_redis(
        cpu, nats_url, redis_url):
    bus, store = NatsBus(nats_url), RedisStore(redis_url)
    await bus.connect()
    newer = variant(version="2", scale=1.1)
    name = f"test-model-{sha256(newer)[:8]}"
    await bus.object_put(MODELS_BUCKET, f"{name}/1", DEFAULT_MODEL_PATH.read_bytes())
    await bus.object_put(MODELS_BUCKET, f"{name}/2", newer)
    first = ModelUpdate(name=name, version="1", location=f"objectstore://{MODELS_BUCKET}/{name}/1",
                        sha256=sha256(DEFAULT_MODEL_PATH.read_bytes()))
    runtime = ModelRuntime(provider=cpu, name=name, fetch=make_fetch(bus), node="b", store=store)
    await runtime.apply(first)
    await runtime.follow(bus)

    await bus.publish(UPDATES_SUBJECT, msgspec.json.encode(ModelUpdate(
        name=name, version="2", location=f"objectstore://{MODELS_BUCKET}/{name}/2",
        sha256=sha256(newer))))
    for _ in range(200):
        if runtime.serving()["active"] == "2":
            break
        await asyncio.sleep(0.02)
    scores = await runtime.score(ROWS, routing_key="r")
    await runtime.flush_stats()

    assert scores.version == "2"
    assert await store.get(stats_key(name, "2", "requests")) == b"1"
    await runtime.close()
    for key in [stats_key(name, version, counter) for version in ("1", "2")
                for counter in ("requests", "errors", "latency_us")] + [
            load_key(name, version, "loaded") for version in ("1", "2")]:
        await store.delete(key)
    await store.close()
    await bus.close()
    cleaner = await nats.connect(nats_url)
    objects = await cleaner.jetstream().object_store(MODELS_BUCKET)
    for version in ("1", "2"):
        await objects.delete(f"{name}/{version}")
    await cleaner.close()
