"""Production settings pass Django's deployment checklist, and bad settings fail loudly."""

import os
import subprocess
import sys

import pytest

from tests.conftest import REPO_ROOT

PRODUCTION_ENV = {
    "DEBUG": "false",
    "PULLBOARD_HTTPS": "true",
    "SECRET_KEY": "x7!" + "k" * 20 + "Q9@z" + "r" * 30,
    "ALLOWED_HOSTS": "pullboard.example.com",
}


def _manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    # Only the deployment's own variables: nothing a test run may have set (browser tests
    # allow async-unsafe calls, for one) leaks into what is checked.
    inherited = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG")}
    return subprocess.run(
        [sys.executable, "manage.py", *args], cwd=REPO_ROOT, capture_output=True, text=True,
        timeout=120, env={**inherited, **env},
    )


def test_check_deploy_is_clean_with_production_settings():
    done = _manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION_ENV)
    assert done.returncode == 0, done.stderr + done.stdout
    assert "no issues" in done.stdout


def test_a_bad_boolean_setting_fails_at_start_with_its_name():
    done = _manage("check", env={**PRODUCTION_ENV, "DEBUG": "maybe"})
    assert done.returncode != 0
    assert "DEBUG must be true or false" in done.stderr


@pytest.mark.django_db
def test_a_post_without_csrf_token_is_refused_with_a_readable_page(client, django_user_model):
    from django.test import Client

    user = django_user_model.objects.create_user("csrf-user", password="x-long-password")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)

    plain = strict.post("/claim-next/", {"idempotency_key": "k"})
    htmx = strict.post("/claim-next/", {"idempotency_key": "k"}, HTTP_HX_REQUEST="true")

    assert plain.status_code == htmx.status_code == 403
    assert "Page out of date" in plain.content.decode()
    assert "Reload the page" in htmx.content.decode()
    assert htmx["HX-Retarget"] == "#flash"


def test_redis_redelivers_no_lease_timer_before_the_longest_lease_has_ended():
    from checklists.parsing import SETTING_MAXIMUMS

    done = _manage(
        "shell", "-c",
        "from django.conf import settings; "
        "print(settings.CELERY_BROKER_TRANSPORT_OPTIONS['visibility_timeout'])",
        env={**PRODUCTION_ENV, "CELERY_BROKER_URL": "redis://127.0.0.1:6379/0"},
    )
    assert done.returncode == 0, done.stderr
    longest_lease = max(SETTING_MAXIMUMS["max_lease_minutes"],
                        4 * SETTING_MAXIMUMS["lease_minutes"]) * 60
    assert int(done.stdout.split()[-1]) > longest_lease
