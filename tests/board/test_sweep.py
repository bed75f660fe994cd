"""The periodic sweep: every lapsed claim released once, in bounded batches of a fixed
number of statements, exactly as the per-claim timer releases it."""

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from board.errors import NothingToClaim
from board.models import Checkpoint, CheckpointKind, Item, ItemState, Run
from board.services import item_claim, item_claim_next, item_expire, leases_sweep

PARALLEL = "---\nflow: parallel\n---\n# Flush\n\n" + "".join(f"- Node {n}\n" for n in range(25))


@pytest.fixture
def lapsed(make_runbook, make_run, staff):
    """A run of 25 items, 20 of them claimed, all of whose leases have run out by `later`."""
    run = make_run(runbook=make_runbook(PARALLEL, filename="flush.md"))
    Run.objects.filter(pk=run.pk).update(wip_limit=100)
    claims = [item_claim_next(actor=staff, run=run) for _ in range(20)]
    later = timezone.now() + run.lease_duration + timedelta(seconds=1)
    return run, claims, later


def test_the_sweep_releases_every_lapsed_claim_with_one_expired_checkpoint(lapsed):
    run, claims, later = lapsed

    assert leases_sweep(now=later, batch_size=7) == 20

    assert Item.objects.filter(run=run, state=ItemState.CLAIMED).count() == 0
    assert set(Item.objects.filter(pk__in=[c.pk for c in claims]).values_list(
        "state", "holder", "attempts", "lease_expires_at", "claimed_at", "token"
    )) == {(ItemState.AVAILABLE, None, 1, None, None, 1)}
    expired = Checkpoint.objects.filter(run=run, kind=CheckpointKind.EXPIRED)
    assert sorted(expired.values_list("item_id", flat=True)) == sorted(c.pk for c in claims)
    assert {(c.token, c.actor_id, c.actor_name, c.at, c.data["attempts"]) for c in expired} == {
        (1, None, "lease timer", later, 1)
    }
    assert leases_sweep(now=later) == 0  # a second sweep finds nothing


def test_the_sweep_leaves_live_leases_and_respects_the_grace(lapsed):
    run, claims, later = lapsed

    assert leases_sweep(now=later, grace=timedelta(minutes=5)) == 0
    assert leases_sweep(now=later - timedelta(minutes=30)) == 0

    assert Item.objects.filter(run=run, state=ItemState.CLAIMED).count() == 20
    assert not Checkpoint.objects.filter(run=run, kind=CheckpointKind.EXPIRED).exists()


def test_a_lapse_that_uses_up_the_attempts_goes_to_the_stuck_lane(lapsed):
    run, claims, later = lapsed
    Run.objects.filter(pk=run.pk).update(max_attempts=3)
    Item.objects.filter(pk=claims[0].pk).update(attempts=2)

    leases_sweep(now=later)

    stuck = Item.objects.get(pk=claims[0].pk)
    assert (stuck.state, stuck.attempts, stuck.holder) == (ItemState.STUCK, 3, None)
    checkpoint = Checkpoint.objects.get(item=stuck, kind=CheckpointKind.STUCK)
    assert checkpoint.data == {"attempts": 3, "cause": "expired"}
    assert not Checkpoint.objects.filter(item=stuck, kind=CheckpointKind.EXPIRED).exists()


def test_the_sweep_and_the_timer_release_a_claim_the_same_way(lapsed, make_runbook, make_run,
                                                              staff):
    run, claims, later = lapsed
    item_expire(item_id=claims[0].pk, token=claims[0].token, now=later)
    by_timer = Checkpoint.objects.get(item_id=claims[0].pk, kind=CheckpointKind.EXPIRED)

    leases_sweep(now=later)
    by_sweep = Checkpoint.objects.get(item_id=claims[1].pk, kind=CheckpointKind.EXPIRED)

    fields = ("kind", "token", "actor_id", "actor_name", "reason", "data", "at")
    assert [getattr(by_sweep, f) for f in fields] == [getattr(by_timer, f) for f in fields]
    assert Item.objects.get(pk=claims[0].pk).attempts == Item.objects.get(pk=claims[1].pk).attempts


