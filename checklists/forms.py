from django import forms
from django.db.models import Exists, OuterRef, QuerySet

from accounts.models import Team
from checklists.models import Runbook
from checklists.parsing import MAX_BYTES

RUNBOOK_SUFFIXES = (".md", ".markdown", ".txt", ".yml", ".yaml")


def latest_versions(runbooks: QuerySet[Runbook]) -> QuerySet[Runbook]:
    """Only the newest version of each (team, slug) among `runbooks`."""
    newer = Runbook.objects.filter(
        team=OuterRef("team"), slug=OuterRef("slug"), version__gt=OuterRef("version")
    )
    return runbooks.filter(~Exists(newer))


class RunbookImportForm(forms.Form):
    file = forms.FileField(
        label="Runbook file",
        help_text="Markdown (.md) or YAML (.yml). Importing an existing slug adds a version.",
        widget=forms.ClearableFileInput(attrs={"accept": ",".join(RUNBOOK_SUFFIXES)}),
    )
    team = forms.ModelChoiceField(queryset=Team.objects.none(), empty_label=None)

    def __init__(self, *args, teams: QuerySet[Team], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["team"].queryset = teams

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if not upload.name.lower().endswith(RUNBOOK_SUFFIXES):
            raise forms.ValidationError("Upload a Markdown (.md) or YAML (.yml) file.")
        if upload.size > MAX_BYTES:
            raise forms.ValidationError(
                f"The file is {upload.size:,} bytes; the limit is {MAX_BYTES:,}."
            )
        return upload
