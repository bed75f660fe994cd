"""The board's services: each test checks the new state AND exactly the checkpoints written."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.core.exceptions import PermissionDenied
from django.db import DatabaseError, connection, transaction

from board.errors import ClaimLost, InvalidInput, NothingToClaim, WipLimitReached
from board.models import Checkpoint, CheckpointKind, Item, ItemState, RunState
from board.services import (
    TIMER_ACTOR,
    item_abandon,
    item_claim_next,
    item_complete,
    item_expire,
)

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)

# Two parallel steps, then one that needs both: the smallest shape with two prerequisites.
DIAMOND = """\
---
title: Diamond
---
# Diamond

## Gather
- Left
- Right

## Join
- Both done
"""

PARALLEL = """\
---
title: Parallel
---
# Parallel

- First
- Second
- Third
"""

ONE_STEP = """\
---
title: One step
---
# One step

- Only step
"""


def trail(run) -> list[tuple]:
    """The run's checkpoints as (kind, item position, token, actor name), oldest first."""
    return [
        (c.kind, c.item.position if c.item else None, c.token, c.actor_name)
        for c in Checkpoint.objects.filter(run=run).select_related("item").order_by("id")
    ]


def items(run) -> dict[int, Item]:
    return {item.position: item for item in run.items.order_by("position")}


def states(run) -> dict[int, str]:
    return {position: item.state for position, item in items(run).items()}


# --- Launch ---------------------------------------------------------------------------------


def test_launch_copies_steps_into_items_with_prerequisites(make_runbook, make_run, manager):
    # SIMPLE_RUNBOOK: numbered 1→2 in the first section, then two bullets that wait for it.
    runbook = make_runbook(lease=timedelta(minutes=7), max_attempts=4)
    run = make_run(runbook=runbook, title=" INC-1 primary down ", severity=2, ref="INC-1")

    assert (run.title, run.severity, run.ref, run.state) == (
        "INC-1 primary down", 2, "INC-1", RunState.ACTIVE
    )
    assert (run.lease_duration, run.max_attempts, run.launched_by) == (
        timedelta(minutes=7), 4, manager
    )
    by_position = items(run)
    steps = {step.position: step for step in runbook.steps.all()}
    assert [(i.title, i.key, i.section, i.step_id) for i in by_position.values()] == [
        (s.title, s.key, s.section, s.pk) for s in steps.values()
    ]
    assert states(run) == {
        1: ItemState.AVAILABLE, 2: ItemState.WAITING, 3: ItemState.WAITING, 4: ItemState.WAITING
    }
    prerequisites = {
        position: sorted(p.position for p in item.prerequisites.all())
        for position, item in by_position.items()
    }
    assert prerequisites == {1: [], 2: [1], 3: [1, 2], 4: [1, 2]}
    assert all(i.token == 0 and i.holder is None and i.attempts == 0 for i in by_position.values())
    assert trail(run) == [(CheckpointKind.LAUNCHED, None, None, manager.display_name)]
    launched = Checkpoint.objects.get(run=run)
    assert launched.data == {
        "runbook": runbook.slug, "version": runbook.version, "items": 4, "severity": 2,
        "ref": "INC-1", "mode": "pull", "scope": "", "nature": "", "recommended_mode": "pull",
        "assignee": None, "assigned_team": None,
    }


def test_launch_without_title_is_refused_and_writes_nothing(make_runbook, manager):
    from board.models import Run
    from board.services import run_launch

    runbook = make_runbook()
    with pytest.raises(InvalidInput):
        run_launch(runbook=runbook, title="  ", actor=manager)
    assert not Run.objects.exists() and not Checkpoint.objects.exists()


# --- Claim ----------------------------------------------------------------------------------


