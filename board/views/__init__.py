"""The board, a run's page, launch and trail export, and the managers' push actions.

Views are thin: parse, fetch through accounts.access (404 outside the user's teams, 403 when
visible but not allowed), call one service, render. Domain errors become responses in one
place, `board_action` (board.views.common): for htmx the flash fragment with the error's
status (409/422), for a plain form post a message and a 303 back to the page the form came
from. Item actions run through `run_once` (board.idempotency), keyed by the form's hidden
`idempotency_key`, so a double click or a resent form answers with the first outcome instead
of acting twice.

Managers' actions (push a run, restart it from a step, cancel it, assign a stuck item) go the
same way: the form only names what the manager chose; board.push decides from the database
as it is when the action runs, so a form opened minutes ago never undoes newer work.
"""

from board.views.board import (
    board,
    claim_next,
    item_abandon,
    item_assign,
    item_claim,
    item_complete,
    item_extend,
    item_requeue,
    item_skip,
)
from board.views.launch import launch, launch_recommendation
from board.views.runs import (
    run_cancel,
    run_detail,
    run_list,
    run_reassign,
    run_restart,
    trail_export,
)

__all__ = [
    "board", "claim_next", "item_abandon", "item_assign", "item_claim", "item_complete",
    "item_extend", "item_requeue", "item_skip", "launch", "launch_recommendation",
    "run_cancel", "run_detail", "run_list", "run_reassign", "run_restart", "trail_export",
]
