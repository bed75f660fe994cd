"""Idempotent actions (DESIGN.md, invariant 4): a form or API call sent twice acts once and
answers the first outcome again, even when both copies arrive at the same moment."""

import re
import threading
import time
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.services import api_token_create
from board import services
from board.models import Checkpoint, CheckpointKind, IdempotencyKey, Item, ItemState
from board.services import item_claim_next
from board.tasks import purge_idempotency_keys
from tests.board.conftest import ApiClient

HTMX = {"HTTP_HX_REQUEST": "true"}
KEY_FIELD = re.compile(r'name="idempotency_key" value="([0-9a-f-]{36})"')

PARALLEL = (
    "---\nflow: parallel\n---\n# Cache flush\n\n"
    "- Drain node A\n- Drain node B\n- Drain node C\n"
)


@pytest.fixture
def parallel_run(make_run, make_runbook):
    return make_run(runbook=make_runbook(PARALLEL, filename="flush.md"), title="INC-3 cache")


def kinds(run) -> list[str]:
    return list(Checkpoint.objects.filter(run=run).order_by("id").values_list("kind", flat=True))


def form(**fields) -> dict:
    return {"idempotency_key": str(uuid.uuid4()), **fields}


def flash(response) -> str:
    """The text of the flash messages in a response."""
    return " ".join(re.findall(r'<p class="flash-msg[^"]*"[^>]*>(.*?)</p>',
                               response.content.decode()))


# --- The web: double clicks and resent forms ------------------------------------------------


def test_double_clicking_complete_shows_done_twice_and_completes_once(client, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)
    client.force_login(staff)
    sent = form(token=item.token)
    url = reverse("board:item_complete", args=[item.pk])

    first = client.post(url, sent, **HTMX)
    second = client.post(url, sent, **HTMX)

    assert first.status_code == second.status_code == 200
    assert flash(first) == flash(second) == "Done: #1 “Freeze writes”."
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED,
                          CheckpointKind.COMPLETED]


def test_a_resent_complete_without_javascript_shows_the_same_message(client, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)
    client.force_login(staff)
    sent = form(token=item.token)
    url = reverse("board:item_complete", args=[item.pk])

    pages = [client.post(url, sent, follow=True) for _ in range(2)]

    for page in pages:
        assert page.redirect_chain == [(reverse("board:board"), 303)]
        assert "Done: #1 “Freeze writes”." in flash(page)
    assert kinds(run).count(CheckpointKind.COMPLETED) == 1


def test_a_resent_abandon_gives_the_first_answer_and_abandons_once(client, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)
    client.force_login(staff)
    sent = form(token=item.token, reason="pager went off")
    url = reverse("board:item_abandon", args=[item.pk])

    first = client.post(url, sent, **HTMX)
    item_claim_next(actor=staff)  # claimed again meanwhile: a second abandon would be a 409
    second = client.post(url, sent, **HTMX)

    assert first.status_code == second.status_code == 200
    assert flash(first) == flash(second) == (
        "You gave back #1 “Freeze writes”: it is back in the pool."
    )
    item.refresh_from_db()
    assert item.state == ItemState.CLAIMED and item.attempts == 1
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED,
                          CheckpointKind.ABANDONED, CheckpointKind.CLAIMED]


def test_a_resent_claim_next_claims_one_item(client, staff, parallel_run):
    client.force_login(staff)
    sent = form()

    for _ in range(3):
        assert client.post(reverse("board:claim_next"), sent, **HTMX).status_code == 200

    assert Item.objects.filter(holder=staff).count() == 1
    assert kinds(parallel_run).count(CheckpointKind.CLAIMED) == 1


def test_still_on_it_extends_the_lease_once(client, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)
    Item.objects.filter(pk=item.pk).update(lease_expires_at=timezone.now() + timedelta(minutes=1))
    client.force_login(staff)
    sent = form(token=item.token)
    url = reverse("board:item_extend", args=[item.pk])

    first = client.post(url, sent, **HTMX)
    second = client.post(url, sent, **HTMX)

    assert first.status_code == second.status_code == 200
    assert flash(first) == flash(second)
    assert flash(first).startswith("Still on it: #1 “Freeze writes” is yours until ")
    item.refresh_from_db()
    assert item.lease_expires_at > timezone.now() + timedelta(minutes=10)
    assert kinds(run)[-1] == CheckpointKind.EXTENDED
    assert kinds(run).count(CheckpointKind.EXTENDED) == 1


