"""The portal through Flask's test client (fast): sign-in and sessions, CSRF, roles and scopes, secrets.

The browser tests (test_portal.py) walk the Arc documentation's steps; these cover the edge cases.
"""

from __future__ import annotations

import csv
import io
import re
import stat
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from flask.testing import FlaskClient

from arcext.portal.security import SECRET_FILE
from arcext.testing import ArcextServer
from conftest import API, SUB, ext_url, put_extension, put_machine, wait_operation

OTHER_SUB = "11111111-1111-1111-1111-111111111111"
AMA = {"publisher": "Microsoft.Azure.Monitor", "type": "AzureMonitorWindowsAgent"}
SECRET = "pr0tected-Portal-Value-91c"
MACHINE = f"/portal/subscriptions/{SUB}/resourceGroups/rg1/machines/m1"


class Portal:
    """A browser-less portal user: a test client that signs in and sends the session's CSRF token."""

    def __init__(self, server: ArcextServer) -> None:
        assert server.app is not None
        self.app = server.app
        self.client: FlaskClient = server.app.test_client()

    def csrf(self) -> str:
        with self.client.session_transaction("/portal/") as sess:
            token = sess.get("csrf")
        if not token:
            self.client.get("/portal/signin")
            with self.client.session_transaction("/portal/") as sess:
                token = sess["csrf"]
        assert isinstance(token, str)
        return token

    def sign_in(self, token: str) -> Portal:
        r = self.client.post("/portal/signin", data={"token": token, "csrf_token": self.csrf()})
        assert r.status_code == 303, r.text
        return self

    def get(self, path: str, **kw: Any) -> Any:
        return self.client.get(path, **kw)

    def post(self, path: str, data: dict[str, Any] | None = None, csrf: bool = True) -> Any:
        body = dict(data or {})
        if csrf:
            body["csrf_token"] = self.csrf()
        return self.client.post(path, data=body)


def flashes(html: str) -> list[str]:
    return re.findall(r'class="flash flash-\w+"[^>]*>([^<]+)<', html)


def extension(s: requests.Session, server: ArcextServer, name: str, version: str, **props: Any) -> None:
    put_extension(s, server, name, properties={**AMA, "typeHandlerVersion": version, **props})


def publish(s: requests.Session, server: ArcextServer, version: str, publisher: str = AMA["publisher"]) -> None:
    r = s.put(f"{server.url}/arcext/v1/catalog/{publisher}/{AMA['type']}/versions/{version}", json={"critical": False})
    assert r.status_code in (200, 201), r.text


def api_ext(s: requests.Session, server: ArcextServer, name: str, machine: str = "m1") -> dict[str, Any]:
    r = s.get(ext_url(server, name, machine), params={"api-version": API})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture
def fleet(arcext_server: ArcextServer, arcext_session: requests.Session) -> Iterator[ArcextServer]:
    """m1 in rg1 (AMA 1.0.0 with protectedSettings, a CustomScriptExtension) and m2 in rg2."""
    put_machine(arcext_session, arcext_server, "m1", "rg1")
    put_machine(arcext_session, arcext_server, "m2", "rg2")
    extension(arcext_session, arcext_server, "ama", "1.0.0", protectedSettings={"workspaceKey": SECRET})
    put_extension(arcext_session, arcext_server, "cse")
    yield arcext_server


# --- sessions -----------------------------------------------------------------------------------
def test_pages_need_a_signed_in_token_and_come_back_after_sign_in(fleet: ArcextServer) -> None:
    portal = Portal(fleet)
    r = portal.get(f"{MACHINE}/extensions")
    assert r.status_code == 303 and r.headers["Location"].startswith("/portal/signin?next=")
    r = portal.post("/portal/signin", {"token": "arcext_not-a-token", "next": f"{MACHINE}/extensions"})
    assert r.status_code == 401 and "not valid or has been revoked" in r.text
    r = portal.post("/portal/signin", {"token": f"  Bearer {fleet.token} ", "next": f"{MACHINE}/extensions"})
    assert r.status_code == 303 and r.headers["Location"] == f"{MACHINE}/extensions"
    assert "arcext-test-owner" in portal.get(r.headers["Location"]).text


