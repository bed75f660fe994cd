"""The board, a run's page, launch and trail export, and the managers' push actions.

Views are thin: parse, fetch through accounts.access (404 outside the user's teams, 403 when
visible but not allowed), call one service, render. Domain errors become responses in one
place, `board_action`: for htmx the flash fragment with the error's status (409/422), for a
plain form post a message and a 303 back to the page the form came from. Item actions run
through `run_once` (board.idempotency), keyed by the form's hidden `idempotency_key`, so a
double click or a resent form answers with the first outcome instead of acting twice.

Managers' actions (push a run, restart it from a step, cancel it, assign a stuck item) go the
same way: the form only names what the manager chose; board.push decides from the database
as it is when the action runs, so a form opened minutes ago never undoes newer work.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial, wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Max, Prefetch, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from accounts import access
from accounts.access import Capability
from accounts.models import Team, User
from board import idempotency, push, services, trail
from board.errors import BoardError, InvalidInput
from board.forms import (
    AbandonForm,
    AssignForm,
    CancelForm,
    ClaimActionForm,
    LaunchForm,
    ReassignForm,
    RestartForm,
    SkipForm,
)
from board.models import (
    FINISHED_STATES,
    Checkpoint,
    CheckpointKind,
    Item,
    ItemState,
    Run,
    RunMode,
    RunState,
)
from checklists.forms import latest_versions
from checklists.models import Runbook

# The lanes of a run on the board, in the order they are shown; done and skipped are counts.
LANES = (
    (ItemState.AVAILABLE, "Available"),
    (ItemState.WAITING, "Waiting"),
    (ItemState.CLAIMED, "Claimed"),
    (ItemState.STUCK, "Stuck"),
)

TRAIL_CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/jsonl; charset=utf-8",
}


class HttpResponseSeeOther(HttpResponseRedirect):
    status_code = 303


def is_partial(request: HttpRequest) -> bool:
    return bool(request.htmx and not request.htmx.boosted)


# --- Errors, in one place -------------------------------------------------------------------


def render_flash(request: HttpRequest, message: str, status: int, *,
                 with_my_work: bool = False) -> HttpResponse:
    """The flash fragment carrying an error, swapped into #flash whatever the form targeted;
    `with_my_work` adds My work, swapped out of band."""
    if with_my_work:
        context = board_context(request.user) | {"error": message, "my_work_oob": True}
        response = render(request, "board/board.html#action_error", context, status=status)
    else:
        response = render(request, "base.html#flash", {"error": message}, status=status)
    response["HX-Retarget"] = "#flash"
    response["HX-Reswap"] = "outerHTML"
    return response


def login_required_htmx(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """`login_required` that also works for htmx: a fragment request would follow a plain
    redirect and swap the login page into a panel, so the browser is told to go there."""

    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if request.user.is_authenticated:
            return view(request, *args, **kwargs)
        if is_partial(request):
            login = f"{resolve_url(settings.LOGIN_URL)}?next={reverse('board:board')}"
            return HttpResponseClientRedirect(login)
        return redirect_to_login(request.get_full_path() if request.method == "GET"
                                 else reverse("board:board"))

    return wrapped


def board_action(view: Callable[..., HttpResponse] | None = None, *,
                 my_work: bool = True) -> Callable[..., HttpResponse]:
    """Wrap a state-changing view: login, and domain errors turned into one response shape.
    `my_work=False` for the forms of pages without My work (the run page): their error is the
    flash alone, and the form keeps what was typed."""
    if view is None:
        return partial(board_action, my_work=my_work)

    @login_required_htmx
    @wraps(view)
    def wrapped(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            return view(request, *args, **kwargs)
        except BoardError as error:
            if is_partial(request):
                # My work is rendered again: a claim lost meanwhile disappears, and its forms
                # get fresh idempotency keys, so a corrected retry (a reason typed after a
                # 422) is a new request rather than a reused key.
                return render_flash(request, error.message, error.status,
                                    with_my_work=my_work)
            messages.error(request, error.message)
            return HttpResponseSeeOther(next_url(request))
        except PermissionDenied as error:
            if not is_partial(request):
                raise
            return render_flash(request, str(error) or "You may not do that.", 403)
        except Http404 as error:
            if not is_partial(request):
                raise
            return render_flash(request, str(error) or "Not found.", 404)

    return wrapped


def next_url(request: HttpRequest, default: str = "") -> str:
    """Where a plain form post returns to: its `next` field when it is ours, else `default`
    (the board when none)."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return default or reverse("board:board")


