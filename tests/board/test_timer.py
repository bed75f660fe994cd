"""Lease expiry through a real Celery worker and the real broker (filesystem by default,
Redis in the PostgreSQL run of CI)."""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from board.models import Checkpoint, Item, ItemState
from board.services import item_abandon, item_claim_next, item_complete
from board.tasks import expire_claim
from tests.processes import wait_until


def timer_ran(worker, item_id: int, token: int, outcome: str):
    return lambda: f"item {item_id} token {token}: {outcome}" in worker.log()


def trail(item) -> list[tuple[str, int | None, str]]:
    return list(Checkpoint.objects.filter(item=item).order_by("id")
                .values_list("kind", "token", "actor_name"))


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_claim_with_two_second_lease_returns_to_pool_with_expired_checkpoint(
    celery_worker_process, make_runbook, make_run, staff
):
    run = make_run(runbook=make_runbook(lease=timedelta(seconds=2)))
    item = item_claim_next(actor=staff, run=run)
    claimed_token = item.token

    # Back in the pool within the lease + 5 s (the filesystem broker polls about once a second).
    wait_until(lambda: Item.objects.get(pk=item.pk).state != ItemState.CLAIMED,
               timeout=2 + 5, what="the item back in the pool", log=celery_worker_process.log)

    item.refresh_from_db()
    assert item.state == ItemState.AVAILABLE, celery_worker_process.log()
    assert item.holder is None and item.lease_expires_at is None
    assert item.attempts == 1
    trail = list(Checkpoint.objects.filter(item=item).values_list("kind", "token", "actor"))
    assert trail == [("claimed", claimed_token, staff.pk), ("expired", claimed_token, None)]
    assert "lease ran out" in celery_worker_process.log()


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_a_claim_completed_before_its_timer_fires_is_left_done(
    celery_worker_process, make_runbook, make_run, staff
):
    run = make_run(runbook=make_runbook(lease=timedelta(seconds=2)))
    item = item_claim_next(actor=staff, run=run)
    time.sleep(1)
    item_complete(item_id=item.pk, token=item.token, actor=staff)

    wait_until(timer_ran(celery_worker_process, item.pk, item.token, "claim no longer live"),
               timeout=20, what="the timer to run", log=celery_worker_process.log)

    item.refresh_from_db()
    assert item.state == ItemState.DONE
    assert trail(item) == [("claimed", 1, "sam"), ("completed", 1, "sam")]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_the_timer_of_an_abandoned_claim_leaves_the_next_holders_claim_alone(
    celery_worker_process, make_runbook, make_run, staff, teammate
):
    run = make_run(runbook=make_runbook(lease=timedelta(seconds=2)))
    first = item_claim_next(actor=staff, run=run)
    item_abandon(item_id=first.pk, token=first.token, actor=staff, reason="wrong host")
    second = item_claim_next(actor=teammate, run=run)
    assert (second.pk, second.token) == (first.pk, 2)
    # The teammate is still on it (as if they had extended), so neither timer may release it.
    Item.objects.filter(pk=second.pk).update(lease_expires_at=timezone.now() + timedelta(hours=1))

    for claim in (first, second):
        wait_until(timer_ran(celery_worker_process, claim.pk, claim.token, "claim no longer live"),
                   timeout=20, what="the timer to run", log=celery_worker_process.log)

    second.refresh_from_db()
    assert (second.state, second.holder_id, second.token) == (ItemState.CLAIMED, teammate.pk, 2)
    assert trail(second) == [("claimed", 1, "sam"), ("abandoned", 1, "sam"),
                             ("claimed", 2, "tia")]


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_an_expiry_delivered_three_times_expires_the_claim_once(
    celery_worker_process, make_runbook, make_run, staff
):
    run = make_run(runbook=make_runbook(lease=timedelta(seconds=1)))
    item = item_claim_next(actor=staff, run=run)
    # The outbox sends one timer; the broker redelivers it twice more (a lost ack, a restart).
    for _ in range(2):
        expire_claim.apply_async((item.pk, item.token), eta=item.lease_expires_at)

    wait_until(lambda: celery_worker_process.log().count(f"item {item.pk} token 1: ") >= 3,
               timeout=20, what="three deliveries", log=celery_worker_process.log)

    item.refresh_from_db()
    assert (item.state, item.attempts) == (ItemState.AVAILABLE, 1)
    assert trail(item) == [("claimed", 1, "sam"), ("expired", 1, "lease timer")]
    assert celery_worker_process.log().count(f"item {item.pk} token 1: lease ran out") == 1
