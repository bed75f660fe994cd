"""Management commands: export_trail, launch_run, sweep_leases, load_demo."""

import csv
import io
import json
import stat
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from django.apps import apps
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.access import Capability, has_capability
from accounts.models import Team, User
from board.models import Checkpoint, CheckpointKind, Item, ItemState, Run, RunState
from board.services import CLI_ACTOR, TIMER_ACTOR, item_claim_next
from board.trail import COLUMNS
from checklists.models import Runbook
from checklists.parsing import parse_runbook

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def run_command(*args, **options) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out, stderr=io.StringIO(), **options)
    return out.getvalue()


# --- export_trail ---------------------------------------------------------------------------


@pytest.fixture
def claimed_run(make_run, staff):
    run = make_run()
    item_claim_next(actor=staff, run=run)
    return run


def test_export_trail_writes_csv_to_standard_output(claimed_run):
    output = run_command("export_trail", "--run", str(claimed_run.pk), "--format", "csv")

    rows = list(csv.DictReader(io.StringIO(output, newline="")))
    assert output.startswith(",".join(COLUMNS) + "\r\n")
    assert [(r["seq"], r["kind"], r["item_position"], r["actor"], r["token"]) for r in rows] == [
        ("1", "launched", "", "maya", ""),
        ("2", "claimed", "1", "sam", "1"),
    ]


def test_export_trail_writes_jsonl_to_a_file(claimed_run, tmp_path):
    target = tmp_path / "trail.jsonl"

    output = run_command(
        "export_trail", "--run", str(claimed_run.pk), "--format", "jsonl", "-o", str(target)
    )

    assert output == ""
    rows = [json.loads(line) for line in target.read_text().splitlines()]
    assert [(r["run"], r["seq"], r["kind"]) for r in rows] == [
        (claimed_run.pk, 1, "launched"), (claimed_run.pk, 2, "claimed"),
    ]


def test_export_trail_of_unknown_run_fails(db):
    with pytest.raises(CommandError, match="^no run with id 404$") as failure:
        run_command("export_trail", "--run", "404", "--format", "csv")
    assert failure.value.returncode == 1


def test_export_trail_refuses_an_unknown_format(claimed_run):
    with pytest.raises(CommandError, match="invalid choice: 'xml'"):
        run_command("export_trail", "--run", str(claimed_run.pk), "--format", "xml")


# --- launch_run -----------------------------------------------------------------------------


def test_launch_run_prints_only_the_id_of_a_run_of_the_latest_version(make_runbook, team):
    make_runbook()
    latest = make_runbook()  # the same slug again: version 2

    output = run_command(
        "launch_run", latest.slug, "--title", "INC-7 primary down", "--severity", "1",
        "--ref", "INC-7",
    )

    assert output.endswith("\n") and output.strip().isdigit()
    run = Run.objects.get(pk=int(output))
    assert (run.runbook, run.team, run.title, run.severity, run.ref, run.launched_by) == (
        latest, team, "INC-7 primary down", 1, "INC-7", None
    )
    # SIMPLE_RUNBOOK: "Freeze writes" opens the numbered list, the rest wait for it.
    assert dict(run.items.values_list("position", "state")) == {
        1: ItemState.AVAILABLE, 2: ItemState.WAITING, 3: ItemState.WAITING,
        4: ItemState.WAITING,
    }
    checkpoints = list(Checkpoint.objects.filter(run=run))
    assert [(c.kind, c.actor, c.actor_name) for c in checkpoints] == [
        (CheckpointKind.LAUNCHED, None, CLI_ACTOR)
    ]


def test_launch_run_follows_scope_and_nature_and_pushes_to_the_named_staff(
    make_runbook, staff
):
    runbook = make_runbook()
    run_id = int(run_command("launch_run", runbook.slug, "--title", "x", "--ref", "INC-8",
                             "--scope", "total", "--nature", "persistent", "--assign", "sam"))

    run = Run.objects.get(pk=run_id)
    assert (run.mode, run.recommended_mode, run.assignee) == ("push", "push", staff)
    assert set(run.items.values_list("assignee", flat=True)) == {staff.pk}
    # The same incident again: the open run, not a second one.
    assert int(run_command("launch_run", runbook.slug, "--title", "x", "--ref", "INC-8")) == \
        run_id
    assert Run.objects.count() == 1


