"""Claim throughput and latency: the product's claim-next against the bare-SQL floor.

For 1, 4, 16 and 64 concurrent clients (processes, each with its own connection and its own
user), on SQLite and PostgreSQL, on a pool of 10,000 available items reset before every
measurement, it measures claims per second and p50/p99 latency of:

  (a) service  board.services.item_claim_next, the product's claim with its checkpoint
               (and its lease timer, sent to the configured Celery broker after commit);
  (b) floor    bare SQL without Django: on PostgreSQL one statement that claims with SKIP
               LOCKED and inserts the checkpoint (a data-modifying CTE); on SQLite
               BEGIN IMMEDIATE + UPDATE ... RETURNING + INSERT + COMMIT;
  (c) naive    the claim as one would first write it with the Django ORM: read the first
               available id, then in a transaction UPDATE ... WHERE id = ? AND
               state = 'available' and create the checkpoint, retrying when another
               client got there first;
  (e) naive-sql  the same loop in bare SQL without Django, for scale;
  (d) http     POST /api/v1/claims/next through gunicorn with a Bearer token and an
               Idempotency-Key (16 clients; PostgreSQL, and SQLite when asked).

After every measurement it checks the database: no item claimed twice or lost (every
claimed item was reported by exactly the client that holds it), one `claimed` checkpoint
per claim with the claim's token and actor, and every token up by exactly one.

It creates its own databases: a fresh SQLite file in a temporary folder, and a fresh
PostgreSQL database named by --postgres-url (default: $BENCH_POSTGRES_URL; its name must
contain "bench", because it is dropped and re-created), migrated with `manage.py migrate`.
Durable settings: the product's own (SQLite WAL + synchronous=NORMAL; PostgreSQL as
configured, fsync on). On a shared machine one run is noisy: --repeat N runs every
measurement N times, interleaved, and judges the ratios and targets on the medians.

    .venv/bin/python bench/claims.py --postgres-url postgres://postgres@127.0.0.1:55432/pb_bench
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

REPO = Path(__file__).resolve().parent.parent
METHODS = {"a": "service", "b": "floor", "c": "naive", "d": "http", "e": "naivesql"}
LEASE = timedelta(minutes=15)
TEAM = "bench"
ONE_STEP = "---\ntitle: Bench\nlease_minutes: 15\n---\n# Bench\n\n- Only step\n"


# --- Databases ------------------------------------------------------------------------------


@dataclass
class Target:
    """One database under test and how every process reaches it."""

    vendor: str  # "sqlite" or "postgresql"
    url: str  # DATABASE_URL for Django
    var_dir: Path
    broker_url: str
    run_id: int = 0
    warm_run_id: int = 0  # each client's first claim goes here, before the start line
    users: dict[int, int] = field(default_factory=dict)  # client index -> user id

    def env(self) -> dict[str, str]:
        return {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": self.url,
            "PULLBOARD_VAR_DIR": str(self.var_dir),
            "CELERY_BROKER_URL": self.broker_url,
            "CONN_MAX_AGE": "600",
            "DEBUG": "false",
            "LOG_LEVEL": "WARNING",
            "SECRET_KEY": "bench-" + "x" * 50,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
        }

    def raw_connect(self):
        """A connection without Django, in autocommit mode."""
        if self.vendor == "postgresql":
            import psycopg

            return psycopg.connect(self.url, autocommit=True)
        conn = sqlite3.connect(urlsplit(self.url).path, isolation_level=None, timeout=30)
        # The product's settings (config/settings.py): WAL, synchronous=NORMAL, 30 s timeout.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn


def create_postgres(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    if "bench" not in name:
        sys.exit(f"refusing to drop and re-create {name!r}: its name must contain 'bench'")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
        fsync = conn.execute("SHOW fsync").fetchone()[0]
        commit = conn.execute("SHOW synchronous_commit").fetchone()[0]
    print(f"PostgreSQL {name}: fsync={fsync}, synchronous_commit={commit}")


def migrate(target: Target) -> None:
    subprocess.run(
        [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
        cwd=REPO, env={**os.environ, **target.env()}, check=True,
    )


def _setup_in_django(env: dict[str, str], clients: int, result: mp.Queue) -> None:
    """Team, one staff user per client, and a run with no WIP limit to speak of."""
    _django(env)
    from accounts.access import grant_role
    from accounts.models import Role, User
    from accounts.services import role_group, team_get_or_create
    from board.models import Run
    from board.services import run_launch
    from checklists.services import runbook_import

    team = team_get_or_create(slug=TEAM, name="Bench")
    users = {}
    staff = role_group(Role.STAFF)
    for index in range(clients):
        # No password (hashing 64 of them takes longer than the bench): the API uses tokens.
        user = User.objects.create(username=f"bench{index:02d}", password="!")
        user.groups.add(staff)
        grant_role(user=user, team=team, role=Role.STAFF)
        users[index] = user.pk
    runbook, _ = runbook_import(data=ONE_STEP.encode(), filename="bench.md", team=team)
    run = run_launch(runbook=runbook, title="Bench run", actor=None, actor_name="bench")
    # Launched second, so "claim next" without a run would never take from it first.
    warm = run_launch(runbook=runbook, title="Warm-up", actor=None, actor_name="bench")
    Run.objects.filter(pk__in=[run.pk, warm.pk]).update(wip_limit=10**9)
    result.put((run.pk, warm.pk, users))


def _django(env: dict[str, str]) -> None:
    os.environ.update(env)
    sys.path.insert(0, str(REPO))
    import django

    django.setup()


def reset_pool(target: Target, size: int, warm: int) -> None:
    """Empty the trail and the board and put `size` fresh available items in the run (and
    `warm` in the warm-up run)."""
    conn = target.raw_connect()
    try:
        if target.vendor == "postgresql":
            conn.execute("TRUNCATE board_checkpoint, board_item, board_item_prerequisites")
            if _has_table(conn, target, "board_idempotencykey"):
                conn.execute("TRUNCATE board_idempotencykey")
            for run_id, count in ((target.run_id, size), (target.warm_run_id, warm)):
                conn.execute(
                    "INSERT INTO board_item (run_id, position, key, title, body, section, "
                    "section_note, state, token, attempts) SELECT %s, n, 'step-' || n, "
                    "'Step ' || n, '', '', '', 'available', 0, 0 FROM generate_series(1, %s) n",
                    [run_id, count],
                )
            conn.execute("VACUUM ANALYZE board_item")
            conn.execute("VACUUM ANALYZE board_checkpoint")
        else:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("DELETE FROM board_checkpoint")
            conn.execute("DELETE FROM board_item_prerequisites")
            conn.execute("DELETE FROM board_item")
            if _has_table(conn, target, "board_idempotencykey"):
                conn.execute("DELETE FROM board_idempotencykey")
            for run_id, count in ((target.run_id, size), (target.warm_run_id, warm)):
                conn.execute(
                    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
                    "INSERT INTO board_item (run_id, position, key, title, body, section, "
                    "section_note, state, token, attempts) SELECT ?, i, 'step-' || i, "
                    "'Step ' || i, '', '', '', 'available', 0, 0 FROM n",
                    [count, run_id],
                )
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _has_table(conn, target: Target, name: str) -> bool:
    if target.vendor == "postgresql":
        return conn.execute("SELECT to_regclass(%s) IS NOT NULL", [name]).fetchone()[0]
    return conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", [name]
    ).fetchone()[0] == 1


def verify(target: Target, claims: list[tuple[int, int, int]]) -> list[str]:
    """Problems found in the database after a measurement (an empty list when all is well).

    `claims` is what the clients reported: (user id, item id, token)."""
    problems = []
    conn = target.raw_connect()
    try:
        rows = conn.execute(
            "SELECT id, state, holder_id, token FROM board_item WHERE run_id = "
            + ("%s" if target.vendor == "postgresql" else "?"),
            [target.run_id],
        ).fetchall()
        mark = "%s" if target.vendor == "postgresql" else "?"
        checkpoints = conn.execute(
            "SELECT item_id, actor_id, token FROM board_checkpoint WHERE kind = 'claimed' "
            f"AND run_id = {mark}", [target.run_id],
        ).fetchall()
        other_kinds = conn.execute(
            f"SELECT count(*) FROM board_checkpoint WHERE kind <> 'claimed' AND run_id = {mark}",
            [target.run_id],
        ).fetchone()[0]
    finally:
        conn.close()
    reported: dict[int, list[tuple[int, int]]] = {}
    for user_id, item_id, token in claims:
        reported.setdefault(item_id, []).append((user_id, token))
    doubles = [item_id for item_id, who in reported.items() if len(who) > 1]
    if doubles:
        problems.append(f"{len(doubles)} items reported claimed twice (e.g. {doubles[:3]})")
    claimed = {item_id: (holder, token) for item_id, state, holder, token in rows
               if state == "claimed"}
    lost = set(claimed) - set(reported)
    if lost:
        problems.append(f"{len(lost)} items claimed in the database but reported by nobody")
    phantom = set(reported) - set(claimed)
    if phantom:
        problems.append(f"{len(phantom)} reported claims not held in the database")
    wrong = [item_id for item_id, who in reported.items()
             if item_id in claimed and claimed[item_id] != (who[0][0], 1)]
    if wrong:
        problems.append(f"{len(wrong)} items with another holder or a token other than 1")
    untouched = [token for _id, state, _holder, token in rows if state != "claimed" and token]
    if untouched:
        problems.append(f"{len(untouched)} unclaimed items whose token moved")
    per_item: dict[int, list[tuple[int, int]]] = {}
    for item_id, actor_id, token in checkpoints:
        per_item.setdefault(item_id, []).append((actor_id, token))
    if len(checkpoints) != len(claims):
        problems.append(f"{len(checkpoints)} claimed checkpoints for {len(claims)} claims")
    bad = [item_id for item_id, who in reported.items() if per_item.get(item_id) != who]
    if bad:
        problems.append(f"{len(bad)} claims without exactly one matching checkpoint")
    if other_kinds:
        problems.append(f"{other_kinds} checkpoints of other kinds")
    return problems


# --- Clients --------------------------------------------------------------------------------

# The shared pool: available items pushed to no one, what the product's item_pool index holds
# (the same index serves the floor and the naive loops, as it serves the product).
SHARED_POOL = "assignee_id IS NULL AND assigned_team_id IS NULL"
PG_FLOOR = f"""
WITH c AS (
    UPDATE board_item AS i
    SET state = 'claimed', holder_id = %(user)s, token = i.token + 1, claimed_at = now(),
        lease_expires_at = now() + r.lease_duration
    FROM board_run r
    WHERE r.id = i.run_id AND i.id = (
        SELECT id FROM board_item
        WHERE run_id = %(run)s AND state = 'available' AND {SHARED_POOL}
        ORDER BY position LIMIT 1
        FOR UPDATE SKIP LOCKED
    )
    RETURNING i.id, i.run_id, i.token, i.lease_expires_at
)
INSERT INTO board_checkpoint (run_id, item_id, kind, at, actor_id, actor_name, token, reason,
                              data)
