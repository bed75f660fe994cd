"""Managers push through the web views: launch with a recommended mode, push a run, restart
it from a step, cancel it, assign a stuck item; the board's "Pushed to you" notice."""

import re
import uuid
from html.parser import HTMLParser

import pytest
from django.urls import reverse

from accounts.models import Role
from board.models import (
    Checkpoint,
    CheckpointKind,
    IdempotencyKey,
    Item,
    ItemState,
    Run,
    RunMode,
    RunState,
)
from board.services import (
    item_abandon,
    item_claim_next,
    item_complete,
    recommend_mode,
    run_launch,
)

HTMX = {"HTTP_HX_REQUEST": "true"}
REASON = "sam is off shift"


@pytest.fixture
def as_user(client):
    def login(user):
        client.force_login(user)
        return client

    return login


@pytest.fixture
def foreign_manager(make_user, other_team):
    return make_user("pia", Role.MANAGER, team="payments")


def form(**fields) -> dict:
    """What a freshly rendered form posts: its fields and a new idempotency key."""
    return {"idempotency_key": str(uuid.uuid4()), **fields}


def kinds(run) -> list[str]:
    return list(Checkpoint.objects.filter(run=run).order_by("id").values_list("kind", flat=True))


def page_of(client, run) -> str:
    response = client.get(reverse("board:run", args=[run.pk]))
    assert response.status_code == 200
    return response.content.decode()


class _FormReader(HTMLParser):
    """The fields a browser would send from the form posting to `action`: its hidden and text
    inputs with their values (selects and empty inputs are left to the test)."""

    def __init__(self, action: str) -> None:
        super().__init__()
        self.action, self.inside, self.found, self.fields = action, False, False, {}

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form" and attrs.get("action") == self.action:
            self.inside = self.found = True
        elif tag == "input" and self.inside and attrs.get("name") and attrs.get("value"):
            self.fields[attrs["name"]] = attrs["value"]

    def handle_endtag(self, tag):
        if tag == "form":
            self.inside = False


def rendered_form(html: str, action: str) -> dict:
    reader = _FormReader(action)
    reader.feed(html)
    assert reader.found, f"no form posting to {action}"
    return reader.fields


# --- Launch: the recommendation -------------------------------------------------------------


COMBINATIONS = [
    ("partial", "transient", RunMode.PULL, "A transient, partial failure"),
    ("total", "persistent", RunMode.PUSH, "A persistent, total failure"),
    ("partial", "persistent", RunMode.HYBRID, "A mixed failure"),
    ("total", "transient", RunMode.HYBRID, "A mixed failure"),
]


@pytest.mark.parametrize(("scope", "nature", "mode", "words"), COMBINATIONS)
def test_recommendation_fragment_names_the_mode_and_its_reason(as_user, manager, scope, nature,
                                                               mode, words):
    response = as_user(manager).get(
        reverse("board:launch_recommendation"), {"scope": scope, "nature": nature}, **HTMX
    )

    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<div id="recommendation"')
    assert "<html" not in body
    assert f"Recommended: <strong>{RunMode(mode).label}</strong>" in body
    assert words in body and recommend_mode(scope, nature)[1] in body
    assert "Answer both questions" not in body


@pytest.mark.parametrize("answers", [{}, {"scope": "total"}, {"nature": "nonsense"}])
def test_recommendation_fragment_before_both_answers_is_the_default(as_user, manager, answers):
    body = as_user(manager).get(reverse("board:launch_recommendation"), answers,
                                **HTMX).content.decode()

    assert "Recommended: <strong>Pull</strong>" in body
    assert "Pull is the default" in body and "Answer both questions" in body


def test_recommendation_fragment_is_for_managers(as_user, staff):
    response = as_user(staff).get(reverse("board:launch_recommendation"),
                                  {"scope": "total", "nature": "persistent"})
    assert response.status_code == 403


def test_launch_page_asks_both_facts_and_asks_again_on_each_change(as_user, manager,
                                                                    make_runbook):
    make_runbook()

    page = as_user(manager).get(reverse("board:launch")).content.decode()

    for name, value in (("scope", "partial"), ("scope", "total"), ("nature", "transient"),
                        ("nature", "persistent")):
        assert re.search(rf'<input type="radio" name="{name}" value="{value}"[^>]* required', page)
    facts = page[page.index('class="failure-facts"'):]
    assert f'hx-get="{reverse("board:launch_recommendation")}"' in facts[:400]
    assert 'hx-trigger="change"' in facts[:400] and 'hx-target="#recommendation"' in facts[:400]
    assert '<div id="recommendation"' in page and "Pull is the default" in page
    assert '<option value="" selected>Follow the recommendation</option>' in page
    assert '<optgroup label="People on Ops">' in page and '<optgroup label="Teams">' in page


