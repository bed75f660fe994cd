"""Real Celery processes for the tests that prove timing and fault behaviour."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

from django.conf import settings
from django.db import connection

REPO_ROOT = Path(__file__).resolve().parent.parent


def test_database_url() -> str:
    """The URL of the database the test run is using right now (the test database)."""
    db = connection.settings_dict
    if connection.vendor == "sqlite":
        return f"sqlite:///{Path(db['NAME']).resolve()}"
    auth = quote(db["USER"] or "")
    if db.get("PASSWORD"):
        auth += ":" + quote(db["PASSWORD"])
    host = db["HOST"] or "localhost"
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}@{host}{port}/{db['NAME']}"


def purge_broker() -> None:
    if settings.CELERY_BROKER_URL.startswith("filesystem://"):
        folder = Path(settings.CELERY_FILESYSTEM_FOLDER)
        shutil.rmtree(folder, ignore_errors=True)
        for sub in ("queue", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
    else:
        from config.celery import app

        app.control.purge()


class CeleryProcess:
    """A `celery worker` or `celery beat` subprocess against the test database and broker."""

    def __init__(self, kind: str, log_path: Path, extra_env: dict[str, str] | None = None):
        self.kind = kind
        self.log_path = log_path
        env = {
            **os.environ,
            "DATABASE_URL": test_database_url(),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "CELERY_FILESYSTEM_FOLDER": str(settings.CELERY_FILESYSTEM_FOLDER),
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        if kind == "worker":
            args = ["worker", "--pool", "solo", "--without-gossip", "--without-mingle",
                    "--without-heartbeat", "--loglevel", "INFO"]
        else:
            args = ["beat", "--loglevel", "INFO", "--schedule", str(log_path.with_suffix(".db"))]
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", *args],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 30) -> None:
        marker = "ready." if self.kind == "worker" else "beat: Starting"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log():
                return
            if self.process.poll() is not None:
                raise RuntimeError(f"celery {self.kind} exited early:\n{self.log()}")
            time.sleep(0.1)
        raise RuntimeError(f"celery {self.kind} not ready after {timeout}s:\n{self.log()}")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
