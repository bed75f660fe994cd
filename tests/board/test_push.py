"""Managers push: reassign a whole run, restart from a safe step, assign one item, cancel, and
launch with a recommendation (board.push, board.services.run_launch_once). On the configured
database, so both SQLite and PostgreSQL run them."""

import pytest
from django.core import mail

from accounts.models import Role
from board.errors import ClaimLost, InvalidInput, NotAvailable, NothingToClaim
from board.models import Checkpoint, CheckpointKind, Item, ItemState, Run, RunMode, RunState
from board.push import item_assign, run_cancel, run_reassign, run_restart
from board.services import (
    item_abandon,
    item_claim,
    item_claim_next,
    item_complete,
    item_extend,
    item_skip,
    recommend_mode,
    run_launch_once,
)
from tests.board.test_services import ONE_STEP, PARALLEL, items, states, trail

pytestmark = pytest.mark.django_db


def kinds(run, kind: str) -> list[Checkpoint]:
    return list(Checkpoint.objects.filter(run=run, kind=kind).select_related("item")
                .order_by("id"))


def claim_position(run, actor, position: int) -> Item:
    return item_claim(item=items(run)[position], actor=actor)


# --- Launch ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("scope", "nature", "mode"), [
    ("partial", "transient", RunMode.PULL),
    ("total", "persistent", RunMode.PUSH),
    ("partial", "persistent", RunMode.HYBRID),
    ("total", "transient", RunMode.HYBRID),
    ("", "", RunMode.PULL),
])
def test_the_recommendation_follows_scope_and_nature(scope, nature, mode):
    recommended, reason = recommend_mode(scope, nature)
    assert recommended == mode
    assert reason and "\n" not in reason


def test_launch_stores_the_facts_the_recommendation_and_the_override(make_runbook, manager):
    run, launched = run_launch_once(
        runbook=make_runbook(), title="INC-7", actor=manager, scope="total",
        nature="persistent", mode=RunMode.HYBRID,
    )
    assert launched
    assert (run.scope, run.nature, run.recommended_mode, run.mode) == (
        "total", "persistent", RunMode.PUSH, RunMode.HYBRID)
    data = kinds(run, CheckpointKind.LAUNCHED)[0].data
    assert (data["scope"], data["nature"], data["recommended_mode"], data["mode"]) == (
        "total", "persistent", "push", "hybrid")


def test_launch_without_a_mode_follows_the_recommendation(make_runbook, manager):
    run, _ = run_launch_once(runbook=make_runbook(), title="INC-7", actor=manager,
                             scope="total", nature="persistent")
    assert run.mode == RunMode.PUSH


def test_launch_with_bad_facts_is_refused_and_writes_nothing(make_runbook, manager):
    runbook = make_runbook()
    with pytest.raises(InvalidInput, match="Scope must be one of partial, total"):
        run_launch_once(runbook=runbook, title="INC-7", actor=manager, scope="some")
    assert not Run.objects.exists()


def test_the_same_ref_of_the_same_runbook_while_open_finds_the_open_run(make_runbook, manager):
    runbook = make_runbook()
    first, launched = run_launch_once(runbook=runbook, title="INC-7", ref="INC-7", actor=manager)
    again, launched_again = run_launch_once(runbook=runbook, title="other title", ref="INC-7",
                                            actor=manager)
    assert (launched, launched_again, again.pk) == (True, False, first.pk)
    assert Run.objects.count() == 1
    run_cancel(run_id=first.pk, actor=manager, reason="false alarm")
    third, launched_third = run_launch_once(runbook=runbook, title="INC-7", ref="INC-7",
                                            actor=manager)
    assert launched_third and third.pk != first.pk  # the first is closed: a new incident run


def test_launch_pushed_to_a_person_assigns_every_item_and_mails_them(
    make_runbook, manager, teammate, django_capture_on_commit_callbacks
):
    teammate.email = "tia@example.org"
    teammate.save()
    with django_capture_on_commit_callbacks(execute=True):
        run, _ = run_launch_once(runbook=make_runbook(), title="INC-7", actor=manager,
                                 assignee=teammate)
    assert run.assignee == teammate
    assert {item.assignee_id for item in items(run).values()} == {teammate.pk}
    assert [m.to for m in mail.outbox] == [["tia@example.org"]]


