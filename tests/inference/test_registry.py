"""The model registry: upload, validation, activation, the reload command, rollouts.

Rollouts are judged by a real `ModelRuntime` following the platform's bus (embedded mode:
the in-process bus and store the web side shares with the embedded bidder), fed real
requests on its own event loop thread.
"""

import asyncio
import threading
import time

import msgspec
import nats
import numpy as np
import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.test import Client
from rest_framework.test import APIClient

from campaign_express import env
from campaign_express.platform import bus_call, embedded_bus, embedded_store
from inference import services
from inference.features import FEATURE_COUNT
from inference.modelfile import DEFAULT_MODEL_PATH
from inference.models import ModelVersion, Rollout
from inference.providers import create_provider
from inference.runtime import MODELS_BUCKET, ModelRuntime, ModelUpdate, kv_key, make_fetch
from tests.inference.variants import sha256, variant

pytestmark = pytest.mark.django_db
NAME = "offer-scoring"
Status = ModelVersion.Status


def user_in(role: str, username: str) -> User:
    user = User.objects.create_user(username, is_staff=True)
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def ops():
    return user_in("ops", "ops-models")


@pytest.fixture
def api(ops):
    client = APIClient()
    client.force_authenticate(ops)
    return client


@pytest.fixture
def active_v1(django_capture_on_commit_callbacks):
    version = services.model_version_register(actor=None, name=NAME, version="1",
                                              location=f"file://{DEFAULT_MODEL_PATH}")
    services.model_version_validate(model_version=version)
    with django_capture_on_commit_callbacks(execute=True):
        return services.model_version_activate(model_version=version)


def upload(api, data: bytes, version: str):
    return api.post("/api/v1/models/", {"name": NAME, "version": version,
                                        "file": SimpleUploadedFile(f"m{version}.onnx", data)},
                    format="multipart")


def kv(role: str) -> ModelUpdate | None:
    raw = bus_call(lambda bus: bus.kv_get(MODELS_BUCKET, kv_key(NAME, role)))
    return msgspec.json.decode(raw, type=ModelUpdate) if raw else None


def test_an_upload_records_identity_and_keeps_the_file_where_bidders_fetch_it(api):
    data = variant(version="2", scale=1.1)

    response = upload(api, data, "2")

    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["name"], body["version"], body["status"]) == (NAME, "2", "uploaded")
    assert (body["sha256"], body["size_bytes"], body["schema_version"]) == (sha256(data),
                                                                             len(data), 1)
    assert body["location"].startswith("file://")
    with open(body["location"].removeprefix("file://"), "rb") as handle:
        assert handle.read() == data


def test_an_upload_that_is_not_a_model_is_refused_on_the_file_field(api):
    response = upload(api, b"definitely not onnx", "2")

    assert response.status_code == 400
    assert list(response.json()) == ["file"]
    assert ModelVersion.objects.count() == 0


def test_validation_loads_checks_golden_inputs_and_measures_latency(api):
    version_id = upload(api, variant(version="2", scale=1.1), "2").json()["id"]

    body = api.post(f"/api/v1/models/{version_id}/validate/").json()

    assert body["status"] == "validated"
    assert body["validation"]["loads"] is True
    assert body["validation"]["golden_max_error"] <= 1e-4
    assert set(body["validation"]["latency_us"]) == {"1", "8", "32"}
    assert all(0 < numbers["p50"] <= numbers["max"]
               for numbers in body["validation"]["latency_us"].values())


@pytest.mark.parametrize(("data", "message"), [
    (variant(version="2", schema_version=2), "uses feature schema 2; this bidder builds schema 1"),
    (variant(version="2", wrong_golden=True), "GoldenMismatch"),
])
def test_validation_fails_a_bad_version_with_the_reason(api, data, message):
    version_id = upload(api, data, "2").json()["id"]

    body = api.post(f"/api/v1/models/{version_id}/validate/").json()

    assert body["status"] == "failed"
    assert message in body["failure_reason"]


def test_activation_publishes_the_version_and_retires_the_previous_one(
        api, active_v1, django_capture_on_commit_callbacks):
    version_id = upload(api, variant(version="2", scale=1.1), "2").json()["id"]
    api.post(f"/api/v1/models/{version_id}/validate/")

    with django_capture_on_commit_callbacks(execute=True) as published_on_commit:
        response = api.post(f"/api/v1/models/{version_id}/activate/")

    assert response.status_code == 200
    assert response.json()["status"] == "active"
    active_v1.refresh_from_db()
    assert active_v1.status == Status.RETIRED
    published = kv("active")
    version = ModelVersion.objects.get(pk=version_id)
    assert published == ModelUpdate(name=NAME, version="2", location=version.location,
                                    sha256=version.sha256, share=1.0)
    assert len(published_on_commit) == 1  # bidders hear of it only once it is committed