SELECT c.run_id, c.id, 'claimed', now(), %(user)s, %(name)s, c.token, '',
       jsonb_build_object('lease_expires_at', c.lease_expires_at)
FROM c
RETURNING item_id, token
"""
PG_NAIVE_READ = f"""
SELECT id FROM board_item WHERE run_id = %s AND state = 'available' AND {SHARED_POOL}
ORDER BY position LIMIT 1
"""
PG_NAIVE_UPDATE = """
UPDATE board_item SET state = 'claimed', holder_id = %s, token = token + 1, claimed_at = now(),
    lease_expires_at = now() + %s
WHERE id = %s AND state = 'available'
RETURNING token
"""
PG_CHECKPOINT = """
INSERT INTO board_checkpoint (run_id, item_id, kind, at, actor_id, actor_name, token, reason,
                              data)
VALUES (%s, %s, 'claimed', now(), %s, %s, %s, '', %s)
"""
SQLITE_FLOOR = f"""
UPDATE board_item SET state = 'claimed', holder_id = ?, token = token + 1, claimed_at = ?,
    lease_expires_at = ?
WHERE id = (SELECT id FROM board_item WHERE run_id = ? AND state = 'available'
            AND {SHARED_POOL} ORDER BY position LIMIT 1)
RETURNING id, token
"""
SQLITE_NAIVE_READ = f"""
SELECT id FROM board_item WHERE run_id = ? AND state = 'available' AND {SHARED_POOL}
ORDER BY position LIMIT 1
"""
SQLITE_NAIVE_UPDATE = """
UPDATE board_item SET state = 'claimed', holder_id = ?, token = token + 1, claimed_at = ?,
    lease_expires_at = ?
