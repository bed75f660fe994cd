"""Runs launched from Prometheus Alertmanager's webhook (POST /api/v1/hooks/alertmanager), and
the reading of an alert's labels in board.alerts."""

import copy
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.access import grant_role
from accounts.models import Role
from board.alerts import (
    AlertIn,
    AlertmanagerWebhook,
    alert_ref,
    alert_runbook_slug,
    alert_severity,
    alert_title,
    alertmanager_dispatch,
)
from board.models import Checkpoint, CheckpointKind, IdempotencyKey, Run, RunState
from tests.board.conftest import ApiClient
from tests.board.test_concurrency import in_threads

HOOK = "/hooks/alertmanager"
FINGERPRINT = "c4f0a1b2d3e4f5a6"


def firing(slug: str = "database-failover", **changes) -> dict:
    """A notification as Alertmanager 0.27 posts it for one firing alert."""
    alert = {
        "status": "firing",
        "labels": {"alertname": "PostgresDown", "instance": "db-1:9187", "job": "postgres",
                   "severity": "critical"},
        "annotations": {
            "summary": "PostgreSQL primary db-1 is down",
            "description": "pg_up has been 0 for 2 minutes.",
            "runbook_url": f"https://runbooks.example.org/runbooks/{slug}.md",
        },
        "startsAt": "2024-05-01T10:00:00.123456789Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus.example.org:9090/graph?g0.expr=pg_up+%3D%3D+0"
                        "&g0.tab=1",
        "fingerprint": FINGERPRINT,
    }
    alert.update(changes)
    return {
        "receiver": "pullboard",
        "status": alert["status"],
        "alerts": [alert],
        "groupLabels": {"alertname": "PostgresDown"},
        "commonLabels": dict(alert["labels"]),
        "commonAnnotations": dict(alert["annotations"]),
        "externalURL": "http://alertmanager.example.org:9093",
        "version": "4",
        "groupKey": '{}:{alertname="PostgresDown"}',
        "truncatedAlerts": 0,
    }


def resolved(payload: dict, ends_at: str = "2024-05-01T10:20:00.5Z") -> dict:
    payload = copy.deepcopy(payload)
    payload["status"] = "resolved"
    for alert in payload["alerts"]:
        alert["status"], alert["endsAt"] = "resolved", ends_at
    return payload


def with_alerts(*alerts: dict) -> dict:
    payload = firing()
    payload["alerts"] = list(alerts)
    return payload


def alert(payload: dict, **changes) -> dict:
    one = copy.deepcopy(payload["alerts"][0])
    for key, value in changes.items():
        if key in ("labels", "annotations"):
            one[key] = {**one[key], **value}
        else:
            one[key] = value
    return one


def hook(client: ApiClient, payload):
    # Alertmanager sends no Idempotency-Key: neither does the test.
    return client.post(HOOK, payload, key=None)


def kinds(run) -> list[str]:
    return list(Checkpoint.objects.filter(run=run).order_by("id").values_list("kind", flat=True))



@pytest.fixture
def integration(make_user, team):
    return make_user("alertbot", Role.INTEGRATION)


@pytest.fixture
def runbook(make_runbook):
    runbook = make_runbook()
    assert runbook.slug == "database-failover"
    return runbook


# --- Firing and resolved --------------------------------------------------------------------


