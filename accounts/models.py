import zoneinfo

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models


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
        ]

    def __str__(self) -> str:
        return self.name