def test_launch_pushed_to_someone_outside_the_team_is_refused(make_runbook, manager, outsider):
    with pytest.raises(InvalidInput, match="not staff on Ops"):
        run_launch_once(runbook=make_runbook(), title="INC-7", actor=manager, assignee=outsider)
    assert not Run.objects.exists()


# --- Reassign -------------------------------------------------------------------------------


def test_reassign_pushes_every_open_item_revokes_others_claims_and_keeps_done_items(
    make_runbook, make_run, staff, teammate, manager
):
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))
    done = claim_position(run, staff, 1)
    item_complete(item_id=done.pk, token=done.token, actor=staff)
    held = claim_position(run, staff, 2)
    kept = claim_position(run, teammate, 3)

    changed = run_reassign(run_id=run.pk, actor=manager, reason="Tia drives it",
                           assignee=teammate)

    assert changed == 2
    now = items(run)
    assert (now[1].state, now[1].assignee_id) == (ItemState.DONE, None)
    assert (now[2].state, now[2].holder_id, now[2].token, now[2].assignee_id) == (
        ItemState.AVAILABLE, None, held.token + 1, teammate.pk)
    assert (now[3].state, now[3].holder_id, now[3].token) == (
        ItemState.CLAIMED, teammate.pk, kept.token)  # the target's own claim stays
    reassigned = kinds(run, CheckpointKind.REASSIGNED)
    assert [(c.item.position, c.token, c.reason) for c in reassigned] == [
        (2, held.token + 1, "Tia drives it"), (3, kept.token, "Tia drives it")]
    assert reassigned[0].data["revoked_token"] == held.token
    run.refresh_from_db()
    assert run.assignee == teammate

    with pytest.raises(ClaimLost) as refused:
        item_complete(item_id=held.pk, token=held.token, actor=staff)
    assert refused.value.message == (
        f"Your claim on “{held.title}” was taken back: {manager.display_name} pushed the run "
        f"to {teammate.display_name}: “Tia drives it”."
    )
    for action in (
        lambda: item_abandon(item_id=held.pk, token=held.token, actor=staff, reason="x"),
        lambda: item_extend(item_id=held.pk, token=held.token, actor=staff),
    ):
        with pytest.raises(ClaimLost, match="was taken back"):
            action()


def test_pushed_items_are_claimable_only_by_the_assignee_and_come_first(
    make_runbook, make_run, staff, teammate, manager
):
    urgent = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"), title="SEV1",
                      severity=1)
    pushed = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"), title="SEV3",
                      severity=3)
    run_reassign(run_id=pushed.pk, actor=manager, reason="yours", assignee=teammate)

    # The assignee gets the pushed run first, before the more urgent shared one.
    assert item_claim_next(actor=teammate).run_id == pushed.pk
    # Anyone else gets only the shared pool, and cannot take a pushed item by name.
    assert item_claim_next(actor=staff).run_id == urgent.pk
    with pytest.raises(NothingToClaim):
        item_claim_next(actor=staff, run=pushed)
    with pytest.raises(NotAvailable, match=f"is pushed to {teammate.display_name}"):
        claim_position(pushed, staff, 3)
    assert claim_position(pushed, teammate, 3).holder_id == teammate.pk


def test_a_run_pushed_to_a_team_is_worked_by_its_members_only(
    make_runbook, make_run, make_user, staff, manager, other_team
):
    from accounts.access import grant_role

    grant_role(user=manager, team=other_team, role=Role.MANAGER)
    payments_staff = make_user("pia", Role.STAFF, team="payments")
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))
    run_reassign(run_id=run.pk, actor=manager, reason="payments own it",
                 assigned_team=other_team)

    assert item_claim_next(actor=payments_staff).run_id == run.pk
    with pytest.raises(NothingToClaim):
        item_claim_next(actor=staff)


def test_pushing_to_a_team_the_manager_does_not_manage_is_refused(
    make_run, staff, manager, other_team
):
    run = make_run()
    with pytest.raises(InvalidInput, match="You do not manage Payments"):
        run_reassign(run_id=run.pk, actor=manager, reason="x", assigned_team=other_team)
    assert not kinds(run, CheckpointKind.REASSIGNED)


def test_unassign_returns_the_run_to_the_shared_pool(make_runbook, make_run, staff, teammate,
                                                     manager):
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))
    run_reassign(run_id=run.pk, actor=manager, reason="yours", assignee=teammate)
    mine = item_claim_next(actor=teammate)

    run_reassign(run_id=run.pk, actor=manager, reason="all hands", assignee=None)

    assert {item.assignee_id for item in items(run).values()} == {None}
    assert item_claim_next(actor=staff).run_id == run.pk
    assert Item.objects.get(pk=mine.pk).holder_id == teammate.pk  # unassign revokes nothing


