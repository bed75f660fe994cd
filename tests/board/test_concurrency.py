"""Invariants 1, 2, 3, 6 and 7 under real concurrency: threads, each with its own database
connection, racing through the real services on the configured database (SQLite with
BEGIN IMMEDIATE + WAL + busy timeout, or PostgreSQL with SKIP LOCKED).

Races are lined up with a `threading.Barrier` after every thread has opened its connection,
so the statements really overlap. Any exception other than a domain error fails the test:
on SQLite a claim must wait on the busy timeout, never fail with "database is locked".
"""

import threading
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import partial

import pytest
from django.db import connection, transaction
from django.db.models import Count
from django.utils import timezone

from accounts.models import User
from board.errors import BoardError, ClaimLost, NotAvailable, NothingToClaim, WipLimitReached
from board.models import Checkpoint, CheckpointKind, Item, ItemState, Run, RunState
from board.services import (
    item_claim,
    item_claim_next,
    item_complete,
    item_expire,
    item_skip,
    leases_sweep,
)
from tests.board.test_services import ONE_STEP, PARALLEL

pytestmark = pytest.mark.django_db(transaction=True)

CLAIMERS = 16
POOL = 1000
ROUNDS = 50


# --- Helpers --------------------------------------------------------------------------------


def outcome(action: Callable[[], object]) -> object:
    """The action's result, or the domain error it raised (any other error propagates)."""
    try:
        return action()
    except BoardError as refusal:
        return refusal


def in_threads(bodies: Sequence[Callable[[threading.Barrier], object]]) -> list[object]:
    """Run each body in its own thread with its own connection; return their results.

    Each body gets the shared barrier to line up its racing call; the connection is opened
    before the start line so connecting does not spread the threads apart. Unexpected
    exceptions (anything but a domain error) are collected and fail the test."""
    start = threading.Barrier(len(bodies))
    results: list[object] = [None] * len(bodies)
    errors: list[BaseException] = []

    def run(index: int, body: Callable[[threading.Barrier], object]) -> None:
        try:
            connection.ensure_connection()
            results[index] = body(start)
        except BaseException as error:  # noqa: BLE001 - reported below, with the others
            errors.append(error)
            start.abort()
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(i, body)) for i, body in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    assert errors == [], f"unexpected errors in threads: {errors!r}"
    return results


def pool_run(make_runbook, make_run, size: int, *, wip_limit: int | None = None) -> Run:
    """A run of `size` available items with no prerequisites, bulk-created for speed."""
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"), title=f"{size} items")
    Item.objects.bulk_create(
        Item(run=run, position=position, key=f"step-{position}", title=f"Step {position}")
        for position in range(2, size + 1)
    )
    if wip_limit is not None:
        Run.objects.filter(pk=run.pk).update(wip_limit=wip_limit)
        run.refresh_from_db()
    return run


def claimed_checkpoints_per_item(run: Run) -> Counter:
    rows = (
        Checkpoint.objects.filter(run=run, kind=CheckpointKind.CLAIMED)
        .values("item_id").annotate(n=Count("id")).values_list("item_id", "n")
    )
    return Counter(dict(rows))


def kinds(item_id: int) -> list[tuple[str, int | None]]:
    return list(
        Checkpoint.objects.filter(item_id=item_id).order_by("id").values_list("kind", "token")
    )


@pytest.fixture
def claimers(make_user, team) -> list[User]:
    # Distinct staff: each holds at most one claim at a time, so the WIP limit never binds.
    return [make_user(f"claimer{n:02d}") for n in range(CLAIMERS)]


# --- Invariant 1: one holder ----------------------------------------------------------------


