"""Celery tasks: thin adapters that take ids and tokens, call one service and say what they
did. Each is idempotent: a redelivered or stale timer finds nothing to do."""

from celery import shared_task

from board.health import SWEEP_HEARTBEAT, heartbeat_record
from board.idempotency import idempotency_keys_purge
from board.services import item_expire, leases_sweep


@shared_task(name="board.tasks.expire_claim")
def expire_claim(item_id: int, token: int) -> str:
    item = item_expire(item_id=item_id, token=token)
    if item is None:
        return f"item {item_id} token {token}: claim no longer live, nothing to do"
    return f"item {item_id} token {token}: lease ran out, now {item.state}"


@shared_task(name="board.tasks.expire_claims")
def expire_claims(claims: list[list[int]]) -> str:
    """The lease timers of several claims whose leases ended within the same moment
    (board/timers.py); each is expired, or found no longer live, on its own."""
    return "; ".join(expire_claim(item_id, token) for item_id, token in claims)


@shared_task(name="board.tasks.sweep_expired_leases")
def sweep_expired_leases() -> str:
    outcome = f"expired {leases_sweep()} stale claims"
    heartbeat_record(name=SWEEP_HEARTBEAT, detail=outcome)
    return outcome


@shared_task(name="board.tasks.purge_idempotency_keys")
def purge_idempotency_keys() -> str:
    return f"forgot {idempotency_keys_purge()} idempotency keys past their retention"
