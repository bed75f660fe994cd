"""The board: the pool, My work, the holder actions and the stuck lane."""

from dataclasses import dataclass, field
from datetime import datetime

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied
from django.db.models import Max, Prefetch, Q
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts import access
from accounts.access import Capability
from accounts.models import Team, User
from board import push, services
from board.forms import (
    AbandonForm,
    AssignForm,
    ClaimActionForm,
    SkipForm,
)
from board.models import (
    Checkpoint,
    CheckpointKind,
    Item,
    ItemState,
    Run,
    RunState,
)
from board.views.common import (
    HttpResponseSeeOther,
    board_action,
    is_partial,
    login_required_htmx,
    next_url,
    run_once,
    valid_data,
)

# The lanes of a run on the board, in the order they are shown; done and skipped are counts.
LANES = (
    (ItemState.AVAILABLE, "Available"),
    (ItemState.WAITING, "Waiting"),
    (ItemState.CLAIMED, "Claimed"),
    (ItemState.STUCK, "Stuck"),
)


# --- Board ----------------------------------------------------------------------------------


@dataclass
class Lane:
    state: str
    label: str
    items: list[Item] = field(default_factory=list)


@dataclass
class RunCard:
    run: Run
    can_work: bool
    can_manage: bool
    lanes: list[Lane]
    total: int
    done: int
    skipped: int
    # The people a manager may hand a stuck item to; only read when the run has one.
    staff: list[User] = field(default_factory=list)

    @property
    def percent_finished(self) -> int:
        return round(100 * (self.done + self.skipped) / self.total) if self.total else 0


@dataclass
class PushNotice:
    """A run, or one item, pushed to the viewer or to one of their teams, and by whom."""

    run: Run
    item: Item | None
    to: str
    by: str
    reason: str
    at: datetime | None
    launched: bool = False


def items_with_prerequisites():
    return Item.objects.select_related("holder", "assignee", "assigned_team").prefetch_related(
        Prefetch("prerequisites", queryset=Item.objects.only("pk", "position", "title"))
    ).order_by("position")


def _target(thing: Run | Item) -> tuple[int | None, int | None]:
    return thing.assignee_id, thing.assigned_team_id


def mark_claimable(items: list[Item], user, work_team_ids: set[int] | frozenset[int]) -> None:
    """`claimable`: an available item the user may claim by hand. Items pushed to someone
    else are not theirs to take (the claim service refuses them): no button."""
    for item in items:
        item.claimable = item.state == ItemState.AVAILABLE and (
            (item.assignee_id is None and item.assigned_team_id is None)
            or item.assignee_id == user.pk or item.assigned_team_id in work_team_ids
        )


def team_staff(team: Team) -> list[User]:
    """The people a run of `team` may be pushed or assigned to: its staff, by name."""
    return sorted(access.team_members(team, Capability.WORK),
                  key=lambda user: (user.display_name.lower(), user.username))


def run_cards(user, work_team_ids: set[int], manage_team_ids: set[int]) -> list[RunCard]:
    """The active runs the user may see, each with its items sorted into lanes; claim buttons
    only on the runs the user works on (of `work_team_ids`, or pushed to one of them),
    stuck-lane actions on those of `manage_team_ids`."""
    runs = (
        access.visible_runs(user)
        .filter(state=RunState.ACTIVE)
        .select_related("team", "runbook", "assignee", "assigned_team")
        .prefetch_related(Prefetch("items", queryset=items_with_prerequisites()))
    )
    cards = []
    staff_of: dict[int, list[User]] = {}
    for run in runs:
        items = list(run.items.all())
        mark_claimable(items, user, work_team_ids)
        lanes = {state: Lane(state, label) for state, label in LANES}
        for item in items:
            if item.state in lanes:
                lanes[item.state].items.append(item)
        can_manage = run.team_id in manage_team_ids
        staff = []
        if can_manage and lanes[ItemState.STUCK].items:
            if run.team_id not in staff_of:
                staff_of[run.team_id] = team_staff(run.team)
            staff = staff_of[run.team_id]
        cards.append(RunCard(
            run=run,
            can_work=run.team_id in work_team_ids or run.assigned_team_id in work_team_ids,
            can_manage=can_manage,
            lanes=list(lanes.values()),
            total=len(items),
            done=sum(item.state == ItemState.DONE for item in items),
            skipped=sum(item.state == ItemState.SKIPPED for item in items),
            staff=staff,
        ))
    return cards