WHERE id = ? AND state = 'available'
RETURNING token
"""
SQLITE_CHECKPOINT = """
INSERT INTO board_checkpoint (run_id, item_id, kind, at, actor_id, actor_name, token, reason,
                              data)
VALUES (?, ?, 'claimed', ?, ?, ?, ?, '', ?)
"""


def _sqlite_time(moment: datetime) -> str:
    """How Django stores an aware datetime in SQLite: naive UTC, microseconds."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")


class Claimer:
    """One client's way of claiming; claim() returns (item id, token), or None when the
    pool is empty."""

    retries = 0

    def close(self) -> None:
        pass


class ServiceClaimer(Claimer):
    def __init__(self, target: Target, user_id: int):
        from django.db import connection

        from accounts.access import Capability, teams_for
        from accounts.models import User
        from board.models import Run
        from board.services import item_claim_next

        self.user = User.objects.get(pk=user_id)
        self.run = Run.objects.get(pk=target.run_id)
        list(teams_for(self.user, Capability.WORK))
        connection.ensure_connection()
        # Warm up: the first claim of a process pays for imports, caches and the broker
        # connection; it goes to the warm-up run, before the start line.
        item_claim_next(actor=self.user, run=Run.objects.get(pk=target.warm_run_id))
        # Its lease timer too: the first message a process sends sets up Celery's producer
        # and the broker connection (seconds, with 64 processes starting on 2 cores), which
        # would otherwise happen in the timer thread after the start line.
        from board.timers import outbox

        outbox.flush()

    def claim(self):
        from board.errors import NothingToClaim
        from board.services import item_claim_next

        try:
            item = item_claim_next(actor=self.user, run=self.run)
        except NothingToClaim:
            return None
        return item.pk, item.token

    def close(self) -> None:
        from django.db import connection

        connection.close()