def test_a_resent_form_that_failed_fails_the_same_way(client, staff, make_run):
    make_run()
    item = item_claim_next(actor=staff)
    services.item_complete(item_id=item.pk, token=item.token, actor=staff)
    client.force_login(staff)
    sent = form(token=item.token)
    url = reverse("board:item_complete", args=[item.pk])

    first = client.post(url, sent, **HTMX)
    second = client.post(url, sent, **HTMX)

    assert first.status_code == second.status_code == 409
    assert flash(first) == flash(second) == "“Freeze writes” is already done."


def test_a_form_without_a_key_is_422_and_changes_nothing(client, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)
    client.force_login(staff)

    response = client.post(reverse("board:item_complete", args=[item.pk]),
                           {"token": item.token}, **HTMX)

    assert response.status_code == 422
    assert "no idempotency key" in flash(response)
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]


def test_a_key_sent_again_with_other_fields_is_422(client, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)
    client.force_login(staff)
    url = reverse("board:item_abandon", args=[item.pk])
    sent = form(token=item.token, reason="disk full")
    client.post(url, sent, **HTMX)

    response = client.post(url, {**sent, "reason": "something else"}, **HTMX)

    assert response.status_code == 422
    assert "already used for a different request" in flash(response)
    assert kinds(run).count(CheckpointKind.ABANDONED) == 1


def test_an_error_renders_my_work_again_with_fresh_keys(client, staff, make_run):
    """After a 422 the corrected form is a new request: it must not reuse the failed key."""
    run = make_run()
    item = item_claim_next(actor=staff)
    client.force_login(staff)
    url = reverse("board:item_abandon", args=[item.pk])
    sent = form(token=item.token, reason="  ")

    refused = client.post(url, sent, **HTMX)

    assert refused.status_code == 422 and refused["HX-Retarget"] == "#flash"
    body = refused.content.decode()
    assert '<section id="my-work"' in body and 'hx-swap-oob="true"' in body
    fresh = set(KEY_FIELD.findall(body))
    assert fresh and sent["idempotency_key"] not in fresh
    retry = client.post(url, {**sent, "idempotency_key": fresh.pop(), "reason": "disk full"},
                        **HTMX)
    assert retry.status_code == 200
    assert kinds(run)[-1] == CheckpointKind.ABANDONED


def test_claim_next_after_nothing_to_claim_claims_once_items_arrive(client, staff, make_run):
    """The refused Claim next is replaced by a fresh form, so pressing it again is a new
    request, not a replay of "nothing to claim"."""
    client.force_login(staff)
    refused = client.post(reverse("board:claim_next"), form(), **HTMX)
    assert refused.status_code == 409
    make_run()

    fresh = KEY_FIELD.findall(refused.content.decode())
    response = client.post(reverse("board:claim_next"), {"idempotency_key": fresh[0]}, **HTMX)

    assert response.status_code == 200
    assert Item.objects.filter(holder=staff).count() == 1


def test_every_rendering_of_a_form_has_a_new_key(client, staff, parallel_run):
    item_claim_next(actor=staff)
    client.force_login(staff)

    first = KEY_FIELD.findall(client.get(reverse("board:board")).content.decode())
    second = KEY_FIELD.findall(client.get(reverse("board:board")).content.decode())

    # Claim next, the claim's Complete, Still on it and Abandon, and two pool cards' Claim.
    assert len(first) == len(set(first)) == 6
    assert not set(first) & set(second)
    page = client.get(reverse("board:run", args=[parallel_run.pk])).content.decode()
    assert len(KEY_FIELD.findall(page)) == 2  # the run page's two Claim buttons


# --- Two identical requests at the same moment ----------------------------------------------


