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
from django.db.models import Prefetch, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import Field, Header, NinjaAPI, Query, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from pydantic import AfterValidator, ConfigDict, PlainSerializer, StrictBool, StrictInt

from accounts import access
from accounts.access import Capability
from accounts.api_auth import ApiTokenAuth
from accounts.models import Team, User
from board import alerts, idempotency, push, services
from board.alerts import AlertmanagerWebhook
from board.errors import BoardError, InvalidInput, NothingToClaim
from board.idempotency import Outcome
from board.models import Checkpoint, Item, Run, RunState

api = NinjaAPI(
    title="Pullboard API",
    version="1",
    description=(
        "Claim, complete, abandon and extend items of recovery runs; read runs and their "
        "trails; launch runs, from alerts too, and push, restart and cancel them (managers). "
        "Authenticate with `Authorization: Bearer <token>` (`manage.py "
        "create_api_token`). Every POST needs an `Idempotency-Key` header: a fresh value "
        "(a UUID) for each action, sent again unchanged to retry it; a retry returns the "
        "first outcome and changes nothing. The one exception is the Alertmanager webhook, "
        "which is idempotent by each alert's fingerprint. Errors are "
        "`{\"detail\": \"<message>\"}`."
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
    assignee: str | None = Field(description="the username it is pushed to, if any")
    assigned_team: str | None = Field(description="the team slug it is pushed to, if any")


class RunOut(Schema):
    id: int
    title: str
    ref: str
    severity: int
    state: str
    team: str
    mode: str
    scope: str = Field(description="partial or total; empty when not said at launch")
    nature: str = Field(description="transient or persistent; empty when not said at launch")
    recommended_mode: str = Field(description="the mode the scope and nature suggested")
    assignee: str | None = Field(description="the username the run is pushed to, if any")
    assigned_team: str | None = Field(description="the team slug it is pushed to, if any")
    items: list[RunItemOut]


class RunChangedOut(RunOut):
    changed: int = Field(description="how many items the action changed")


class RunSummaryOut(Schema):
    id: int
    title: str
    ref: str
    severity: int
    state: str
    team: str
    mode: str
    launched_at: IsoTime
    assignee: str | None
    assigned_team: str | None


# Text with its bounds checked first (the bounds of a nested Annotated[Text, Field(...)] would
# be checked on the validated value, and read "at least 1 item after validation").
Slug = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_nul)]
Reason = Annotated[str, Field(max_length=2000), AfterValidator(_no_nul)]
Username = Annotated[str, Field(min_length=1, max_length=150), AfterValidator(_no_nul)]


class RunLaunchIn(Schema):
    model_config = ConfigDict(extra="forbid")
    runbook: Slug = Field(description="the runbook's slug; its latest version is launched")
    title: Text = Field(max_length=200)
    severity: StrictInt = Field(3, ge=1, le=4, description="1 (critical) to 4 (low)")
    ref: Text = Field("", max_length=200, description=(
        "the incident reference: while a run of this runbook with this reference is open, "
        "launching again returns it (200) instead of a second run"
    ))
    team: Slug | None = Field(None, description=(
        "the runbook's team (slug); needed only when the slug is in several of your teams"
    ))
    scope: Text = Field("", max_length=10, description="partial or total")
    nature: Text = Field("", max_length=10, description="transient or persistent")
    mode: Text | None = Field(None, max_length=10, description=(
        "pull, push or hybrid; by default the mode the scope and nature recommend"
    ))


class ReassignIn(Schema):
    model_config = ConfigDict(extra="forbid")
    user: Username | None = Field(None, description="push the run to this person (username)")
    team: Slug | None = Field(None, description="push the run to this team (slug)")
    unassign: StrictBool = Field(False, description="true: back to the shared pool")
    reason: Reason = Field(description="why the run is pushed")


class RestartIn(Schema):
    model_config = ConfigDict(extra="forbid")
    from_position: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] = Field(
        description="the step to restart from (1-based): it and every later step start over"
    )
    reason: Reason = Field(description="why the run restarts")


