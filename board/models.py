from datetime import timedelta

from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.db import models
from django.utils import timezone


class Severity(models.IntegerChoices):
    SEV1 = 1, "SEV1 (critical)"
    SEV2 = 2, "SEV2 (major)"
    SEV3 = 3, "SEV3 (minor)"
    SEV4 = 4, "SEV4 (low)"


class RunMode(models.TextChoices):
    PULL = "pull", "Pull"
    PUSH = "push", "Push"
    HYBRID = "hybrid", "Hybrid"


class FailureScope(models.TextChoices):
    PARTIAL = "partial", "Partial (one part is down)"
    TOTAL = "total", "Total (everything is down)"


class FailureNature(models.TextChoices):
    TRANSIENT = "transient", "Transient (it may pass)"
    PERSISTENT = "persistent", "Persistent (it stays until fixed)"


class RunState(models.TextChoices):
    ACTIVE = "active", "Active"
    COMPLETED = "completed", "Completed"
    CANCELLED = "cancelled", "Cancelled"


class Run(models.Model):
    """One launch of a runbook for one incident. Steps are copied into items at launch, so
    editing or re-importing the runbook never changes a running run."""

    runbook = models.ForeignKey("checklists.Runbook", on_delete=models.PROTECT, related_name="runs")
    team = models.ForeignKey("accounts.Team", on_delete=models.PROTECT, related_name="runs")
    title = models.CharField(max_length=200)
    severity = models.PositiveSmallIntegerField(choices=Severity.choices, default=Severity.SEV3)
    ref = models.CharField("incident reference", max_length=200, blank=True)
    mode = models.CharField(max_length=8, choices=RunMode.choices, default=RunMode.PULL)
    # The two facts about the failure asked at launch, and the mode they recommended.
    scope = models.CharField(max_length=8, choices=FailureScope.choices, blank=True)
    nature = models.CharField(max_length=10, choices=FailureNature.choices, blank=True)
    recommended_mode = models.CharField(max_length=8, choices=RunMode.choices, blank=True)
    # Whom the run is pushed to: one person or one team, or neither (the shared pool).
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )
    assigned_team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
    )
    # "<runbook team>:<slug>:<ref>" while the run has a ref: one open run per incident and
    # runbook (an alert sent twice, a launch retried), however many runbook versions.
    launch_key = models.CharField(max_length=400, blank=True)
    state = models.CharField(max_length=12, choices=RunState.choices, default=RunState.ACTIVE)
    lease_duration = models.DurationField(default=timedelta(minutes=15))
    max_attempts = models.PositiveIntegerField(default=3)
    max_lease = models.DurationField(default=timedelta(hours=1))
    wip_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="overrides the WIP_LIMIT setting for this run"
    )
    launched_at = models.DateTimeField(default=timezone.now)
    launched_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )
    completed_at = models.DateTimeField(null=True, blank=True)
    cancelled_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["severity", "launched_at", "id"]
        indexes = [models.Index(fields=["state", "team"], name="run_state_team")]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(assignee__isnull=True) | models.Q(assigned_team__isnull=True),
                name="run_one_assignee",
            ),
            models.UniqueConstraint(
                fields=["launch_key"],
                condition=models.Q(state="active") & ~models.Q(launch_key=""),
                name="run_one_open_per_ref",
            ),
        ]

    def __str__(self) -> str:
        return self.title


class ItemState(models.TextChoices):
    WAITING = "waiting", "Waiting"
    AVAILABLE = "available", "Available"
    CLAIMED = "claimed", "Claimed"
    DONE = "done", "Done"
    SKIPPED = "skipped", "Skipped"
    STUCK = "stuck", "Stuck"


OPEN_STATES = (ItemState.WAITING, ItemState.AVAILABLE, ItemState.CLAIMED, ItemState.STUCK)
FINISHED_STATES = (ItemState.DONE, ItemState.SKIPPED)


