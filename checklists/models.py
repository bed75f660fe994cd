from datetime import timedelta

from django.conf import settings
from django.db import models


class Flow(models.TextChoices):
    PHASED = "phased", "Phased (sections in order)"
    SEQUENTIAL = "sequential", "Sequential (every step waits for the previous)"
    PARALLEL = "parallel", "Parallel (no prerequisites)"


class Runbook(models.Model):
    """One version of a reusable checklist. Importing the same slug again adds a version;
    runs keep the version they were launched from."""

    team = models.ForeignKey("accounts.Team", on_delete=models.PROTECT, related_name="runbooks")
    slug = models.SlugField(max_length=100)
    version = models.PositiveIntegerField()
    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    flow = models.CharField(max_length=16, choices=Flow.choices, default=Flow.PHASED)
    lease_duration = models.DurationField(default=timedelta(minutes=15))
    max_attempts = models.PositiveIntegerField(default=3)
    max_lease = models.DurationField(
        null=True, blank=True, help_text="longest a claim may be extended to (default 4 leases)"
    )
    wip_limit = models.PositiveIntegerField(
        null=True, blank=True, help_text="live claims per person in this runbook's runs"
    )
    source_name = models.CharField(max_length=255, blank=True)
    imported_at = models.DateTimeField(auto_now_add=True)
    imported_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL,
        related_name="+",
    )

    class Meta:
        ordering = ["team", "slug", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["team", "slug", "version"], name="runbook_version"),
        ]

    def __str__(self) -> str:
        return f"{self.slug} v{self.version}"


class Step(models.Model):
    runbook = models.ForeignKey(Runbook, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveIntegerField(help_text="1-based, in runbook order")
    key = models.CharField(max_length=100, help_text="id within the runbook")
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    section = models.CharField(max_length=500, blank=True)
    section_note = models.TextField(blank=True)
    estimate_minutes = models.PositiveIntegerField(null=True, blank=True)
    prerequisites = models.ManyToManyField(
        "self", symmetrical=False, related_name="dependents", blank=True
    )

    class Meta:
        ordering = ["runbook", "position"]
        constraints = [
            models.UniqueConstraint(fields=["runbook", "position"], name="step_position"),
            models.UniqueConstraint(fields=["runbook", "key"], name="step_key"),
        ]

    def __str__(self) -> str:
        return f"{self.position}. {self.title}"