def test_claim_next_takes_highest_severity_first(make_runbook, make_run, staff):
    runbook = make_runbook(ONE_STEP, filename="one.md")
    minor = make_run(runbook=runbook, title="minor", severity=4)
    critical = make_run(runbook=runbook, title="critical", severity=1)

    item = item_claim_next(actor=staff)

    assert item.run_id == critical.pk
    assert states(critical) == {1: ItemState.CLAIMED}
    assert states(minor) == {1: ItemState.AVAILABLE}
    assert trail(critical)[1:] == [(CheckpointKind.CLAIMED, 1, 1, staff.display_name)]
    assert trail(minor)[1:] == []


def test_claim_next_takes_oldest_run_first_within_a_severity(make_runbook, make_run, staff):
    runbook = make_runbook(ONE_STEP, filename="one.md")
    # Launched later but stamped earlier, so the order comes from launched_at, not the id.
    with time_machine.travel(T0, tick=False):
        newer = make_run(runbook=runbook, title="newer", severity=2)
    with time_machine.travel(T0 - timedelta(hours=1), tick=False):
        older = make_run(runbook=runbook, title="older", severity=2)
    assert older.pk > newer.pk

    item = item_claim_next(actor=staff)

    assert item.run_id == older.pk
    assert states(newer) == {1: ItemState.AVAILABLE}
    assert trail(older)[1:] == [(CheckpointKind.CLAIMED, 1, 1, staff.display_name)]


def test_claim_next_takes_lowest_position_within_a_run(make_runbook, make_run, staff):
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))

    first = item_claim_next(actor=staff)
    second = item_claim_next(actor=staff)

    assert (first.position, second.position) == (1, 2)
    assert states(run) == {1: ItemState.CLAIMED, 2: ItemState.CLAIMED, 3: ItemState.AVAILABLE}
    assert trail(run)[1:] == [
        (CheckpointKind.CLAIMED, 1, 1, staff.display_name),
        (CheckpointKind.CLAIMED, 2, 1, staff.display_name),
    ]


def test_claim_bumps_token_by_one_and_sets_lease_of_run(make_runbook, make_run, staff):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md", lease=timedelta(minutes=7)))

    with time_machine.travel(T0, tick=False):
        first = item_claim_next(actor=staff)
    item_abandon(item_id=first.pk, token=first.token, actor=staff, reason="wrong laptop")
    with time_machine.travel(T0 + timedelta(minutes=30), tick=False):
        second = item_claim_next(actor=staff)

    second.refresh_from_db()
    assert (first.token, second.token) == (1, 2)
    assert second.state == ItemState.CLAIMED and second.holder == staff
    assert second.claimed_at == T0 + timedelta(minutes=30)
    assert second.lease_expires_at == T0 + timedelta(minutes=37)
    assert trail(run)[1:] == [
        (CheckpointKind.CLAIMED, 1, 1, staff.display_name),
        (CheckpointKind.ABANDONED, 1, 1, staff.display_name),
        (CheckpointKind.CLAIMED, 1, 2, staff.display_name),
    ]
    claimed = Checkpoint.objects.filter(run=run, kind=CheckpointKind.CLAIMED).last()
    assert claimed.at == T0 + timedelta(minutes=30)
    assert claimed.data == {"lease_expires_at": (T0 + timedelta(minutes=37)).isoformat()}


def test_claim_beyond_wip_limit_is_refused_and_writes_nothing(
    settings, make_runbook, make_run, staff
):
    settings.WIP_LIMIT = 2
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))
    item_claim_next(actor=staff)
    item_claim_next(actor=staff)

    with pytest.raises(WipLimitReached, match="limit is 2"):
        item_claim_next(actor=staff)

    assert states(run) == {1: ItemState.CLAIMED, 2: ItemState.CLAIMED, 3: ItemState.AVAILABLE}
    assert [kind for kind, *_ in trail(run)] == ["launched", "claimed", "claimed"]


