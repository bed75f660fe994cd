"""The API's launch and push endpoints: POST /runs, GET /runs, a manager's reassign, restart
and cancel of a run, requeue, skip and assign of an item, and who may call them."""


import pytest

from accounts.access import grant_role
from accounts.models import Role
from board.models import Checkpoint, CheckpointKind, IdempotencyKey, Item, ItemState, Run
from board.services import item_abandon, item_claim_next, item_complete
from tests.board.conftest import ApiClient

PARALLEL = (
    "---\nflow: parallel\n---\n# Cache flush\n\n"
    "- Drain node A\n- Drain node B\n- Drain node C\n"
)





@pytest.fixture
def integration(make_user, team):
    return make_user("alertbot", Role.INTEGRATION)


def kinds(run) -> list[str]:
    return list(Checkpoint.objects.filter(run=run).order_by("id").values_list("kind", flat=True))


def snapshot(run) -> tuple:
    """Everything an action could change about a run and its items, and its trail."""
    run = Run.objects.get(pk=run.pk)
    return (
        (run.state, run.assignee_id, run.assigned_team_id),
        list(Item.objects.filter(run=run).order_by("position").values_list(
            "state", "holder_id", "token", "attempts", "assignee_id", "assigned_team_id")),
        Checkpoint.objects.filter(run=run).count(),
    )


# --- Launch ---------------------------------------------------------------------------------


def test_launch_returns_the_run_with_201(api_as, manager, make_runbook):
    runbook = make_runbook()

    response = api_as(manager).post("/runs", {
        "runbook": runbook.slug, "title": "INC-9 primary down", "severity": 1, "ref": "INC-9",
    })

    assert response.status_code == 201
    run = Run.objects.get()
    body = response.json()
    assert {key: body[key] for key in ("id", "title", "ref", "severity", "state", "team",
                                       "mode", "scope", "nature", "recommended_mode",
                                       "assignee", "assigned_team")} == {
        "id": run.pk, "title": "INC-9 primary down", "ref": "INC-9", "severity": 1,
        "state": "active", "team": "ops", "mode": "pull", "scope": "", "nature": "",
        "recommended_mode": "pull", "assignee": None, "assigned_team": None,
    }
    assert [item["title"] for item in body["items"]] == [
        "Freeze writes", "Snapshot the primary", "Promote the replica", "Repoint the application",
    ]
    assert body == api_as(manager).get(f"/runs/{run.pk}").json()
    assert run.runbook == runbook and run.launched_by == manager
    assert kinds(run) == [CheckpointKind.LAUNCHED]


def test_launching_the_same_ref_again_returns_the_open_run_with_200(api_as, manager,
                                                                     make_runbook):
    runbook = make_runbook()
    client = api_as(manager)
    body = {"runbook": runbook.slug, "title": "INC-9 primary down", "ref": "INC-9"}

    first = client.post("/runs", body)
    second = client.post("/runs", {**body, "title": "INC-9 again"})  # another key

    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    assert second.json()["title"] == "INC-9 primary down"
    assert "Idempotent-Replayed" not in second
    run = Run.objects.get()
    assert kinds(run) == [CheckpointKind.LAUNCHED]


def test_a_launch_retried_with_its_key_is_replayed(api_as, manager, make_runbook):
    runbook = make_runbook()
    client = api_as(manager)
    body = {"runbook": runbook.slug, "title": "INC-10"}

    first = client.post("/runs", body, key="launch-1")
    again = client.post("/runs", body, key="launch-1")

    assert (first.status_code, again.status_code) == (201, 201)
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert Run.objects.count() == 1  # no ref, and still one run


