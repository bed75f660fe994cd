"""The stuck lane: a manager requeues an item with fresh attempts, or skips an open item."""


from django.db import transaction
from django.db.models import Case, F, PositiveBigIntegerField, When
from django.utils import timezone

from accounts.models import User
from board.errors import InvalidInput, NotAvailable
from board.models import (
    FINISHED_STATES,
    CheckpointKind,
    Item,
    ItemState,
    RunState,
)
from board.services.checkpoints import checkpoint_append
from board.services.claims import lock_run_of
from board.services.holder import complete_run_if_finished, unlock_dependents


@transaction.atomic
def item_requeue(*, item_id: int, actor: User, reason: str = "") -> Item:
    """A manager sends a stuck item back to the pool with a fresh set of attempts."""
    lock_run_of(item_id)
    item = Item.objects.select_related("run").filter(pk=item_id).first()
    if item is None:
        raise NotAvailable("That item no longer exists.")
    if item.state == ItemState.STUCK and item.run.state != RunState.ACTIVE:
        raise NotAvailable(f"“{item.run.title}” is {item.run.get_state_display().lower()}: "
                           "its items can no longer be requeued.")
    state = (
        ItemState.WAITING
        if item.prerequisites.exclude(state__in=FINISHED_STATES).exists()
        else ItemState.AVAILABLE
    )
    changed = Item.objects.filter(pk=item_id, state=ItemState.STUCK).update(
        state=state, attempts=0
    )
    if changed != 1:
        raise NotAvailable(f"“{item.title}” is {item.get_state_display().lower()}, not stuck.")
    checkpoint_append(
        run_id=item.run_id, kind=CheckpointKind.REQUEUED, actor=actor, item_id=item_id,
        reason=reason.strip(), data={"attempts_before": item.attempts, "state": state},
    )
    item.refresh_from_db()
    return item


@transaction.atomic
def item_skip(*, item_id: int, actor: User, reason: str, expected_state: str = "") -> Item:
    """A manager decides an open item is not needed; items waiting on it may now start.
    `expected_state`: only if the item is still in it (a form from the stuck lane)."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Say why this item is skipped: a reason is required.")
    now = timezone.now()
    lock_run_of(item_id)
    item = Item.objects.select_related("run", "holder").filter(pk=item_id).first()
    if item is None:
        raise NotAvailable("That item no longer exists.")
    if item.run.state != RunState.ACTIVE and item.state not in FINISHED_STATES:
        raise NotAvailable(f"“{item.run.title}” is {item.run.get_state_display().lower()}: "
                           "its items can no longer be skipped.")
    if expected_state and item.state != expected_state:
        raise NotAvailable(f"“{item.title}” is {item.get_state_display().lower()} now, no "
                           f"longer {ItemState(expected_state).label.lower()}: reload and "
                           "look again.")
    changed = Item.objects.filter(
        pk=item_id, state__in=[ItemState.WAITING, ItemState.AVAILABLE, ItemState.STUCK,
                               ItemState.CLAIMED],
    ).update(
        state=ItemState.SKIPPED, holder=None, lease_expires_at=None, finished_at=now,
        # A live claim is revoked: the holder's token is no longer the current one.
        token=Case(
            When(state=ItemState.CLAIMED, then=F("token") + 1), default=F("token"),
            output_field=PositiveBigIntegerField(),
        ),
    )
    if changed != 1:
        raise NotAvailable(f"“{item.title}” is already {item.get_state_display().lower()}.")
    revoked = {"revoked_token": item.token, "revoked_from": item.holder.display_name} \
        if item.state == ItemState.CLAIMED else {}
    item.refresh_from_db()
    checkpoint_append(
        run_id=item.run_id, kind=CheckpointKind.SKIPPED, actor=actor, item_id=item_id,
        token=item.token, reason=reason, at=now,
        data={"unlocked": unlock_dependents(item), **revoked},
    )
    complete_run_if_finished(item.run, actor=actor, now=now)
    return item