def test_launch_form_error_keeps_the_answers_and_their_recommendation(as_user, manager,
                                                                      make_runbook):
    runbook = make_runbook()

    response = as_user(manager).post(reverse("board:launch"), form(
        runbook=runbook.pk, title=" ", severity="2", scope="total", nature="persistent",
    ))

    page = response.content.decode()
    assert response.status_code == 422
    assert "Recommended: <strong>Push</strong>" in page
    assert re.search(r'value="total"[^>]* checked', page)
    assert f'hx-get="{reverse("board:launch_recommendation")}"' in page
    assert not Run.objects.exists()


@pytest.mark.parametrize("missing", ["scope", "nature"])
def test_launch_without_both_facts_is_refused(as_user, manager, make_runbook, missing):
    runbook = make_runbook()
    data = form(runbook=runbook.pk, title="INC-9", severity="2", scope="total",
                nature="persistent")
    del data[missing]

    response = as_user(manager).post(reverse("board:launch"), data)

    assert response.status_code == 422
    assert 'class="field-error"' in response.content.decode()
    assert not Run.objects.exists()


# --- Launch: what is stored -----------------------------------------------------------------


@pytest.mark.parametrize(("scope", "nature", "mode", "words"), COMBINATIONS)
def test_launch_stores_the_facts_and_follows_the_recommendation(as_user, manager, make_runbook,
                                                                scope, nature, mode, words):
    runbook = make_runbook()

    response = as_user(manager).post(reverse("board:launch"), form(
        runbook=runbook.pk, title="INC-9 replica lag", severity="2", scope=scope,
        nature=nature, mode="",
    ))

    run = Run.objects.get()
    assert response.status_code == 303
    assert (run.scope, run.nature, run.recommended_mode, run.mode) == (scope, nature, mode, mode)
    launched = Checkpoint.objects.get(run=run)
    assert launched.kind == CheckpointKind.LAUNCHED
    assert (launched.data["scope"], launched.data["nature"], launched.data["recommended_mode"],
            launched.data["mode"]) == (scope, nature, mode, mode)


def test_launch_can_override_the_recommendation(as_user, manager, make_runbook):
    runbook = make_runbook()

    as_user(manager).post(reverse("board:launch"), form(
        runbook=runbook.pk, title="INC-9", severity="2", scope="total", nature="persistent",
        mode="pull",
    ))

    run = Run.objects.get()
    assert (run.recommended_mode, run.mode) == (RunMode.PUSH, RunMode.PULL)
    data = Checkpoint.objects.get(run=run).data
    assert (data["recommended_mode"], data["mode"]) == ("push", "pull")
    assert "(recommended: Push)" in page_of(as_user(manager), run)


def test_launch_pushed_to_a_person(as_user, manager, teammate, make_runbook):
    runbook = make_runbook()

    as_user(manager).post(reverse("board:launch"), form(
        runbook=runbook.pk, title="INC-9", severity="2", scope="partial", nature="transient",
        push_to=f"user:{teammate.username}",
    ))

    run = Run.objects.get()
    assert (run.assignee, run.assigned_team) == (teammate, None)
    assert set(run.items.values_list("assignee", flat=True)) == {teammate.pk}
    data = Checkpoint.objects.get(run=run).data
    assert (data["assignee"], data["assigned_team"]) == ("tia", None)
    board = as_user(teammate).get(reverse("board:board")).content.decode()
    assert "Pushed to you" in board and "launched" in board and "for you" in board


def test_launch_pushed_to_a_team(as_user, manager, team, make_runbook):
    runbook = make_runbook()

    as_user(manager).post(reverse("board:launch"), form(
        runbook=runbook.pk, title="INC-9", severity="2", scope="partial", nature="transient",
        push_to="team:ops",
    ))

    run = Run.objects.get()
    assert (run.assignee, run.assigned_team) == (None, team)
    assert Checkpoint.objects.get(run=run).data["assigned_team"] == "ops"