def test_launch_launches_the_latest_version_with_the_recommended_mode(api_as, manager,
                                                                      make_runbook):
    make_runbook()
    latest = make_runbook(PARALLEL.replace("---\n", "---\nslug: database-failover\n", 1))
    assert latest.version == 2

    response = api_as(manager).post("/runs", {
        "runbook": latest.slug, "title": "INC-11", "scope": "total", "nature": "persistent",
    })

    assert response.status_code == 201
    body = response.json()
    assert (body["scope"], body["nature"], body["recommended_mode"], body["mode"]) == (
        "total", "persistent", "push", "push")
    assert Run.objects.get().runbook == latest and len(body["items"]) == 3


def test_launch_with_a_mode_overrides_the_recommendation(api_as, manager, make_runbook):
    runbook = make_runbook()

    response = api_as(manager).post("/runs", {
        "runbook": runbook.slug, "title": "INC-12", "scope": "total", "nature": "persistent",
        "mode": "pull",
    })

    assert response.status_code == 201
    assert (response.json()["recommended_mode"], response.json()["mode"]) == ("push", "pull")


def test_a_slug_in_several_of_my_teams_needs_the_team(api_as, manager, other_team,
                                                      make_runbook):
    grant_role(user=manager, team=other_team, role=Role.MANAGER)
    runbook = make_runbook()
    make_runbook(owner=other_team)
    client = api_as(manager)

    unsure = client.post("/runs", {"runbook": runbook.slug, "title": "INC-13"})
    chosen = client.post("/runs", {"runbook": runbook.slug, "title": "INC-13",
                                   "team": "payments"})

    assert unsure.status_code == 422
    assert unsure.json() == {"detail": f"Runbook “{runbook.slug}” is in several of your teams "
                                       "(ops, payments): say which one with “team”."}
    assert chosen.status_code == 201 and chosen.json()["team"] == "payments"
    assert Run.objects.get().team == other_team


def test_an_integration_launches_for_its_team(api_as, integration, make_runbook):
    runbook = make_runbook()

    response = api_as(integration).post("/runs", {"runbook": runbook.slug, "title": "INC-14"})

    assert response.status_code == 201
    run = Run.objects.get()
    assert run.launched_by == integration
    assert Checkpoint.objects.get(run=run).actor_name == "alertbot"


@pytest.mark.parametrize("persona", ["staff", "auditor"])
def test_staff_and_auditors_may_not_launch(api_as, request, make_runbook, persona):
    runbook = make_runbook()

    response = api_as(request.getfixturevalue(persona)).post(
        "/runs", {"runbook": runbook.slug, "title": "INC-15"})

    assert response.status_code == 403
    assert response.json() == {"detail": "Only managers of Ops and its alerting integration "
                                         "can launch its runs."}
    assert not Run.objects.exists() and not IdempotencyKey.objects.exists()


@pytest.mark.parametrize("body, detail", [
    ({"runbook": "database-failover"}, "No runbook “database-failover” in your teams."),
    ({"runbook": "database-failover", "team": "ops"}, "No team “ops” among your teams."),
    ({"runbook": "no-such-runbook"}, "No runbook “no-such-runbook” in your teams."),
])
def test_a_runbook_or_team_outside_mine_is_404(api_as, outsider, other_team, make_runbook,
                                               body, detail):
    runbook = make_runbook()
    assert runbook.slug == "database-failover"
    grant_role(user=outsider, team=other_team, role=Role.MANAGER)  # may launch, but not there

    response = api_as(outsider).post("/runs", {**body, "title": "INC-16"})

    assert response.status_code == 404 and response.json() == {"detail": detail}
    assert not Run.objects.exists()