def _slowed(monkeypatch, name: str) -> None:
    """Make a service dawdle, so the duplicate arrives while the first holds its key."""
    real = getattr(services, name)

    def slow(**kwargs):
        time.sleep(0.5)
        return real(**kwargs)

    monkeypatch.setattr(services, name, slow)


def _at_once(send, copies: int = 2) -> list:
    """Run `send` in threads released together; returns (started, finished, result) each."""
    barrier = threading.Barrier(copies)
    results: list = []
    errors: list = []

    def run() -> None:
        try:
            barrier.wait()
            started = time.monotonic()
            result = send()
            results.append((started, time.monotonic(), result))
        except Exception as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(copies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(results) == copies
    # They really overlapped: each started before the other one had its answer.
    assert max(started for started, _, _ in results) < min(done for _, done, _ in results)
    return [result for _, _, result in results]


@pytest.mark.django_db(transaction=True)
def test_two_identical_api_claims_at_the_same_moment_claim_once(staff, parallel_run,
                                                                monkeypatch):
    _, token = api_token_create(user=staff)
    _slowed(monkeypatch, "item_claim_next")

    responses = _at_once(
        lambda: ApiClient(Client(), token).post("/claims/next", key="same-moment")
    )

    assert [r.status_code for r in responses] == [200, 200]
    assert responses[0].json() == responses[1].json()
    assert sorted(r.get("Idempotent-Replayed", "") for r in responses) == ["", "true"]
    assert Item.objects.filter(holder=staff).count() == 1
    assert kinds(parallel_run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]


@pytest.mark.django_db(transaction=True)
def test_two_identical_web_completes_at_the_same_moment_complete_once(staff, make_run,
                                                                      monkeypatch):
    run = make_run()
    item = item_claim_next(actor=staff)
    login = Client()
    login.force_login(staff)
    session = login.cookies[settings.SESSION_COOKIE_NAME].value
    sent = form(token=item.token)
    _slowed(monkeypatch, "item_complete")

    def send():
        browser = Client()
        browser.cookies[settings.SESSION_COOKIE_NAME] = session
        return browser.post(reverse("board:item_complete", args=[item.pk]), sent, **HTMX)

    responses = _at_once(send)

    assert [r.status_code for r in responses] == [200, 200]
    assert flash(responses[0]) == flash(responses[1]) == "Done: #1 “Freeze writes”."
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED,
                          CheckpointKind.COMPLETED]


# --- Retention ------------------------------------------------------------------------------


def test_keys_are_purged_after_the_retention_and_not_before(staff, settings):
    settings.IDEMPOTENCY_KEY_RETENTION_HOURS = 48
    now = timezone.now()
    for key, age in (("old", 49), ("young", 47)):
        IdempotencyKey.objects.create(user=staff, key=key, fingerprint="f", status=200,
                                      body={}, created_at=now - timedelta(hours=age))

    assert purge_idempotency_keys() == "forgot 1 idempotency keys past their retention"

    assert list(IdempotencyKey.objects.values_list("key", flat=True)) == ["young"]


def test_a_key_is_replayed_until_it_is_purged(client, staff, parallel_run, settings):
    _, token = api_token_create(user=staff)
    api = ApiClient(client, token)
    first = api.post("/claims/next", key="retry-later")
    IdempotencyKey.objects.filter(key="retry-later").update(
        created_at=timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_RETENTION_HOURS - 1)
    )
    assert api.post("/claims/next", key="retry-later").json() == first.json()

    IdempotencyKey.objects.filter(key="retry-later").update(
        created_at=timezone.now() - timedelta(hours=settings.IDEMPOTENCY_KEY_RETENTION_HOURS + 1)
    )
    purge_idempotency_keys()

    assert api.post("/claims/next", key="retry-later").json() != first.json()
    assert Item.objects.filter(holder=staff).count() == 2


def test_beat_purges_keys_hourly():
    entry = settings.CELERY_BEAT_SCHEDULE["purge-idempotency-keys"]
    assert entry == {"task": "board.tasks.purge_idempotency_keys", "schedule": 3600.0}
    assert settings.IDEMPOTENCY_KEY_RETENTION_HOURS >= 24
