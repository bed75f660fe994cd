"""Launch a run: the recovery mode a failure suggests, the steps copied into items, one open
run per incident and runbook."""


from django.db import IntegrityError, transaction

from accounts.models import Team, User
from board.errors import InvalidInput
from board.models import (
    CheckpointKind,
    FailureNature,
    FailureScope,
    Item,
    ItemState,
    Run,
    RunMode,
    RunState,
)
from board.services.assignment import assignment_check, notify_assignment
from board.services.checkpoints import checkpoint_append
from checklists.models import Runbook

# --- Launch ---------------------------------------------------------------------------------


def recommend_mode(scope: str, nature: str) -> tuple[str, str]:
    """The recovery mode the two facts about a failure suggest, with a one-line reason
    (background/push-pull-recovery: transient, partial failures resume by pull; persistent,
    total ones restart by push from a safe step; mixed ones push to a team that pulls)."""
    if not scope or not nature:
        return RunMode.PULL, ("Pull is the default: staff take the next item from the pool, "
                              "and an interruption costs one item, not the list.")
    if scope == FailureScope.PARTIAL and nature == FailureNature.TRANSIENT:
        return RunMode.PULL, ("A transient, partial failure: resume item by item from the "
                              "pool; whoever is free pulls the next step.")
    if scope == FailureScope.TOTAL and nature == FailureNature.PERSISTENT:
        return RunMode.PUSH, ("A persistent, total failure: restart from a known safe step "
                              "and push the list to the person who will drive it.")
    return RunMode.HYBRID, ("A mixed failure: push the run to one team for control, and let "
                            "its members pull the items within it.")


def launch_key(runbook: Runbook, ref: str) -> str:
    # Case-folded: INC-900 and inc-900 are one incident.
    return f"{runbook.team_id}:{runbook.slug}:{ref.casefold()}" if ref else ""


def run_launch(**kwargs) -> Run:
    """run_launch_once, for callers that do not need to know whether the run is new."""
    return run_launch_once(**kwargs)[0]


def run_launch_once(
    *,
    runbook: Runbook,
    title: str,
    actor: User | None,
    severity: int = 3,
    ref: str = "",
    team: Team | None = None,
    scope: str = "",
    nature: str = "",
    mode: str | None = None,
    assignee: User | None = None,
    assigned_team: Team | None = None,
    actor_name: str | None = None,
) -> tuple[Run, bool]:
    """Copy the runbook's steps into a new run's items (items with prerequisites wait); or,
    when an open run of this runbook already has this incident reference, that run: (run,
    launched). `mode` None follows the recommendation of `scope` and `nature`; the run is
    pushed to `assignee` or `assigned_team` from the start when one is given."""
    title, ref = title.strip(), ref.strip()
    if not title:
        raise InvalidInput("A run needs a title.")
    if severity not in (1, 2, 3, 4):
        raise InvalidInput("Severity must be 1 (critical) to 4 (low).")
    if scope not in ("", *FailureScope.values):
        raise InvalidInput(f"Scope must be one of {', '.join(FailureScope.values)}.")
    if nature not in ("", *FailureNature.values):
        raise InvalidInput(f"Nature must be one of {', '.join(FailureNature.values)}.")
    if mode not in (None, *RunMode.values):
        raise InvalidInput(f"Mode must be one of {', '.join(RunMode.values)}.")
    recommended, _reason = recommend_mode(scope, nature)
    team = team or runbook.team
    key = launch_key(runbook, ref)
    with transaction.atomic():
        if key:
            existing = Run.objects.filter(launch_key=key, state=RunState.ACTIVE).first()
            if existing is not None:
                return existing, False
        assignment_check(team=team, assignee=assignee, assigned_team=assigned_team, actor=actor)
        try:
            # A savepoint: two launches of one incident at once meet at the unique index
            # run_one_open_per_ref, and the second then returns the first one's run.
            with transaction.atomic():
                run = Run.objects.create(
                    runbook=runbook, team=team, title=title, severity=severity, ref=ref,
                    launch_key=key, scope=scope, nature=nature, recommended_mode=recommended,
                    mode=mode or recommended, assignee=assignee, assigned_team=assigned_team,
                    lease_duration=runbook.lease_duration,
                    max_attempts=runbook.max_attempts,
                    max_lease=runbook.max_lease or 4 * runbook.lease_duration,
                    wip_limit=runbook.wip_limit,
                    launched_by=actor,
                )
        except IntegrityError:
            if not key:
                raise
            return Run.objects.get(launch_key=key, state=RunState.ACTIVE), False
        item_count = _copy_steps(run, runbook)
        checkpoint_append(
            run_id=run.pk,
            kind=CheckpointKind.LAUNCHED,
            actor=actor,
            actor_name=actor_name,
            data={
                "runbook": runbook.slug,
                "version": runbook.version,
                "items": item_count,
                "severity": severity,
                "ref": run.ref,
                "scope": scope,
                "nature": nature,
                "recommended_mode": recommended,
                "mode": run.mode,
                "assignee": assignee.username if assignee else None,
                "assigned_team": assigned_team.slug if assigned_team else None,
            },
        )
    if assignee or assigned_team:
        notify_assignment(run=run, actor=actor, reason="", launched=True)
    return run, True


def _copy_steps(run: Run, runbook: Runbook) -> int:
    steps = list(runbook.steps.order_by("position").prefetch_related("prerequisites"))
    items = Item.objects.bulk_create(
        Item(
            run=run,
            step=step,
            position=step.position,
            key=step.key,
            title=step.title,
            body=step.body,
            section=step.section,
            section_note=step.section_note,
            state=ItemState.WAITING if step.prerequisites.all() else ItemState.AVAILABLE,
            assignee=run.assignee,
            assigned_team=run.assigned_team,
        )
        for step in steps
    )
    item_by_step = {step.pk: item for step, item in zip(steps, items, strict=True)}
    Through = Item.prerequisites.through
    Through.objects.bulk_create(
        Through(from_item_id=item_by_step[step.pk].pk, to_item_id=item_by_step[pre.pk].pk)
        for step in steps
        for pre in step.prerequisites.all()
    )
    return len(items)