@pytest.mark.parametrize("body, detail", [
    ({"title": "x"}, "Invalid request: “runbook” is required."),
    ({"runbook": "database-failover"}, "Invalid request: “title” is required."),
    ({"runbook": "database-failover", "title": "x", "severity": 7},
     "Invalid request: “severity”: input should be less than or equal to 4."),
    ({"runbook": "database-failover", "title": "x", "severity": "1"},
     "Invalid request: “severity”: input should be a valid integer."),
    ({"runbook": "database-failover", "title": "x", "colour": "red"},
     "Invalid request: “colour”: extra inputs are not permitted."),
    ({"runbook": "database-failover", "title": "x\x00"},
     "Invalid request: “title”: value error, must not contain NUL characters."),
    ({"runbook": "database-failover", "title": "   "}, "A run needs a title."),
    ({"runbook": "database-failover", "title": "x", "scope": "most"},
     "Scope must be one of partial, total."),
    ({"runbook": "database-failover", "title": "x", "mode": "shove"},
     "Mode must be one of pull, push, hybrid."),
])
def test_a_bad_launch_is_422_with_a_readable_message(api_as, manager, make_runbook, body,
                                                     detail):
    make_runbook()

    response = api_as(manager).post("/runs", body)

    assert response.status_code == 422
    assert response.json() == {"detail": detail}
    assert not Run.objects.exists()


def test_a_launch_without_an_idempotency_key_is_422(api_as, manager, make_runbook):
    runbook = make_runbook()

    response = api_as(manager).post("/runs", {"runbook": runbook.slug, "title": "x"}, key=None)

    assert response.status_code == 422
    assert response.json() == {"detail": "Invalid request: the Idempotency-Key header is "
                                         "required."}
    assert not Run.objects.exists()


# --- Run list -------------------------------------------------------------------------------


def test_the_run_list_shows_my_teams_runs_newest_first(api_as, staff, make_run, make_runbook,
                                                       other_team, django_assert_max_num_queries):
    older = make_run(title="INC-1 older", ref="INC-1")
    newer = make_run(title="INC-2 newer")
    make_run(runbook=make_runbook(owner=other_team), title="not mine")
    client = api_as(staff)

    with django_assert_max_num_queries(4):
        response = client.get("/runs")

    assert response.status_code == 200
    rows = response.json()
    assert [row["id"] for row in rows] == [newer.pk, older.pk]
    assert {k: rows[1][k] for k in ("title", "ref", "severity", "state", "team")} == {
        "title": "INC-1 older", "ref": "INC-1", "severity": 2, "state": "active", "team": "ops",
    }


def test_the_run_list_filters_by_state(api_as, manager, make_run):
    active = make_run(title="active")
    cancelled = make_run(title="cancelled")
    client = api_as(manager)
    assert client.post(f"/runs/{cancelled.pk}/cancel", {"reason": "false alarm"}).status_code \
        == 200

    assert [row["id"] for row in client.get("/runs?state=active").json()] == [active.pk]
    assert [row["id"] for row in client.get("/runs?state=cancelled").json()] == [cancelled.pk]
    assert [row["id"] for row in client.get("/runs?limit=1").json()] == [cancelled.pk]
    bad = client.get("/runs?state=open")
    assert bad.status_code == 422
    assert bad.json()["detail"].startswith("Invalid request: the query parameter “state”: "
                                           "input should be 'active', 'completed' or")


# --- Who may push ---------------------------------------------------------------------------

MANAGER_ENDPOINTS = [
    ("/runs/{run}/reassign", {"user": "tia", "reason": "tia knows the replica"}),
    ("/runs/{run}/reassign", {"unassign": True, "reason": "back to the pool"}),
    ("/runs/{run}/restart", {"from_position": 1, "reason": "bad snapshot"}),
    ("/runs/{run}/cancel", {"reason": "false alarm"}),
    ("/items/{item}/requeue", {"reason": "disk replaced"}),
    ("/items/{item}/skip", {"reason": "not needed"}),
    ("/items/{item}/assign", {"user": "tia", "reason": "tia has access"}),
]
ENDPOINT_IDS = [path.rsplit("/", 1)[1] + ("-unassign" if "unassign" in body else "")
                for path, body in MANAGER_ENDPOINTS]