def test_launch_run_uses_the_named_team(make_runbook, other_team):
    runbook = make_runbook(owner=other_team)

    run_id = int(run_command("launch_run", runbook.slug, "--title", "x", "--team", "payments"))

    assert Run.objects.get(pk=run_id).team == other_team


def test_launch_run_of_unknown_slug_names_it_and_lists_the_available_ones(make_runbook):
    make_runbook()

    with pytest.raises(CommandError) as failure:
        run_command("launch_run", "no-such-book", "--title", "x")

    assert str(failure.value) == (
        "no runbook 'no-such-book' in team ops; available: database-failover"
    )
    assert not Run.objects.exists()


def test_launch_run_of_unknown_team_fails(make_runbook):
    runbook = make_runbook()

    with pytest.raises(CommandError, match="no team with slug 'nowhere'"):
        run_command("launch_run", runbook.slug, "--title", "x", "--team", "nowhere")
    assert not Run.objects.exists()


@pytest.mark.parametrize("severity", ["0", "5", "high"])
def test_launch_run_with_bad_severity_fails(make_runbook, severity):
    runbook = make_runbook()

    with pytest.raises(CommandError, match="--severity"):
        run_command("launch_run", runbook.slug, "--title", "x", "--severity", severity)
    assert not Run.objects.exists()


def test_launch_run_with_blank_title_fails(make_runbook):
    runbook = make_runbook()

    with pytest.raises(CommandError, match="needs a title"):
        run_command("launch_run", runbook.slug, "--title", "  ")
    assert not Run.objects.exists()


# --- sweep_leases ---------------------------------------------------------------------------


def test_sweep_leases_expires_the_claims_whose_lease_ran_out(make_runbook, make_run, staff):
    run = make_run(runbook=make_runbook(lease=timedelta(minutes=5)))
    with time_machine.travel(T0, tick=False):
        item = item_claim_next(actor=staff)

    with time_machine.travel(T0 + timedelta(minutes=5, seconds=1), tick=False):
        output = run_command("sweep_leases")

    assert output == "expired 1 claim\n"
    item.refresh_from_db()
    assert (item.state, item.holder, item.attempts) == (ItemState.AVAILABLE, None, 1)
    last = Checkpoint.objects.filter(run=run).order_by("id").last()
    assert (last.kind, last.item_id, last.token, last.actor_name) == (
        CheckpointKind.EXPIRED, item.pk, 1, TIMER_ACTOR
    )


def test_sweep_leases_leaves_live_claims_alone(make_run, staff):
    run = make_run()
    with time_machine.travel(T0, tick=False):
        item = item_claim_next(actor=staff, run=run)
    before = Checkpoint.objects.count()

    with time_machine.travel(T0 + timedelta(minutes=1), tick=False):
        output = run_command("sweep_leases")

    assert output == "expired 0 claims\n"
    assert Item.objects.get(pk=item.pk).state == ItemState.CLAIMED
    assert Checkpoint.objects.count() == before


# --- load_demo ------------------------------------------------------------------------------

DEMO_USERS = {"staff": "staff", "staff2": "staff", "manager": "manager", "auditor": "auditor"}


@pytest.fixture
def var_dir(db, settings, tmp_path, monkeypatch):
    monkeypatch.delenv("DEMO_PASSWORD", raising=False)
    settings.VAR_DIR = tmp_path
    return tmp_path


def model_counts() -> dict[str, int]:
    return {
        model._meta.label: model._default_manager.count()
        for model in apps.get_models(include_auto_created=True)
    }


def login_table(output: str) -> dict[str, tuple[str, str]]:
    lines = output.split("Demo logins", 1)[1].splitlines()[2:]
    return {line.split()[0]: (line.split()[1], line.split()[2]) for line in lines if line}


