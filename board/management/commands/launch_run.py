from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from accounts.models import Team, User
from board.errors import InvalidInput
from board.models import FailureNature, FailureScope, RunMode, Severity
from board.services import CLI_ACTOR, recommend_mode, run_launch_once
from checklists.models import Runbook


class Command(BaseCommand):
    help = (
        "Launch a run of the latest version of a runbook and print the run's id (only the "
        "id, so scripts can capture it). An open run of the runbook with the same --ref is "
        "not launched twice: its id is printed."
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
        parser.add_argument("--scope", choices=FailureScope.values, default="",
                            help="how much is down: partial or total")
        parser.add_argument("--nature", choices=FailureNature.values, default="",
                            help="whether it may pass: transient or persistent")
        parser.add_argument("--mode", choices=RunMode.values, default=None,
                            help="recovery mode (default: what --scope and --nature recommend)")
        parser.add_argument("--assign", default=None, metavar="USERNAME",
                            help="push the run to this staff member from the start")

    def handle(self, *args, slug: str, title: str, severity: int, ref: str, team: str | None,
               scope: str, nature: str, mode: str | None, assign: str | None, **options):
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
        assignee = None
        if assign:
            assignee = User.objects.filter(username=assign).first()
            if assignee is None:
                raise CommandError(f"no user {assign!r}")
        try:
            run, launched = run_launch_once(
                runbook=runbook, title=title, actor=None, actor_name=CLI_ACTOR,
                severity=severity, ref=ref, team=owner, scope=scope, nature=nature, mode=mode,
                assignee=assignee,
            )
        except InvalidInput as error:
            raise CommandError(error.message) from None
        if not launched:
            self.stderr.write(f"run {run.pk} of {slug} for {ref} is already open: not launched "
                              "again")
        elif scope and nature:
            recommended, reason = recommend_mode(scope, nature)
            self.stderr.write(f"recommended {recommended}: {reason}")
        self.stdout.write(str(run.pk))