@pytest.fixture
def pushable_run(make_run, make_runbook, staff, teammate):
    """A run with a live claim (sam's, on item 1), a done item and a stuck one, so that every
    manager action would change something."""
    run = make_run(runbook=make_runbook(PARALLEL, filename="flush.md", max_attempts=1))
    done = item_claim_next(actor=staff)
    item_complete(item_id=done.pk, token=done.token, actor=staff)
    failed = item_claim_next(actor=staff)
    item_abandon(item_id=failed.pk, token=failed.token, actor=staff, reason="no access")
    item_claim_next(actor=staff)
    states = list(run.items.order_by("position").values_list("state", flat=True))
    assert states == [ItemState.DONE, ItemState.STUCK, ItemState.CLAIMED]
    return run


def _post(client: ApiClient, path: str, body: dict, run):
    item = run.items.get(position=2)  # the stuck one: requeue, skip and assign all apply
    return client.post(path.format(run=run.pk, item=item.pk), body)


@pytest.mark.parametrize("persona", ["staff", "auditor", "integration"])
@pytest.mark.parametrize("path, body", MANAGER_ENDPOINTS, ids=ENDPOINT_IDS)
def test_only_managers_of_the_team_may_push(api_as, request, pushable_run, persona, path, body):
    before = snapshot(pushable_run)

    response = _post(api_as(request.getfixturevalue(persona)), path, body, pushable_run)

    assert response.status_code == 403
    assert response.json() == {"detail": "Only managers of this team can do that."}
    assert snapshot(pushable_run) == before
    assert not IdempotencyKey.objects.exists()


@pytest.mark.parametrize("path, body", MANAGER_ENDPOINTS, ids=ENDPOINT_IDS)
def test_another_teams_manager_gets_404(api_as, make_user, other_team, pushable_run, path, body):
    stranger = make_user("pat", Role.MANAGER, team="payments")
    before = snapshot(pushable_run)

    response = _post(api_as(stranger), path, body, pushable_run)

    assert response.status_code == 404
    assert response.json()["detail"] in ("No such run.", "No such item.")
    assert snapshot(pushable_run) == before


@pytest.mark.parametrize("path, body", MANAGER_ENDPOINTS, ids=ENDPOINT_IDS)
def test_a_manager_of_the_team_may_push(api_as, manager, teammate, pushable_run, path, body):
    if body.get("unassign"):  # back to the pool changes something only for a pushed run
        from board.push import run_reassign

        run_reassign(run_id=pushable_run.pk, actor=manager, reason="x", assignee=teammate)
    before = snapshot(pushable_run)

    response = _post(api_as(manager), path, body, pushable_run)

    assert response.status_code == 200, response.json()
    assert snapshot(pushable_run) != before


# --- Reassign -------------------------------------------------------------------------------


def test_reassign_to_a_person_revokes_another_staff_claim(api_as, manager, staff, teammate,
                                                          make_run):
    run = make_run()
    held = item_claim_next(actor=staff)

    response = api_as(manager).post(f"/runs/{run.pk}/reassign",
                                    {"user": "tia", "reason": "tia knows the replica"})

    assert response.status_code == 200
    body = response.json()
    assert (body["assignee"], body["assigned_team"], body["changed"]) == ("tia", None, 4)
    assert [(i["assignee"], i["assigned_team"], i["holder"]) for i in body["items"]] == [
        ("tia", None, None)] * 4
    held.refresh_from_db()
    assert (held.state, held.holder, held.assignee) == (ItemState.AVAILABLE, None, teammate)
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED] + [
        CheckpointKind.REASSIGNED] * 4

    refused = api_as(staff).post(f"/items/{held.pk}/complete", {"token": held.token - 1})

    assert refused.status_code == 409
    detail = refused.json()["detail"]
    assert detail.startswith("Your claim on “Freeze writes”")
    assert detail == ("Your claim on “Freeze writes” was taken back: maya pushed the run to "
                      "tia: “tia knows the replica”.")
    assert kinds(run)[-1] == CheckpointKind.REASSIGNED
    assert Item.objects.get(pk=held.pk).state == ItemState.AVAILABLE


