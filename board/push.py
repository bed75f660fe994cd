"""Managers push (DESIGN: push and hybrid recovery): a whole run handed to a person or a
team, a restart from a known safe step, one item assigned, a run cancelled.

Each is one transaction that first locks the run's row (FOR NO KEY UPDATE, which claims, only
inserting checkpoints that reference the run, never wait for) and then its open items, and
decides from the items as they are in the database at that moment, never from what the
manager's page showed: an item completed after the page was opened stays done. A live claim
the action takes away is revoked by bumping its token, so its holder's next complete,
abandon or extend is refused, and the refusal says who took it and why (the holder's
stale-token message reads the `revoked_token` of the checkpoint). Every
item that changes gets its one checkpoint in the same transaction; the run-level
`run_cancelled` checkpoint stands for the claims a cancel revokes.
"""

from collections.abc import Callable, Iterable

from django.db import transaction
from django.db.models import Case, F, PositiveBigIntegerField, When
from django.utils import timezone

from accounts.access import Capability, team_ids
from accounts.models import Team, User
from board.errors import InvalidInput, NotAvailable
from board.models import (
    FINISHED_STATES,
    OPEN_STATES,
    Checkpoint,
    CheckpointKind,
    Item,
    ItemState,
    Run,
    RunState,
)
from board.services.assignment import assignment_check, notify_assignment, target_name
from board.services.checkpoints import checkpoint_append
from board.services.claims import lock_run_of


def _reason(reason: str, doing: str) -> str:
    reason = (reason or "").strip()
    if not reason:
        raise InvalidInput(f"Say why you are {doing}: a reason is required.")
    return reason


def _lock_run(run_id: int) -> Run:
    run = (Run.objects.select_for_update(no_key=True, of=("self",)).select_related("team")
           .filter(pk=run_id).first())
    if run is None:
        raise NotAvailable("That run no longer exists.")
    return run


def _require_active(run: Run, doing: str) -> None:
    if run.state != RunState.ACTIVE:
        raise NotAvailable(
            f"“{run.title}” is {run.get_state_display().lower()}: it can no longer be {doing}."
        )


def _locked_items(run: Run, **filters) -> list[Item]:
    """The run's items matching `filters`, locked until commit, with their holders, by
    position.

    Locked first, then read: a row that was locked by a claim in flight is re-checked by
    PostgreSQL in its new version once that claim commits, but the rows joined to it are
    not, so a holder joined in the locking query could read as the old, empty one."""
    locked = list(Item.objects.select_for_update(of=("self",)).filter(run=run, **filters)
                  .values_list("pk", flat=True))
    return list(Item.objects.select_related("holder").filter(pk__in=locked).order_by("position"))


def _revocation(item: Item) -> dict:
    """What a checkpoint records of the live claim an action takes away, if the item had one."""
    if item.state != ItemState.CLAIMED:
        return {}
    return {"revoked_token": item.token, "revoked_from": item.holder.display_name}


def _prerequisites(run: Run) -> dict[int, list[int]]:
    Through = Item.prerequisites.through
    found: dict[int, list[int]] = {}
    for item_id, prerequisite_id in Through.objects.filter(from_item__run=run).values_list(
        "from_item_id", "to_item_id"
    ):
        found.setdefault(item_id, []).append(prerequisite_id)
    return found


def _open_state(item_id: int, prerequisites: dict[int, list[int]],
                state_of: Callable[[int], str]) -> str:
    """Where an open, unclaimed item belongs by the flow: waiting until every prerequisite is
    done or skipped."""
    ready = all(state_of(pre) in FINISHED_STATES for pre in prerequisites.get(item_id, ()))
    return ItemState.AVAILABLE if ready else ItemState.WAITING


# --- Push a whole run -----------------------------------------------------------------------


