"""Claims: the next available item (or a named one) leased to one person, in one atomic
statement with its `claimed` checkpoint (DESIGN invariants 1, 2, 6, 7)."""

import json
from datetime import UTC, datetime
from functools import cache, partial

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connection, connections, transaction
from django.db.models import Q, Value
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.duration import duration_microseconds

from accounts.access import Capability, team_ids
from accounts.models import User
from board.errors import NotAvailable, NothingToClaim, WipLimitReached
from board.models import (
    Item,
    ItemState,
    Run,
    RunState,
)
from board.services.sweep import sweep_batch
from board.timers import timer_schedule

# --- Claims ---------------------------------------------------------------------------------


def _live_claims(actor: User) -> int:
    # A holder is set iff the item is claimed (item_holder_iff_claimed): item_held counts it.
    return Item.objects.filter(holder=actor).count()


def lock_run_of(item_id: int) -> None:
    """Serialise the transitions that finish items of one run (complete, skip).

    Under PostgreSQL's READ COMMITTED, two transactions finishing the last two open items of
    a run (or the last two prerequisites of a waiting item) at once each still see the
    other's item open, so neither would complete the run (or unlock the waiting item): it
    would stay active (waiting) for ever. Holding the run's row lock until commit makes the
    second one see the first one's change. NO KEY UPDATE does not conflict with the KEY SHARE
    lock a checkpoint insert takes on its run, so claims and expiries never wait for it.
    Taken before the item's update: run, then item, the order a run-wide action takes them.
    SQLite needs nothing: IMMEDIATE transactions already run one writer at a time.
    """
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT r.id FROM board_run r JOIN board_item i ON i.run_id = r.id "
                "WHERE i.id = %s FOR NO KEY UPDATE OF r",
                [item_id],
            )


def _wip_refusal(*, actor: User, held: int, team_ids: list[int], run_id: int | None,
                 item_id: int | None) -> WipLimitReached | None:
    """When the pool had items for this user but every one sat in a run whose WIP limit the
    user has reached, say so instead of "nothing available".

    Only a run whose limit is really reached counts: an item that merely looked available
    (on PostgreSQL, one another claimer had locked and was taking) is no reason to refuse."""
    if not held:
        return None
    pool = Item.objects.filter(
        Q(assignee__isnull=True, assigned_team__isnull=True, run__team_id__in=team_ids)
        | Q(assignee=actor) | Q(assigned_team_id__in=team_ids),
        state=ItemState.AVAILABLE, run__state=RunState.ACTIVE,
    ).alias(limit=Coalesce("run__wip_limit", Value(settings.WIP_LIMIT))).filter(limit__lte=held)
    if item_id is not None:
        pool = pool.filter(pk=item_id)
    elif run_id is not None:
        pool = pool.filter(run_id=run_id)
    blocked = pool.select_related("run").first()
    if blocked is None:
        return None
    limit = blocked.run.wip_limit if blocked.run.wip_limit is not None else settings.WIP_LIMIT
    return WipLimitReached(
        f"You already hold {held} claim{'s' if held != 1 else ''} (the limit is {limit}): "
        "complete or abandon one first."
    )


