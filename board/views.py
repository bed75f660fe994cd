"""The board, a run's page, launch and trail export.

Views are thin: parse, fetch through accounts.access (404 outside the user's teams, 403 when
visible but not allowed), call one service, render. Domain errors become responses in one
place, `board_action`: for htmx the flash fragment with the error's status (409/422), for a
plain form post a message and a 303 back to the page the form came from. Item actions run
through `run_once` (board.idempotency), keyed by the form's hidden `idempotency_key`, so a
double click or a resent form answers with the first outcome instead of acting twice.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Count, Prefetch, Q
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render, resolve_url
from django.urls import reverse
from django.utils import timezone
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST
from django_htmx.http import HttpResponseClientRedirect

from accounts import access
from accounts.access import Capability
from board import idempotency, services, trail
from board.errors import BoardError, InvalidInput
from board.forms import AbandonForm, ClaimActionForm, LaunchForm, SkipForm
from board.models import FINISHED_STATES, Item, ItemState, Run, RunState
from checklists.forms import latest_versions

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


def board_action(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Wrap a state-changing view: login, and domain errors turned into one response shape."""

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
                return render_flash(request, error.message, error.status, with_my_work=True)
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


def next_url(request: HttpRequest) -> str:
    """Where a plain form post returns to: its `next` field when it is ours, else the board."""
    candidate = request.POST.get("next") or request.GET.get("next") or ""
    if candidate and url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return candidate
    return reverse("board:board")


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

    @property
    def percent_finished(self) -> int:
        return round(100 * (self.done + self.skipped) / self.total) if self.total else 0


def _items_with_prerequisites():
    return Item.objects.select_related("holder").prefetch_related(
        Prefetch("prerequisites", queryset=Item.objects.only("pk", "position", "title"))
    ).order_by("position")


def run_cards(user, work_team_ids: set[int], manage_team_ids: set[int]) -> list[RunCard]:
    """The active runs the user may see, each with its items sorted into lanes; claim buttons
    only on the runs of `work_team_ids`, stuck-lane actions on those of `manage_team_ids`."""
    runs = (
        access.visible_runs(user)
        .filter(state=RunState.ACTIVE)
        .select_related("team", "runbook")
        .prefetch_related(Prefetch("items", queryset=_items_with_prerequisites()))
    )
    cards = []
    for run in runs:
        items = list(run.items.all())
        lanes = {state: Lane(state, label) for state, label in LANES}
        for item in items:
            if item.state in lanes:
                lanes[item.state].items.append(item)
        cards.append(RunCard(
            run=run,
            can_work=run.team_id in work_team_ids,
            can_manage=run.team_id in manage_team_ids,
            lanes=list(lanes.values()),
            total=len(items),
            done=sum(item.state == ItemState.DONE for item in items),
            skipped=sum(item.state == ItemState.SKIPPED for item in items),
        ))
    return cards


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


@login_required
@require_GET
def run_detail(request: HttpRequest, run_id: int) -> HttpResponse:
    run = access.get_run(request.user, run_id)
    items = _run_items(run)
    checkpoints = run.checkpoints.select_related("item").order_by("id")
    finished = sum(item.state in FINISHED_STATES for item in items)
    return render(request, "board/run.html", {
        "run": run,
        "items": items,
        "finished": finished,
        "checkpoints": checkpoints,
        "can_work": access.has_capability(request.user, run.team, Capability.WORK),
        "can_audit": access.has_capability(request.user, run.team, Capability.AUDIT),
    })


def _run_items(run) -> list[Item]:
    return list(_items_with_prerequisites().filter(run=run))


@login_required
@require_GET
def trail_export(request: HttpRequest, run_id: int, fmt: str) -> HttpResponse:
    run = access.get_run(request.user, run_id, Capability.AUDIT)
    response = HttpResponse(content_type=TRAIL_CONTENT_TYPES[fmt])
    response["Content-Disposition"] = f'attachment; filename="run-{run.pk}-trail.{fmt}"'
    trail.trail_export(run=run, fmt=fmt, out=response)
    return response


# --- Launch ---------------------------------------------------------------------------------


@login_required
@require_http_methods(["GET", "POST"])
def launch(request: HttpRequest) -> HttpResponse:
    managed = access.teams_for(request.user, Capability.MANAGE)
    if not managed.exists():
        raise PermissionDenied("Only managers can launch runs.")
    runbooks = latest_versions(access.visible_runbooks(request.user).filter(team__in=managed))
    form = LaunchForm(
        request.POST if request.method == "POST" else None,
        runbooks=runbooks,
        initial={"runbook": request.GET.get("runbook")},
    )
    if request.method == "POST" and form.is_valid():
        data = form.cleaned_data
        runbook = data["runbook"]
        if not access.has_capability(request.user, runbook.team, Capability.MANAGE):
            raise PermissionDenied("Only managers of this team can launch its runbooks.")

        def launch_once() -> idempotency.Outcome:
            run = services.run_launch(
                runbook=runbook, title=data["title"], severity=data["severity"],
                ref=data["ref"], actor=request.user,
            )
            return idempotency.Outcome(201, {"run": run.pk})

        try:
            # A double click or a form sent again from the history opens the first run
            # instead of launching a second copy of the checklist.
            outcome = idempotency.run_once(
                user=request.user, key=request.POST.get("idempotency_key", ""),
                fingerprint=idempotency.request_fingerprint(
                    "POST", request.path,
                    {"runbook": runbook.pk, "title": data["title"],
                     "severity": data["severity"], "ref": data["ref"]},
                ),
                action=launch_once,
            )
        except BoardError as error:
            form.add_error(None, error.message)
        else:
            run = Run.objects.get(pk=outcome.body["run"])
            if outcome.replayed:
                messages.info(request, f"“{run.title}” was already launched by this form.")
            else:
                messages.success(
                    request, f"Launched “{run.title}” with {run.items.count()} items."
                )
            return HttpResponseSeeOther(reverse("board:run", args=[run.pk]))
    status = 422 if form.is_bound else 200
    return render(request, "board/launch.html", {"form": form}, status=status)
