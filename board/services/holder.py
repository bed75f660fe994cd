"""What the holder of a claim does with it (complete, abandon, extend), what the lease timer
does when it lapses, and what a stale token is told."""

from datetime import datetime

from django.db import transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from accounts.models import User
from board.errors import ClaimLost, InvalidInput
from board.models import (
    FINISHED_STATES,
    Checkpoint,
    CheckpointKind,
    Item,
    ItemState,
    Run,
    RunState,
)
from board.services.checkpoints import checkpoint_append
from board.services.claims import lock_run_of, schedule_expiry

# --- Holder actions -------------------------------------------------------------------------


def _stale_token_message(item_id: int, token: int, actor: User) -> str:
    """Say what became of a claim whose token is no longer the live one."""
    item = Item.objects.select_related("holder").filter(pk=item_id).first()
    if item is None:
        return "That item no longer exists."
    if not 0 < token <= item.token:
        return f"Token {token} was never issued for “{item.title}”: act with your claim's token."
    revoked = _revocation_message(item, token)
    if revoked:
        return revoked
    last_end = (
        Checkpoint.objects.filter(
            item_id=item_id, token=token,
            kind__in=[CheckpointKind.EXPIRED, CheckpointKind.STUCK, CheckpointKind.ABANDONED,
                      CheckpointKind.COMPLETED],
        )
        .order_by("-id")
        .first()
    )
    why = ""
    if last_end and last_end.kind in (CheckpointKind.EXPIRED, CheckpointKind.STUCK) and \
            last_end.actor is None:
        local = timezone.localtime(last_end.at)
        why = f"Your lease ran out at {local:%H:%M} ({local:%Z}). "
    elif last_end and last_end.kind == CheckpointKind.ABANDONED:
        why = "That claim was abandoned. "
    if item.state == ItemState.CLAIMED and item.holder_id == actor.pk and item.token != token:
        first = Checkpoint.objects.filter(
            item_id=item_id, token=token, kind=CheckpointKind.CLAIMED
        ).values_list("actor_id", "actor_name").first()
        if first and first[0] != actor.pk:
            return why + (f"Token {token} was {first[1]}'s claim, not yours: you hold "
                          f"“{item.title}” with token {item.token}.")
        return why + "You have claimed this item again since; reload to act on the new claim."
    if item.state == ItemState.CLAIMED:
        return why + f"“{item.title}” is now held by {item.holder.display_name}."
    if item.state == ItemState.AVAILABLE:
        return why + f"“{item.title}” is back in the pool."
    if item.state == ItemState.DONE:
        return why + f"“{item.title}” is already done."
    return why + f"“{item.title}” is now {item.get_state_display().lower()}."


# What a manager's action that took a claim away says to its holder; by the checkpoint kind.
_REVOKED_BY = {
    CheckpointKind.REASSIGNED: "{actor} pushed {what} to {to}",
    CheckpointKind.RESET: "{actor} restarted the run from step {from_position}",
    CheckpointKind.SKIPPED: "{actor} skipped it",
    CheckpointKind.RUN_CANCELLED: "{actor} cancelled the run",
}


def _revocation_message(item: Item, token: int) -> str:
    """Who took the claim with this token away from its holder, and why; "" if no one did."""
    taken = Checkpoint.objects.filter(
        item_id=item.pk, data__revoked_token=token,
        kind__in=[CheckpointKind.REASSIGNED, CheckpointKind.RESET, CheckpointKind.SKIPPED],
    ).order_by("-id").first()
    if taken is None:
        cancelled = Checkpoint.objects.filter(
            run_id=item.run_id, kind=CheckpointKind.RUN_CANCELLED
        ).order_by("-id").first()
        if cancelled is None or not any(
            revoked.get("item") == item.pk and revoked.get("revoked_token") == token
            for revoked in cancelled.data.get("revoked", [])
        ):
            return ""
        taken = cancelled
    data = taken.data
    what = _REVOKED_BY[taken.kind].format(
        actor=taken.actor_name, what="the run" if data.get("scope") == "run" else "it",
        to=data.get("to", "someone else"), from_position=data.get("from_position"),
    )
    because = f": “{taken.reason}”" if taken.reason else ""
    return f"Your claim on “{item.title}” was taken back: {what}{because}."


@transaction.atomic
def item_complete(*, item_id: int, token: int, actor: User, note: str = "") -> Item:
    """Finish a claimed item. The holder's token must still be the live one; a lease that ran
    out but was not taken by anyone is still the holder's to complete."""
    now = timezone.now()
    lock_run_of(item_id)
    changed = Item.objects.filter(
        pk=item_id, state=ItemState.CLAIMED, token=token, holder=actor
    ).update(state=ItemState.DONE, holder=None, lease_expires_at=None, finished_at=now)
    if changed != 1:
        raise ClaimLost(_stale_token_message(item_id, token, actor))
    item = Item.objects.select_related("run").get(pk=item_id)
    checkpoint_append(
        run_id=item.run_id, kind=CheckpointKind.COMPLETED, actor=actor, item_id=item_id,
        token=token, reason=note.strip(), at=now,
        data={"unlocked": unlock_dependents(item)},
    )
    complete_run_if_finished(item.run, actor=actor, now=now)
    return item