def test_the_session_cookie_holds_a_reference_never_the_token(fleet: ArcextServer) -> None:
    portal = Portal(fleet).sign_in(fleet.token)
    cookie = portal.client.get_cookie("arcext_portal", path="/portal")
    assert cookie is not None
    assert fleet.token not in cookie.value and fleet.token.split("_", 1)[1] not in cookie.value
    data = portal.app.session_interface.get_signing_serializer(portal.app).loads(cookie.value)  # type: ignore[attr-defined]
    assert set(data) <= {"sid", "tid", "ref", "csrf", "_permanent", "_flashes"}
    assert fleet.token not in repr(data)
    r = portal.get("/portal/machines")
    set_cookie = r.headers.get("Set-Cookie") or ""
    if set_cookie:
        assert "HttpOnly" in set_cookie and "SameSite=Lax" in set_cookie and "Path=/portal" in set_cookie


@pytest.mark.embedded_store("on PostgreSQL the key is in the database: tests/test_portal_sessions.py")
def test_the_signing_key_lives_in_the_data_dir_with_mode_0600(fleet: ArcextServer) -> None:
    path = fleet.data_dir / SECRET_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert fleet.app is not None and fleet.app.secret_key == path.read_text().strip()
    assert len(path.read_text().strip()) >= 64


def test_a_revoked_token_signs_its_sessions_out(fleet: ArcextServer) -> None:
    token, record = fleet.services.tokens.create(
        fleet.services.tokens.authenticate(f"Bearer {fleet.token}").role, "/", "short-lived", fleet.services.clock.now()
    )
    portal = Portal(fleet).sign_in(token)
    assert portal.get("/portal/machines").status_code == 200
    assert fleet.services.tokens.revoke(record["id"])
    r = portal.get("/portal/machines")
    assert r.status_code == 303 and r.headers["Location"].startswith("/portal/signin")


def test_sign_out_ends_the_session(fleet: ArcextServer) -> None:
    portal = Portal(fleet).sign_in(fleet.token)
    r = portal.post("/portal/signout")
    assert r.status_code == 303
    assert portal.get("/portal/machines").status_code == 303


@pytest.mark.parametrize(
    "target", ["https://evil.example/", "//evil.example/portal/", "/portal\\..\\x", "/arcext/v1/x"]
)
def test_next_never_leaves_the_portal(fleet: ArcextServer, target: str) -> None:
    portal = Portal(fleet)
    r = portal.post("/portal/signin", {"token": fleet.token, "next": target})
    assert r.status_code == 303 and r.headers["Location"] == "/portal/machines"


# --- CSRF ---------------------------------------------------------------------------------------
def test_every_post_without_the_sessions_csrf_token_is_refused(
    fleet: ArcextServer, arcext_session: requests.Session
) -> None:
    portal = Portal(fleet).sign_in(fleet.token)
    posts = [
        (f"{MACHINE}/extensions", {"action": "disable", "extension": "ama"}),
        (f"{MACHINE}/extensions", {"action": "upgrade", "extension": "ama"}),
        ("/portal/rollouts/x/pause", {}),
        ("/portal/signout", {}),
        ("/portal/signin", {"token": fleet.token}),
    ]
    other = Portal(fleet).sign_in(fleet.token)
    for path, data in posts:
        for forged in (dict(data), {**data, "csrf_token": ""}, {**data, "csrf_token": other.csrf()}):
            r = portal.client.post(path, data=forged)
            assert r.status_code == 400, (path, forged)
            assert "security token (CSRF)" in r.text and "Nothing was changed" in r.text
    assert api_ext(arcext_session, fleet, "ama")["properties"]["enableAutomaticUpgrade"] is True
    assert portal.get("/portal/machines").status_code == 200, "still signed in: the forged sign-out did nothing"


