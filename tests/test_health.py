"""/healthz for load balancers and compose health checks, and the production compose file."""

import io
from datetime import timedelta
from pathlib import Path

import pytest
import yaml
from django.utils import timezone

from board.health import SWEEP_HEARTBEAT, heartbeat_record
from board.tasks import sweep_expired_leases
from tests.conftest import REPO_ROOT


@pytest.mark.django_db
def test_healthz_is_ok_before_the_first_sweep_and_reports_its_age(client):
    first = client.get("/healthz")
    assert first.status_code == 200
    assert first.json() == {"status": "ok", "database": "ok", "broker": "ok",
                            "last_sweep_age_seconds": None, "sweep": "not run yet"}

    sweep_expired_leases()
    after = client.get("/healthz").json()
    assert after["sweep"] == "ok" and 0 <= after["last_sweep_age_seconds"] < 5


@pytest.mark.django_db
def test_a_late_sweep_is_reported_but_keeps_web_in_rotation(client, settings):
    # Staff can still work (a lapsed claim is taken back at claim time): a load balancer must
    # not drop every web process because beat is late. ?strict is for paging someone.
    heartbeat_record(name=SWEEP_HEARTBEAT,
                     at=timezone.now() - timedelta(seconds=4 * settings.LEASE_SWEEP_SECONDS))

    response = client.get("/healthz")
    strict = client.get("/healthz?strict")

    assert response.status_code == 200
    assert (response.json()["status"], response.json()["sweep"]) == ("degraded", "late")
    assert strict.status_code == 503 and strict.json()["status"] == "degraded"


@pytest.mark.django_db
def test_healthz_fails_when_the_database_does_not_answer(client, monkeypatch):
    from board import health

    monkeypatch.setattr(health, "database_ok", lambda: (False, "OperationalError: gone"))

    response = client.get("/healthz")

    assert response.status_code == 503
    assert response.json()["status"] == "fail"
    assert response.json()["database"] == "OperationalError: gone"


@pytest.mark.django_db
def test_a_sweep_run_by_hand_counts_as_the_periodic_one(client, settings):
    from django.core.management import call_command

    heartbeat_record(name=SWEEP_HEARTBEAT,
                     at=timezone.now() - timedelta(seconds=4 * settings.LEASE_SWEEP_SECONDS))
    call_command("sweep_leases", stdout=io.StringIO())

    assert client.get("/healthz").json()["sweep"] == "ok"


@pytest.mark.django_db
def test_healthz_answers_any_host_over_plain_http(client, settings):
    settings.ALLOWED_HOSTS = ["pullboard.example.com"]
    settings.SECURE_SSL_REDIRECT = True
    assert client.get("/healthz", HTTP_HOST="10.1.2.3:8000").status_code == 200
    assert client.get("/login/", HTTP_HOST="10.1.2.3:8000").status_code == 400


def test_compose_file_has_the_production_services():
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"web", "worker", "beat", "redis", "postgres", "migrate"} <= set(services)
    assert "pgdata" in compose["volumes"]
    assert any("pgdata:" in volume for volume in services["postgres"]["volumes"])
    assert "gunicorn" in services["web"]["command"]
    assert "/healthz" in " ".join(services["web"]["healthcheck"]["test"])
    assert services["migrate"]["command"][-2:] == ["migrate", "--noinput"]
    for name in ("web", "worker", "beat"):
        assert services[name]["env_file"] == ".env"
        assert services[name]["restart"] == "unless-stopped"
        assert services[name]["depends_on"]["migrate"]["condition"] == \
            "service_completed_successfully"
    for name in ("postgres", "redis"):
        assert "healthcheck" in services[name]
    example = dict(
        line.split("=", 1) for line in Path(REPO_ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert example["DATABASE_URL"].startswith("postgres://")
    assert example["CELERY_BROKER_URL"].startswith("redis://")
    assert {"SECRET_KEY", "ALLOWED_HOSTS", "PULLBOARD_HTTPS"} <= set(example)


def test_compose_file_validates_with_the_compose_client(tmp_path):
    import shutil
    import subprocess

    from tests.conftest import require_service

    client = shutil.which("docker-compose")
    require_service(client is not None, "the docker-compose client")
    for name in ("docker-compose.yml", ".env.example"):
        shutil.copy(REPO_ROOT / name, tmp_path / name)
    shutil.copy(REPO_ROOT / ".env.example", tmp_path / ".env")
    done = subprocess.run([client, "-f", "docker-compose.yml", "config", "-q"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
