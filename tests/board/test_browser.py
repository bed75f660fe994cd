"""Acceptance test in a real browser: log in, pull work, complete, abandon, read the trail.

Drives Chromium through Playwright against pytest-django's live server, so the htmx swaps,
the CSRF header and the error handling run exactly as they do for a person mid-incident.
"""

from pathlib import Path

import pytest

from tests.conftest import CHROMIUM, PASSWORD, require_service

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]



@pytest.fixture(scope="session")
def browser_type_launch_args():
    return {
        "executable_path": CHROMIUM,
        "args": [
            "--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run",
        ],
    }


@pytest.fixture(autouse=True, scope="session")
def _async_unsafe_allowed():
    # Playwright's sync API keeps an event loop in this thread for the rest of the session;
    # the ORM calls made by the tests (and their database teardown) are still synchronous
    # and safe. Session-wide, because every later database flush runs under that loop too.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        yield


@pytest.fixture
def browser_page(page):
    """The Playwright page, failing the test on any JavaScript error."""
    require_service(Path(CHROMIUM).exists(), "Chromium")
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.set_default_timeout(10_000)
    yield page
    assert errors == []


def log_in(page, live_server, username: str) -> None:
    page.goto(f"{live_server.url}/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live_server.url}/")
    assert page.evaluate("typeof htmx") == "object"


def test_claim_complete_claim_abandon_then_read_the_timeline(browser_page, live_server, staff,
                                                             make_run, tmp_path):
    from playwright.sync_api import expect

    page = browser_page
    run = make_run(title="INC-42 primary database down", ref="INC-42")
    log_in(page, live_server, staff.username)
    my_work = page.locator("#my-work")

    page.get_by_role("button", name="Claim next").click()
    expect(my_work).to_contain_text("Freeze writes")
    expect(page.locator("#flash")).to_contain_text("You claimed #1")

    my_work.get_by_role("button", name="Complete").click()
    expect(page.locator("#flash")).to_contain_text("Done: #1")
    expect(my_work).to_contain_text("You hold no claims")

    page.get_by_role("button", name="Claim next").click()
    expect(my_work).to_contain_text("Snapshot the primary")
    expect(page.locator("#runs .lane-claimed")).to_contain_text("Snapshot the primary")
    page.screenshot(path=str(tmp_path / "board.png"), full_page=True)

    my_work.get_by_placeholder("Why are you giving it back?").fill("the replica is lagging")
    my_work.get_by_role("button", name="Abandon").click()
    expect(page.locator("#flash")).to_contain_text("You gave back #2")
    expect(my_work).to_contain_text("You hold no claims")
    assert page.url == f"{live_server.url}/"  # every step was an htmx swap, not a reload

    page.get_by_role("link", name="INC-42 primary database down").click()
    page.wait_for_url(f"{live_server.url}/runs/{run.pk}/")
    kinds = page.locator("table.timeline .kind").all_inner_texts()
    assert kinds == ["launched", "claimed", "completed", "claimed", "abandoned"]
    expect(page.locator("table.timeline")).to_contain_text("the replica is lagging")


def test_a_refused_action_shows_its_message(browser_page, live_server, staff):
    from playwright.sync_api import expect

    page = browser_page
    log_in(page, live_server, staff.username)

    page.get_by_role("button", name="Claim next").click()

    expect(page.locator("#flash .flash-error")).to_have_text(
        "Nothing is available to claim right now."
    )


CACHE_RUNBOOK = (
    "---\nflow: parallel\n---\n# Cache warm-up\n\n- Warm the edge cache\n- Warm the API cache\n"
)


@pytest.fixture
def other_user_page(browser, live_server):
    """A page in a browser context of its own (its own cookies: another user), failing the
    test on any JavaScript error; every context opened is closed at the end."""
    contexts, errors = [], []

    def open_as(username: str):
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.set_default_timeout(10_000)
        log_in(page, live_server, username)
        return page

    yield open_as
    for context in contexts:
        context.close()
    assert errors == []


