"""The periodic sweep: every lapsed claim released once, in bounded batches of a fixed
number of statements, exactly as the per-claim timer releases it."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from board.models import Checkpoint, CheckpointKind, Item, ItemState, Run
from board.services import item_claim_next, item_expire, leases_sweep

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
    per_batch = 1 if connection.vendor == "postgresql" else 2

    # 20 lapsed claims in batches of 8: 8, 8 and a last batch of 4 that ends the sweep.
    with CaptureQueriesContext(connection) as captured:
        assert leases_sweep(now=later, batch_size=8) == 20

    # (The test's own transaction turns each batch's transaction into a savepoint.)
    statements = [q["sql"] for q in captured.captured_queries
                  if not q["sql"].startswith(("SAVEPOINT", "RELEASE SAVEPOINT"))]
    assert len(statements) == 3 * per_batch, statements
