from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Max

from accounts.models import Team, User
from checklists.models import Runbook, Step
from checklists.parsing import ParsedRunbook, RunbookFormatError, parse_runbook

__all__ = ["RunbookFormatError", "runbook_import"]


def runbook_import(
    *, data: bytes, filename: str, team: Team, actor: User | None = None
) -> tuple[Runbook, list[str]]:
    """Parse and store a runbook as a new version of its slug. Returns it with the parser's
    warnings. Raises RunbookFormatError (one readable line) and then saves nothing."""
    parsed = parse_runbook(data, filename)
    for _attempt in range(3):
        try:
            return _store(parsed, filename=filename, team=team, actor=actor), parsed.warnings
        except IntegrityError:
            # Two imports of the same slug at once took the same version number: retry.
            continue
    raise RunbookFormatError(f"could not store {parsed.slug}: too many concurrent imports")


@transaction.atomic
def _store(parsed: ParsedRunbook, *, filename: str, team: Team, actor: User | None) -> Runbook:
    latest = Runbook.objects.filter(team=team, slug=parsed.slug).aggregate(v=Max("version"))["v"]
    runbook = Runbook.objects.create(
        team=team,
        slug=parsed.slug,
        version=(latest or 0) + 1,
        title=parsed.title[:200],
        description=parsed.description,
        flow=parsed.flow,
        lease_duration=(
            timedelta(minutes=parsed.lease_minutes)
            if parsed.lease_minutes
            else settings.DEFAULT_LEASE
        ),
        max_attempts=parsed.max_attempts or settings.DEFAULT_MAX_ATTEMPTS,
        max_lease=(
            timedelta(minutes=parsed.max_lease_minutes) if parsed.max_lease_minutes else None
        ),
        wip_limit=parsed.wip_limit,
        source_name=filename[-255:],
        imported_by=actor,
    )
    steps = Step.objects.bulk_create(
        Step(
            runbook=runbook,
            position=position,
            key=parsed_step.key,
            title=parsed_step.title,
            body=parsed_step.body,
            section=parsed_step.section,
            section_note=parsed_step.section_note,
            estimate_minutes=parsed_step.estimate_minutes,
        )
        for position, parsed_step in enumerate(parsed.steps, start=1)
    )
    by_key = {step.key: step for step in steps}
    Through = Step.prerequisites.through
    Through.objects.bulk_create(
        Through(from_step_id=by_key[p.key].pk, to_step_id=by_key[after].pk)
        for p in parsed.steps
        for after in dict.fromkeys(p.after)
    )
    return runbook
