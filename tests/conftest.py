"""Personas and factories shared by every test.

Service-dependent tests (PostgreSQL, Redis, a browser) run when the service is configured and
are skipped otherwise, except with CI=true, where a missing service fails the run.
"""

import os
from datetime import timedelta
from pathlib import Path

import pytest
from django.test import override_settings

from accounts.models import Role, Team
from accounts.services import team_get_or_create, user_create

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_RUNBOOKS = REPO_ROOT.parent / "shared" / "runbooks"
IN_CI = os.environ.get("CI", "").lower() == "true"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


def require_service(available: bool, what: str) -> None:
    """Skip locally, fail in CI: a CI run must never pass by skipping a real service."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required in CI but is not available")
    pytest.skip(f"{what} not available (set it up, or run .ci/run)")


def pytest_collection_modifyitems(config, items):
    """Tests marked `postgres` prove PostgreSQL-only behaviour: the SQLite run leaves them out
    (the PostgreSQL run of `make test`, required in CI, runs them)."""
    from django.conf import settings

    if settings.DATABASES["default"]["ENGINE"].endswith("postgresql"):
        return
    kept = [item for item in items if "postgres" not in item.keywords]
    if len(kept) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if "postgres" in i.keywords])
        items[:] = kept


@pytest.fixture(autouse=True, scope="session")
def _fast_test_settings():
    # Plain static storage: the manifest needs collectstatic, which tests do not run.
    with override_settings(
        STORAGES={
            "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
            "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
        },
        PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    ):
        yield


@pytest.fixture
def shared_runbooks() -> Path:
    require_service(SHARED_RUNBOOKS.is_dir(), f"the shared runbooks folder ({SHARED_RUNBOOKS})")
    return SHARED_RUNBOOKS


PASSWORD = "correct-horse-battery"


@pytest.fixture
def team(db) -> Team:
    return team_get_or_create(slug="ops", name="Ops")


@pytest.fixture
def other_team(db) -> Team:
    return team_get_or_create(slug="payments", name="Payments")


@pytest.fixture
def make_user(db):
    def make(username: str, role: str = Role.STAFF, team: str = "ops", password: str = PASSWORD):
        user, _ = user_create(username=username, role=role, team_slug=team, password=password)
        return user

    return make


@pytest.fixture
def staff(make_user, team):
    return make_user("sam", Role.STAFF)


@pytest.fixture
def teammate(make_user, team):
    return make_user("tia", Role.STAFF)


@pytest.fixture
def manager(make_user, team):
    return make_user("maya", Role.MANAGER)


@pytest.fixture
def auditor(make_user, team):
    return make_user("avi", Role.AUDITOR)


@pytest.fixture
def outsider(make_user, other_team):
    return make_user("otto", Role.STAFF, team="payments")


SIMPLE_RUNBOOK = """\
---
title: Database failover
lease_minutes: 15
---
# Database failover

Fail over to the replica.

## Prepare
1. Freeze writes
2. Snapshot the primary

## Switch
- Promote the replica
- Repoint the application
"""


@pytest.fixture
def make_runbook(db, team):
    from checklists.services import runbook_import

    def make(text: str = SIMPLE_RUNBOOK, filename: str = "failover.md", owner: Team | None = None,
             lease: timedelta | None = None, max_attempts: int | None = None):
        runbook, _ = runbook_import(data=text.encode(), filename=filename, team=owner or team)
        changes = {}
        if lease is not None:
            changes["lease_duration"] = lease
        if max_attempts is not None:
            changes["max_attempts"] = max_attempts
        if changes:
            type(runbook).objects.filter(pk=runbook.pk).update(**changes)
            runbook.refresh_from_db()
        return runbook

    return make


@pytest.fixture
def make_run(db, make_runbook, manager):
    from board.services import run_launch

    def make(runbook=None, title: str = "INC-1 primary down", severity: int = 2, **kwargs):
        return run_launch(
            runbook=runbook or make_runbook(), title=title, severity=severity, actor=manager,
            **kwargs,
        )

    return make


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """A real `celery worker` subprocess on the test database and the configured broker."""
    from tests.processes import CeleryProcess, purge_broker

    purge_broker()
    worker = CeleryProcess("worker", tmp_path / "worker.log")
    try:
        worker.wait_ready()
        yield worker
    finally:
        worker.stop()
