"""Demo data for a fresh install (`make run` calls this every time it starts).

Idempotent: a second call adds nothing. It never stores a secret in the repository: each demo
password is generated once and kept in VAR_DIR (gitignored, mode 0600), so the logins stay
the same across restarts and are printed every time.
"""

import json
import os
import secrets
from pathlib import Path

from django.apps import apps
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Role, Team
from accounts.services import team_get_or_create, user_create
from board.models import Run, Severity
from board.services import CLI_ACTOR, run_launch
from checklists.models import Runbook
from checklists.parsing import parse_runbook
from checklists.services import RunbookFormatError, runbook_import

DEMO_TEAM = "ops"
DEMO_USERS: tuple[tuple[str, str], ...] = (
    ("staff", Role.STAFF),
    ("staff2", Role.STAFF),
    ("manager", Role.MANAGER),
    ("auditor", Role.AUDITOR),
)
DEMO_RUNBOOK = "database-failover"
DEMO_RUN_TITLE = "Primary database unreachable"
DEMO_RUN_REF = "INC-DEMO-1"
PASSWORD_FILE = "demo-passwords.json"


def demo_dir() -> Path:
    return Path(apps.get_app_config("checklists").path) / "demo"


class Command(BaseCommand):
    help = (
        "Load the demo: team ops, four users (staff, staff2, manager, auditor), three "
        "runbooks and one run. Safe to repeat: existing data is left as it is."
    )

    def handle(self, *args, **options):
        passwords, source = self._passwords()
        with transaction.atomic():
            team = self._team()
            self._users(team, passwords)
            self._runbooks(team)
            self._run(team)
        self._print_logins(passwords, source)

    # --- passwords ----------------------------------------------------------------------

    def _passwords(self) -> tuple[dict[str, str], str]:
        shared = os.environ.get("DEMO_PASSWORD", "")
        if shared:
            return {username: shared for username, _ in DEMO_USERS}, "the DEMO_PASSWORD variable"
        path = Path(settings.VAR_DIR) / PASSWORD_FILE
        stored: dict[str, str] = {}
        if path.exists():
            try:
                stored = json.loads(path.read_text())
            except (OSError, ValueError):
                raise CommandError(
                    f"{path} is not readable JSON: delete it to generate new demo passwords"
                ) from None
            if not isinstance(stored, dict) or not all(
                isinstance(v, str) and v for v in stored.values()
            ):
                raise CommandError(
                    f"{path} does not map usernames to passwords: delete it to start again"
                )
        missing = [username for username, _ in DEMO_USERS if username not in stored]
        if missing:
            for username in missing:
                stored[username] = secrets.token_urlsafe(12)
            _write_private(path, json.dumps(stored, indent=2) + "\n")
        return {username: stored[username] for username, _ in DEMO_USERS}, str(path)

    # --- data ---------------------------------------------------------------------------

    def _team(self) -> Team:
        existed = Team.objects.filter(slug=DEMO_TEAM).exists()
        team = team_get_or_create(slug=DEMO_TEAM, name="Ops")
        self.stdout.write(f"team {team.slug}: {'already present' if existed else 'created'}")
        return team

    def _users(self, team: Team, passwords: dict[str, str]) -> None:
        for username, role in DEMO_USERS:
            # Setting the password every time keeps the printed table true even if the
            # password file was replaced or DEMO_PASSWORD changed since the last run.
            user_create(
                username=username, role=role, team_slug=team.slug, password=passwords[username]
            )

    def _runbooks(self, team: Team) -> None:
        files = sorted(demo_dir().glob("*.md"))
        if not files:
            raise CommandError(f"no demo runbooks found in {demo_dir()}")
        for path in files:
            data = path.read_bytes()
            try:
                slug = parse_runbook(data, path.name).slug
                latest = Runbook.objects.filter(team=team, slug=slug).order_by("-version").first()
                if latest is not None:
                    self.stdout.write(f"runbook {slug}: already present (v{latest.version})")
                    continue
                runbook, _ = runbook_import(data=data, filename=path.name, team=team)
            except RunbookFormatError as error:
                raise CommandError(f"{path.name}: {error}") from None
            self.stdout.write(
                f"runbook {runbook.slug}: imported v{runbook.version} "
                f"({runbook.steps.count()} steps)"
            )

    def _run(self, team: Team) -> None:
        existing = Run.objects.filter(team=team, ref=DEMO_RUN_REF).order_by("id").first()
        if existing is not None:
            self.stdout.write(f"run {DEMO_RUN_REF}: already present (run {existing.pk})")
            return
        runbook = (
            Runbook.objects.filter(team=team, slug=DEMO_RUNBOOK).order_by("-version").first()
        )
        if runbook is None:
            raise CommandError(f"the demo runbook {DEMO_RUNBOOK!r} is missing from team {team}")
        run = run_launch(
            runbook=runbook, title=DEMO_RUN_TITLE, actor=None, actor_name=CLI_ACTOR,
            severity=Severity.SEV2, ref=DEMO_RUN_REF, team=team,
        )
        self.stdout.write(f"run {DEMO_RUN_REF}: launched (run {run.pk})")

    # --- output -------------------------------------------------------------------------

    def _print_logins(self, passwords: dict[str, str], source: str) -> None:
        rows = [("username", "role", "password")] + [
            (username, str(role), passwords[username]) for username, role in DEMO_USERS
        ]
        widths = [max(len(row[column]) for row in rows) for column in range(3)]
        self.stdout.write("")
        self.stdout.write(f"Demo logins (team {DEMO_TEAM}; passwords from {source}):")
        for row in rows:
            self.stdout.write("  " + "  ".join(
                cell.ljust(width) for cell, width in zip(row, widths, strict=True)
            ).rstrip())


def _write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read, replacing any old one in one step."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        # The mode given to os.open is masked by the umask; set it explicitly.
        os.chmod(temporary, 0o600)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
