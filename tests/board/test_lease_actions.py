"""Extend, requeue, skip and the per-run WIP limit: each test checks the new state AND exactly
the checkpoints written (or that nothing was written when the action is refused)."""

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import time_machine

from board.errors import ClaimLost, InvalidInput, NotAvailable, WipLimitReached
from board.models import Checkpoint, CheckpointKind, Item, ItemState, Run, RunState
from board.services import (
    TIMER_ACTOR,
    item_abandon,
    item_claim,
    item_claim_next,
    item_complete,
    item_expire,
    item_extend,
    item_requeue,
    item_skip,
)
from tests.board.test_services import ONE_STEP, PARALLEL, T0, items, states, trail

LEASE = timedelta(minutes=15)
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.fixture
def one_step_run(make_runbook, make_run):
    """One item, a 15-minute lease and (no max_lease in the runbook) a cap of 4 leases."""
    return make_run(runbook=make_runbook(ONE_STEP, filename="one.md", lease=LEASE))


def claim_at(moment, actor, run):
    with time_machine.travel(moment, tick=False):
        return item_claim_next(actor=actor, run=run)


def extend_at(moment, item, actor, token=None):
    with time_machine.travel(moment, tick=False):
        return item_extend(item_id=item.pk, token=item.token if token is None else token,
                           actor=actor)


def row(item_id: int) -> tuple:
    item = Item.objects.get(pk=item_id)
    return (item.state, item.holder_id, item.token, item.lease_expires_at, item.attempts)


# --- Extend ---------------------------------------------------------------------------------


def test_extend_pushes_the_lease_one_lease_length_from_now(one_step_run, staff):
    item = claim_at(T0, staff, one_step_run)

    extended = extend_at(T0 + timedelta(minutes=10), item, staff)

    assert extended.lease_expires_at == T0 + timedelta(minutes=25)
    assert row(item.pk) == (ItemState.CLAIMED, staff.pk, 1, T0 + timedelta(minutes=25), 0)
    assert trail(one_step_run)[1:] == [
        (CheckpointKind.CLAIMED, 1, 1, staff.display_name),
        (CheckpointKind.EXTENDED, 1, 1, staff.display_name),
    ]
    checkpoint = Checkpoint.objects.get(run=one_step_run, kind=CheckpointKind.EXTENDED)
    assert (checkpoint.at, checkpoint.actor, checkpoint.data) == (
        T0 + timedelta(minutes=10), staff,
        {"lease_expires_at": (T0 + timedelta(minutes=25)).isoformat()},
    )


def test_extend_is_capped_at_the_longest_lease_from_the_claim(one_step_run, staff):
    assert one_step_run.max_lease == 4 * LEASE
    item = claim_at(T0, staff, one_step_run)

    # 50 minutes in, one more lease would end at 1:05; the cap is 1:00 after the claim.
    extended = extend_at(T0 + timedelta(minutes=50), item, staff)

    assert extended.lease_expires_at == T0 + timedelta(minutes=60)
    assert row(item.pk) == (ItemState.CLAIMED, staff.pk, 1, T0 + timedelta(minutes=60), 0)
    assert [kind for kind, *_ in trail(one_step_run)] == ["launched", "claimed", "extended"]


def test_extend_at_the_cap_is_refused_with_a_readable_message_and_writes_nothing(
    one_step_run, staff
):
    item = claim_at(T0, staff, one_step_run)
    extend_at(T0 + timedelta(minutes=50), item, staff)
    before = trail(one_step_run)

    with pytest.raises(InvalidInput) as refused:
        extend_at(T0 + timedelta(minutes=55), item, staff)

    assert refused.value.message == (
        "This claim cannot be extended past 10:00 (UTC), the longest lease for this run: "
        "complete it, or abandon it so someone else can take over."
    )
    assert refused.value.status == 422
    assert row(item.pk) == (ItemState.CLAIMED, staff.pk, 1, T0 + timedelta(minutes=60), 0)
    assert trail(one_step_run) == before