# The pool, best first: highest severity, then oldest run, then position. The runs are few
# (the active runs of the claimant's teams), the items many: the run order is sorted, and each
# run's first available item is one step down the item_pool index (run, position, of the
# available items), so a claim costs the same with ten or ten thousand items in the pool.
#
# PostgreSQL: one call of board_claim() (migration 0007), which takes the claimant's lock,
# counts their live claims and, walking the runs in order, locks the first available item no
# other transaction holds (SKIP LOCKED), then writes it and its `claimed` checkpoint. One
# round trip, in its own transaction or in the caller's.
#
# SQLite runs one writer at a time (BEGIN IMMEDIATE), so it needs neither lock: one
# conditional UPDATE ... RETURNING, then the checkpoint's INSERT. The item is the first item
# pushed to the claimant (in person, then to one of their teams: two lookups, one down each
# of item_assigned and item_team_assigned, as an OR would walk the run's every item; the
# unary + keeps SQLite from walking the run's items for the run filter instead; two EXISTS
# probes skip that part when nothing is pushed to the claimant, as is usual), else
# the first of the shared pool, found run by run (one step down item_pool each).
_SQLITE_CLAIM_SQL = """
    UPDATE board_item
    SET state = 'claimed', holder_id = :holder, token = token + 1, claimed_at = :now,
        lease_expires_at = (
            SELECT CASE WHEN r.lease_duration = :assumed_duration THEN :assumed_end
                        ELSE django_format_dtdelta('+', :now, r.lease_duration) END
            FROM board_run r WHERE r.id = board_item.run_id
        )
    WHERE id = COALESCE(CASE WHEN EXISTS (
            SELECT 1 FROM board_item WHERE state = 'available' AND assignee_id = :holder
        ) OR EXISTS (
            SELECT 1 FROM board_item
            WHERE state = 'available' AND assigned_team_id IN ({teams})
        ) THEN (
        SELECT p.id FROM (
            SELECT id, +run_id AS run_id, position, 0 AS anyone FROM board_item
            WHERE state = 'available' AND assignee_id = :holder {pushed_filter}
            UNION ALL
            SELECT id, +run_id, position, 1 FROM board_item
            WHERE state = 'available' AND assigned_team_id IN ({teams}) {pushed_filter}
        ) p JOIN board_run cr ON cr.id = p.run_id
        WHERE cr.state = 'active' {run_filter}
          AND (cr.team_id IN ({teams}) OR cr.assigned_team_id IN ({teams}))
          AND (SELECT COUNT(*) FROM board_item h WHERE h.holder_id = :holder)
              < COALESCE(cr.wip_limit, :default_wip)
        ORDER BY p.anyone, cr.severity, cr.launched_at, cr.id, p.position
        LIMIT 1
    ) END, (
        SELECT x.id FROM (
            SELECT (
                SELECT ci.id FROM board_item ci
                WHERE ci.run_id = cr.id AND ci.state = 'available' {item_filter}
                  AND ci.assignee_id IS NULL AND ci.assigned_team_id IS NULL
                ORDER BY ci.position LIMIT 1
            ) AS id, cr.severity, cr.launched_at, cr.id AS run_id
            FROM board_run cr
            WHERE cr.state = 'active' AND cr.team_id IN ({teams}) {run_filter}
              AND (SELECT COUNT(*) FROM board_item h WHERE h.holder_id = :holder)
                  < COALESCE(cr.wip_limit, :default_wip)
        ) x
        WHERE x.id IS NOT NULL
        ORDER BY x.severity, x.launched_at, x.run_id
        LIMIT 1
    )) AND state = 'available'
    RETURNING {columns}
"""
# The lease ends one lease_duration of the item's run after the claim. When the caller knows
# the run, the end computed in Python comes with the duration it assumed (in SQLite's
# microseconds) and is taken if the run still has that duration; otherwise the end is
# computed in the statement by django_format_dtdelta, the function Django's SQLite backend
# registers for datetime + duration (what the ORM emits for F("claimed_at") + a duration),
# which costs a Python call inside the write lock.
# SQLite has no data-modifying CTE: the checkpoint is the transaction's second statement.
_SQLITE_CLAIMED_CHECKPOINT_SQL = """
    INSERT INTO board_checkpoint
        (run_id, item_id, kind, at, actor_id, actor_name, token, reason, data)
    VALUES (?, ?, 'claimed', ?, ?, ?, ?, '', ?)
"""
_ITEM_FIELDS = Item._meta.concrete_fields
_ITEM_COLUMNS = ", ".join(field.column for field in _ITEM_FIELDS)
_ITEM_ATTNAMES = [field.attname for field in _ITEM_FIELDS]
_POSTGRES_CLAIM_SQL = (
    f"SELECT {_ITEM_COLUMNS} FROM board_claim(%s::bigint, %s::text, %s::bigint[], "
    "%s::bigint, %s::bigint, %s::integer, %s::timestamptz)"
)


