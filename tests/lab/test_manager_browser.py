"""natt-manager in a real browser: headless chromium (Debian's, driven by Selenium) in the lab's server namespace.

The lab runs the seed scenario; natt-manager runs in the concentrator's namespace on its private address
(192.168.2.251:8443) and the browser, like the seed operator's, sits on the private LAN (192.168.2.10). Both
clients keep pinging the server, so their byte counts grow while the pages are open.

The pages, in the order an operator uses them: the login refuses a wrong password; Sessions lists both lab users
with IPsec/NAT-T and byte counts that grow while the page stays open (the 2 s polling); a user's detail page
shows the SPIs the concentrator reports; the event log filters by class, severity and client address and tails
new entries; Statistics and NAT Transparency show the concentrator's counters and switches; a Logout without its
CSRF token is refused; Logout of vpnclient1 ends that session (its client sees it end) and leaves vpnclient2
alone; after the idle timeout the session is refused. A screenshot of each page goes to tests/artifacts/manager/
and, with NATT_UPDATE_SCREENSHOTS=1, copied to docs/screenshots/ for the README.

Then the seed's failure case: the lab with NAT Transparency off. Sessions shows `IPSec` with 0 bytes received
and says why (client behind PAT, NAT-T off, ESP cannot cross the PAT); one click on the switch turns NAT-T on (the
concentrator edits its config and reloads); the clients reconnect and traffic passes, as IPsec/NAT-T.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natt_daemons.common.control import call
from natt_daemons.lab import manager, procs, scenario
from natt_daemons.lab.scenario import Scenario, ScenarioConfig
from natt_daemons.lab.topology import ADDR, SERVER
from tests.lab.browser import Browser, missing
from tests.lab.test_nat_rebinding import PingStream

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
    pytest.mark.skipif(missing() is not None, reason=str(missing())),
]
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts" / "manager"
SCREENSHOTS = ROOT / "docs" / "screenshots"
IDLE_TIMEOUT = 30  # the manager's idle_timeout in this lab (the shortest it accepts): the expiry check waits it out
USERS = ("vpnclient1", "vpnclient2")
ADMIN, PASSWORD = manager.LAB_ADMIN


def shot(browser: Browser, name: str) -> None:
    """A screenshot as a test artifact; with NATT_UPDATE_SCREENSHOTS=1 also the README's copy (a test run does not
    rewrite tracked files by default)."""
    path = ARTIFACTS / f"{name}.png"
    browser.screenshot(path)
    if os.environ.get("NATT_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, SCREENSHOTS / f"{name}.png")


def number(text: str) -> int:
    return int(text.replace(",", "").strip())


def log_in(browser: Browser, password: str = PASSWORD) -> None:
    browser.get(manager.url() + "login")
    browser.type("#login", ADMIN)
    browser.type("#password", password)
    browser.follow("#login-submit")


def bytes_rx(browser: Browser, user: str) -> int:
    return number(browser.text(f"#row-{user} .bytes-rx"))


class Lab:
    """One lab with the manager, pings from both clients and a browser in the server namespace."""

    def __init__(self, sc: Scenario, tag: str) -> None:
        self.sc = sc
        self.url = manager.start(sc, idle_timeout=str(IDLE_TIMEOUT))
        self.pings = {name: PingStream(sc, name, 3000) for name in ("client1", "client2")}
        self.browser = Browser(sc.lab.ns(SERVER), ARTIFACTS / f"browser-{tag}.log", reach=[ADDR.conc_private])

    def close(self) -> None:
        self.browser.close()
        for p in self.pings.values():
            p.stop()

    def conc(self, cmd: str, args: dict | None = None) -> object:
        return call(self.sc.socket("concentrator"), cmd, args)

    def manager_log(self) -> str:
        return self.sc.procs["manager"].log()


@pytest.fixture(scope="class")
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    nat_t = request.cls.NAT_TRAVERSAL
    with scenario.seed_lab("mb", config=ScenarioConfig(nat_traversal=nat_t)) as sc:
        lab = Lab(sc, "natt-on" if nat_t else "natt-off")
        try:
            yield lab
        finally:
            lab.close()


class TestManagerPages:
    NAT_TRAVERSAL = True

    def test_wrong_password_is_refused(self, lab: Lab) -> None:
        b = lab.browser
        b.get(lab.url + "login")
        shot(b, "login")
        log_in(b, password="not the password")
        assert b.url().endswith("/login")
        assert "Login failed" in b.text("#login-message")
        assert not [c for c in b.cookies() if c["name"] == "__Host-natt_session"]
        assert "login failed for 'admin' from 192.168.2.10" in lab.manager_log()
        assert "not the password" not in lab.manager_log()

    def test_sessions_show_both_users_with_nat_t_and_growing_bytes(self, lab: Lab) -> None:
        b = lab.browser
        for p in lab.pings.values():
            p.wait_replies(3, 20.0)
        log_in(b)
        assert b.url().endswith("/sessions")
        [cookie] = [c for c in b.cookies() if c["name"] == "__Host-natt_session"]
        assert cookie["httpOnly"] and cookie["secure"] and cookie["sameSite"] == "Strict"
        for user in USERS:
            row = b.text(f"#row-{user}")
            assert "IPsec/NAT-T" in row and "ciscovpn" in row and "203.0.113.78" in row, row
        before = {u: bytes_rx(b, u) for u in USERS}
        # No reload: the page's own polling (every 2 s) must bring the new counts.
        procs.wait_for(lambda: all(bytes_rx(b, u) > before[u] for u in USERS), 15.0, 0.5,
                       "byte counts growing on the open Sessions page")
        assert b.text("#summary-active_remote_access") == "2"
        assert b.text("#summary-active_management") == "1"
        shot(b, "sessions")

    def test_detail_page_shows_the_concentrators_sas(self, lab: Lab) -> None:
        b = lab.browser
        b.get(lab.url + "sessions")
        b.follow("#row-vpnclient1 a.detail-link")
        assert b.url().endswith("/sessions/vpnclient1")
        text = b.text("main")
        [detail] = lab.conc("session", {"user": "vpnclient1"})
        for sa in detail["ipsec"]:
            assert sa["inbound_spi"] in text and sa["outbound_spi"] in text
        for expected in ("IKE Session", "Aggressive", "Pre-Shared Keys (XAUTH)", "IPsec/NAT-T Session 1",
                         "UDP Destination Port 4500", "Remaining Lifetime", "Encapsulation Mode Tunnel"):
            assert expected in text, expected
        shot(b, "session-detail")

    def test_event_log_filters_and_tails(self, lab: Lab) -> None:
        b = lab.browser
        b.follow("#nav-log")
        b.js("document.querySelectorAll('input[name=class]').forEach(function (c) { c.checked = false; });")
        b.click("input[name=class][value=IKE]")
        b.click("input[name=class][value=IPSECDBG]")
        b.js("document.getElementById('sev-from').value = '1'; document.getElementById('sev-to').value = '9';")
        b.type("#client", "203.0.113.78")
        b.follow("#get-log")
        url = b.url()
        assert "class=IKE" in url and "class=IPSECDBG" in url and "client=203.0.113.78" in url
        entries = b.texts(".log pre.entry")
        assert entries
        for e in entries:
            assert "203.0.113.78" in e and (" IKE/" in e or " IPSECDBG/" in e), e
            sev = int(e.split("SEV=")[1].split()[0])
            assert 1 <= sev <= 9
        b.click("#tail")
        seen = len(entries)
        lab.conc("rekey", {"user": "vpnclient2"})  # new IKE entries from the PAT's address
        procs.wait_for(lambda: len(b.texts(".log pre.entry.new")) > 0, 15.0, 0.5, "a new entry in the live tail")
        new = b.texts(".log pre.entry.new")
        assert all("203.0.113.78" in e for e in new) and len(b.texts(".log pre.entry")) > seen
        assert any("vpnclient2" in e for e in new)
        shot(b, "event-log")

    def test_statistics_and_nat_transparency_pages(self, lab: Lab) -> None:
        b = lab.browser
        b.follow("#nav-stats")
        text = b.text("main")
        assert "IKE" in text and "NAT-T" in text and "Per transform" in text, text[:500]
        shot(b, "statistics")
        b.follow("#nav-natt")
        assert b.js("return document.getElementById('nat-traversal').checked") is True
        assert "ciscovpn" in b.text("#natt-form")
        shot(b, "nat-transparency")

    def test_ping_through_the_tunnel(self, lab: Lab) -> None:
        b = lab.browser
        b.get(lab.url + "sessions")
        b.follow("#row-vpnclient2 button.ping")
        flash = b.wait_text(".flash", "Ping vpnclient2")
        assert "3 sent, 3 received" in flash, flash
        log = lab.conc("log", {"classes": ["ADMIN"]})
        assert any("manager:admin" in e["message"] and "ping" in e["message"] for e in log), log[-3:]

    def test_logout_without_csrf_token_is_refused(self, lab: Lab) -> None:
        b = lab.browser
        b.get(lab.url + "sessions")
        b.js("document.querySelector('#row-vpnclient1 form[action$=\"/logout\"] input[name=csrf]').remove();")
        b.follow("#row-vpnclient1 button.logout")
        assert "Refused (403): the CSRF token is missing" in b.text("#refused")
        shot(b, "refused-csrf")
        assert lab.sc.status("client1")["state"] == "connected"
        assert len(lab.conc("sessions")["remote_access"]) == 2

    def test_logout_of_one_user_leaves_the_other(self, lab: Lab) -> None:
        b = lab.browser
        before = {n: lab.sc.status(n) for n in ("client1", "client2")}
        b.get(lab.url + "sessions")
        b.follow("#row-vpnclient1 button.logout")
        assert "vpnclient1: 1 session logged out." in b.wait_text(".flash", "logged out")
        shot(b, "logout")

        def client1_saw_it_end() -> bool:  # it reconnects by itself a moment later
            s = lab.sc.status("client1")
            return s["reconnects"] > before["client1"]["reconnects"] or s["state"] != "connected"

        procs.wait_for(client1_saw_it_end, 15.0, 0.2, "client1 seeing its session end")
        after = lab.sc.status("client2")
        assert after["state"] == "connected" and after["reconnects"] == before["client2"]["reconnects"]
        assert after["time_up"] >= before["client2"]["time_up"]  # the same session, not a new one
        assert lab.sc.ping("client2", ADDR.server)
        audit = [e["message"] for e in lab.conc("log", {"classes": ["ADMIN"]})]
        assert any("logout" in t and "manager:admin" in t and "vpnclient1" in t for t in audit), audit[-3:]
        assert "admin admin logged out user vpnclient1" in lab.manager_log()

    def test_an_idle_session_expires(self, lab: Lab) -> None:
        b = lab.browser
        b.get(lab.url + "sessions")
        token = b.js("return document.querySelector('input[name=csrf]').value")
        pings = len([e for e in lab.conc("log", {"classes": ["ADMIN"]}) if " ping " in e["message"]])
        # The page keeps polling meanwhile, but polls do not keep a session alive: once it has expired, the
        # next poll is refused (401) and the page goes to the login form by itself.
        procs.wait_for(lambda: "/login" in b.url(), IDLE_TIMEOUT + 10, 1.0, "the open page sent to the login")
        assert b.url().endswith("/login?expired=1")
        assert "expired" in b.text("#login-message")
        shot(b, "session-expired")
        # The browser still holds the session's cookie (and the page's token): an action with them is refused.
        status, text = b.js(
            "var x = new XMLHttpRequest(); x.open('POST', '/sessions/vpnclient2/ping', false);"
            "x.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded');"
            f"x.send('csrf={token}'); return [x.status, x.responseText];")
        assert status == 401 and "expired" in text
        assert [c for c in b.cookies() if c["name"] == "__Host-natt_session"], "the cookie was there to be refused"
        assert len([e for e in lab.conc("log", {"classes": ["ADMIN"]}) if " ping " in e["message"]]) == pings
        assert "with an ended or expired session refused: POST /sessions/vpnclient2/ping" in lab.manager_log()
        assert lab.sc.status("client2")["state"] == "connected"


class TestSeedFailureInTheBrowser:
    """NAT Transparency off: the session shows IPSec with 0 bytes, the page says why; one click fixes it."""

    NAT_TRAVERSAL = False

    def test_diagnosis_switch_and_reconnect(self, lab: Lab) -> None:
        b = lab.browser
        time.sleep(3)  # the pings run into the PAT meanwhile
        log_in(b)
        for user in USERS:
            row = b.text(f"#row-{user}")
            assert " IPSec " in f" {row} " and "IPsec/NAT-T" not in row, row
            assert bytes_rx(b, user) == 0
        why = b.text("#diagnosis-vpnclient1")
        assert "NAT Transparency (IPSec over NAT-T) is off and the client is behind PAT" in why
        assert "cannot cross the PAT" in why and "not port 500" in why
        assert "Turn on IPSec over NAT-T" in why
        shot(b, "diagnosis")

        b.follow("#enable-natt-vpnclient1")  # the one click
        assert "IPSec over NAT-T is on" in b.wait_text(".flash", "NAT Transparency saved")
        assert lab.conc("settings")["nat_traversal"] is True
        assert "nat_traversal = true" in lab.sc.config_path("concentrator").read_text()
        assert "reconnect the client to use NAT-T" in b.text("main")  # the old sessions keep plain ESP

        for name in ("client1", "client2"):  # reconnect, as the fix says
            call(lab.sc.socket(name), "disconnect")
            call(lab.sc.socket(name), "connect")
        for name in ("client1", "client2"):
            lab.sc.wait_connected(name, 30.0)
            assert lab.sc.ping(name, ADDR.server)  # the role is the client's name (client1, client2)
        b.get(lab.url + "sessions")
        for user in USERS:
            assert "IPsec/NAT-T" in b.text(f"#row-{user}")
        procs.wait_for(lambda: all(bytes_rx(b, u) > 0 for u in USERS), 15.0, 0.5, "bytes received after the fix")
        assert "Why vpnclient1 passes no data" not in b.text("main")
        shot(b, "diagnosis-fixed")