def test_outsider_claim_next_never_gets_another_teams_item(
    make_runbook, make_run, other_team, outsider, manager
):
    from board.services import run_launch

    ours = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"), severity=1)
    theirs = run_launch(
        runbook=make_runbook(ONE_STEP, filename="one.md", owner=other_team),
        title="payments incident", severity=4, actor=None,
    )

    item = item_claim_next(actor=outsider)
    with pytest.raises(NothingToClaim):
        item_claim_next(actor=outsider)
    with pytest.raises(NothingToClaim):
        item_claim_next(actor=outsider, run=ours)

    assert item.run_id == theirs.pk
    assert set(states(ours).values()) == {ItemState.AVAILABLE}
    assert [kind for kind, *_ in trail(ours)] == ["launched"]
    assert trail(theirs)[1:] == [(CheckpointKind.CLAIMED, 1, 1, outsider.display_name)]


# --- Complete -------------------------------------------------------------------------------


def test_complete_unlocks_a_waiting_item_only_when_all_its_prerequisites_are_done(
    make_runbook, make_run, staff
):
    run = make_run(runbook=make_runbook(DIAMOND, filename="diamond.md"))
    left = item_claim_next(actor=staff)
    right = item_claim_next(actor=staff)

    item_complete(item_id=left.pk, token=left.token, actor=staff)
    assert states(run) == {1: ItemState.DONE, 2: ItemState.CLAIMED, 3: ItemState.WAITING}

    item_complete(item_id=right.pk, token=right.token, actor=staff, note="  checked twice ")
    assert states(run) == {1: ItemState.DONE, 2: ItemState.DONE, 3: ItemState.AVAILABLE}

    assert trail(run)[3:] == [
        (CheckpointKind.COMPLETED, 1, 1, staff.display_name),
        (CheckpointKind.COMPLETED, 2, 1, staff.display_name),
    ]
    completions = Checkpoint.objects.filter(run=run, kind=CheckpointKind.COMPLETED)
    assert [(c.data, c.reason) for c in completions.order_by("id")] == [
        ({"unlocked": []}, ""),
        ({"unlocked": [items(run)[3].pk]}, "checked twice"),
    ]
    assert run.items.get(position=2).finished_at is not None


def test_completing_the_last_item_completes_the_run(make_runbook, make_run, staff):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    item = item_claim_next(actor=staff)

    with time_machine.travel(T0, tick=False):
        item_complete(item_id=item.pk, token=item.token, actor=staff)

    run.refresh_from_db()
    assert (run.state, run.completed_at) == (RunState.COMPLETED, T0)
    assert states(run) == {1: ItemState.DONE}
    assert trail(run)[1:3] == [
        (CheckpointKind.CLAIMED, 1, 1, staff.display_name),
        (CheckpointKind.COMPLETED, 1, 1, staff.display_name),
    ]
    # The run-level event names no item or token; it is credited to who finished the run.
    last = Checkpoint.objects.filter(run=run).order_by("id")[3:]
    assert [(c.kind, c.item_id, c.token, c.actor_id, c.actor_name, c.at) for c in last] == [
        (CheckpointKind.RUN_COMPLETED, None, None, staff.pk, staff.display_name, T0)
    ]


def test_complete_with_stale_token_is_refused_naming_the_new_holder(
    make_runbook, make_run, staff, teammate
):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    with time_machine.travel(T0, tick=False):
        mine = item_claim_next(actor=staff)
    with time_machine.travel(T0 + run.lease_duration + timedelta(seconds=1), tick=False):
        item_expire(item_id=mine.pk, token=mine.token)
        theirs = item_claim_next(actor=teammate)
    before = trail(run)

    with pytest.raises(ClaimLost) as refused:
        item_complete(item_id=mine.pk, token=mine.token, actor=staff)

    assert "lease ran out" in refused.value.message
    assert f"now held by {teammate.display_name}" in refused.value.message
    item = Item.objects.get(pk=mine.pk)
    assert (item.state, item.holder, item.token) == (ItemState.CLAIMED, teammate, theirs.token)
    assert theirs.token == mine.token + 1
    assert trail(run) == before


# --- Abandon and expire ---------------------------------------------------------------------


def test_abandon_without_reason_is_refused_and_writes_nothing(make_runbook, make_run, staff):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    item = item_claim_next(actor=staff)

    with pytest.raises(InvalidInput, match="reason"):
        item_abandon(item_id=item.pk, token=item.token, actor=staff, reason="   ")

    item.refresh_from_db()
    assert (item.state, item.holder, item.token, item.attempts) == (
        ItemState.CLAIMED, staff, 1, 0
    )
    assert [kind for kind, *_ in trail(run)] == ["launched", "claimed"]