def test_an_unvalidated_version_cannot_be_activated(api):
    version_id = upload(api, variant(version="2", scale=1.1), "2").json()["id"]

    response = api.post(f"/api/v1/models/{version_id}/activate/")

    assert response.status_code == 409
    assert response.json()["code"] == "not_validated"
    assert ModelVersion.objects.get(pk=version_id).status == Status.UPLOADED


def test_marketers_cannot_see_or_change_models(active_v1):
    client = APIClient()
    client.force_authenticate(user_in("marketer", "m-models"))

    assert client.get("/api/v1/models/").status_code == 403
    assert client.post(f"/api/v1/models/{active_v1.pk}/activate/").status_code == 403


def test_reload_model_activates_a_version_from_the_command_line(
        api, active_v1, django_capture_on_commit_callbacks):
    upload(api, variant(version="2", scale=1.1), "2")

    with django_capture_on_commit_callbacks(execute=True):
        call_command("reload_model", "2")

    assert ModelVersion.objects.get(version="2").status == Status.ACTIVE
    assert kv("active").version == "2"


def test_registry_admin_pages_render(ops, active_v1):
    client = Client()
    client.force_login(ops)
    services.rollout_start(model_version=services.model_version_upload(
        actor=ops, name=NAME, version="2", data=variant(version="2", scale=1.1)), actor=ops)
    rollout = Rollout.objects.get()
    for path in ("/admin/inference/modelversion/", "/admin/inference/modelversion/add/",
                 f"/admin/inference/modelversion/{active_v1.pk}/change/",
                 "/admin/inference/rollout/", f"/admin/inference/rollout/{rollout.pk}/change/"):
        assert client.get(path).status_code == 200, path


def test_the_active_version_cannot_be_deleted_in_the_admin(ops, active_v1):
    client = Client()
    client.force_login(ops)

    response = client.post(f"/admin/inference/modelversion/{active_v1.pk}/delete/",
                           {"post": "yes"})

    assert response.status_code == 403
    assert ModelVersion.objects.filter(pk=active_v1.pk).exists()


def test_the_admin_upload_form_refuses_a_file_that_is_not_a_model(ops):
    client = Client()
    client.force_login(ops)

    response = client.post("/admin/inference/modelversion/add/", {
        "name": NAME, "version": "9", "description": "",
        "upload": SimpleUploadedFile("x.onnx", b"nope")})

    assert response.status_code == 200
    assert list(response.context["adminform"].form.errors) == ["upload"]
    assert ModelVersion.objects.count() == 0


