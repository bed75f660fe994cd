"""The API's request and response shapes, and the types they share."""

from datetime import UTC, datetime
from typing import Annotated, Any

from ninja import Field, Header, Schema
from pydantic import AfterValidator, ConfigDict, PlainSerializer, StrictBool, StrictInt

from board import idempotency


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat(timespec="microseconds")


IsoTime = Annotated[datetime, PlainSerializer(_iso, return_type=str)]


def _no_nul(value: str) -> str:
    # PostgreSQL cannot store NUL in text, and it would end up raw in the trail export.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


Text = Annotated[str, AfterValidator(_no_nul)]
# A fencing token as issued: a whole number (not true/false, not 3.0) in the database's range.
ClaimToken = Annotated[StrictInt, Field(ge=0, le=2**63 - 1,
                                        description="the fencing token of your claim")]


# --- Schemas --------------------------------------------------------------------------------


class Error(Schema):
    detail: str


class ItemRef(Schema):
    id: int
    run: int
    title: str
    state: str
    position: int


class ClaimOut(Schema):
    item: ItemRef
    token: int
    lease_expires_at: IsoTime | None


class ClaimNextIn(Schema):
    model_config = ConfigDict(extra="forbid")
    run: Annotated[StrictInt, Field(ge=1, le=2**63 - 1)] | None = Field(
        None, description="only claim from this run"
    )


class CompleteIn(Schema):
    model_config = ConfigDict(extra="forbid")
    token: ClaimToken
    note: Text = Field("", max_length=2000)


class AbandonIn(Schema):
    model_config = ConfigDict(extra="forbid")
    token: ClaimToken
    reason: Text = Field(max_length=2000, description="why you give the item back")


class ExtendIn(Schema):
    model_config = ConfigDict(extra="forbid")
    token: ClaimToken


class RunItemOut(Schema):
    id: int
    position: int
    title: str
    section: str
    state: str
    holder: str | None
    token: int
    attempts: int
    lease_expires_at: IsoTime | None
    prerequisites: list[int]
    assignee: str | None = Field(description="the username it is pushed to, if any")
    assigned_team: str | None = Field(description="the team slug it is pushed to, if any")


class RunOut(Schema):
    id: int
    title: str
    ref: str
    severity: int
    state: str
    team: str
    mode: str
    scope: str = Field(description="partial or total; empty when not said at launch")
    nature: str = Field(description="transient or persistent; empty when not said at launch")
    recommended_mode: str = Field(description="the mode the scope and nature suggested")
    assignee: str | None = Field(description="the username the run is pushed to, if any")
    assigned_team: str | None = Field(description="the team slug it is pushed to, if any")
    items: list[RunItemOut]


class RunChangedOut(RunOut):
    changed: int = Field(description="how many items the action changed")


class RunSummaryOut(Schema):
    id: int
    title: str
    ref: str
    severity: int
    state: str
    team: str
    mode: str
    launched_at: IsoTime
    assignee: str | None
    assigned_team: str | None


# Text with its bounds checked first (the bounds of a nested Annotated[Text, Field(...)] would
# be checked on the validated value, and read "at least 1 item after validation").
Slug = Annotated[str, Field(min_length=1, max_length=100), AfterValidator(_no_nul)]
Reason = Annotated[str, Field(max_length=2000), AfterValidator(_no_nul)]
Username = Annotated[str, Field(min_length=1, max_length=150), AfterValidator(_no_nul)]


class RunLaunchIn(Schema):
    model_config = ConfigDict(extra="forbid")
    runbook: Slug = Field(description="the runbook's slug; its latest version is launched")
    title: Text = Field(max_length=200)
    severity: StrictInt = Field(3, ge=1, le=4, description="1 (critical) to 4 (low)")
    ref: Text = Field("", max_length=200, description=(
        "the incident reference: while a run of this runbook with this reference is open, "
        "launching again returns it (200) instead of a second run"
    ))
    team: Slug | None = Field(None, description=(
        "the runbook's team (slug); needed only when the slug is in several of your teams"
    ))
    scope: Text = Field("", max_length=10, description="partial or total")
    nature: Text = Field("", max_length=10, description="transient or persistent")
    mode: Text | None = Field(None, max_length=10, description=(
        "pull, push or hybrid; by default the mode the scope and nature recommend"
    ))


class ReassignIn(Schema):
    model_config = ConfigDict(extra="forbid")
    user: Username | None = Field(None, description="push the run to this person (username)")
    team: Slug | None = Field(None, description="push the run to this team (slug)")
    unassign: StrictBool = Field(False, description="true: back to the shared pool")
    reason: Reason = Field(description="why the run is pushed")


class RestartIn(Schema):
    model_config = ConfigDict(extra="forbid")
    from_position: Annotated[StrictInt, Field(ge=1, le=2**31 - 1)] = Field(
        description="the step to restart from (1-based): it and every later step start over"
    )
    reason: Reason = Field(description="why the run restarts")


class CancelIn(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = Field(description="why the run is no longer needed")


class RequeueIn(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = ""


class SkipIn(Schema):
    model_config = ConfigDict(extra="forbid")
    reason: Reason = Field(description="why the item is not needed")


class AssignIn(Schema):
    model_config = ConfigDict(extra="forbid")
    user: Username = Field(description="the username the item is pushed to")
    reason: Reason = ""


class AlertRunOut(Schema):
    fingerprint: str | None
    alertname: str
    run: int
    notes: list[str] = Field(description="labels left out, and why")


class AlertResolvedOut(Schema):
    fingerprint: str | None
    alertname: str
    run: int
    recorded: bool = Field(description="false: this resolution was already on the trail")


class AlertIgnoredOut(Schema):
    fingerprint: str | None
    alertname: str
    reason: str


class AlertmanagerOut(Schema):
    launched: list[AlertRunOut]
    found: list[AlertRunOut]
    resolved: list[AlertResolvedOut]
    ignored: list[AlertIgnoredOut]


class CheckpointOut(Schema):
    seq: int
    at: IsoTime
    kind: str
    item: int | None
    actor: str
    token: int | None
    reason: str
    data: dict[str, Any] = Field(
        description="what the event recorded besides: a push's target and revoked claims, a "
                    "restart's step, a launch's facts and mode"
    )


ERRORS: dict[int, Any] = {401: Error, 403: Error, 404: Error, 409: Error, 422: Error}
IdempotencyKeyHeader = Header(
    ..., alias="Idempotency-Key", max_length=idempotency.MAX_KEY_LENGTH,
    description="a fresh value (a UUID) per action; the same value again to retry it",
)
