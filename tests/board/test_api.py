"""The staff JSON API under /api/v1/: every endpoint, every error status with its message."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.test import Client
from django.utils import timezone

from accounts.access import grant_role
from accounts.models import Role
from accounts.services import api_token_create
from board.models import Checkpoint, CheckpointKind, IdempotencyKey, Item, ItemState
from board.services import item_abandon, item_claim_next, item_complete, item_expire
from tests.board.conftest import ApiClient

PARALLEL = (
    "---\nflow: parallel\n---\n# Cache flush\n\n"
    "- Drain node A\n- Drain node B\n- Drain node C\n"
)





@pytest.fixture
def parallel_run(make_run, make_runbook):
    """A run whose three items are all available at once."""
    return make_run(runbook=make_runbook(PARALLEL, filename="flush.md"), title="INC-3 cache")


def kinds(run) -> list[str]:
    return list(Checkpoint.objects.filter(run=run).order_by("id").values_list("kind", flat=True))


def assert_iso_with_offset(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    assert parsed.utcoffset() is not None and value.endswith("+00:00")
    return parsed


# --- Claim next -----------------------------------------------------------------------------


def test_claim_next_returns_the_claim_and_writes_one_checkpoint(api_as, staff, make_run):
    run = make_run()

    response = api_as(staff).post("/claims/next")

    assert response.status_code == 200
    item = Item.objects.get(run=run, position=1)
    assert item.state == ItemState.CLAIMED and item.holder == staff
    body = response.json()
    assert body["item"] == {"id": item.pk, "run": run.pk, "title": "Freeze writes",
                            "state": "claimed", "position": 1}
    assert body["token"] == item.token == 1
    assert assert_iso_with_offset(body["lease_expires_at"]) == item.lease_expires_at
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]


def test_claim_next_from_one_run(api_as, staff, make_run, parallel_run):
    make_run(severity=1)  # more urgent, but not the run asked for

    response = api_as(staff).post("/claims/next", {"run": parallel_run.pk})

    assert response.status_code == 200
    assert response.json()["item"]["run"] == parallel_run.pk


def test_claim_next_with_nothing_available_is_204(api_as, staff, make_run):
    run = make_run()
    Item.objects.filter(run=run).update(state=ItemState.WAITING)

    response = api_as(staff).post("/claims/next")

    assert response.status_code == 204 and response.content == b""
    assert kinds(run) == [CheckpointKind.LAUNCHED]


def test_claim_next_at_the_wip_limit_is_409(api_as, staff, parallel_run, settings):
    settings.WIP_LIMIT = 1
    client = api_as(staff)
    assert client.post("/claims/next").status_code == 200

    response = client.post("/claims/next")

    assert response.status_code == 409
    assert "You already hold 1 claim (the limit is 1)" in response.json()["detail"]
    assert kinds(parallel_run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]


# --- Claim one item -------------------------------------------------------------------------


def test_claim_an_item_from_the_pool(api_as, staff, parallel_run):
    second = parallel_run.items.get(position=2)

    response = api_as(staff).post(f"/items/{second.pk}/claim")

    assert response.status_code == 200
    assert response.json()["item"] == {"id": second.pk, "run": parallel_run.pk,
                                       "title": "Drain node B", "state": "claimed",
                                       "position": 2}
    second.refresh_from_db()
    assert second.holder == staff and response.json()["token"] == second.token


def test_claiming_an_item_someone_holds_is_409(api_as, staff, teammate, make_run):
    run = make_run()
    taken = item_claim_next(actor=teammate)

    response = api_as(staff).post(f"/items/{taken.pk}/claim")

    assert response.status_code == 409
    assert response.json() == {"detail": "“Freeze writes” is already held by tia."}
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]


# --- Complete, abandon, extend --------------------------------------------------------------


def test_complete_with_the_current_token(api_as, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)

    response = api_as(staff).post(f"/items/{item.pk}/complete",
                                  {"token": item.token, "note": "replica healthy"})

    assert response.status_code == 200
    assert response.json()["item"]["state"] == "done"
    assert response.json()["lease_expires_at"] is None
    item.refresh_from_db()
    assert item.state == ItemState.DONE
    last = Checkpoint.objects.filter(run=run).order_by("id").last()
    assert (last.kind, last.reason, last.token) == ("completed", "replica healthy", item.token)


def test_complete_with_an_old_token_is_409_with_the_reason(api_as, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)
    item_abandon(item_id=item.pk, token=item.token, actor=staff, reason="wrong host")
    again = item_claim_next(actor=staff)
    assert again.pk == item.pk

    response = api_as(staff).post(f"/items/{item.pk}/complete", {"token": item.token})

    assert response.status_code == 409
    assert response.json() == {"detail": "That claim was abandoned. You have claimed this item "
                                         "again since; reload to act on the new claim."}
    again.refresh_from_db()
    assert again.state == ItemState.CLAIMED and again.token == item.token + 1
    assert kinds(run)[-1] == CheckpointKind.CLAIMED


@pytest.mark.parametrize("token", [0, 2, 10**12])
def test_complete_with_a_token_never_issued_says_so(api_as, staff, make_run, token):
    run = make_run()
    item = item_claim_next(actor=staff)
    assert item.token == 1

    response = api_as(staff).post(f"/items/{item.pk}/complete", {"token": token})

    assert response.status_code == 409
    assert response.json() == {"detail": f"Token {token} was never issued for “{item.title}”: "
                                         "act with your claim's token."}
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]


def test_messages_show_times_in_the_callers_time_zone(api_as, staff, make_run):
    type(staff).objects.filter(pk=staff.pk).update(time_zone="Asia/Kolkata")
    staff.refresh_from_db()
    make_run()
    item = item_claim_next(actor=staff)
    item_expire(item_id=item.pk, token=item.token, now=item.lease_expires_at)

    response = api_as(staff).post(f"/items/{item.pk}/complete", {"token": item.token})

    local = item.lease_expires_at.astimezone(ZoneInfo("Asia/Kolkata"))
    assert response.status_code == 409
    assert response.json() == {"detail": f"Your lease ran out at {local:%H:%M} (IST). "
                                         "“Freeze writes” is back in the pool."}


def test_abandon_with_a_reason_returns_the_item_to_the_pool(api_as, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)

    response = api_as(staff).post(f"/items/{item.pk}/abandon",
                                  {"token": item.token, "reason": "pager went off"})

    assert response.status_code == 200
    assert response.json()["item"]["state"] == "available"
    item.refresh_from_db()
    assert item.state == ItemState.AVAILABLE and item.attempts == 1
    last = Checkpoint.objects.filter(run=run).order_by("id").last()
    assert (last.kind, last.reason) == ("abandoned", "pager went off")


@pytest.mark.parametrize(("body", "message"), [
    ({}, "Invalid request: “reason” is required."),
    ({"reason": "   "}, "Say why you are abandoning this item: a reason is required."),
])
def test_abandon_without_a_reason_is_422(api_as, staff, make_run, body, message):
    run = make_run()
    item = item_claim_next(actor=staff)

    response = api_as(staff).post(f"/items/{item.pk}/abandon", {"token": item.token, **body})

    assert response.status_code == 422
    assert response.json() == {"detail": message}
    item.refresh_from_db()
    assert item.state == ItemState.CLAIMED and item.attempts == 0
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]


def test_extend_returns_the_new_lease(api_as, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)
    Item.objects.filter(pk=item.pk).update(lease_expires_at=timezone.now() + timedelta(minutes=1))

    response = api_as(staff).post(f"/items/{item.pk}/extend", {"token": item.token})

    assert response.status_code == 200
    item.refresh_from_db()
    new_lease = assert_iso_with_offset(response.json()["lease_expires_at"])
    assert new_lease == item.lease_expires_at > timezone.now() + timedelta(minutes=10)
    assert kinds(run)[-1] == CheckpointKind.EXTENDED


def test_extend_with_an_old_token_is_409(api_as, staff, make_run):
    make_run()
    item = item_claim_next(actor=staff)
    item_complete(item_id=item.pk, token=item.token, actor=staff)

    response = api_as(staff).post(f"/items/{item.pk}/extend", {"token": item.token})

    assert response.status_code == 409
    assert response.json() == {"detail": "“Freeze writes” is already done."}


# --- Reads ----------------------------------------------------------------------------------


def test_run_shows_its_items_in_runbook_order(api_as, staff, teammate, make_run):
    run = make_run(ref="INC-77")
    held = item_claim_next(actor=teammate)

    response = api_as(staff).get(f"/runs/{run.pk}")

    assert response.status_code == 200
    body = response.json()
    assert {key: body[key] for key in ("id", "title", "ref", "severity", "state", "team",
                                       "mode")} == {
        "id": run.pk, "title": "INC-1 primary down", "ref": "INC-77", "severity": 2,
        "state": "active", "team": "ops", "mode": "pull",
    }
    items = body["items"]
    assert [item["position"] for item in items] == [1, 2, 3, 4]
    assert [item["title"] for item in items] == [
        "Freeze writes", "Snapshot the primary", "Promote the replica", "Repoint the application",
    ]
    first, second = items[0], items[1]
    assert first == {
        "id": held.pk, "position": 1, "title": "Freeze writes", "section": "Prepare",
        "state": "claimed", "holder": "tia", "token": 1, "attempts": 0,
        "lease_expires_at": first["lease_expires_at"], "prerequisites": [],
        "assignee": None, "assigned_team": None,
    }
    assert assert_iso_with_offset(first["lease_expires_at"]) == Item.objects.get(
        pk=held.pk).lease_expires_at
    assert second["holder"] is None and second["lease_expires_at"] is None
    assert second["prerequisites"] == [held.pk]  # numbered steps wait for each other
    assert items[3]["prerequisites"] == sorted(
        Item.objects.get(pk=items[3]["id"]).prerequisites.values_list("pk", flat=True)
    )


def test_run_costs_the_same_queries_whatever_its_size(api_as, staff, make_run, make_runbook,
                                                      django_assert_max_num_queries):
    steps = "".join(f"{n}. Step {n}\n" for n in range(1, 41))
    big = make_run(runbook=make_runbook(f"# Big\n\n## Only\n{steps}", filename="big.md"))
    small = make_run()
    client = api_as(staff)
    with django_assert_max_num_queries(8) as small_queries:
        assert client.get(f"/runs/{small.pk}").status_code == 200

    with django_assert_max_num_queries(len(small_queries)):
        response = client.get(f"/runs/{big.pk}")

    assert len(response.json()["items"]) == 40


def test_checkpoints_in_order_with_seq_from_one(api_as, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)
    item_abandon(item_id=item.pk, token=item.token, actor=staff, reason="disk full")

    response = api_as(staff).get(f"/runs/{run.pk}/checkpoints")

    assert response.status_code == 200
    rows = response.json()
    assert [(r["seq"], r["kind"], r["item"], r["actor"], r["token"], r["reason"])
            for r in rows] == [
        (1, "launched", None, "maya", None, ""),
        (2, "claimed", item.pk, "sam", 1, ""),
        (3, "abandoned", item.pk, "sam", 1, "disk full"),
    ]
    stored = Checkpoint.objects.filter(run=run).order_by("id")
    assert [assert_iso_with_offset(r["at"]) for r in rows] == [c.at for c in stored]


def test_auditor_reads_runs_and_checkpoints(api_as, auditor, make_run):
    run = make_run()
    client = api_as(auditor)
    assert client.get(f"/runs/{run.pk}").status_code == 200
    assert client.get(f"/runs/{run.pk}/checkpoints").status_code == 200


# --- Access matrix --------------------------------------------------------------------------

ENDPOINTS = [
    ("post", "/claims/next", lambda run, item: {"run": run.pk}),
    ("post", "/items/{item}/claim", None),
    ("post", "/items/{item}/complete", lambda run, item: {"token": 1}),
    ("post", "/items/{item}/abandon", lambda run, item: {"token": 1, "reason": "x"}),
    ("post", "/items/{item}/extend", lambda run, item: {"token": 1}),
    ("get", "/runs/{run}", None),
    ("get", "/runs/{run}/checkpoints", None),
]
POSTS = [e for e in ENDPOINTS if e[0] == "post"]
GETS = [e for e in ENDPOINTS if e[0] == "get"]


def _call(client: ApiClient, endpoint, run, item):
    method, path, body = endpoint
    path = path.format(run=run.pk, item=item.pk)
    if method == "get":
        return client.get(path)
    return client.post(path, body(run, item) if body else None)


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_without_a_token_is_401(client, make_run, endpoint):
    run = make_run()

    response = _call(ApiClient(client, None), endpoint, run, run.items.get(position=1))

    assert response.status_code == 401
    assert response.json() == {"detail": "Authentication required: send “Authorization: Bearer "
                                         "<token>” (create a token with manage.py "
                                         "create_api_token)."}
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert kinds(run) == [CheckpointKind.LAUNCHED]


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=[f"{m} {p}" for m, p, _ in ENDPOINTS])
def test_outsider_gets_404_for_another_teams_run_and_items(api_as, outsider, make_run, endpoint):
    run = make_run()

    response = _call(api_as(outsider), endpoint, run, run.items.get(position=1))

    assert response.status_code == 404
    assert response.json()["detail"] in ("No such run.", "No such item.")
    assert kinds(run) == [CheckpointKind.LAUNCHED]


@pytest.mark.parametrize("endpoint", POSTS, ids=[p for _, p, _ in POSTS])
def test_auditor_gets_403_on_every_action(api_as, auditor, make_run, endpoint):
    run = make_run()

    response = _call(api_as(auditor), endpoint, run, run.items.get(position=1))

    assert response.status_code == 403
    assert response.json() == {"detail": "Only staff of this team can work its items."}
    assert kinds(run) == [CheckpointKind.LAUNCHED]


def test_auditor_claiming_next_anywhere_is_403(api_as, auditor, make_run):
    make_run()

    response = api_as(auditor).post("/claims/next")

    assert response.status_code == 403
    assert response.json() == {"detail": "Only staff of a team can claim its items."}


def test_unknown_ids_are_404(api_as, staff, make_run):
    make_run()
    client = api_as(staff)
    assert client.get("/runs/999999").json() == {"detail": "No such run."}
    response = client.post("/items/999999/complete", {"token": 1})
    assert (response.status_code, response.json()) == (404, {"detail": "No such item."})


def test_a_browser_session_does_not_authenticate_the_api(client, staff, make_run):
    run = make_run()
    client.force_login(staff)

    response = ApiClient(client, None).get(f"/runs/{run.pk}")

    assert response.status_code == 401


def test_bearer_calls_need_no_csrf_token(staff, make_run):
    make_run()
    _, token = api_token_create(user=staff)
    strict = ApiClient(Client(enforce_csrf_checks=True), token)

    assert strict.post("/claims/next").status_code == 200


# --- Bad requests ---------------------------------------------------------------------------


def test_a_post_without_an_idempotency_key_is_422(api_as, staff, make_run):
    run = make_run()

    response = api_as(staff).post("/claims/next", key=None)

    assert response.status_code == 422
    assert response.json() == {
        "detail": "Invalid request: the Idempotency-Key header is required."
    }
    assert kinds(run) == [CheckpointKind.LAUNCHED]


@pytest.mark.parametrize(("body", "message"), [
    ({"token": "abc"}, "Invalid request: “token”: input should be a valid integer."),
    ({"token": True}, "Invalid request: “token”: input should be a valid integer."),
    ({"token": 1.0}, "Invalid request: “token”: input should be a valid integer."),
    ({"token": 2**70}, "Invalid request: “token”: input should be less than or equal to "
                       "9223372036854775807."),
    ({"token": 1, "note": "a\x00b"}, "Invalid request: “note”: value error, must not contain "
                                     "NUL characters."),
    ({"token": 1, "notes": "typo"}, "Invalid request: “notes”: extra inputs are not "
                                    "permitted."),
    ([1, 2], "Invalid request: the JSON body: input should be a valid dictionary or object to "
             "extract fields from."),
    (None, "Invalid request: the JSON body is required."),
])
def test_a_bad_body_is_422_with_a_readable_message(api_as, staff, make_run, body, message):
    run = make_run()
    item = item_claim_next(actor=staff)

    response = api_as(staff).post(f"/items/{item.pk}/complete", body)

    assert response.status_code == 422
    assert response.json() == {"detail": message}
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]


def test_a_body_that_is_not_json_is_422(api_as, staff, make_run):
    make_run()
    item = item_claim_next(actor=staff)

    response = api_as(staff).post(f"/items/{item.pk}/complete", raw="token=1")

    assert response.status_code == 422
    assert response.json() == {"detail": "The request body is not valid JSON."}


# --- Idempotency ----------------------------------------------------------------------------


def test_a_replay_returns_the_same_body_and_writes_nothing(api_as, staff, parallel_run):
    client = api_as(staff)
    first = client.post("/claims/next", key="claim-1")
    written = kinds(parallel_run)

    again = client.post("/claims/next", key="claim-1")

    assert (again.status_code, again.json()) == (200, first.json())
    assert again["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first
    assert kinds(parallel_run) == written == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]
    assert Item.objects.filter(holder=staff).count() == 1


def test_a_replayed_complete_is_the_same_success_not_a_409(api_as, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)
    client = api_as(staff)
    first = client.post(f"/items/{item.pk}/complete", {"token": item.token}, key="done-1")

    again = client.post(f"/items/{item.pk}/complete", {"token": item.token}, key="done-1")

    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json() == first.json()
    assert kinds(run).count(CheckpointKind.COMPLETED) == 1


def test_a_replayed_error_keeps_its_status_and_message(api_as, staff, teammate, make_run):
    make_run()
    taken = item_claim_next(actor=teammate)
    client = api_as(staff)
    first = client.post(f"/items/{taken.pk}/claim", key="grab")
    item_complete(item_id=taken.pk, token=taken.token, actor=teammate)

    again = client.post(f"/items/{taken.pk}/claim", key="grab")

    assert first.status_code == again.status_code == 409
    assert again.json() == first.json() == {"detail": "“Freeze writes” is already held by tia."}


def test_a_204_is_replayed_as_a_204(api_as, staff, make_run):
    run = make_run()
    Item.objects.filter(run=run).update(state=ItemState.WAITING)
    client = api_as(staff)
    assert client.post("/claims/next", key="k").status_code == 204
    Item.objects.filter(run=run, position=1).update(state=ItemState.AVAILABLE)

    again = client.post("/claims/next", key="k")

    assert again.status_code == 204
    assert kinds(run) == [CheckpointKind.LAUNCHED]


@pytest.mark.parametrize("change", ["body", "path"])
def test_the_same_key_for_a_different_request_is_422(api_as, staff, parallel_run, change):
    client = api_as(staff)
    item = item_claim_next(actor=staff)
    assert client.post(f"/items/{item.pk}/extend", {"token": item.token},
                       key="k1").status_code == 200
    written = kinds(parallel_run)

    if change == "body":
        response = client.post(f"/items/{item.pk}/extend", {"token": item.token + 1}, key="k1")
    else:
        response = client.post(f"/items/{item.pk}/complete", {"token": item.token}, key="k1")

    assert response.status_code == 422
    assert response.json() == {"detail": "This idempotency key was already used for a "
                                         "different request: send a new key for a new action, "
                                         "and the same key only to retry the same one."}
    assert kinds(parallel_run) == written


def test_keys_belong_to_their_user(api_as, staff, teammate, parallel_run):
    mine = api_as(staff).post("/claims/next", key="shared")

    theirs = api_as(teammate).post("/claims/next", key="shared")

    assert mine.status_code == theirs.status_code == 200
    assert mine.json()["item"]["id"] != theirs.json()["item"]["id"]
    assert IdempotencyKey.objects.filter(key="shared").count() == 2


def test_requests_refused_before_acting_store_no_key(api_as, auditor, make_run):
    run = make_run()

    api_as(auditor).post(f"/items/{run.items.get(position=1).pk}/claim", key="refused")

    assert not IdempotencyKey.objects.filter(key="refused").exists()


def test_an_overlong_key_is_422(api_as, staff, make_run):
    make_run()
    response = api_as(staff).post("/claims/next", key="k" * 256)
    assert response.status_code == 422
    assert "Idempotency-Key header" in response.json()["detail"]


# --- Schema ---------------------------------------------------------------------------------


def test_the_openapi_schema_lists_the_endpoints(client):
    response = client.get("/api/v1/openapi.json")

    assert response.status_code == 200
    schema = response.json()
    assert set(schema["paths"]) == {
        "/api/v1/claims/next", "/api/v1/items/{item_id}/claim",
        "/api/v1/items/{item_id}/complete", "/api/v1/items/{item_id}/abandon",
        "/api/v1/items/{item_id}/extend", "/api/v1/runs/{run_id}",
        "/api/v1/runs/{run_id}/checkpoints", "/api/v1/runs", "/api/v1/runs/{run_id}/reassign",
        "/api/v1/runs/{run_id}/restart", "/api/v1/runs/{run_id}/cancel",
        "/api/v1/items/{item_id}/requeue", "/api/v1/items/{item_id}/skip",
        "/api/v1/items/{item_id}/assign", "/api/v1/hooks/alertmanager",
    }
    complete = schema["paths"]["/api/v1/items/{item_id}/complete"]["post"]
    header = next(p for p in complete["parameters"] if p["in"] == "header")
    assert (header["name"], header["required"]) == ("Idempotency-Key", True)
    assert {"401", "403", "404", "409", "422"} <= set(complete["responses"])
    assert schema["components"]["securitySchemes"]["ApiTokenAuth"]["scheme"] == "bearer"


def test_the_api_docs_page_is_served(client):
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    assert "openapi.json" in response.content.decode()


def test_an_unknown_endpoint_is_a_json_404_and_pages_stay_html(api_as, staff, client):
    response = api_as(staff).post("/items//complete", {"token": 1})

    assert response.status_code == 404
    assert response.json() == {"detail": "No such endpoint: POST /api/v1/items//complete. The "
                                          "endpoints are listed at /api/v1/docs."}
    page = client.get("/no-such-page/")
    assert page.status_code == 404
    assert page["Content-Type"].startswith("text/html")


def test_claim_next_from_a_run_i_only_audit_is_403_and_changes_nothing(
    api_as, outsider, team, make_run
):
    # Staff on another team, so claiming is open to them, but only an auditor of this run's.
    grant_role(user=outsider, team=team, role=Role.AUDITOR)
    run = make_run()

    response = api_as(outsider).post("/claims/next", {"run": run.pk})

    assert response.status_code == 403
    assert response.json() == {"detail": "Only staff of this team can work its items."}
    assert kinds(run) == [CheckpointKind.LAUNCHED]
    assert not IdempotencyKey.objects.exists()


def test_a_wrong_method_is_a_json_405_naming_the_right_one(api_as, staff, make_run):
    run = make_run()

    response = api_as(staff).post(f"/runs/{run.pk}")

    assert response.status_code == 405
    assert response["Allow"] == "GET"
    assert response.json() == {"detail": f"POST is not allowed on /api/v1/runs/{run.pk}: use "
                                          "GET."}


def test_a_body_over_the_limit_is_a_json_413_and_changes_nothing(api_as, staff, make_run,
                                                                  settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    run = make_run()
    claim = item_claim_next(actor=staff, run=run)

    response = api_as(staff).post(f"/items/{claim.pk}/complete",
                                  {"token": claim.token, "note": "x" * 2000})

    assert response.status_code == 413
    assert response.json() == {"detail": "The request body is larger than this server accepts "
                                          "(1000\xa0bytes)."}
    assert Item.objects.get(pk=claim.pk).state == ItemState.CLAIMED


def test_a_replayed_refusal_says_it_is_a_replay(api_as, staff, make_run):
    run = make_run()
    claim = item_claim_next(actor=staff, run=run)
    api = api_as(staff)
    body = {"token": claim.token + 5}

    first = api.post(f"/items/{claim.pk}/complete", body, key="k-1")
    again = api.post(f"/items/{claim.pk}/complete", body, key="k-1")

    assert first.status_code == again.status_code == 409
    assert again.json() == first.json()
    assert "Idempotent-Replayed" not in first
    assert again["Idempotent-Replayed"] == "true"


def test_claiming_an_item_i_hold_says_i_hold_it(api_as, staff, parallel_run):
    claim = item_claim_next(actor=staff, run=parallel_run)

    response = api_as(staff).post(f"/items/{claim.pk}/claim")

    assert response.status_code == 409
    assert response.json() == {"detail": f"You already hold “{claim.title}”."}


def test_acting_with_a_token_of_someone_elses_earlier_claim_says_whose(
    api_as, staff, teammate, make_run
):
    run = make_run()
    first = item_claim_next(actor=staff, run=run)
    item_abandon(item_id=first.pk, token=first.token, actor=staff, reason="handing over")
    second = item_claim_next(actor=teammate, run=run)
    assert second.pk == first.pk

    response = api_as(teammate).post(f"/items/{first.pk}/complete", {"token": first.token})

    assert response.status_code == 409
    assert response.json() == {"detail": (
        f"That claim was abandoned. Token {first.token} was {staff.display_name}'s claim, not "
        f"yours: you hold “{first.title}” with token {second.token}."
    )}
    assert Item.objects.get(pk=first.pk).state == ItemState.CLAIMED
