"""Runs launched from alerts: Prometheus Alertmanager's webhook (payload version 4).

Each firing alert that names a runbook launches a run of it, or finds the run an earlier
notification launched: the run's incident reference is derived from the alert's fingerprint
(else the group's key), and run_launch_once's launch key (one open run per runbook and
reference, a unique index) makes a repeat find the same run, even two notifications at once.
Alertmanager repeats a notification until it is answered 2xx and cannot send an
Idempotency-Key, so the fingerprint is the idempotency key here.

A resolved alert does not close its run (the recovery may be half done, and the checklist,
not the alert, says when it is): it appends one `alert_resolved` checkpoint to the run's
trail, once per fingerprint and endsAt, so repeated notifications of one resolution add
nothing.

An alert is judged on its own: one naming an unknown runbook, or a team the caller may not
launch for, is ignored with a reason and the others go ahead; the notification as a whole
succeeds, or Alertmanager would resend every alert of the group for ever.
"""

import hashlib
import re
from datetime import UTC, datetime
from posixpath import basename
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit

from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.http import Http404
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from accounts import access
from accounts.models import Team, User
from board.errors import BoardError, InvalidInput
from board.models import (
    Checkpoint,
    CheckpointKind,
    FailureNature,
    FailureScope,
    Run,
    RunState,
    Severity,
)
from board.services import checkpoint_append, run_launch_once
from board.services.launch import launch_key
from checklists.forms import latest_versions
from checklists.models import Runbook

# --- Which runbook a launch means -----------------------------------------------------------


def runbook_for_launch(*, user: User, slug: str, team_slug: str | None = None) -> Runbook:
    """The latest version of runbook `slug` among the runbooks the user can see, in team
    `team_slug` if given, which the user may launch (manager or integration of its team).

    Http404 for a team or runbook outside the user's teams (their existence is not
    revealed), InvalidInput when the slug is in several of the user's teams and no team is
    named, PermissionDenied when the user sees the team but may not launch its runs.
    """
    runbooks = access.visible_runbooks(user).filter(slug=slug)
    where = "in your teams"
    if team_slug:
        team = Team.objects.filter(slug=team_slug, pk__in=access.team_ids(user)).first()
        if team is None:
            raise Http404(f"No team “{team_slug}” among your teams.")
        runbooks, where = runbooks.filter(team=team), f"in team {team.slug}"
    latest = list(latest_versions(runbooks).select_related("team").order_by("team__slug"))
    if not latest:
        raise Http404(f"No runbook “{slug}” {where}.")
    if len(latest) > 1:
        teams = ", ".join(runbook.team.slug for runbook in latest)
        raise InvalidInput(
            f"Runbook “{slug}” is in several of your teams ({teams}): say which one with "
            "“team”."
        )
    runbook = latest[0]
    if runbook.team_id not in access.launch_teams(user):
        raise PermissionDenied(
            f"Only managers of {runbook.team.name} and its alerting integration can launch its "
            "runs."
        )
    return runbook


# --- The payload ----------------------------------------------------------------------------


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text or jsonb; labels end up in titles and the trail.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


LabelText = Annotated[str, AfterValidator(_no_nul)]
Labels = dict[LabelText, LabelText]


class _Payload(BaseModel):
    # Alertmanager has added fields over its releases (truncatedAlerts, in 0.22): a field it
    # adds next must not make Pullboard refuse every notification, so unknown ones are
    # ignored, unlike the API's own request bodies.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class AlertIn(_Payload):
    status: Literal["firing", "resolved"]
    labels: Labels = Field(default_factory=dict)
    annotations: Labels = Field(default_factory=dict)
    starts_at: AwareDatetime | None = Field(None, alias="startsAt")
    # Alertmanager sends 0001-01-01T00:00:00Z while an alert fires.
    ends_at: AwareDatetime | None = Field(None, alias="endsAt")
    generator_url: LabelText = Field("", alias="generatorURL", max_length=2000)
    # Alertmanager's are 16 hex digits; the bound keeps the run's reference within its column.
    fingerprint: LabelText = Field("", max_length=64)


class AlertmanagerWebhook(_Payload):
    """The body Alertmanager posts to a webhook receiver (payload version 4)."""

    version: Literal["4"] = Field(description="the payload version; only 4 is known")
    group_key: LabelText = Field(alias="groupKey", max_length=10000)
    truncated_alerts: int = Field(0, alias="truncatedAlerts", ge=0)
    status: Literal["firing", "resolved"]
    receiver: LabelText = Field("", max_length=1000)
    group_labels: Labels = Field(default_factory=dict, alias="groupLabels")
    common_labels: Labels = Field(default_factory=dict, alias="commonLabels")
    common_annotations: Labels = Field(default_factory=dict, alias="commonAnnotations")
    external_url: LabelText = Field("", alias="externalURL", max_length=2000)
    alerts: list[AlertIn]


