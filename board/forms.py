from django import forms
from django.db.models import QuerySet

from board.models import Severity
from checklists.models import Runbook


class ClaimActionForm(forms.Form):
    """Complete: the fencing token of the claim the page was showing."""

    token = forms.IntegerField(min_value=0, widget=forms.HiddenInput)


class AbandonForm(ClaimActionForm):
    # Not required here: the service owns the rule and its message (a 422 either way).
    reason = forms.CharField(required=False, max_length=2000)


class SkipForm(forms.Form):
    # Not required here: the service owns the rule and its message (a 422 either way).
    reason = forms.CharField(required=False, max_length=2000)


class RunbookChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, runbook: Runbook) -> str:
        return f"{runbook.title} — {runbook.team.name} ({runbook.slug} v{runbook.version})"


class LaunchForm(forms.Form):
    runbook = RunbookChoiceField(
        queryset=Runbook.objects.none(), empty_label="Choose a runbook…"
    )
    title = forms.CharField(
        max_length=200, help_text="What is broken, e.g. “INC-4711 primary database down”."
    )
    severity = forms.TypedChoiceField(
        choices=Severity.choices, coerce=int, initial=Severity.SEV3
    )
    ref = forms.CharField(
        label="Incident reference", max_length=200, required=False,
        help_text="Ticket or incident id, optional.",
    )

    def __init__(self, *args, runbooks: QuerySet[Runbook], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["runbook"].queryset = runbooks.select_related("team").order_by(
            "team__name", "title"
        )