# Form fields that are not part of the request an idempotency key stands for.
NOT_FINGERPRINTED = frozenset({"csrfmiddlewaretoken", "idempotency_key"})


def run_once(request: HttpRequest, action: Callable[[], str]) -> str:
    """Run a board action at most once per idempotency key (the form's hidden field) and
    return its notice; a form sent again gets the first notice, or the first error, back."""
    fields = {
        name: request.POST.getlist(name) for name in request.POST
        if name not in NOT_FINGERPRINTED
    }
    outcome = idempotency.run_once(
        user=request.user,
        key=request.POST.get("idempotency_key", ""),
        fingerprint=idempotency.request_fingerprint(request.method, request.path, fields),
        action=lambda: idempotency.Outcome(200, {"notice": action()}),
    )
    return outcome.body["notice"]


def valid_data(form) -> dict:
    """The cleaned data, or InvalidInput (a 422 through `board_action`) naming the problem."""
    if not form.is_valid():
        problems = "; ".join(
            f"{name}: {' '.join(errors)}" for name, errors in form.errors.items()
        )
        raise InvalidInput(f"The form was not valid ({problems}). Reload the page and retry.")
    return form.cleaned_data


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


def _items_with_prerequisites():
    return Item.objects.select_related("holder", "assignee", "assigned_team").prefetch_related(
        Prefetch("prerequisites", queryset=Item.objects.only("pk", "position", "title"))
    ).order_by("position")


def _target(thing: Run | Item) -> tuple[int | None, int | None]:
    return thing.assignee_id, thing.assigned_team_id


def _mark_claimable(items: list[Item], user, work_team_ids: set[int] | frozenset[int]) -> None:
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
        .prefetch_related(Prefetch("items", queryset=_items_with_prerequisites()))
    )
    cards = []
    staff_of: dict[int, list[User]] = {}
    for run in runs:
        items = list(run.items.all())
        _mark_claimable(items, user, work_team_ids)
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
    return notices


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
        skipped = services.item_skip(item_id=item.pk, actor=request.user, reason=data["reason"])
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
                                    assignee=data["assignee"])
        return (f"Assigned #{assigned.position} “{assigned.title}” to "
                f"{data['assignee'].display_name}: their Claim next gets it first.")

    return acted(request, run_once(request, assign))


# --- Runs -----------------------------------------------------------------------------------

RUNS_PER_PAGE = 50


@login_required
@require_GET
def run_list(request: HttpRequest) -> HttpResponse:
    """Every run of the user's teams, newest first: finished runs stay findable (auditors)."""
    state = request.GET.get("state", "")
    runs = (
        access.visible_runs(request.user)
        .select_related("team", "runbook")
        .annotate(
            item_count=Count("items"),
            finished_count=Count("items", filter=Q(items__state__in=FINISHED_STATES)),
        )
        .order_by("-launched_at", "-pk")
    )
    if state in RunState.values:
        runs = runs.filter(state=state)
    page = Paginator(runs, RUNS_PER_PAGE).get_page(request.GET.get("page"))
    return render(request, "board/run_list.html", {
        "page": page, "state": state, "states": RunState.choices,
    })


# --- Run page -------------------------------------------------------------------------------


@dataclass
class RestartMarker:
    """A timeline row standing for one restart, before the `reset` checkpoints it wrote."""

    restart: str
    from_position: int | None
    actor_name: str
    reason: str
    at: datetime
    resets: list[Checkpoint] = field(default_factory=list)

    is_marker = True


def timeline(checkpoints) -> list[Checkpoint | RestartMarker]:
    """The trail in order, each restart as a marker followed by its group of `reset`
    checkpoints (grouped by the restart's time, data["restart"])."""
    rows: list[Checkpoint | RestartMarker] = []
    markers: dict[str, RestartMarker] = {}
    for checkpoint in checkpoints:
        restart = checkpoint.data.get("restart") if checkpoint.kind == CheckpointKind.RESET \
            else None
        if not restart:
            rows.append(checkpoint)
            continue
        marker = markers.get(restart)
        if marker is None:
            marker = markers[restart] = RestartMarker(
                restart=restart, from_position=checkpoint.data.get("from_position"),
                actor_name=checkpoint.actor_name, reason=checkpoint.reason, at=checkpoint.at,
            )
            rows.append(marker)
        marker.resets.append(checkpoint)
    return rows


