import secrets

from django.contrib.auth.models import Group, Permission
from django.db import transaction
from django.utils.text import slugify

from accounts.access import grant_role
from accounts.models import Role, Team, User

# Model permissions each role's group carries (object permissions on teams say where).
ROLE_MODEL_PERMISSIONS: dict[str, list[str]] = {
    Role.STAFF: ["board.view_run", "board.view_item", "board.view_checkpoint"],
    Role.MANAGER: [
        "board.view_run", "board.view_item", "board.view_checkpoint", "board.add_run",
        "checklists.add_runbook", "checklists.view_runbook",
    ],
    Role.AUDITOR: ["board.view_run", "board.view_item", "board.view_checkpoint"],
}


def role_group(role: str) -> Group:
    group, _ = Group.objects.get_or_create(name=role)
    wanted = []
    for dotted in ROLE_MODEL_PERMISSIONS[role]:
        app_label, codename = dotted.split(".")
        wanted.extend(
            Permission.objects.filter(content_type__app_label=app_label, codename=codename)
        )
    group.permissions.add(*wanted)
    return group


def team_get_or_create(*, slug: str, name: str = "") -> Team:
    slug = slugify(slug)
    if not slug:
        raise ValueError("A team needs a slug of letters, digits or dashes.")
    team, _ = Team.objects.get_or_create(
        slug=slug, defaults={"name": name or slug.replace("-", " ").title()}
    )
    return team


@transaction.atomic
def user_create(
    *, username: str, role: str, team_slug: str, password: str | None = None, email: str = ""
) -> tuple[User, str | None]:
    """Create (or update) a user with a role on a team. Returns the user and the password if
    one was generated, so the caller can show it once."""
    if role not in Role.values:
        raise ValueError(f"Unknown role {role!r}: choose one of {', '.join(Role.values)}.")
    team = team_get_or_create(slug=team_slug)
    user, created = User.objects.get_or_create(username=username, defaults={"email": email})
    generated = None
    if password is None and created:
        password = generated = secrets.token_urlsafe(9)
    if password is not None:
        user.set_password(password)
        user.save(update_fields=["password"])
    user.groups.add(role_group(role))
    grant_role(user=user, team=team, role=role)
    return user, generated