class Item(models.Model):
    """One card on the board. `token` is the fencing token: every claim increments it, and
    complete/abandon/extend must present the current value."""

    # No index of its own: item_position (run, position) serves every lookup by run.
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="items",
                            db_index=False)
    step = models.ForeignKey(
        "checklists.Step", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    position = models.PositiveIntegerField(help_text="1-based, in runbook order")
    key = models.CharField(max_length=100)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    section = models.CharField(max_length=500, blank=True)
    section_note = models.TextField(blank=True)
    state = models.CharField(max_length=12, choices=ItemState.choices, default=ItemState.AVAILABLE)
    prerequisites = models.ManyToManyField(
        "self", symmetrical=False, related_name="dependents", blank=True
    )
    holder = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="held_items", db_index=False,  # item_held
    )
    # A pushed item: only this person, or members of this team, may claim it (and it comes
    # first in their claim-next); neither: anyone working for the run's team.
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="+", db_index=False,  # item_assigned
    )
    assigned_team = models.ForeignKey(
        "accounts.Team", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        db_index=False,  # item_team_assigned
    )
    token = models.PositiveBigIntegerField(default=0)
    claimed_at = models.DateTimeField(null=True, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "position"]
        constraints = [
            models.UniqueConstraint(fields=["run", "position"], name="item_position"),
            # One holder: a claimed item always has exactly one, no other state has any.
            models.CheckConstraint(
                condition=(
                    models.Q(state="claimed", holder__isnull=False,
                             lease_expires_at__isnull=False)
                    | (~models.Q(state="claimed") & models.Q(holder__isnull=True))
                ),
                name="item_holder_iff_claimed",
            ),
            models.CheckConstraint(
                condition=models.Q(assignee__isnull=True) | models.Q(assigned_team__isnull=True),
                name="item_one_assignee",
            ),
        ]
        indexes = [
            # The shared pool: only available items no one was assigned, so finding a run's
            # first one never walks past the claimed, done and pushed ones (a draining run of
            # thousands stays one index step).
            models.Index(fields=["run", "position"],
                         condition=models.Q(state="available", assignee__isnull=True,
                                            assigned_team__isnull=True),
                         name="item_pool"),
            # Pushed items waiting for their person or team.
            models.Index(fields=["assignee"],
                         condition=models.Q(state="available", assignee__isnull=False),
                         name="item_assigned"),
            models.Index(fields=["assigned_team"],
                         condition=models.Q(state="available", assigned_team__isnull=False),
                         name="item_team_assigned"),
            # Every index is written by every claim (a claim changes indexed columns, so it is
            # never a HOT update): the others cover only the claimed items, the few.
            # The sweep: claimed items by the end of their lease.
            models.Index(fields=["lease_expires_at"], condition=models.Q(state="claimed"),
                         name="item_lease"),
            # A person's live claims (the WIP count): a holder is set iff the item is claimed.
            models.Index(fields=["holder"], condition=models.Q(holder__isnull=False),
                         name="item_held"),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.title}"


class CheckpointKind(models.TextChoices):
    LAUNCHED = "launched"
    CLAIMED = "claimed"
    EXTENDED = "extended"
    COMPLETED = "completed"
    ABANDONED = "abandoned"
    EXPIRED = "expired"
    STUCK = "stuck"
    REQUEUED = "requeued"
    SKIPPED = "skipped"
    REASSIGNED = "reassigned"
    RESET = "reset"
    RUN_COMPLETED = "run_completed"
    RUN_CANCELLED = "run_cancelled"
    ALERT_RESOLVED = "alert_resolved"


class AppendOnlyQuerySet(models.QuerySet):
    def update(self, **kwargs):
        raise PermissionDenied("Checkpoints are append-only: they are never updated.")

    def delete(self):
        raise PermissionDenied("Checkpoints are append-only: they are never deleted.")


class Checkpoint(models.Model):
    """One append-only event of a run's trail. Rows are only ever inserted: the queryset, the
    model and (in the migration) database triggers refuse updates and deletes."""

    run = models.ForeignKey(Run, on_delete=models.PROTECT, related_name="checkpoints")
    item = models.ForeignKey(
        Item, null=True, blank=True, on_delete=models.PROTECT, related_name="checkpoints"
    )
    kind = models.CharField(max_length=16, choices=CheckpointKind.choices)
    at = models.DateTimeField(default=timezone.now)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
        related_name="+",
    )
    actor_name = models.CharField(max_length=150, help_text="snapshot at the time of the event")
    token = models.PositiveBigIntegerField(null=True, blank=True)
    reason = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    objects = AppendOnlyQuerySet.as_manager()

    class Meta:
        ordering = ["run", "id"]
        indexes = [models.Index(fields=["run", "id"], name="checkpoint_trail")]

    def __str__(self) -> str:
        return f"{self.kind} by {self.actor_name}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise PermissionDenied("Checkpoints are append-only: they are never updated.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionDenied("Checkpoints are append-only: they are never deleted.")


class IdempotencyKey(models.Model):
    """The first outcome of one mutating request, kept so a repeat of it (double click, a
    retry after a network error) returns that outcome instead of acting again.

    The row is inserted before the action runs and completed in the same transaction, so a
    committed row always has its outcome, and a concurrent duplicate waits on the unique
    index until the first one commits (board/idempotency.py)."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=255)
    fingerprint = models.CharField(
        max_length=64, help_text="sha256 of the method, path and canonical body"
    )
    status = models.PositiveSmallIntegerField(null=True, blank=True)
    body = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "key"], name="idempotency_key_per_user"),
        ]
        indexes = [models.Index(fields=["created_at"], name="idempotency_key_age")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status})"


class Heartbeat(models.Model):
    """When a periodic job last finished (one row per job), for /healthz and operators."""

    name = models.CharField(max_length=50, primary_key=True)
    at = models.DateTimeField()
    detail = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"{self.name} at {self.at:%Y-%m-%d %H:%M:%S}"
