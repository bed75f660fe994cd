"""The one place that decides who may see and do what (the only caller of django-guardian).

A user's capabilities on a team are object permissions on that team. Everything a view, API
endpoint, export or fragment shows is fetched through these functions, and an object outside
the user's teams is missing (404), never forbidden, so its existence is not revealed.
"""

from enum import StrEnum

from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import Http404
from guardian.shortcuts import assign_perm, get_objects_for_user, remove_perm

from accounts.models import Role, Team, User


class Capability(StrEnum):
    WORK = "accounts.work_team"
    MANAGE = "accounts.manage_team"
    AUDIT = "accounts.audit_team"


ROLE_CAPABILITIES: dict[str, tuple[Capability, ...]] = {
    Role.STAFF: (Capability.WORK,),
    Role.MANAGER: (Capability.WORK, Capability.MANAGE, Capability.AUDIT),
    Role.AUDITOR: (Capability.AUDIT,),
}


def teams_for(user: User, *capabilities: Capability) -> QuerySet[Team]:
    """Teams on which the user holds any of the capabilities (all capabilities if none named)."""
    if not user.is_authenticated or not user.is_active:
        return Team.objects.none()
    wanted = [str(c) for c in (capabilities or tuple(Capability))]
    return get_objects_for_user(
        user, wanted, klass=Team, any_perm=True, accept_global_perms=False
    )


def has_capability(user: User, team: Team, capability: Capability) -> bool:
    return teams_for(user, capability).filter(pk=team.pk).exists()


def grant_role(*, user: User, team: Team, role: str) -> None:
    for capability in ROLE_CAPABILITIES[role]:
        assign_perm(str(capability), user, team)


def revoke_all(*, user: User, team: Team) -> None:
    for capability in Capability:
        remove_perm(str(capability), user, team)


def visible_runs(user: User) -> "QuerySet":
    from board.models import Run

    return Run.objects.filter(team__in=teams_for(user))


def workable_runs(user: User) -> "QuerySet":
    from board.models import Run

    return Run.objects.filter(team__in=teams_for(user, Capability.WORK))


def visible_runbooks(user: User) -> "QuerySet":
    from checklists.models import Runbook

    return Runbook.objects.filter(team__in=teams_for(user))


def get_run(user: User, run_id: int, capability: Capability | None = None):
    """The run if the user may see it (else 404) and holds `capability` on it (else 403)."""
    run = visible_runs(user).select_related("team", "runbook").filter(pk=run_id).first()
    if run is None:
        raise Http404("No such run.")
    if capability is not None and not has_capability(user, run.team, capability):
        raise PermissionDenied(_refusal(capability))
    return run


def get_item(user: User, item_id: int, capability: Capability | None = None):
    from board.models import Item

    item = (
        Item.objects.filter(run__in=visible_runs(user), pk=item_id)
        .select_related("run", "run__team", "holder")
        .first()
    )
    if item is None:
        raise Http404("No such item.")
    if capability is not None and not has_capability(user, item.run.team, capability):
        raise PermissionDenied(_refusal(capability))
    return item


def get_runbook(user: User, runbook_id: int):
    runbook = visible_runbooks(user).select_related("team").filter(pk=runbook_id).first()
    if runbook is None:
        raise Http404("No such runbook.")
    return runbook


def _refusal(capability: Capability) -> str:
    return {
        Capability.WORK: "Only staff of this team can work its items.",
        Capability.MANAGE: "Only managers of this team can do that.",
        Capability.AUDIT: "Only auditors and managers of this team can export its trail.",
    }[capability]