def test_launch_push_to_someone_not_offered_is_refused(as_user, manager, outsider,
                                                       make_runbook):
    runbook = make_runbook()

    response = as_user(manager).post(reverse("board:launch"), form(
        runbook=runbook.pk, title="INC-9", severity="2", scope="partial", nature="transient",
        push_to=f"user:{outsider.username}",
    ))

    assert response.status_code == 422
    assert not Run.objects.exists()


def test_launch_team_is_the_runbooks_by_default_and_only_one_the_manager_manages(
    as_user, manager, team, other_team, make_runbook
):
    runbook = make_runbook()
    client = as_user(manager)

    refused = client.post(reverse("board:launch"), form(
        runbook=runbook.pk, title="INC-8", severity="2", scope="partial", nature="transient",
        team=other_team.pk,
    ))
    assert refused.status_code == 422 and not Run.objects.exists()

    client.post(reverse("board:launch"), form(
        runbook=runbook.pk, title="INC-9", severity="2", scope="partial", nature="transient",
    ))
    assert Run.objects.get().team == team


def test_launch_of_a_ref_already_open_opens_that_run(as_user, manager, make_runbook):
    runbook = make_runbook()
    client = as_user(manager)
    fields = {"runbook": runbook.pk, "title": "INC-9 replica lag", "severity": "2",
              "ref": "INC-9", "scope": "partial", "nature": "transient"}
    client.post(reverse("board:launch"), form(**fields))

    again = client.post(reverse("board:launch"), form(**fields), follow=True)

    run = Run.objects.get()
    assert again.redirect_chain == [(reverse("board:run", args=[run.pk]), 303)]
    assert "is already open for INC-9" in again.content.decode()
    assert kinds(run) == [CheckpointKind.LAUNCHED]


def test_launch_key_reused_with_other_answers_is_refused(as_user, manager, make_runbook):
    runbook = make_runbook()
    client = as_user(manager)
    sent = form(runbook=runbook.pk, title="INC-9", severity="2", scope="partial",
                nature="transient")
    client.post(reverse("board:launch"), sent)

    changed = client.post(reverse("board:launch"), {**sent, "nature": "persistent"})

    assert changed.status_code == 422
    assert "already used for a different request" in changed.content.decode()
    assert Run.objects.count() == 1


# --- Push a whole run -----------------------------------------------------------------------


def _push(client, run, target: str, reason: str = REASON, **extra):
    return client.post(reverse("board:run_reassign", args=[run.pk]),
                       form(target=target, reason=reason), **extra)


def test_push_takes_back_another_persons_claim(as_user, manager, staff, teammate, make_run):
    run = make_run()
    held = item_claim_next(actor=staff, run=run)
    open_items = list(run.items.exclude(state__in=["done", "skipped"]).order_by("position"))

    response = _push(as_user(manager), run, "user:tia")

    assert response.status_code == 303
    assert response["Location"] == reverse("board:run", args=[run.pk])
    run.refresh_from_db()
    held.refresh_from_db()
    assert run.assignee == teammate
    assert (held.state, held.holder, held.assignee) == (ItemState.AVAILABLE, None, teammate)
    pushed = Checkpoint.objects.filter(run=run, kind=CheckpointKind.REASSIGNED).order_by("id")
    assert [cp.item_id for cp in pushed] == [item.pk for item in open_items]
    assert {(cp.reason, cp.actor, cp.data["to"]) for cp in pushed} == {(REASON, manager, "tia")}
    assert kinds(run) == ["launched", "claimed"] + ["reassigned"] * len(open_items)

    refused = as_user(staff).post(reverse("board:item_complete", args=[held.pk]),
                                  form(token=held.token - 1), **HTMX)
    assert refused.status_code == 409
    assert (f"Your claim on “{held.title}” was taken back: maya pushed the run to tia: "
            f"“{REASON}”.") in refused.content.decode()


def test_push_by_htmx_swaps_the_run_page_with_a_notice(as_user, manager, teammate, make_run):
    run = make_run()

    response = _push(as_user(manager), run, "user:tia", **HTMX)

    body = response.content.decode()
    assert response.status_code == 200
    assert body.lstrip().startswith('<article class="run-page" id="run-page">')
    assert "Pushed to tia" in body
    assert 'id="flash"' in body and 'hx-swap-oob="true"' in body
    assert "Pushed “INC-1 primary down” to tia: 4 items reassigned." in body


