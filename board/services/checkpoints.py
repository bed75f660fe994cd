"""The trail's one writer: append a checkpoint, and the names of the actors with no user
behind them."""

from datetime import datetime

from django.utils import timezone

from accounts.models import User
from board.models import (
    Checkpoint,
)

TIMER_ACTOR = "lease timer"
# The name recorded for actions taken by a management command (no user behind them).
CLI_ACTOR = "command line"




def checkpoint_append(
    *,
    run_id: int,
    kind: str,
    actor: User | None,
    item_id: int | None = None,
    token: int | None = None,
    reason: str = "",
    data: dict | None = None,
    at: datetime | None = None,
    actor_name: str | None = None,
) -> Checkpoint:
    """Append one event to a run's trail. `actor_name` overrides the snapshot for events with
    no user behind them that are not the lease timer's (a management command)."""
    return Checkpoint.objects.create(
        run_id=run_id,
        item_id=item_id,
        kind=kind,
        at=at or timezone.now(),
        actor=actor,
        actor_name=actor_name or (actor.display_name if actor else TIMER_ACTOR),
        token=token,
        reason=reason,
        data=data or {},
    )
