"""Every write and state transition of runs and items.

Transitions are compare-and-set statements (`filter(state=…, token=…).update(…)` or one
conditional UPDATE for claims) followed by exactly one checkpoint in the same transaction, so
the board and its trail never disagree. Celery timers are enqueued only after commit.

One module per part of the story: checkpoints (the trail's writer), launch, assignment (whom
a push may go to, and the email), claims, holder (complete, abandon, extend, the lease
timer), sweep, stuck_lane; board.push has the managers' push, restart and cancel. Callers
import from here.
"""

from board.services.checkpoints import CLI_ACTOR, TIMER_ACTOR, checkpoint_append
from board.services.claims import CLAIM_TIME_RELEASE_LIMIT, item_claim, item_claim_next
from board.services.holder import item_abandon, item_complete, item_expire, item_extend
from board.services.launch import recommend_mode, run_launch, run_launch_once
from board.services.stuck_lane import item_requeue, item_skip
from board.services.sweep import leases_sweep

__all__ = [
    "CLAIM_TIME_RELEASE_LIMIT", "CLI_ACTOR", "TIMER_ACTOR", "checkpoint_append", "item_abandon",
    "item_claim", "item_claim_next", "item_complete", "item_expire", "item_extend",
    "item_requeue", "item_skip", "leases_sweep", "recommend_mode", "run_launch",
    "run_launch_once",
]
