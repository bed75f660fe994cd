"""Small template helpers for the page chrome (navigation depends on what the user may do)."""

import uuid

from django import template
from django.utils.html import format_html

from accounts.access import Capability, teams_for

register = template.Library()


@register.simple_tag
def user_manages_a_team(user) -> bool:
    """True when the user may launch runs and import runbooks on at least one team."""
    return teams_for(user, Capability.MANAGE).exists()


@register.simple_tag
def idempotency_field() -> str:
    """The hidden idempotency key of a mutating form: new each time the form is rendered, so
    sending this form twice is one action, and sending a new form is another."""
    return format_html(
        '<input type="hidden" name="idempotency_key" value="{}">', uuid.uuid4()
    )


@register.filter
def minutes(duration) -> str:
    """A lease length as people say it: "15 min", "2 h", "1 h 30 min"."""
    if duration is None:
        return ""
    total = int(duration.total_seconds() // 60)
    hours, mins = divmod(total, 60)
    if hours and mins:
        return f"{hours} h {mins} min"
    return f"{hours} h" if hours else f"{mins} min"


@register.filter
def time_left(moment, now) -> str:
    """What is left of a lease: "less than a minute" under a minute (timeuntil would say
    "0 minutes"), else timeuntil's words."""
    from django.utils.timesince import timeuntil

    if (moment - now).total_seconds() < 60:
        return "less than a minute"
    return timeuntil(moment, now)


@register.filter
def with_zone(moment, fmt: str = "H:i") -> str:
    """The moment in the viewer's zone as `fmt` (a date format) and the zone's abbreviation,
    also in the hour a daylight-saving change repeats, where the date filter's "T" gives
    nothing and "02:30" alone could be either of two moments."""
    from django.utils import dateformat, timezone

    if moment is None:
        return ""
    local = timezone.localtime(moment)
    return f"{dateformat.format(local, fmt)} {local.tzname()}"
