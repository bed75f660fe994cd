"""The board, run page, launch and item actions through the web views (pytest-django client)."""

import uuid
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone

from board.models import Checkpoint, CheckpointKind, Item, ItemState, Run
from board.services import item_claim_next
from board.templatetags.markdown import render_markdown

HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def as_user(client):
    def login(user):
        client.force_login(user)
        return client

    return login


PARALLEL = (
    "---\nflow: parallel\n---\n# Cache flush\n\n"
    "- Drain node A\n- Drain node B\n- Drain node C\n"
)


@pytest.fixture
def parallel_run(make_run, make_runbook):
    """A run whose three items are all available at once."""
    return make_run(runbook=make_runbook(PARALLEL, filename="flush.md"), title="INC-3 cache")


def form(**fields) -> dict:
    """What a freshly rendered action form posts: its fields and a new idempotency key."""
    return {"idempotency_key": str(uuid.uuid4()), **fields}


def kinds(run) -> list[str]:
    return list(Checkpoint.objects.filter(run=run).order_by("id").values_list("kind", flat=True))


# --- Board ----------------------------------------------------------------------------------


def test_my_work_says_less_than_a_minute_when_the_lease_is_nearly_over(
    as_user, staff, make_run, make_runbook
):
    run = make_run(runbook=make_runbook(lease=timedelta(seconds=40)))
    item_claim_next(actor=staff, run=run)

    page = as_user(staff).get(reverse("board:board")).content.decode()

    assert "(less than a minute left)" in page
    assert "0\xa0minutes" not in page and "0 minutes" not in page



def test_board_shows_only_my_teams_runs(as_user, staff, outsider, make_run, make_runbook,
                                        other_team):
    make_run(title="INC-1 ops primary down")
    make_run(runbook=make_runbook(owner=other_team), title="INC-2 payments outage")

    page = as_user(staff).get(reverse("board:board")).content.decode()

    assert "INC-1 ops primary down" in page
    assert "INC-2 payments outage" not in page


def test_board_shows_lanes_sections_and_notes(as_user, staff, make_run, make_runbook):
    runbook = make_runbook(
        "# Restore\n\n## Prepare\n\nCheck the **pager** first.\n\n- Freeze writes\n"
        "- Snapshot\n\n## Switch\n\n- Promote\n"
    )
    make_run(runbook=runbook)

    page = as_user(staff).get(reverse("board:board")).content.decode()

    for lane in ("Available", "Waiting", "Claimed", "Stuck"):
        assert f">{lane} <span class=\"count\">" in page
    assert "Prepare" in page and "Switch" in page
    assert "<strong>pager</strong>" in page  # the section note, rendered
    assert "0 done" in page


def test_board_lane_shows_holder_of_claimed_item(as_user, staff, teammate, make_run):
    run = make_run()
    item_claim_next(actor=teammate)

    page = as_user(staff).get(reverse("board:board")).content.decode()

    assert "tia · until" in page
    assert run.items.filter(state=ItemState.CLAIMED, holder=teammate).count() == 1


def test_board_partial_poll_returns_only_the_lanes(as_user, staff, make_run):
    make_run()

    response = as_user(staff).get(reverse("board:board"), **HTMX)

    body = response.content.decode()
    assert body.lstrip().startswith('<section id="runs"')
    assert "<html" not in body


def test_board_page_query_count_does_not_grow_with_runs(
    as_user, staff, make_run, make_runbook, django_assert_max_num_queries
):
    runbook = make_runbook()
    for number in range(4):
        make_run(runbook=runbook, title=f"INC-{number}")
    item_claim_next(actor=staff)
    client = as_user(staff)

    with django_assert_max_num_queries(11):
        response = client.get(reverse("board:board"))

    assert response.status_code == 200
    assert response.content.decode().count('class="run sev-edge-') == 4


