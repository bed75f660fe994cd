"""Idempotent actions (DESIGN.md, invariant 4), for the web views and the API alike.

A mutating request carries a key chosen by its client: the hidden `idempotency_key` field,
generated afresh each time a form is rendered, or the API's `Idempotency-Key` header. The same
user sending the same key again (a double click, a retry after a network error) gets the first
outcome back and nothing is written a second time.

`run_once` reserves the key and runs the action in ONE transaction:

1. It inserts the key row first (ON CONFLICT DO NOTHING). A concurrent request with the same
   key then waits on the unique index (PostgreSQL) or at BEGIN IMMEDIATE (SQLite) until the
   first one commits, finds the row and replays it: two identical requests at the same
   moment act once.
2. It runs the action in a savepoint, so a domain error leaves no partial write behind.
3. It stores the outcome, status and JSON body, in the key row before committing, a domain
   error's (409/422) included, so a replay answers with the same status and message.

The same key with a different request (method, path or body) is refused with 422: that is a
client bug, and answering with another request's outcome would mislead it. Nothing is stored
for a request that never reached the action (input rejected up front, access refused) nor for
a crash: the transaction rolls back with it, and a retry runs the action.
"""

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from accounts.models import User
from board.errors import BoardError, InvalidInput
from board.models import IdempotencyKey

MAX_KEY_LENGTH = 255


@dataclass(frozen=True)
class Outcome:
    """What an action answered: an HTTP status and a JSON-serialisable body (None: empty)."""

    status: int
    body: Any = None
    replayed: bool = False


class ReplayedError(BoardError):
    """A domain error answered again from its stored outcome, with its first status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


def request_fingerprint(method: str, path: str, body: Any) -> str:
    """sha256 of the method, the path and the body in canonical JSON (sorted keys)."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(f"{method.upper()} {path}\n{canonical}".encode()).hexdigest()


def run_once(
    *, user: User, key: str, fingerprint: str, action: Callable[[], Outcome]
) -> Outcome:
    """Run `action` unless this user already sent this key; either way, the first outcome.

    A domain error (BoardError) is stored and then raised, the first time as itself, on a
    replay as a ReplayedError with the same status and message, so each interface keeps
    turning errors into responses in its one place.
    """
    if not key:
        raise InvalidInput(
            "This request has no idempotency key: web forms carry one (reload the page), API "
            "calls send an Idempotency-Key header with a fresh value for each action."
        )
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput(f"An idempotency key is at most {MAX_KEY_LENGTH} characters long.")
    failure: BoardError | None = None
    with transaction.atomic():
        row, reserved = _reserve(user=user, key=key, fingerprint=fingerprint)
        if not reserved:
            if row.fingerprint != fingerprint:
                raise InvalidInput(
                    "This idempotency key was already used for a different request: send a "
                    "new key for a new action, and the same key only to retry the same one."
                )
        else:
            try:
                with transaction.atomic():
                    outcome = action()
            except BoardError as error:
                failure = error
                outcome = Outcome(error.status, {"detail": error.message})
            row.status, row.body = outcome.status, outcome.body
            IdempotencyKey.objects.filter(pk=row.pk).update(status=row.status, body=row.body)
    if not reserved:
        if row.status >= 400:
            raise ReplayedError(row.body["detail"], row.status)
        return Outcome(row.status, row.body, replayed=True)
    if failure is not None:
        raise failure
    return outcome


def _reserve(*, user: User, key: str, fingerprint: str) -> tuple[IdempotencyKey, bool]:
    """Insert the key row, or fetch the one a first request committed: (row, inserted).

    ON CONFLICT DO NOTHING instead of catching the unique violation, which would abort the
    transaction unless the insert had a savepoint of its own (two more round trips). On
    PostgreSQL the insert waits for a concurrent first request to commit; the SELECT then
    sees its row (READ COMMITTED takes a fresh snapshot per statement)."""
    now = timezone.now()
    with connection.cursor() as cursor:
        cursor.execute(_RESERVE_SQL, [
            user.pk, key, fingerprint, connection.ops.adapt_datetimefield_value(now),
        ])
        inserted = cursor.fetchone()
    if inserted is None:
        return IdempotencyKey.objects.get(user=user, key=key), False
    return IdempotencyKey(pk=inserted[0], user=user, key=key, fingerprint=fingerprint,
                          created_at=now), True


_RESERVE_SQL = f"""
    INSERT INTO {IdempotencyKey._meta.db_table} (user_id, key, fingerprint, created_at)
    VALUES (%s, %s, %s, %s)
    ON CONFLICT (user_id, key) DO NOTHING
    RETURNING id
"""


def idempotency_keys_purge(*, now: datetime | None = None) -> int:
    """Forget the keys older than IDEMPOTENCY_KEY_RETENTION_HOURS; returns how many."""
    cutoff = (now or timezone.now()) - timedelta(hours=settings.IDEMPOTENCY_KEY_RETENTION_HOURS)
    deleted, _ = IdempotencyKey.objects.filter(created_at__lt=cutoff).delete()
    return deleted
