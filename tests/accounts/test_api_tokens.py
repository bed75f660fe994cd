"""API tokens: created by a command that shows them once, stored hashed, revocable."""

import hashlib
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from accounts.models import ApiToken, User
from accounts.services import api_token_authenticate, api_token_create, api_token_revoke


def _create_api_token(*args: str) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("create_api_token", *args, stdout=out, stderr=err)
    return out.getvalue().strip(), err.getvalue().strip()


def _get_run(client, run, token: str):
    return client.get(f"/api/v1/runs/{run.pk}", headers={"Authorization": f"Bearer {token}"})


def test_the_command_prints_the_token_once_and_stores_only_its_hash(staff):
    token, note = _create_api_token("sam", "--name", "ci-bot")

    assert token.startswith("pb_") and len(token) >= 40 and "\n" not in token
    assert note == "API token “ci-bot” for sam (shown only this once):"
    stored = ApiToken.objects.get()
    assert (stored.user, stored.name) == (staff, "ci-bot")
    assert stored.digest == hashlib.sha256(token.encode()).hexdigest()
    assert token not in repr(list(ApiToken.objects.values()))
    assert api_token_authenticate(token=token) == staff


def test_each_token_is_new(staff):
    first, _ = _create_api_token("sam")
    second, _ = _create_api_token("sam")

    assert first != second
    assert list(ApiToken.objects.values_list("name", flat=True)) == ["api", "api"]


def test_the_command_refuses_unknown_and_inactive_users(staff):
    with pytest.raises(CommandError, match="No user 'nobody'"):
        _create_api_token("nobody")
    User.objects.filter(pk=staff.pk).update(is_active=False)
    with pytest.raises(CommandError, match="not active"):
        _create_api_token("sam")
    assert not ApiToken.objects.exists()


def test_a_token_authenticates_and_records_its_use(client, staff, make_run):
    run = make_run()
    api_token, token = api_token_create(user=staff, name="ci")

    assert _get_run(client, run, token).status_code == 200

    api_token.refresh_from_db()
    assert api_token.last_used_at is not None
    assert timezone.now() - api_token.last_used_at < timedelta(minutes=1)


def test_a_revoked_token_is_401(client, staff, make_run):
    run = make_run()
    api_token, token = api_token_create(user=staff)
    assert _get_run(client, run, token).status_code == 200

    api_token_revoke(api_token=api_token)
    response = _get_run(client, run, token)

    assert response.status_code == 401
    assert response.json() == {
        "detail": "This API token is not valid: it is unknown or has been revoked."
    }


@pytest.mark.parametrize("header", [
    "Bearer pb_not-a-token-we-issued",
    "Bearer something-else",
    "Bearer ",
    "Token pb_abc",
])
def test_unknown_or_malformed_tokens_are_401(client, staff, make_run, header):
    run = make_run()
    api_token_create(user=staff)

    response = client.get(f"/api/v1/runs/{run.pk}", headers={"Authorization": header})

    assert response.status_code == 401
    assert response.json()["detail"] in (
        "This API token is not valid: it is unknown or has been revoked.",
        "The Authorization header must read “Bearer <token>”.",
    )


def test_a_deactivated_users_token_is_401(client, staff, make_run):
    run = make_run()
    _, token = api_token_create(user=staff)
    User.objects.filter(pk=staff.pk).update(is_active=False)

    assert _get_run(client, run, token).status_code == 401
