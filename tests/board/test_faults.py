"""Faults with real processes: a Celery worker killed with SIGKILL in the middle of a sweep,
and the Redis broker stopped while staff keep working (DESIGN.md, invariant 5: leases end, and
the board never freezes because the broker or the worker is down)."""

import json
import logging
import re
import shutil
import signal
import sqlite3
import time
import uuid
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta

import pytest
import time_machine
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone

from accounts.services import api_token_create
from board import timers
from board.health import SWEEP_HEARTBEAT
from board.models import Checkpoint, CheckpointKind, Heartbeat, Item, ItemState, Run
from board.services import TIMER_ACTOR, item_claim_next
from board.tasks import sweep_expired_leases
from board.timers import TimerOutbox
from tests.conftest import require_service
from tests.processes import (
    CeleryProcess,
    RedisServer,
    purge_broker,
    sweep_with_a_new_worker,
    wait_until,
)

# --- A worker killed in the middle of a sweep -----------------------------------------------

SHARDS = 1000
# Small batches: the sweep of 1,000 claims is 100 transactions, so there are many moments
# between two of them at which the test can stop it.
BATCH = 10
REINDEX = "---\nflow: parallel\n---\n# Reindex\n\n" + "".join(
    f"- Reindex shard {n}\n" for n in range(SHARDS)
)


@pytest.fixture
def lapsed_backlog(make_runbook, make_run, staff):
    """A run of 1,000 items, every one claimed by staff (token 1, with its `claimed`
    checkpoint) and lapsed ten minutes ago with no timer left to expire it: the backlog a
    broker outage leaves for the sweep. Set up with the ORM; 1,000 claims through the
    service would each drop a timer into this process's outbox."""
    run = make_run(runbook=make_runbook(REINDEX, filename="reindex.md"), title="INC-7 reindex")
    lapsed_at = timezone.now() - timedelta(minutes=10)
    claimed_at = lapsed_at - run.lease_duration
    Item.objects.filter(run=run).update(
        state=ItemState.CLAIMED, holder=staff, token=1, claimed_at=claimed_at,
        lease_expires_at=lapsed_at,
    )
    Checkpoint.objects.bulk_create(
        Checkpoint(run=run, item_id=item_id, kind=CheckpointKind.CLAIMED, at=claimed_at,
                   actor=staff, actor_name=staff.display_name, token=1,
                   data={"lease_expires_at": lapsed_at.isoformat()})
        for item_id in run.items.values_list("pk", flat=True)
    )
    return run


def still_claimed(run) -> int:
    return Item.objects.filter(run=run, state=ItemState.CLAIMED).count()


@contextmanager
def between_two_batches():
    """Take the one lock every batch of the sweep needs, between two batches, and hold it:
    while it is held the sweep can commit nothing more, so the test looks at (and kills) a
    sweep that is really half-way, however fast the batches go.

    PostgreSQL queues lock requests: a request made while a batch runs is granted when that
    batch commits, before the next batch's own request (each batch inserts checkpoints, which
    EXCLUSIVE mode refuses; reads go on). SQLite has one write lock and no queue, so a second
    connection asks again and again without waiting until it comes in between two batches.
    """
    if connection.vendor == "postgresql":
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("LOCK TABLE board_checkpoint IN EXCLUSIVE MODE")
            yield
        return
    gate = sqlite3.connect(connection.settings_dict["NAME"], timeout=0, isolation_level=None)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                gate.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError:  # database is locked: a batch is running
                if time.monotonic() > deadline:
                    raise
        try:
            yield
        finally:
            gate.execute("ROLLBACK")
    finally:
        gate.close()