def test_sixteen_claimers_take_each_of_a_thousand_items_exactly_once(
    make_runbook, make_run, claimers
):
    # A WIP limit above the pool, so each claimer keeps claiming until the pool is empty.
    run = pool_run(make_runbook, make_run, POOL, wip_limit=POOL)

    def claim_until_empty(user: User) -> Callable[[threading.Barrier], list]:
        def body(start: threading.Barrier) -> list[tuple[int, int]]:
            start.wait()
            taken = []
            while True:
                try:
                    item = item_claim_next(actor=user, run=run)
                except NothingToClaim:
                    return taken
                taken.append((item.pk, item.token))

        return body

    results = in_threads([claim_until_empty(user) for user in claimers])

    taken = [item_id for per_thread in results for item_id, _token in per_thread]
    all_ids = set(run.items.values_list("pk", flat=True))
    assert len(taken) == POOL and set(taken) == all_ids  # every item once, none twice
    assert {token for per_thread in results for _item, token in per_thread} == {1}
    # Each item is held by the claimer that was told it got it, with token 1.
    held = {(item_id, user.pk, 1) for user, per_thread in zip(claimers, results, strict=True)
            for item_id, _token in per_thread}
    assert set(run.items.values_list("pk", "holder", "token")) == held
    assert set(run.items.values_list("state", flat=True)) == {ItemState.CLAIMED}
    # Exactly one `claimed` checkpoint per claim, naming that claimer and that token.
    rows = Checkpoint.objects.filter(run=run, kind=CheckpointKind.CLAIMED)
    assert sorted(rows.values_list("item", "actor", "token")) == sorted(held)
    assert claimed_checkpoints_per_item(run) == Counter(dict.fromkeys(all_ids, 1))
    assert Counter(Checkpoint.objects.filter(run=run).values_list("kind", flat=True)) == {
        CheckpointKind.LAUNCHED: 1, CheckpointKind.CLAIMED: POOL,
    }
    # Most claimers got a share: the claims really ran side by side. (Not all: on SQLite a
    # claimer backing off on the busy timeout may wake to an empty pool.)
    assert sum(1 for per_thread in results if per_thread) >= CLAIMERS // 2, [
        len(per_thread) for per_thread in results
    ]


def test_a_race_for_one_named_item_has_exactly_one_winner_every_round(
    make_runbook, make_run, claimers
):
    racers = claimers[:8]
    run = pool_run(make_runbook, make_run, ROUNDS, wip_limit=ROUNDS)
    targets = list(run.items.order_by("position"))

    def racer(user: User) -> Callable[[threading.Barrier], list]:
        def body(start: threading.Barrier) -> list[object]:
            outcomes = []
            for target in targets:
                start.wait()
                outcomes.append(outcome(partial(item_claim, item=target, actor=user)))
            return outcomes

        return body

    results = in_threads([racer(user) for user in racers])

    for round_, target in enumerate(targets):
        round_outcomes = [per_racer[round_] for per_racer in results]
        winners = [user for user, result in zip(racers, round_outcomes, strict=True)
                   if isinstance(result, Item)]
        assert len(winners) == 1, (round_, round_outcomes)
        losers = [result for result in round_outcomes if not isinstance(result, Item)]
        assert all(isinstance(loser, NotAvailable) for loser in losers), losers
        # The refusal names who got it, not a confusing "is available, not available".
        assert {loser.message for loser in losers} == {
            f"“{target.title}” is already held by {winners[0].display_name}."
        }
        target.refresh_from_db()
        assert (target.state, target.holder, target.token) == (ItemState.CLAIMED, winners[0], 1)
        assert kinds(target.pk) == [(CheckpointKind.CLAIMED, 1)]


