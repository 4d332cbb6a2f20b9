"""OpenAPI schema and its UI, served from local static files (no CDN)."""

import re

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_schema_generates_without_warnings(tmp_path):
    out = tmp_path / "schema.yml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out))
    text = out.read_text()
    for path in (
        "/api/v1/units/{serial}/",
        "/api/v1/measurements/record/",
        "/api/v1/holds/place/",
        "/api/v1/holds/{number}/release/",
        "/api/v1/interlock/",
        "/api/v1/plant/characteristics/",
    ):
        assert f"  {path}:" in text, path


def test_schema_endpoint_names_token_auth(api_client):
    response = api_client.get("/api/v1/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    schemes = response.json()["components"]["securitySchemes"]
    assert schemes["tokenAuth"] == {
        "type": "apiKey",
        "in": "header",
        "name": "Authorization",
        "description": 'Token-based authentication with required prefix "Token"',
    }


def test_swagger_ui_loads_from_local_static(api_client):
    page = api_client.get("/api/v1/docs/")
    assert page.status_code == 200
    html = page.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css|png))"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets), assets
    assert all(a.startswith("/static/") for a in assets), assets
    assert not re.search(r"https?://", html)  # no CDN, no other host
    for asset in assets:
        response = api_client.get(asset)
        assert response.status_code == 200, asset
        body = b"".join(response.streaming_content) if response.streaming else response.content
        assert len(body) > 100, asset