def test_reassign_to_a_team_and_back_to_the_pool(api_as, manager, make_run):
    run = make_run()
    client = api_as(manager)

    to_team = client.post(f"/runs/{run.pk}/reassign", {"team": "ops", "reason": "all hands"})
    to_pool = client.post(f"/runs/{run.pk}/reassign", {"unassign": True, "reason": "done"})

    assert to_team.status_code == 200
    assert (to_team.json()["assignee"], to_team.json()["assigned_team"]) == (None, "ops")
    assert {i["assigned_team"] for i in to_team.json()["items"]} == {"ops"}
    assert to_pool.status_code == 200
    assert (to_pool.json()["assignee"], to_pool.json()["assigned_team"]) == (None, None)
    assert {(i["assignee"], i["assigned_team"]) for i in to_pool.json()["items"]} == {
        (None, None)}
    run.refresh_from_db()
    assert run.assigned_team is None
    assert kinds(run) == [CheckpointKind.LAUNCHED] + [CheckpointKind.REASSIGNED] * 8


def test_a_reassign_retried_with_its_key_is_replayed(api_as, manager, teammate, make_run):
    run = make_run()
    client = api_as(manager)
    body = {"user": "tia", "reason": "tia knows the replica"}

    first = client.post(f"/runs/{run.pk}/reassign", body, key="push-1")
    again = client.post(f"/runs/{run.pk}/reassign", body, key="push-1")

    assert (first.status_code, again.status_code) == (200, 200)
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert kinds(run).count(CheckpointKind.REASSIGNED) == 4


SAY_WHERE = ("Say where the run goes: exactly one of “user” (a username), “team” (a team slug) "
             "or “unassign”: true (back to the shared pool).")


@pytest.mark.parametrize("body, detail", [
    ({"reason": "x"}, SAY_WHERE),
    ({"user": "tia", "team": "ops", "reason": "x"}, SAY_WHERE),
    ({"user": "tia", "unassign": True, "reason": "x"}, SAY_WHERE),
    ({"unassign": False, "reason": "x"}, SAY_WHERE),
    ({"user": "nobody", "reason": "x"},
     "“nobody” is not staff on Ops: push to someone who works for the run's team."),
    ({"team": "payments", "reason": "x"}, "There is no team “payments” among your teams."),
    ({"user": "otto", "reason": "x"},
     "“otto” is not staff on Ops: push to someone who works for the run's team."),
    ({"user": "tia"}, "Invalid request: “reason” is required."),
    ({"user": "tia", "reason": "  "}, "Say why you are pushing this run: a reason is required."),
    ({"unassign": "yes", "reason": "x"}, "Invalid request: “unassign”: input should be a valid "
                                         "boolean."),
    ({"user": "tia", "reason": "x", "note": "y"},
     "Invalid request: “note”: extra inputs are not permitted."),
])
def test_a_bad_reassign_is_422_and_changes_nothing(api_as, manager, teammate, outsider,
                                                   make_run, body, detail):
    run = make_run()
    before = snapshot(run)

    response = api_as(manager).post(f"/runs/{run.pk}/reassign", body)

    assert response.status_code == 422
    assert response.json() == {"detail": detail}
    assert snapshot(run) == before


# --- Restart, cancel ------------------------------------------------------------------------