def test_a_race_for_the_last_item_of_the_pool_has_exactly_one_winner_every_round(
    make_runbook, make_run, claimers
):
    racers = claimers[:8]
    runs = [pool_run(make_runbook, make_run, 1) for _ in range(ROUNDS // 2)]

    def racer(user: User) -> Callable[[threading.Barrier], list]:
        def body(start: threading.Barrier) -> list[object]:
            outcomes = []
            for run in runs:
                start.wait()
                outcomes.append(outcome(partial(item_claim_next, actor=user, run=run)))
                # Give the win back, so the WIP limit never decides a round.
                if isinstance(outcomes[-1], Item):
                    item = outcomes[-1]
                    item_complete(item_id=item.pk, token=item.token, actor=user)
            return outcomes

        return body

    results = in_threads([racer(user) for user in racers])

    for round_, run in enumerate(runs):
        round_outcomes = [per_racer[round_] for per_racer in results]
        assert sum(isinstance(result, Item) for result in round_outcomes) == 1, round_outcomes
        assert all(isinstance(result, Item | NothingToClaim) for result in round_outcomes)
        assert claimed_checkpoints_per_item(run) == Counter({run.items.get().pk: 1})


@pytest.mark.postgres  # SQLite has no row locks: its writers take turns
def test_claim_next_past_an_item_another_claimer_has_locked_is_not_a_wip_refusal(
    make_runbook, make_run, staff, teammate
):
    run = pool_run(make_runbook, make_run, 2, wip_limit=10)
    item_claim_next(actor=staff, run=run)  # staff holds one claim, far below the limit
    last = run.items.get(position=2)
    locked, release = threading.Event(), threading.Event()

    def other_claimer_in_flight() -> None:
        try:
            with transaction.atomic():
                Item.objects.select_for_update().get(pk=last.pk)
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    thread = threading.Thread(target=other_claimer_in_flight)
    thread.start()
    try:
        assert locked.wait(timeout=30)
        # The only available item is being taken: nothing to claim, not "limit reached".
        with pytest.raises(NothingToClaim):
            item_claim_next(actor=staff, run=run)
    finally:
        release.set()
        thread.join()
    assert Checkpoint.objects.filter(run=run, kind=CheckpointKind.CLAIMED).count() == 1


# --- Invariant 2: fencing -------------------------------------------------------------------


def test_complete_with_a_stale_token_from_another_thread_is_refused_naming_the_new_holder(
    make_runbook, make_run, staff, teammate
):
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    mine = item_claim_next(actor=staff, run=run)
    assert item_expire(item_id=mine.pk, token=mine.token, now=mine.lease_expires_at) is not None
    theirs = item_claim_next(actor=teammate, run=run)
    before = kinds(mine.pk)

    (refusal,) = in_threads([
        lambda start: outcome(
            lambda: item_complete(item_id=mine.pk, token=mine.token, actor=staff)
        )
    ])

    assert isinstance(refusal, ClaimLost)
    assert "Your lease ran out at" in refusal.message
    assert refusal.message.endswith(f"is now held by {teammate.display_name}.")
    item = Item.objects.get(pk=mine.pk)
    assert (item.state, item.holder, item.token) == (ItemState.CLAIMED, teammate, theirs.token)
    assert kinds(mine.pk) == before == [
        (CheckpointKind.CLAIMED, 1), (CheckpointKind.EXPIRED, 1), (CheckpointKind.CLAIMED, 2)
    ]


def test_complete_racing_the_lease_timer_has_exactly_one_winner_every_round(
    make_runbook, make_run, staff
):
    run = pool_run(make_runbook, make_run, ROUNDS, wip_limit=ROUNDS)
    claims = [item_claim_next(actor=staff, run=run) for _ in range(ROUNDS)]
    # Every lease has run out, and nobody took the items: the holder may still complete.
    later = timezone.now() + run.lease_duration + timedelta(seconds=1)

    def holder(start: threading.Barrier) -> list[object]:
        results = []
        for claim in claims:
            start.wait()
            results.append(outcome(
                partial(item_complete, item_id=claim.pk, token=claim.token, actor=staff)
            ))
        return results

    def timer(start: threading.Barrier) -> list[object]:
        results = []
        for claim in claims:
            start.wait()
            results.append(item_expire(item_id=claim.pk, token=claim.token, now=later))
        return results

    completes, expiries = in_threads([holder, timer])

    for claim, completed, expired in zip(claims, completes, expiries, strict=True):
        item = Item.objects.get(pk=claim.pk)
        if isinstance(completed, Item):
            assert expired is None
            assert (item.state, item.attempts) == (ItemState.DONE, 0)
            assert kinds(claim.pk) == [(CheckpointKind.CLAIMED, 1), (CheckpointKind.COMPLETED, 1)]
        else:
            assert isinstance(expired, Item), (completed, expired)
            assert isinstance(completed, ClaimLost)
            assert completed.message.endswith("is back in the pool.")
            assert (item.state, item.holder, item.attempts) == (ItemState.AVAILABLE, None, 1)
            assert kinds(claim.pk) == [(CheckpointKind.CLAIMED, 1), (CheckpointKind.EXPIRED, 1)]


def test_two_sweepers_and_the_timers_expire_each_lapsed_claim_exactly_once(
    make_runbook, make_run, staff
):
    # Invariant 5 with several Celery workers: the periodic sweep on two of them and the
    # per-claim timers on a third all find the same lapsed claims at the same moment.
    run = pool_run(make_runbook, make_run, ROUNDS, wip_limit=ROUNDS)
    claims = [item_claim_next(actor=staff, run=run) for _ in range(ROUNDS)]
    later = timezone.now() + run.lease_duration + timedelta(seconds=1)

    def sweeper(start: threading.Barrier) -> int:
        start.wait()
        return leases_sweep(now=later)

    def timers(start: threading.Barrier) -> int:
        start.wait()
        return sum(item_expire(item_id=claim.pk, token=claim.token, now=later) is not None
                   for claim in claims)

    expired = in_threads([sweeper, sweeper, timers])

    assert sum(expired) == ROUNDS
    assert set(run.items.values_list("state", "holder", "attempts", "token")) == {
        (ItemState.AVAILABLE, None, 1, 1)
    }
    for claim in claims:
        assert kinds(claim.pk) == [(CheckpointKind.CLAIMED, 1), (CheckpointKind.EXPIRED, 1)]


def test_skip_racing_the_holders_complete_has_exactly_one_winner_every_round(
    make_runbook, make_run, staff, manager
):
    run = pool_run(make_runbook, make_run, ROUNDS, wip_limit=ROUNDS)
    claims = [item_claim_next(actor=staff, run=run) for _ in range(ROUNDS)]

    def holder(start: threading.Barrier) -> list[object]:
        results = []
        for claim in claims:
            start.wait()
            results.append(outcome(
                partial(item_complete, item_id=claim.pk, token=claim.token, actor=staff)
            ))
        return results

    def boss(start: threading.Barrier) -> list[object]:
        results = []
        for claim in claims:
            start.wait()
            results.append(outcome(
                partial(item_skip, item_id=claim.pk, actor=manager, reason="not needed")
            ))
        return results

    completes, skips = in_threads([holder, boss])

    for claim, completed, skipped in zip(claims, completes, skips, strict=True):
        item = Item.objects.get(pk=claim.pk)
        if isinstance(completed, Item):
            assert isinstance(skipped, NotAvailable)
            assert (item.state, item.token) == (ItemState.DONE, 1)
            assert kinds(claim.pk) == [(CheckpointKind.CLAIMED, 1), (CheckpointKind.COMPLETED, 1)]
        else:
            assert isinstance(skipped, Item) and isinstance(completed, ClaimLost)
            # Skipping revoked the claim: the token moved past the holder's.
            assert (item.state, item.token) == (ItemState.SKIPPED, 2)
            assert kinds(claim.pk) == [(CheckpointKind.CLAIMED, 1), (CheckpointKind.SKIPPED, 2)]
    run.refresh_from_db()
    assert run.state == RunState.COMPLETED
    assert Checkpoint.objects.filter(run=run, kind=CheckpointKind.RUN_COMPLETED).count() == 1


# --- Invariants 3 and 6: the last completions of a run and of a join ------------------------


def test_completing_the_last_two_items_at_once_completes_the_run_once(
    settings, make_runbook, make_run, staff, teammate
):
    settings.WIP_LIMIT = ROUNDS
    two_steps = ONE_STEP.replace("- Only step", "- First\n- Second")
    runs = [make_run(runbook=make_runbook(two_steps, filename="two.md"), title=f"INC-{n}")
            for n in range(ROUNDS // 2)]
    holds = [(item_claim_next(actor=staff, run=run), item_claim_next(actor=teammate, run=run))
             for run in runs]

    def completer(user: User, which: int) -> Callable[[threading.Barrier], None]:
        def body(start: threading.Barrier) -> None:
            for pair in holds:
                start.wait()
                item = pair[which]
                item_complete(item_id=item.pk, token=item.token, actor=user)

        return body

    in_threads([completer(staff, 0), completer(teammate, 1)])

    for run in runs:
        run.refresh_from_db()
        assert run.state == RunState.COMPLETED, run
        assert [kind for kind in Checkpoint.objects.filter(run=run).order_by("id")
                .values_list("kind", flat=True)][-1:] == [CheckpointKind.RUN_COMPLETED]
        assert Checkpoint.objects.filter(run=run, kind=CheckpointKind.RUN_COMPLETED).count() == 1


def test_completing_both_prerequisites_at_once_makes_the_join_available(
    settings, make_runbook, make_run, staff, teammate
):
    settings.WIP_LIMIT = ROUNDS
    from tests.board.test_services import DIAMOND

    runs = [make_run(runbook=make_runbook(DIAMOND, filename="diamond.md"), title=f"INC-{n}")
            for n in range(ROUNDS // 2)]
    holds = [(item_claim_next(actor=staff, run=run), item_claim_next(actor=teammate, run=run))
             for run in runs]

    def completer(user: User, which: int) -> Callable[[threading.Barrier], list]:
        def body(start: threading.Barrier) -> None:
            for pair in holds:
                start.wait()
                item = pair[which]
                item_complete(item_id=item.pk, token=item.token, actor=user)

        return body

    in_threads([completer(staff, 0), completer(teammate, 1)])

    for run in runs:
        join = run.items.get(position=3)
        assert join.state == ItemState.AVAILABLE, run
        unlocked = [
            c.data["unlocked"]
            for c in Checkpoint.objects.filter(run=run, kind=CheckpointKind.COMPLETED)
        ]
        # Exactly one of the two completions made the join available.
        assert sorted(unlocked) == [[], [join.pk]]


# --- Invariant 7: WIP limit -----------------------------------------------------------------


def test_one_person_claiming_from_many_tabs_at_once_never_exceeds_the_wip_limit(
    settings, make_runbook, make_run, staff
):
    settings.WIP_LIMIT = 2
    tabs, rounds = 8, 20
    run = pool_run(make_runbook, make_run, 2 * rounds + tabs)
    held_after_round: list[int] = []

    def tab(number: int) -> Callable[[threading.Barrier], list]:
        def body(start: threading.Barrier) -> list[object]:
            outcomes = []
            for _ in range(rounds):
                # Half the tabs press "claim next", the others claim a card of the pool.
                target = run.items.filter(state=ItemState.AVAILABLE).order_by("?").first()
                start.wait()
                if number % 2:
                    outcomes.append(outcome(partial(item_claim_next, actor=staff, run=run)))
                else:
                    outcomes.append(outcome(partial(item_claim, item=target, actor=staff)))
                start.wait()  # everybody has tried; tab 0 counts and completes the claims
                if number == 0:
                    held = list(Item.objects.filter(holder=staff, state=ItemState.CLAIMED))
                    held_after_round.append(len(held))
                    for item in held:
                        item_complete(item_id=item.pk, token=item.token, actor=staff)
                start.wait()
            return outcomes

        return body

    results = in_threads([tab(number) for number in range(tabs)])

    assert held_after_round == [2] * rounds
    attempts = [result for per_tab in results for result in per_tab]
    assert sum(isinstance(result, Item) for result in attempts) == 2 * rounds
    assert all(isinstance(result, Item | WipLimitReached | NotAvailable) for result in attempts)
    assert Checkpoint.objects.filter(run=run, kind=CheckpointKind.CLAIMED).count() == 2 * rounds


def test_distinct_users_are_not_limited_by_each_others_claims(
    settings, make_runbook, make_run, claimers
):
    settings.WIP_LIMIT = 1
    run = make_run(runbook=make_runbook(PARALLEL, filename="parallel.md"))
    racers = claimers[:3]

    results = in_threads([
        (lambda user: lambda start: (start.wait(), item_claim_next(actor=user, run=run))[1])(u)
        for u in racers
    ])

    assert sorted(item.holder_id for item in results) == sorted(u.pk for u in racers)
    assert set(run.items.values_list("state", flat=True)) == {ItemState.CLAIMED}


# --- Push against pull ----------------------------------------------------------------------


def test_a_push_racing_sixteen_claimers_leaves_no_claim_outside_its_target(
    make_runbook, make_run, claimers, manager, teammate
):
    from board.push import run_reassign

    run = pool_run(make_runbook, make_run, 200, wip_limit=200)
    pushed_once = threading.Event()

    def claim_until_pushed(user: User) -> Callable[[threading.Barrier], list]:
        def body(start: threading.Barrier) -> list[tuple[int, int]]:
            start.wait()
            taken = []
            while True:
                try:
                    item = item_claim_next(actor=user, run=run)
                except NothingToClaim:
                    return taken
                taken.append((item.pk, item.token))
                if pushed_once.is_set() and len(taken) > 2 * POOL:
                    return taken

        return body

    def push(start: threading.Barrier) -> int:
        start.wait()
        # A few claims in first, so there are live claims to revoke.
        while not Item.objects.filter(run=run, state=ItemState.CLAIMED).count() >= 20:
            pass
        changed = run_reassign(run_id=run.pk, actor=manager, reason="Tia drives it",
                               assignee=teammate)
        pushed_once.set()
        return changed

    results = in_threads([push] + [claim_until_pushed(user) for user in claimers])

    # Every claim made before the push was revoked by it; none was made after it.
    assert not Item.objects.filter(run=run, state=ItemState.CLAIMED).exists()
    assert set(run.items.values_list("assignee", flat=True)) == {teammate.pk}
    claims = [claim for per_thread in results[1:] for claim in per_thread]
    assert len(claims) >= 20
    assert results[0] == 200  # every item was open, so every item was pushed
    # Each item's token counts its claims and the one revocation of a live claim, and each
    # claim and revocation has its one checkpoint.
    for item_id, token in run.items.values_list("pk", "token"):
        claimed = Checkpoint.objects.filter(item_id=item_id, kind=CheckpointKind.CLAIMED)
        pushed = Checkpoint.objects.get(item_id=item_id, kind=CheckpointKind.REASSIGNED)
        revoked = 1 if "revoked_token" in pushed.data else 0
        assert token == claimed.count() + revoked
        assert revoked == (1 if claimed.exists() else 0)
    # The assignee now takes them, first.
    assert item_claim_next(actor=teammate, run=run).assignee_id == teammate.pk


def test_one_incident_launched_four_times_at_once_makes_one_run(make_runbook, manager):
    from board.services import run_launch_once

    runbook = make_runbook(PARALLEL, filename="parallel.md")

    def launch(start: threading.Barrier) -> tuple[int, bool]:
        start.wait()
        run, launched = run_launch_once(runbook=runbook, title="INC-9 alert", ref="INC-9",
                                        actor=manager)
        return run.pk, launched

    results = in_threads([launch] * 4)

    assert Run.objects.count() == 1
    assert {run_id for run_id, _ in results} == {Run.objects.get().pk}
    assert sorted(launched for _, launched in results) == [False, False, False, True]
    assert Checkpoint.objects.filter(kind=CheckpointKind.LAUNCHED).count() == 1
