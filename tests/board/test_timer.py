"""Lease expiry through a real Celery worker and the real broker (filesystem by default,
Redis in the PostgreSQL run of CI)."""

import time
from datetime import timedelta

import pytest

from board.models import Checkpoint, ItemState
from board.services import item_claim_next


@pytest.mark.worker
@pytest.mark.django_db(transaction=True)
def test_claim_with_two_second_lease_returns_to_pool_with_expired_checkpoint(
    celery_worker_process, make_runbook, make_run, staff
):
    run = make_run(runbook=make_runbook(lease=timedelta(seconds=2)))
    item = item_claim_next(actor=staff, run=run)
    claimed_token = item.token

    deadline = time.monotonic() + 2 + 10
    while time.monotonic() < deadline:
        item.refresh_from_db()
        if item.state != ItemState.CLAIMED:
            break
        time.sleep(0.2)

    assert item.state == ItemState.AVAILABLE, celery_worker_process.log()
    assert item.holder is None and item.lease_expires_at is None
    assert item.attempts == 1
    trail = list(Checkpoint.objects.filter(item=item).values_list("kind", "token", "actor"))
    assert trail == [("claimed", claimed_token, staff.pk), ("expired", claimed_token, None)]
    assert "lease ran out" in celery_worker_process.log()