def test_an_alert_sent_twice_is_one_run_and_its_resolution_one_checkpoint(
        api_as, integration, runbook):
    client = api_as(integration)

    first = hook(client, firing())
    second = hook(client, firing())

    assert (first.status_code, second.status_code) == (200, 200)
    run = Run.objects.get()
    entry = {"fingerprint": FINGERPRINT, "alertname": "PostgresDown", "run": run.pk, "notes": []}
    assert first.json() == {"launched": [entry], "found": [], "resolved": [], "ignored": []}
    assert second.json() == {"launched": [], "found": [entry], "resolved": [], "ignored": []}
    assert (run.title, run.severity, run.ref, run.team.slug, run.runbook) == (
        "PostgreSQL primary db-1 is down", 1, f"alert {FINGERPRINT}", "ops", runbook)
    assert run.launched_by == integration
    assert kinds(run) == [CheckpointKind.LAUNCHED]

    done = hook(client, resolved(firing()))
    again = hook(client, resolved(firing()))

    mark = {"fingerprint": FINGERPRINT, "alertname": "PostgresDown", "run": run.pk}
    assert done.status_code == 200
    assert done.json() == {"launched": [], "found": [], "ignored": [],
                           "resolved": [{**mark, "recorded": True}]}
    assert again.json()["resolved"] == [{**mark, "recorded": False}]
    run.refresh_from_db()
    assert run.state == RunState.ACTIVE  # the checklist, not the alert, closes the run
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.ALERT_RESOLVED]
    checkpoint = Checkpoint.objects.get(run=run, kind=CheckpointKind.ALERT_RESOLVED)
    assert (checkpoint.actor, checkpoint.item_id) == (integration, None)
    assert checkpoint.reason == "Alertmanager: “PostgreSQL primary db-1 is down” resolved."
    assert {k: checkpoint.data[k] for k in ("fingerprint", "alertname", "starts_at",
                                            "ends_at")} == {
        "fingerprint": FINGERPRINT, "alertname": "PostgresDown",
        "starts_at": "2024-05-01T10:00:00.123456+00:00",
        "ends_at": "2024-05-01T10:20:00.500000+00:00",
    }
    assert not IdempotencyKey.objects.exists()


def test_an_alert_that_fires_again_and_resolves_again_adds_a_second_resolution(
        api_as, integration, runbook):
    client = api_as(integration)
    hook(client, firing())
    hook(client, resolved(firing(), ends_at="2024-05-01T10:20:00Z"))

    refired = hook(client, firing(startsAt="2024-05-01T11:00:00Z"))
    hook(client, resolved(firing(), ends_at="2024-05-01T11:30:00Z"))

    run = Run.objects.get()
    assert refired.json()["found"][0]["run"] == run.pk
    assert kinds(run) == [CheckpointKind.LAUNCHED] + [CheckpointKind.ALERT_RESOLVED] * 2


def test_a_cancelled_alert_run_stays_cancelled_until_the_alert_fires_anew(
    api_as, integration, manager, runbook
):
    first = hook(api_as(integration), firing()).json()["launched"][0]["run"]
    assert api_as(manager).post(f"/runs/{first}/cancel", {"reason": "done by hand"}) \
        .status_code == 200

    # Alertmanager repeats the same firing (same startsAt) every repeat interval.
    repeat = hook(api_as(integration), firing())
    late = hook(api_as(integration), resolved(firing()))
    anew = (timezone.now() + timedelta(minutes=5)).isoformat()
    again = hook(api_as(integration), firing(startsAt=anew))

    assert repeat.json()["ignored"] == [{
        "fingerprint": FINGERPRINT, "alertname": "PostgresDown",
        "reason": f"Its run {first} was cancelled after the alert started firing: it "
                  "launches again only when the alert fires anew.",
    }]
    assert late.json()["ignored"] == [{
        "fingerprint": FINGERPRINT, "alertname": "PostgresDown",
        "reason": "It resolved, and no open run was launched for it.",
    }]
    assert again.json()["launched"][0]["run"] != first
    assert Run.objects.filter(state=RunState.ACTIVE).count() == 1
    assert kinds(Run.objects.get(pk=first)) == [CheckpointKind.LAUNCHED,
                                                CheckpointKind.RUN_CANCELLED]


