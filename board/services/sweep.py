"""The sweep: every claim whose lease passed, released in bounded batches (DESIGN invariant
5), for the periodic task and for a claim that finds the pool empty."""

import json
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from board.services.checkpoints import TIMER_ACTOR


def leases_sweep(*, now: datetime | None = None, grace: timedelta = timedelta(0),
                 batch_size: int | None = None) -> int:
    """Expire every claim whose lease passed more than `grace` ago; returns how many.

    In batches of `batch_size` (SWEEP_BATCH_SIZE), one transaction and a fixed number of
    statements each, so a backlog of a hundred thousand claims after a broker outage costs a
    few dozen round trips and no more memory than one batch. Each item is released exactly as
    item_expire releases it (to the pool, or to the stuck lane with its attempts used up) with
    its one `expired` or `stuck` checkpoint. Two sweeps, or a sweep and the per-claim timers,
    running at once never release an item twice: on PostgreSQL each locks its batch with SKIP
    LOCKED; on SQLite writers take turns; and the release re-checks state and lease.
    """
    now = now or timezone.now()
    batch_size = batch_size or settings.SWEEP_BATCH_SIZE
    cutoff = connection.ops.adapt_datetimefield_value(now - grace)
    stamp = connection.ops.adapt_datetimefield_value(now)
    expired = 0
    while True:
        with transaction.atomic():
            released = sweep_batch(cutoff=cutoff, stamp=stamp, batch_size=batch_size)
        expired += released
        if released < batch_size:
            return expired


# One batch of the sweep. Released as _release does: attempts + 1, to `stuck` when that uses
# up the run's max_attempts, else back to `available`; the checkpoint's data as item_expire's.
_SWEEP_SQL = {
    "postgresql": """
        WITH stale AS (
            SELECT id, lease_expires_at FROM board_item
            WHERE state = 'claimed' AND lease_expires_at <= %s {scope}
            ORDER BY lease_expires_at, id
            LIMIT %s
            FOR UPDATE SKIP LOCKED
        ), released AS (
            UPDATE board_item AS i
            SET state = CASE WHEN i.attempts + 1 >= r.max_attempts THEN 'stuck'
                             ELSE 'available' END,
                attempts = i.attempts + 1, holder_id = NULL, lease_expires_at = NULL,
                claimed_at = NULL
            FROM stale, board_run r
            WHERE i.id = stale.id AND r.id = i.run_id
              AND i.state = 'claimed' AND i.lease_expires_at <= %s
            RETURNING i.id, i.run_id, i.token, i.state, i.attempts, stale.lease_expires_at
        ), logged AS (
            INSERT INTO board_checkpoint
                (run_id, item_id, kind, at, actor_id, actor_name, token, reason, data)
            SELECT run_id, id, CASE WHEN state = 'stuck' THEN 'stuck' ELSE 'expired' END, %s,
                   NULL, %s, token, '',
                   CASE WHEN state = 'stuck'
                        THEN jsonb_build_object('attempts', attempts, 'cause', 'expired')
                        ELSE jsonb_build_object('attempts', attempts) END
            FROM released
            ORDER BY lease_expires_at, id
            RETURNING 1
        )
        SELECT count(*) FROM logged
    """,
    # SQLite runs one writer at a time (BEGIN IMMEDIATE), so the batch needs no lock. It has
    # no data-modifying CTE, and its RETURNING comes in no particular order and sees only the
    # new values: the batch is chosen first, then released, then its checkpoints written in
    # the order it was chosen.
    "sqlite": """
        SELECT id FROM board_item
        WHERE state = 'claimed' AND lease_expires_at <= %s {scope}
        ORDER BY lease_expires_at, id
        LIMIT %s
    """,
}
_SQLITE_SWEEP_RELEASE_SQL = """
    UPDATE board_item
    SET state = CASE WHEN attempts + 1 >= (
            SELECT r.max_attempts FROM board_run r WHERE r.id = board_item.run_id
        ) THEN 'stuck' ELSE 'available' END,
        attempts = attempts + 1, holder_id = NULL, lease_expires_at = NULL, claimed_at = NULL
    WHERE id IN (SELECT value FROM json_each(%s))
    RETURNING id, run_id, token, state, attempts
"""
_SQLITE_SWEEP_CHECKPOINTS_SQL = """
    INSERT INTO board_checkpoint
        (run_id, item_id, kind, at, actor_id, actor_name, token, reason, data)
    SELECT json_extract(value, '$[1]'), json_extract(value, '$[0]'),
           CASE WHEN json_extract(value, '$[3]') = 'stuck' THEN 'stuck' ELSE 'expired' END,
           %s, NULL, %s, json_extract(value, '$[2]'), '',
           CASE WHEN json_extract(value, '$[3]') = 'stuck'
                THEN json_object('attempts', json_extract(value, '$[4]'), 'cause', 'expired')
                ELSE json_object('attempts', json_extract(value, '$[4]')) END
    FROM json_each(%s)
"""


def sweep_batch(*, cutoff: str, stamp: str, batch_size: int,
                 teams: list[int] | None = None) -> int:
    """One batch; only the runs of `teams` (team ids) when given."""
    scope, scope_params = "", []
    if teams is not None:
        marks = ", ".join(["%s"] * len(teams))
        scope = f"AND run_id IN (SELECT id FROM board_run WHERE team_id IN ({marks}))"
        scope_params = list(teams)
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(_SWEEP_SQL["postgresql"].format(scope=scope),
                           [cutoff, *scope_params, batch_size, cutoff, stamp, TIMER_ACTOR])
            return cursor.fetchone()[0]
        cursor.execute(_SWEEP_SQL["sqlite"].format(scope=scope),
                       [cutoff, *scope_params, batch_size])
        chosen = [item_id for (item_id,) in cursor.fetchall()]
        if not chosen:
            return 0
        cursor.execute(_SQLITE_SWEEP_RELEASE_SQL, [json.dumps(chosen)])
        order = {item_id: index for index, item_id in enumerate(chosen)}
        released = sorted(cursor.fetchall(), key=lambda row: order[row[0]])
        if released:
            # The released rows go back in as one JSON parameter: one INSERT per batch,
            # whatever SQLite's limit on bound parameters.
            cursor.execute(_SQLITE_SWEEP_CHECKPOINTS_SQL,
                           [stamp, TIMER_ACTOR, json.dumps(released)])
        return len(released)
