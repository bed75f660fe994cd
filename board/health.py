"""Health of the parts a load balancer cares about: the database, the broker, the sweep."""

from datetime import datetime

from django.conf import settings
from django.db import connection
from django.utils import timezone

from board.models import Heartbeat

SWEEP_HEARTBEAT = "lease-sweep"


def heartbeat_record(*, name: str, detail: str = "", at: datetime | None = None) -> None:
    Heartbeat.objects.update_or_create(
        name=name, defaults={"at": at or timezone.now(), "detail": detail[:200]}
    )


def database_ok() -> tuple[bool, str]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except Exception as error:  # noqa: BLE001 - any failure means "not healthy", with why
        return False, f"{type(error).__name__}: {error}"
    return True, "ok"


def broker_ok(timeout: float = 2.0) -> tuple[bool, str]:
    from config.celery import app

    try:
        with app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout)
    except Exception as error:  # noqa: BLE001
        return False, f"{type(error).__name__}: {error}"
    return True, "ok"


def sweep_age_seconds(now: datetime | None = None) -> float | None:
    beat = Heartbeat.objects.filter(name=SWEEP_HEARTBEAT).first()
    if beat is None:
        return None
    return ((now or timezone.now()) - beat.at).total_seconds()


def health_report() -> dict:
    """The database, the broker and the sweep. The sweep is late after three missed periods;
    before its first run it is "not run yet", not late, so a fresh deployment can come up."""
    db_ok, db_detail = database_ok()
    _, mq_detail = broker_ok()
    age = sweep_age_seconds() if db_ok else None
    late_after = 3 * settings.LEASE_SWEEP_SECONDS
    sweep_ok = age is None or age <= late_after
    report = {
        "database": db_detail,
        "broker": mq_detail,
        "last_sweep_age_seconds": None if age is None else round(age, 1),
        "sweep": "not run yet" if age is None else ("ok" if sweep_ok else "late"),
    }
    return report