def test_push_to_a_team_then_back_to_the_pool(as_user, manager, team, make_run):
    run = make_run()
    client = as_user(manager)

    _push(client, run, "team:ops")
    run.refresh_from_db()
    assert (run.assignee, run.assigned_team) == (None, team)
    assert "Pushed to team Ops" in page_of(client, run)

    _push(client, run, "pool", reason="everyone can help now")
    run.refresh_from_db()
    assert (run.assignee, run.assigned_team) == (None, None)
    assert not run.items.filter(assigned_team__isnull=False).exists()
    assert kinds(run).count("reassigned") == 8


@pytest.mark.parametrize(("target", "reason", "words"), [
    ("user:tia", "  ", "a reason is required"),
    ("", REASON, "This field is required"),
    ("user:otto", REASON, "Select a valid choice"),
    ("team:payments", REASON, "Select a valid choice"),
])
def test_push_with_bad_input_is_a_422_and_changes_nothing(as_user, manager, teammate, outsider,
                                                          make_run, target, reason, words):
    run = make_run()
    before = kinds(run)

    response = _push(as_user(manager), run, target, reason, **HTMX)

    assert response.status_code == 422 and words in response.content.decode()
    assert response["HX-Retarget"] == "#flash"
    assert 'id="my-work"' not in response.content.decode()
    run.refresh_from_db()
    assert run.assignee is None and kinds(run) == before


def test_push_with_bad_input_without_javascript_is_a_message_back_on_the_run_page(
    as_user, manager, teammate, make_run
):
    run = make_run()
    client = as_user(manager)
    fields = rendered_form(page_of(client, run), reverse("board:run_reassign", args=[run.pk]))

    response = client.post(reverse("board:run_reassign", args=[run.pk]),
                           {**fields, "target": "user:tia", "reason": ""}, follow=True)

    assert response.redirect_chain == [(reverse("board:run", args=[run.pk]), 303)]
    assert "a reason is required" in response.content.decode()
    assert kinds(run) == ["launched"]


def test_a_push_form_opened_before_an_item_was_done_leaves_it_done(as_user, manager, staff,
                                                                    teammate, make_run):
    run = make_run()
    client = as_user(manager)
    action = reverse("board:run_reassign", args=[run.pk])
    fields = rendered_form(page_of(client, run), action)  # the form as the manager saw it
    assert set(fields) == {"csrfmiddlewaretoken", "idempotency_key", "next"}
    first = item_claim_next(actor=staff, run=run)
    item_complete(item_id=first.pk, token=first.token, actor=staff)  # meanwhile

    response = client.post(action, {**fields, "target": "user:tia", "reason": REASON})

    assert response.status_code == 303
    first.refresh_from_db()
    assert (first.state, first.assignee) == (ItemState.DONE, None)
    pushed = Checkpoint.objects.filter(run=run, kind=CheckpointKind.REASSIGNED)
    assert first.pk not in {cp.item_id for cp in pushed}
    assert pushed.count() == 3 == run.items.filter(assignee=teammate).count()


def test_push_form_sent_twice_pushes_once(as_user, manager, teammate, make_run):
    run = make_run()
    client = as_user(manager)
    sent = form(target="user:tia", reason=REASON)

    client.post(reverse("board:run_reassign", args=[run.pk]), sent)
    again = client.post(reverse("board:run_reassign", args=[run.pk]), sent, follow=True)

    assert "Pushed “INC-1 primary down” to tia: 4 items reassigned." in again.content.decode()
    assert kinds(run).count("reassigned") == 4


# --- Where a push shows ---------------------------------------------------------------------


def test_board_shows_the_push_and_tells_the_assignee_at_the_next_poll(
    as_user, client, manager, staff, teammate, make_run
):
    run = make_run()
    _push(as_user(manager), run, "user:tia")

    poll = as_user(teammate).get(reverse("board:board"), **HTMX).content.decode()
    assert poll.lstrip().startswith('<section id="runs"')
    notice = poll[poll.index('id="pushed-to-me"'):poll.index("</ul>")]
    assert "Pushed to you" in notice
    assert "maya" in notice and "INC-1 primary down" in notice
    assert f"“<bdi>{REASON}</bdi>”" in notice
    assert "Pushed to tia" in poll  # the run's badge

    others = as_user(staff).get(reverse("board:board")).content.decode()
    assert 'id="pushed-to-me"' not in others and "Pushed to tia" in others
    assert f'action="{reverse("board:item_claim", args=[run.items.first().pk])}"' not in others