@pytest.mark.parametrize("reason", ["", "   "])
def test_reassign_without_a_reason_is_refused_and_writes_nothing(make_run, teammate, manager,
                                                                 reason):
    run = make_run()
    with pytest.raises(InvalidInput, match="a reason is required"):
        run_reassign(run_id=run.pk, actor=manager, reason=reason, assignee=teammate)
    assert {item.assignee_id for item in items(run).values()} == {None}
    assert not kinds(run, CheckpointKind.REASSIGNED)


def test_reassign_of_a_finished_or_cancelled_run_is_refused(make_runbook, make_run, staff,
                                                            teammate, manager):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    only = item_claim_next(actor=staff, run=run)
    item_complete(item_id=only.pk, token=only.token, actor=staff)
    with pytest.raises(NotAvailable, match="is completed: it can no longer be reassigned"):
        run_reassign(run_id=run.pk, actor=manager, reason="x", assignee=teammate)


# --- Restart --------------------------------------------------------------------------------


def test_restart_from_step_k_resets_done_and_claimed_items_by_the_flow(
    make_run, staff, teammate, manager
):
    # SIMPLE_RUNBOOK: 1 → 2, then 3 and 4 wait for both.
    run = make_run()
    for position in (1, 2):
        held = claim_position(run, staff, position)
        item_complete(item_id=held.pk, token=held.token, actor=staff)
    three = claim_position(run, teammate, 3)
    four = claim_position(run, staff, 4)
    item_complete(item_id=four.pk, token=four.token, actor=staff)

    changed = run_restart(run_id=run.pk, from_position=2, actor=manager, reason="bad snapshot")

    assert changed == 3
    assert states(run) == {1: ItemState.DONE, 2: ItemState.AVAILABLE, 3: ItemState.WAITING,
                           4: ItemState.WAITING}
    now = items(run)
    assert (now[3].holder_id, now[3].token) == (None, three.token + 1)
    assert now[4].finished_at is None
    resets = kinds(run, CheckpointKind.RESET)
    assert [(c.item.position, c.data["state_before"], c.data["state"]) for c in resets] == [
        (2, "done", "available"), (3, "claimed", "waiting"), (4, "done", "waiting")]
    assert len({c.data["restart"] for c in resets}) == 1
    assert {c.data["from_position"] for c in resets} == {2}
    assert [c.kind for c in Checkpoint.objects.filter(run=run)].count("completed") == 3  # kept
    with pytest.raises(ClaimLost, match="restarted the run from step 2: “bad snapshot”"):
        item_complete(item_id=three.pk, token=three.token, actor=teammate)


def test_restart_reopens_a_completed_run(make_runbook, make_run, staff, manager):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    only = item_claim_next(actor=staff, run=run)
    item_complete(item_id=only.pk, token=only.token, actor=staff)
    run.refresh_from_db()
    assert run.state == RunState.COMPLETED

    run_restart(run_id=run.pk, from_position=1, actor=manager, reason="it broke again")

    run.refresh_from_db()
    assert (run.state, run.completed_at) == (RunState.ACTIVE, None)
    assert item_claim_next(actor=staff, run=run).pk == only.pk


def test_restart_resets_stuck_items_with_fresh_attempts(make_runbook, make_run, staff, manager):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    Run.objects.filter(pk=run.pk).update(max_attempts=1)
    held = item_claim_next(actor=staff, run=run)
    item_abandon(item_id=held.pk, token=held.token, actor=staff, reason="cannot")
    assert states(run) == {1: ItemState.STUCK}

    run_restart(run_id=run.pk, from_position=1, actor=manager, reason="fixed the cause")

    assert (items(run)[1].state, items(run)[1].attempts) == (ItemState.AVAILABLE, 0)


@pytest.mark.parametrize("position", [0, 5, -1])
def test_restart_from_a_step_that_does_not_exist_is_refused(make_run, manager, position):
    run = make_run()
    with pytest.raises(InvalidInput, match="Restart from a step between 1 and 4"):
        run_restart(run_id=run.pk, from_position=position, actor=manager, reason="x")
    assert not kinds(run, CheckpointKind.RESET)