@transaction.atomic
def run_reassign(*, run_id: int, actor: User, reason: str, assignee: User | None = None,
                 assigned_team: Team | None = None) -> int:
    """Push every open item of the run (available, waiting, claimed, stuck) to one person or
    one team; with neither, back to the shared pool. Claims held by anyone but the target
    are revoked (to the pool, attempts unchanged: it was not their failure); the target's own
    claims stay. One `reassigned` checkpoint per item; returns how many (0, writing nothing,
    when the run is already with that target)."""
    pushing = "returning this run to the pool" if not (assignee or assigned_team) else \
        "pushing this run"
    reason = _reason(reason, pushing)
    run = _lock_run(run_id)
    _require_active(run, "reassigned")
    assignment_check(team=run.team, assignee=assignee, assigned_team=assigned_team,
                     actor=actor)
    items = _locked_items(run, state__in=OPEN_STATES)
    if not items:
        raise NotAvailable(f"Every item of “{run.title}” is finished: there is nothing to push.")
    keeps = _keeps_claim(run, assignee, assigned_team)
    revoked = [item for item in items if item.state == ItemState.CLAIMED and not keeps(item)]
    if not revoked and (run.assignee_id, run.assigned_team_id) == _ids(assignee, assigned_team) \
            and all((item.assignee_id, item.assigned_team_id) == _ids(assignee, assigned_team)
                    for item in items):
        return 0  # already so: nothing to write, no one to tell
    Item.objects.filter(pk__in=[item.pk for item in items]).update(
        assignee=assignee, assigned_team=assigned_team
    )
    _revoke_claims([item.pk for item in revoked])
    run.assignee, run.assigned_team = assignee, assigned_team
    run.save(update_fields=["assignee", "assigned_team"])
    now = timezone.now()
    target = {
        "assignee": assignee.username if assignee else None,
        "assigned_team": assigned_team.slug if assigned_team else None,
        "to": target_name(assignee, assigned_team),
    }
    revoked_ids = {item.pk for item in revoked}
    Checkpoint.objects.bulk_create(
        _checkpoint(
            run=run, item=item, kind=CheckpointKind.REASSIGNED, actor=actor, reason=reason,
            at=now,
            token=item.token + 1 if item.pk in revoked_ids else item.token or None,
            data={
                **target, "scope": "run", "state_before": item.state,
                "state": ItemState.AVAILABLE if item.pk in revoked_ids else item.state,
                **(_revocation(item) if item.pk in revoked_ids else {}),
            },
        )
        for item in items
    )
    notify_assignment(run=run, actor=actor, reason=reason)
    return len(items)


def _ids(assignee: User | None, assigned_team: Team | None) -> tuple[int | None, int | None]:
    return (assignee.pk if assignee else None, assigned_team.pk if assigned_team else None)


def _keeps_claim(run: Run, assignee: User | None,
                 assigned_team: Team | None) -> Callable[[Item], bool]:
    """Whether a live claim survives the push: its holder may work on the item afterwards
    (the target; back in the shared pool, anyone working for the run's team, but not the
    members of a team the run was pushed to, who no longer even see it)."""
    if assignee is not None:
        return lambda item: item.holder_id == assignee.pk
    team = assigned_team or run.team
    may_work: dict[int, bool] = {}  # one capability read per holder, not per claim

    def keeps(item: Item) -> bool:
        if item.holder_id not in may_work:
            may_work[item.holder_id] = team.pk in team_ids(item.holder, Capability.WORK)
        return may_work[item.holder_id]

    return keeps


def _revoke_claims(item_ids: Iterable[int]) -> None:
    """Take live claims away: back to the pool, the token bumped so the holder's token is
    stale. (A claimed item's prerequisites are finished, so it is available.)"""
    item_ids = list(item_ids)
    if item_ids:
        Item.objects.filter(pk__in=item_ids, state=ItemState.CLAIMED).update(
            state=ItemState.AVAILABLE, holder=None, lease_expires_at=None, claimed_at=None,
            token=F("token") + 1,
        )


def _checkpoint(*, run: Run, item: Item | None, kind: str, actor: User, reason: str, at,
                token: int | None, data: dict) -> Checkpoint:
    return Checkpoint(
        run_id=run.pk, item_id=item.pk if item else None, kind=kind, at=at, actor=actor,
        actor_name=actor.display_name, token=token, reason=reason, data=data,
    )


# --- Restart from a safe step ---------------------------------------------------------------


@transaction.atomic
def run_restart(*, run_id: int, from_position: int, actor: User, reason: str) -> int:
    """Restart the run from step K: every item at position K or later that was done, is
    claimed (the claim is revoked) or is stuck goes back to waiting or available by the
    flow, with its attempts reset and the run's current assignment; items from K on that
    were available but now wait for a reset prerequisite wait again. One `reset` checkpoint
    per item that changed, all marked with the restart's time; the trail keeps everything
    before. A completed run is active again. Returns how many items were reset."""
    reason = _reason(reason, "restarting this run")
    run = _lock_run(run_id)
    if run.state == RunState.CANCELLED:
        raise NotAvailable(f"“{run.title}” was cancelled: launch the runbook again instead.")
    items = _locked_items(run)
    last = items[-1].position if items else 0
    if not 1 <= from_position <= last:
        raise InvalidInput(f"Restart from a step between 1 and {last}.")
    reset = {
        item.pk for item in items
        if item.position >= from_position
        and item.state in (ItemState.DONE, ItemState.CLAIMED, ItemState.STUCK)
    }
    prerequisites = _prerequisites(run)
    state = {item.pk: item.state for item in items}
    for item_id in reset:
        state[item_id] = ItemState.WAITING  # open; settled below, by position
    for item in items:  # prerequisites come earlier in the runbook: settled first
        if item.pk in reset or item.state in (ItemState.AVAILABLE, ItemState.WAITING):
            state[item.pk] = _open_state(item.pk, prerequisites, state.__getitem__)
    changed = [item for item in items if item.pk in reset or state[item.pk] != item.state]
    if not changed:
        raise NotAvailable(
            f"Nothing to restart: no item from step {from_position} on is done, claimed, stuck "
            "or past its prerequisites."
        )
    now = timezone.now()
    for new_state in (ItemState.AVAILABLE, ItemState.WAITING):
        ids = [item.pk for item in changed if state[item.pk] == new_state]
        Item.objects.filter(pk__in=[i for i in ids if i not in reset]).update(state=new_state)
        Item.objects.filter(pk__in=[i for i in ids if i in reset]).update(
            state=new_state, holder=None, lease_expires_at=None, claimed_at=None,
            finished_at=None, attempts=0, assignee=run.assignee,
            assigned_team=run.assigned_team,
            token=Case(When(state=ItemState.CLAIMED, then=F("token") + 1), default=F("token"),
                       output_field=PositiveBigIntegerField()),
        )
    reopened = run.state == RunState.COMPLETED
    if reopened:
        run.state, run.completed_at = RunState.ACTIVE, None
        run.save(update_fields=["state", "completed_at"])
    marker = {"restart": now.isoformat(), "from_position": from_position}
    Checkpoint.objects.bulk_create(
        _checkpoint(
            run=run, item=item, kind=CheckpointKind.RESET, actor=actor, reason=reason, at=now,
            token=(item.token + 1 if item.state == ItemState.CLAIMED else item.token) or None,
            data={**marker, "state_before": item.state, "state": state[item.pk],
                  "attempts_before": item.attempts, **_revocation(item),
                  **({"run_reopened": True} if reopened else {})},
        )
        for item in changed
    )
    return len(changed)


