"""The portal behind a load balancer without session affinity: two `arcext serve --database URL` nodes.

Two server processes (data directories of their own, sharing the key file ``secret.key`` only: no portal file is
copied) on one scratch database. Over HTTP, as a browser does it (the sign-in form and its CSRF token): sign in on
node A, and a page on node B shows you signed in; Sign out on B, and the very cookie A signed is signed out on A
at the next request. Then the same walk in Chromium (Playwright), when it is installed. docs/deploy.md,
"The load balancer". Skipped without PostgreSQL.
"""

from __future__ import annotations

import html
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import requests

from arcext.portal.file_storage import SECRET_FILE, SESSIONS_FILE
from arcext.store.postgres import provision
from pgdb import skip_reason
from test_multinode import Node

if TYPE_CHECKING:
    from playwright._impl._api_structures import SetCookieParam
    from playwright.sync_api import BrowserContext

pytestmark = pytest.mark.slow

COOKIE = "arcext_portal"
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')
WHO = re.compile(r'<span class="who"[^>]*>([^<]+?) ·')
ENV = {"PYTHONUNBUFFERED": "1", "ARCEXT_LEADER_POLL": "0.5"}


@dataclass
class Pair:
    a: Node
    b: Node
    token: str


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    reason = skip_reason()
    if reason is not None:
        pytest.skip(f"multi-node tests need PostgreSQL: {reason}")
    database = provision.create("arcext_pm")
    root = tmp_path_factory.mktemp("portal-nodes")
    nodes: list[Node] = []
    try:
        nodes.append(Node("a", root / "a", database, ENV))
        nodes[0].wait_listening()
        assert nodes[0].token_path is not None
        token = nodes[0].token_path.read_text().strip()
        (root / "b").mkdir()
        shutil.copy2(root / "a" / "secret.key", root / "b" / "secret.key")  # the one file every node shares
        nodes.append(Node("b", root / "b", database, ENV))
        nodes[1].wait_listening()
        yield Pair(nodes[0], nodes[1], token)
    finally:
        for node in nodes:
            node.stop()
        provision.drop(database)


def csrf_of(page: str) -> str:
    found = CSRF.search(page)
    assert found, "no CSRF token on the page"
    return html.unescape(found.group(1))


def signed_in_as(page: str) -> str | None:
    found = WHO.search(page)
    return html.unescape(found.group(1)).strip() if found else None


def sign_in(node: Node, token: str) -> requests.Session:
    """The sign-in form on ``node``, as a browser fills it in: GET (a session cookie with its CSRF token), POST."""
    s = requests.Session()
    form = s.get(f"{node.url}/portal/signin", timeout=30)
    assert form.status_code == 200, form.text
    r = s.post(
        f"{node.url}/portal/signin",
        data={"token": token, "csrf_token": csrf_of(form.text), "next": "/portal/machines"},
        allow_redirects=False,
        timeout=30,
    )
    assert r.status_code == 303 and r.headers["Location"] == "/portal/machines", r.text
    return s


def machines_page(node: Node, cookie: str) -> requests.Response:
    """``/portal/machines`` on ``node`` with exactly this session cookie (a fresh client: nothing else carried)."""
    with requests.Session() as s:
        s.cookies.set(COOKIE, cookie, path="/portal")
        return s.get(f"{node.url}/portal/machines", allow_redirects=False, timeout=30)


def test_sign_in_on_one_node_holds_on_the_other_and_sign_out_there_ends_it_here(pair: Pair) -> None:
    a, b = pair.a, pair.b
    user = sign_in(a, pair.token)
    cookie = user.cookies.get(COOKIE)
    assert cookie
    on_a = user.get(f"{a.url}/portal/machines", allow_redirects=False, timeout=30)
    assert on_a.status_code == 200, on_a.text
    name = signed_in_as(on_a.text)
    assert name

    # node B: the cookie node A signed, and the session node A started, are honoured
    on_b = machines_page(b, cookie)
    assert on_b.status_code == 200, on_b.headers.get("Location")
    assert "Machines - Azure Arc" in on_b.text and signed_in_as(on_b.text) == name

    # Sign out on node B (its page's form and CSRF token) ...
    with requests.Session() as on_b_user:
        on_b_user.cookies.set(COOKIE, cookie, path="/portal")
        page = on_b_user.get(f"{b.url}/portal/machines", timeout=30)
        out = on_b_user.post(
            f"{b.url}/portal/signout", data={"csrf_token": csrf_of(page.text)}, allow_redirects=False, timeout=30
        )
    assert out.status_code == 303 and out.headers["Location"] == "/portal/signin"

    # ... and the very cookie, replayed on node A at its next request, signs nobody in
    replayed = machines_page(a, cookie)
    assert replayed.status_code == 303 and replayed.headers["Location"].startswith("/portal/signin")
    assert machines_page(b, cookie).status_code == 303

    # and the other way round: a sign-in on B is one on A
    again = sign_in(b, pair.token).cookies.get(COOKIE)
    assert again and again != cookie
    assert signed_in_as(machines_page(a, again).text) == name


def test_no_node_keeps_portal_files(pair: Pair) -> None:
    sign_in(pair.a, pair.token)
    for node in (pair.a, pair.b):
        assert not (node.data_dir / SECRET_FILE).exists() and not (node.data_dir / SESSIONS_FILE).exists()


# --- the same walk in a browser ---------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium")
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[BrowserContext]:
    if CHROMIUM is None or sync_playwright is None:
        pytest.skip("the browser walk needs Debian's chromium (scripts/install-browser) and the playwright package")
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


def test_in_a_browser_sign_in_on_one_node_and_sign_out_on_the_other(pair: Pair, browser: BrowserContext) -> None:
    """Cookies do not tell ports apart, so one browser profile visiting both nodes is one user behind a load
    balancer that sends each request wherever it likes."""
    a, b = pair.a, pair.b
    page = browser.new_page()
    page.goto(f"{a.url}/portal/")
    expect(page.get_by_role("heading", name="Sign in to arcext")).to_be_visible()
    page.get_by_label("Access token").fill(pair.token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Machines - Azure Arc")).to_be_visible()
    kept: list[SetCookieParam] = [
        {"name": c["name"], "value": c["value"], "domain": c["domain"], "path": c["path"]}
        for c in browser.cookies()
        if c["name"] == COOKIE
    ]
    assert len(kept) == 1

    page.goto(f"{b.url}/portal/machines")
    expect(page.get_by_role("heading", name="Machines - Azure Arc")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in to arcext")).to_be_visible()

    # the cookie as it was before Sign out (a copy a thief kept), on node A: signed out there too
    browser.clear_cookies()
    browser.add_cookies(kept)
    page.goto(f"{a.url}/portal/machines")
    expect(page.get_by_role("heading", name="Sign in to arcext")).to_be_visible()
    page.close()