# --- Reading an alert -----------------------------------------------------------------------

# An unlabelled alert gets the severity a launch gets by default everywhere else (web form,
# command, API): it does not outrank the runs a manager launched at the default.
DEFAULT_SEVERITY = Severity.SEV3
SEVERITY_WORDS = {
    "critical": 1,
    "high": 2, "major": 2, "error": 2,
    "warning": 3, "minor": 3, "medium": 3,
    "info": 4, "low": 4, "none": 4,
}
_NUMBERED_SEVERITY = re.compile(r"(?:sev|p)?([1-4])")
_EXTENSION = re.compile(r"\.[A-Za-z0-9]+$")
_TITLE_LENGTH = Run._meta.get_field("title").max_length
_REF_LENGTH = Run._meta.get_field("ref").max_length


def alert_runbook_slug(alert: AlertIn) -> str | None:
    """The runbook an alert names: its `runbook` label (or annotation), else the last path
    segment of its `runbook_url` annotation (or label) without a trailing slash and an
    extension: https://runbooks.example.org/runbooks/db-failover.md names db-failover."""
    named = (alert.labels.get("runbook") or alert.annotations.get("runbook") or "").strip()
    if named:
        return named
    url = (alert.annotations.get("runbook_url") or alert.labels.get("runbook_url") or "").strip()
    if not url:
        return None
    segment = unquote(basename(urlsplit(url).path.rstrip("/")))
    return _EXTENSION.sub("", segment) or None


def alert_severity(labels: dict[str, str]) -> int:
    """critical 1; high, major, error 2; warning, minor, medium 3; info, low, none 4; also
    1 to 4 as numbers (sev1, p1); anything else, or none, DEFAULT_SEVERITY."""
    value = labels.get("severity", "").strip().lower()
    numbered = _NUMBERED_SEVERITY.fullmatch(value)
    if numbered:
        return int(numbered.group(1))
    return SEVERITY_WORDS.get(value, DEFAULT_SEVERITY)


def alert_title(alert: AlertIn, key: str) -> str:
    title = (alert.annotations.get("summary") or alert.labels.get("alertname") or "").strip()
    title = " ".join(title.split()) or f"Alert {key}"
    return title if len(title) <= _TITLE_LENGTH else title[:_TITLE_LENGTH - 1] + "…"


def alert_ref(key: str) -> str:
    """The run's incident reference for the alert's key: "alert <fingerprint>", or a digest of
    a group key too long for the column."""
    ref = f"alert {key}"
    if len(ref) <= _REF_LENGTH:
        return ref
    return f"alert group {hashlib.sha256(key.encode()).hexdigest()[:32]}"


def _iso(value: datetime | None) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds") if value else ""


# --- Dispatch -------------------------------------------------------------------------------