def test_each_batch_costs_a_fixed_number_of_statements(lapsed):
    run, claims, later = lapsed
    # SQLite: choose the batch (oldest first), release it, write its checkpoints in that order.
    per_batch = 1 if connection.vendor == "postgresql" else 3

    # 20 lapsed claims in batches of 8: 8, 8 and a last batch of 4 that ends the sweep.
    with CaptureQueriesContext(connection) as captured:
        assert leases_sweep(now=later, batch_size=8) == 20

    # (The test's own transaction turns each batch's transaction into a savepoint.)
    statements = [q["sql"] for q in captured.captured_queries
                  if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
    assert len(statements) == 3 * per_batch, statements


# --- No freeze without the broker: claims lapsed beyond the grace come back at claim time ----

ONE_STEP = "# Restart the queue\n\n- Restart the queue consumer\n"
T0 = datetime(2026, 12, 4, 9, 0, tzinfo=UTC)


@pytest.fixture
def lapsing_claim(make_runbook, make_run, staff):
    """The only item of a run, claimed by staff at T0 with a 15-minute lease and no timer or
    sweep running afterwards (as when the broker is down)."""
    run = make_run(runbook=make_runbook(ONE_STEP, filename="one.md"))
    with time_machine.travel(T0, tick=False):
        claim = item_claim_next(actor=staff, run=run)
    return run, claim


def trail(run) -> list[tuple[str, int | None, str]]:
    return list(Checkpoint.objects.filter(run=run).exclude(kind=CheckpointKind.LAUNCHED)
                .order_by("id").values_list("kind", "token", "actor_name"))


def test_a_claim_lapsed_within_the_grace_is_not_taken_back(lapsing_claim, teammate, settings):
    run, claim = lapsing_claim
    settings.LEASE_GRACE = timedelta(minutes=2)

    with time_machine.travel(T0 + timedelta(minutes=16), tick=False):
        with pytest.raises(NothingToClaim):
            item_claim_next(actor=teammate)

    assert Item.objects.get(pk=claim.pk).holder_id == claim.holder_id
    assert trail(run) == [("claimed", 1, "sam")]


@pytest.mark.parametrize("how", ["next", "this item"])
def test_a_claim_lapsed_beyond_the_grace_is_taken_back_at_claim_time(
    lapsing_claim, teammate, settings, how
):
    run, claim = lapsing_claim
    settings.LEASE_GRACE = timedelta(minutes=2)
    later = T0 + timedelta(minutes=17, seconds=1)

    with time_machine.travel(later, tick=False):
        if how == "next":
            taken = item_claim_next(actor=teammate)
        else:
            taken = item_claim(item=Item.objects.get(pk=claim.pk), actor=teammate)

    assert (taken.pk, taken.holder_id, taken.token, taken.attempts) == (
        claim.pk, teammate.pk, 2, 1
    )
    assert trail(run) == [("claimed", 1, "sam"), ("expired", 1, "lease timer"),
                          ("claimed", 2, "tia")]
    assert Checkpoint.objects.get(run=run, kind=CheckpointKind.EXPIRED).at == later


def test_a_claim_takes_back_only_its_own_teams_lapsed_claims(
    lapsing_claim, make_runbook, make_run, other_team, outsider, make_user, settings
):
    run, claim = lapsing_claim
    settings.LEASE_GRACE = timedelta(minutes=2)
    payments_lead = make_user("pia", team="payments")
    theirs = make_run(runbook=make_runbook(ONE_STEP, filename="one.md", owner=other_team),
                      title="INC-9 payments")
    with time_machine.travel(T0, tick=False):
        item_claim_next(actor=payments_lead, run=theirs)

    with time_machine.travel(T0 + timedelta(minutes=30), tick=False):
        taken = item_claim_next(actor=outsider)

    assert taken.run_id == theirs.pk
    assert trail(theirs) == [("claimed", 1, "pia"), ("expired", 1, "lease timer"),
                             ("claimed", 2, "otto")]
    # The ops claim lapsed just as long, but nobody of ops has claimed since.
    assert trail(run) == [("claimed", 1, "sam")]
    assert Item.objects.get(pk=claim.pk).state == ItemState.CLAIMED