def test_my_work_shows_the_lease_in_the_viewers_time_zone(as_user, staff, make_run):
    type(staff).objects.filter(pk=staff.pk).update(time_zone="America/New_York")
    staff.refresh_from_db()
    make_run()
    item = item_claim_next(actor=staff)

    page = as_user(staff).get(reverse("board:board")).content.decode()

    local = item.lease_expires_at.astimezone(ZoneInfo("America/New_York"))
    assert f"Lease until <time datetime=\"{local.isoformat()}\">{local:%H:%M %Z}</time>" in page


def test_my_work_says_when_a_lease_ran_out(as_user, staff, make_run):
    make_run()
    item = item_claim_next(actor=staff)
    Item.objects.filter(pk=item.pk).update(lease_expires_at=timezone.now() - timedelta(minutes=1))

    page = as_user(staff).get(reverse("board:board")).content.decode()

    assert "Lease ran out at" in page and "complete it now" in page


# --- Claim next / claim / complete / abandon ---------------------------------------------


def test_claim_next_claims_and_writes_one_checkpoint(as_user, staff, make_run):
    run = make_run()

    response = as_user(staff).post(reverse("board:claim_next"), form(), **HTMX)

    assert response.status_code == 200
    item = Item.objects.get(run=run, position=1)
    assert item.state == ItemState.CLAIMED and item.holder == staff
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]
    body = response.content.decode()
    assert body.lstrip().startswith('<section id="my-work"')
    assert "Freeze writes" in body
    assert 'id="runs"' in body and 'hx-swap-oob="true"' in body  # lanes update out of band
    assert "You claimed #1" in body


def test_claim_next_without_javascript_redirects_back_with_a_message(as_user, staff, make_run):
    run = make_run()
    client = as_user(staff)

    response = client.post(reverse("board:claim_next"), form())

    assert response.status_code == 303
    assert response["Location"] == reverse("board:board")
    assert run.items.filter(state=ItemState.CLAIMED).count() == 1
    assert "You claimed #1" in client.get(response["Location"]).content.decode()


def test_claim_next_with_an_empty_pool_is_a_409_in_the_flash(as_user, staff):
    response = as_user(staff).post(reverse("board:claim_next"), form(), **HTMX)

    assert response.status_code == 409
    assert response["HX-Retarget"] == "#flash"
    assert "Nothing is available to claim right now." in response.content.decode()


def test_claim_one_item_from_the_pool(as_user, staff, parallel_run):
    run = parallel_run
    second = run.items.get(position=2)

    response = as_user(staff).post(reverse("board:item_claim", args=[second.pk]), form(), **HTMX)

    assert response.status_code == 200
    second.refresh_from_db()
    assert second.state == ItemState.CLAIMED and second.holder == staff
    assert kinds(run)[-1] == CheckpointKind.CLAIMED


def test_claiming_an_item_someone_holds_is_a_409(as_user, staff, teammate, make_run):
    run = make_run()
    taken = item_claim_next(actor=teammate)

    response = as_user(staff).post(reverse("board:item_claim", args=[taken.pk]), form(), **HTMX)

    assert response.status_code == 409
    assert "already held by tia" in response.content.decode()
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]


def test_complete_with_the_current_token(as_user, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)

    response = as_user(staff).post(
        reverse("board:item_complete", args=[item.pk]), form(token=item.token), **HTMX
    )

    assert response.status_code == 200
    item.refresh_from_db()
    assert item.state == ItemState.DONE and item.holder is None
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED,
                          CheckpointKind.COMPLETED]
    assert "Done: #1" in response.content.decode()


def test_abandon_with_a_reason_returns_the_item_to_the_pool(as_user, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)

    response = as_user(staff).post(
        reverse("board:item_abandon", args=[item.pk]),
        form(token=item.token, reason="pager went off"), **HTMX,
    )

    assert response.status_code == 200
    item.refresh_from_db()
    assert item.state == ItemState.AVAILABLE and item.attempts == 1
    last = Checkpoint.objects.filter(run=run).order_by("id").last()
    assert (last.kind, last.reason, last.token) == ("abandoned", "pager went off", item.token)


