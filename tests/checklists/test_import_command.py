"""`manage.py import_runbook`: every shared runbook imports, and a bad file gives one clear
error line, exit status 1, and leaves the database exactly as it was."""

import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command

from accounts.models import Team
from checklists.models import Runbook, Step
from tests.conftest import REPO_ROOT


def _counts() -> tuple[int, int, int, int]:
    Through = Step.prerequisites.through
    return (Team.objects.count(), Runbook.objects.count(), Step.objects.count(),
            Through.objects.count())


def _import(path, *args) -> str:
    from io import StringIO

    out = StringIO()
    call_command("import_runbook", str(path), *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip()


@pytest.mark.django_db
def test_every_shared_runbook_imports(shared_runbooks, team):
    files = sorted(p for p in shared_runbooks.glob("*.md") if p.name != "SOURCES.md")
    assert len(files) >= 17
    for path in files:
        line = _import(path, "--team", "ops")
        assert line.startswith("imported ") and line.endswith(" steps"), line
        runbook = Runbook.objects.latest("pk")
        assert runbook.steps.count() >= 1
        assert line == f"imported {runbook.slug} v1: {runbook.steps.count()} steps"


@pytest.mark.django_db
def test_reimport_makes_a_new_version_and_keeps_the_old(shared_runbooks):
    path = shared_runbooks / "gitlab-cmoc-checklist.md"
    first = _import(path)
    second = _import(path)
    slug = first.split()[1]
    assert first == f"imported {slug} v1: 10 steps"
    assert second == f"imported {slug} v2: 10 steps"
    assert Runbook.objects.filter(slug=slug).count() == 2
    assert Step.objects.filter(runbook__slug=slug).count() == 20


@pytest.mark.django_db
def test_default_team_is_created_for_an_import_without_team(shared_runbooks):
    _import(shared_runbooks / "prometheus-info-inhibitor.md")
    assert Runbook.objects.get().team.slug == "ops"


BAD_FILES = {
    "not-utf8.md": ("# Title\n\n- caf\xe9 step\n".encode("latin-1"), "UTF-8"),
    "no-steps.md": (b"# Only a title\n", "no steps"),
    "huge.md": (b"# Big\n\n- step\n" + b"x" * (1024 * 1024 + 10), "1 MB"),
    "many.md": (b"# Many\n\n" + b"".join(b"- step %d\n" % i for i in range(2001)), "2,000"),
    "bad-yaml.yml": (b"title: X\nsteps:\n  - title: a\n   after: [\n", "line"),
    "unknown-after.yaml": (
        b"title: X\nsteps:\n  - id: a\n    title: A\n  - id: b\n    title: B\n    after: [zz]\n",
        "zz",
    ),
    "bad-front-matter.md": (b"---\ntitle: [unclosed\n---\n# T\n\n- a\n", "line"),
}


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(BAD_FILES))
def test_bad_file_is_refused_with_one_line_and_nothing_saved(name, tmp_path, team):
    data, expected = BAD_FILES[name]
    path = tmp_path / name
    path.write_bytes(data)
    before = _counts()
    with pytest.raises(CommandError) as refused:
        _import(path, "--team", "ops")
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{name}: ")
    assert expected.lower() in message.lower(), message
    assert _counts() == before


@pytest.mark.django_db
def test_unknown_team_is_refused_and_not_created(shared_runbooks, team):
    with pytest.raises(CommandError, match="no team 'nosuch'.*ops"):
        _import(shared_runbooks / "gitlab-cmoc-checklist.md", "--team", "nosuch")
    assert not Team.objects.filter(slug="nosuch").exists()
    assert not Runbook.objects.exists()


def test_bad_file_exits_with_status_one_and_prints_the_error(tmp_path):
    path = tmp_path / "no-steps.md"
    path.write_bytes(b"# Nothing to do\n\nJust prose.\n")
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.sqlite3'}"}
    manage = [sys.executable, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=REPO_ROOT, env=env, check=True, timeout=120)
    done = subprocess.run(
        [*manage, "import_runbook", str(path)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, env=env,
    )
    assert done.returncode == 1
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no steps" in lines[0].lower(), done.stderr


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("key", "value"),
    [("lease_minutes", 99999999999), ("max_attempts", 1000), ("wip_limit", 101),
     ("max_lease_minutes", 5000000000)],
)
def test_out_of_range_setting_is_refused_before_it_can_overflow_a_lease(key, value, tmp_path):
    path = tmp_path / "huge-lease.md"
    path.write_text(f"---\n{key}: {value}\n---\n# Huge\n\n- one step\n")
    before = _counts()
    with pytest.raises(CommandError, match=f"'{key}' must be at most"):
        _import(path)
    assert _counts() == before
