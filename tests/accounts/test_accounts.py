from io import StringIO

import pytest
from django.core.exceptions import PermissionDenied
from django.core.management import CommandError, call_command
from django.http import Http404

from accounts import access
from accounts.access import Capability
from accounts.models import Team, User


def _create_user(*args: str) -> str:
    out = StringIO()
    call_command("create_user", *args, stdout=out)
    return out.getvalue().strip()


@pytest.mark.django_db
def test_create_user_creates_missing_team_and_prints_generated_password():
    line = _create_user("rosa", "--role", "staff", "--team", "night-shift")
    assert line.startswith("rosa: staff on team night-shift, password ")
    password = line.rsplit(" ", 1)[1]
    user = User.objects.get(username="rosa")
    assert user.check_password(password)
    team = Team.objects.get(slug="night-shift")
    assert list(access.teams_for(user, Capability.WORK)) == [team]
    assert not access.teams_for(user, Capability.MANAGE).exists()
    assert user.groups.filter(name="staff").exists()


@pytest.mark.django_db
def test_create_user_with_password_prints_no_password():
    assert _create_user("mo", "--role", "manager", "--team", "ops", "--password", "s3cret-pw!") \
        == "mo: manager on team ops"
    mo = User.objects.get(username="mo")
    assert mo.check_password("s3cret-pw!")
    assert set(access.teams_for(mo, Capability.MANAGE).values_list("slug", flat=True)) == {"ops"}
    assert access.teams_for(mo, Capability.AUDIT).exists()


@pytest.mark.django_db
def test_create_user_refuses_unknown_role():
    with pytest.raises(CommandError):
        _create_user("x", "--role", "admin", "--team", "ops")
    assert not User.objects.filter(username="x").exists()


@pytest.mark.django_db
def test_auditor_sees_but_cannot_work(auditor, make_run):
    run = make_run()
    assert access.get_run(auditor, run.pk) == run
    with pytest.raises(PermissionDenied):
        access.get_run(auditor, run.pk, Capability.WORK)


@pytest.mark.django_db
def test_outsider_gets_404_for_other_teams_run_and_item(outsider, make_run):
    run = make_run()
    with pytest.raises(Http404):
        access.get_run(outsider, run.pk)
    with pytest.raises(Http404):
        access.get_item(outsider, run.items.first().pk)
    assert not access.visible_runs(outsider).exists()


@pytest.mark.django_db
def test_inactive_user_sees_nothing(staff, make_run):
    make_run()
    User.objects.filter(pk=staff.pk).update(is_active=False)
    staff.refresh_from_db()
    assert not access.visible_runs(staff).exists()


@pytest.mark.django_db
@pytest.mark.parametrize(("args", "message"), [
    (("bad name!", "--role", "staff", "--team", "ops"), "Username"),
    (("shorty", "--role", "staff", "--team", "ops", "--password", "a"), "Password refused"),
])
def test_create_user_refuses_bad_username_or_weak_password(args, message):
    with pytest.raises(CommandError, match=message):
        _create_user(*args)
    assert not User.objects.exists()
    assert not Team.objects.exists()


@pytest.mark.django_db
def test_create_user_prints_the_team_slug_it_made():
    assert _create_user("zed", "--role", "auditor", "--team", "Night Shift",
                        "--password", "long-enough-pw-1") == "zed: auditor on team night-shift"


def test_a_revoked_role_counts_from_the_next_request(client, staff, team, make_run):
    run = make_run()
    client.force_login(staff)
    assert client.get(f"/runs/{run.pk}/").status_code == 200

    # Revoked through another object, as an admin's request would: the next request of the
    # user loads the user afresh and reads the permissions again.
    access.revoke_all(user=User.objects.get(pk=staff.pk), team=team)

    assert client.get(f"/runs/{run.pk}/").status_code == 404


def test_access_checks_of_one_user_object_read_the_permissions_once(
    staff, make_run, django_assert_num_queries
):
    run = make_run()

    def check():
        assert access.has_capability(staff, run.team, Capability.WORK)
        assert not access.has_capability(staff, run.team, Capability.MANAGE)
        assert access.team_ids(staff, Capability.WORK) == {run.team_id}

    check()
    with django_assert_num_queries(0):
        check()
        check()
