"""Every write and state transition of runs and items.

Transitions are compare-and-set statements (`filter(state=…, token=…).update(…)` or one
conditional UPDATE for claims) followed by exactly one checkpoint in the same transaction, so
the board and its trail never disagree. Celery timers are enqueued only after commit.
"""

import json
import logging
from datetime import UTC, datetime, timedelta
from functools import cache, partial

from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, IntegrityError, connection, connections, transaction
from django.db.models import Case, F, PositiveBigIntegerField, Q, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone
from django.utils.duration import duration_microseconds

from accounts.access import Capability, team_ids
from accounts.models import Team, User
from board.errors import ClaimLost, InvalidInput, NotAvailable, NothingToClaim, WipLimitReached
from board.models import (
    FINISHED_STATES,
    Checkpoint,
    CheckpointKind,
    FailureNature,
    FailureScope,
    Item,
    ItemState,
    Run,
    RunMode,
    RunState,
)
from board.timers import timer_schedule
from checklists.models import Runbook

log = logging.getLogger(__name__)

TIMER_ACTOR = "lease timer"
# The name recorded for actions taken by a management command (no user behind them).
CLI_ACTOR = "command line"


# --- Checkpoints ----------------------------------------------------------------------------


def checkpoint_append(
    *,
    run_id: int,
    kind: str,
    actor: User | None,
    item_id: int | None = None,
    token: int | None = None,
    reason: str = "",
    data: dict | None = None,
    at: datetime | None = None,
    actor_name: str | None = None,
) -> Checkpoint:
    """Append one event to a run's trail. `actor_name` overrides the snapshot for events with
    no user behind them that are not the lease timer's (a management command)."""
    return Checkpoint.objects.create(
        run_id=run_id,
        item_id=item_id,
        kind=kind,
        at=at or timezone.now(),
        actor=actor,
        actor_name=actor_name or (actor.display_name if actor else TIMER_ACTOR),
        token=token,
        reason=reason,
        data=data or {},
    )


# --- Launch ---------------------------------------------------------------------------------


def recommend_mode(scope: str, nature: str) -> tuple[str, str]:
    """The recovery mode the two facts about a failure suggest, with a one-line reason
    (background/push-pull-recovery: transient, partial failures resume by pull; persistent,
    total ones restart by push from a safe step; mixed ones push to a team that pulls)."""
    if not scope or not nature:
        return RunMode.PULL, ("Pull is the default: staff take the next item from the pool, "
                              "and an interruption costs one item, not the list.")
    if scope == FailureScope.PARTIAL and nature == FailureNature.TRANSIENT:
        return RunMode.PULL, ("A transient, partial failure: resume item by item from the "
                              "pool; whoever is free pulls the next step.")
    if scope == FailureScope.TOTAL and nature == FailureNature.PERSISTENT:
        return RunMode.PUSH, ("A persistent, total failure: restart from a known safe step "
                              "and push the list to the person who will drive it.")
    return RunMode.HYBRID, ("A mixed failure: push the run to one team for control, and let "
                            "its members pull the items within it.")


def _launch_key(runbook: Runbook, ref: str) -> str:
    return f"{runbook.team_id}:{runbook.slug}:{ref}" if ref else ""


def run_launch(**kwargs) -> Run:
    """run_launch_once, for callers that do not need to know whether the run is new."""
    return run_launch_once(**kwargs)[0]