def test_restart_from_a_step_resets_it_and_later_ones(api_as, manager, staff, make_run):
    run = make_run()
    for _ in range(2):
        item = item_claim_next(actor=staff)
        item_complete(item_id=item.pk, token=item.token, actor=staff)
    held = item_claim_next(actor=staff)
    assert held.position == 3

    response = api_as(manager).post(f"/runs/{run.pk}/restart",
                                    {"from_position": 2, "reason": "snapshot was corrupt"})

    assert response.status_code == 200
    body = response.json()
    assert body["changed"] == 3  # the done item 2, the claimed item 3, the now waiting item 4
    assert [(i["position"], i["state"], i["holder"]) for i in body["items"]] == [
        (1, "done", None), (2, "available", None), (3, "waiting", None), (4, "waiting", None),
    ]
    assert kinds(run)[-3:] == [CheckpointKind.RESET] * 3
    refused = api_as(staff).post(f"/items/{held.pk}/complete", {"token": held.token})
    assert refused.status_code == 409
    assert refused.json()["detail"].startswith("Your claim on “Promote the replica” was taken "
                                               "back: maya restarted the run from step 2")


@pytest.mark.parametrize("body, detail", [
    ({"from_position": 9, "reason": "x"}, "Restart from a step between 1 and 4."),
    ({"from_position": 0, "reason": "x"},
     "Invalid request: “from_position”: input should be greater than or equal to 1."),
    ({"from_position": 1.5, "reason": "x"},
     "Invalid request: “from_position”: input should be a valid integer."),
    ({"reason": "x"}, "Invalid request: “from_position” is required."),
])
def test_a_bad_restart_is_422(api_as, manager, make_run, body, detail):
    run = make_run()
    before = snapshot(run)

    response = api_as(manager).post(f"/runs/{run.pk}/restart", body)

    assert response.status_code == 422 and response.json() == {"detail": detail}
    assert snapshot(run) == before


def test_cancel_ends_the_run_and_revokes_its_claims(api_as, manager, staff, make_run):
    run = make_run()
    held = item_claim_next(actor=staff)
    client = api_as(manager)

    response = client.post(f"/runs/{run.pk}/cancel", {"reason": "false alarm"})

    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    assert {i["holder"] for i in response.json()["items"]} == {None}
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED,
                          CheckpointKind.RUN_CANCELLED]
    refused = api_as(staff).post(f"/items/{held.pk}/complete", {"token": held.token})
    assert refused.status_code == 409
    assert refused.json()["detail"] == ("Your claim on “Freeze writes” was taken back: maya "
                                        "cancelled the run: “false alarm”.")

    again = client.post(f"/runs/{run.pk}/cancel", {"reason": "false alarm"})
    assert again.status_code == 409
    assert again.json()["detail"] == ("“INC-1 primary down” is cancelled: it can no longer be "
                                      "cancelled.")
    assert kinds(run)[-1] == CheckpointKind.RUN_CANCELLED


def test_cancel_without_a_reason_is_422(api_as, manager, make_run):
    run = make_run()

    response = api_as(manager).post(f"/runs/{run.pk}/cancel", {"reason": ""})

    assert response.status_code == 422
    assert response.json() == {"detail": "Say why you are cancelling this run: a reason is "
                                         "required."}
    assert Run.objects.get(pk=run.pk).state == "active" and kinds(run) == ["launched"]


# --- Requeue, skip, assign ------------------------------------------------------------------


def test_requeue_sends_a_stuck_item_back_with_fresh_attempts(api_as, manager, pushable_run):
    stuck = pushable_run.items.get(position=2)

    response = api_as(manager).post(f"/items/{stuck.pk}/requeue")

    assert response.status_code == 200
    assert {k: response.json()[k] for k in ("id", "state", "attempts", "holder")} == {
        "id": stuck.pk, "state": "available", "attempts": 0, "holder": None}
    assert kinds(pushable_run)[-1] == CheckpointKind.REQUEUED

    again = api_as(manager).post(f"/items/{stuck.pk}/requeue", {"reason": "again"})
    assert again.status_code == 409
    assert again.json() == {"detail": "“Drain node B” is available, not stuck."}
    assert kinds(pushable_run).count(CheckpointKind.REQUEUED) == 1


