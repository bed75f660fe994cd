import hashlib
import secrets
from datetime import UTC, datetime, timedelta

from django.contrib.auth.models import Group, Permission
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from accounts.access import grant_role
from accounts.models import ApiToken, Role, Team, User

# API tokens read "pb_…", so a leaked one is recognisable (and secret scanners can match it).
API_TOKEN_PREFIX = "pb_"
# How stale `last_used_at` may get: recording every call would make each API read a write.
API_TOKEN_USE_RESOLUTION = timedelta(minutes=1)

# Model permissions each role's group carries (object permissions on teams say where).
ROLE_MODEL_PERMISSIONS: dict[str, list[str]] = {
    Role.STAFF: ["board.view_run", "board.view_item", "board.view_checkpoint"],
    Role.MANAGER: [
        "board.view_run", "board.view_item", "board.view_checkpoint", "board.add_run",
        "checklists.add_runbook", "checklists.view_runbook",
    ],
    Role.AUDITOR: ["board.view_run", "board.view_item", "board.view_checkpoint"],
    Role.INTEGRATION: ["board.view_run", "board.add_run"],
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
    try:
        User.username_validator(username)
    except ValidationError as error:
        raise ValueError(f"Username {username!r}: {' '.join(error.messages)}") from None
    team = team_get_or_create(slug=team_slug)
    user, created = User.objects.get_or_create(username=username, defaults={"email": email})
    if password is not None:
        try:
            validate_password(password, user)
        except ValidationError as error:
            raise ValueError(f"Password refused: {' '.join(error.messages)}") from None
    generated = None
    if password is None and created:
        password = generated = secrets.token_urlsafe(9)
    if password is not None:
        user.set_password(password)
        user.save(update_fields=["password"])
    user.groups.add(role_group(role))
    grant_role(user=user, team=team, role=role)
    return user, generated


# --- API tokens -----------------------------------------------------------------------------


def api_token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def api_token_create(*, user: User, name: str = "api") -> tuple[ApiToken, str]:
    """Create an API token for `user`. Returns the row and the token itself, which is not
    stored (only its digest is) and so must be shown to the caller now or never."""
    token = API_TOKEN_PREFIX + secrets.token_urlsafe(32)
    api_token = ApiToken.objects.create(
        user=user, name=name.strip() or "api", digest=api_token_digest(token)
    )
    return api_token, token


def api_token_authenticate(*, token: str, now: datetime | None = None) -> User | None:
    """The active user a presented token belongs to, or None (unknown, revoked, inactive).

    The token is high-entropy and looked up by its digest, so comparing digests in the
    database reveals nothing usable through timing."""
    if not token.startswith(API_TOKEN_PREFIX):
        return None
    user = next(iter(User.objects.raw(_TOKEN_USER_SQL, [api_token_digest(token)])), None)
    if user is None or not user.is_active:
        return None
    now = now or timezone.now()
    last_used = user.api_token_last_used_at  # an extra column: not converted by the ORM
    if last_used is not None and timezone.is_naive(last_used):
        last_used = last_used.replace(tzinfo=UTC)  # SQLite keeps UTC, without the zone
    if last_used is None or now - last_used >= API_TOKEN_USE_RESOLUTION:
        ApiToken.objects.filter(pk=user.api_token_id).update(last_used_at=now)
    return user


# The token's user, with the token's id and last use: on every API request, so written out
# once here rather than by the ORM each time (select_related took it a millisecond).
_TOKEN_USER_SQL = f"""
    SELECT u.*, t.id AS api_token_id, t.last_used_at AS api_token_last_used_at
    FROM {User._meta.db_table} u JOIN {ApiToken._meta.db_table} t ON t.user_id = u.id
    WHERE t.digest = %s
"""


def api_token_revoke(*, api_token: ApiToken) -> None:
    """Revoke a token: the row goes, so the token authenticates nothing from now on."""
    api_token.delete()
