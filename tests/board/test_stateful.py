"""Random interleavings of every holder and manager action (pushes and restarts among
them), with DESIGN invariants 1-7 checked against the database after every step.

A Hypothesis state machine drives the real services on a small run (six items, some with
prerequisites, max_attempts 2, WIP limit 2) for three staff members and a manager, with a
frozen clock it moves forward itself. Domain errors are part of the game: a refused action
must change nothing. After every step the invariants re-read the database (never the
objects in memory) and replay each item's trail, so the board and its checkpoints must tell
the same story.

Each example runs inside its own savepoint of the test's transaction, rolled back at the
end of the example: every example starts from an empty board, on SQLite and PostgreSQL.
"""

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.conf import settings as django_settings
from django.db import transaction
from django.utils import timezone
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from accounts.models import Role
from accounts.services import team_get_or_create, user_create
from board.errors import BoardError
from board.models import (
    FINISHED_STATES,
    Checkpoint,
    CheckpointKind,
    Item,
    ItemState,
    RunState,
)
from board.push import item_assign, run_reassign, run_restart
from board.services import (
    item_abandon,
    item_claim,
    item_claim_next,
    item_complete,
    item_expire,
    item_extend,
    item_requeue,
    item_skip,
    leases_sweep,
    run_launch,
)
from checklists.services import runbook_import

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)
LEASE = timedelta(minutes=10)
MAX_LEASE = timedelta(minutes=30)
MAX_ATTEMPTS = 2
WIP = 2
STAFF = 3

# a, b, e free; c after a; d after a and b; f after c and d.
RUNBOOK = f"""\
title: Stateful board
lease_minutes: {LEASE.seconds // 60}
max_lease_minutes: {MAX_LEASE.seconds // 60}
max_attempts: {MAX_ATTEMPTS}
wip_limit: {WIP}
steps:
  - {{id: a, title: Alpha}}
  - {{id: b, title: Bravo}}
  - {{id: c, title: Charlie, after: [a]}}
  - {{id: d, title: Delta, after: [a, b]}}
  - {{id: e, title: Echo}}
  - {{id: f, title: Foxtrot, after: [c, d]}}
"""
POSITIONS = st.integers(min_value=1, max_value=6)
USERS = st.integers(min_value=0, max_value=STAFF - 1)

# Replayed item states: the pool is waiting or available (the trail does not record the
# waiting → available step: it is part of the prerequisite's `completed` or `skipped`).
POOL = "pool"

# What the examples did, over the whole test: proof that they reach the interesting states.
SEEN: Counter = Counter()


class BoardMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        # A savepoint per example, rolled back in teardown(): every example starts clean.
        self._atomic = transaction.atomic()
        self._atomic.__enter__()
        self._traveller = time_machine.travel(T0, tick=False)
        self._clock = self._traveller.start()
        try:
            team = team_get_or_create(slug="ops", name="Ops")
            self.staff = [
                user_create(username=f"staff{n}", role=Role.STAFF, team_slug="ops")[0]
                for n in range(STAFF)
            ]
            self.manager = user_create(username="boss", role=Role.MANAGER, team_slug="ops")[0]
            runbook, _ = runbook_import(data=RUNBOOK.encode(), filename="board.yaml", team=team)
            self.run = run_launch(runbook=runbook, title="INC-7", actor=self.manager)
        except BaseException:
            self.teardown()
            raise
        assert (self.run.lease_duration, self.run.max_lease, self.run.max_attempts,
                self.run.wip_limit) == (LEASE, MAX_LEASE, MAX_ATTEMPTS, WIP)
        self.item_ids = dict(self.run.items.values_list("position", "pk"))
        self.prerequisites: dict[int, set[int]] = {pk: set() for pk in self.item_ids.values()}
        for item_id, prerequisite_id in Item.prerequisites.through.objects.filter(
            from_item__run=self.run
        ).values_list("from_item_id", "to_item_id"):
            self.prerequisites[item_id].add(prerequisite_id)
        # Claims handed out, (user index, item id, token): the stale ones stay, so holder
        # actions are also tried with tokens that are no longer live.
        self.tickets: list[tuple[int, int, int]] = []
        # Checkpoints the transitions made so far should have written (the launch: one).
        self.transitions = 1
        self.completions = 0
        self.skips = 0
        self.restarts = 0

    def teardown(self) -> None:
        self._traveller.stop()
        transaction.set_rollback(True)
        self._atomic.__exit__(None, None, None)

    # --- Acting ---------------------------------------------------------------------------

    def _snapshot(self) -> tuple:
        rows = tuple(self.run.items.order_by("pk").values_list(
            "pk", "state", "holder_id", "token", "attempts", "lease_expires_at", "claimed_at",
            "assignee_id",
        ))
        return rows, Checkpoint.objects.filter(run=self.run).count()

    def _act(self, action, expect):
        """Call a service. A domain error must change nothing. Otherwise the checkpoints it
        wrote must be exactly `expect(result)`, in order."""
        before_rows, before_count = self._snapshot()
        run_was_active = self._run_state() == RunState.ACTIVE
        try:
            result = action()
        except BoardError as refusal:
            SEEN[f"refused: {type(refusal).__name__}"] += 1
            assert refusal.message
            assert self._snapshot() == (before_rows, before_count), "a refusal changed state"
            return None
        written = list(
            Checkpoint.objects.filter(run=self.run).order_by("id")
            .values_list("kind", flat=True)[before_count:]
        )
        outcomes = expect(result)
        # One expected list of checkpoints, or a tuple of the lists that may each be right.
        choices = [list(c) for c in outcomes] if isinstance(outcomes, tuple) else [list(outcomes)]
        if run_was_active and self._run_state() == RunState.COMPLETED:
            for expected in choices:
                expected.append(CheckpointKind.RUN_COMPLETED)
            self.completions += 1
        assert written in choices, (written, choices)
        expected = written
        SEEN.update(f"wrote: {kind}" for kind in expected)
        self.transitions += len(expected)
        return result

    def _run_state(self) -> str:
        return type(self.run).objects.values_list("state", flat=True).get(pk=self.run.pk)

    def _claim_outcomes(self):
        """What a claim may write: its `claimed` checkpoint, preceded, when it found nothing
        at first, by the release of every claim lapsed beyond the grace (oldest first)."""
        cutoff = timezone.now() - django_settings.LEASE_GRACE
        lapsed = [
            CheckpointKind.STUCK if attempts + 1 >= MAX_ATTEMPTS else CheckpointKind.EXPIRED
            for attempts in Item.objects.filter(
                run=self.run, state=ItemState.CLAIMED, lease_expires_at__lte=cutoff
            ).order_by("lease_expires_at", "id").values_list("attempts", flat=True)
        ]
        return lambda _: ([CheckpointKind.CLAIMED], [*lapsed, CheckpointKind.CLAIMED])

    # --- Rules ----------------------------------------------------------------------------

    @rule(user=USERS, times=st.integers(min_value=1, max_value=3))
    def claim_next(self, user: int, times: int) -> None:
        """Press "claim next" once or a few times in a row (up to and past the WIP limit)."""
        for _ in range(times):
            item = self._act(lambda: item_claim_next(actor=self.staff[user], run=self.run),
                             self._claim_outcomes())
            if item is not None:
                self.tickets.append((user, item.pk, item.token))

    @rule(user=USERS)
    def claim_next_and_complete_it(self, user: int) -> None:
        """A quick worker: claim the next item and complete it straight away."""
        actor = self.staff[user]
        item = self._act(lambda: item_claim_next(actor=actor, run=self.run),
                         self._claim_outcomes())
        if item is not None:
            self.tickets.append((user, item.pk, item.token))
            self._act(lambda: item_complete(item_id=item.pk, token=item.token, actor=actor),
                      lambda _: [CheckpointKind.COMPLETED])

    @rule(user=USERS, position=POSITIONS)
    def claim_this(self, user: int, position: int) -> None:
        target = Item.objects.get(pk=self.item_ids[position])
        item = self._act(lambda: item_claim(item=target, actor=self.staff[user]),
                         self._claim_outcomes())
        if item is not None:
            self.tickets.append((user, item.pk, item.token))

    def _ticket(self, data) -> tuple[int, int, int]:
        """A claim handed out earlier: half the time a live one (when there is one), else any,
        most likely stale by now."""
        live = set(Item.objects.filter(run=self.run, state=ItemState.CLAIMED)
                   .values_list("pk", "token"))
        current = [t for t in self.tickets if (t[1], t[2]) in live]
        if current and data.draw(st.booleans(), label="live"):
            return data.draw(st.sampled_from(current), label="live ticket")
        return data.draw(st.sampled_from(self.tickets), label="any ticket")

    @precondition(lambda self: self.tickets)
    @rule(data=st.data(), impostor=st.booleans())
    def complete(self, data, impostor: bool) -> None:
        user, item_id, token = self._ticket(data)
        actor = self.staff[(user + impostor) % STAFF]
        self._act(lambda: item_complete(item_id=item_id, token=token, actor=actor),
                  lambda _: [CheckpointKind.COMPLETED])

    @precondition(lambda self: self.tickets)
    @rule(data=st.data(), impostor=st.booleans())
    def abandon(self, data, impostor: bool) -> None:
        user, item_id, token = self._ticket(data)
        actor = self.staff[(user + impostor) % STAFF]
        self._act(
            lambda: item_abandon(item_id=item_id, token=token, actor=actor, reason="stuck"),
            lambda item: [CheckpointKind.STUCK if item.state == ItemState.STUCK
                          else CheckpointKind.ABANDONED],
        )

    @precondition(lambda self: self.tickets)
    @rule(data=st.data())
    def extend(self, data) -> None:
        user, item_id, token = self._ticket(data)
        self._act(lambda: item_extend(item_id=item_id, token=token, actor=self.staff[user]),
                  lambda _: [CheckpointKind.EXTENDED])

    @precondition(lambda self: self.tickets)
    @rule(data=st.data())
    def lease_timer_fires(self, data) -> None:
        """A (possibly stale, possibly early) timer for one claim."""
        _user, item_id, token = self._ticket(data)
        self._act(
            lambda: item_expire(item_id=item_id, token=token, now=timezone.now()),
            lambda item: [] if item is None else [
                CheckpointKind.STUCK if item.state == ItemState.STUCK else CheckpointKind.EXPIRED
            ],
        )

    @rule()
    def sweep(self) -> None:
        before = Checkpoint.objects.filter(run=self.run).count()
        expired = leases_sweep()
        kinds = list(Checkpoint.objects.filter(run=self.run).order_by("id")
                     .values_list("kind", flat=True)[before:])
        assert len(kinds) == expired
        assert set(kinds) <= {CheckpointKind.EXPIRED, CheckpointKind.STUCK}
        self.transitions += expired
        assert not Item.objects.filter(state=ItemState.CLAIMED,
                                       lease_expires_at__lte=timezone.now()).exists()

    @rule(minutes=st.integers(min_value=1, max_value=25))
    def time_passes(self, minutes: int) -> None:
        self._clock.shift(timedelta(minutes=minutes))

    def _stuck(self) -> list[int]:
        return list(Item.objects.filter(run=self.run, state=ItemState.STUCK)
                    .values_list("pk", flat=True))

    @precondition(lambda self: self._stuck())
    @rule(data=st.data())
    def requeue_from_the_stuck_lane(self, data) -> None:
        item_id = data.draw(st.sampled_from(self._stuck()), label="stuck item")
        self._act(lambda: item_requeue(item_id=item_id, actor=self.manager),
                  lambda _: [CheckpointKind.REQUEUED])

    @rule(position=POSITIONS)
    def requeue(self, position: int) -> None:
        self._act(lambda: item_requeue(item_id=self.item_ids[position], actor=self.manager),
                  lambda _: [CheckpointKind.REQUEUED])

    @precondition(lambda self: self.skips < 1)
    @rule(position=POSITIONS)
    def skip(self, position: int) -> None:
        item = self._act(
            lambda: item_skip(item_id=self.item_ids[position], actor=self.manager,
                              reason="not needed"),
            lambda _: [CheckpointKind.SKIPPED],
        )
        self.skips += item is not None

    # A manager pushes: the whole run to one staff member (or back to the pool), one item
    # to one, or a restart from a step.
    @rule(to=st.integers(min_value=-1, max_value=STAFF - 1))
    def push_the_run(self, to: int) -> None:
        assignee = self.staff[to] if to >= 0 else None
        self._act(lambda: run_reassign(run_id=self.run.pk, actor=self.manager, reason="push",
                                       assignee=assignee),
                  lambda pushed: [CheckpointKind.REASSIGNED] * pushed)

    @rule(position=POSITIONS, user=USERS)
    def assign_one_item(self, position: int, user: int) -> None:
        self._act(lambda: item_assign(item_id=self.item_ids[position], actor=self.manager,
                                      assignee=self.staff[user]),
                  lambda _: [CheckpointKind.REASSIGNED])

    @precondition(lambda self: self.restarts < 2)
    @rule(position=POSITIONS)
    def restart_from(self, position: int) -> None:
        reset = self._act(lambda: run_restart(run_id=self.run.pk, from_position=position,
                                              actor=self.manager, reason="from a safe step"),
                          lambda changed: [CheckpointKind.RESET] * changed)
        self.restarts += reset is not None

    # --- Invariants, read from the database -----------------------------------------------

    @invariant()
    def board_and_trail_agree(self) -> None:
        items = {row["pk"]: row for row in self.run.items.values(
            "pk", "state", "holder_id", "token", "attempts", "claimed_at", "lease_expires_at",
            "assignee_id",
        )}
        trail = list(Checkpoint.objects.filter(run=self.run).order_by("id").values(
            "kind", "item_id", "token", "actor_id", "data"
        ))
        # 3. Exactly one checkpoint per state change: no more, no fewer than were made.
        assert len(trail) == self.transitions, (len(trail), self.transitions)
        assert trail[0]["kind"] == CheckpointKind.LAUNCHED

        replayed = {pk: self._replay(pk, [c for c in trail if c["item_id"] == pk])
                    for pk in items}
        for pk, row in items.items():
            state, holder, token, attempts = replayed[pk]
            # 1. One holder: a holder exactly when claimed, the one the trail says.
            assert (row["holder_id"] is not None) == (row["state"] == ItemState.CLAIMED)
            assert row["holder_id"] == holder
            # 2. The token counts the claims (and a skip that revoked one).
            assert row["token"] == token
            # 3. The state is the one the item's last state-changing checkpoint left.
            if state == POOL:
                assert row["state"] in (ItemState.WAITING, ItemState.AVAILABLE), row
            else:
                assert row["state"] == state, (row, state)
            # Attempts: abandons and expiries since the last requeue; stuck iff used up.
            assert row["attempts"] == attempts
            # (A skipped item keeps the attempts it had, used up if it was skipped from stuck.)
            if row["state"] != ItemState.SKIPPED:
                assert (row["state"] == ItemState.STUCK) == (attempts >= MAX_ATTEMPTS)
            # A pushed item is held by no one but its assignee: others' claims were revoked
            # by the push, and no one else may claim it.
            if row["state"] == ItemState.CLAIMED and row["assignee_id"] is not None:
                assert row["holder_id"] == row["assignee_id"], row
            # A lease ends after the claim and never beyond the run's longest lease.
            if row["state"] == ItemState.CLAIMED:
                assert row["claimed_at"] < row["lease_expires_at"]
                assert row["lease_expires_at"] <= row["claimed_at"] + MAX_LEASE
            else:
                assert row["lease_expires_at"] is None

        # 6. Order: nothing starts before its prerequisites are done or skipped, and an item
        # waits only while one of them is still open.
        for pk, row in items.items():
            open_prerequisites = [p for p in self.prerequisites[pk]
                                  if items[p]["state"] not in FINISHED_STATES]
            if row["state"] == ItemState.WAITING:
                assert open_prerequisites, f"item {pk} waits for nothing"
            elif row["state"] != ItemState.SKIPPED:
                assert not open_prerequisites, f"item {pk} is {row['state']} too early"

        # 7. WIP limit: nobody holds more than the run allows.
        held = Counter(row["holder_id"] for row in items.values() if row["holder_id"])
        assert all(count <= WIP for count in held.values()), held

        # The run is completed exactly when every item is done or skipped, once each time
        # (a restart reopens it).
        finished = all(row["state"] in FINISHED_STATES for row in items.values())
        assert (self._run_state() == RunState.COMPLETED) == finished
        completions = sum(c["kind"] == CheckpointKind.RUN_COMPLETED for c in trail)
        assert completions == self.completions
        assert finished <= (completions > 0)

    def _replay(self, item_id: int, events: list[dict]) -> tuple[str, int | None, int, int]:
        """The item's (state, holder, token, attempts) according to its trail alone, checking
        that each event was allowed where it happened."""
        state, holder, token, attempts = POOL, None, 0, 0
        for checkpoint in events:
            kind = checkpoint["kind"]
            if kind == CheckpointKind.CLAIMED:
                assert state == POOL, f"claimed while {state}: two holders"
                assert checkpoint["token"] == token + 1, "a claim must bump the token by one"
                state, holder = ItemState.CLAIMED, checkpoint["actor_id"]
                token = checkpoint["token"]
            elif kind in (CheckpointKind.EXTENDED, CheckpointKind.COMPLETED,
                          CheckpointKind.ABANDONED, CheckpointKind.EXPIRED,
                          CheckpointKind.STUCK):
                assert state == ItemState.CLAIMED, f"{kind} while {state}"
                assert checkpoint["token"] == token, f"{kind} with a stale token"
                if kind == CheckpointKind.EXPIRED:
                    assert checkpoint["actor_id"] is None
                elif kind != CheckpointKind.STUCK:
                    assert checkpoint["actor_id"] == holder, f"{kind} by someone else"
                if kind == CheckpointKind.COMPLETED:
                    state, holder = ItemState.DONE, None
                elif kind != CheckpointKind.EXTENDED:
                    attempts += 1
                    if kind == CheckpointKind.STUCK:
                        assert attempts == MAX_ATTEMPTS
                        state, holder = ItemState.STUCK, None
                    else:
                        assert attempts < MAX_ATTEMPTS
                        state, holder = POOL, None
            elif kind == CheckpointKind.REQUEUED:
                assert state == ItemState.STUCK, f"requeued while {state}"
                state, attempts = POOL, 0
            elif kind == CheckpointKind.SKIPPED:
                assert state in (POOL, ItemState.CLAIMED, ItemState.STUCK)
                # Skipping a live claim revokes it: the token moves past the holder's.
                assert checkpoint["token"] == token + (state == ItemState.CLAIMED)
                state, holder, token = ItemState.SKIPPED, None, checkpoint["token"]
            elif kind == CheckpointKind.REASSIGNED:
                assert state in (POOL, ItemState.CLAIMED, ItemState.STUCK), f"pushed {state}"
                data = checkpoint["data"]
                if "revoked_token" in data:
                    # Someone else's claim: revoked, the token moved past the holder's.
                    assert state == ItemState.CLAIMED and data["revoked_token"] == token
                    state, holder, token = POOL, None, token + 1
                elif data["scope"] == "item" and state == ItemState.STUCK:
                    state, attempts = POOL, 0  # assigned out of the stuck lane
                assert checkpoint["token"] == (token or None)
            elif kind == CheckpointKind.RESET:
                data = checkpoint["data"]
                assert data["state_before"] == (POOL if state == POOL else state) or \
                    state == POOL, (data, state)
                if state == ItemState.CLAIMED:
                    assert data["revoked_token"] == token
                    token += 1
                if state in (ItemState.DONE, ItemState.CLAIMED, ItemState.STUCK):
                    attempts = 0
                state, holder = POOL, None
                assert checkpoint["token"] == (token or None)
            else:
                raise AssertionError(f"unexpected {kind} on item {item_id}")
        return state, holder, token, attempts


@pytest.mark.django_db
def test_random_interleavings_keep_every_invariant():
    SEEN.clear()
    run_state_machine_as_test(
        BoardMachine,
        settings=settings(
            max_examples=40, stateful_step_count=50, deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
        ),
    )
    print(dict(sorted(SEEN.items())))
    # Guard against a machine that silently explores nothing (rule subsets vary per example:
    # Hypothesis' swarm testing), so only what every run reaches is required here.
    assert {"wrote: claimed", "wrote: completed", "wrote: abandoned", "refused: ClaimLost",
            "refused: NotAvailable", "wrote: reassigned", "wrote: reset"} <= set(SEEN), SEEN