def test_a_resolved_alert_without_a_run_is_ignored(api_as, integration, runbook):
    response = hook(api_as(integration), resolved(firing()))

    assert response.status_code == 200
    assert response.json()["ignored"] == [{
        "fingerprint": FINGERPRINT, "alertname": "PostgresDown",
        "reason": "It resolved, and no open run was launched for it.",
    }]
    assert not Run.objects.exists()


def test_one_notification_with_several_alerts_judges_each(api_as, integration, runbook,
                                                          make_runbook, other_team):
    make_runbook(owner=other_team)  # same slug, another team's
    base = firing()
    payload = with_alerts(
        alert(base),
        alert(base, fingerprint="00000000000000aa", labels={"alertname": "DiskFull",
                                                            "runbook": "disk-full"}),
        alert(base, fingerprint="00000000000000bb", annotations={"runbook_url": ""},
              labels={"alertname": "Watchdog"}),
        alert(base, fingerprint="00000000000000cc", labels={"team": "payments"}),
        alert(base, fingerprint="00000000000000dd", labels={"scope": "total",
                                                            "nature": "persistent"}),
    )

    response = hook(api_as(integration), payload)

    assert response.status_code == 200
    body = response.json()
    launched = {entry["fingerprint"]: entry["run"] for entry in body["launched"]}
    assert set(launched) == {FINGERPRINT, "00000000000000dd"}
    assert body["ignored"] == [
        {"fingerprint": "00000000000000aa", "alertname": "DiskFull",
         "reason": "No runbook “disk-full” in your teams."},
        {"fingerprint": "00000000000000bb", "alertname": "Watchdog",
         "reason": "It names no runbook: give it a “runbook” label or a “runbook_url” "
                   "annotation."},
        {"fingerprint": "00000000000000cc", "alertname": "PostgresDown",
         "reason": "No team “payments” among your teams."},
    ]
    total = Run.objects.get(pk=launched["00000000000000dd"])
    assert (total.scope, total.nature, total.mode) == ("total", "persistent", "push")
    assert Run.objects.count() == 2 and not Run.objects.filter(team=other_team).exists()


def test_an_alert_for_a_team_i_see_but_may_not_launch_for_is_ignored(
        api_as, manager, runbook, make_runbook, other_team):
    grant_role(user=manager, team=other_team, role=Role.STAFF)
    make_runbook(owner=other_team)
    payload = with_alerts(alert(firing(), labels={"team": "payments"}),
                          alert(firing(), fingerprint="00000000000000ee",
                                labels={"team": "ops"}))

    response = hook(api_as(manager), payload)

    assert response.status_code == 200
    assert response.json()["ignored"] == [{
        "fingerprint": FINGERPRINT, "alertname": "PostgresDown",
        "reason": "Only managers of Payments and its alerting integration can launch its runs.",
    }]
    assert [entry["fingerprint"] for entry in response.json()["launched"]] == [
        "00000000000000ee"]
    assert Run.objects.get().team.slug == "ops"


def test_unknown_scope_labels_are_left_out_with_a_note(api_as, integration, runbook):
    payload = firing()
    payload["alerts"][0]["labels"].update(scope="everything", nature="transient")

    response = hook(api_as(integration), payload)

    assert response.json()["launched"][0]["notes"] == [
        "The scope label “everything” is not one of partial, total: left out."]
    run = Run.objects.get()
    assert (run.scope, run.nature) == ("", "transient")


def test_an_alert_without_a_fingerprint_is_keyed_by_its_group(api_as, integration, runbook):
    payload = firing(fingerprint="")
    client = api_as(integration)

    first = hook(client, payload)
    second = hook(client, payload)
    hook(client, resolved(payload))
    hook(client, resolved(payload))

    run = Run.objects.get()
    assert run.ref == 'alert {}:{alertname="PostgresDown"}'
    assert first.json()["launched"] == [{"fingerprint": None, "alertname": "PostgresDown",
                                         "run": run.pk, "notes": []}]
    assert second.json()["found"][0]["run"] == run.pk
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.ALERT_RESOLVED]