def wait_for_the_killed_session_to_end(timeout: float = 30) -> None:
    """On PostgreSQL the server ends a killed client's session, rolling back the batch it had
    begun and releasing its row locks, once it notices the closed socket; wait until no other
    session of the test database is inside a transaction, so the next sweep skips no rows a
    dead session still holds. SQLite needs nothing: the kernel drops a dead process's file
    locks, and what it never committed is ignored."""
    if connection.vendor != "postgresql":
        return

    def in_transaction() -> int:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND pid <> pg_backend_pid() AND backend_type = 'client backend' "
                "AND state <> 'idle'"
            )
            return cursor.fetchone()[0]

    wait_until(lambda: in_transaction() == 0, timeout=timeout, interval=0.05,
               what="the killed worker's database session to end")


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_worker_killed_mid_sweep_leaves_every_claim_expired_exactly_once_after_a_restart(
    lapsed_backlog, tmp_path
):
    run = lapsed_backlog
    purge_broker()
    env = {"SWEEP_BATCH_SIZE": str(BATCH)}

    first = CeleryProcess("worker", tmp_path / "worker-1.log", extra_env=env)
    try:
        first.wait_ready()
        sweep_expired_leases.delay()
        wait_until(lambda: still_claimed(run) < SHARDS, timeout=60, interval=0.001,
                   what="the first sweep to commit a batch", log=first.log)
        with between_two_batches():
            left = still_claimed(run)
            first.stop(signal.SIGKILL)
    finally:
        first.stop(signal.SIGKILL)
    assert first.process.returncode == -signal.SIGKILL
    assert 0 < left < SHARDS, f"the sweep ended before the kill\n{first.log()}"
    wait_for_the_killed_session_to_end()

    # Killed half-way: the batches it committed stay, the one it had begun is rolled back,
    # the rest is still claimed, and the sweep never reached its end (its heartbeat).
    assert still_claimed(run) == left and left % BATCH == 0
    assert Checkpoint.objects.filter(run=run, kind=CheckpointKind.EXPIRED).count() == \
        SHARDS - left
    assert not Heartbeat.objects.filter(name=SWEEP_HEARTBEAT).exists()

    # A new worker, and the sweep sent again, as beat sends it every LEASE_SWEEP_SECONDS.
    heartbeat = sweep_with_a_new_worker(tmp_path / "worker-2.log", env)

    # The second sweep released exactly what the first one had not.
    assert heartbeat.detail == f"expired {left} stale claims"
    assert still_claimed(run) == 0
    assert set(run.items.values_list(
        "state", "holder", "token", "attempts", "claimed_at", "lease_expires_at"
    )) == {(ItemState.AVAILABLE, None, 1, 1, None, None)}
    # Exactly one `expired` checkpoint per item, none twice, none missing; nothing else new.
    assert Counter(Checkpoint.objects.filter(run=run).values_list("kind", flat=True)) == {
        CheckpointKind.LAUNCHED: 1, CheckpointKind.CLAIMED: SHARDS, CheckpointKind.EXPIRED: SHARDS
    }
    expired = Checkpoint.objects.filter(run=run, kind=CheckpointKind.EXPIRED)
    assert sorted(expired.values_list("item_id", flat=True)) == sorted(
        run.items.values_list("pk", flat=True)
    )
    assert list(expired.values_list("token", "actor", "actor_name", "data")) == [
        (1, None, TIMER_ACTOR, {"attempts": 1})
    ] * SHARDS


# --- Redis stopped while staff keep working -------------------------------------------------

RESTORE = "---\nflow: parallel\n---\n# Restore the queue\n\n" + "".join(
    f"- Step {n}\n" for n in range(1, 7)
)
HTMX = {"HTTP_HX_REQUEST": "true"}


class HeldOutbox(TimerOutbox):
    """The lease-timer outbox without its sender thread: timers wait until the test flushes,
    so the flush that meets the stopped broker is the test's own call (the thread makes the
    same call 0.1 s after a claim, and would race the test for the timers)."""

    def add(self, item_id, token, eta) -> None:
        with self._lock:
            self._pending.append((item_id, token, eta))


def send_to(app, urls: tuple[str | None, str | None], transport_options: dict) -> None:
    """Point this process's Celery app at a broker: it makes its connection and producer
    pools anew, from the URLs, at the next send. (The read and write URLs, not broker_url:
    Celery prefers the CELERY_BROKER_URL environment variable to broker_url.)"""
    app.conf.broker_read_url, app.conf.broker_write_url = urls
    app.conf.broker_transport_options = transport_options
    app._pool = None
    app.amqp._producer_pool = None


