from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Team
from accounts.services import team_get_or_create
from checklists.services import RunbookFormatError, runbook_import


def _owning_team(slug: str | None) -> Team:
    """The named team, which must exist; without a name the default team, made if missing
    (so a fresh install can import before anyone has created a team)."""
    if slug is None:
        return team_get_or_create(slug=settings.DEFAULT_TEAM_SLUG)
    team = Team.objects.filter(slug=slug).first()
    if team is None:
        known = ", ".join(Team.objects.values_list("slug", flat=True)) or "none yet"
        raise CommandError(
            f"no team {slug!r} (teams: {known}); create_user --team makes one"
        )
    return team


class Command(BaseCommand):
    help = "Import a runbook from a Markdown or YAML file as a new version of its slug."

    def add_arguments(self, parser):
        parser.add_argument("path")
        parser.add_argument("--team", default=None, help="owning team slug (created if missing)")

    def handle(self, *args, path, team, **options):
        source = Path(path)
        try:
            data = source.read_bytes()
        except OSError as error:
            raise CommandError(f"{path}: cannot read the file ({error.strerror})") from None
        try:
            # One transaction: a refused file leaves no trace, not even a new team.
            with transaction.atomic():
                owner = _owning_team(team)
                runbook, warnings = runbook_import(data=data, filename=source.name, team=owner)
        except (RunbookFormatError, ValueError) as error:
            raise CommandError(f"{source.name}: {error}") from None
        for warning in warnings:
            self.stderr.write(f"warning: {source.name}: {warning}")
        self.stdout.write(
            f"imported {runbook.slug} v{runbook.version}: {runbook.steps.count()} steps"
        )