class FloorClaimer(Claimer):
    def __init__(self, target: Target, user_id: int):
        self.target, self.user_id = target, user_id
        self.name = f"bench{user_id}"
        self.conn = target.raw_connect()

    def claim(self):
        if self.target.vendor == "postgresql":
            row = self.conn.execute(
                PG_FLOOR, {"user": self.user_id, "run": self.target.run_id, "name": self.name}
            ).fetchone()
            return tuple(row) if row else None
        now = datetime.now(UTC)
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            row = self.conn.execute(
                SQLITE_FLOOR, [self.user_id, _sqlite_time(now), _sqlite_time(now + LEASE),
                               self.target.run_id],
            ).fetchone()
            if row is None:
                self.conn.execute("ROLLBACK")
                return None
            self.conn.execute(SQLITE_CHECKPOINT, [
                self.target.run_id, row[0], _sqlite_time(now), self.user_id, self.name, row[1],
                json.dumps({"lease_expires_at": (now + LEASE).isoformat()}),
            ])
            self.conn.execute("COMMIT")
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        return row[0], row[1]

    def close(self) -> None:
        self.conn.close()


class NaiveOrmClaimer(Claimer):
    def __init__(self, target: Target, user_id: int):
        from django.db import connection

        from accounts.models import User

        self.user = User.objects.get(pk=user_id)
        self.run_id = target.run_id
        connection.ensure_connection()

    def claim(self):
        from django.db import transaction
        from django.db.models import F
        from django.utils import timezone

        from board.models import Checkpoint, CheckpointKind, Item, ItemState

        while True:
            item_id = (Item.objects.filter(run_id=self.run_id, state=ItemState.AVAILABLE,
                                           assignee=None, assigned_team=None)
                       .order_by("position").values_list("pk", flat=True).first())
            if item_id is None:
                return None
            now = timezone.now()
            with transaction.atomic():
                won = Item.objects.filter(pk=item_id, state=ItemState.AVAILABLE).update(
                    state=ItemState.CLAIMED, holder=self.user, token=F("token") + 1,
                    claimed_at=now, lease_expires_at=now + LEASE,
                )
                if won:
                    token = Item.objects.values_list("token", flat=True).get(pk=item_id)
                    Checkpoint.objects.create(
                        run_id=self.run_id, item_id=item_id, kind=CheckpointKind.CLAIMED,
                        at=now, actor=self.user, actor_name=self.user.username, token=token,
                        data={"lease_expires_at": (now + LEASE).isoformat()},
                    )
                    return item_id, token
            self.retries += 1

    def close(self) -> None:
        from django.db import connection

        connection.close()


class NaiveClaimer(FloorClaimer):
    def claim(self):
        while True:
            if self.target.vendor == "postgresql":
                row = self.conn.execute(PG_NAIVE_READ, [self.target.run_id]).fetchone()
                if row is None:
                    return None
                with self.conn.transaction():
                    won = self.conn.execute(
                        PG_NAIVE_UPDATE, [self.user_id, LEASE, row[0]]
                    ).fetchone()
                    if won is not None:
                        self.conn.execute(PG_CHECKPOINT, [
                            self.target.run_id, row[0], self.user_id, self.name, won[0],
                            json.dumps({"lease_expires_at": None}),
                        ])
                        return row[0], won[0]
            else:
                row = self.conn.execute(SQLITE_NAIVE_READ, [self.target.run_id]).fetchone()
                if row is None:
                    return None
                now = datetime.now(UTC)
                self.conn.execute("BEGIN IMMEDIATE")
                try:
                    won = self.conn.execute(SQLITE_NAIVE_UPDATE, [
                        self.user_id, _sqlite_time(now), _sqlite_time(now + LEASE), row[0]
                    ]).fetchone()
                    if won is not None:
                        self.conn.execute(SQLITE_CHECKPOINT, [
                            self.target.run_id, row[0], _sqlite_time(now), self.user_id,
                            self.name, won[0],
                            json.dumps({"lease_expires_at": (now + LEASE).isoformat()}),
                        ])
                    self.conn.execute("COMMIT")
                except BaseException:
                    self.conn.execute("ROLLBACK")
                    raise
                if won is not None:
                    return row[0], won[0]
            self.retries += 1