def push_notices(user, cards: list[RunCard], work_team_ids: set[int]) -> list[PushNotice]:
    """What is pushed to the user or their teams among the runs on the board: whole runs,
    and items assigned on their own; who pushed and why from the latest `reassigned`
    checkpoint (or the `launched` one, for a run pushed from its launch). One query, none
    when nothing is pushed to the user."""

    def to(thing: Run | Item) -> str:
        if thing.assignee_id is not None:
            return "you" if thing.assignee_id == user.pk else ""
        if thing.assigned_team_id in work_team_ids:
            return f"your team {thing.assigned_team.name}"
        return ""

    runs = [card.run for card in cards if to(card.run)]
    items = [
        (card.run, item) for card in cards for lane in card.lanes for item in lane.items
        if to(item) and _target(item) != _target(card.run)
    ]
    if not runs and not items:
        return []
    run_ids = [run.pk for run in runs]
    item_ids = [item.pk for _, item in items]
    latest_run_push = (
        Checkpoint.objects.filter(run_id__in=run_ids, kind=CheckpointKind.REASSIGNED,
                                  data__scope="run")
        .order_by().values("run_id").annotate(last=Max("id")).values("last")
    )
    latest_item_push = (
        Checkpoint.objects.filter(item_id__in=item_ids, kind=CheckpointKind.REASSIGNED)
        .order_by().values("item_id").annotate(last=Max("id")).values("last")
    )
    found = Checkpoint.objects.filter(
        Q(pk__in=latest_run_push) | Q(pk__in=latest_item_push)
        | Q(run_id__in=run_ids, kind=CheckpointKind.LAUNCHED)
    ).only("run_id", "item_id", "kind", "at", "actor_name", "reason", "data").order_by("id")
    pushed_run: dict[int, Checkpoint] = {}
    launched: dict[int, Checkpoint] = {}
    pushed_item: dict[int, Checkpoint] = {}
    for checkpoint in found:  # oldest first: the latest wins
        if checkpoint.kind == CheckpointKind.LAUNCHED:
            launched[checkpoint.run_id] = checkpoint
            continue
        if checkpoint.data.get("scope") == "run":
            pushed_run[checkpoint.run_id] = checkpoint
        pushed_item[checkpoint.item_id] = checkpoint

    def notice(run: Run, item: Item | None, checkpoint: Checkpoint | None,
               thing: Run | Item) -> PushNotice:
        is_launch = checkpoint is not None and checkpoint.kind == CheckpointKind.LAUNCHED
        return PushNotice(
            run=run, item=item, to=to(thing),
            by=checkpoint.actor_name if checkpoint else "A manager",
            reason=checkpoint.reason if checkpoint else "",
            at=checkpoint.at if checkpoint else None, launched=is_launch,
        )

    notices = [notice(run, None, pushed_run.get(run.pk) or launched.get(run.pk), run)
               for run in runs]
    notices += [notice(run, item, pushed_item.get(item.pk), item) for run, item in items]
    # The newest first: what was just pushed is what the assignee is looking for.
    return sorted(notices, key=lambda n: n.at.timestamp() if n.at else 0, reverse=True)


def my_items(user) -> list[Item]:
    """The claims the user holds, soonest lease end first."""
    return list(
        Item.objects.filter(
            run__in=access.visible_runs(user), holder=user, state=ItemState.CLAIMED
        )
        .select_related("run", "run__team")
        .order_by("lease_expires_at", "pk")
    )


def board_context(user) -> dict:
    work_team_ids = set(access.teams_for(user, Capability.WORK).values_list("pk", flat=True))
    manage_team_ids = set(
        access.teams_for(user, Capability.MANAGE).values_list("pk", flat=True)
    )
    mine = my_items(user)
    cards = run_cards(user, work_team_ids, manage_team_ids)
    # A run may allow more claims than the WIP_LIMIT setting; the board shows the highest
    # limit among the runs on it, and the claim service applies each run's own.
    wip_limit = max(
        [settings.WIP_LIMIT] + [c.run.wip_limit for c in cards if c.can_work and c.run.wip_limit]
    )
    return {
        "runs": cards,
        "pushed": push_notices(user, cards, work_team_ids),
        "my_items": mine,
        "can_work": bool(work_team_ids),
        "wip_limit": wip_limit,
        "at_wip_limit": len(mine) >= wip_limit,
        "now": timezone.now(),
    }


@login_required_htmx
@require_GET
def board(request: HttpRequest) -> HttpResponse:
    context = board_context(request.user)
    if is_partial(request):
        # The lanes poll themselves; My work is left alone so a half-typed reason survives.
        return render(request, "board/board.html#runs", context)
    return render(request, "board/board.html", context)