def test_demo_runbooks_are_ours_and_import_cleanly():
    folder = Path(apps.get_app_config("checklists").path) / "demo"
    parsed = {
        path.stem: parse_runbook(path.read_bytes(), path.name)
        for path in sorted(folder.glob("*.md"))
    }

    assert {p.title for p in parsed.values()} == {
        "Data migration halted midway", "Failed deployment pipeline", "Database failover",
    }
    for runbook in parsed.values():
        assert runbook.warnings == []
        assert 8 <= len(runbook.steps) <= 15
        assert runbook.description and runbook.lease_minutes
        assert len({step.section for step in runbook.steps}) >= 3
        assert any("```" in step.body for step in runbook.steps)


def test_load_demo_creates_team_users_runbooks_and_one_run(var_dir):
    output = run_command("load_demo")

    team = Team.objects.get(slug="ops")
    assert sorted(Runbook.objects.filter(team=team).values_list("slug", "version")) == [
        ("data-migration-halted", 1), ("database-failover", 1),
        ("failed-deployment-pipeline", 1),
    ]
    run = Run.objects.get()
    assert (run.title, run.severity, run.ref, run.team, run.state, run.runbook.slug) == (
        "Primary database unreachable", 2, "INC-DEMO-1", team, RunState.ACTIVE,
        "database-failover",
    )
    states = list(run.items.order_by("position").values_list("state", flat=True))
    assert states[:2] == [ItemState.AVAILABLE, ItemState.WAITING]
    assert set(states[1:]) == {ItemState.WAITING}
    assert [(c.kind, c.actor_name) for c in Checkpoint.objects.filter(run=run)] == [
        (CheckpointKind.LAUNCHED, CLI_ACTOR)
    ]

    table = login_table(output)
    assert {name: role for name, (role, _) in table.items()} == DEMO_USERS
    for username, (role, password) in table.items():
        user = User.objects.get(username=username)
        assert user.check_password(password)
        assert user.groups.filter(name=role).exists()
    assert has_capability(User.objects.get(username="staff"), team, Capability.WORK)
    assert has_capability(User.objects.get(username="manager"), team, Capability.MANAGE)
    assert not has_capability(User.objects.get(username="auditor"), team, Capability.WORK)


def test_load_demo_keeps_passwords_in_a_private_file_in_var_dir(var_dir):
    table = login_table(run_command("load_demo"))

    password_file = var_dir / "demo-passwords.json"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert json.loads(password_file.read_text()) == {
        name: password for name, (_, password) in table.items()
    }
    assert len({password for _, password in table.values()}) == 4


def test_load_demo_twice_adds_nothing_and_prints_the_same_logins(var_dir):
    first = login_table(run_command("load_demo"))
    counts = model_counts()

    second = run_command("load_demo")

    assert model_counts() == counts
    assert login_table(second) == first
    assert "already present" in second
    for username, (_, password) in first.items():
        assert User.objects.get(username=username).check_password(password)


def test_load_demo_uses_demo_password_for_everyone_when_set(var_dir, monkeypatch):
    monkeypatch.setenv("DEMO_PASSWORD", "demo-pass-123")

    table = login_table(run_command("load_demo"))

    assert {password for _, password in table.values()} == {"demo-pass-123"}
    assert all(
        User.objects.get(username=name).check_password("demo-pass-123") for name in table
    )
    assert not (var_dir / "demo-passwords.json").exists()


def test_load_demo_leaves_an_existing_runbook_version_alone(var_dir, make_runbook, team):
    # The team already has its own "database-failover" (the conftest runbook, 4 steps).
    own = make_runbook()

    run_command("load_demo")

    assert list(Runbook.objects.filter(team=team, slug="database-failover")) == [own]
    assert Run.objects.get(ref="INC-DEMO-1").runbook == own


def test_load_demo_refuses_a_corrupt_password_file(var_dir):
    (var_dir / "demo-passwords.json").write_text("{not json")

    with pytest.raises(CommandError, match="delete it"):
        run_command("load_demo")
    assert not User.objects.exists()