def test_abandon_without_a_reason_is_422_and_changes_nothing(as_user, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)

    response = as_user(staff).post(
        reverse("board:item_abandon", args=[item.pk]), form(token=item.token, reason="  "),
        **HTMX,
    )

    assert response.status_code == 422
    assert response["HX-Retarget"] == "#flash"
    assert "a reason is required" in response.content.decode()
    item.refresh_from_db()
    assert item.state == ItemState.CLAIMED and item.holder == staff and item.attempts == 0
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]


def test_complete_without_a_token_is_422(as_user, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)

    response = as_user(staff).post(reverse("board:item_complete", args=[item.pk]), form(), **HTMX)

    assert response.status_code == 422
    assert "token" in response.content.decode()
    assert kinds(run) == [CheckpointKind.LAUNCHED, CheckpointKind.CLAIMED]


def test_stale_token_is_409_with_the_reason_and_changes_nothing(as_user, staff, make_run):
    run = make_run()
    item = item_claim_next(actor=staff)
    client = as_user(staff)
    client.post(reverse("board:item_abandon", args=[item.pk]),
                form(token=item.token, reason="wrong host"), **HTMX)
    again = item_claim_next(actor=staff)
    assert again.pk == item.pk and again.token == item.token + 1

    response = client.post(
        reverse("board:item_complete", args=[item.pk]), form(token=item.token), **HTMX
    )

    assert response.status_code == 409
    assert "You have claimed this item again since" in response.content.decode()
    again.refresh_from_db()
    assert again.state == ItemState.CLAIMED and again.token == item.token + 1
    assert kinds(run)[-1] == CheckpointKind.CLAIMED


def test_stale_token_without_javascript_is_a_message_and_a_303(as_user, staff, teammate,
                                                                make_run):
    make_run()
    item = item_claim_next(actor=staff)
    client = as_user(staff)
    client.post(reverse("board:item_complete", args=[item.pk]), form(token=item.token))

    response = client.post(reverse("board:item_complete", args=[item.pk]),
                           form(token=item.token), follow=True)

    assert response.redirect_chain == [(reverse("board:board"), 303)]
    assert "is already done" in response.content.decode()


def test_plain_post_returns_to_a_safe_next_only(as_user, staff, parallel_run):
    run = parallel_run
    first = run.items.get(position=1)
    client = as_user(staff)
    run_url = reverse("board:run", args=[run.pk])

    ours = client.post(reverse("board:item_claim", args=[first.pk]), form(next=run_url))
    evil = client.post(reverse("board:claim_next"), form(next="https://evil.example/"))

    assert ours["Location"] == run_url
    assert evil["Location"] == reverse("board:board")
    assert run.items.filter(state=ItemState.CLAIMED, holder=staff).count() == 2


def test_actions_need_post(as_user, staff, make_run):
    make_run()
    assert as_user(staff).get(reverse("board:claim_next")).status_code == 405


def test_htmx_requests_after_logout_ask_the_browser_to_log_in(client, make_run):
    make_run()
    for response in (client.post(reverse("board:claim_next"), form(), **HTMX),
                     client.get(reverse("board:board"), **HTMX)):
        assert response.status_code == 200
        assert response["HX-Redirect"].startswith(reverse("login"))


# --- Access -----------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["item_claim", "item_complete", "item_abandon"])
def test_outsider_gets_404_on_another_teams_item(as_user, outsider, make_run, action):
    run = make_run()
    item = run.items.get(position=1)

    plain = as_user(outsider).post(reverse(f"board:{action}", args=[item.pk]),
                                   {"token": 0, "reason": "x"})
    htmx = as_user(outsider).post(reverse(f"board:{action}", args=[item.pk]),
                                  {"token": 0, "reason": "x"}, **HTMX)

    assert plain.status_code == 404
    assert htmx.status_code == 404 and htmx["HX-Retarget"] == "#flash"
    assert kinds(run) == [CheckpointKind.LAUNCHED]


