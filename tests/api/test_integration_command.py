"""``manage.py integration_create``: a new integration and its token, printed once."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from qms.models import Integration

pytestmark = pytest.mark.django_db


def create(*args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("integration_create", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue()


def test_creates_integration_and_prints_token_once(plant):
    key, note = create("mes-gf1", "--scope", "read_write")
    integration = Integration.objects.get(name="mes-gf1")
    assert integration.scope == "read_write"
    assert integration.key_hash == Integration.hash_key(key)
    assert key not in (integration.key_hash, integration.key_prefix)
    assert integration.key_prefix == key[:8]
    assert list(integration.user.groups.values_list("name", flat=True)) == ["integration"]
    assert not integration.user.has_usable_password()
    assert "printed once" in note

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    response = client.post(
        "/api/v1/units/create/", {"kind": "module", "serial": "M2648000009"}, format="json"
    )
    assert response.status_code == 201


def test_default_scope_is_read(plant):
    key, _ = create("erp-gf1")
    assert Integration.objects.get(name="erp-gf1").scope == "read"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    response = client.post(
        "/api/v1/units/create/", {"kind": "module", "serial": "M2648000009"}, format="json"
    )
    assert response.status_code == 403


def test_duplicate_name_is_refused(plant):
    create("mes-gf1")
    with pytest.raises(CommandError, match=r"An integration named 'mes-gf1' exists already\."):
        create("mes-gf1", "--scope", "read_write")
    assert Integration.objects.count() == 1
