"""The staff JSON API under /api/v1/ (django-ninja), authenticated by bearer tokens.

Endpoints are as thin as the views: fetch through accounts.access (404 outside the user's
teams, 403 without the capability), run one service through board.idempotency, answer JSON.
Every error is `{"detail": "<readable message>"}`, made in one place: the exception handlers
at the end of this module. Times are ISO 8601 in UTC with the offset written out, as in the
trail export.
"""

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from django.core.exceptions import PermissionDenied
from django.db.models import Prefetch
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import Field, Header, NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from pydantic import AfterValidator, ConfigDict, PlainSerializer, StrictInt

from accounts import access
from accounts.access import Capability
from accounts.api_auth import ApiTokenAuth
from board import idempotency, services
from board.errors import BoardError, NothingToClaim
from board.idempotency import Outcome
from board.models import Checkpoint, Item

api = NinjaAPI(
    title="Pullboard API",
    version="1",
    description=(
        "Claim, complete, abandon and extend items of recovery runs; read runs and their "
        "trails. Authenticate with `Authorization: Bearer <token>` (`manage.py "
        "create_api_token`). Every POST needs an `Idempotency-Key` header: a fresh value "
        "(a UUID) for each action, sent again unchanged to retry it; a retry returns the "
        "first outcome and changes nothing. Errors are `{\"detail\": \"<message>\"}`."
    ),
    urls_namespace="api",
    auth=ApiTokenAuth(),
)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


IsoTime = Annotated[datetime, PlainSerializer(_iso, return_type=str)]


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and it would end up raw in the trail export.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
# A fencing token as issued: a whole number (not true/false, not 3.0) in the database's range.
ClaimToken = Annotated[StrictInt, Field(ge=0, le=2**63 - 1,
                                        description="the fencing token of your claim")]


# --- Schemas --------------------------------------------------------------------------------


class Error(Schema):
    detail: str


class ItemRef(Schema):
    id: int
    run: int
    title: str
    state: str
    position: int


class ClaimOut(Schema):
    item: ItemRef
    token: int
    lease_expires_at: IsoTime | None


class ClaimNextIn(Schema):
    model_config = ConfigDict(extra="forbid")
    run: Annotated[StrictInt, Field(ge=1, le=2**63 - 1)] | None = Field(
        None, description="only claim from this run"
    )


class CompleteIn(Schema):
    model_config = ConfigDict(extra="forbid")
    token: ClaimToken
    note: Text = Field("", max_length=2000)


class AbandonIn(Schema):
    model_config = ConfigDict(extra="forbid")
    token: ClaimToken
    reason: Text = Field(max_length=2000, description="why you give the item back")


class ExtendIn(Schema):
    model_config = ConfigDict(extra="forbid")
    token: ClaimToken


class RunItemOut(Schema):
    id: int
    position: int
    title: str
    section: str
    state: str
    holder: str | None
    token: int
    attempts: int
    lease_expires_at: IsoTime | None
    prerequisites: list[int]


class RunOut(Schema):
    id: int
    title: str
    ref: str
    severity: int
    state: str
    team: str
    mode: str
    items: list[RunItemOut]


class CheckpointOut(Schema):
    seq: int
    at: IsoTime
    kind: str
    item: int | None
    actor: str
    token: int | None
    reason: str


ERRORS: dict[int, Any] = {401: Error, 403: Error, 404: Error, 409: Error, 422: Error}
IdempotencyKeyHeader = Header(
    ..., alias="Idempotency-Key", max_length=idempotency.MAX_KEY_LENGTH,
    description="a fresh value (a UUID) per action; the same value again to retry it",
)


# --- Claims and holder actions --------------------------------------------------------------


def _claim_body(item: Item) -> dict:
    return ClaimOut(
        item=ItemRef(id=item.pk, run=item.run_id, title=item.title, state=item.state,
                     position=item.position),
        token=item.token,
        lease_expires_at=item.lease_expires_at,
    ).model_dump(mode="json")


def _once(request: HttpRequest, key: str, action: Callable[[], Outcome]) -> HttpResponse:
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


@api.post("/claims/next", response={200: ClaimOut, 204: None, **ERRORS},
          summary="Claim the next available item (204: nothing to claim)")
def claims_next(request: HttpRequest, payload: ClaimNextIn | None = None,
                idempotency_key: str = IdempotencyKeyHeader):
    user = request.auth
    run_id = payload.run if payload is not None else None
    if not access.team_ids(user, Capability.WORK):
        if run_id is not None:
            access.get_run(user, run_id, Capability.WORK)  # 404, or 403 saying why
        raise PermissionDenied("Only staff of a team can claim its items.")

    def claim() -> Outcome:
        # The claim only takes items of runs the user may work on, so the run is read (for
        # its 404 or 403) only when it found nothing; the refusal rolls the attempt back.
        try:
            item = services.item_claim_next(actor=user, run_id=run_id)
        except NothingToClaim:
            if run_id is not None:
                access.get_run(user, run_id, Capability.WORK)
            return Outcome(204)
        return Outcome(200, _claim_body(item))

    return _once(request, idempotency_key, claim)


@api.post("/items/{item_id}/claim", response={200: ClaimOut, **ERRORS},
          summary="Claim this item (409 when it is not available)")
def item_claim(request: HttpRequest, item_id: int, idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.WORK)
    return _once(request, idempotency_key, lambda: Outcome(
        200, _claim_body(services.item_claim(item=item, actor=request.auth))
    ))


