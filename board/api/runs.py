"""Runs: read them and their trails; launch them, from alerts too; and the managers' push,
restart and cancel, and requeue, skip and assign of items."""


from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from ninja import Query, Router

from accounts import access
from accounts.access import Capability
from accounts.models import Team, User
from board import alerts, push, services
from board.alerts import AlertmanagerWebhook
from board.api.bodies import (
    answer_once,
    item_body,
    run_body,
    run_fields,
    slug_of,
    username_of,
)
from board.api.schemas import (
    ERRORS,
    AlertmanagerOut,
    AssignIn,
    CancelIn,
    CheckpointOut,
    IdempotencyKeyHeader,
    ReassignIn,
    RequeueIn,
    RestartIn,
    RunChangedOut,
    RunItemOut,
    RunLaunchIn,
    RunOut,
    RunSummaryOut,
    SkipIn,
)
from board.errors import InvalidInput
from board.idempotency import Outcome
from board.models import Checkpoint, Run, RunState

router = Router()


@router.get("/runs", response={200: list[RunSummaryOut], **ERRORS},
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
            assignee=username_of(run.assignee), assigned_team=slug_of(run.assigned_team),
        )
        for run in runs[offset:offset + limit]
    ]


@router.get("/runs/{run_id}", response={200: RunOut, **ERRORS}, summary="A run with its items")
def run_detail(request: HttpRequest, run_id: int):
    run = access.get_run(request.auth, run_id)
    return RunOut(**run_fields(run))


@router.get("/runs/{run_id}/checkpoints", response={200: list[CheckpointOut], **ERRORS},
         summary="A run's trail, oldest first (seq counts from 1)")
def run_checkpoints(request: HttpRequest, run_id: int):
    run = access.get_run(request.auth, run_id)
    rows = (
        Checkpoint.objects.filter(run_id=run.pk)
        .order_by("id")
        .values_list("at", "kind", "item_id", "actor_name", "token", "reason", "data")
    )
    return [
        CheckpointOut(seq=seq, at=at, kind=kind, item=item_id, actor=actor, token=token,
                      reason=reason, data=data)
        for seq, (at, kind, item_id, actor, token, reason, data) in enumerate(rows, start=1)
    ]


# --- Launch, from alerts too ----------------------------------------------------------------


@router.post("/runs", response={200: RunOut, 201: RunOut, **ERRORS},
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
        return Outcome(201 if launched else 200, run_body(run.pk))

    return answer_once(request, idempotency_key, launch)


@router.post(
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


def _staff_named(username: str, run: Run) -> User:
    """The staff member of the run's team with this username. Whether the name belongs to
    someone else, or to no one, is not told apart: a manager learns no other team's people."""
    user = next((member for member in access.team_members(run.team, Capability.WORK)
                 if member.username == username), None)
    if user is None:
        raise InvalidInput(f"“{username}” is not staff on {run.team.name}: push to someone "
                           "who works for the run's team.")
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
        return _staff_named(payload.user, run), None
    if payload.team is not None:
        # Only teams the manager belongs to (and the run's own) are named, not every team.
        team = Team.objects.filter(
            slug=payload.team, pk__in={run.team_id, *access.team_ids(actor)}
        ).first()
        if team is None:
            raise InvalidInput(f"There is no team “{payload.team}” among your teams.")
        return None, team
    return None, None


@router.post("/runs/{run_id}/reassign", response={200: RunChangedOut, **ERRORS},
          summary="Push a run's open items to a person or a team, or back to the pool")
def run_reassign(request: HttpRequest, run_id: int, payload: ReassignIn,
                 idempotency_key: str = IdempotencyKeyHeader):
    """Live claims held by anyone but the target are revoked; their holders' next complete,
    abandon or extend is refused with who took the item and why. `changed`: the open items
    pushed."""
    run = access.get_run(request.auth, run_id, Capability.MANAGE)
    assignee, assigned_team = _push_target(request.auth, run, payload)
    return answer_once(request, idempotency_key, lambda: Outcome(200, run_body(run.pk, changed=(
        push.run_reassign(run_id=run.pk, actor=request.auth, reason=payload.reason,
                          assignee=assignee, assigned_team=assigned_team)
    ))))


@router.post("/runs/{run_id}/restart", response={200: RunChangedOut, **ERRORS},
          summary="Restart a run from step K (done, claimed and stuck items from K on)")
def run_restart(request: HttpRequest, run_id: int, payload: RestartIn,
                idempotency_key: str = IdempotencyKeyHeader):
    run = access.get_run(request.auth, run_id, Capability.MANAGE)
    return answer_once(request, idempotency_key, lambda: Outcome(200, run_body(run.pk, changed=(
        push.run_restart(run_id=run.pk, from_position=payload.from_position,
                         actor=request.auth, reason=payload.reason)
    ))))


@router.post("/runs/{run_id}/cancel", response={200: RunOut, **ERRORS},
          summary="Cancel a run that is no longer needed (its live claims are revoked)")
def run_cancel(request: HttpRequest, run_id: int, payload: CancelIn,
               idempotency_key: str = IdempotencyKeyHeader):
    run = access.get_run(request.auth, run_id, Capability.MANAGE)
    return answer_once(request, idempotency_key, lambda: Outcome(200, run_body(
        push.run_cancel(run_id=run.pk, actor=request.auth, reason=payload.reason).pk
    )))


@router.post("/items/{item_id}/requeue", response={200: RunItemOut, **ERRORS},
          summary="Send a stuck item back to the pool with fresh attempts")
def item_requeue(request: HttpRequest, item_id: int, payload: RequeueIn | None = None,
                 idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.MANAGE)
    reason = payload.reason if payload is not None else ""
    return answer_once(request, idempotency_key, lambda: Outcome(200, item_body(
        services.item_requeue(item_id=item.pk, actor=request.auth, reason=reason).pk
    )))


@router.post("/items/{item_id}/skip", response={200: RunItemOut, **ERRORS},
          summary="Skip an open item that is not needed, with a reason")
def item_skip(request: HttpRequest, item_id: int, payload: SkipIn,
              idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.MANAGE)
    return answer_once(request, idempotency_key, lambda: Outcome(200, item_body(
        services.item_skip(item_id=item.pk, actor=request.auth, reason=payload.reason).pk
    )))


@router.post("/items/{item_id}/assign", response={200: RunItemOut, **ERRORS},
          summary="Push one open item to a person (from the stuck lane too)")
def item_assign(request: HttpRequest, item_id: int, payload: AssignIn,
                idempotency_key: str = IdempotencyKeyHeader):
    item = access.get_item(request.auth, item_id, Capability.MANAGE)
    assignee = _staff_named(payload.user, item.run)
    return answer_once(request, idempotency_key, lambda: Outcome(200, item_body(
        push.item_assign(item_id=item.pk, actor=request.auth, assignee=assignee,
                         reason=payload.reason).pk
    )))