def test_abandon_returns_the_item_to_the_pool_with_one_more_attempt(
    make_runbook, make_run, staff
):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    item = item_claim_next(actor=staff)

    item_abandon(item_id=item.pk, token=item.token, actor=staff, reason=" no VPN access ")

    item.refresh_from_db()
    assert (item.state, item.holder, item.lease_expires_at, item.attempts) == (
        ItemState.AVAILABLE, None, None, 1
    )
    assert trail(run)[2:] == [(CheckpointKind.ABANDONED, 1, 1, staff.display_name)]
    abandoned = Checkpoint.objects.get(run=run, kind=CheckpointKind.ABANDONED)
    assert (abandoned.reason, abandoned.data) == ("no VPN access", {"attempts": 1})


def test_abandoning_max_attempts_times_sends_the_item_to_the_stuck_lane(
    make_runbook, make_run, staff
):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md", max_attempts=2))
    for reason in ("first try failed", "second try failed"):
        item = item_claim_next(actor=staff)
        item_abandon(item_id=item.pk, token=item.token, actor=staff, reason=reason)

    item.refresh_from_db()
    assert (item.state, item.holder, item.attempts) == (ItemState.STUCK, None, 2)
    assert trail(run)[1:] == [
        (CheckpointKind.CLAIMED, 1, 1, staff.display_name),
        (CheckpointKind.ABANDONED, 1, 1, staff.display_name),
        (CheckpointKind.CLAIMED, 1, 2, staff.display_name),
        (CheckpointKind.STUCK, 1, 2, staff.display_name),
    ]
    stuck = Checkpoint.objects.get(run=run, kind=CheckpointKind.STUCK)
    assert (stuck.reason, stuck.data) == (
        "second try failed", {"attempts": 2, "cause": "abandoned"}
    )
    with pytest.raises(NothingToClaim):
        item_claim_next(actor=staff)


def test_expiring_max_attempts_times_sends_the_item_to_the_stuck_lane(
    make_runbook, make_run, staff
):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md", max_attempts=2))
    now = T0
    for _attempt in range(2):
        with time_machine.travel(now, tick=False):
            item = item_claim_next(actor=staff)
        now += run.lease_duration
        assert item_expire(item_id=item.pk, token=item.token, now=now) is not None

    item.refresh_from_db()
    assert (item.state, item.holder, item.attempts) == (ItemState.STUCK, None, 2)
    assert trail(run)[1:] == [
        (CheckpointKind.CLAIMED, 1, 1, staff.display_name),
        (CheckpointKind.EXPIRED, 1, 1, TIMER_ACTOR),
        (CheckpointKind.CLAIMED, 1, 2, staff.display_name),
        (CheckpointKind.STUCK, 1, 2, TIMER_ACTOR),
    ]
    stuck = Checkpoint.objects.get(run=run, kind=CheckpointKind.STUCK)
    assert (stuck.actor, stuck.at, stuck.data) == (None, now, {"attempts": 2, "cause": "expired"})


def test_expire_after_the_lease_returns_the_item_to_the_pool(make_runbook, make_run, staff):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    with time_machine.travel(T0, tick=False):
        item = item_claim_next(actor=staff)

    expired = item_expire(item_id=item.pk, token=item.token, now=T0 + run.lease_duration)

    assert expired is not None
    item.refresh_from_db()
    assert (item.state, item.holder, item.lease_expires_at, item.attempts) == (
        ItemState.AVAILABLE, None, None, 1
    )
    assert trail(run)[2:] == [(CheckpointKind.EXPIRED, 1, 1, TIMER_ACTOR)]