@pytest.fixture
def private_redis(tmp_path, monkeypatch):
    """A Redis server of the test's own, which this process's Celery app sends to until the
    test ends, and a held timer outbox."""
    require_service(shutil.which("redis-server") is not None, "redis-server")
    from kombu import pools

    from config.celery import app

    timers.outbox.flush()  # the timers of earlier tests leave for their own broker first
    held = HeldOutbox()
    monkeypatch.setattr(timers, "outbox", held)
    server = RedisServer(tmp_path / "redis.log")
    server.start()
    configured = ((app.conf.get("broker_read_url"), app.conf.get("broker_write_url")),
                  app.conf.broker_transport_options)
    send_to(app, (server.url(), server.url()), {})
    try:
        yield server, held
    finally:
        ours = [app.amqp._producer_pool, app._pool]
        send_to(app, *configured)
        for group in (pools.producers, pools.connections):
            for key, pool in list(group.items()):
                if any(pool is mine for mine in ours):
                    group.pop(key).force_close_all()
        server.stop()


def web(client, action: str, item_id: int | None = None, **fields):
    """A board form as htmx posts it (the answer is the fragment and its status, not a 303),
    with the fresh idempotency key a rendered form carries."""
    url = reverse(f"board:{action}", args=[] if item_id is None else [item_id])
    return client.post(url, {"idempotency_key": str(uuid.uuid4()), **fields}, **HTMX)


def api(client, token: str, path: str, body: dict | None = None):
    return client.post(
        f"/api/v1{path}", data=json.dumps(body) if body is not None else "",
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}", "Idempotency-Key": str(uuid.uuid4())},
    )


def board_state(run) -> list[tuple]:
    return list(run.items.order_by("position").values_list(
        "position", "state", "holder__username", "token", "attempts"
    ))


def trail(run) -> list[tuple]:
    return list(Checkpoint.objects.filter(run=run).order_by("id").values_list(
        "kind", "item__position", "token", "actor_name"
    ))


