"""The portal in a real browser: headless Debian Chromium driven by Playwright against a live server.

Walks the Arc documentation's portal steps ("Machines - Azure Arc" → the server → Extensions →
select extensions → Enable / Disable automatic upgrade) and checks the result through the API;
then the activity-log recipe (Operation, Event initiated by, time span, resource group, an event's
detail, Download as CSV), a rollout pause / resume with a frozen version, a Reader who sees no
buttons, a forged POST, and no protected setting on any page. Screenshots go to
test-artifacts/screenshots/.

Playwright cannot download its own browser here; the tests use Debian's ``chromium`` package
(``scripts/install-browser``) and skip, saying so, when it is missing.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import requests

from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, machine_url, wait_operation

CHROMIUM = shutil.which("chromium")
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # pragma: no cover - the test extra installs it
    sync_playwright = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from playwright.sync_api import BrowserContext, Page

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or sync_playwright is None,
    reason="the portal's browser tests need Debian's chromium (run scripts/install-browser: "
    "apt-get install -y chromium) and the playwright package (pip install -e '.[test,dev]')",
)

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-artifacts" / "screenshots"
AUTO = "Azure Regional Service Manager"
OPERATION = "Microsoft.HybridCompute/machines/upgradeExtensions/action"
AMA = ("Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent")
DEPENDENCY = ("Microsoft.Azure.Monitoring.DependencyAgent", "DependencyAgentWindows")
CSE = ("Microsoft.Compute", "CustomScriptExtension")
SECRET = "Browser-pr0tected-7a2c"
WEEK = 7 * 86400


# --- browser ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrowserContext]:
    """One Chromium with a fresh profile for the module; each test gets clean cookies and a new page."""
    assert CHROMIUM is not None
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
            accept_downloads=True,
        )
        context.set_default_timeout(15_000)
        try:
            yield context
        finally:
            context.close()


@pytest.fixture
def page(browser: BrowserContext) -> Iterator[Page]:
    browser.clear_cookies()
    tab = browser.new_page()
    try:
        yield tab
    finally:
        tab.close()


def shot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


def sign_in(page: Page, server: ArcextServer, token: str) -> None:
    page.goto(f"{server.url}/portal/")
    expect(page.get_by_role("heading", name="Sign in to arcext")).to_be_visible()
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Machines - Azure Arc")).to_be_visible()


# --- API helpers --------------------------------------------------------------------------------
def machine(s: requests.Session, server: ArcextServer, name: str, rg: str, location: str = "eastus") -> None:
    r = s.put(
        machine_url(server, name, rg),
        params={"api-version": API},
        json={"location": location, "properties": {"osType": "windows", "osName": "Windows Server 2022"}},
    )
    assert r.status_code == 200, r.text


def extension(
    s: requests.Session,
    server: ArcextServer,
    m: str,
    rg: str,
    name: str,
    handler: tuple[str, str],
    version: str,
    **props: Any,
) -> None:
    body = {
        "location": "eastus",
        "properties": {"publisher": handler[0], "type": handler[1], "typeHandlerVersion": version, **props},
    }
    r = s.put(ext_url(server, name, m, rg), params={"api-version": API}, json=body)
    assert wait_operation(s, r)["status"] == "Succeeded"


def publish(s: requests.Session, server: ArcextServer, handler: tuple[str, str], version: str) -> None:
    r = s.put(f"{server.url}/arcext/v1/catalog/{handler[0]}/{handler[1]}/versions/{version}", json={"critical": False})
    assert r.status_code in (200, 201), r.text


def api_extension(s: requests.Session, server: ArcextServer, m: str, rg: str, name: str) -> dict[str, Any]:
    r = s.get(ext_url(server, name, m, rg), params={"api-version": API})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def rollout_states(s: requests.Session, server: ArcextServer) -> dict[str, str]:
    r = s.get(f"{server.url}/arcext/v1/rollouts")
    assert r.status_code == 200, r.text
    return {f"{x['type']} {x['version']}": x["state"] for x in r.json()["value"]}


# --- the documentation's portal steps -----------------------------------------------------------
def test_the_documentations_steps_enable_and_disable_automatic_upgrade(
    arcext_server: ArcextServer, arcext_session: requests.Session, page: Page
) -> None:
    s, server = arcext_session, arcext_server
    machine(s, server, "arc-server-01", "rg-arc")
    machine(s, server, "arc-server-02", "rg-arc", "westeurope")
    # AMA is pinned (opted out) so the wall-clock engine leaves it alone while 1.1.0 is "available"
    extension(
        s, server, "arc-server-01", "rg-arc", "AzureMonitorWindowsAgent", AMA, "1.0.0", enableAutomaticUpgrade=False
    )
    extension(s, server, "arc-server-01", "rg-arc", "DependencyAgentWindows", DEPENDENCY, "9.10.0")
    extension(s, server, "arc-server-01", "rg-arc", "CustomScriptExtension", CSE, "1.10.3")
    publish(s, server, AMA, "1.1.0")

    # 1. Go to the portal and navigate to Machines - Azure Arc
    sign_in(page, server, server.token)
    shot(page, "01-machines")
    # 2. Select the applicable server
    page.get_by_role("link", name="arc-server-01", exact=True).click()
    expect(page.get_by_role("heading", name="arc-server-01")).to_be_visible()
    # 3. Select the Extensions tab
    page.get_by_role("navigation", name="Machine").get_by_role("link", name="Extensions").click()
    table = page.locator("table#extensions")
    expect(table).to_be_visible()
    headers = [h.strip() for h in table.locator("thead th").all_inner_texts()]
    assert headers[1:7] == ["Name", "Type", "Version", "Status", "Automatic upgrade", "Update available"]

    def row(name: str) -> Any:
        return table.locator(f"tr[data-extension='{name}']")

    # 4. The Automatic upgrade column: enabled, disabled or not supported
    expect(row("AzureMonitorWindowsAgent").locator("td.auto-upgrade")).to_have_text("Disabled")
    expect(row("DependencyAgentWindows").locator("td.auto-upgrade")).to_have_text("Enabled")
    expect(row("CustomScriptExtension").locator("td.auto-upgrade")).to_have_text("Not supported")
    expect(row("AzureMonitorWindowsAgent").locator("td.update-available")).to_have_text("Yes (1.1.0)")
    expect(row("DependencyAgentWindows").locator("td.update-available")).to_have_text("No")
    expect(row("AzureMonitorWindowsAgent").locator("td.status")).to_have_text("Succeeded")
    expect(row("AzureMonitorWindowsAgent").locator("td.type")).to_have_text(".".join(AMA))
    expect(page.get_by_role("note")).to_contain_text("1 extension has an update available")
    shot(page, "02-extensions-before")

    # select extensions, then Disable automatic upgrade
    page.get_by_label("Select DependencyAgentWindows").check()
    page.get_by_label("Select CustomScriptExtension").check()
    page.get_by_role("button", name="Disable automatic upgrade").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Automatic upgrade disabled for CustomScriptExtension, DependencyAgentWindows."
    )
    expect(row("DependencyAgentWindows").locator("td.auto-upgrade")).to_have_text("Disabled")
    expect(row("CustomScriptExtension").locator("td.auto-upgrade")).to_have_text("Not supported")
    for name in ("DependencyAgentWindows", "CustomScriptExtension"):
        assert (
            api_extension(s, server, "arc-server-01", "rg-arc", name)["properties"]["enableAutomaticUpgrade"] is False
        )
    assert (
        api_extension(s, server, "arc-server-01", "rg-arc", "AzureMonitorWindowsAgent")["properties"][
            "enableAutomaticUpgrade"
        ]
        is False
    )

    # select extensions, then Enable automatic upgrade
    page.get_by_label("Select AzureMonitorWindowsAgent").check()
    page.get_by_label("Select DependencyAgentWindows").check()
    page.get_by_role("button", name="Enable automatic upgrade").click()
    expect(page.get_by_role("status")).to_contain_text(
        "Automatic upgrade enabled for AzureMonitorWindowsAgent, DependencyAgentWindows."
    )
    expect(row("AzureMonitorWindowsAgent").locator("td.auto-upgrade")).to_have_text("Enabled")
    expect(row("DependencyAgentWindows").locator("td.auto-upgrade")).to_have_text("Enabled")
    shot(page, "03-extensions-after-enable")
    for name in ("AzureMonitorWindowsAgent", "DependencyAgentWindows"):
        body = api_extension(s, server, "arc-server-01", "rg-arc", name)
        assert body["properties"]["enableAutomaticUpgrade"] is True
        assert body["systemData"]["lastModifiedBy"] == "arcext-test-owner"
    assert (
        api_extension(s, server, "arc-server-01", "rg-arc", "CustomScriptExtension")["properties"][
            "enableAutomaticUpgrade"
        ]
        is False
    )


def test_upgrade_now_installs_the_newest_version_of_the_same_major(
    arcext_server: ArcextServer, arcext_session: requests.Session, page: Page
) -> None:
    s, server = arcext_session, arcext_server
    machine(s, server, "arc-server-01", "rg-arc")
    extension(s, server, "arc-server-01", "rg-arc", "ama", AMA, "1.0.0", enableAutomaticUpgrade=False)
    for version in ("1.1.0", "1.2.0", "2.0.0"):
        publish(s, server, AMA, version)
    alice = server.create_token("Contributor", f"/subscriptions/{SUB}", name="alice@contoso.com")
    sign_in(page, server, alice)
    page.goto(f"{server.url}/portal/subscriptions/{SUB}/resourceGroups/rg-arc/machines/arc-server-01/extensions")
    page.get_by_label("Select ama").check()
    page.get_by_role("button", name="Upgrade now").click()
    expect(page.get_by_role("status")).to_contain_text("Upgraded ama to 1.2.0.")
    expect(page.locator("tr[data-extension='ama'] td.version")).to_have_text("1.2.0")
    body = api_extension(s, server, "arc-server-01", "rg-arc", "ama")
    assert (
        body["properties"]["typeHandlerVersion"] == "1.2.0" and body["properties"]["provisioningState"] == "Succeeded"
    )
    r = s.get(
        f"{server.url}/subscriptions/{SUB}/providers/Microsoft.Insights/eventtypes/management/values",
        params={"api-version": "2015-04-01", "$filter": "eventTimestamp ge '2000-01-01T00:00:00Z'"},
    )
    assert {e["caller"] for e in r.json()["value"]} == {"alice@contoso.com"}


# --- activity log ---------------------------------------------------------------------------------
@pytest.fixture
def manual(manual_server: ArcextServer) -> ArcextServer:
    manual_server.reset()
    return manual_server


@pytest.fixture
def ms(manual: ArcextServer) -> Iterator[requests.Session]:
    with manual.session() as session:
        yield session


def admin(s: requests.Session, server: ArcextServer, path: str, body: dict[str, Any] | None = None) -> Any:
    r = s.post(f"{server.url}/arcext/v1/{path}", json=body)
    assert r.status_code == 200, r.text
    return r.json()


def test_activity_log_filters_event_detail_and_csv(manual: ArcextServer, ms: requests.Session, page: Page) -> None:
    s, server = ms, manual
    for name, rg in (("web-01", "rg-web"), ("web-02", "rg-web"), ("db-01", "rg-data")):
        machine(s, server, name, rg)
        extension(s, server, name, rg, "AzureMonitorWindowsAgent", AMA, "1.0.0")
    publish(s, server, AMA, "1.1.0")
    admin(s, server, "clock/advance", {"seconds": 8 * WEEK})
    admin(s, server, "engine/run")  # three automatic upgrades: 6 events by Azure Regional Service Manager
    publish(s, server, AMA, "1.2.0")
    alice = server.create_token("Contributor", f"/subscriptions/{SUB}", name="alice@contoso.com")
    with server.session(alice) as user:
        r = user.post(
            f"{machine_url(server, 'web-01', 'rg-web')}/upgradeExtensions",
            params={"api-version": API},
            json={"extensionTargets": {".".join(AMA): {"targetVersion": "1.2.0"}}},
        )
        assert wait_operation(user, r)["status"] == "Succeeded"  # 2 events by alice

    sign_in(page, server, server.token)
    page.get_by_role("navigation", name="Portal").get_by_role("link", name="Activity log").click()
    count = page.locator("#result-count")
    expect(count).to_contain_text("8 events")
    # Add filter → Operation = "Upgrade Extensions on Azure Arc machines"; Event initiated by = the service
    page.get_by_label("Operation").select_option(label=f"Upgrade Extensions on Azure Arc machines ({OPERATION})")
    page.get_by_label("Event initiated by").fill(AUTO)
    page.get_by_role("button", name="Apply").click()
    expect(count).to_contain_text("6 events")
    assert set(page.locator("#events td.caller").all_inner_texts()) == {AUTO}
    shot(page, "04-activity-log-automatic")

    # resource group
    page.get_by_label("Resource group").fill("rg-data")
    page.get_by_role("button", name="Apply").click()
    expect(count).to_contain_text("2 events")
    page.get_by_label("Resource group").fill("")
    page.get_by_role("button", name="Apply").click()
    expect(count).to_contain_text("6 events")

    # Download as CSV (the filters apply)
    with page.expect_download() as info:
        page.get_by_role("link", name="Download as CSV").click()
    download = info.value
    assert download.suggested_filename.startswith("ActivityLog-") and download.suggested_filename.endswith(".csv")
    rows = list(csv.DictReader(io.StringIO(Path(download.path()).read_text(encoding="utf-8-sig"))))
    assert len(rows) == 6
    assert {row["Event initiated by"] for row in rows} == {AUTO}
    assert {row["Operation name"] for row in rows} == {"Upgrade Extensions on Azure Arc machines"}
    assert {row["Status"] for row in rows} == {"Started", "Succeeded"}
    assert {row["To version"] for row in rows} == {"1.1.0"}
    assert {row["Resource group"] for row in rows} == {"rg-web", "rg-data"}

    # the manual attempt carries the user
    page.get_by_label("Event initiated by").fill("alice@contoso.com")
    page.get_by_role("button", name="Apply").click()
    expect(count).to_contain_text("2 events")
    assert set(page.locator("#events td.caller").all_inner_texts()) == {"alice@contoso.com"}

    # the detail of one event
    page.get_by_label("Event initiated by").fill(AUTO)
    page.get_by_label("Status").select_option("Succeeded")
    page.get_by_role("button", name="Apply").click()
    expect(count).to_contain_text("3 events")
    page.locator("#events tbody tr").first.get_by_role("link").click()
    expect(page.get_by_role("heading", name="Upgrade Extensions on Azure Arc machines")).to_be_visible()
    facts = page.locator("dl.facts").first
    expect(facts).to_contain_text(AUTO)
    expect(facts).to_contain_text(OPERATION)
    expect(page.locator("dl.facts").nth(1)).to_contain_text("1.1.0")
    expect(page.get_by_role("heading", name="Other events of this operation")).to_be_visible()
    shot(page, "05-activity-event")

    # the time span follows the server's clock
    admin(s, server, "clock/advance", {"seconds": 2 * 3600})
    page.goto(f"{server.url}/portal/activity?timespan=1h")
    expect(count).to_contain_text("0 events")
    page.get_by_label("Timespan").select_option(label="Last 24 hours")
    page.get_by_role("button", name="Apply").click()
    expect(count).to_contain_text("8 events")


# --- rollouts -------------------------------------------------------------------------------------
def test_rollouts_show_phases_and_frozen_versions_and_pause_and_resume(
    manual: ArcextServer, ms: requests.Session, page: Page
) -> None:
    s, server = ms, manual
    for i in range(12):
        name = f"vm{i:02d}"
        machine(s, server, name, "rg-fleet", "eastus" if i < 10 else "westeurope")
        extension(s, server, name, "rg-fleet", "DependencyAgentWindows", DEPENDENCY, "9.10.0")
        extension(s, server, name, "rg-fleet", "AzureMonitorWindowsAgent", AMA, "1.0.0")
        r = s.put(f"{server.url}/arcext/v1/simulated-hosts/{name}/faults", json={"failUpgrade": 1})
        assert r.status_code == 200, r.text
    publish(s, server, DEPENDENCY, "9.11.0")
    admin(s, server, "clock/advance", {"seconds": 8 * WEEK})
    # every upgrade fails and rolls back: the first batch (2 of eastus's 10) trips the circuit breaker
    admin(s, server, "engine/run")
    for i in range(12):
        assert s.put(f"{server.url}/arcext/v1/simulated-hosts/vm{i:02d}/faults", json={}).status_code == 200
    publish(s, server, AMA, "1.1.0")
    assert rollout_states(s, server) == {
        "DependencyAgentWindows 9.11.0": "Frozen",
        "AzureMonitorWindowsAgent 1.1.0": "Active",
    }

    sign_in(page, server, server.token)
    page.get_by_role("link", name="Rollouts").click()
    frozen = page.get_by_role("region", name="Frozen versions")
    expect(frozen).to_contain_text(f"{'.'.join(DEPENDENCY)} 9.11.0")
    expect(frozen).to_contain_text("Circuit breaker")
    ama = page.locator("section.rollout", has_text=f"{'.'.join(AMA)} 1.1.0")
    expect(ama.locator(".rollout-state")).to_have_text("Active")
    expect(ama.locator("table")).to_contain_text("eastus")
    expect(ama.locator("table")).to_contain_text("westeurope")
    shot(page, "06-rollouts")

    ama.get_by_role("button", name="Pause rollout of AzureMonitorWindowsAgent 1.1.0").click()
    expect(page.get_by_role("status")).to_contain_text("Rollout of AzureMonitorWindowsAgent 1.1.0 is now paused.")
    expect(ama.locator(".rollout-state")).to_have_text("Paused")
    assert rollout_states(s, server)["AzureMonitorWindowsAgent 1.1.0"] == "Paused"
    admin(s, server, "clock/advance", {"seconds": 8 * WEEK})
    assert admin(s, server, "engine/run")["dispatched"] == 0  # a paused rollout upgrades nothing
    shot(page, "07-rollout-paused")

    ama.get_by_role("button", name="Resume rollout of AzureMonitorWindowsAgent 1.1.0").click()
    expect(ama.locator(".rollout-state")).to_have_text("Active")
    assert rollout_states(s, server)["AzureMonitorWindowsAgent 1.1.0"] == "Active"
    page.locator("section.rollout", has_text=f"{'.'.join(DEPENDENCY)} 9.11.0").get_by_role(
        "button", name="Resume"
    ).click()
    expect(page.get_by_role("status")).to_contain_text("DependencyAgentWindows 9.11.0 is now active")
    admin(s, server, "engine/run")
    assert rollout_states(s, server) == {
        "DependencyAgentWindows 9.11.0": "Completed",
        "AzureMonitorWindowsAgent 1.1.0": "Completed",
    }


# --- who may do what ---------------------------------------------------------------------------
def test_a_reader_sees_no_buttons_and_forged_posts_are_refused(
    arcext_server: ArcextServer, arcext_session: requests.Session, page: Page
) -> None:
    s, server = arcext_session, arcext_server
    machine(s, server, "arc-server-01", "rg-arc")
    extension(s, server, "arc-server-01", "rg-arc", "ama", AMA, "1.0.0")
    reader = server.create_token("Reader", f"/subscriptions/{SUB}", name="auditor@contoso.com")
    sign_in(page, server, reader)
    url = f"{server.url}/portal/subscriptions/{SUB}/resourceGroups/rg-arc/machines/arc-server-01/extensions"
    page.goto(url)
    expect(page.locator("tr[data-extension='ama'] td.auto-upgrade")).to_have_text("Enabled")
    for name in ("Enable automatic upgrade", "Disable automatic upgrade", "Upgrade now"):
        expect(page.get_by_role("button", name=name)).to_have_count(0)
    expect(page.get_by_role("checkbox")).to_have_count(0)
    expect(page.get_by_role("link", name="Rollouts")).to_have_count(0)
    shot(page, "08-reader-extensions")

    # a POST without the session's CSRF token (as a cross-site form would send it) is refused ...
    forged = page.request.post(url, form={"action": "disable", "extension": "ama"}, max_redirects=0)
    assert forged.status == 400 and "security token (CSRF)" in forged.text()
    # ... and a Reader's well-formed POST is refused too
    csrf = page.locator("input[name=csrf_token]").first.get_attribute("value")
    assert csrf
    refused = page.request.post(
        url, form={"action": "disable", "extension": "ama", "csrf_token": csrf}, max_redirects=0
    )
    assert refused.status == 403 and "auditor@contoso.com" in refused.text()
    forged.dispose()
    refused.dispose()
    assert api_extension(s, server, "arc-server-01", "rg-arc", "ama")["properties"]["enableAutomaticUpgrade"] is True

    # the same forged POST from an Owner's browser is refused as well
    page.get_by_role("button", name="Sign out").click()
    sign_in(page, server, server.token)
    forged = page.request.post(url, form={"action": "disable", "extension": "ama"}, max_redirects=0)
    assert forged.status == 400
    forged.dispose()
    assert api_extension(s, server, "arc-server-01", "rg-arc", "ama")["properties"]["enableAutomaticUpgrade"] is True


def test_no_page_shows_a_protected_setting(
    arcext_server: ArcextServer, arcext_session: requests.Session, page: Page
) -> None:
    s, server = arcext_session, arcext_server
    machine(s, server, "arc-server-01", "rg-arc")
    extension(
        s,
        server,
        "arc-server-01",
        "rg-arc",
        "ama",
        AMA,
        "1.0.0",
        enableAutomaticUpgrade=False,
        settings={"workspaceId": "ws-1"},
        protectedSettings={"workspaceKey": SECRET},
    )
    publish(s, server, AMA, "1.1.0")
    sign_in(page, server, server.token)
    base = f"{server.url}/portal/subscriptions/{SUB}/resourceGroups/rg-arc/machines/arc-server-01"
    page.goto(f"{base}/extensions")
    page.get_by_label("Select ama").check()
    page.get_by_role("button", name="Upgrade now").click()
    expect(page.get_by_role("status")).to_contain_text("Upgraded ama to 1.1.0.")
    visited = []
    for path in (f"{base}", f"{base}/extensions", "/portal/machines", "/portal/rollouts", "/portal/activity"):
        page.goto(path if path.startswith("http") else f"{server.url}{path}")
        visited.append(page.content())
    hrefs = [link.get_attribute("href") for link in page.locator("#events a").all()]
    for href in hrefs:
        assert href
        page.goto(f"{server.url}{href}")
        visited.append(page.content())
    assert len(visited) == 7
    for html in visited:
        assert SECRET not in html and "protectedSettings" not in html and "workspaceKey" not in html