def test_manager_launches_with_a_recommendation_and_pushes_the_run_over_a_held_claim(
    browser_page, other_user_page, live_server, manager, staff, teammate, make_runbook,
    make_run, tmp_path
):
    from playwright.sync_api import expect

    from board.models import CheckpointKind, Item, ItemState, Run
    from board.services import item_claim_next

    runbook = make_runbook()
    # A more urgent run in the shared pool: tia's Claim next must still take the pushed run's.
    urgent = make_run(runbook=make_runbook(CACHE_RUNBOOK, filename="cache.md"),
                      title="INC-50 cache cold", severity=1)

    # Maya launches from the form; the recommendation follows her answers.
    page = browser_page
    log_in(page, live_server, manager.username)
    page.get_by_role("link", name="Launch").click()
    page.wait_for_url(f"{live_server.url}/runs/new/")
    recommendation = page.locator("#recommendation")
    expect(recommendation).to_contain_text("Pull is the default")
    page.get_by_label("Runbook").select_option(str(runbook.pk))
    page.get_by_label("Title").fill("INC-77 primary database down")
    page.get_by_label("Severity").select_option("4")
    page.get_by_label("Incident reference").fill("INC-77")
    page.get_by_label("Total (everything is down)").check()
    expect(recommendation).to_contain_text("Answer both questions")
    page.get_by_label("Persistent (it stays until fixed)").check()
    expect(recommendation).to_contain_text("Recommended: Push")
    expect(recommendation).to_contain_text("A persistent, total failure")
    page.get_by_label("Transient (it may pass)").check()
    expect(recommendation).to_contain_text("Recommended: Hybrid")
    expect(recommendation).to_contain_text("A mixed failure")
    page.get_by_label("Partial (one part is down)").check()
    expect(recommendation).to_contain_text("Recommended: Pull")
    expect(recommendation).to_contain_text("A transient, partial failure")
    page.get_by_label("Total (everything is down)").check()
    page.get_by_label("Persistent (it stays until fixed)").check()
    expect(recommendation).to_contain_text("Recommended: Push")
    page.get_by_role("button", name="Launch").click()

    run = Run.objects.get(ref="INC-77")
    page.wait_for_url(f"{live_server.url}/runs/{run.pk}/")
    expect(page.locator("#flash")).to_contain_text("Launched “INC-77 primary database down”")
    assert (run.scope, run.nature, run.recommended_mode, run.mode) == (
        "total", "persistent", "push", "push")

    # Sam holds a claim on it, his board open, when Maya pushes the run to Tia.
    held = item_claim_next(actor=staff, run=run)
    sam = other_user_page(staff.username)
    expect(sam.locator("#my-work")).to_contain_text(held.title)

    page.get_by_label("Push to").select_option(f"user:{teammate.username}")
    page.locator("#reassign_reason").fill("sam is off shift")
    page.get_by_role("button", name="Push", exact=True).click()
    expect(page.locator("#flash")).to_contain_text(
        "Pushed “INC-77 primary database down” to tia: 4 items reassigned.")
    expect(page.locator(".run-summary")).to_contain_text("Pushed to tia")
    kinds = page.locator("table.timeline .kind").all_inner_texts()
    assert kinds == ["launched", "claimed"] + ["reassigned"] * 4
    expect(page.locator("table.timeline")).to_contain_text("sam is off shift")
    assert page.url == f"{live_server.url}/runs/{run.pk}/"  # an htmx swap, not a reload
    page.screenshot(path=str(tmp_path / "run.png"), full_page=True)

    # Sam's Complete, from the page he opened before the push, is refused with the reason.
    sam.locator("#my-work").get_by_role("button", name="Complete").click()
    expect(sam.locator("#flash .flash-error")).to_have_text(
        f"Your claim on “{held.title}” was taken back: maya pushed the run to tia: "
        "“sam is off shift”."
    )
    expect(sam.locator("#my-work")).to_contain_text("You hold no claims")
    held.refresh_from_db()
    assert held.state == ItemState.AVAILABLE

    # Tia is told on her board, and her Claim next gets the pushed run's items first.
    tia = other_user_page(teammate.username)
    notice = tia.locator("#pushed-to-me")
    expect(notice).to_contain_text("maya pushed INC-77 primary database down to you")
    expect(notice).to_contain_text("“sam is off shift”")
    tia.get_by_role("button", name="Claim next").click()
    expect(tia.locator("#flash")).to_contain_text(f"You claimed #1 “{held.title}”")
    expect(tia.locator("#my-work")).to_contain_text("INC-77 primary database down")
    claimed = Item.objects.get(holder=teammate)
    assert (claimed.run_id, claimed.position) == (run.pk, 1)
    assert not urgent.items.filter(state=ItemState.CLAIMED).exists()
    assert run.checkpoints.filter(kind=CheckpointKind.REASSIGNED).count() == 4
