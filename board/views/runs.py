"""Runs: the list, a run's page with its timeline, the trail export, and the managers'
actions on a whole run (push, restart, cancel)."""

from dataclasses import dataclass, field
from datetime import datetime

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from accounts import access
from accounts.access import Capability
from accounts.models import Team, User
from board import push, trail
from board.forms import (
    CancelForm,
    ReassignForm,
    RestartForm,
)
from board.models import (
    FINISHED_STATES,
    Checkpoint,
    CheckpointKind,
    Item,
    Run,
    RunState,
)
from board.views.board import items_with_prerequisites, mark_claimable, team_staff
from board.views.common import (
    HttpResponseSeeOther,
    board_action,
    is_partial,
    run_once,
    valid_data,
)

TRAIL_CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "jsonl": "application/jsonl; charset=utf-8",
}


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


def managed_teams(user) -> QuerySet[Team]:
    return access.teams_for(user, Capability.MANAGE).order_by("name")


def run_context(request: HttpRequest, run: Run) -> dict:
    items = _run_items(run)
    work_team_ids = access.team_ids(request.user, Capability.WORK)
    mark_claimable(items, request.user, work_team_ids)
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
                                          teams=managed_teams(request.user),
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
    return list(items_with_prerequisites().filter(run=run))


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
                                   teams=managed_teams(request.user)))
    assignee, assigned_team = data["target"]

    def reassign() -> str:
        count = push.run_reassign(run_id=run.pk, actor=request.user, reason=data["reason"],
                                  assignee=assignee, assigned_team=assigned_team)
        if not count:
            return (f"“{run.title}” is already with "
                    f"{push.target_name(assignee, assigned_team)}: nothing changed.")
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