class _Ignored(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def alertmanager_dispatch(*, payload: AlertmanagerWebhook, actor: User) -> dict[str, list]:
    """Launch, find or mark resolved the run of each alert of one notification, each alert in
    its own transaction: {"launched": [...], "found": [...], "resolved": [...],
    "ignored": [...]}, every entry with the alert's fingerprint and alertname."""
    summary: dict[str, list] = {"launched": [], "found": [], "resolved": [], "ignored": []}
    for alert in payload.alerts:
        entry: dict[str, Any] = {"fingerprint": alert.fingerprint or None,
                                 "alertname": alert.labels.get("alertname", "")}
        try:
            outcome, found = _dispatch_one(alert=alert, payload=payload, actor=actor)
        except _Ignored as ignored:
            outcome, found = "ignored", {"reason": ignored.reason}
        summary[outcome].append({**entry, **found})
    return summary


def _dispatch_one(*, alert: AlertIn, payload: AlertmanagerWebhook,
                  actor: User) -> tuple[str, dict[str, Any]]:
    key = alert.fingerprint.strip() or payload.group_key.strip()
    if not key:
        raise _Ignored("It has no fingerprint and the notification no groupKey: a repeat "
                       "could not be told from a new alert.")
    slug = alert_runbook_slug(alert)
    if slug is None:
        raise _Ignored("It names no runbook: give it a “runbook” label or a “runbook_url” "
                       "annotation.")
    try:
        runbook = runbook_for_launch(user=actor, slug=slug,
                                     team_slug=alert.labels.get("team", "").strip() or None)
    except (Http404, PermissionDenied) as refusal:
        raise _Ignored(str(refusal)) from None
    except BoardError as error:
        raise _Ignored(error.message) from None
    ref = alert_ref(key)
    if alert.status == "resolved":
        return _resolved(alert=alert, payload=payload, actor=actor, runbook=runbook, key=key,
                         ref=ref)
    _unless_cancelled_since(alert=alert, runbook=runbook, ref=ref)
    facts, notes = _failure_facts(alert.labels)
    try:
        run, launched = run_launch_once(
            runbook=runbook, title=alert_title(alert, key), actor=actor,
            severity=alert_severity(alert.labels), ref=ref, **facts,
        )
    except BoardError as error:
        raise _Ignored(error.message) from None
    return ("launched" if launched else "found"), {"run": run.pk, "notes": notes}


def _unless_cancelled_since(*, alert: AlertIn, runbook: Runbook, ref: str) -> None:
    """A manager who cancelled an alert's run meant it: Alertmanager's repeats of the same
    firing (the same startsAt) do not launch it again; the alert firing anew, after it
    resolved, does."""
    if alert.starts_at is None:
        return
    cancelled = Run.objects.filter(
        launch_key=launch_key(runbook, ref), state=RunState.CANCELLED,
        cancelled_at__gte=alert.starts_at,
    ).order_by("-cancelled_at").first()
    if cancelled is not None:
        raise _Ignored(f"Its run {cancelled.pk} was cancelled after the alert started firing: "
                       "it launches again only when the alert fires anew.")


def _failure_facts(labels: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """The `scope` and `nature` labels, as far as they are known values: a label with a value
    Pullboard does not know is left out (and said so), rather than the recovery not
    launched."""
    facts, notes = {}, []
    for name, choices in (("scope", FailureScope), ("nature", FailureNature)):
        value = labels.get(name, "").strip().lower()
        if value in choices.values:
            facts[name] = value
        elif value:
            notes.append(f"The {name} label “{value}” is not one of "
                         f"{', '.join(choices.values)}: left out.")
    return facts, notes


def _resolved(*, alert: AlertIn, payload: AlertmanagerWebhook, actor: User, runbook: Runbook,
              key: str, ref: str) -> tuple[str, dict[str, Any]]:
    # The run launch_key points at: this runbook (any version) of this team, this reference.
    run = Run.objects.filter(runbook__team_id=runbook.team_id, runbook__slug=runbook.slug,
                             ref=ref, state=RunState.ACTIVE).first()
    if run is None:
        raise _Ignored("It resolved, and no open run was launched for it.")
    recorded = alert_resolved_record(run_id=run.pk, alert=alert, payload=payload, actor=actor,
                                     key=key)
    if recorded is None:
        raise _Ignored("It resolved, and its run has just been closed.")
    return "resolved", {"run": run.pk, "recorded": recorded}


@transaction.atomic
def alert_resolved_record(*, run_id: int, alert: AlertIn, payload: AlertmanagerWebhook,
                          actor: User, key: str) -> bool | None:
    """Append the `alert_resolved` checkpoint to the open run, unless this resolution (key and
    endsAt) is already on its trail: True when written, False when already there, None when
    the run is no longer open."""
    # The run's row lock serialises two deliveries of one resolution (PostgreSQL; SQLite's
    # IMMEDIATE transactions already run one writer at a time), so the second sees the
    # first's checkpoint. NO KEY UPDATE, as push takes it: claims never wait for it.
    run = Run.objects.select_for_update(no_key=True).filter(pk=run_id,
                                                           state=RunState.ACTIVE).first()
    if run is None:
        return None
    ends_at = _iso(alert.ends_at)
    if Checkpoint.objects.filter(run_id=run.pk, kind=CheckpointKind.ALERT_RESOLVED,
                                 data__alert_key=key, data__ends_at=ends_at).exists():
        return False
    checkpoint_append(
        run_id=run.pk, kind=CheckpointKind.ALERT_RESOLVED, actor=actor,
        reason=f"Alertmanager: “{alert_title(alert, key)}” resolved.",
        data={
            "alert_key": key,
            "fingerprint": alert.fingerprint or None,
            "group_key": payload.group_key,
            "alertname": alert.labels.get("alertname", ""),
            "starts_at": _iso(alert.starts_at),
            "ends_at": ends_at,
            "generator_url": alert.generator_url,
            "receiver": payload.receiver,
        },
    )
    return True