def test_sign_in_starts_a_new_csrf_token(fleet: ArcextServer) -> None:
    portal = Portal(fleet)
    before = portal.csrf()
    portal.sign_in(fleet.token)
    assert portal.csrf() != before


# --- roles and scopes -------------------------------------------------------------------------
def test_a_reader_sees_no_buttons_and_a_post_is_refused(fleet: ArcextServer, arcext_session: requests.Session) -> None:
    reader = fleet.create_token("Reader", f"/subscriptions/{SUB}", name="auditor@contoso.com")
    portal = Portal(fleet).sign_in(reader)
    page = portal.get(f"{MACHINE}/extensions")
    assert page.status_code == 200
    assert "ama" in page.text and "Enabled" in page.text
    for button in ("Enable automatic upgrade", "Disable automatic upgrade", "Upgrade now", 'type="checkbox"'):
        assert button not in page.text
    assert "can view these extensions but not change them" in page.text
    for action in ("enable", "disable", "upgrade"):
        r = portal.post(f"{MACHINE}/extensions", {"action": action, "extension": "ama"})
        assert r.status_code == 403 and "auditor@contoso.com" in r.text
    assert api_ext(arcext_session, fleet, "ama")["properties"]["enableAutomaticUpgrade"] is True
    rollouts = portal.get("/portal/rollouts")
    assert rollouts.status_code == 403 and "Pause" not in rollouts.text
    assert portal.post("/portal/rollouts/x/pause").status_code == 403
    assert 'href="/portal/rollouts"' not in portal.get("/portal/machines").text


def test_a_contributor_changes_extensions_but_not_rollouts(
    fleet: ArcextServer, arcext_session: requests.Session
) -> None:
    contributor = fleet.create_token("Contributor", f"/subscriptions/{SUB}/resourceGroups/rg1", name="ops")
    portal = Portal(fleet).sign_in(contributor)
    assert "Disable automatic upgrade" in portal.get(f"{MACHINE}/extensions").text
    r = portal.post(f"{MACHINE}/extensions", {"action": "disable", "extension": ["ama", "cse"]})
    assert r.status_code == 303
    assert any("Automatic upgrade disabled for" in m for m in flashes(portal.get(r.headers["Location"]).text))
    assert api_ext(arcext_session, fleet, "ama")["properties"]["enableAutomaticUpgrade"] is False
    assert api_ext(arcext_session, fleet, "cse")["properties"]["enableAutomaticUpgrade"] is False
    assert api_ext(arcext_session, fleet, "ama")["systemData"]["lastModifiedBy"] == "ops"
    assert portal.get("/portal/rollouts").status_code == 403


def test_a_resource_group_token_sees_only_its_group(fleet: ArcextServer) -> None:
    scoped = fleet.create_token("Owner", f"/subscriptions/{SUB}/resourceGroups/rg1")
    portal = Portal(fleet).sign_in(scoped)
    listing = portal.get("/portal/machines").text
    assert ">m1</a>" in listing and ">m2</a>" not in listing
    assert ">m2</a>" not in portal.get("/portal/machines?resourceGroup=rg2").text  # the token's group wins
    r = portal.get(f"/portal/subscriptions/{SUB}/resourceGroups/rg2/machines/m2")
    assert r.status_code == 403 and "does not have authorization" in r.text
    assert portal.get(f"/portal/machines?subscription={OTHER_SUB}").status_code == 403
    assert portal.get(f"/portal/activity?subscription={OTHER_SUB}").status_code == 403