def acted(request: HttpRequest, notice: str) -> HttpResponse:
    """After a successful action: My work plus out-of-band lanes and flash, or a 303."""
    if is_partial(request):
        context = board_context(request.user) | {"notice": notice, "oob": True}
        return render(request, "board/board.html#action_result", context)
    messages.success(request, notice)
    return HttpResponseSeeOther(next_url(request))


def _claimed(item: Item) -> str:
    return f"You claimed #{item.position} “{item.title}” ({item.run.title})."


@require_POST
@board_action
def claim_next(request: HttpRequest) -> HttpResponse:
    if not access.teams_for(request.user, Capability.WORK).exists():
        raise PermissionDenied("Only staff of a team can claim its items.")
    return acted(request, run_once(
        request, lambda: _claimed(services.item_claim_next(actor=request.user))
    ))


@require_POST
@board_action
def item_claim(request: HttpRequest, item_id: int) -> HttpResponse:
    item = access.get_item(request.user, item_id, Capability.WORK)
    return acted(request, run_once(
        request, lambda: _claimed(services.item_claim(item=item, actor=request.user))
    ))


@require_POST
@board_action
def item_complete(request: HttpRequest, item_id: int) -> HttpResponse:
    item = access.get_item(request.user, item_id, Capability.WORK)
    data = valid_data(ClaimActionForm(request.POST))

    def complete() -> str:
        done = services.item_complete(item_id=item.pk, token=data["token"], actor=request.user)
        return f"Done: #{done.position} “{done.title}”."

    return acted(request, run_once(request, complete))


@require_POST
@board_action
def item_abandon(request: HttpRequest, item_id: int) -> HttpResponse:
    item = access.get_item(request.user, item_id, Capability.WORK)
    data = valid_data(AbandonForm(request.POST))

    def abandon() -> str:
        given_back = services.item_abandon(
            item_id=item.pk, token=data["token"], actor=request.user, reason=data["reason"]
        )
        if given_back.state == ItemState.STUCK:
            where = f"it went to the stuck lane after {given_back.attempts} attempts"
        else:
            where = "it is back in the pool"
        return f"You gave back #{given_back.position} “{given_back.title}”: {where}."

    return acted(request, run_once(request, abandon))


@require_POST
@board_action
def item_extend(request: HttpRequest, item_id: int) -> HttpResponse:
    item = access.get_item(request.user, item_id, Capability.WORK)
    data = valid_data(ClaimActionForm(request.POST))

    def extend() -> str:
        extended = services.item_extend(item_id=item.pk, token=data["token"], actor=request.user)
        until = timezone.localtime(extended.lease_expires_at)
        return (f"Still on it: #{extended.position} “{extended.title}” is yours until "
                f"{until:%H:%M} ({until:%Z}).")

    return acted(request, run_once(request, extend))


@require_POST
@board_action
def item_requeue(request: HttpRequest, item_id: int) -> HttpResponse:
    item = access.get_item(request.user, item_id, Capability.MANAGE)

    def requeue() -> str:
        back = services.item_requeue(item_id=item.pk, actor=request.user)
        state = back.get_state_display().lower()
        return (f"Requeued #{back.position} “{back.title}”: it is {state} again, with a "
                "fresh set of attempts.")

    return acted(request, run_once(request, requeue))


@require_POST
@board_action
def item_skip(request: HttpRequest, item_id: int) -> HttpResponse:
    item = access.get_item(request.user, item_id, Capability.MANAGE)
    data = valid_data(SkipForm(request.POST))

    def skip() -> str:
        skipped = services.item_skip(item_id=item.pk, actor=request.user, reason=data["reason"],
                                     expected_state=data["expected_state"])
        return f"Skipped #{skipped.position} “{skipped.title}”."

    return acted(request, run_once(request, skip))


@require_POST
@board_action
def item_assign(request: HttpRequest, item_id: int) -> HttpResponse:
    """Stuck lane: hand one item to a person of its run's team."""
    item = access.get_item(request.user, item_id, Capability.MANAGE)
    data = valid_data(AssignForm(request.POST, people=team_staff(item.run.team)))

    def assign() -> str:
        assigned = push.item_assign(item_id=item.pk, actor=request.user,
                                    assignee=data["assignee"],
                                    expected_state=data["expected_state"])
        return (f"Assigned #{assigned.position} “{assigned.title}” to "
                f"{data['assignee'].display_name}: their Claim next gets it first.")

    return acted(request, run_once(request, assign))