class CancelIn(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = Field(description="why the run is no longer needed")


class RequeueIn(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = ""


class SkipIn(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = Field(description="why the item is not needed")


class AssignIn(Schema):
    model_config = ConfigDict(extra="forbid")
    user: Username = Field(description="the username the item is pushed to")
    reason: Reason = ""


class AlertRunOut(Schema):
    fingerprint: str | None
    alertname: str
    run: int
    notes: list[str] = Field(description="labels left out, and why")


class AlertResolvedOut(Schema):
    fingerprint: str | None
    alertname: str
    run: int
    recorded: bool = Field(description="false: this resolution was already on the trail")


class AlertIgnoredOut(Schema):
    fingerprint: str | None
    alertname: str
    reason: str


class AlertmanagerOut(Schema):
    launched: list[AlertRunOut]
    found: list[AlertRunOut]
    resolved: list[AlertResolvedOut]
    ignored: list[AlertIgnoredOut]


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


# --- Launch, from alerts too ----------------------------------------------------------------


@api.post("/runs", response={200: RunOut, 201: RunOut, **ERRORS},
          summary="Launch a run of a runbook (200: the open run with this ref already exists)")
def run_launch(request: HttpRequest, payload: RunLaunchIn,
               idempotency_key: str = IdempotencyKeyHeader):
    """For a manager of the runbook's team, or the team's alerting integration. A launch
    with the `ref` of a run of this runbook that is still open launches nothing: it answers
    200 with that run, so an alert sent twice (under two Idempotency-Keys) is one run."""
    runbook = alerts.runbook_for_launch(user=request.auth, slug=payload.runbook,
                                        team_slug=payload.team)

    def launch() -> Outcome:
        run, launched = services.run_launch_once(
            runbook=runbook, title=payload.title, actor=request.auth,
            severity=payload.severity, ref=payload.ref, scope=payload.scope,
            nature=payload.nature, mode=payload.mode or None,
        )
        return Outcome(201 if launched else 200, _run_body(run.pk))

    return _once(request, idempotency_key, launch)


@api.post(
    "/hooks/alertmanager", response={200: AlertmanagerOut, **ERRORS},
    url_name="hooks_alertmanager",
    summary="Prometheus Alertmanager's webhook: launch, find or mark resolved alerts' runs",
    description=(
        "Point an Alertmanager `webhook_configs` receiver here, with the token of the team's "
        "integration user (or a manager) in `http_config.authorization.credentials`. Takes "
        "the webhook's JSON, payload version 4. **No `Idempotency-Key` header** (Alertmanager "
        "cannot send one): the endpoint is idempotent by each alert's fingerprint (else the "
        "group's `groupKey`). A firing alert naming a runbook (a `runbook` label, or a "
        "`runbook_url` annotation whose last path segment, less an extension such as `.md`, "
        "is the runbook's slug) launches a run, whose `ref` is `alert <fingerprint>`, or finds "
        "the open run an earlier notification launched. Title: the `summary` annotation, else "
        "`alertname`. Severity from the `severity` label: critical 1; high, major, error 2; "
        "warning, minor, medium 3; info, low, none 4; or 1 to 4; otherwise 3. Team: the "
        "`team` label (a slug), else the runbook's; `scope` and `nature` labels are optional. "
        "A resolved alert adds one `alert_resolved` checkpoint to its open run (once per "
        "fingerprint and endsAt) and does not close it. Alerts naming no or an unknown "
        "runbook, or a team the token may not launch for, are listed under `ignored` with "
        "the reason; the others go ahead. A body that is not a version 4 payload is 422."
    ),
)
def hooks_alertmanager(request: HttpRequest, payload: AlertmanagerWebhook):
    if not access.launch_teams(request.auth):
        raise PermissionDenied(
            "Only the token of a team's alerting integration or of a manager can post alerts."
        )
    return alerts.alertmanager_dispatch(payload=payload, actor=request.auth)


# --- Managers push: reassign, restart, cancel; requeue, skip, assign -------------------------


def _user_named(username: str) -> User:
    user = User.objects.filter(username=username).first()
    if user is None:
        raise InvalidInput(f"There is no user “{username}”.")
    return user


def _push_target(actor: User, run: Run, payload: ReassignIn) -> tuple[User | None, Team | None]:
    """Whom the run is pushed to: (user, None), (None, team), or (None, None) for the pool."""
    given = [payload.user is not None, payload.team is not None, payload.unassign]
    if sum(given) != 1:
        raise InvalidInput(
            "Say where the run goes: exactly one of “user” (a username), “team” (a team "
            "slug) or “unassign”: true (back to the shared pool)."
        )
    if payload.user is not None:
        return _user_named(payload.user), None
    if payload.team is not None:
        # Only teams the manager belongs to (and the run's own) are named, not every team.
        team = Team.objects.filter(
            slug=payload.team, pk__in={run.team_id, *access.team_ids(actor)}
        ).first()
        if team is None:
            raise InvalidInput(f"There is no team “{payload.team}” among your teams.")
        return None, team
    return None, None


@api.post("/runs/{run_id}/reassign", response={200: RunChangedOut, **ERRORS},
          summary="Push a run's open items to a person or a team, or back to the pool")
def run_reassign(request: HttpRequest, run_id: int, payload: ReassignIn,
                 idempotency_key: str = IdempotencyKeyHeader):
    """Live claims held by anyone but the target are revoked; their holders' next complete,
    abandon or extend is refused with who took the item and why. `changed`: the open items
    pushed."""
    run = access.get_run(request.auth, run_id, Capability.MANAGE)
    assignee, assigned_team = _push_target(request.auth, run, payload)
    return _once(request, idempotency_key, lambda: Outcome(200, _run_body(run.pk, changed=(
        push.run_reassign(run_id=run.pk, actor=request.auth, reason=payload.reason,
                          assignee=assignee, assigned_team=assigned_team)
    ))))


@api.post("/runs/{run_id}/restart", response={200: RunChangedOut, **ERRORS},
          summary="Restart a run from step K (done, claimed and stuck items from K on)")
def run_restart(request: HttpRequest, run_id: int, payload: RestartIn,
                idempotency_key: str = IdempotencyKeyHeader):
    run = access.get_run(request.auth, run_id, Capability.MANAGE)
    return _once(request, idempotency_key, lambda: Outcome(200, _run_body(run.pk, changed=(
        push.run_restart(run_id=run.pk, from_position=payload.from_position,
                         actor=request.auth, reason=payload.reason)
    ))))


@api.post("/runs/{run_id}/cancel", response={200: RunOut, **ERRORS},
          summary="Cancel a run that is no longer needed (its live claims are revoked)")
def run_cancel(request: HttpRequest, run_id: int, payload: CancelIn,
               idempotency_key: str = IdempotencyKeyHeader):
    run = access.get_run(request.auth, run_id, Capability.MANAGE)
    return _once(request, idempotency_key, lambda: Outcome(200, _run_body(
        push.run_cancel(run_id=run.pk, actor=request.auth, reason=payload.reason).pk
    )))


@api.post("/items/{item_id}/requeue", response={200: RunItemOut, **ERRORS},
          summary="Send a stuck item back to the pool with fresh attempts")
def item_requeue(request: HttpRequest, item_id: int, payload: RequeueIn | None = None,
                 idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.MANAGE)
    reason = payload.reason if payload is not None else ""
    return _once(request, idempotency_key, lambda: Outcome(200, _item_body(
        services.item_requeue(item_id=item.pk, actor=request.auth, reason=reason).pk
    )))


@api.post("/items/{item_id}/skip", response={200: RunItemOut, **ERRORS},
          summary="Skip an open item that is not needed, with a reason")
def item_skip(request: HttpRequest, item_id: int, payload: SkipIn,
              idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.MANAGE)
    return _once(request, idempotency_key, lambda: Outcome(200, _item_body(
        services.item_skip(item_id=item.pk, actor=request.auth, reason=payload.reason).pk
    )))


@api.post("/items/{item_id}/assign", response={200: RunItemOut, **ERRORS},
          summary="Push one open item to a person (from the stuck lane too)")
def item_assign(request: HttpRequest, item_id: int, payload: AssignIn,
                idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.MANAGE)
    assignee = _user_named(payload.user)
    return _once(request, idempotency_key, lambda: Outcome(200, _item_body(
        push.item_assign(item_id=item.pk, actor=request.auth, assignee=assignee,
                         reason=payload.reason).pk
    )))


# --- Reads ----------------------------------------------------------------------------------


def _username(user: User | None) -> str | None:
    return user.username if user is not None else None


def _slug(team: Team | None) -> str | None:
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
        state=item.state, holder=_username(item.holder), token=item.token,
        attempts=item.attempts, lease_expires_at=item.lease_expires_at,
        prerequisites=sorted(pre.pk for pre in item.prerequisites.all()),
        assignee=_username(item.assignee), assigned_team=_slug(item.assigned_team),
    )


def _run_fields(run: Run) -> dict:
    return dict(
        id=run.pk, title=run.title, ref=run.ref, severity=run.severity, state=run.state,
        team=run.team.slug, mode=run.mode, scope=run.scope, nature=run.nature,
        recommended_mode=run.recommended_mode, assignee=_username(run.assignee),
        assigned_team=_slug(run.assigned_team),
        items=[_item_out(item) for item in _items_out().filter(run=run)],
    )


def _run_body(run_id: int, **extra) -> dict:
    """The run as GET /runs/{id} answers it, read afresh (after an action), as JSON."""
    run = Run.objects.select_related("team", "assignee", "assigned_team").get(pk=run_id)
    schema = RunChangedOut if "changed" in extra else RunOut
    return schema(**_run_fields(run), **extra).model_dump(mode="json")


def _item_body(item_id: int) -> dict:
    return _item_out(_items_out().get(pk=item_id)).model_dump(mode="json")


@api.get("/runs", response={200: list[RunSummaryOut], **ERRORS},
         summary="The runs I may see, newest first")
def run_list(request: HttpRequest, state: RunState | None = None,
             limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0)):
    runs = (
        access.visible_runs(request.auth)
        .select_related("team", "assignee", "assigned_team")
        .order_by("-launched_at", "-pk")
    )
    if state is not None:
        runs = runs.filter(state=state)
    return [
        RunSummaryOut(
            id=run.pk, title=run.title, ref=run.ref, severity=run.severity, state=run.state,
            team=run.team.slug, mode=run.mode, launched_at=run.launched_at,
            assignee=_username(run.assignee), assigned_team=_slug(run.assigned_team),
        )
        for run in runs[offset:offset + limit]
    ]


@api.get("/runs/{run_id}", response={200: RunOut, **ERRORS}, summary="A run with its items")
def run_detail(request: HttpRequest, run_id: int):
    run = access.get_run(request.auth, run_id)
    return RunOut(**_run_fields(run))


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
    match = getattr(request, "resolver_match", None)
    opening = "Invalid request" if match is None or match.url_name != "hooks_alertmanager" \
        else "This is not an Alertmanager webhook payload (version 4)"
    return _detail(request, f"{opening}: " + "; ".join(
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