def unlock_dependents(item: Item) -> list[int]:
    """Make available the waiting items whose last open prerequisite was `item`."""
    ready = list(
        item.dependents.filter(state=ItemState.WAITING)
        .exclude(prerequisites__state__in=[s for s in ItemState if s not in FINISHED_STATES])
        .values_list("pk", flat=True)
    )
    if ready:
        Item.objects.filter(pk__in=ready, state=ItemState.WAITING).update(
            state=ItemState.AVAILABLE
        )
    return sorted(ready)


def complete_run_if_finished(run: Run, *, actor: User | None, now: datetime) -> None:
    """Close the run when its last open item finishes; credited to whoever finished it."""
    if run.items.exclude(state__in=FINISHED_STATES).exists():
        return
    if Run.objects.filter(pk=run.pk, state=RunState.ACTIVE).update(
        state=RunState.COMPLETED, completed_at=now
    ):
        checkpoint_append(run_id=run.pk, kind=CheckpointKind.RUN_COMPLETED, actor=actor, at=now)


def _release(*, item_id: int, token: int, filters: dict, now: datetime) -> Item | None:
    """Return a live claim to the pool, or to the stuck lane when its attempts are used up."""
    item = Item.objects.select_related("run").filter(pk=item_id).first()
    if item is None:
        return None
    changed = Item.objects.filter(
        pk=item_id, state=ItemState.CLAIMED, token=token, **filters
    ).update(
        state=Case(
            When(attempts__gte=item.run.max_attempts - 1, then=Value(ItemState.STUCK)),
            default=Value(ItemState.AVAILABLE),
        ),
        attempts=F("attempts") + 1,
        holder=None,
        lease_expires_at=None,
        claimed_at=None,
    )
    if changed != 1:
        return None
    item.refresh_from_db(fields=["state", "attempts", "holder", "lease_expires_at"])
    return item


@transaction.atomic
def item_abandon(*, item_id: int, token: int, actor: User, reason: str) -> Item:
    """Give a claim back with a reason; too many attempts send the item to the stuck lane."""
    reason = reason.strip()
    if not reason:
        raise InvalidInput("Say why you are abandoning this item: a reason is required.")
    now = timezone.now()
    item = _release(item_id=item_id, token=token, filters={"holder": actor}, now=now)
    if item is None:
        raise ClaimLost(_stale_token_message(item_id, token, actor))
    stuck = item.state == ItemState.STUCK
    checkpoint_append(
        run_id=item.run_id,
        kind=CheckpointKind.STUCK if stuck else CheckpointKind.ABANDONED,
        actor=actor, item_id=item_id, token=token, reason=reason, at=now,
        data={"attempts": item.attempts, **({"cause": "abandoned"} if stuck else {})},
    )
    return item


@transaction.atomic
def item_expire(*, item_id: int, token: int, now: datetime | None = None) -> Item | None:
    """The lease timer: release the claim with this token if it is still live and its lease
    has really passed. A stale timer (completed, abandoned, re-claimed, extended) does
    nothing and returns None."""
    now = now or timezone.now()
    item = _release(item_id=item_id, token=token, filters={"lease_expires_at__lte": now}, now=now)
    if item is None:
        return None
    stuck = item.state == ItemState.STUCK
    checkpoint_append(
        run_id=item.run_id,
        kind=CheckpointKind.STUCK if stuck else CheckpointKind.EXPIRED,
        actor=None, item_id=item_id, token=token, at=now,
        data={"attempts": item.attempts, **({"cause": "expired"} if stuck else {})},
    )
    return item


@transaction.atomic
def item_extend(*, item_id: int, token: int, actor: User) -> Item:
    """"Still on it": push the lease out by one lease length, up to the run's cap (counted
    from the claim), so a claim cannot be held forever by pressing the button."""
    now = timezone.now()
    item = Item.objects.select_related("run").filter(pk=item_id).first()
    if item is None or item.state != ItemState.CLAIMED or item.token != token or \
            item.holder_id != actor.pk:
        raise ClaimLost(_stale_token_message(item_id, token, actor))
    cap = item.claimed_at + item.run.max_lease
    new_expiry = min(now + item.run.lease_duration, cap)
    if new_expiry <= item.lease_expires_at:
        local = timezone.localtime(cap)
        raise InvalidInput(
            f"This claim cannot be extended past {local:%H:%M} ({local:%Z}), the longest lease "
            "for this run: complete it, or abandon it so someone else can take over."
        )
    changed = Item.objects.filter(
        pk=item_id, state=ItemState.CLAIMED, token=token, holder=actor
    ).update(lease_expires_at=new_expiry)
    if changed != 1:
        raise ClaimLost(_stale_token_message(item_id, token, actor))
    item.lease_expires_at = new_expiry
    checkpoint_append(
        run_id=item.run_id, kind=CheckpointKind.EXTENDED, actor=actor, item_id=item_id,
        token=token, at=now, data={"lease_expires_at": new_expiry.isoformat()},
    )
    schedule_expiry(item)
    return item
