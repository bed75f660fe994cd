"""Launch a run: the form, with its live recommendation of a recovery mode."""


from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from accounts import access
from accounts.access import Capability
from accounts.models import Team, User
from board import idempotency, services
from board.errors import BoardError
from board.forms import (
    LaunchForm,
)
from board.models import (
    Run,
    RunMode,
)
from board.views.board import team_staff
from board.views.common import (
    HttpResponseSeeOther,
    login_required_htmx,
)
from board.views.runs import managed_teams
from checklists.forms import latest_versions
from checklists.models import Runbook

# --- Launch ---------------------------------------------------------------------------------


def recommendation(scope: str, nature: str) -> dict:
    mode, reason = services.recommend_mode(scope, nature)
    return {"mode": mode, "label": RunMode(mode).label, "reason": reason,
            "answered": bool(scope and nature)}


def _launch_people(teams) -> list[tuple[str, list[User]]]:
    return [(f"People on {team.name}", team_staff(team)) for team in teams]


def _require_manager(user) -> QuerySet[Team]:
    managed = managed_teams(user)
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