def _claim_statement(*, actor: User, now: datetime, teams: list[int], run: Run | None,
                     run_id: int | None, item_id: int | None) -> Item | None:
    """Take the next available item (or the named one) with its `claimed` checkpoint; the
    item as it is now, or None.

    Only runs of `teams` whose WIP limit (the run's own, else the WIP_LIMIT setting) is
    above the claimant's live claims are candidates. The lease is the item's run's.

    On PostgreSQL one statement, atomic by itself: no transaction of its own, so a claim
    outside a transaction is one round trip. On SQLite two, in one IMMEDIATE transaction.
    """
    db = connections[DEFAULT_DB_ALIAS]  # once: each `connection.x` is a context-local lookup
    if db.vendor == "postgresql":
        row = _fetch_prepared(db, _POSTGRES_CLAIM_SQL, [
            actor.pk, actor.display_name, teams, run_id, item_id, settings.WIP_LIMIT, now,
        ])
        return None if row is None else Item.from_db(db.alias, _ITEM_ATTNAMES, row)
    stamp = db.ops.adapt_datetimefield_value(now)
    params = {
        "holder": actor.pk, "now": stamp, "default_wip": settings.WIP_LIMIT,
        "item": item_id, "run": run_id,
        "assumed_duration": duration_microseconds(run.lease_duration) if run else None,
        "assumed_end": db.ops.adapt_datetimefield_value(now + run.lease_duration)
        if run else None,
        **{f"team{index}": team for index, team in enumerate(teams)},
    }
    # Straight on the sqlite3 connection: Django's cursor adds more per statement than the
    # statements cost, and would add it while holding the database's one write lock, which
    # every other claimer waits for.
    db.ensure_connection()
    raw = db.connection
    # Inside the caller's atomic block Django has begun the transaction (BEGIN IMMEDIATE,
    # the transaction_mode setting) and commits it.
    own_transaction = not db.in_atomic_block
    with db.wrap_database_errors:
        if own_transaction:
            raw.execute("BEGIN IMMEDIATE")
        try:
            row = raw.execute(_sqlite_claim_sql(bool(item_id), bool(run_id), len(teams)),
                              params).fetchone()
            if row is not None:
                # A naive UTC datetime already: the backend converts by declared type.
                lease = row[_LEASE].replace(tzinfo=UTC)
                raw.execute(_SQLITE_CLAIMED_CHECKPOINT_SQL, [
                    row[_RUN], row[_ID], stamp, actor.pk, actor.display_name, row[_TOKEN],
                    json.dumps({"lease_expires_at": lease.isoformat()}),
                ])
            if own_transaction:
                raw.execute("COMMIT")
        except BaseException:
            if own_transaction:
                raw.execute("ROLLBACK")
            raise
    return None if row is None else Item.from_db(db.alias, _ITEM_ATTNAMES,
                                                 _from_db_values(db, row))


@cache
def _sqlite_claim_sql(one_item: bool, one_run: bool, teams: int) -> str:
    """The SQLite claim for a claimant of `teams` teams (sqlite3's named parameters: it runs
    on the sqlite3 connection itself)."""
    return _SQLITE_CLAIM_SQL.format(
        item_filter="AND ci.id = :item" if one_item else "",
        pushed_filter="AND id = :item" if one_item else "",
        run_filter="AND cr.id = :run" if one_run else "",
        teams=", ".join(f":team{index}" for index in range(teams)), columns=_ITEM_COLUMNS,
    )


_ID, _RUN, _TOKEN, _LEASE = (
    _ITEM_ATTNAMES.index(name) for name in ("id", "run_id", "token", "lease_expires_at")
)


def _from_db_values(db, row: tuple) -> list:
    """A row of board_item's columns as the ORM would read it (on SQLite, datetimes parsed
    from their text), without the ORM's per-query setup, which costs more than the claim."""
    values = list(row)
    for index, converters in _item_converters(db.vendor):
        for converter, column in converters:
            values[index] = converter(values[index], column, db)
    return values


@cache
def _item_converters(vendor: str) -> list[tuple[int, list]]:
    """The ORM's converters of each board_item column that has any (backend's, then field's)."""
    found = []
    for index, field in enumerate(_ITEM_FIELDS):
        column = field.get_col(Item._meta.db_table)
        converters = connection.ops.get_db_converters(column) + field.get_db_converters(
            connection)
        if converters:
            found.append((index, [(converter, column) for converter in converters]))
    return found


def _fetch_prepared(db, sql: str, params: list) -> tuple | None:
    """The first row of a query run as a prepared statement on PostgreSQL, from its first
    use (psycopg keeps it per connection, keyed by the SQL text and the parameter types).

    On psycopg's own cursor: Django's wrapper and its reading of the description (which
    psycopg builds column by column, in Python) cost more than the claim's round trip.
    """
    import psycopg

    db.ensure_connection()
    with psycopg.Cursor(db.connection) as cursor:
        cursor.execute(sql, params, prepare=True)
        return cursor.fetchone()