def run_launch_once(
    *,
    runbook: Runbook,
    title: str,
    actor: User | None,
    severity: int = 3,
    ref: str = "",
    team: Team | None = None,
    scope: str = "",
    nature: str = "",
    mode: str | None = None,
    assignee: User | None = None,
    assigned_team: Team | None = None,
    actor_name: str | None = None,
) -> tuple[Run, bool]:
    """Copy the runbook's steps into a new run's items (items with prerequisites wait); or,
    when an open run of this runbook already has this incident reference, that run: (run,
    launched). `mode` None follows the recommendation of `scope` and `nature`; the run is
    pushed to `assignee` or `assigned_team` from the start when one is given."""
    title, ref = title.strip(), ref.strip()
    if not title:
        raise InvalidInput("A run needs a title.")
    if severity not in (1, 2, 3, 4):
        raise InvalidInput("Severity must be 1 (critical) to 4 (low).")
    if scope not in ("", *FailureScope.values):
        raise InvalidInput(f"Scope must be one of {', '.join(FailureScope.values)}.")
    if nature not in ("", *FailureNature.values):
        raise InvalidInput(f"Nature must be one of {', '.join(FailureNature.values)}.")
    if mode not in (None, *RunMode.values):
        raise InvalidInput(f"Mode must be one of {', '.join(RunMode.values)}.")
    recommended, _reason = recommend_mode(scope, nature)
    team = team or runbook.team
    key = _launch_key(runbook, ref)
    with transaction.atomic():
        if key:
            existing = Run.objects.filter(launch_key=key, state=RunState.ACTIVE).first()
            if existing is not None:
                return existing, False
        from board.push import assignment_check

        assignment_check(team=team, assignee=assignee, assigned_team=assigned_team, actor=actor)
        try:
            # A savepoint: two launches of one incident at once meet at the unique index
            # run_one_open_per_ref, and the second then returns the first one's run.
            with transaction.atomic():
                run = Run.objects.create(
                    runbook=runbook, team=team, title=title, severity=severity, ref=ref,
                    launch_key=key, scope=scope, nature=nature, recommended_mode=recommended,
                    mode=mode or recommended, assignee=assignee, assigned_team=assigned_team,
                    lease_duration=runbook.lease_duration,
                    max_attempts=runbook.max_attempts,
                    max_lease=runbook.max_lease or 4 * runbook.lease_duration,
                    wip_limit=runbook.wip_limit,
                    launched_by=actor,
                )
        except IntegrityError:
            if not key:
                raise
            return Run.objects.get(launch_key=key, state=RunState.ACTIVE), False
        item_count = _copy_steps(run, runbook)
        checkpoint_append(
            run_id=run.pk,
            kind=CheckpointKind.LAUNCHED,
            actor=actor,
            actor_name=actor_name,
            data={
                "runbook": runbook.slug,
                "version": runbook.version,
                "items": item_count,
                "severity": severity,
                "ref": run.ref,
                "scope": scope,
                "nature": nature,
                "recommended_mode": recommended,
                "mode": run.mode,
                "assignee": assignee.username if assignee else None,
                "assigned_team": assigned_team.slug if assigned_team else None,
            },
        )
    if assignee or assigned_team:
        from board.push import notify_assignment

        notify_assignment(run=run, actor=actor, reason="", launched=True)
    return run, True


def _copy_steps(run: Run, runbook: Runbook) -> int:
    steps = list(runbook.steps.order_by("position").prefetch_related("prerequisites"))
    items = Item.objects.bulk_create(
        Item(
            run=run,
            step=step,
            position=step.position,
            key=step.key,
            title=step.title,
            body=step.body,
            section=step.section,
            section_note=step.section_note,
            state=ItemState.WAITING if step.prerequisites.all() else ItemState.AVAILABLE,
            assignee=run.assignee,
            assigned_team=run.assigned_team,
        )
        for step in steps
    )
    item_by_step = {step.pk: item for step, item in zip(steps, items, strict=True)}
    Through = Item.prerequisites.through
    Through.objects.bulk_create(
        Through(from_item_id=item_by_step[step.pk].pk, to_item_id=item_by_step[pre.pk].pk)
        for step in steps
        for pre in step.prerequisites.all()
    )
    return len(items)


# --- Claims ---------------------------------------------------------------------------------


def _live_claims(actor: User) -> int:
    # A holder is set iff the item is claimed (item_holder_iff_claimed): item_held counts it.
    return Item.objects.filter(holder=actor).count()