def test_extend_with_a_stale_token_is_refused_naming_the_new_holder(
    one_step_run, staff, teammate
):
    mine = claim_at(T0, staff, one_step_run)
    assert item_expire(item_id=mine.pk, token=mine.token, now=T0 + LEASE) is not None
    theirs = claim_at(T0 + LEASE, teammate, one_step_run)
    before = trail(one_step_run)

    with pytest.raises(ClaimLost) as refused:
        extend_at(T0 + LEASE, mine, staff)

    assert refused.value.message == (
        f"Your lease ran out at 09:15 (UTC). “{mine.title}” is now held by "
        f"{teammate.display_name}."
    )
    assert row(mine.pk) == (ItemState.CLAIMED, teammate.pk, 2, theirs.lease_expires_at, 1)
    assert trail(one_step_run) == before


def test_extend_by_someone_who_is_not_the_holder_is_refused(one_step_run, staff, teammate):
    item = claim_at(T0, staff, one_step_run)
    before = trail(one_step_run)

    with pytest.raises(ClaimLost, match=f"now held by {staff.display_name}"):
        extend_at(T0 + timedelta(minutes=5), item, teammate)

    assert row(item.pk) == (ItemState.CLAIMED, staff.pk, 1, T0 + LEASE, 0)
    assert trail(one_step_run) == before


def test_extend_after_the_lease_ran_out_but_before_the_timer_keeps_the_claim(
    one_step_run, staff
):
    # Nobody took the item, so the holder may still say "still on it" (as with complete).
    item = claim_at(T0, staff, one_step_run)

    extend_at(T0 + timedelta(minutes=20), item, staff)

    assert row(item.pk) == (ItemState.CLAIMED, staff.pk, 1, T0 + timedelta(minutes=35), 0)
    assert [kind for kind, *_ in trail(one_step_run)] == ["launched", "claimed", "extended"]


def test_the_timer_of_the_old_lease_does_nothing_after_an_extend(one_step_run, staff):
    item = claim_at(T0, staff, one_step_run)
    extend_at(T0 + timedelta(minutes=10), item, staff)
    before = trail(one_step_run)

    # The first timer fires at the old expiry: same token, but the lease moved on.
    assert item_expire(item_id=item.pk, token=item.token, now=T0 + LEASE) is None

    assert row(item.pk) == (ItemState.CLAIMED, staff.pk, 1, T0 + timedelta(minutes=25), 0)
    assert trail(one_step_run) == before


def test_extend_schedules_a_timer_for_the_new_lease_after_commit(
    one_step_run, staff, django_capture_on_commit_callbacks
):
    item = claim_at(T0, staff, one_step_run)

    with django_capture_on_commit_callbacks() as callbacks:
        extend_at(T0 + timedelta(minutes=10), item, staff)

    assert len(callbacks) == 1


# --- Requeue --------------------------------------------------------------------------------


@pytest.fixture
def stuck_item(make_runbook, make_run, staff):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md", max_attempts=1))
    item = item_claim_next(actor=staff, run=run)
    item_abandon(item_id=item.pk, token=item.token, actor=staff, reason="console is down")
    assert Item.objects.get(pk=item.pk).state == ItemState.STUCK
    return Item.objects.get(pk=item.pk)


def test_requeue_sends_a_stuck_item_back_to_the_pool_with_fresh_attempts(
    stuck_item, manager, staff
):
    run = stuck_item.run

    requeued = item_requeue(item_id=stuck_item.pk, actor=manager, reason=" console is back ")

    assert (requeued.state, requeued.attempts, requeued.holder, requeued.token) == (
        ItemState.AVAILABLE, 0, None, 1
    )
    assert row(stuck_item.pk) == (ItemState.AVAILABLE, None, 1, None, 0)
    assert trail(run)[1:] == [
        (CheckpointKind.CLAIMED, 1, 1, staff.display_name),
        (CheckpointKind.STUCK, 1, 1, staff.display_name),
        (CheckpointKind.REQUEUED, 1, None, manager.display_name),
    ]
    checkpoint = Checkpoint.objects.get(run=run, kind=CheckpointKind.REQUEUED)
    assert (checkpoint.actor, checkpoint.reason, checkpoint.data) == (
        manager, "console is back", {"attempts_before": 1, "state": "available"}
    )
    # Back in the pool: the next claim takes it with the next token.
    assert item_claim_next(actor=staff, run=run).token == 2