def test_the_activity_log_shows_only_events_inside_the_tokens_scope(
    fleet: ArcextServer, arcext_session: requests.Session
) -> None:
    s = arcext_session
    manual_only = {"enableAutomaticUpgrade": False}  # the wall-clock engine must not add automatic attempts
    extension(s, fleet, "ama", "1.0.0", **manual_only)
    props = {**AMA, "typeHandlerVersion": "1.0.0", **manual_only}
    r = s.put(
        ext_url(fleet, "ama2", "m2", "rg2"),
        params={"api-version": API},
        json={"location": "eastus", "properties": props},
    )
    wait_operation(s, r)
    publish(s, fleet, "1.1.0")
    for machine, rg in (("m1", "rg1"), ("m2", "rg2")):
        r = s.post(
            f"{fleet.url}/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.HybridCompute/machines/{machine}/upgradeExtensions",
            params={"api-version": API},
            json={"extensionTargets": {f"{AMA['publisher']}.{AMA['type']}": {"targetVersion": "1.1.0"}}},
        )
        assert wait_operation(s, r)["status"] == "Succeeded"
    everyone = Portal(fleet).sign_in(fleet.token).get("/portal/activity").text
    assert "4 events" in everyone and "m2/ama2" in everyone
    scoped = fleet.create_token("Reader", f"/subscriptions/{SUB}/resourceGroups/rg1")
    portal = Portal(fleet).sign_in(scoped)
    page = portal.get("/portal/activity").text
    assert "2 events" in page and "m1/ama" in page and "m2/ama2" not in page
    rows = list(csv.reader(io.StringIO(portal.get("/portal/activity/download.csv").get_data(as_text=True))))
    assert len(rows) == 3 and all(row[9] == "rg1" for row in rows[1:])
    hidden = re.search(r'/portal/activity/events/([0-9a-f-]+)\?subscription=[0-9a-f-]+">[^<]*</a>', everyone)
    assert hidden
    ids = re.findall(r"/portal/activity/events/([0-9a-f-]+)\?", everyone)
    visible = set(re.findall(r"/portal/activity/events/([0-9a-f-]+)\?", page))
    for event_id in ids:
        r = portal.get(f"/portal/activity/events/{event_id}?subscription={SUB}")
        assert r.status_code == (200 if event_id in visible else 404)


# --- actions ----------------------------------------------------------------------------------
def test_upgrade_now_installs_the_newest_version_of_the_same_major_as_the_user(
    fleet: ArcextServer, arcext_session: requests.Session
) -> None:
    s = arcext_session
    extension(s, fleet, "ama", "1.0.0", enableAutomaticUpgrade=False)  # only the user upgrades it
    publish(s, fleet, "1.1.0")
    publish(s, fleet, "1.2.0")
    publish(s, fleet, "2.0.0")
    alice = fleet.create_token("Contributor", f"/subscriptions/{SUB}", name="alice@contoso.com")
    portal = Portal(fleet).sign_in(alice)
    page = portal.get(f"{MACHINE}/extensions").text
    assert "has an update available" in page
    r = portal.post(f"{MACHINE}/extensions", {"action": "upgrade", "extension": ["ama", "cse"]})
    messages = flashes(portal.get(r.headers["Location"]).text)
    assert "Upgraded ama to 1.2.0." in messages
    assert any(m.startswith("cse already runs the newest 1.x version") for m in messages)
    assert api_ext(s, fleet, "ama")["properties"]["typeHandlerVersion"] == "1.2.0"
    events = portal.get("/portal/activity?caller=alice@contoso.com").text
    assert "2 events" in events and "1.0.0 → 1.2.0" in events
    again = portal.post(f"{MACHINE}/extensions", {"action": "upgrade", "extension": "ama"})
    assert any("2.0.0 is a new major version" in m for m in flashes(portal.get(again.headers["Location"]).text))


def test_bad_actions_and_unknown_extensions_are_400(fleet: ArcextServer) -> None:
    portal = Portal(fleet).sign_in(fleet.token)
    assert portal.post(f"{MACHINE}/extensions", {"action": "delete", "extension": "ama"}).status_code == 400
    r = portal.post(f"{MACHINE}/extensions", {"action": "enable", "extension": "nope"})
    assert r.status_code == 400 and "no extension named nope" in r.text
    r = portal.post(f"{MACHINE}/extensions", {"action": "enable"})
    assert "Select one or more extensions first." in flashes(portal.get(r.headers["Location"]).text)
    assert portal.get(f"/portal/subscriptions/{SUB}/resourceGroups/rg1/machines/ghost").status_code == 404
    assert portal.get("/portal/machines?subscription=not-a-guid").status_code == 400
    assert portal.get("/portal/activity?timespan=forever").status_code == 400
    assert portal.get("/portal/activity?timespan=custom&start=yesterday").status_code == 400
    assert portal.post("/portal/rollouts/nope/pause").status_code == 404
    assert portal.post("/portal/rollouts/nope/explode").status_code == 400
    missing = portal.get("/portal/no/such/page")
    assert missing.status_code == 404 and "There is no portal page at /portal/no/such/page." in missing.text
    css = portal.get("/portal/static/portal.css")
    assert css.status_code == 200
    css.close()