def test_expire_with_stale_token_does_nothing(make_runbook, make_run, staff):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    with time_machine.travel(T0, tick=False):
        item = item_claim_next(actor=staff)
    before = trail(run)

    assert item_expire(item_id=item.pk, token=item.token - 1, now=T0 + timedelta(days=1)) is None

    item.refresh_from_db()
    assert (item.state, item.holder, item.token, item.attempts) == (
        ItemState.CLAIMED, staff, 1, 0
    )
    assert trail(run) == before


def test_expire_before_the_lease_ran_out_does_nothing(make_runbook, make_run, staff):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    with time_machine.travel(T0, tick=False):
        item = item_claim_next(actor=staff)
    before = trail(run)

    almost = T0 + run.lease_duration - timedelta(seconds=1)
    assert item_expire(item_id=item.pk, token=item.token, now=almost) is None

    item.refresh_from_db()
    assert (item.state, item.holder, item.attempts) == (ItemState.CLAIMED, staff, 0)
    assert trail(run) == before


def test_expire_of_a_completed_claim_does_nothing(make_runbook, make_run, staff):
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))
    item = item_claim_next(actor=staff)
    item_complete(item_id=item.pk, token=item.token, actor=staff)
    before = trail(run)

    assert item_expire(item_id=item.pk, token=item.token, now=T0 + timedelta(days=365)) is None

    assert Item.objects.get(pk=item.pk).state == ItemState.DONE
    assert trail(run) == before


# --- Checkpoints are append-only ------------------------------------------------------------


@pytest.fixture
def checkpoint(make_run):
    return Checkpoint.objects.get(run=make_run())


def test_checkpoint_queryset_update_is_refused(checkpoint):
    with pytest.raises(PermissionDenied):
        Checkpoint.objects.filter(pk=checkpoint.pk).update(reason="edited")
    assert Checkpoint.objects.get(pk=checkpoint.pk).reason == ""


def test_checkpoint_queryset_delete_is_refused(checkpoint):
    with pytest.raises(PermissionDenied):
        Checkpoint.objects.filter(pk=checkpoint.pk).delete()
    assert Checkpoint.objects.filter(pk=checkpoint.pk).exists()


def test_checkpoint_model_save_of_an_existing_row_is_refused(checkpoint):
    checkpoint.reason = "edited"
    with pytest.raises(PermissionDenied):
        checkpoint.save()
    assert Checkpoint.objects.get(pk=checkpoint.pk).reason == ""


def test_checkpoint_model_delete_is_refused(checkpoint):
    with pytest.raises(PermissionDenied):
        checkpoint.delete()
    assert Checkpoint.objects.filter(pk=checkpoint.pk).exists()


def test_checkpoint_raw_sql_update_is_refused_by_the_database(checkpoint):
    # The savepoint keeps the test's transaction usable after the database raises.
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute(
                "UPDATE board_checkpoint SET reason = %s WHERE id = %s", ["edited", checkpoint.pk]
            )
    assert Checkpoint.objects.get(pk=checkpoint.pk).reason == ""


@pytest.mark.postgres  # SQLite keeps DELETE open for the test flush (see migration 0002)
def test_checkpoint_raw_sql_delete_is_refused_by_postgresql(checkpoint):
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("DELETE FROM board_checkpoint WHERE id = %s", [checkpoint.pk])
    assert Checkpoint.objects.filter(pk=checkpoint.pk).exists()


def test_a_claim_takes_the_runs_lease_length_as_stored_not_as_the_caller_read_it(
    staff, make_run
):
    run = make_run()  # the caller's copy: a 15-minute lease
    type(run).objects.filter(pk=run.pk).update(lease_duration=timedelta(minutes=40))

    with time_machine.travel(T0, tick=False):
        claim = item_claim_next(actor=staff, run=run)

    assert claim.lease_expires_at == T0 + timedelta(minutes=40)
    assert Item.objects.get(pk=claim.pk).lease_expires_at == T0 + timedelta(minutes=40)
    checkpoint = Checkpoint.objects.get(item_id=claim.pk, kind=CheckpointKind.CLAIMED)
    assert checkpoint.data == {"lease_expires_at": (T0 + timedelta(minutes=40)).isoformat()}