@pytest.mark.parametrize("state", [ItemState.AVAILABLE, ItemState.CLAIMED, ItemState.DONE])
def test_requeue_of_an_item_that_is_not_stuck_is_refused_and_writes_nothing(
    one_step_run, staff, manager, state
):
    item = items(one_step_run)[1]
    if state != ItemState.AVAILABLE:
        item = item_claim_next(actor=staff, run=one_step_run)
    if state == ItemState.DONE:
        item_complete(item_id=item.pk, token=item.token, actor=staff)
    before_row, before_trail = row(item.pk), trail(one_step_run)

    with pytest.raises(NotAvailable) as refused:
        item_requeue(item_id=item.pk, actor=manager)

    assert refused.value.message == f"“{item.title}” is {state.label.lower()}, not stuck."
    assert row(item.pk) == before_row
    assert trail(one_step_run) == before_trail


# --- Skip -----------------------------------------------------------------------------------


def test_skip_without_a_reason_is_refused_and_writes_nothing(one_step_run, manager):
    item = items(one_step_run)[1]

    with pytest.raises(InvalidInput, match="reason is required"):
        item_skip(item_id=item.pk, actor=manager, reason="  ")

    assert row(item.pk) == (ItemState.AVAILABLE, None, 0, None, 0)
    assert [kind for kind, *_ in trail(one_step_run)] == ["launched"]


def test_skip_unlocks_the_items_that_waited_only_for_it(make_run, manager):
    # SIMPLE_RUNBOOK: 2 waits for 1; 3 and 4 wait for 1 and 2.
    run = make_run()
    by_position = items(run)

    skipped = item_skip(item_id=by_position[1].pk, actor=manager, reason=" replica is fine ")

    assert (skipped.state, skipped.finished_at is not None) == (ItemState.SKIPPED, True)
    assert states(run) == {
        1: ItemState.SKIPPED, 2: ItemState.AVAILABLE, 3: ItemState.WAITING, 4: ItemState.WAITING
    }
    assert trail(run)[1:] == [(CheckpointKind.SKIPPED, 1, 0, manager.display_name)]
    checkpoint = Checkpoint.objects.get(run=run, kind=CheckpointKind.SKIPPED)
    assert (checkpoint.reason, checkpoint.data) == (
        "replica is fine", {"unlocked": [by_position[2].pk]}
    )


def test_skip_revokes_a_live_claim_so_the_holders_complete_is_refused(
    make_runbook, make_run, staff, manager
):
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))
    held = item_claim_next(actor=staff, run=run)

    item_skip(item_id=held.pk, actor=manager, reason="done by hand")
    before = trail(run)
    with pytest.raises(ClaimLost) as refused:
        item_complete(item_id=held.pk, token=held.token, actor=staff)

    assert refused.value.message == (
        f"Your claim on “{held.title}” was taken back: {manager.display_name} skipped it: "
        "“done by hand”."
    )
    # The token moved on, so the revoked claim's complete, abandon and extend are all stale.
    assert row(held.pk) == (ItemState.SKIPPED, None, 2, None, 0)
    assert before[1:] == [
        (CheckpointKind.CLAIMED, 1, 1, staff.display_name),
        (CheckpointKind.SKIPPED, 1, 2, manager.display_name),
    ]
    assert trail(run) == before
    with pytest.raises(ClaimLost):
        item_extend(item_id=held.pk, token=held.token, actor=staff)
    with pytest.raises(ClaimLost):
        item_abandon(item_id=held.pk, token=held.token, actor=staff, reason="too late")
    assert trail(run) == before
    assert states(run) == {1: ItemState.SKIPPED, 2: ItemState.AVAILABLE, 3: ItemState.AVAILABLE}