def test_outsider_gets_404_on_another_teams_run_page_and_export(as_user, outsider, make_run):
    run = make_run()
    client = as_user(outsider)
    assert client.get(reverse("board:run", args=[run.pk])).status_code == 404
    assert client.get(reverse("board:trail_export", args=[run.pk, "csv"])).status_code == 404


def test_auditor_gets_403_on_claim(as_user, auditor, make_run):
    run = make_run()
    item = run.items.get(position=1)
    client = as_user(auditor)

    assert client.post(reverse("board:item_claim", args=[item.pk])).status_code == 403
    assert client.post(reverse("board:claim_next")).status_code == 403
    flashed = client.post(reverse("board:item_claim", args=[item.pk]), **HTMX)
    assert flashed.status_code == 403
    assert "Only staff of this team can work its items." in flashed.content.decode()
    assert kinds(run) == [CheckpointKind.LAUNCHED]


def test_auditor_sees_the_run_page_without_claim_buttons(as_user, auditor, make_run):
    run = make_run()

    page = as_user(auditor).get(reverse("board:run", args=[run.pk])).content.decode()

    assert run.title in page
    assert reverse("board:item_claim", args=[run.items.get(position=1).pk]) not in page
    assert reverse("board:trail_export", args=[run.pk, "csv"]) in page


def test_auditor_board_has_no_claim_buttons(as_user, auditor, make_run):
    make_run()
    page = as_user(auditor).get(reverse("board:board")).content.decode()
    assert "Claim next" not in page and ">Claim</button>" not in page


def test_anonymous_users_are_sent_to_log_in(client, make_run):
    run = make_run()
    for url in (reverse("board:board"), reverse("board:run", args=[run.pk]),
                reverse("board:launch")):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith("/login/")


# --- Run page and trail export -------------------------------------------------------------


def test_run_page_shows_items_and_the_timeline_oldest_first(as_user, staff, make_run):
    run = make_run(ref="INC-77")
    item = item_claim_next(actor=staff)
    client = as_user(staff)
    client.post(reverse("board:item_abandon", args=[item.pk]),
                form(token=item.token, reason="disk full"), **HTMX)

    page = client.get(reverse("board:run", args=[run.pk])).content.decode()

    assert "INC-77" in page and "Ops" in page and "SEV2" in page
    for title in ("Freeze writes", "Snapshot the primary", "Promote the replica"):
        assert title in page
    timeline = page[page.index('class="timeline"'):]
    positions = [timeline.index(f"kind-{kind}") for kind in ("launched", "claimed", "abandoned")]
    assert positions == sorted(positions)
    assert "disk full" in timeline and "#1 Freeze writes" in timeline
    # Staff may work but not audit: claim buttons, no export links.
    assert reverse("board:trail_export", args=[run.pk, "csv"]) not in page
    assert ">Claim</button>" in page


def test_run_page_shows_times_in_the_viewers_time_zone(as_user, staff, make_run):
    type(staff).objects.filter(pk=staff.pk).update(time_zone="Asia/Kolkata")
    staff.refresh_from_db()
    run = make_run()
    launched = Checkpoint.objects.get(run=run, kind="launched").at

    page = as_user(staff).get(reverse("board:run", args=[run.pk])).content.decode()

    local = launched.astimezone(ZoneInfo("Asia/Kolkata"))
    assert local.strftime("%Y-%m-%d %H:%M:%S") + " IST" in page


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_trail_export_for_auditors_only(as_user, staff, auditor, manager, make_run, fmt):
    run = make_run()
    url = reverse("board:trail_export", args=[run.pk, fmt])

    assert as_user(staff).get(url).status_code == 403
    for reader in (auditor, manager):
        response = as_user(reader).get(url)
        assert response.status_code == 200
        assert f'filename="run-{run.pk}-trail.{fmt}"' in response["Content-Disposition"]
        assert "launched" in response.content.decode()


# --- Launch ------------------------------------------------------------------------------