def test_skip_with_a_reason_unlocks_the_next_item(api_as, manager, make_run):
    run = make_run()
    first, second = run.items.get(position=1), run.items.get(position=2)

    response = api_as(manager).post(f"/items/{first.pk}/skip", {"reason": "writes are off"})

    assert response.status_code == 200
    assert response.json()["state"] == "skipped"
    assert Item.objects.get(pk=second.pk).state == ItemState.AVAILABLE
    last = Checkpoint.objects.filter(run=run).order_by("id").last()
    assert (last.kind, last.item_id, last.reason) == (CheckpointKind.SKIPPED, first.pk,
                                                      "writes are off")


@pytest.mark.parametrize("body, detail", [
    (None, "Invalid request: the JSON body is required."),
    ({}, "Invalid request: “reason” is required."),
    ({"reason": " "}, "Say why this item is skipped: a reason is required."),
])
def test_skip_without_a_reason_is_422(api_as, manager, make_run, body, detail):
    run = make_run()
    item = run.items.get(position=1)

    response = api_as(manager).post(f"/items/{item.pk}/skip", body)

    assert response.status_code == 422 and response.json() == {"detail": detail}
    assert kinds(run) == [CheckpointKind.LAUNCHED]


def test_assign_pushes_one_item_to_a_person(api_as, manager, teammate, make_run):
    run = make_run()
    item = run.items.get(position=1)

    response = api_as(manager).post(f"/items/{item.pk}/assign",
                                    {"user": "tia", "reason": "she has access"})

    assert response.status_code == 200
    assert (response.json()["assignee"], response.json()["assigned_team"]) == ("tia", None)
    assert Item.objects.get(pk=item.pk).assignee == teammate
    last = Checkpoint.objects.filter(run=run).order_by("id").last()
    assert (last.kind, last.item_id, last.reason) == (CheckpointKind.REASSIGNED, item.pk,
                                                      "she has access")
    # The run's page shows it too.
    shown = api_as(manager).get(f"/runs/{run.pk}").json()["items"][0]
    assert (shown["assignee"], shown["assigned_team"]) == ("tia", None)


@pytest.mark.parametrize("body, detail", [
    ({"user": "nobody"}, "“nobody” is not staff on Ops: push to someone who works for the "
                         "run's team."),
    ({"user": ""}, "Invalid request: “user”: string should have at least 1 character."),
    ({}, "Invalid request: “user” is required."),
])
def test_a_bad_assign_is_422(api_as, manager, make_run, body, detail):
    run = make_run()
    item = run.items.get(position=1)

    response = api_as(manager).post(f"/items/{item.pk}/assign", body)

    assert response.status_code == 422 and response.json() == {"detail": detail}
    assert kinds(run) == [CheckpointKind.LAUNCHED]


# --- Schema ---------------------------------------------------------------------------------


def test_the_openapi_schema_lists_the_push_endpoints(client):
    schema = client.get("/api/v1/openapi.json").json()

    assert {
        "/api/v1/runs", "/api/v1/runs/{run_id}/reassign", "/api/v1/runs/{run_id}/restart",
        "/api/v1/runs/{run_id}/cancel", "/api/v1/items/{item_id}/requeue",
        "/api/v1/items/{item_id}/skip", "/api/v1/items/{item_id}/assign",
        "/api/v1/hooks/alertmanager",
    } <= set(schema["paths"])
    assert set(schema["paths"]["/api/v1/runs"]) == {"get", "post"}
    reassign = schema["paths"]["/api/v1/runs/{run_id}/reassign"]["post"]
    header = next(p for p in reassign["parameters"] if p["in"] == "header")
    assert (header["name"], header["required"]) == ("Idempotency-Key", True)
    hook = schema["paths"]["/api/v1/hooks/alertmanager"]["post"]
    assert not [p for p in hook.get("parameters", []) if p["in"] == "header"]
    assert "No `Idempotency-Key` header" in hook["description"]
