from openapi_spec_validator import validate
from rest_framework.test import APIClient

from campaigns import services


def test_the_schema_is_valid_openapi_with_the_campaign_paths(db):
    response = APIClient().get("/api/schema/?format=json")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("application/vnd.oai.openapi+json")
    schema = response.json()
    validate(schema)
    assert schema["info"]["title"] == "Campaign Express API"
    assert {"/api/v1/advertisers/", "/api/v1/campaigns/", "/api/v1/campaigns/{id}/",
            "/api/v1/campaigns/{id}/{transition}/", "/api/v1/campaigns/{id}/history/",
            "/api/v1/creatives/", "/api/v1/creatives/{id}/approve/",
            "/api/v1/creatives/{id}/reject/"} <= set(schema["paths"])
    assert set(schema["paths"]["/api/v1/campaigns/"]) == {"get", "post"}


def test_the_schema_lists_every_workflow_action(db):
    schema = APIClient().get("/api/schema/?format=json").json()

    parameters = schema["paths"]["/api/v1/campaigns/{id}/{transition}/"]["post"]["parameters"]
    transition = next(p for p in parameters if p["name"] == "transition")
    assert sorted(transition["schema"]["enum"]) == sorted(services.TRANSITIONS)


def test_the_docs_page_is_html(db):
    response = APIClient().get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"] == "text/html; charset=utf-8"
    assert b"swagger-ui" in response.content
    assert b"/api/schema/" in response.content