def test_staff_gets_403_on_launch(as_user, staff, make_runbook):
    runbook = make_runbook()
    client = as_user(staff)
    assert client.get(reverse("board:launch")).status_code == 403
    response = client.post(reverse("board:launch"),
                           {"runbook": runbook.pk, "title": "x", "severity": 2})
    assert response.status_code == 403
    assert not Run.objects.exists()


def test_launch_form_creates_a_run(as_user, manager, make_runbook):
    runbook = make_runbook()

    response = as_user(manager).post(reverse("board:launch"), form(
        runbook=runbook.pk, title="INC-9 replica lag", severity="1", ref="INC-9",
        scope="partial", nature="transient",
    ))

    run = Run.objects.get()
    assert response.status_code == 303
    assert response["Location"] == reverse("board:run", args=[run.pk])
    assert (run.title, run.severity, run.ref, run.launched_by) == (
        "INC-9 replica lag", 1, "INC-9", manager)
    assert run.items.count() == 4
    assert kinds(run) == [CheckpointKind.LAUNCHED]


def test_launch_offers_only_the_latest_version_of_each_runbook(as_user, manager, make_runbook):
    old = make_runbook()
    new = make_runbook()

    page = as_user(manager).get(reverse("board:launch")).content.decode()

    assert f"({new.slug} v2)" in page and f"({old.slug} v1)" not in page


@pytest.mark.parametrize("data", [
    {"title": "", "severity": "2"},
    {"title": "INC", "severity": "9"},
    {"title": "   ", "severity": "2"},
])
def test_launch_with_bad_input_shows_errors_and_saves_nothing(as_user, manager, make_runbook,
                                                              data):
    runbook = make_runbook()

    response = as_user(manager).post(reverse("board:launch"), form(runbook=runbook.pk, **data))

    assert response.status_code == 422
    assert 'class="field-error"' in response.content.decode() or \
        'class="form-errors"' in response.content.decode()
    assert not Run.objects.exists()


def test_launch_of_another_teams_runbook_is_refused(as_user, manager, make_runbook, other_team):
    foreign = make_runbook(owner=other_team)

    response = as_user(manager).post(reverse("board:launch"),
                                     form(runbook=foreign.pk, title="x", severity="2"))

    assert response.status_code == 422
    assert not Run.objects.exists()


# --- Markdown -----------------------------------------------------------------------------


def test_markdown_filter_escapes_raw_html():
    html = render_markdown("Run this:\n\n<script>alert(1)</script>\n\n<b onclick=x>bold</b>")
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b onclick" not in html


def test_markdown_filter_refuses_javascript_links():
    html = render_markdown("[click](javascript:alert(1)) and [ok](https://example.com/)")
    assert 'href="javascript:' not in html.lower()
    assert '<a href="https://example.com/">ok</a>' in html


def test_markdown_filter_renders_tables_and_code():
    html = render_markdown("| a | b |\n|---|---|\n| 1 | 2 |\n\n```\nrm -rf /tmp/x\n```\n")
    assert "<table>" in html and "<pre><code>rm -rf /tmp/x" in html


def test_runbook_html_is_escaped_on_the_board(as_user, staff, make_run, make_runbook):
    runbook = make_runbook("# Evil\n\n- Step one\n\n  <script>alert('x')</script>\n")
    make_run(runbook=runbook)
    client = as_user(staff)
    client.post(reverse("board:claim_next"), form())

    page = client.get(reverse("board:board")).content.decode()

    assert "<script>alert" not in page and "&lt;script&gt;alert" in page


def test_launch_form_sent_twice_launches_one_run(as_user, manager, make_runbook):
    runbook = make_runbook()
    client = as_user(manager)
    sent = form(runbook=runbook.pk, title="INC-9 replica lag", severity="1", ref="INC-9",
                scope="partial", nature="transient")

    first = client.post(reverse("board:launch"), sent)
    again = client.post(reverse("board:launch"), sent)

    run = Run.objects.get()
    assert first.status_code == again.status_code == 303
    assert first["Location"] == again["Location"] == reverse("board:run", args=[run.pk])
    assert kinds(run) == [CheckpointKind.LAUNCHED]