def test_enable_reports_extensions_already_enabled(fleet: ArcextServer) -> None:
    portal = Portal(fleet).sign_in(fleet.token)
    r = portal.post(f"{MACHINE}/extensions", {"action": "enable", "extension": "ama"})
    assert "Automatic upgrade was already enabled for ama." in flashes(portal.get(r.headers["Location"]).text)


# --- what pages never show ------------------------------------------------------------------------
def test_no_page_shows_a_protected_setting(fleet: ArcextServer, arcext_session: requests.Session) -> None:
    s = arcext_session
    extension(s, fleet, "ama", "1.0.0", enableAutomaticUpgrade=False)  # keeps its protectedSettings; only we upgrade
    publish(s, fleet, "1.1.0")
    portal = Portal(fleet).sign_in(fleet.token)
    r = portal.post(f"{MACHINE}/extensions", {"action": "upgrade", "extension": "ama"})
    assert "Upgraded ama to 1.1.0." in flashes(portal.get(r.headers["Location"]).text)
    pages = [
        "/portal/machines",
        MACHINE,
        f"{MACHINE}/extensions",
        "/portal/rollouts",
        "/portal/activity",
        "/portal/activity?timespan=90d",
        "/portal/activity/download.csv?timespan=90d",
    ]
    activity = portal.get("/portal/activity").text
    pages += [
        f"/portal/activity/events/{i}?subscription={SUB}"
        for i in re.findall(r"/activity/events/([0-9a-f-]+)", activity)
    ]
    assert len(pages) > 8
    for path in pages:
        r = portal.get(path)
        assert r.status_code == 200, path
        body = r.get_data(as_text=True)
        assert SECRET not in body and "protectedSettings" not in body, path
        assert "workspaceKey" not in body, path


def test_pages_send_security_headers_and_are_not_cached(fleet: ArcextServer) -> None:
    portal = Portal(fleet).sign_in(fleet.token)
    r = portal.get(f"{MACHINE}/extensions")
    assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
    assert "script-src" not in r.headers["Content-Security-Policy"]  # default-src 'none': no script at all
    assert r.headers["X-Frame-Options"] == "DENY" and r.headers["Cache-Control"] == "no-store"
    css = portal.get("/portal/static/portal.css")
    assert css.status_code == 200 and "text/css" in css.headers["Content-Type"]
    css.close()
    assert "https://" not in portal.get("/portal/machines").text.split("<main", 1)[0], "no external resources"


def test_csv_cells_cannot_run_as_spreadsheet_formulas(fleet: ArcextServer, arcext_session: requests.Session) -> None:
    extension(arcext_session, fleet, "ama", "1.0.0", enableAutomaticUpgrade=False)
    publish(arcext_session, fleet, "1.1.0")
    mallory = fleet.create_token("Contributor", f"/subscriptions/{SUB}", name='=HYPERLINK("http://x")')
    portal = Portal(fleet).sign_in(mallory)
    portal.post(f"{MACHINE}/extensions", {"action": "upgrade", "extension": "ama"})
    body = portal.get("/portal/activity/download.csv").get_data(as_text=True)
    rows = list(csv.DictReader(io.StringIO(body.lstrip("\ufeff"))))
    assert rows and all(row["Event initiated by"] == '\'=HYPERLINK("http://x")' for row in rows)
    assert {row["To version"] for row in rows} == {"1.1.0"}
