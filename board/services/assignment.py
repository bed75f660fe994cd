"""Whom a run or an item may be pushed to, how that target is named, and the email telling
them: shared by the launch (a run pushed from the start) and board.push."""

import logging

from django.conf import settings
from django.core.mail import send_mail
from django.db import transaction
from django.urls import reverse

from accounts import access
from accounts.access import Capability, team_ids
from accounts.models import Team, User
from board.errors import InvalidInput
from board.models import Item, Run

log = logging.getLogger(__name__)


def target_name(assignee: User | None, assigned_team: Team | None) -> str:
    if assignee is not None:
        return assignee.display_name
    if assigned_team is not None:
        return f"team {assigned_team.name}"
    return "the shared pool"


def assignment_check(*, team: Team, assignee: User | None, assigned_team: Team | None,
                     actor: User | None) -> None:
    """A run of `team` may be pushed to one of its staff, or to a team its manager manages
    (the run's own team included); InvalidInput saying why not otherwise."""
    if assignee is not None and assigned_team is not None:
        raise InvalidInput("Push to one person or to one team, not both.")
    if assignee is not None and not assignee.is_active:
        raise InvalidInput(f"{assignee.display_name}'s account is deactivated: push the run to "
                           "someone who can sign in.")
    if assignee is not None and team.pk not in team_ids(assignee, Capability.WORK):
        raise InvalidInput(
            f"{assignee.display_name} is not staff on {team.name}: push the run to someone "
            "who works for its team."
        )
    if assigned_team is not None and actor is not None and assigned_team.pk != team.pk and \
            assigned_team.pk not in team_ids(actor, Capability.MANAGE):
        raise InvalidInput(
            f"You do not manage {assigned_team.name}: push the run to its own team or to one "
            "you manage."
        )


def notify_assignment(*, run: Run, actor: User | None, reason: str, launched: bool = False,
                      item: Item | None = None, assignee: User | None = None) -> None:
    """Email the person (or the staff of the team) a run or item was pushed to, once the
    push has committed. The board shows the push on its own; mail is the extra, so a mail
    server that fails is logged, never the push undone."""
    person = assignee or run.assignee
    team = None if person else run.assigned_team
    if person is None and team is None:
        return
    who = actor.display_name if actor else "The alerting system"
    what = f"“{item.title}” of “{run.title}”" if item else f"“{run.title}”"
    to = "you" if person else f"team {team.name}"
    subject = f"[Pullboard] {what} {'was launched for' if launched else 'is pushed to'} {to}"
    link = settings.PULLBOARD_BASE_URL + reverse("board:board")
    done = f"{who} launched {what} and pushed it to {to}" if launched else \
        f"{who} pushed {what} to {to}"
    because = f": {reason.strip()}" if reason and reason.strip() else ""
    body = (f"{done}{because}.\n\n"
            f"Its items come first when you press Claim next on the board:\n{link}\n")

    def send() -> None:
        recipients = [person] if person else access.team_members(team, Capability.WORK)
        addresses = sorted({user.email for user in recipients if user.email and user.is_active})
        if not addresses:
            return
        try:
            send_mail(subject, body, settings.DEFAULT_FROM_EMAIL, addresses)
        except Exception:  # noqa: BLE001 - the push is done; the board shows it anyway
            log.warning("could not email the push of run %s to %s", run.pk, addresses,
                        exc_info=True)

    transaction.on_commit(send)
