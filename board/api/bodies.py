"""The JSON the endpoints answer with, and how an action runs once per Idempotency-Key."""

import json
from collections.abc import Callable

from django.db.models import Prefetch, QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse

from accounts.models import Team, User
from board import idempotency
from board.api.schemas import (
    ClaimOut,
    ItemRef,
    RunChangedOut,
    RunItemOut,
    RunOut,
)
from board.idempotency import Outcome
from board.models import Item, Run


def claim_body(item: Item) -> dict:
    return ClaimOut(
        item=ItemRef(id=item.pk, run=item.run_id, title=item.title, state=item.state,
                     position=item.position),
        token=item.token,
        lease_expires_at=item.lease_expires_at,
    ).model_dump(mode="json")


def answer_once(request: HttpRequest, key: str, action: Callable[[], Outcome]) -> HttpResponse:
    """Run the action at most once per Idempotency-Key and answer with its (first) outcome."""
    # ninja has already parsed the body, so it is JSON (or empty) here.
    body = json.loads(request.body) if request.body else None
    outcome = idempotency.run_once(
        user=request.auth,
        key=key,
        fingerprint=idempotency.request_fingerprint(request.method, request.path, body),
        action=action,
    )
    if outcome.body is None:
        response = HttpResponse(status=outcome.status)
    else:
        response = JsonResponse(outcome.body, status=outcome.status)
    if outcome.replayed:
        response["Idempotent-Replayed"] = "true"
    return response


def username_of(user: User | None) -> str | None:
    return user.username if user is not None else None


def slug_of(team: Team | None) -> str | None:
    return team.slug if team is not None else None


def _items_out() -> QuerySet[Item]:
    return (
        Item.objects.select_related("holder", "assignee", "assigned_team")
        .prefetch_related(Prefetch("prerequisites", queryset=Item.objects.only("pk")))
        .order_by("position")
    )


def _item_out(item: Item) -> RunItemOut:
    return RunItemOut(
        id=item.pk, position=item.position, title=item.title, section=item.section,
        state=item.state, holder=username_of(item.holder), token=item.token,
        attempts=item.attempts, lease_expires_at=item.lease_expires_at,
        prerequisites=sorted(pre.pk for pre in item.prerequisites.all()),
        assignee=username_of(item.assignee), assigned_team=slug_of(item.assigned_team),
    )


def run_fields(run: Run) -> dict:
    return dict(
        id=run.pk, title=run.title, ref=run.ref, severity=run.severity, state=run.state,
        team=run.team.slug, mode=run.mode, scope=run.scope, nature=run.nature,
        recommended_mode=run.recommended_mode, assignee=username_of(run.assignee),
        assigned_team=slug_of(run.assigned_team),
        items=[_item_out(item) for item in _items_out().filter(run=run)],
    )


def run_body(run_id: int, **extra) -> dict:
    """The run as GET /runs/{id} answers it, read afresh (after an action), as JSON."""
    run = Run.objects.select_related("team", "assignee", "assigned_team").get(pk=run_id)
    schema = RunChangedOut if "changed" in extra else RunOut
    return schema(**run_fields(run), **extra).model_dump(mode="json")


def item_body(item_id: int) -> dict:
    return _item_out(_items_out().get(pk=item_id)).model_dump(mode="json")