class BidderThread:
    """A bidder's model runtime on its own event loop, following the platform's bus."""

    def __init__(self, tmp_path) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        provider = create_provider("cpu", env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(tmp_path)}))
        self.runtime = ModelRuntime(provider=provider, name=NAME,
                                    fetch=make_fetch(embedded_bus()), node="bidder-test",
                                    store=embedded_store())

    def run(self, coroutine, timeout: float = 30):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def wait_for(self, condition, seconds: float = 20) -> None:
        deadline = time.monotonic() + seconds
        while not condition(self.runtime.serving()):
            assert time.monotonic() < deadline, self.runtime.serving()
            time.sleep(0.02)

    def traffic(self, requests: int) -> None:
        rows = np.random.default_rng(5).random((4, FEATURE_COUNT), dtype=np.float32)

        async def send() -> None:
            for number in range(requests):
                await self.runtime.score(rows, routing_key=f"request-{number}")
            await self.runtime.flush_stats()

        self.run(send(), timeout=120)

    def stop(self) -> None:
        self.run(self.runtime.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def bidder(tmp_path, active_v1):
    bidder = BidderThread(tmp_path)
    bidder.run(bidder.runtime.restore(embedded_bus()))
    bidder.run(bidder.runtime.follow(embedded_bus()))
    assert bidder.runtime.serving()["active"] == "1"
    yield bidder
    bidder.stop()


def _roll_out(ops, bidder, data: bytes, version: str, capture_on_commit) -> Rollout:
    model_version = services.model_version_upload(actor=ops, name=NAME, version=version,
                                                  data=data)
    rollout = services.rollout_start(model_version=model_version, actor=ops, canary_share=0.5,
                                     soak_seconds=0, min_requests=50)
    services.rollout_advance(rollout_id=rollout.pk)
    assert Rollout.objects.get(pk=rollout.pk).stage == Rollout.Stage.CANARY
    assert kv("canary").share == 0.5
    bidder.wait_for(lambda serving: serving["canary"] == version)
    bidder.traffic(300)
    with capture_on_commit(execute=True):
        return services.rollout_advance(rollout_id=rollout.pk)


def test_a_rollout_promotes_a_healthy_version(ops, bidder, django_capture_on_commit_callbacks):
    rollout = _roll_out(ops, bidder, variant(version="2", scale=1.1), "2",
                        django_capture_on_commit_callbacks)

    assert rollout.stage == Rollout.Stage.PROMOTED
    assert rollout.decision["reason"] == "canary healthy"
    assert rollout.decision["canary"]["requests"] >= 50
    assert rollout.decision["canary"]["errors"] == 0
    assert ModelVersion.objects.get(version="2").status == Status.ACTIVE
    assert ModelVersion.objects.get(version="1").status == Status.RETIRED
    bidder.wait_for(lambda serving: serving["active"] == "2" and serving["canary"] is None)
    assert kv("canary") is None


def test_a_rollout_rolls_back_a_version_that_is_too_slow(ops, bidder,
                                                        django_capture_on_commit_callbacks):
    rollout = _roll_out(ops, bidder, variant(version="3", slow_layers=150), "3",
                        django_capture_on_commit_callbacks)

    assert rollout.stage == Rollout.Stage.ROLLED_BACK
    assert "canary mean latency" in rollout.decision["reason"]
    assert (rollout.decision["canary_mean_latency_us"]
            > 1.5 * rollout.decision["active_mean_latency_us"])
    version = ModelVersion.objects.get(version="3")
    assert version.status == Status.FAILED
    assert version.failure_reason.startswith("rolled back: canary mean latency")
    assert ModelVersion.objects.get(version="1").status == Status.ACTIVE
    bidder.wait_for(lambda serving: serving["active"] == "1" and serving["canary"] is None)
    assert kv("canary") is None


def test_a_rollout_fails_at_validation_without_touching_the_bidders(ops, bidder):
    model_version = services.model_version_upload(
        actor=ops, name=NAME, version="4", data=variant(version="4", wrong_golden=True))
    rollout = services.rollout_start(model_version=model_version, actor=ops)

    rollout = services.rollout_advance(rollout_id=rollout.pk)

    assert rollout.stage == Rollout.Stage.FAILED
    assert "GoldenMismatch" in rollout.decision["reason"]
    assert bidder.runtime.serving()["canary"] is None


@pytest.mark.nats
@pytest.mark.redis
def test_with_nats_and_redis_uploads_go_to_the_object_store_and_activation_to_the_bucket(
        api, nats_url, redis_url, django_capture_on_commit_callbacks, settings):
    settings.NATS_URL, settings.REDIS_URL = nats_url, redis_url
    name = f"registry-test-{time.time_ns()}"
    data = variant(version="1", scale=1.2)

    response = api.post("/api/v1/models/", {"name": name, "version": "1",
                                            "file": SimpleUploadedFile("m.onnx", data)},
                        format="multipart")
    version = ModelVersion.objects.get(pk=response.json()["id"])
    services.model_version_validate(model_version=version)
    with django_capture_on_commit_callbacks(execute=True):
        services.model_version_activate(model_version=version)

    assert version.location == f"objectstore://{MODELS_BUCKET}/{name}/1"
    assert bus_call(lambda bus: bus.object_get(MODELS_BUCKET, f"{name}/1")) == data
    published = msgspec.json.decode(
        bus_call(lambda bus: bus.kv_get(MODELS_BUCKET, kv_key(name, "active"))),
        type=ModelUpdate)
    assert (published.version, published.sha256, published.share) == ("1", sha256(data), 1.0)
    state = api.get(f"/api/v1/models/{version.pk}/").json()["runtime"]
    assert state == {"bidders_loaded": 0, "bidders_failed": 0, "last_failure": None,
                     "requests": 0, "errors": 0, "latency_us": 0}

    async def clean_up() -> None:
        client = await nats.connect(nats_url)
        jetstream = client.jetstream()
        await (await jetstream.key_value(MODELS_BUCKET)).purge(kv_key(name, "active"))
        await (await jetstream.object_store(MODELS_BUCKET)).delete(f"{name}/1")
        await client.close()

    asyncio.run(clean_up())