def test_restart_with_nothing_to_reset_is_refused_and_writes_nothing(make_run, manager):
    run = make_run()
    with pytest.raises(NotAvailable, match="Nothing to restart"):
        run_restart(run_id=run.pk, from_position=1, actor=manager, reason="x")
    assert not kinds(run, CheckpointKind.RESET)


def test_restarted_items_take_the_runs_current_assignment(make_runbook, make_run, staff,
                                                          teammate, manager):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    only = item_claim_next(actor=staff, run=run)
    item_complete(item_id=only.pk, token=only.token, actor=staff)
    Run.objects.filter(pk=run.pk).update(assignee=teammate)

    run_restart(run_id=run.pk, from_position=1, actor=manager, reason="again, Tia")

    with pytest.raises(NothingToClaim):
        item_claim_next(actor=staff)
    assert item_claim_next(actor=teammate).pk == only.pk


# --- Stuck lane: assign ---------------------------------------------------------------------


def test_assigning_a_stuck_item_puts_it_back_with_fresh_attempts_for_that_person(
    make_runbook, make_run, staff, teammate, manager
):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    Run.objects.filter(pk=run.pk).update(max_attempts=1)
    held = item_claim_next(actor=staff, run=run)
    item_abandon(item_id=held.pk, token=held.token, actor=staff, reason="cannot")

    assigned = item_assign(item_id=held.pk, actor=manager, assignee=teammate)

    assert (assigned.state, assigned.attempts, assigned.assignee_id) == (
        ItemState.AVAILABLE, 0, teammate.pk)
    checkpoint = kinds(run, CheckpointKind.REASSIGNED)[0]
    assert (checkpoint.item_id, checkpoint.data["state_before"], checkpoint.data["to"]) == (
        held.pk, "stuck", teammate.display_name)
    with pytest.raises(NothingToClaim):
        item_claim_next(actor=staff)
    assert item_claim_next(actor=teammate).pk == held.pk


def test_assigning_a_claimed_item_to_someone_else_revokes_the_claim(make_runbook, make_run,
                                                                    staff, teammate, manager):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    held = item_claim_next(actor=staff, run=run)
    item_assign(item_id=held.pk, actor=manager, assignee=teammate, reason="Tia knows it")
    with pytest.raises(ClaimLost, match="pushed it to .*: “Tia knows it”"):
        item_complete(item_id=held.pk, token=held.token, actor=staff)


def test_skip_unlocks_the_items_waiting_on_it(make_run, manager):
    run = make_run()
    item_skip(item_id=items(run)[1].pk, actor=manager, reason="not needed")
    assert states(run)[2] == ItemState.AVAILABLE


# --- Cancel ---------------------------------------------------------------------------------


def test_cancel_revokes_open_claims_and_stops_claims(make_runbook, make_run, staff, manager):
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))
    held = item_claim_next(actor=staff, run=run)

    run_cancel(run_id=run.pk, actor=manager, reason="false alarm")

    run.refresh_from_db()
    assert run.state == RunState.CANCELLED and run.cancelled_at is not None
    cancelled = kinds(run, CheckpointKind.RUN_CANCELLED)
    assert [(c.reason, c.item_id) for c in cancelled] == [("false alarm", None)]
    assert cancelled[0].data["revoked"] == [{
        "item": held.pk, "revoked_token": held.token, "token": held.token + 1,
        "revoked_from": staff.display_name,
    }]
    assert Item.objects.get(pk=held.pk).holder_id is None
    with pytest.raises(ClaimLost, match="cancelled the run: “false alarm”"):
        item_complete(item_id=held.pk, token=held.token, actor=staff)
    with pytest.raises(NothingToClaim):
        item_claim_next(actor=staff)
    with pytest.raises(NotAvailable, match="is cancelled: it can no longer be cancelled"):
        run_cancel(run_id=run.pk, actor=manager, reason="again")
    assert len(kinds(run, CheckpointKind.RUN_CANCELLED)) == 1


def test_cancel_without_a_reason_is_refused(make_run, manager):
    run = make_run()
    with pytest.raises(InvalidInput):
        run_cancel(run_id=run.pk, actor=manager, reason="")
    run.refresh_from_db()
    assert run.state == RunState.ACTIVE
    assert trail(run) == [(CheckpointKind.LAUNCHED, None, None, manager.display_name)]


