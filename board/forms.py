from collections.abc import Iterable

from django import forms
from django.db.models import QuerySet

from accounts.models import Team, User
from board.models import FailureNature, FailureScope, Item, ItemState, RunMode, Severity
from checklists.models import Runbook


class ClaimActionForm(forms.Form):
    """Complete: the fencing token of the claim the page was showing."""

    token = forms.IntegerField(min_value=0, widget=forms.HiddenInput)


class AbandonForm(ClaimActionForm):
    # Not required here: the service owns the rule and its message (a 422 either way).
    reason = forms.CharField(required=False, max_length=2000)


class ReasonForm(forms.Form):
    # Not required here: the service owns the rule and its message (a 422 either way); the
    # input carries `required` so a browser asks before sending.
    reason = forms.CharField(
        required=False, max_length=2000,
        widget=forms.TextInput(attrs={"required": True, "maxlength": 2000}),
    )


class StuckLaneForm(forms.Form):
    """A stuck-lane form says the item was stuck when the page showed it: the action is then
    refused if someone requeued it meanwhile, rather than taking back a new claim."""

    expected_state = forms.ChoiceField(
        choices=[("", "any"), (ItemState.STUCK, "stuck")], required=False,
        widget=forms.HiddenInput,
    )


class SkipForm(ReasonForm, StuckLaneForm):
    pass


class CancelForm(ReasonForm):
    pass


# --- Push targets ---------------------------------------------------------------------------

POOL = "pool"


class PushTargetField(forms.ChoiceField):
    """One select for whom a run is pushed to: a person (`user:<username>`) or a team
    (`team:<slug>`), each kind in its optgroup, and optionally `pool` (back to the shared
    pool). Cleans to (assignee, assigned_team), (None, None) for no one. Only what was offered
    is accepted; whether the target fits the run is the service's rule (assignment_check)."""

    def __init__(self, *, blank_label: str, pool_label: str = "", **kwargs) -> None:
        super().__init__(choices=(), **kwargs)
        self.blank_label, self.pool_label = blank_label, pool_label
        self.targets: dict[str, tuple[User | None, Team | None]] = {}

    def offer(self, *, people: Iterable[tuple[str, Iterable[User]]],
              teams: Iterable[Team]) -> None:
        self.targets = {"": (None, None)}
        choices: list = [("", self.blank_label)]
        if self.pool_label:
            self.targets[POOL] = (None, None)
            choices.append((POOL, self.pool_label))
        for group, users in people:
            options = []
            for user in users:
                value = f"user:{user.username}"
                self.targets[value] = (user, None)
                options.append((value, user.display_name))
            if options:
                choices.append((group, options))
        team_options = []
        for team in teams:
            value = f"team:{team.slug}"
            self.targets[value] = (None, team)
            team_options.append((value, f"Team {team.name}"))
        if team_options:
            choices.append(("Teams", team_options))
        self.choices = choices

    def clean(self, value) -> tuple[User | None, Team | None]:
        return self.targets[super().clean(value)]


class ReassignForm(ReasonForm):
    """Push a whole run: to a person, to a team, or back to the shared pool."""

    target = PushTargetField(
        label="Push to", blank_label="Choose whom…", pool_label="Back to the shared pool",
    )

    def __init__(self, *args, people: Iterable[tuple[str, Iterable[User]]],
                 teams: Iterable[Team], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["target"].offer(people=people, teams=teams)


class RestartForm(ReasonForm):
    from_position = forms.TypedChoiceField(label="Restart from step", coerce=int, choices=())

    def __init__(self, *args, items: Iterable[Item], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["from_position"].choices = [
            (item.position, f"#{item.position} {item.title}") for item in items
        ]


class AssignForm(StuckLaneForm):
    """Stuck lane: hand one item to a person of the run's team."""

    assignee = forms.ChoiceField(choices=())

    def __init__(self, *args, people: Iterable[User], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.people = {user.username: user for user in people}
        self.fields["assignee"].choices = [
            (user.username, user.display_name) for user in self.people.values()
        ]

    def clean_assignee(self) -> User:
        return self.people[self.cleaned_data["assignee"]]


# --- Launch ---------------------------------------------------------------------------------


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
        help_text="Ticket or incident id, optional. A second launch with the same reference "
                  "opens the run already under way.",
    )
    team = forms.ModelChoiceField(
        queryset=Team.objects.none(), required=False, empty_label="The runbook's team",
        help_text="The team that owns the run: its staff work it, its managers manage it.",
    )
    scope = forms.ChoiceField(
        label="How much is down?", choices=FailureScope.choices, widget=forms.RadioSelect
    )
    nature = forms.ChoiceField(
        label="Will it pass on its own?", choices=FailureNature.choices,
        widget=forms.RadioSelect,
    )
    mode = forms.ChoiceField(
        label="Recovery mode", required=False,
        choices=[("", "Follow the recommendation"), *RunMode.choices],
    )
    push_to = PushTargetField(
        label="Push to", required=False, blank_label="No one: the shared pool",
        help_text="Optional: the person or team whose Claim next gets this run's items first.",
    )

    def __init__(self, *args, runbooks: QuerySet[Runbook], teams: QuerySet[Team],
                 people: Iterable[tuple[str, Iterable[User]]], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["runbook"].queryset = runbooks.select_related("team").order_by(
            "team__name", "title"
        )
        teams = teams.order_by("name")
        self.fields["team"].queryset = teams
        self.fields["push_to"].offer(people=people, teams=teams)

    def answers(self) -> tuple[str, str]:
        """The scope and nature answered so far (bound or initial), "" for none or a bad one:
        what the recommendation shown with the form is made of."""
        def answer(name: str, allowed: list[str]) -> str:
            value = self[name].value()
            return value if value in allowed else ""

        return answer("scope", FailureScope.values), answer("nature", FailureNature.values)