def _push_people(run: Run) -> list[tuple[str, list[User]]]:
    return [(f"People on {run.team.name}", team_staff(run.team))]


def _managed_teams(user) -> QuerySet[Team]:
    return access.teams_for(user, Capability.MANAGE).order_by("name")


def run_context(request: HttpRequest, run: Run) -> dict:
    items = _run_items(run)
    work_team_ids = access.team_ids(request.user, Capability.WORK)
    _mark_claimable(items, request.user, work_team_ids)
    checkpoints = run.checkpoints.select_related("item").order_by("id")
    finished = sum(item.state in FINISHED_STATES for item in items)
    can_manage = access.run_capability(request.user, run, Capability.MANAGE)
    context = {
        "run": run,
        "items": items,
        "finished": finished,
        "timeline": timeline(checkpoints),
        "can_work": access.run_capability(request.user, run, Capability.WORK),
        "can_audit": access.has_capability(request.user, run.team, Capability.AUDIT),
        "can_manage": can_manage,
        "pushed_to": push.target_name(run.assignee, run.assigned_team)
        if run.assignee_id or run.assigned_team_id else "",
    }
    if can_manage:
        context |= {
            "reassign_form": ReassignForm(people=_push_people(run),
                                          teams=_managed_teams(request.user),
                                          auto_id="reassign_%s"),
            "restart_form": RestartForm(items=items, auto_id="restart_%s"),
            "cancel_form": CancelForm(auto_id="cancel_%s"),
        }
    return context


@login_required
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = access.get_run(request.user, run_id)
    return render(request, "board/run.html", run_context(request, run))


def _run_items(run) -> list[Item]:
    return list(_items_with_prerequisites().filter(run=run))


def run_acted(request: HttpRequest, run_id: int, notice: str) -> HttpResponse:
    """After a manager's action on the run page: the page's content and the flash, or a 303
    back to the page."""
    if is_partial(request):
        run = access.get_run(request.user, run_id)  # as it is now
        context = run_context(request, run) | {"notice": notice, "oob": True}
        return render(request, "board/run.html#run_action_result", context)
    messages.success(request, notice)
    return HttpResponseSeeOther(reverse("board:run", args=[run_id]))


def _items(count: int) -> str:
    return f"{count} item{'s' if count != 1 else ''}"


@require_POST
@board_action(my_work=False)
def run_reassign(request: HttpRequest, run_id: int) -> HttpResponse:
    """Push the whole run to a person or a team, or back to the shared pool."""
    run = access.get_run(request.user, run_id, Capability.MANAGE)
    data = valid_data(ReassignForm(request.POST, people=_push_people(run),
                                   teams=_managed_teams(request.user)))
    assignee, assigned_team = data["target"]

    def reassign() -> str:
        count = push.run_reassign(run_id=run.pk, actor=request.user, reason=data["reason"],
                                  assignee=assignee, assigned_team=assigned_team)
        if assignee is None and assigned_team is None:
            return f"“{run.title}” is back in the shared pool: {_items(count)} reassigned."
        return (f"Pushed “{run.title}” to {push.target_name(assignee, assigned_team)}: "
                f"{_items(count)} reassigned.")

    return run_acted(request, run.pk, run_once(request, reassign))


@require_POST
@board_action(my_work=False)
def run_restart(request: HttpRequest, run_id: int) -> HttpResponse:
    run = access.get_run(request.user, run_id, Capability.MANAGE)
    data = valid_data(RestartForm(request.POST, items=run.items.order_by("position")))

    def restart() -> str:
        count = push.run_restart(run_id=run.pk, from_position=data["from_position"],
                                 actor=request.user, reason=data["reason"])
        return f"Restarted “{run.title}” from step {data['from_position']}: {_items(count)} reset."

    return run_acted(request, run.pk, run_once(request, restart))