def test_board_tells_the_team_a_run_was_pushed_to_it(as_user, manager, staff, make_run):
    _push(as_user(manager), make_run(), "team:ops")

    board = as_user(staff).get(reverse("board:board")).content.decode()

    assert "Pushed to you" in board and "to your team Ops" in board
    assert "Pushed to team Ops" in board


def test_board_tells_the_person_an_item_was_assigned_to_them(as_user, manager, staff, teammate,
                                                              make_runbook, make_run):
    item = _stuck_item(make_runbook, make_run, staff)
    as_user(manager).post(reverse("board:item_assign", args=[item.pk]),
                          form(assignee="tia"), **HTMX)

    board = as_user(teammate).get(reverse("board:board")).content.decode()

    notice = board[board.index('id="pushed-to-me"'):]
    assert f"assigned #1 “{item.title}”" in notice and "to you" in notice
    assert '<span class="pushed"' in board and "Pushed to tia" in board


def test_board_query_count_with_pushes_does_not_grow_with_runs(
    as_user, manager, teammate, make_runbook, make_run, django_assert_max_num_queries
):
    runbook = make_runbook()
    for number in range(4):
        run = make_run(runbook=runbook, title=f"INC-{number}")
        _push(as_user(manager), run, "user:tia")
    client = as_user(teammate)

    with django_assert_max_num_queries(12):
        page = client.get(reverse("board:board")).content.decode()

    assert page.count("pushed <a href=") == 4


# --- Restart --------------------------------------------------------------------------------


def _restart(client, run, position: int, reason: str = "the snapshot was bad", **extra):
    return client.post(reverse("board:run_restart", args=[run.pk]),
                       form(from_position=str(position), reason=reason), **extra)


def _finish(run, actor, count: int) -> None:
    for _ in range(count):
        item = item_claim_next(actor=actor, run=run)
        item_complete(item_id=item.pk, token=item.token, actor=actor)


def test_restart_resets_the_items_and_the_run_page_marks_it(as_user, manager, staff, make_run):
    run = make_run()
    _finish(run, staff, 3)
    client = as_user(manager)

    response = _restart(client, run, 2)

    assert response.status_code == 303
    states = dict(run.items.values_list("position", "state"))
    assert states[1] == ItemState.DONE and states[2] == ItemState.AVAILABLE
    resets = list(Checkpoint.objects.filter(run=run, kind=CheckpointKind.RESET).order_by("id"))
    assert {cp.item.position for cp in resets} >= {2, 3}
    assert len({cp.data["restart"] for cp in resets}) == 1
    assert {cp.data["from_position"] for cp in resets} == {2}
    page = page_of(client, run)
    marker = page.index("Restarted from step 2 by maya: <bdi>the snapshot was bad</bdi>")
    first_reset = page.index("kind-reset")
    assert page.index("kind-completed") < marker < first_reset
    assert f"({len(resets)} items reset)" in page


def test_two_restarts_each_get_a_marker_before_their_resets(as_user, manager, staff, make_run):
    run = make_run()
    client = as_user(manager)
    _finish(run, staff, 2)
    _restart(client, run, 1, reason="first try")
    _finish(run, staff, 1)
    _restart(client, run, 1, reason="second try")

    page = page_of(client, run)

    body = page[page.index('<tbody>'):]
    rows = re.findall(
        r'Restarted from step 1 by maya: <bdi>(\w+ try)</bdi>|kind-(reset|completed)"', body
    )
    sequence = [reason or kind for reason, kind in rows]
    first, second = sequence.index("first try"), sequence.index("second try")
    assert sequence[first + 1] == "reset" and sequence[second + 1] == "reset"
    assert "completed" in sequence[first:second]
    assert set(sequence[second + 1:]) == {"reset"}


@pytest.mark.parametrize(("position", "reason", "status", "words"), [
    (9, "why", 422, "Select a valid choice"),
    (1, "", 422, "a reason is required"),
    (3, "nothing done yet", 409, "Nothing to restart"),
])
def test_restart_refusals_change_nothing(as_user, manager, make_run, position, reason, status,
                                         words):
    run = make_run()

    response = _restart(as_user(manager), run, position, reason, **HTMX)

    assert response.status_code == status and words in response.content.decode()
    assert kinds(run) == ["launched"]