@pytest.mark.redis
@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_with_redis_stopped_staff_keep_working_and_a_restarted_worker_sweeps_the_backlog(
    private_redis, make_runbook, make_run, manager, staff, teammate, client, settings, caplog,
    tmp_path,
):
    redis, held = private_redis
    settings.LEASE_GRACE = timedelta(minutes=2)
    runbook = make_runbook(RESTORE, filename="restore.md")
    now = timezone.now()
    # Redis is down before the first claim, so no lease timer ever reaches a broker.
    redis.stop()

    # Earlier, tia claimed #1 (its lease ran out 3 minutes ago, beyond the 2-minute grace),
    # then #2 and #3 (their leases ran out 30 seconds ago, within the grace).
    with time_machine.travel(now - runbook.lease_duration - timedelta(minutes=3), tick=False):
        run = make_run(runbook=runbook, title="INC-9 queue stalled")
        Run.objects.filter(pk=run.pk).update(wip_limit=10)
        item_claim_next(actor=teammate, run=run)
    with time_machine.travel(now - runbook.lease_duration - timedelta(seconds=30), tick=False):
        item_claim_next(actor=teammate, run=run)
        item_claim_next(actor=teammate, run=run)
    pk = dict(run.items.values_list("position", "pk"))

    # The web board, as sam: claim and complete #4, claim and abandon #5.
    client.force_login(staff)
    response = web(client, "claim_next")
    assert response.status_code == 200 and "You claimed #4" in response.content.decode()
    response = web(client, "item_complete", pk[4], token=1)
    assert response.status_code == 200 and "Done: #4" in response.content.decode()
    response = web(client, "claim_next")
    assert response.status_code == 200 and "You claimed #5" in response.content.decode()
    response = web(client, "item_abandon", pk[5], token=1, reason="wrong host")
    assert response.status_code == 200 and "it is back in the pool" in response.content.decode()

    # The JSON API, as sam: claim and complete #5 again, claim and abandon #6, claim #6 again.
    _, api_token = api_token_create(user=staff, name="faults")
    response = api(client, api_token, "/claims/next")
    assert response.status_code == 200
    assert (response.json()["item"]["position"], response.json()["token"]) == (5, 2)
    response = api(client, api_token, f"/items/{pk[5]}/complete", {"token": 2})
    assert response.status_code == 200 and response.json()["item"]["state"] == "done"
    response = api(client, api_token, "/claims/next")
    assert response.status_code == 200
    assert (response.json()["item"]["position"], response.json()["token"]) == (6, 1)
    response = api(client, api_token, f"/items/{pk[6]}/abandon",
                   {"token": 1, "reason": "pager went off"})
    assert response.status_code == 200 and response.json()["item"]["state"] == "available"
    response = api(client, api_token, "/claims/next")
    assert response.status_code == 200
    assert (response.json()["item"]["position"], response.json()["token"]) == (6, 2)

    # The pool is empty now, yet the board is not frozen: the claim first takes back #1,
    # lapsed beyond the grace, with its `expired` checkpoint, then claims it. #2 and #3,
    # lapsed within the grace, are left to the sweep.
    response = web(client, "claim_next")
    assert response.status_code == 200, response.content.decode()
    assert "You claimed #1" in response.content.decode()
    board_during_the_outage = [
        (1, ItemState.CLAIMED, "sam", 2, 1),
        (2, ItemState.CLAIMED, "tia", 1, 0),
        (3, ItemState.CLAIMED, "tia", 1, 0),
        (4, ItemState.DONE, None, 1, 0),
        (5, ItemState.DONE, None, 2, 1),
        (6, ItemState.CLAIMED, "sam", 2, 1),
    ]
    assert board_state(run) == board_during_the_outage
    during_the_outage = [
        ("launched", None, None, manager.display_name),
        ("claimed", 1, 1, "tia"), ("claimed", 2, 1, "tia"), ("claimed", 3, 1, "tia"),
        ("claimed", 4, 1, "sam"), ("completed", 4, 1, "sam"),
        ("claimed", 5, 1, "sam"), ("abandoned", 5, 1, "sam"),
        ("claimed", 5, 2, "sam"), ("completed", 5, 2, "sam"),
        ("claimed", 6, 1, "sam"), ("abandoned", 6, 1, "sam"),
        ("claimed", 6, 2, "sam"),
        ("expired", 1, 1, TIMER_ACTOR), ("claimed", 1, 2, "sam"),
    ]
    assert trail(run) == during_the_outage

    # Sending the 9 claims' timers fails: a warning per message, the flush does not raise,
    # and nothing else is lost or changed (the claims stay claimed; the sweep has them).
    with caplog.at_level(logging.WARNING, logger="board.timers"):
        assert held.flush() == 0
    warnings = [record.getMessage() for record in caplog.records if record.name == "board.timers"]
    counts = [re.fullmatch(r"could not send the lease timers of (\d+) claims; the sweep will "
                           r"expire them", message) for message in warnings]
    assert warnings and all(counts), warnings
    assert sum(int(count[1]) for count in counts) == 9
    assert board_state(run) == board_during_the_outage
    assert trail(run) == during_the_outage

    # Redis is back (empty: it kept nothing); a worker started against it sweeps the backlog
    # when this process sends the sweep, as beat does every LEASE_SWEEP_SECONDS.
    redis.start()
    heartbeat = sweep_with_a_new_worker(tmp_path / "worker.log",
                                        {"CELERY_BROKER_URL": redis.url()})

    # Only #2 and #3 changed: back in the pool, one attempt used, one `expired` each.
    assert heartbeat.detail == "expired 2 stale claims"
    assert board_state(run) == [
        board_during_the_outage[0],
        (2, ItemState.AVAILABLE, None, 1, 1),
        (3, ItemState.AVAILABLE, None, 1, 1),
        *board_during_the_outage[3:],
    ]
    after = trail(run)
    assert after[:-2] == during_the_outage
    assert sorted(after[-2:]) == [("expired", 2, 1, TIMER_ACTOR), ("expired", 3, 1, TIMER_ACTOR)]
