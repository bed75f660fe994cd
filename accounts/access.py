"""The one place that decides who may see and do what (the only caller of django-guardian).

A user's capabilities on a team are object permissions on that team. Everything a view, API
endpoint, export or fragment shows is fetched through these functions, and an object outside
the user's teams is missing (404), never forbidden, so its existence is not revealed.
"""

from enum import StrEnum
from functools import cache

from django.core.exceptions import PermissionDenied
from django.db import connection
from django.db.models import Q, QuerySet
from django.http import Http404
from guardian.shortcuts import assign_perm, remove_perm

from accounts.models import Role, Team, User


class Capability(StrEnum):
    WORK = "accounts.work_team"
    MANAGE = "accounts.manage_team"
    AUDIT = "accounts.audit_team"
    LAUNCH = "accounts.launch_team"  # managers launch by MANAGE; integrations by this alone


ROLE_CAPABILITIES: dict[str, tuple[Capability, ...]] = {
    Role.STAFF: (Capability.WORK,),
    Role.MANAGER: (Capability.WORK, Capability.MANAGE, Capability.AUDIT),
    Role.AUDITOR: (Capability.AUDIT,),
    Role.INTEGRATION: (Capability.LAUNCH,),
}


# Where team_ids keeps what it read, on the user object.
_REMEMBERED = "_pullboard_team_ids"


def team_ids(user: User, *capabilities: Capability) -> frozenset[int]:
    """Ids of the teams on which the user holds any of the capabilities (all if none named).

    Read once per user object and remembered on it: a request loads its user afresh, so a
    page or an API call asks the database once, however many checks it makes, and a role
    granted or revoked counts from the next request on. grant_role and revoke_all forget
    what they change on the object they are given.
    """
    if not user.is_authenticated or not user.is_active:
        return frozenset()
    held = user.__dict__.get(_REMEMBERED)
    if held is None:
        held = user.__dict__[_REMEMBERED] = _capabilities_held(user)
    return frozenset().union(*(held.get(c, ()) for c in (capabilities or tuple(Capability))))


def _capabilities_held(user: User) -> dict[Capability, frozenset[int]]:
    """Every capability of the user, team by team, in one query: guardian's rule for object
    permissions (get_objects_for_user with any_perm and no global permissions: the user's own
    and their groups', all teams for a superuser), read from its tables directly, for all
    capabilities at once."""
    from django.contrib.contenttypes.models import ContentType

    if user.is_superuser:
        every = frozenset(Team.objects.values_list("pk", flat=True))
        return {capability: every for capability in Capability}
    by_codename = {capability.split(".", 1)[1]: capability for capability in Capability}
    team_type = ContentType.objects.get_for_model(Team).pk  # cached by Django after the first
    held: dict[Capability, set[int]] = {}
    with connection.cursor() as cursor:
        cursor.execute(_capabilities_sql(), [user.pk, team_type, *by_codename] * 2)
        for team_pk, codename in cursor.fetchall():
            held.setdefault(by_codename[codename], set()).add(int(team_pk))
    return {capability: frozenset(teams) for capability, teams in held.items()}


@cache
def _capabilities_sql() -> str:
    """The query of _capabilities_held: run on every request, and as SQL text it costs the
    database a few microseconds where the ORM took a millisecond to write it."""
    from django.contrib.auth.models import Permission
    from guardian.models import GroupObjectPermission, UserObjectPermission

    marks = ", ".join(["%s"] * len(Capability))
    memberships = User.groups.through._meta.db_table
    return f"""
        SELECT o.object_pk, p.codename
        FROM {UserObjectPermission._meta.db_table} o
        JOIN {Permission._meta.db_table} p ON p.id = o.permission_id
        WHERE o.user_id = %s AND o.content_type_id = %s AND p.codename IN ({marks})
        UNION
        SELECT o.object_pk, p.codename
        FROM {GroupObjectPermission._meta.db_table} o
        JOIN {Permission._meta.db_table} p ON p.id = o.permission_id
        JOIN {memberships} m ON m.group_id = o.group_id
        WHERE m.user_id = %s AND o.content_type_id = %s AND p.codename IN ({marks})
    """