@api.post("/items/{item_id}/complete", response={200: ClaimOut, **ERRORS},
          summary="Complete the item you hold")
def item_complete(request: HttpRequest, item_id: int, payload: CompleteIn,
                  idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.WORK)
    return _once(request, idempotency_key, lambda: Outcome(200, _claim_body(
        services.item_complete(item_id=item.pk, token=payload.token, actor=request.auth,
                               note=payload.note)
    )))


@api.post("/items/{item_id}/abandon", response={200: ClaimOut, **ERRORS},
          summary="Give the item you hold back, with a reason")
def item_abandon(request: HttpRequest, item_id: int, payload: AbandonIn,
                 idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.WORK)
    return _once(request, idempotency_key, lambda: Outcome(200, _claim_body(
        services.item_abandon(item_id=item.pk, token=payload.token, actor=request.auth,
                              reason=payload.reason)
    )))


@api.post("/items/{item_id}/extend", response={200: ClaimOut, **ERRORS},
          summary="Still on it: extend the lease of the item you hold")
def item_extend(request: HttpRequest, item_id: int, payload: ExtendIn,
                idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.WORK)
    return _once(request, idempotency_key, lambda: Outcome(200, _claim_body(
        services.item_extend(item_id=item.pk, token=payload.token, actor=request.auth)
    )))


# --- Reads ----------------------------------------------------------------------------------


@api.get("/runs/{run_id}", response={200: RunOut, **ERRORS}, summary="A run with its items")
def run_detail(request: HttpRequest, run_id: int):
    run = access.get_run(request.auth, run_id)
    items = (
        Item.objects.filter(run=run)
        .select_related("holder")
        .prefetch_related(Prefetch("prerequisites", queryset=Item.objects.only("pk")))
        .order_by("position")
    )
    return RunOut(
        id=run.pk, title=run.title, ref=run.ref, severity=run.severity, state=run.state,
        team=run.team.slug, mode=run.mode,
        items=[
            RunItemOut(
                id=item.pk, position=item.position, title=item.title, section=item.section,
                state=item.state, holder=item.holder.username if item.holder else None,
                token=item.token, attempts=item.attempts,
                lease_expires_at=item.lease_expires_at,
                prerequisites=sorted(pre.pk for pre in item.prerequisites.all()),
            )
            for item in items
        ],
    )


@api.get("/runs/{run_id}/checkpoints", response={200: list[CheckpointOut], **ERRORS},
         summary="A run's trail, oldest first (seq counts from 1)")
def run_checkpoints(request: HttpRequest, run_id: int):
    run = access.get_run(request.auth, run_id)
    rows = (
        Checkpoint.objects.filter(run_id=run.pk)
        .order_by("id")
        .values_list("at", "kind", "item_id", "actor_name", "token", "reason")
    )
    return [
        CheckpointOut(seq=seq, at=at, kind=kind, item=item_id, actor=actor, token=token,
                      reason=reason)
        for seq, (at, kind, item_id, actor, token, reason) in enumerate(rows, start=1)
    ]


# --- Errors, in one place -------------------------------------------------------------------


def _detail(request: HttpRequest, message: str, status: int) -> HttpResponse:
    return api.create_response(request, {"detail": message}, status=status)


@api.exception_handler(BoardError)
def _board_error(request: HttpRequest, error: BoardError) -> HttpResponse:
    response = _detail(request, error.message, error.status)
    if isinstance(error, idempotency.ReplayedError):
        response["Idempotent-Replayed"] = "true"  # as for a replayed success
    return response


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, error: Http404) -> HttpResponse:
    return _detail(request, str(error) or "Not found.", 404)


@api.exception_handler(PermissionDenied)
def _forbidden(request: HttpRequest, error: PermissionDenied) -> HttpResponse:
    return _detail(request, str(error) or "You may not do that.", 403)


@api.exception_handler(AuthenticationError)
def _unauthenticated(request: HttpRequest, error: AuthenticationError) -> HttpResponse:
    response = _detail(request, error.message, 401)
    response["WWW-Authenticate"] = 'Bearer realm="pullboard"'
    return response


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, error: HttpError) -> HttpResponse:
    if error.status_code == 400:
        # The only 400 ninja raises here: a body that is not JSON. A bad body is a 422.
        return _detail(request, "The request body is not valid JSON.", 422)
    return _detail(request, error.message, error.status_code)


@api.exception_handler(ValidationError)
def _invalid(request: HttpRequest, error: ValidationError) -> HttpResponse:
    return _detail(request, "Invalid request: " + "; ".join(
        _problem(problem) for problem in error.errors
    ) + ".", 422)


def _problem(problem: dict) -> str:
    """One of pydantic's errors as a phrase: "“token” is required", "the Idempotency-Key
    header is required", "“token”: input should be a valid integer"."""
    loc = [str(part) for part in problem.get("loc", ())]
    source, rest = (loc[0], loc[1:]) if loc else ("", [])
    if source == "body":
        # ninja puts the parameter name (payload) after "body"; the fields follow it.
        fields = rest[1:]
        what = f"“{'.'.join(fields)}”" if fields else "the JSON body"
    elif source == "header" and rest:
        what = f"the {rest[0]} header"
    elif rest:
        what = f"the {source} parameter “{'.'.join(rest)}”"
    else:
        what = "the request"
    if problem.get("type") == "missing":
        return f"{what} is required"
    message = str(problem.get("msg", "is not valid"))
    return f"{what}: {message[:1].lower()}{message[1:]}"