class HttpClaimer(Claimer):
    def __init__(self, target: Target, user_id: int, base_url: str, token: str):
        import http.client

        split = urlsplit(base_url)
        self.http = http.client.HTTPConnection(split.hostname, split.port, timeout=60)
        self.token = token
        self.body = json.dumps({"run": target.warm_run_id})
        self.claim()  # warm up (the connection, a gunicorn worker) in the warm-up run
        self.body = json.dumps({"run": target.run_id})

    def claim(self):
        self.http.request("POST", "/api/v1/claims/next", body=self.body, headers={
            "Authorization": f"Bearer {self.token}",
            "Idempotency-Key": str(uuid.uuid4()),
            "Content-Type": "application/json",
        })
        response = self.http.getresponse()
        payload = response.read()
        if response.status == 200:
            claim = json.loads(payload)
            return claim["item"]["id"], claim["token"]
        if response.status == 204:
            return None  # the pool is empty
        raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")

    def close(self) -> None:
        self.http.close()


def client_main(index: int, target: Target, commands: mp.Queue, results: mp.Queue) -> None:
    """A client process: waits for measurements to run and reports what it claimed."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _django(target.env())
    user_id = target.users[index]
    results.put(("ready", index))
    while True:
        command = commands.get()
        if command is None:
            return
        method, seconds, extra = command
        latencies: list[float] = []
        claimed: list[tuple[int, int, int]] = []
        errors: list[str] = []
        claimer = None
        try:
            if method == "a":
                claimer = ServiceClaimer(target, user_id)
            elif method == "b":
                claimer = FloorClaimer(target, user_id)
            elif method == "c":
                claimer = NaiveOrmClaimer(target, user_id)
            elif method == "e":
                claimer = NaiveClaimer(target, user_id)
            else:
                claimer = HttpClaimer(target, user_id, extra["base_url"],
                                      extra["tokens"][index])
        except Exception as error:  # noqa: BLE001 - reported as an error of the measurement
            errors.append(f"{type(error).__name__}: {error}")
        # Ready: every client starts at the same moment, once all of them are.
        results.put(("armed", index))
        start_at = commands.get()
        stop_at = start_at + seconds
        try:
            time.sleep(max(0.0, start_at - time.time()))
            while claimer is not None and time.time() < stop_at:
                began = time.perf_counter()
                got = claimer.claim()
                if got is None:
                    break
                latencies.append(time.perf_counter() - began)
                claimed.append((user_id, got[0], got[1]))
        except Exception as error:  # noqa: BLE001 - reported as an error of the measurement
            errors.append(f"{type(error).__name__}: {error}")
        finally:
            ended = time.time()
            if claimer is not None:
                claimer.close()
        if method == "a" and index == 0 and not target.broker_url.startswith("filesystem"):
            from config.celery import app

            app.control.purge()  # the lease timers of the measurement: nobody will run them
        results.put((index, latencies, claimed, errors, ended,
                     claimer.retries if claimer else 0))


# --- Measurements ---------------------------------------------------------------------------


@dataclass
class Result:
    vendor: str
    method: str
    clients: int
    claims: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: list[str]
    problems: list[str]
    retries: int = 0

    @property
    def rate(self) -> float:
        return self.claims / self.seconds if self.seconds else 0.0


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(fraction * (len(ordered) - 1))))]


class Fleet:
    """Client processes started once per database; each measurement uses the first N."""

    def __init__(self, target: Target, size: int):
        context = mp.get_context("spawn")
        self.results = context.Queue()
        self.queues = [context.Queue() for _ in range(size)]
        self.processes = [
            context.Process(target=client_main, args=(i, target, self.queues[i], self.results),
                            daemon=True)
            for i in range(size)
        ]
        for process in self.processes:
            process.start()
        # Importing Django in 64 processes on 2 cores takes a while: wait for all of them.
        for _ in self.processes:
            assert self.results.get(timeout=600)[0] == "ready"

    def measure(self, target: Target, method: str, clients: int, seconds: float,
                items: int, extra: dict | None = None) -> Result:
        reset_pool(target, items, len(self.processes))
        for queue in self.queues[:clients]:
            queue.put((method, seconds, extra or {}))
        # Each client connects and warms up (its first claim, its first lease timer) before
        # the start line, which is drawn once the last of them is ready.
        for _ in range(clients):
            assert self.results.get(timeout=600)[0] == "armed"
        start_at = time.time() + 0.2
        for queue in self.queues[:clients]:
            queue.put(start_at)
        reports = [self.results.get(timeout=seconds + 300) for _ in range(clients)]
        latencies = [value for report in reports for value in report[1]]
        claims = [claim for report in reports for claim in report[2]]
        errors = [error for report in reports for error in report[3]]
        elapsed = max(report[4] for report in reports) - start_at
        problems = verify(target, claims)
        return Result(
            vendor=target.vendor, method=method, clients=clients, claims=len(claims),
            seconds=elapsed, p50_ms=percentile(latencies, 0.50) * 1000,
            p99_ms=percentile(latencies, 0.99) * 1000, errors=errors, problems=problems,
            retries=sum(report[5] for report in reports),
        )

    def stop(self) -> None:
        for queue in self.queues:
            queue.put(None)
        for process in self.processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()


# --- HTTP (d) -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _tokens_in_django(env: dict[str, str], users: dict[int, int], result: mp.Queue) -> None:
    _django(env)
    try:
        from accounts.models import User
        from accounts.services import api_token_create
    except ImportError as error:
        result.put(("missing", f"no API tokens: {error}"))
        return
    tokens = {index: api_token_create(user=User.objects.get(pk=user_id), name="bench")[1]
              for index, user_id in users.items()}
    result.put(("ok", tokens))


def api_available(target: Target) -> str | None:
    """Why the API cannot be measured, or None when it can."""
    if not (REPO / "board" / "api").is_dir():
        return "board/api does not exist"
    urls = (REPO / "config" / "urls.py").read_text()
    if "api" not in urls:
        return "config/urls.py does not route /api/"
    return None


class Gunicorn:
    def __init__(self, target: Target, workers: int, threads: int = 1):
        self.port = _free_port()
        self.log = open(target.var_dir / "gunicorn.log", "w")  # noqa: SIM115 - closed in stop
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "config.wsgi:application",
             "--bind", f"127.0.0.1:{self.port}", "--workers", str(workers),
             *(["--worker-class", "gthread", "--threads", str(threads)] if threads > 1
               else ["--worker-class", "sync"]),
             "--keep-alive", "75", "--backlog", "2048",
             "--log-level", "warning"],
            cwd=REPO, env={**os.environ, **target.env()}, stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.base_url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (target.var_dir / "gunicorn.log").read_text()
                raise RuntimeError(f"gunicorn exited:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("gunicorn did not start")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


# --- Main -----------------------------------------------------------------------------------


def prepare(vendor: str, url: str, var_dir: Path, broker_url: str, clients: int) -> Target:
    target = Target(vendor=vendor, url=url, var_dir=var_dir, broker_url=broker_url)
    if vendor == "postgresql":
        create_postgres(url)
    migrate(target)
    context = mp.get_context("spawn")
    result = context.Queue()
    process = context.Process(target=_setup_in_django, args=(target.env(), clients, result))
    process.start()
    target.run_id, target.warm_run_id, target.users = result.get(timeout=300)
    process.join()
    return target


def bench_database(target: Target, args: argparse.Namespace) -> list[Result]:
    results = []
    fleet = Fleet(target, args.clients_needed)
    try:
        for round_ in range(1, args.repeat + 1):
            if args.repeat > 1:
                print(f"-- round {round_} of {args.repeat}", flush=True)
            for clients in args.clients:
                for method in args.methods:
                    if method == "d":
                        continue
                    result = fleet.measure(target, method, clients, args.seconds, args.items)
                    results.append(result)
                    print_result(result)
        if "d" in args.methods:
            results.extend(bench_http(target, fleet, args))
    finally:
        fleet.stop()
    return results


def bench_http(target: Target, fleet: Fleet, args: argparse.Namespace) -> list[Result]:
    clients = args.http_clients
    missing = api_available(target)
    tokens = None
    if missing is None:
        context = mp.get_context("spawn")
        queue = context.Queue()
        process = context.Process(target=_tokens_in_django,
                                  args=(target.env(), target.users, queue))
        process.start()
        status, tokens = queue.get(timeout=120)
        process.join()
        if status != "ok":
            missing, tokens = tokens, None
    if missing is not None:
        print(f"{target.vendor:10} (d) http: API not available ({missing})")
        return []
    server = Gunicorn(target, args.gunicorn_workers, args.gunicorn_threads)
    results = []
    try:
        for _ in range(args.repeat):
            result = fleet.measure(target, "d", clients, args.seconds, args.items,
                                   {"base_url": server.base_url, "tokens": tokens})
            results.append(result)
            print_result(result)
    finally:
        server.stop()
    return results


def print_result(result: Result) -> None:
    status = "ok" if not (result.errors or result.problems) else "FAILED"
    print(
        f"{result.vendor:10} ({result.method}) {METHODS[result.method]:8} {result.clients:3} "
        f"clients: {result.claims:6} claims in {result.seconds:5.2f} s = "
        f"{result.rate:8.0f}/s  p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms  "
        f"{'retries ' + str(result.retries) + '  ' if result.retries else ''}verify: {status}",
        flush=True,
    )
    for line in (result.errors[:3] + result.problems):
        print(f"    {line}")


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def combine(results: list[Result]) -> Result:
    """One result for several rounds of a measurement: the medians of their rate, p50 and
    p99, and all their errors and problems."""
    first = results[0]
    return Result(
        vendor=first.vendor, method=first.method, clients=first.clients,
        claims=median([r.rate for r in results]), seconds=1.0,
        p50_ms=median([r.p50_ms for r in results]), p99_ms=median([r.p99_ms for r in results]),
        errors=[e for r in results for e in r.errors],
        problems=[p for r in results for p in r.problems],
        retries=sum(r.retries for r in results),
    )


def summarise(results: list[Result], rounds: int) -> None:
    grouped: dict[tuple[str, str, int], list[Result]] = {}
    for r in results:
        grouped.setdefault((r.vendor, r.method, r.clients), []).append(r)
    index = {key: combine(group) for key, group in grouped.items()}
    if rounds > 1:
        print(f"\nMedians of {rounds} rounds:")
        for r in index.values():
            print(f"  {r.vendor:10} ({r.method}) {METHODS[r.method]:8} {r.clients:3} clients: "
                  f"{r.rate:8.0f}/s  p50 {r.p50_ms:7.2f} ms  p99 {r.p99_ms:7.2f} ms")
    print("\nRatios (throughput; p99 where it says so):")
    for vendor in sorted({r.vendor for r in results}):
        for clients in sorted({r.clients for r in results if r.vendor == vendor}):
            a, b, c = (index.get((vendor, m, clients)) for m in "abc")
            d = index.get((vendor, "d", clients))
            parts = []
            if a and b:
                parts.append(f"(a)/(b) {a.rate / b.rate:5.2f}  p99 (a)/(b) "
                             f"{a.p99_ms / b.p99_ms:5.2f}")
            if a and c:
                parts.append(f"(a)/(c) {a.rate / c.rate:5.2f}")
            e = index.get((vendor, "e", clients))
            if a and e:
                parts.append(f"(a)/(e) {a.rate / e.rate:5.2f}")
            if d and b:
                parts.append(f"(d)/(b) {d.rate / b.rate:5.2f}")
            if parts:
                print(f"  {vendor:10} {clients:3} clients: " + "   ".join(parts))
    print("\nTargets:")

    def check(name: str, ok: bool | None, detail: str) -> None:
        verdict = "n/a " if ok is None else ("PASS" if ok else "MISS")
        print(f"  [{verdict}] {name}: {detail}")

    def get(vendor, method, clients):
        return index.get((vendor, method, clients))

    a16, b16, c16 = (get("postgresql", m, 16) for m in "abc")
    a64, d16 = get("postgresql", "a", 64), get("postgresql", "d", 16)
    if a16 and b16:
        check("PostgreSQL 16 clients: (a) >= 70 % of (b)", a16.rate >= 0.7 * b16.rate,
              f"{a16.rate:.0f}/s vs {b16.rate:.0f}/s = {a16.rate / b16.rate:.0%}")
        check("PostgreSQL 16 clients: p99 (a) <= 1.5 x p99 (b)",
              a16.p99_ms <= 1.5 * b16.p99_ms,
              f"{a16.p99_ms:.2f} ms vs {b16.p99_ms:.2f} ms = {a16.p99_ms / b16.p99_ms:.2f} x")
    if a16 and c16:
        check("PostgreSQL 16 clients: (a) >= 5 x (c)", a16.rate >= 5 * c16.rate,
              f"{a16.rate:.0f}/s vs {c16.rate:.0f}/s = {a16.rate / c16.rate:.1f} x")
    if a16 and a64:
        check("PostgreSQL 64 clients: (a) keeps >= 75 % of its 16-client rate",
              a64.rate >= 0.75 * a16.rate,
              f"{a64.rate:.0f}/s vs {a16.rate:.0f}/s = {a64.rate / a16.rate:.0%}")
    if b16:
        if d16:
            check("PostgreSQL 16 clients: (d) >= 30 % of (b)", d16.rate >= 0.3 * b16.rate,
                  f"{d16.rate:.0f}/s vs {b16.rate:.0f}/s = {d16.rate / b16.rate:.0%}")
            check("PostgreSQL 16 clients: p99 (d) <= 100 ms", d16.p99_ms <= 100,
                  f"{d16.p99_ms:.2f} ms")
        else:
            check("PostgreSQL 16 clients: (d) over HTTP", None, "API not available")
    sa16, sb16 = get("sqlite", "a", 16), get("sqlite", "b", 16)
    if sa16 and sb16:
        check("SQLite 16 clients: (a) >= 50 % of (b)", sa16.rate >= 0.5 * sb16.rate,
              f"{sa16.rate:.0f}/s vs {sb16.rate:.0f}/s = {sa16.rate / sb16.rate:.0%}")
    sqlite_errors = sum(len(r.errors) for r in results if r.vendor == "sqlite")
    if sa16:
        check("SQLite: zero errors", sqlite_errors == 0, f"{sqlite_errors} errors")
    failed = [r for r in results if r.errors or r.problems]  # every round, not the medians
    check("every measurement verified (no double or lost claim, one checkpoint each)",
          not failed, f"{len(failed)} measurements with errors or problems")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    parser.add_argument("--postgres-url", default=os.environ.get("BENCH_POSTGRES_URL", ""),
                        help="database to (re)create for the PostgreSQL run; its name must "
                             "contain 'bench' (default: $BENCH_POSTGRES_URL; none: skipped)")
    parser.add_argument("--databases", default="sqlite,postgresql",
                        help="comma-separated: sqlite, postgresql (default: both)")
    parser.add_argument("--clients", default="1,4,16,64",
                        help="comma-separated client counts (default: 1,4,16,64)")
    parser.add_argument("--methods", default="abcde",
                        help="which of a (service), b (floor), c (naive), d (http), e (naive in "
                             "bare SQL): default abcde")
    parser.add_argument("--items", type=int, default=10_000,
                        help="available items in the pool at the start of each measurement")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help="longest a measurement runs (it also ends when the pool is empty)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rounds of every measurement; the ratios and targets then use "
                             "the medians (this machine's neighbours make single runs noisy)")
    parser.add_argument("--http-clients", type=int, default=16)
    parser.add_argument("--http-sqlite", action="store_true",
                        help="also measure (d) on SQLite (default: PostgreSQL only)")
    parser.add_argument("--gunicorn-threads", type=int, default=1,
                        help="threads per worker for (d): more than 1 runs gthread workers, "
                             "which keep connections alive (default 1: sync workers)")
    parser.add_argument("--gunicorn-workers", type=int, default=5,
                        help="sync workers for (d) (default 5: 2 x cores + 1 on 2 cores)")
    parser.add_argument("--broker-url", default=os.environ.get("CELERY_BROKER_URL", ""),
                        help="Celery broker for the lease timers of (a) and (d) (default: "
                             "$CELERY_BROKER_URL, else the filesystem broker in a temp folder)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()
    args.clients = [int(n) for n in args.clients.split(",")]
    args.methods = [m for m in args.methods if m in METHODS]
    databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if "d" in args.methods:
        args.clients_needed = max(max(args.clients), args.http_clients)
    else:
        args.clients_needed = max(args.clients)

    print(f"{os.cpu_count()} CPUs; {args.items} items per measurement; up to {args.seconds} s "
          f"each; clients {args.clients}")
    results: list[Result] = []
    work = Path(tempfile.mkdtemp(prefix="pullboard-bench-"))
    try:
        for vendor in databases:
            var_dir = work / vendor
            var_dir.mkdir()
            broker = args.broker_url or "filesystem://"
            if vendor == "sqlite":
                url = f"sqlite:///{var_dir / 'bench.sqlite3'}"
            elif vendor == "postgresql":
                if not args.postgres_url:
                    print("PostgreSQL skipped: give --postgres-url or set BENCH_POSTGRES_URL")
                    continue
                url = args.postgres_url
            else:
                sys.exit(f"unknown database {vendor!r}")
            print(f"\n== {vendor}: {url} (lease timers to {broker}) ==", flush=True)
            target = prepare(vendor, url, var_dir, broker, args.clients_needed)
            if vendor == "sqlite" and not args.http_sqlite:
                methods = [m for m in args.methods if m != "d"]
            else:
                methods = args.methods
            results.extend(bench_database(target, argparse.Namespace(
                **{**vars(args), "methods": methods})))
        summarise(results, args.repeat)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
