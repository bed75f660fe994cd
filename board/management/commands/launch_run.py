from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Team
from board.errors import InvalidInput
from board.models import Severity
from board.services import CLI_ACTOR, run_launch
from checklists.models import Runbook


class Command(BaseCommand):
    help = (
        "Launch a run of the latest version of a runbook and print the new run's id "
        "(only the id, so scripts can capture it)."
    )

    def add_arguments(self, parser):
        parser.add_argument("slug", help="runbook slug")
        parser.add_argument("--title", required=True)
        parser.add_argument(
            "--severity", type=int, choices=Severity.values, default=Severity.SEV3,
            help="1 (critical) to 4 (low); default 3",
        )
        parser.add_argument("--ref", default="", help="incident reference, e.g. INC-1234")
        parser.add_argument("--team", default=None, help="owning team slug (default: the "
                            "DEFAULT_TEAM_SLUG setting)")

    def handle(self, *args, slug: str, title: str, severity: int, ref: str, team: str | None,
               **options):
        team_slug = team or settings.DEFAULT_TEAM_SLUG
        owner = Team.objects.filter(slug=team_slug).first()
        if owner is None:
            raise CommandError(f"no team with slug {team_slug!r}")
        runbook = Runbook.objects.filter(team=owner, slug=slug).order_by("-version").first()
        if runbook is None:
            available = sorted(
                set(Runbook.objects.filter(team=owner).values_list("slug", flat=True))
            )
            listing = ", ".join(available) if available else "none (import one first)"
            raise CommandError(
                f"no runbook {slug!r} in team {owner.slug}; available: {listing}"
            )
        try:
            run = run_launch(
                runbook=runbook, title=title, actor=None, actor_name=CLI_ACTOR,
                severity=severity, ref=ref, team=owner,
            )
        except InvalidInput as error:
            raise CommandError(error.message) from None
        self.stdout.write(str(run.pk))