def test_a_manager_token_posts_alerts_too(api_as, manager, runbook):
    response = hook(api_as(manager), firing())

    assert response.status_code == 200
    assert Run.objects.get().launched_by == manager


@pytest.mark.django_db(transaction=True)
def test_deliveries_at_the_same_moment_make_one_run_and_one_resolution(integration, runbook):
    """Alertmanager's replicas each deliver the notification (HA clusters do): at once, they
    still launch one run, and record one resolution."""
    actor_id = integration.pk

    def deliver(payload: dict):
        def body(start):
            from accounts.models import User

            parsed, actor = AlertmanagerWebhook.model_validate(payload), \
                User.objects.get(pk=actor_id)
            start.wait()
            return alertmanager_dispatch(payload=parsed, actor=actor)
        return body

    fired = in_threads([deliver(firing())] * 6)
    cleared = in_threads([deliver(resolved(firing()))] * 6)

    run = Run.objects.get()
    assert sorted(len(summary["launched"]) for summary in fired) == [0] * 5 + [1]
    assert {summary["found"][0]["run"] for summary in fired if summary["found"]} == {run.pk}
    assert sorted(summary["resolved"][0]["recorded"] for summary in cleared) == [False] * 5 + [
        True]
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.ALERT_RESOLVED]


# --- Refusals -------------------------------------------------------------------------------


@pytest.mark.parametrize("persona", ["staff", "auditor", "outsider"])
def test_tokens_that_cannot_launch_anywhere_are_403(api_as, request, runbook, persona):
    response = hook(api_as(request.getfixturevalue(persona)), firing())

    assert response.status_code == 403
    assert response.json() == {"detail": "Only the token of a team's alerting integration or "
                                         "of a manager can post alerts."}
    assert not Run.objects.exists()


def test_without_a_token_is_401(client, runbook):
    response = hook(ApiClient(client, None), firing())

    assert response.status_code == 401
    assert not Run.objects.exists()


def test_the_integration_may_launch_but_not_push(api_as, integration, runbook, teammate):
    run_id = hook(api_as(integration), firing()).json()["launched"][0]["run"]

    response = api_as(integration).post(f"/runs/{run_id}/reassign",
                                        {"user": "tia", "reason": "she knows it"})

    assert response.status_code == 403
    assert response.json() == {"detail": "Only managers of this team can do that."}
    assert kinds(Run.objects.get(pk=run_id)) == [CheckpointKind.LAUNCHED]


NOT_V4 = "This is not an Alertmanager webhook payload (version 4): "


@pytest.mark.parametrize("change, detail", [
    (lambda p: p.update(version="3"), "“version”: input should be '4'."),
    (lambda p: p.pop("alerts"), "“alerts” is required."),
    (lambda p: p.pop("groupKey"), "“groupKey” is required."),
    (lambda p: p["alerts"][0].update(status="pending"),
     "“alerts.0.status”: input should be 'firing' or 'resolved'."),
    (lambda p: p["alerts"][0].update(startsAt="yesterday"),
     "“alerts.0.startsAt”: input should be a valid datetime or date, input is too short."),
    (lambda p: p["alerts"][0].update(startsAt="2024-05-01T10:00:00"),
     "“alerts.0.startsAt”: input should have timezone info."),
    (lambda p: p["alerts"][0]["labels"].update(alertname="Postgres\x00Down"),
     "“alerts.0.labels.alertname”: value error, must not contain NUL characters."),
])
def test_a_body_that_is_not_a_v4_payload_is_422(api_as, integration, runbook, change, detail):
    payload = firing()
    change(payload)

    response = hook(api_as(integration), payload)

    assert response.status_code == 422
    assert response.json() == {"detail": NOT_V4 + detail}
    assert not Run.objects.exists()