def test_skipping_the_last_open_item_completes_the_run(make_runbook, make_run, staff, manager):
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))
    for _ in range(2):
        item = item_claim_next(actor=staff, run=run)
        item_complete(item_id=item.pk, token=item.token, actor=staff)
    last = items(run)[3]

    with time_machine.travel(T0, tick=False):
        item_skip(item_id=last.pk, actor=manager, reason="not needed")

    run.refresh_from_db()
    assert (run.state, run.completed_at) == (RunState.COMPLETED, T0)
    assert trail(run)[5:] == [
        (CheckpointKind.SKIPPED, 3, 0, manager.display_name),
        (CheckpointKind.RUN_COMPLETED, None, None, manager.display_name),
    ]


def test_skip_of_a_finished_item_is_refused_and_writes_nothing(one_step_run, staff, manager):
    item = item_claim_next(actor=staff, run=one_step_run)
    item_complete(item_id=item.pk, token=item.token, actor=staff)
    before = trail(one_step_run)

    with pytest.raises(NotAvailable, match="already done"):
        item_skip(item_id=item.pk, actor=manager, reason="changed my mind")

    assert row(item.pk)[:3] == (ItemState.DONE, None, 1)
    assert trail(one_step_run) == before


def test_skip_of_a_stuck_item_takes_it_out_of_the_stuck_lane(stuck_item, manager):
    item_skip(item_id=stuck_item.pk, actor=manager, reason="fixed upstream")

    assert row(stuck_item.pk) == (ItemState.SKIPPED, None, 1, None, 1)
    assert [kind for kind, *_ in trail(stuck_item.run)] == [
        "launched", "claimed", "stuck", "skipped", "run_completed"
    ]


# --- WIP limit per run ----------------------------------------------------------------------


def parallel_run(make_runbook, make_run, *, wip_limit, title="INC-1", severity=2):
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"), title=title,
                   severity=severity)
    Run.objects.filter(pk=run.pk).update(wip_limit=wip_limit)
    run.refresh_from_db()
    return run


def test_run_wip_limit_above_the_setting_allows_more_claims(
    settings, make_runbook, make_run, staff
):
    settings.WIP_LIMIT = 1
    run = parallel_run(make_runbook, make_run, wip_limit=3)

    for _ in range(3):
        item_claim_next(actor=staff, run=run)

    assert states(run) == {1: ItemState.CLAIMED, 2: ItemState.CLAIMED, 3: ItemState.CLAIMED}
    assert [kind for kind, *_ in trail(run)] == ["launched", "claimed", "claimed", "claimed"]


def test_run_wip_limit_below_the_setting_refuses_the_next_claim_and_writes_nothing(
    settings, make_runbook, make_run, staff
):
    settings.WIP_LIMIT = 3
    run = parallel_run(make_runbook, make_run, wip_limit=1)
    item_claim_next(actor=staff, run=run)

    with pytest.raises(WipLimitReached) as refused:
        item_claim_next(actor=staff, run=run)
    with pytest.raises(WipLimitReached):
        item_claim(item=items(run)[3], actor=staff)

    assert refused.value.message == (
        "You already hold 1 claim (the limit is 1): complete or abandon one first."
    )
    assert states(run) == {1: ItemState.CLAIMED, 2: ItemState.AVAILABLE, 3: ItemState.AVAILABLE}
    assert [kind for kind, *_ in trail(run)] == ["launched", "claimed"]


def test_without_a_run_wip_limit_the_setting_applies(settings, make_runbook, make_run, staff):
    settings.WIP_LIMIT = 2
    run = parallel_run(make_runbook, make_run, wip_limit=None)
    item_claim_next(actor=staff, run=run)
    item_claim_next(actor=staff, run=run)

    with pytest.raises(WipLimitReached, match="the limit is 2"):
        item_claim_next(actor=staff, run=run)

    assert states(run) == {1: ItemState.CLAIMED, 2: ItemState.CLAIMED, 3: ItemState.AVAILABLE}


