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