def _claim(*, actor: User, run: Run | None = None, run_id: int | None = None,
           item: Item | None = None) -> Item:
    teams = sorted(team_ids(actor, Capability.WORK))
    if not teams:
        raise NothingToClaim("You are not staff on any team, so there is nothing to claim.")
    now = timezone.now()
    if run is not None:
        run_id = run.pk
    scope = {"run": run, "run_id": run_id, "item_id": item.pk if item else None}
    claimed = _claim_statement(actor=actor, now=now, teams=teams, **scope)
    if claimed is None:
        with transaction.atomic():
            if _release_lapsed_beyond_grace(now, teams=teams):
                claimed = _claim_statement(actor=actor, now=now, teams=teams, **scope)
            if claimed is None:
                refusal = _wip_refusal(actor=actor, held=_live_claims(actor), team_ids=teams,
                                       run_id=run_id, item_id=scope["item_id"])
                if refusal is not None:
                    raise refusal
                if item is not None:
                    raise NotAvailable(_not_available_message(item.pk, actor))
                raise NothingToClaim("Nothing is available to claim right now.")
    schedule_expiry(claimed)
    if run is not None:
        claimed.run = run
    return claimed


def _release_lapsed_beyond_grace(now: datetime, *, teams: list[int]) -> int:
    """No freeze without the broker: when a claim finds nothing, claims in the claimant's
    teams whose lease ran out more than LEASE_GRACE_SECONDS ago (their timer lost, the sweep
    not running) go back to the pool first, with their `expired` checkpoints written now;
    returns how many.

    One bounded batch, the oldest first, so a claim never pays for a whole backlog, nor for
    another team's; the sweep catches up with the rest when the broker is back.
    """
    return sweep_batch(
        cutoff=connection.ops.adapt_datetimefield_value(now - settings.LEASE_GRACE),
        stamp=connection.ops.adapt_datetimefield_value(now),
        batch_size=CLAIM_TIME_RELEASE_LIMIT, teams=teams,
    )


CLAIM_TIME_RELEASE_LIMIT = 500


def item_claim_next(*, actor: User, run: Run | None = None, run_id: int | None = None) -> Item:
    """Claim the next available item: highest severity, then oldest run, then position; only
    from `run` (or the run `run_id`, for a caller that has not read it) when given."""
    return _claim(actor=actor, run=run, run_id=run_id)


def item_claim(*, item: Item, actor: User) -> Item:
    """Claim one named item, if it is still in the pool."""
    return _claim(actor=actor, item=item)


def _not_available_message(item_id: int, actor: User) -> str:
    item = Item.objects.select_related("run", "holder", "assignee", "assigned_team").filter(
        pk=item_id).first()
    if item is None:
        return "That item no longer exists."
    if item.run.state != RunState.ACTIVE:
        return (f"“{item.run.title}” is {item.run.get_state_display().lower()}: its items can "
                "no longer be claimed.")
    if item.state == ItemState.CLAIMED and item.holder_id == actor.pk:
        return f"You already hold “{item.title}”."
    if item.state == ItemState.AVAILABLE and item.assignee_id not in (None, actor.pk):
        return f"“{item.title}” is pushed to {item.assignee.display_name}."
    if item.state == ItemState.AVAILABLE and item.assigned_team_id is not None:
        return f"“{item.title}” is pushed to team {item.assigned_team.name}."
    if item.state == ItemState.CLAIMED:
        return f"“{item.title}” is already held by {item.holder.display_name}."
    if item.state == ItemState.WAITING:
        return f"“{item.title}” is waiting for its prerequisites."
    if item.state == ItemState.STUCK:
        return (f"“{item.title}” is stuck (its claims ran out or were abandoned too often): "
                "a manager can requeue or skip it.")
    return f"“{item.title}” is {item.get_state_display().lower()}, not available."


def schedule_expiry(item: Item) -> None:
    """The lease timer, handed to the timer outbox once the claim or extend has committed."""
    timer = partial(timer_schedule, item_id=item.pk, token=item.token,
                    eta=item.lease_expires_at)
    db = connections[DEFAULT_DB_ALIAS]
    if db.in_atomic_block:
        db.on_commit(timer)
    else:
        timer()  # committed already (what on_commit would do, at a claim's cost)