# --- Cancel ---------------------------------------------------------------------------------


@transaction.atomic
def run_cancel(*, run_id: int, actor: User, reason: str) -> Run:
    """End a run that is no longer needed: its live claims are revoked, nothing can be
    claimed from it any more, and one `run_cancelled` checkpoint lists the revoked claims."""
    reason = _reason(reason, "cancelling this run")
    run = _lock_run(run_id)
    _require_active(run, "cancelled")
    claimed = _locked_items(run, state=ItemState.CLAIMED)
    _revoke_claims(item.pk for item in claimed)
    now = timezone.now()
    run.state, run.cancelled_at = RunState.CANCELLED, now
    run.save(update_fields=["state", "cancelled_at"])
    checkpoint_append(
        run_id=run.pk, kind=CheckpointKind.RUN_CANCELLED, actor=actor, reason=reason, at=now,
        data={"revoked": [
            {"item": item.pk, "revoked_token": item.token, "token": item.token + 1,
             "revoked_from": item.holder.display_name}
            for item in claimed
        ]},
    )
    return run


# --- One item -------------------------------------------------------------------------------


@transaction.atomic
def item_assign(*, item_id: int, actor: User, assignee: User, reason: str = "",
                expected_state: str = "") -> Item:
    """Assign one open item to a person: from the stuck lane it goes back to the flow with
    fresh attempts; a claim held by someone else is revoked. One `reassigned` checkpoint.
    `expected_state`: only if the item is still in it (a form from the stuck lane)."""
    lock_run_of(item_id)
    item = Item.objects.select_related("run", "run__team", "holder").filter(pk=item_id).first()
    if item is None:
        raise NotAvailable("That item no longer exists.")
    _require_active(item.run, "changed")
    if item.state in FINISHED_STATES:
        raise NotAvailable(f"“{item.title}” is already {item.get_state_display().lower()}.")
    if expected_state and item.state != expected_state:
        raise NotAvailable(f"“{item.title}” is {item.get_state_display().lower()} now, no "
                           f"longer {ItemState(expected_state).label.lower()}: reload and "
                           "look again.")
    assignment_check(team=item.run.team, assignee=assignee, assigned_team=None, actor=actor)
    revoke = item.state == ItemState.CLAIMED and item.holder_id != assignee.pk
    new_state = item.state
    if item.state == ItemState.STUCK or revoke:
        prerequisites = _prerequisites(item.run)
        state_of = dict(Item.objects.filter(pk__in=prerequisites.get(item.pk, ()))
                        .values_list("pk", "state"))
        new_state = _open_state(item.pk, prerequisites, state_of.__getitem__)
    changes: dict = {"assignee": assignee, "assigned_team": None, "state": new_state}
    if item.state == ItemState.STUCK:
        changes["attempts"] = 0
    if revoke:
        changes.update(holder=None, lease_expires_at=None, claimed_at=None,
                       token=F("token") + 1)
    if Item.objects.filter(pk=item.pk, state=item.state, token=item.token).update(**changes) != 1:
        raise NotAvailable(f"“{item.title}” changed meanwhile: reload and try again.")
    checkpoint_append(
        run_id=item.run_id, kind=CheckpointKind.REASSIGNED, actor=actor, item_id=item.pk,
        token=(item.token + 1 if revoke else item.token) or None, reason=(reason or "").strip(),
        data={"assignee": assignee.username, "assigned_team": None,
              "to": assignee.display_name, "scope": "item", "state_before": item.state,
              "state": new_state, "attempts_before": item.attempts,
              **(_revocation(item) if revoke else {})},
    )
    notify_assignment(run=item.run, actor=actor, reason=reason, item=item, assignee=assignee)
    item.refresh_from_db()
    return item