# --- Stuck lane -----------------------------------------------------------------------------


def _stuck_item(make_runbook, make_run, staff):
    from board.services import item_abandon

    run = make_run(runbook=make_runbook(max_attempts=1))
    item = item_claim_next(actor=staff, run=run)
    return item_abandon(item_id=item.pk, token=item.token, actor=staff, reason="no access")


def test_manager_requeues_a_stuck_item_from_the_board(as_user, manager, staff, make_runbook,
                                                       make_run):
    item = _stuck_item(make_runbook, make_run, staff)
    client = as_user(manager)
    assert "Requeue" in client.get(reverse("board:board")).content.decode()

    response = client.post(reverse("board:item_requeue", args=[item.pk]), form(), **HTMX)

    item.refresh_from_db()
    assert response.status_code == 200
    assert (item.state, item.attempts) == (ItemState.AVAILABLE, 0)
    assert kinds(item.run)[-2:] == [CheckpointKind.STUCK, CheckpointKind.REQUEUED]


def test_manager_skips_a_stuck_item_with_a_reason(as_user, manager, staff, make_runbook,
                                                  make_run):
    item = _stuck_item(make_runbook, make_run, staff)
    client = as_user(manager)

    refused = client.post(reverse("board:item_skip", args=[item.pk]), form(reason=" "), **HTMX)
    item.refresh_from_db()
    assert refused.status_code == 422 and "reason is required" in refused.content.decode()
    assert item.state == ItemState.STUCK

    client.post(reverse("board:item_skip", args=[item.pk]), form(reason="done by hand"), **HTMX)
    item.refresh_from_db()
    assert item.state == ItemState.SKIPPED
    assert kinds(item.run)[-1] == CheckpointKind.SKIPPED


def test_staff_cannot_requeue_or_skip(as_user, staff, make_runbook, make_run):
    item = _stuck_item(make_runbook, make_run, staff)
    client = as_user(staff)

    assert "Requeue" not in client.get(reverse("board:board")).content.decode()
    assert client.post(reverse("board:item_requeue", args=[item.pk]), form()).status_code == 403
    assert client.post(reverse("board:item_skip", args=[item.pk]),
                       form(reason="x")).status_code == 403
    item.refresh_from_db()
    assert item.state == ItemState.STUCK


def test_outsider_gets_404_on_stuck_lane_actions(as_user, outsider, staff, make_runbook,
                                                 make_run):
    item = _stuck_item(make_runbook, make_run, staff)
    client = as_user(outsider)
    assert client.post(reverse("board:item_requeue", args=[item.pk]), form()).status_code == 404
    assert client.post(reverse("board:item_skip", args=[item.pk]),
                       form(reason="x")).status_code == 404


# --- Runs list ------------------------------------------------------------------------------


def test_runs_list_shows_finished_runs_of_my_teams_only(as_user, auditor, outsider, make_run,
                                                        make_runbook, other_team):
    from board.services import run_launch

    mine = make_run(title="INC-1 done and dusted")
    Run.objects.filter(pk=mine.pk).update(state="completed")
    foreign = run_launch(runbook=make_runbook(owner=other_team), title="INC-2 not yours",
                         actor=None)

    page = as_user(auditor).get(reverse("board:run_list")).content.decode()
    completed = as_user(auditor).get(reverse("board:run_list") + "?state=completed")

    assert "INC-1 done and dusted" in page and "INC-2 not yours" not in page
    assert reverse("board:run", args=[mine.pk]) in completed.content.decode()
    assert "INC-2 not yours" in as_user(outsider).get(reverse("board:run_list")).content.decode()
    assert foreign.pk


def test_runs_list_query_count_does_not_grow_with_runs(as_user, manager, make_run,
                                                       django_assert_max_num_queries):
    for number in range(6):
        make_run(title=f"INC-{number}")
    client = as_user(manager)
    with django_assert_max_num_queries(8):
        assert client.get(reverse("board:run_list")).status_code == 200