def _lock_run_of(item_id: int) -> None:
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
# unary + keeps SQLite from walking the run's items for the run filter instead), else
# the first of the shared pool, found run by run (one step down item_pool each).
_SQLITE_CLAIM_SQL = """
    UPDATE board_item
    SET state = 'claimed', holder_id = :holder, token = token + 1, claimed_at = :now,
        lease_expires_at = (
            SELECT CASE WHEN r.lease_duration = :assumed_duration THEN :assumed_end
                        ELSE django_format_dtdelta('+', :now, r.lease_duration) END
            FROM board_run r WHERE r.id = board_item.run_id
        )
    WHERE id = COALESCE((
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
    ), (
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
    _schedule_expiry(claimed)
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
    return _sweep_batch(
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
    item = Item.objects.select_related("holder", "assignee", "assigned_team").filter(
        pk=item_id).first()
    if item is None:
        return "That item no longer exists."
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


def _schedule_expiry(item: Item) -> None:
    """The lease timer, handed to the timer outbox once the claim or extend has committed."""
    timer = partial(timer_schedule, item_id=item.pk, token=item.token,
                    eta=item.lease_expires_at)
    db = connections[DEFAULT_DB_ALIAS]
    if db.in_atomic_block:
        db.on_commit(timer)
    else:
        timer()  # committed already (what on_commit would do, at a claim's cost)


# --- Holder actions -------------------------------------------------------------------------


def _stale_token_message(item_id: int, token: int, actor: User) -> str:
    """Say what became of a claim whose token is no longer the live one."""
    item = Item.objects.select_related("holder").filter(pk=item_id).first()
    if item is None:
        return "That item no longer exists."
    if not 0 < token <= item.token:
        return f"Token {token} was never issued for “{item.title}”: act with your claim's token."
    revoked = _revocation_message(item, token)
    if revoked:
        return revoked
    last_end = (
        Checkpoint.objects.filter(
            item_id=item_id, token=token,
            kind__in=[CheckpointKind.EXPIRED, CheckpointKind.STUCK, CheckpointKind.ABANDONED,
                      CheckpointKind.COMPLETED],
        )
        .order_by("-id")
        .first()
    )
    why = ""
    if last_end and last_end.kind in (CheckpointKind.EXPIRED, CheckpointKind.STUCK) and \
            last_end.actor is None:
        local = timezone.localtime(last_end.at)
        why = f"Your lease ran out at {local:%H:%M} ({local:%Z}). "
    elif last_end and last_end.kind == CheckpointKind.ABANDONED:
        why = "That claim was abandoned. "
    if item.state == ItemState.CLAIMED and item.holder_id == actor.pk and item.token != token:
        first = Checkpoint.objects.filter(
            item_id=item_id, token=token, kind=CheckpointKind.CLAIMED
        ).values_list("actor_id", "actor_name").first()
        if first and first[0] != actor.pk:
            return why + (f"Token {token} was {first[1]}'s claim, not yours: you hold "
                          f"“{item.title}” with token {item.token}.")
        return why + "You have claimed this item again since; reload to act on the new claim."
    if item.state == ItemState.CLAIMED:
        return why + f"“{item.title}” is now held by {item.holder.display_name}."
    if item.state == ItemState.AVAILABLE:
        return why + f"“{item.title}” is back in the pool."
    if item.state == ItemState.DONE:
        return why + f"“{item.title}” is already done."
    return why + f"“{item.title}” is now {item.get_state_display().lower()}."


# What a manager's action that took a claim away says to its holder; by the checkpoint kind.
_REVOKED_BY = {
    CheckpointKind.REASSIGNED: "{actor} pushed {what} to {to}",
    CheckpointKind.RESET: "{actor} restarted the run from step {from_position}",
    CheckpointKind.SKIPPED: "{actor} skipped it",
    CheckpointKind.RUN_CANCELLED: "{actor} cancelled the run",
}


def _revocation_message(item: Item, token: int) -> str:
    """Who took the claim with this token away from its holder, and why; "" if no one did."""
    taken = Checkpoint.objects.filter(
        item_id=item.pk, data__revoked_token=token,
        kind__in=[CheckpointKind.REASSIGNED, CheckpointKind.RESET, CheckpointKind.SKIPPED],
    ).order_by("-id").first()
    if taken is None:
        cancelled = Checkpoint.objects.filter(
            run_id=item.run_id, kind=CheckpointKind.RUN_CANCELLED
        ).order_by("-id").first()
        if cancelled is None or not any(
            revoked.get("item") == item.pk and revoked.get("revoked_token") == token
            for revoked in cancelled.data.get("revoked", [])
        ):
            return ""
        taken = cancelled
    data = taken.data
    what = _REVOKED_BY[taken.kind].format(
        actor=taken.actor_name, what="the run" if data.get("scope") == "run" else "it",
        to=data.get("to", "someone else"), from_position=data.get("from_position"),
    )
    because = f": “{taken.reason}”" if taken.reason else ""
    return f"Your claim on “{item.title}” was taken back: {what}{because}."


@transaction.atomic
def item_complete(*, item_id: int, token: int, actor: User, note: str = "") -> Item:
    """Finish a claimed item. The holder's token must still be the live one; a lease that ran
    out but was not taken by anyone is still the holder's to complete."""
    now = timezone.now()
    _lock_run_of(item_id)
    changed = Item.objects.filter(
        pk=item_id, state=ItemState.CLAIMED, token=token, holder=actor
    ).update(state=ItemState.DONE, holder=None, lease_expires_at=None, finished_at=now)
    if changed != 1:
        raise ClaimLost(_stale_token_message(item_id, token, actor))
    item = Item.objects.select_related("run").get(pk=item_id)
    checkpoint_append(
        run_id=item.run_id, kind=CheckpointKind.COMPLETED, actor=actor, item_id=item_id,
        token=token, reason=note.strip(), at=now,
        data={"unlocked": _unlock_dependents(item)},
    )
    _complete_run_if_finished(item.run, actor=actor, now=now)
    return item