def teams_for(user: User, *capabilities: Capability) -> QuerySet[Team]:
    """Teams on which the user holds any of the capabilities (all capabilities if none named)."""
    return Team.objects.filter(pk__in=team_ids(user, *capabilities))


def has_capability(user: User, team: Team, capability: Capability) -> bool:
    return team.pk in team_ids(user, capability)


def grant_role(*, user: User, team: Team, role: str) -> None:
    for capability in ROLE_CAPABILITIES[role]:
        assign_perm(str(capability), user, team)
    user.__dict__.pop(_REMEMBERED, None)


def revoke_all(*, user: User, team: Team) -> None:
    for capability in Capability:
        remove_perm(str(capability), user, team)
    user.__dict__.pop(_REMEMBERED, None)


def visible_runs(user: User) -> "QuerySet":
    """The runs of the user's teams, and the runs pushed to one of them."""
    from board.models import Run

    teams = team_ids(user)
    return Run.objects.filter(Q(team_id__in=teams) | Q(assigned_team_id__in=teams))


def run_capability(user: User, run, capability: Capability) -> bool:
    """Whether the user holds `capability` on the run: on its team, or, to work on it, on
    the team it is pushed to."""
    if run.team_id in team_ids(user, capability):
        return True
    return capability == Capability.WORK and run.assigned_team_id is not None and \
        run.assigned_team_id in team_ids(user, Capability.WORK)


def launch_teams(user: User) -> frozenset[int]:
    """The teams whose runs the user may launch: as their manager, or as an integration."""
    return team_ids(user, Capability.MANAGE, Capability.LAUNCH)


def team_members(team: Team, capability: Capability) -> list[User]:
    """The active users holding `capability` on the team, themselves or through a group."""
    from guardian.shortcuts import get_users_with_perms

    codename = capability.split(".", 1)[1]
    return [user for user in get_users_with_perms(
        team, with_group_users=True, only_with_perms_in=[codename]
    ) if user.is_active]


def workable_runs(user: User) -> "QuerySet":
    from board.models import Run

    return Run.objects.filter(team_id__in=team_ids(user, Capability.WORK))


def visible_runbooks(user: User) -> "QuerySet":
    from checklists.models import Runbook

    return Runbook.objects.filter(team_id__in=team_ids(user))


def _one(queryset: QuerySet, missing: str):
    """The one object of a queryset filtered by primary key, else 404 with `missing`. (Not
    first(): its ORDER BY, by the model's ordering, costs the ORM more to write than the
    query costs the database.)"""
    try:
        return queryset.get()
    except queryset.model.DoesNotExist:
        raise Http404(missing) from None


def get_run(user: User, run_id: int, capability: Capability | None = None):
    """The run if the user may see it (else 404) and holds `capability` on it (else 403)."""
    run = _one(visible_runs(user).select_related("team").filter(pk=run_id), "No such run.")
    if capability is not None and not run_capability(user, run, capability):
        raise PermissionDenied(_refusal(capability))
    return run


def get_item(user: User, item_id: int, capability: Capability | None = None):
    from board.models import Item

    item = _one(
        Item.objects.filter(run__in=visible_runs(user), pk=item_id)
        .select_related("run", "run__team", "holder"),
        "No such item.",
    )
    if capability is not None and not run_capability(user, item.run, capability):
        raise PermissionDenied(_refusal(capability))
    return item


def get_runbook(user: User, runbook_id: int):
    return _one(visible_runbooks(user).select_related("team").filter(pk=runbook_id),
                "No such runbook.")


def _refusal(capability: Capability) -> str:
    return {
        Capability.WORK: "Only staff of this team can work its items.",
        Capability.MANAGE: "Only managers of this team can do that.",
        Capability.AUDIT: "Only auditors and managers of this team can export its trail.",
        Capability.LAUNCH: "Only managers of this team can launch its runs.",
    }[capability]
