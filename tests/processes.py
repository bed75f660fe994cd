"""Real Celery and Redis processes for the tests that prove timing and fault behaviour."""

import os
import shutil
import signal
import socket
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


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (the kernel picks it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class RedisServer:
    """A private `redis-server` on a free port of its own, so a test can stop and restart the
    broker without touching a shared one. Nothing is persisted: a restart starts empty, as a
    broker that crashed without an append-only file does."""

    def __init__(self, log_path: Path):
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self._log = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 15) -> None:
        """Start (or restart, on the same port) and return once it answers PING."""
        import redis

        self._log = open(self.log_path, "a")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            ["redis-server", "--save", "", "--appendonly", "no", "--port", str(self.port),
             "--bind", "127.0.0.1", "--dir", str(self.log_path.parent)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
        finally:
            client.close()
        self.stop()
        raise RuntimeError(f"redis-server not answering after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        """Terminate the server (SIGTERM: it stops accepting and closes every connection)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_until(condition, *, timeout: float, interval: float = 0.2, what: str, log=None):
    """Poll `condition` until it returns something truthy, and return that; fail after
    `timeout` seconds saying what never happened (with a process's log, when given)."""
    import pytest

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        outcome = condition()
        if outcome:
            return outcome
        time.sleep(interval)
    pytest.fail(f"{what}: not within {timeout}s" + (f"\n{log()}" if log else ""))


def sweep_with_a_new_worker(log_path: Path, extra_env: dict[str, str] | None = None):
    """Start a worker, send it the sweep as beat would, and return the sweep's heartbeat
    once it has finished (the worker is stopped either way)."""
    from board.health import SWEEP_HEARTBEAT
    from board.models import Heartbeat
    from board.tasks import sweep_expired_leases

    worker = CeleryProcess("worker", log_path, extra_env=extra_env)
    try:
        worker.wait_ready()
        sweep_expired_leases.delay()
        return wait_until(
            lambda: Heartbeat.objects.filter(name=SWEEP_HEARTBEAT).first(),
            timeout=60, interval=0.1, what="the sweep to finish", log=worker.log,
        )
    finally:
        worker.stop()
