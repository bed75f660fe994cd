"""Runbook pages: list, one version, and the import form."""

import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from checklists.models import Runbook
from tests.conftest import SIMPLE_RUNBOOK

YAML_RUNBOOK = """\
title: Rotate the API token
steps:
  - id: revoke
    title: Revoke the old token
    body: "Use `tokenctl revoke`."
  - id: issue
    title: Issue a new token
    after: [revoke]
"""


@pytest.fixture
def as_user(client):
    def login(user):
        client.force_login(user)
        return client

    return login


def upload(text: str | bytes, name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, text.encode() if isinstance(text, str) else text)


# --- List and detail ------------------------------------------------------------------------


def test_list_shows_the_latest_version_of_each_slug_with_step_counts(as_user, staff,
                                                                     make_runbook):
    make_runbook()
    latest = make_runbook()

    response = as_user(staff).get(reverse("checklists:runbook_list"))

    page = response.content.decode()
    assert response.status_code == 200
    assert page.count("Database failover") == 1
    assert reverse("checklists:runbook", args=[latest.pk]) in page
    assert "<td>v2</td>" in page and "<td>4</td>" in page


def test_list_hides_other_teams_runbooks(as_user, staff, make_runbook, other_team):
    make_runbook("# Payments reset\n\n- Reset the gateway\n", filename="pay.md",
                 owner=other_team)

    page = as_user(staff).get(reverse("checklists:runbook_list")).content.decode()

    assert "Payments reset" not in page


def test_detail_shows_sections_notes_and_rendered_bodies(as_user, staff, make_runbook):
    runbook = make_runbook(
        "# Failover\n\nMove traffic **carefully**.\n\n## Prepare\n\nTell the *pager*.\n\n"
        "1. Freeze writes\n\n   Run `freeze --all`.\n\n   <script>alert(1)</script>\n"
    )

    page = as_user(staff).get(reverse("checklists:runbook", args=[runbook.pk])).content.decode()

    assert "Failover" in page and "v1" in page
    assert "<strong>carefully</strong>" in page  # description
    assert "Prepare" in page and "<em>pager</em>" in page  # section and its note
    assert "<code>freeze --all</code>" in page  # step body
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page


def test_detail_of_another_teams_runbook_is_404(as_user, outsider, make_runbook):
    runbook = make_runbook()
    response = as_user(outsider).get(reverse("checklists:runbook", args=[runbook.pk]))
    assert response.status_code == 404


def test_launch_link_only_for_managers(as_user, staff, manager, make_runbook):
    runbook = make_runbook()
    url = reverse("checklists:runbook", args=[runbook.pk])
    launch = f"{reverse('board:launch')}?runbook={runbook.pk}"

    assert launch not in as_user(staff).get(url).content.decode()
    assert launch in as_user(manager).get(url).content.decode()


# --- Import ---------------------------------------------------------------------------------


def test_import_form_accepts_a_markdown_file(as_user, manager, team):
    response = as_user(manager).post(reverse("checklists:runbook_import"), {
        "idempotency_key": str(uuid.uuid4()),
        "file": upload(SIMPLE_RUNBOOK, "failover.md"), "team": team.pk,
    })

    runbook = Runbook.objects.get()
    assert response.status_code == 303
    assert response["Location"] == reverse("checklists:runbook", args=[runbook.pk])
    assert (runbook.title, runbook.team, runbook.imported_by) == (
        "Database failover", team, manager)
    assert runbook.steps.count() == 4


def test_import_form_accepts_a_yaml_file(as_user, manager, team):
    as_user(manager).post(reverse("checklists:runbook_import"), {
        "idempotency_key": str(uuid.uuid4()),
        "file": upload(YAML_RUNBOOK, "rotate.yml"), "team": team.pk,
    })

    runbook = Runbook.objects.get()
    assert [s.title for s in runbook.steps.order_by("position")] == [
        "Revoke the old token", "Issue a new token"]


@pytest.mark.parametrize(("content", "name", "message"), [
    ("# Title only\n\nNo steps here.\n", "empty.md", "no steps found"),
    ("title: [unclosed", "broken.yml", "not valid YAML"),
    (b"\xff\xfe\x00 not text", "binary.md", "not UTF-8"),
])
def test_import_parse_error_is_a_form_error_and_saves_nothing(as_user, manager, team,
                                                              content, name, message):
    response = as_user(manager).post(reverse("checklists:runbook_import"), {
        "idempotency_key": str(uuid.uuid4()),
        "file": upload(content, name), "team": team.pk,
    })

    assert response.status_code == 422
    page = response.content.decode()
    assert 'class="field-error"' in page and message in page
    assert not Runbook.objects.exists()


def test_import_refuses_other_file_types(as_user, manager, team):
    response = as_user(manager).post(reverse("checklists:runbook_import"), {
        "idempotency_key": str(uuid.uuid4()),
        "file": upload("#!/bin/sh\n", "evil.sh"), "team": team.pk,
    })

    assert response.status_code == 422
    assert "Markdown (.md) or YAML (.yml)" in response.content.decode()
    assert not Runbook.objects.exists()


def test_import_into_a_team_i_do_not_manage_is_refused(as_user, manager, other_team):
    response = as_user(manager).post(reverse("checklists:runbook_import"), {
        "idempotency_key": str(uuid.uuid4()),
        "file": upload(SIMPLE_RUNBOOK, "failover.md"), "team": other_team.pk,
    })

    assert response.status_code == 422
    assert not Runbook.objects.exists()


@pytest.mark.parametrize("persona", ["staff", "auditor", "outsider"])
def test_only_managers_may_import(as_user, request, persona, team):
    user = request.getfixturevalue(persona)
    client = as_user(user)

    assert client.get(reverse("checklists:runbook_import")).status_code == 403
    response = client.post(reverse("checklists:runbook_import"), {
        "idempotency_key": str(uuid.uuid4()),
        "file": upload(SIMPLE_RUNBOOK, "failover.md"), "team": team.pk,
    })
    assert response.status_code == 403
    assert not Runbook.objects.exists()


def test_import_form_sent_twice_stores_one_version(as_user, manager, team):
    client = as_user(manager)
    key = str(uuid.uuid4())

    responses = [
        client.post(reverse("checklists:runbook_import"), {
            "idempotency_key": key, "file": upload(SIMPLE_RUNBOOK, "failover.md"),
            "team": team.pk,
        })
        for _ in range(2)
    ]

    runbook = Runbook.objects.get()
    assert [r.status_code for r in responses] == [303, 303]
    assert {r["Location"] for r in responses} == {
        reverse("checklists:runbook", args=[runbook.pk])}