def test_claim_next_passes_over_a_run_whose_limit_is_reached(
    settings, make_runbook, make_run, staff
):
    # Live claims count across runs; each run compares them with its own limit.
    settings.WIP_LIMIT = 2
    strict = parallel_run(make_runbook, make_run, wip_limit=1, title="strict", severity=1)
    relaxed = parallel_run(make_runbook, make_run, wip_limit=None, title="relaxed", severity=2)

    first = item_claim_next(actor=staff)
    second = item_claim_next(actor=staff)
    with pytest.raises(WipLimitReached):
        item_claim_next(actor=staff)

    assert (first.run_id, second.run_id) == (strict.pk, relaxed.pk)
    assert [kind for kind, *_ in trail(strict)] == ["launched", "claimed"]
    assert [kind for kind, *_ in trail(relaxed)] == ["launched", "claimed"]


def test_runbook_wip_limit_is_copied_into_the_run_at_launch(settings, make_runbook, make_run,
                                                            staff):
    settings.WIP_LIMIT = 3
    runbook = make_runbook(PARALLEL.replace("title: Parallel", "title: Parallel\nwip_limit: 1"),
                           filename="parallel.md")
    run = make_run(runbook=runbook)
    assert run.wip_limit == 1
    item_claim_next(actor=staff, run=run)

    with pytest.raises(WipLimitReached, match="the limit is 1"):
        item_claim_next(actor=staff, run=run)

    assert [kind for kind, *_ in trail(run)] == ["launched", "claimed"]


def test_a_completed_claim_frees_its_wip_slot(settings, make_runbook, make_run, staff):
    settings.WIP_LIMIT = 1
    run = parallel_run(make_runbook, make_run, wip_limit=None)
    item = item_claim_next(actor=staff, run=run)
    item_complete(item_id=item.pk, token=item.token, actor=staff)

    item_claim_next(actor=staff, run=run)

    assert states(run) == {1: ItemState.DONE, 2: ItemState.CLAIMED, 3: ItemState.AVAILABLE}
    assert [kind for kind, *_ in trail(run)] == ["launched", "claimed", "completed", "claimed"]


def test_an_expired_claim_frees_its_wip_slot(settings, make_runbook, make_run, staff):
    settings.WIP_LIMIT = 1
    run = parallel_run(make_runbook, make_run, wip_limit=None)
    item = claim_at(T0, staff, run)
    item_expire(item_id=item.pk, token=item.token, now=T0 + LEASE)

    claim_at(T0 + LEASE, staff, run)

    assert trail(run)[1:] == [
        (CheckpointKind.CLAIMED, 1, 1, staff.display_name),
        (CheckpointKind.EXPIRED, 1, 1, TIMER_ACTOR),
        (CheckpointKind.CLAIMED, 1, 2, staff.display_name),
    ]


# --- Daylight-saving changes ----------------------------------------------------------------


@pytest.mark.parametrize(("claimed_at", "shown"), [
    # Berlin springs forward at 01:00 UTC on 29 March 2026 (02:00 CET becomes 03:00 CEST).
    (datetime(2026, 3, 29, 0, 30, tzinfo=UTC), "03:30 CEST"),
    # ... and falls back at 01:00 UTC on 25 October 2026 (03:00 CEST becomes 02:00 CET).
    (datetime(2026, 10, 25, 0, 30, tzinfo=UTC), "02:30 CET"),
])
def test_a_lease_across_a_daylight_saving_change_lasts_exactly_its_length(
    make_runbook, make_run, staff, client, settings, claimed_at, shown
):
    settings.TIME_ZONE = "Europe/Berlin"
    type(staff).objects.filter(pk=staff.pk).update(time_zone="Europe/Berlin")
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md",
                                        lease=timedelta(hours=1)))
    claim = claim_at(claimed_at, staff, run)
    end = claimed_at + timedelta(hours=1)

    assert claim.lease_expires_at == end
    with time_machine.travel(end - timedelta(seconds=1), tick=False):
        assert item_expire(item_id=claim.pk, token=claim.token) is None
        client.force_login(staff)
        assert f"Lease until <time datetime=\"{end.astimezone(BERLIN).isoformat()}\">{shown}" \
            in client.get("/").content.decode()
    with time_machine.travel(end, tick=False):
        assert item_expire(item_id=claim.pk, token=claim.token).state == ItemState.AVAILABLE
    assert trail(run)[-1][0] == CheckpointKind.EXPIRED