def _unlock_dependents(item: Item) -> list[int]:
    """Make available the waiting items whose last open prerequisite was `item`."""
    ready = list(
        item.dependents.filter(state=ItemState.WAITING)
        .exclude(prerequisites__state__in=[s for s in ItemState if s not in FINISHED_STATES])
        .values_list("pk", flat=True)
    )
    if ready:
        Item.objects.filter(pk__in=ready, state=ItemState.WAITING).update(
            state=ItemState.AVAILABLE
        )
    return sorted(ready)


def _complete_run_if_finished(run: Run, *, actor: User | None, now: datetime) -> None:
    """Close the run when its last open item finishes; credited to whoever finished it."""
    if run.items.exclude(state__in=FINISHED_STATES).exists():
        return
    if Run.objects.filter(pk=run.pk, state=RunState.ACTIVE).update(
        state=RunState.COMPLETED, completed_at=now
    ):
        checkpoint_append(run_id=run.pk, kind=CheckpointKind.RUN_COMPLETED, actor=actor, at=now)


def _release(*, item_id: int, token: int, filters: dict, now: datetime) -> Item | None:
    """Return a live claim to the pool, or to the stuck lane when its attempts are used up."""
    item = Item.objects.select_related("run").filter(pk=item_id).first()
    if item is None:
        return None
    changed = Item.objects.filter(
        pk=item_id, state=ItemState.CLAIMED, token=token, **filters
    ).update(
        state=Case(
            When(attempts__gte=item.run.max_attempts - 1, then=Value(ItemState.STUCK)),
            default=Value(ItemState.AVAILABLE),
        ),
        attempts=F("attempts") + 1,
        holder=None,
        lease_expires_at=None,
        claimed_at=None,
    )
    if changed != 1:
        return None
    item.refresh_from_db(fields=["state", "attempts", "holder", "lease_expires_at"])
    return item