# --- Cancel ---------------------------------------------------------------------------------


def test_cancel_takes_back_the_claims_and_ends_the_run(as_user, manager, staff, make_run):
    run = make_run()
    held = item_claim_next(actor=staff, run=run)

    response = as_user(manager).post(reverse("board:run_cancel", args=[run.pk]),
                                     form(reason="false alarm"), follow=True)

    run.refresh_from_db()
    assert response.redirect_chain == [(reverse("board:run", args=[run.pk]), 303)]
    assert run.state == RunState.CANCELLED and run.cancelled_at is not None
    assert kinds(run) == ["launched", "claimed", "run_cancelled"]
    page = response.content.decode()
    assert "Cancelled “INC-1 primary down”" in page and "Manage this run" not in page
    refused = as_user(staff).post(reverse("board:item_complete", args=[held.pk]),
                                  form(token=held.token), **HTMX)
    assert refused.status_code == 409
    assert "maya cancelled the run: “false alarm”" in refused.content.decode()
    assert "INC-1 primary down" not in as_user(staff).get(reverse("board:board")).content.decode()


def test_cancel_without_a_reason_is_a_422_and_changes_nothing(as_user, manager, make_run):
    run = make_run()

    response = as_user(manager).post(reverse("board:run_cancel", args=[run.pk]),
                                     form(reason=""), **HTMX)

    run.refresh_from_db()
    assert response.status_code == 422 and "a reason is required" in response.content.decode()
    assert run.state == RunState.ACTIVE and kinds(run) == ["launched"]


# --- Stuck lane -----------------------------------------------------------------------------


def _stuck_item(make_runbook, make_run, staff):
    run = make_run(runbook=make_runbook(max_attempts=1))
    item = item_claim_next(actor=staff, run=run)
    return item_abandon(item_id=item.pk, token=item.token, actor=staff, reason="no access")


def test_stuck_lane_requeue_through_the_view(as_user, manager, staff, make_runbook, make_run):
    item = _stuck_item(make_runbook, make_run, staff)

    response = as_user(manager).post(reverse("board:item_requeue", args=[item.pk]), form(),
                                     **HTMX)

    item.refresh_from_db()
    assert response.status_code == 200
    assert (item.state, item.attempts) == (ItemState.AVAILABLE, 0)
    assert kinds(item.run)[-1] == CheckpointKind.REQUEUED


def test_stuck_lane_skip_through_the_view(as_user, manager, staff, make_runbook, make_run):
    item = _stuck_item(make_runbook, make_run, staff)

    as_user(manager).post(reverse("board:item_skip", args=[item.pk]),
                          form(reason="done by hand"), **HTMX)

    item.refresh_from_db()
    assert item.state == ItemState.SKIPPED and kinds(item.run)[-1] == CheckpointKind.SKIPPED


def test_stuck_lane_assign_to_a_person(as_user, manager, staff, teammate, make_runbook,
                                       make_run):
    item = _stuck_item(make_runbook, make_run, staff)
    client = as_user(manager)
    board = client.get(reverse("board:board")).content.decode()
    assert f'action="{reverse("board:item_assign", args=[item.pk])}"' in board
    assert '<option value="tia">tia</option>' in board

    response = client.post(reverse("board:item_assign", args=[item.pk]), form(assignee="tia"),
                           **HTMX)

    item.refresh_from_db()
    assert response.status_code == 200
    assert "Assigned #1 “Freeze writes” to tia" in response.content.decode()
    assert (item.state, item.attempts, item.assignee) == (ItemState.AVAILABLE, 0, teammate)
    assigned = Checkpoint.objects.filter(run=item.run).order_by("id").last()
    assert (assigned.kind, assigned.item_id, assigned.data["scope"], assigned.data["to"]) == (
        CheckpointKind.REASSIGNED, item.pk, "item", "tia")
    assert item_claim_next(actor=teammate).pk == item.pk  # theirs first


def test_stuck_lane_assign_to_someone_off_the_team_is_a_422(as_user, manager, staff, outsider,
                                                            make_runbook, make_run):
    item = _stuck_item(make_runbook, make_run, staff)
    before = kinds(item.run)

    response = as_user(manager).post(reverse("board:item_assign", args=[item.pk]),
                                     form(assignee="otto"), **HTMX)

    item.refresh_from_db()
    assert response.status_code == 422 and item.state == ItemState.STUCK
    assert kinds(item.run) == before


