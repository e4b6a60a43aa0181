"""Creative assets in an S3-compatible bucket: a real local S3 server (moto) started here."""

import dataclasses
import io

import boto3
import pytest
from django.contrib.auth.models import Group, User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import override_settings
from moto.server import ThreadedMotoServer
from PIL import Image
from rest_framework.test import APIClient

from campaign_express import env
from campaign_express.settings.base import CONFIG, media_storage
from campaigns import services
from tests.campaign_express.platform import free_port

pytestmark = pytest.mark.django_db

BUCKET = "campaign-express-media"


@pytest.fixture
def s3_endpoint(monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "local")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "local-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
    yield endpoint
    server.stop()


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (300, 250), (200, 40, 40)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_local_storage_is_the_default():
    assert media_storage(env.load({"CAMPAIGN_EXPRESS__DATA_DIR": str(CONFIG.data_dir)})) == {
        "BACKEND": "django.core.files.storage.FileSystemStorage"}


def test_uploaded_asset_lands_in_the_configured_s3_bucket(s3_endpoint):
    config = dataclasses.replace(CONFIG, media_s3_bucket=BUCKET,
                                 media_s3_endpoint_url=s3_endpoint)
    storages = {"default": media_storage(config),
                "staticfiles": {"BACKEND":
                                "django.contrib.staticfiles.storage.StaticFilesStorage"}}
    ops = User.objects.create_user("s3-ops")
    ops.groups.add(Group.objects.get(name="ops"))
    marketer = User.objects.create_user("s3-marketer")
    marketer.groups.add(Group.objects.get(name="marketer"))
    advertiser = services.advertiser_create(actor=ops, data={"name": "Bucket Co"},
                                            marketers=[marketer])
    campaign = services.campaign_create(actor=marketer, data={
        "advertiser": advertiser, "name": "Uploads", "start_at": "2030-01-01T00:00:00Z",
        "end_at": "2030-02-01T00:00:00Z", "total_budget": "100", "daily_budget": "10",
        "base_bid_cpm": "1", "max_bid_cpm": "2"})
    client = APIClient()
    client.force_authenticate(marketer)
    with override_settings(STORAGES=storages):
        response = client.post("/api/v1/creatives/", {
            "campaign": campaign.pk, "name": "Red square", "format": "banner",
            "sizes": '["300x250"]', "adomain": "bucket.example",
            "asset": SimpleUploadedFile("red.png", _png(),
                                        content_type="image/png")}, format="multipart")
    assert response.status_code == 201, response.json()
    assert response.json()["asset"].startswith(f"{s3_endpoint}/{BUCKET}/creatives/")
    objects = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(Bucket=BUCKET)
    keys = [item["Key"] for item in objects["Contents"]]
    assert len(keys) == 1 and keys[0].startswith("creatives/") and keys[0].endswith(".png")
    body = boto3.client("s3", endpoint_url=s3_endpoint).get_object(Bucket=BUCKET, Key=keys[0])
    assert body["Body"].read() == _png()
