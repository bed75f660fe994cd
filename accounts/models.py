import zoneinfo

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"{value!r} is not a known time zone")


class User(AbstractUser):
    time_zone = models.CharField(
        max_length=64, default="UTC", validators=[validate_time_zone],
        help_text="Times are shown in this zone; they are stored in UTC.",
    )

    @property
    def display_name(self) -> str:
        return self.get_full_name() or self.username


class Role(models.TextChoices):
    STAFF = "staff", "Staff"
    MANAGER = "manager", "Manager"
    AUDITOR = "auditor", "Auditor"
    # An alerting system's account: launches the team's runs from alerts, nothing else.
    INTEGRATION = "integration", "Integration"


class Team(models.Model):
    """Teams own runbooks and runs; membership is granted as object permissions on the team."""

    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=50, unique=True)

    class Meta:
        ordering = ["name"]
        permissions = [
            ("work_team", "Can claim and work the team's items"),
            ("manage_team", "Can launch and steer the team's runs"),
            ("audit_team", "Can read and export the team's trails"),
            ("launch_team", "Can launch the team's runs (an alerting integration)"),
        ]

    def __str__(self) -> str:
        return self.name


class ApiToken(models.Model):
    """A bearer token for the JSON API. Only the token's SHA-256 digest is stored: the token
    itself is shown once, when it is created. Deleting the row revokes it."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="what the token is for, e.g. “ci-bot”")
    digest = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["user", "name", "id"]
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} ({self.user})"