def test_requeue_in_a_cancelled_run_is_refused(make_runbook, make_run, staff, manager):
    from board.services import item_requeue

    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    Run.objects.filter(pk=run.pk).update(max_attempts=1)
    held = item_claim_next(actor=staff, run=run)
    item_abandon(item_id=held.pk, token=held.token, actor=staff, reason="cannot")
    run_cancel(run_id=run.pk, actor=manager, reason="false alarm")

    with pytest.raises(NotAvailable, match="is cancelled: its items can no longer be requeued"):
        item_requeue(item_id=held.pk, actor=manager)
    assert items(run)[1].state == ItemState.STUCK


# --- Found by trying it ---------------------------------------------------------------------


def test_back_to_the_pool_takes_back_claims_of_the_team_the_run_was_pushed_to(
    make_runbook, make_run, make_user, staff, manager, other_team
):
    from accounts.access import grant_role

    grant_role(user=manager, team=other_team, role=Role.MANAGER)
    payments_staff = make_user("pia", Role.STAFF, team="payments")
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))
    run_reassign(run_id=run.pk, actor=manager, reason="payments", assigned_team=other_team)
    held = item_claim_next(actor=payments_staff)

    run_reassign(run_id=run.pk, actor=manager, reason="ops again", assignee=None)

    # Pia no longer sees the run: her claim goes back to the pool instead of hanging on.
    assert Item.objects.get(pk=held.pk).holder_id is None
    with pytest.raises(ClaimLost, match="pushed the run to the shared pool: “ops again”"):
        item_complete(item_id=held.pk, token=held.token, actor=payments_staff)
    assert item_claim_next(actor=staff).run_id == run.pk


def test_pushing_a_run_to_whom_it_is_already_with_writes_nothing(
    make_run, teammate, manager, django_capture_on_commit_callbacks
):
    teammate.email = "tia@example.org"
    teammate.save()
    run = make_run()
    run_reassign(run_id=run.pk, actor=manager, reason="yours", assignee=teammate)
    before = len(kinds(run, CheckpointKind.REASSIGNED))
    mail.outbox.clear()

    with django_capture_on_commit_callbacks(execute=True):
        changed = run_reassign(run_id=run.pk, actor=manager, reason="again", assignee=teammate)

    assert changed == 0
    assert len(kinds(run, CheckpointKind.REASSIGNED)) == before
    assert mail.outbox == []


def test_a_cancelled_runs_items_can_be_neither_skipped_nor_claimed(make_runbook, make_run,
                                                                   staff, manager):
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))
    run_cancel(run_id=run.pk, actor=manager, reason="false alarm")
    first = items(run)[1]

    with pytest.raises(NotAvailable, match="is cancelled: its items can no longer be skipped"):
        item_skip(item_id=first.pk, actor=manager, reason="not needed")
    with pytest.raises(NotAvailable, match="is cancelled: its items can no longer be claimed"):
        item_claim(item=first, actor=staff)
    assert states(run)[1] == ItemState.AVAILABLE


def test_a_stuck_lane_form_from_before_a_requeue_does_not_take_the_new_claim(
    make_runbook, make_run, staff, teammate, manager
):
    from board.services import item_requeue

    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    Run.objects.filter(pk=run.pk).update(max_attempts=1)
    held = item_claim_next(actor=staff, run=run)
    item_abandon(item_id=held.pk, token=held.token, actor=staff, reason="cannot")
    item_requeue(item_id=held.pk, actor=manager)  # someone else, in another tab
    again = item_claim_next(actor=staff, run=run)

    with pytest.raises(NotAvailable, match="is claimed now, no longer stuck"):
        item_assign(item_id=held.pk, actor=manager, assignee=teammate, expected_state="stuck")
    with pytest.raises(NotAvailable, match="is claimed now, no longer stuck"):
        item_skip(item_id=held.pk, actor=manager, reason="x", expected_state="stuck")
    assert Item.objects.get(pk=held.pk).holder_id == staff.pk
    item_complete(item_id=held.pk, token=again.token, actor=staff)


def test_an_incident_reference_is_one_whatever_its_case(make_runbook, manager):
    runbook = make_runbook()
    first, _ = run_launch_once(runbook=runbook, title="x", ref="INC-900", actor=manager)
    again, launched = run_launch_once(runbook=runbook, title="x", ref="inc-900", actor=manager)
    assert (again.pk, launched) == (first.pk, False)