@transaction.atomic
def item_abandon(*, item_id: int, token: int, actor: User, reason: str) -> Item:
    """Give a claim back with a reason; too many attempts send the item to the stuck lane."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Say why you are abandoning this item: a reason is required.")
    now = timezone.now()
    item = _release(item_id=item_id, token=token, filters={"holder": actor}, now=now)
    if item is None:
        raise ClaimLost(_stale_token_message(item_id, token, actor))
    stuck = item.state == ItemState.STUCK
    checkpoint_append(
        run_id=item.run_id,
        kind=CheckpointKind.STUCK if stuck else CheckpointKind.ABANDONED,
        actor=actor, item_id=item_id, token=token, reason=reason, at=now,
        data={"attempts": item.attempts, **({"cause": "abandoned"} if stuck else {})},
    )
    return item


@transaction.atomic
def item_expire(*, item_id: int, token: int, now: datetime | None = None) -> Item | None:
    """The lease timer: release the claim with this token if it is still live and its lease
    has really passed. A stale timer (completed, abandoned, re-claimed, extended) does
    nothing and returns None."""
    now = now or timezone.now()
    item = _release(item_id=item_id, token=token, filters={"lease_expires_at__lte": now}, now=now)
    if item is None:
        return None
    stuck = item.state == ItemState.STUCK
    checkpoint_append(
        run_id=item.run_id,
        kind=CheckpointKind.STUCK if stuck else CheckpointKind.EXPIRED,
        actor=None, item_id=item_id, token=token, at=now,
        data={"attempts": item.attempts, **({"cause": "expired"} if stuck else {})},
    )
    return item


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
            released = _sweep_batch(cutoff=cutoff, stamp=stamp, batch_size=batch_size)
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


def _sweep_batch(*, cutoff: str, stamp: str, batch_size: int,
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


@transaction.atomic
def item_extend(*, item_id: int, token: int, actor: User) -> Item:
    """"Still on it": push the lease out by one lease length, up to the run's cap (counted
    from the claim), so a claim cannot be held forever by pressing the button."""
    now = timezone.now()
    item = Item.objects.select_related("run").filter(pk=item_id).first()
    if item is None or item.state != ItemState.CLAIMED or item.token != token or \
            item.holder_id != actor.pk:
        raise ClaimLost(_stale_token_message(item_id, token, actor))
    cap = item.claimed_at + item.run.max_lease
    new_expiry = min(now + item.run.lease_duration, cap)
    if new_expiry <= item.lease_expires_at:
        local = timezone.localtime(cap)
        raise InvalidInput(
            f"This claim cannot be extended past {local:%H:%M} ({local:%Z}), the longest lease "
            "for this run: complete it, or abandon it so someone else can take over."
        )
    changed = Item.objects.filter(
        pk=item_id, state=ItemState.CLAIMED, token=token, holder=actor
    ).update(lease_expires_at=new_expiry)
    if changed != 1:
        raise ClaimLost(_stale_token_message(item_id, token, actor))
    item.lease_expires_at = new_expiry
    checkpoint_append(
        run_id=item.run_id, kind=CheckpointKind.EXTENDED, actor=actor, item_id=item_id,
        token=token, at=now, data={"lease_expires_at": new_expiry.isoformat()},
    )
    _schedule_expiry(item)
    return item


@transaction.atomic
def item_requeue(*, item_id: int, actor: User, reason: str = "") -> Item:
    """A manager sends a stuck item back to the pool with a fresh set of attempts."""
    _lock_run_of(item_id)
    item = Item.objects.select_related("run").filter(pk=item_id).first()
    if item is None:
        raise NotAvailable("That item no longer exists.")
    if item.state == ItemState.STUCK and item.run.state != RunState.ACTIVE:
        raise NotAvailable(f"“{item.run.title}” is {item.run.get_state_display().lower()}: "
                           "its items can no longer be requeued.")
    state = (
        ItemState.WAITING
        if item.prerequisites.exclude(state__in=FINISHED_STATES).exists()
        else ItemState.AVAILABLE
    )
    changed = Item.objects.filter(pk=item_id, state=ItemState.STUCK).update(
        state=state, attempts=0
    )
    if changed != 1:
        raise NotAvailable(f"“{item.title}” is {item.get_state_display().lower()}, not stuck.")
    checkpoint_append(
        run_id=item.run_id, kind=CheckpointKind.REQUEUED, actor=actor, item_id=item_id,
        reason=reason.strip(), data={"attempts_before": item.attempts, "state": state},
    )
    item.refresh_from_db()
    return item


@transaction.atomic
def item_skip(*, item_id: int, actor: User, reason: str) -> Item:
    """A manager decides an open item is not needed; items waiting on it may now start."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Say why this item is skipped: a reason is required.")
    now = timezone.now()
    _lock_run_of(item_id)
    item = Item.objects.select_related("run", "holder").filter(pk=item_id).first()
    if item is None:
        raise NotAvailable("That item no longer exists.")
    changed = Item.objects.filter(
        pk=item_id, state__in=[ItemState.WAITING, ItemState.AVAILABLE, ItemState.STUCK,
                               ItemState.CLAIMED],
    ).update(
        state=ItemState.SKIPPED, holder=None, lease_expires_at=None, finished_at=now,
        # A live claim is revoked: the holder's token is no longer the current one.
        token=Case(
            When(state=ItemState.CLAIMED, then=F("token") + 1), default=F("token"),
            output_field=PositiveBigIntegerField(),
        ),
    )
    if changed != 1:
        raise NotAvailable(f"“{item.title}” is already {item.get_state_display().lower()}.")
    revoked = {"revoked_token": item.token, "revoked_from": item.holder.display_name} \
        if item.state == ItemState.CLAIMED else {}
    item.refresh_from_db()
    checkpoint_append(
        run_id=item.run_id, kind=CheckpointKind.SKIPPED, actor=actor, item_id=item_id,
        token=item.token, reason=reason, at=now,
        data={"unlocked": _unlock_dependents(item), **revoked},
    )
    _complete_run_if_finished(item.run, actor=actor, now=now)
    return item