def test_only_managers_see_the_stuck_lane_assign_and_the_run_forms(as_user, manager, staff,
                                                                   auditor, make_runbook,
                                                                   make_run):
    item = _stuck_item(make_runbook, make_run, staff)
    assign = f'action="{reverse("board:item_assign", args=[item.pk])}"'

    for user in (staff, auditor):
        client = as_user(user)
        assert assign not in client.get(reverse("board:board")).content.decode()
        page = page_of(client, item.run)
        assert "Manage this run" not in page and "run_reassign" not in page
        assert reverse("board:run_reassign", args=[item.run_id]) not in page
    page = page_of(as_user(manager), item.run)
    for name in ("run_reassign", "run_restart", "run_cancel"):
        assert f'action="{reverse(f"board:{name}", args=[item.run_id])}"' in page


# --- Who may ----------------------------------------------------------------------------------


ACTIONS = {
    "reassign": lambda run, item: (reverse("board:run_reassign", args=[run.pk]),
                                   {"target": "user:tia", "reason": "x"}),
    "restart": lambda run, item: (reverse("board:run_restart", args=[run.pk]),
                                  {"from_position": "1", "reason": "x"}),
    "cancel": lambda run, item: (reverse("board:run_cancel", args=[run.pk]), {"reason": "x"}),
    "requeue": lambda run, item: (reverse("board:item_requeue", args=[item.pk]), {}),
    "skip": lambda run, item: (reverse("board:item_skip", args=[item.pk]), {"reason": "x"}),
    "assign": lambda run, item: (reverse("board:item_assign", args=[item.pk]),
                                 {"assignee": "tia"}),
}


@pytest.mark.parametrize("htmx", [False, True], ids=["plain", "htmx"])
@pytest.mark.parametrize(("persona", "status"), [
    ("staff", 403), ("auditor", 403), ("outsider", 404), ("foreign_manager", 404),
])
@pytest.mark.parametrize("action", ACTIONS)
def test_manager_actions_are_refused_to_others_and_write_nothing(
    request, as_user, teammate, staff, make_runbook, make_run, action, persona, status, htmx
):
    item = _stuck_item(make_runbook, make_run, staff)
    run = item.run
    url, fields = ACTIONS[action](run, item)
    user = request.getfixturevalue(persona)
    before = (kinds(run), list(run.items.order_by("pk").values_list("state", "assignee")))

    response = as_user(user).post(url, form(**fields), **(HTMX if htmx else {}))

    assert response.status_code == status
    run.refresh_from_db()
    assert run.state == RunState.ACTIVE and run.assignee is None
    assert (kinds(run), list(run.items.order_by("pk").values_list("state", "assignee"))) == before
    assert not IdempotencyKey.objects.filter(user=user).exists()


def test_staff_are_refused_the_launch_page_and_the_launch(as_user, staff, make_runbook):
    runbook = make_runbook()
    client = as_user(staff)

    assert client.get(reverse("board:launch")).status_code == 403
    response = client.post(reverse("board:launch"), form(
        runbook=runbook.pk, title="x", severity="2", scope="total", nature="persistent",
    ))
    assert response.status_code == 403 and not Run.objects.exists()


def test_a_run_pushed_to_another_team_is_theirs_to_work_not_to_manage(
    as_user, make_user, team, other_team, make_runbook
):
    """A manager of both teams pushes an Ops run to Payments: Payments staff see it and may
    claim it, Payments' own manager may not manage it (it is Ops' run)."""
    boss = make_user("bo", Role.MANAGER)
    from accounts.access import grant_role

    grant_role(user=boss, team=other_team, role=Role.MANAGER)
    payer = make_user("pat", Role.STAFF, team="payments")
    payments_manager = make_user("pia", Role.MANAGER, team="payments")
    run = run_launch(runbook=make_runbook(), title="INC-5 shared", actor=boss)
    assert _push(as_user(boss), run, "team:payments").status_code == 303

    board = as_user(payer).get(reverse("board:board")).content.decode()
    assert "INC-5 shared" in board and "to your team Payments" in board
    first = Item.objects.filter(run=run, state=ItemState.AVAILABLE).order_by("position").first()
    assert f'action="{reverse("board:item_claim", args=[first.pk])}"' in board
    assert _push(as_user(payments_manager), run, "pool").status_code == 403