@pytest.mark.parametrize("raw, detail", [
    ("{}", NOT_V4 + "“version” is required; “groupKey” is required; “status” is required; "
                    "“alerts” is required."),
    ("[]", NOT_V4 + "the JSON body: input should be a valid dictionary or instance of "
                    "AlertmanagerWebhook."),
    ("", NOT_V4 + "the JSON body is required."),
    ("{not json", "The request body is not valid JSON."),
])
def test_a_body_that_is_no_payload_at_all_is_422(api_as, integration, runbook, raw, detail):
    response = api_as(integration).post(HOOK, raw=raw, key=None)

    assert response.status_code == 422
    assert response.json() == {"detail": detail}
    assert not Run.objects.exists()


def test_fields_alertmanager_may_add_later_are_accepted(api_as, integration, runbook):
    payload = firing()
    payload["newField"] = {"x": 1}
    payload["alerts"][0]["silencedBy"] = []

    response = hook(api_as(integration), payload)

    assert response.status_code == 200 and len(response.json()["launched"]) == 1


# --- Reading an alert -----------------------------------------------------------------------


def _alert(labels: dict | None = None, annotations: dict | None = None) -> AlertIn:
    return AlertIn.model_validate({"status": "firing", "labels": labels or {},
                                   "annotations": annotations or {}})


@pytest.mark.parametrize("labels, annotations, slug", [
    ({"runbook": "db-failover"}, {"runbook_url": "https://x.org/other.md"}, "db-failover"),
    ({}, {"runbook": "db-failover"}, "db-failover"),
    ({}, {"runbook_url": "https://runbooks.example.org/runbooks/db-failover.md"},
     "db-failover"),
    ({}, {"runbook_url": "https://runbooks.example.org/runbooks/db-failover/"}, "db-failover"),
    ({}, {"runbook_url": "https://wiki.example.org/ops/db-failover.html?x=1#step-2"},
     "db-failover"),
    ({}, {"runbook_url": "https://wiki.example.org/ops/db%2Dfailover"}, "db-failover"),
    ({"runbook_url": "https://x.org/db-failover"}, {}, "db-failover"),
    ({}, {"runbook_url": "https://wiki.example.org/"}, None),
    ({"alertname": "Watchdog"}, {"summary": "all is well"}, None),
])
def test_the_runbook_an_alert_names(labels, annotations, slug):
    assert alert_runbook_slug(_alert(labels, annotations)) == slug


@pytest.mark.parametrize("value, severity", [
    ("critical", 1), ("CRITICAL", 1), ("high", 2), ("major", 2), ("error", 2),
    ("warning", 3), ("minor", 3), ("medium", 3), ("info", 4), ("low", 4), ("none", 4),
    ("1", 1), ("4", 4), ("sev2", 2), ("P1", 1), ("5", 3), ("page", 3), ("", 3),
])
def test_severity_from_the_label(value, severity):
    assert alert_severity({"severity": value}) == severity


def test_severity_without_a_label_is_3():
    assert alert_severity({}) == 3


def test_title_from_summary_else_alertname_within_the_column():
    assert alert_title(_alert({"alertname": "PostgresDown"}, {"summary": " db-1\n down "}),
                       "k") == "db-1 down"
    assert alert_title(_alert({"alertname": "PostgresDown"}), "k") == "PostgresDown"
    assert alert_title(_alert(), "c4f0") == "Alert c4f0"
    long = alert_title(_alert({}, {"summary": "x" * 500}), "k")
    assert len(long) == 200 and long.endswith("…")


def test_a_long_group_key_becomes_a_digest_within_the_column():
    short, long = alert_ref("c4f0a1b2d3e4f5a6"), alert_ref("{}:{" + "a" * 400 + "}")
    assert short == "alert c4f0a1b2d3e4f5a6"
    assert long.startswith("alert group ") and len(long) <= 200
    assert long == alert_ref("{}:{" + "a" * 400 + "}") != alert_ref("{}:{" + "b" * 400 + "}")