@require_POST
@board_action(my_work=False)
def run_cancel(request: HttpRequest, run_id: int) -> HttpResponse:
    run = access.get_run(request.user, run_id, Capability.MANAGE)
    data = valid_data(CancelForm(request.POST))

    def cancel() -> str:
        push.run_cancel(run_id=run.pk, actor=request.user, reason=data["reason"])
        return f"Cancelled “{run.title}”: nothing more can be claimed from it."

    return run_acted(request, run.pk, run_once(request, cancel))


@login_required
@require_GET
def trail_export(request: HttpRequest, run_id: int, fmt: str) -> HttpResponse:
    run = access.get_run(request.user, run_id, Capability.AUDIT)
    response = HttpResponse(content_type=TRAIL_CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}-trail.{fmt}"'
    trail.trail_export(run=run, fmt=fmt, out=response)
    return response


# --- Launch ---------------------------------------------------------------------------------


def recommendation(scope: str, nature: str) -> dict:
    mode, reason = services.recommend_mode(scope, nature)
    return {"mode": mode, "label": RunMode(mode).label, "reason": reason,
            "answered": bool(scope and nature)}


def _launch_people(teams) -> list[tuple[str, list[User]]]:
    return [(f"People on {team.name}", team_staff(team)) for team in teams]


def _require_manager(user) -> QuerySet[Team]:
    managed = _managed_teams(user)
    if not managed.exists():
        raise PermissionDenied("Only managers can launch runs.")
    return managed


@login_required_htmx
@require_GET
def launch_recommendation(request: HttpRequest) -> HttpResponse:
    """The recommended mode for the scope and nature answered so far: the launch form asks
    for it each time an answer changes."""
    _require_manager(request.user)
    form = LaunchForm(request.GET, runbooks=Runbook.objects.none(), teams=Team.objects.none(),
                      people=())
    scope, nature = form.answers()
    return render(request, "board/launch.html#recommendation",
                  {"recommendation": recommendation(scope, nature)})


@login_required
@require_http_methods(["GET", "POST"])
def launch(request: HttpRequest) -> HttpResponse:
    managed = _require_manager(request.user)
    runbooks = latest_versions(access.visible_runbooks(request.user).filter(team__in=managed))
    form = LaunchForm(
        request.POST if request.method == "POST" else None,
        runbooks=runbooks, teams=managed, people=_launch_people(managed),
        initial={"runbook": request.GET.get("runbook")},
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        runbook = data["runbook"]
        team = data["team"] or runbook.team
        if not access.has_capability(request.user, runbook.team, Capability.MANAGE):
            raise PermissionDenied("Only managers of this team can launch its runbooks.")
        assignee, assigned_team = data["push_to"]

        def launch_once() -> idempotency.Outcome:
            run, launched = services.run_launch_once(
                runbook=runbook, title=data["title"], severity=data["severity"],
                ref=data["ref"], actor=request.user, team=team, scope=data["scope"],
                nature=data["nature"], mode=data["mode"] or None, assignee=assignee,
                assigned_team=assigned_team,
            )
            return idempotency.Outcome(201 if launched else 200,
                                       {"run": run.pk, "launched": launched})

        try:
            # A double click or a form sent again from the history opens the first run
            # instead of launching a second copy of the checklist.
            outcome = idempotency.run_once(
                user=request.user, key=request.POST.get("idempotency_key", ""),
                fingerprint=idempotency.request_fingerprint(
                    "POST", request.path,
                    {"runbook": runbook.pk, "title": data["title"],
                     "severity": data["severity"], "ref": data["ref"], "team": team.pk,
                     "scope": data["scope"], "nature": data["nature"], "mode": data["mode"],
                     "push_to": request.POST.get("push_to", "")},
                ),
                action=launch_once,
            )
        except BoardError as error:
            form.add_error(None, error.message)
        else:
            run = Run.objects.get(pk=outcome.body["run"])
            if outcome.replayed:
                messages.info(request, f"“{run.title}” was already launched by this form.")
            elif not outcome.body.get("launched", True):
                messages.info(
                    request,
                    f"“{run.title}” is already open for {run.ref}: this is that run, not a "
                    "second one.",
                )
            else:
                messages.success(
                    request, f"Launched “{run.title}” with {run.items.count()} items."
                )
            return HttpResponseSeeOther(reverse("board:run", args=[run.pk]))
    status = 422 if form.is_bound else 200
    return render(request, "board/launch.html", {
        "form": form, "recommendation": recommendation(*form.answers()),
    }, status=status)
