"""Runbooks: list (latest version of each), one version's page, and import (managers)."""

import hashlib

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods

from accounts import access
from accounts.access import Capability
from board.errors import BoardError
from board.idempotency import Outcome, request_fingerprint, run_once
from checklists import services
from checklists.forms import RunbookImportForm, latest_versions
from checklists.models import Runbook


@login_required
@require_GET
def runbook_list(request: HttpRequest) -> HttpResponse:
    runbooks = (
        latest_versions(access.visible_runbooks(request.user))
        .select_related("team")
        .annotate(step_count=Count("steps"))
        .order_by("team__name", "title", "slug")
    )
    return render(request, "checklists/runbook_list.html", {"runbooks": runbooks})


@login_required
@require_GET
def runbook_detail(request: HttpRequest, runbook_id: int) -> HttpResponse:
    runbook = access.get_runbook(request.user, runbook_id)
    steps = runbook.steps.prefetch_related("prerequisites").order_by("position")
    versions = (
        access.visible_runbooks(request.user)
        .filter(team=runbook.team, slug=runbook.slug)
        .order_by("-version")
        .only("pk", "version", "imported_at")
    )
    return render(request, "checklists/runbook_detail.html", {
        "runbook": runbook,
        "steps": steps,
        "versions": versions,
        "is_latest": not versions.filter(version__gt=runbook.version).exists(),
        "can_launch": access.has_capability(request.user, runbook.team, Capability.MANAGE),
    })


@login_required
@require_http_methods(["GET", "POST"])
def runbook_import(request: HttpRequest) -> HttpResponse:
    teams = access.teams_for(request.user, Capability.MANAGE)
    if not teams.exists():
        raise PermissionDenied("Only managers can import runbooks.")
    form = RunbookImportForm(
        request.POST if request.method == "POST" else None,
        request.FILES if request.method == "POST" else None,
        teams=teams,
    )
    if request.method == "POST" and form.is_valid():
        upload = form.cleaned_data["file"]
        data = upload.read()
        team = form.cleaned_data["team"]
        warnings: list[str] = []

        def import_once() -> Outcome:
            runbook, found = services.runbook_import(
                data=data, filename=upload.name, team=team, actor=request.user
            )
            warnings.extend(found)
            return Outcome(201, {"runbook": runbook.pk})

        try:
            # Sending the same form twice stores one version, not two.
            outcome = run_once(
                user=request.user, key=request.POST.get("idempotency_key", ""),
                fingerprint=request_fingerprint("POST", request.path, {
                    "team": team.pk, "filename": upload.name,
                    "sha256": hashlib.sha256(data).hexdigest(),
                }),
                action=import_once,
            )
        except services.RunbookFormatError as error:
            form.add_error("file", str(error))
        except BoardError as error:
            form.add_error(None, error.message)
        else:
            runbook = Runbook.objects.get(pk=outcome.body["runbook"])
            steps = runbook.steps.count()
            if outcome.replayed:
                messages.info(request, f"“{runbook.title}” v{runbook.version} was already "
                                       "imported by this form.")
            else:
                messages.success(
                    request,
                    f"Imported “{runbook.title}” as {runbook.slug} v{runbook.version} "
                    f"({steps} step{'' if steps == 1 else 's'}).",
                )
            for warning in warnings:
                messages.warning(request, warning)
            response = HttpResponseRedirect(reverse("checklists:runbook", args=[runbook.pk]))
            response.status_code = 303
            return response
    status = 422 if form.is_bound else 200
    return render(request, "checklists/runbook_import.html", {"form": form}, status=status)
