"""natt-manager over real HTTPS against a real control socket: logins, cookies, CSRF, throttling, expiry, actions.

The manager runs as it does in production (ManagerServer: TLS with its self-signed certificate, on 127.0.0.1),
and talks to a real `ControlServer` (daemons/common/control.py) on a Unix socket, whose commands answer in the
concentrator's shapes and record what they were asked (the actor above all). Only the clock of the
administrators' sessions is the test's, to expire a session without waiting.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from yarl import URL

from natt_daemons.common.control import AuditRecord, ControlError, ControlServer
from natt_daemons.common.passwords import hash_password
from natt_daemons.manager.app import LOGIN_COOKIE, SESSION_COOKIE, create_app
from natt_daemons.manager.config import load
from natt_daemons.manager.server import ManagerServer

pytestmark = pytest.mark.unit

PASSWORD = "correct horse battery"


def session_row(user: str, ip: str, *, protocol: str = "IPsec/NAT-T", rx: int = 5000, port: int = 4500) -> dict:
    return {"session_id": 1, "username": user, "assigned_ip": ip, "public_ip": "203.0.113.78", "public_port": port,
            "group": "ciscovpn", "protocol": protocol, "encryption": "AES-128-GCM", "login_time": 1.7e9,
            "duration": "0:01:00", "client": "natt client 0.1", "bytes_tx": 4000, "bytes_rx": rx, "packets_tx": 4,
            "packets_rx": 5, "ike_sas": 1}


@dataclass
class FakeConcentrator:
    """A real ControlServer whose commands answer like the concentrator's and remember what they were asked."""

    path: str
    nat_traversal: bool = True
    protocol: str = "IPsec/NAT-T"
    rx: int = 5000
    with_ping: bool = True
    calls: list[tuple[str, dict]] = field(default_factory=list)
    audits: list[AuditRecord] = field(default_factory=list)
    server: ControlServer | None = None

    def rows(self) -> list[dict]:
        return [session_row("vpnclient1", "10.40.1.1", protocol=self.protocol, rx=self.rx,
                            port=1024 if self.protocol == "IPSec" else 4500),
                session_row("vpnclient2", "10.40.1.2", protocol=self.protocol, rx=self.rx,
                            port=1025 if self.protocol == "IPSec" else 4500)]

    async def start(self) -> None:
        s = ControlServer(self.path, audit=self.audits.append)

        def record(name: str, result: Any) -> Any:
            async def handler(args: dict) -> Any:
                self.calls.append((name, args))
                return result(args) if callable(result) else result
            return handler

        def summary() -> dict:
            return {"active_lan_to_lan": 0, "active_remote_access": 2, "active_management": 0, "total_active": 2,
                    "peak_concurrent": 2, "concurrent_limit": 100, "total_cumulative": 7}

        s.command("sessions", record("sessions", lambda a: {"summary": summary(), "remote_access": self.rows(),
                                                            "lockouts": []}))
        s.command("session", record("session", self._detail))
        s.command("logout", record("logout", {"logged_out": 1}), access="admin")
        if self.with_ping:
            s.command("ping", record("ping", lambda a: {"user": a["user"], "address": "10.40.1.1", "sent": 3,
                                                        "received": 3, "rtt_ms": [1.0, 1.5, 2.0]}), access="admin")
        s.command("settings", record("settings", lambda a: self._settings()))
        s.command("nat-transparency", record("nat-transparency", self._set_nat), access="admin")
        s.command("status", record("status", lambda a: {"nat_traversal": self.nat_traversal, "refusals": {},
                                                        "datapath": {"gso_sends": 3}}))
        s.command("stats", record("stats", {"ike": {"phase1_established": 2}, "ipsec": {"sas": 4},
                                            "natt": {"keepalives_rx": 9},
                                            "transforms": {"aes128gcm16": {"in_bytes": 100, "out_bytes": 200,
                                                                           "in_packets": 1, "out_packets": 2,
                                                                           "drops": 0}},
                                            "datapath": {"gro_reads": 5}}))
        s.command("log", record("log", lambda a: [
            {"seq": 1, "severity": 5, "class": "IKE", "text": "1 12:00:00.000 SEV=5 IKE/41 RPT=1 203.0.113.78 x"},
            {"seq": 2, "severity": 9, "class": "IPSECDBG", "text": "2 12:00:01.000 SEV=9 IPSECDBG/1 RPT=1 y"},
        ]))
        await s.start()
        self.server = s

    def _settings(self) -> dict:
        return {"nat_traversal": self.nat_traversal,
                "groups": {"ciscovpn": {"ipsec_over_udp": False, "ipsec_over_udp_port": 10000}}}

    def _set_nat(self, args: dict) -> dict:
        if "nat_traversal" in args:
            self.nat_traversal = bool(args["nat_traversal"])
        return self._settings()

    def _detail(self, args: dict) -> list:
        if args.get("user") not in ("vpnclient1", "vpnclient2"):
            raise ControlError(f"no session for user {args.get('user')!r}")
        return [{"session_id": 1, "username": args["user"], "login_time": 1.7e9, "duration": "0:01:00",
                 "bytes_tx": 4000, "bytes_rx": self.rx, "packets_tx": 4, "packets_rx": 5,
                 "ike": {"ike_sa_id": 3, "public_ip": "203.0.113.78", "encryption": "AES-256",
                         "hashing": "SHA2-256", "diffie_hellman_group": "Group 14 (2048-bit)",
                         "authentication_mode": "Pre-Shared Keys (XAUTH)", "negotiation_mode": "Aggressive",
                         "rekey_interval": 86400, "expires_in": 86000, "established_at": 1.7e9,
                         "udp_source_port": 1024, "udp_destination_port": 4500},
                 "ike_sas": [{"ike_sa_id": 3}],
                 "ipsec": [{"protocol": self.protocol, "remote_address": "10.40.1.1/32",
                            "local_address": "0.0.0.0/0", "encryption": "AES-128-GCM", "hashing": "",
                            "encapsulation_mode": "Tunnel", "udp_source_port": 1024, "udp_destination_port": 4500,
                            "inbound_spi": "0x11112222", "outbound_spi": "0x33334444", "rekey_interval": 28800,
                            "established_at": 1.7e9, "expires_in": 28000, "replaced": False, "delete_in": None,
                            "idle_time": "", "bytes_received": self.rx, "bytes_transmitted": 4000,
                            "packets_received": 5, "packets_transmitted": 4}]}]

    def asked(self, name: str) -> list[dict]:
        return [a for n, a in self.calls if n == name]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def write_config(tmp_path: Path, socket: str, **extra: str) -> Path:
    lines = ["[manager]", 'address = "127.0.0.1"', "port = 0", f'control_socket = "{socket}"',
             f'state_dir = "{tmp_path / "state"}"', "login_free_failures = 2", "login_backoff = 30",
             *(f"{k} = {v}" for k, v in extra.items()),
             "", "[admins]", f'admin = "{hash_password(PASSWORD)}"', f'operator = "{hash_password(PASSWORD + "2")}"']
    path = tmp_path / "manager.toml"
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@dataclass
class Site:
    base: str
    conc: FakeConcentrator
    clock: Clock
    server: ManagerServer

    def client(self, source: str = "127.0.0.1") -> aiohttp.ClientSession:
        # unsafe: the jar keeps cookies of an IP-address host (127.0.0.1); ssl=False: the certificate is self-signed
        connector = aiohttp.TCPConnector(ssl=False, local_addr=(source, 0))
        return aiohttp.ClientSession(self.base, connector=connector, cookie_jar=aiohttp.CookieJar(unsafe=True))


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    conc = FakeConcentrator(str(tmp_path / "conc.sock"))
    await conc.start()
    settings = load(write_config(tmp_path, conc.path))
    clock = Clock()
    server = ManagerServer(settings, create_app(settings, clock=clock))
    await server.start()
    try:
        yield Site(f"https://127.0.0.1:{server.port}", conc, clock, server)
    finally:
        await server.stop()
        assert conc.server is not None
        await conc.server.close()


async def login_token(client: aiohttp.ClientSession) -> str:
    async with client.get("/login") as r:
        assert r.status == 200
        return _hidden(await r.text(), "csrf")


def _hidden(page: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]+)"', page)
    assert m, f"no hidden {name} field"
    return m.group(1)


async def log_in(client: aiohttp.ClientSession, login: str = "admin",
                 password: str = PASSWORD) -> aiohttp.ClientResponse:
    token = await login_token(client)
    return await client.post("/login", data={"login": login, "password": password, "csrf": token},
                             allow_redirects=False)


async def logged_in(site: Site, source: str = "127.0.0.1") -> tuple[aiohttp.ClientSession, str]:
    client = site.client(source)
    r = await log_in(client)
    assert r.status == 303, await r.text()
    async with client.get("/sessions") as page:
        assert page.status == 200
        return client, _hidden(await page.text(), "csrf")


def set_cookie_header(r: aiohttp.ClientResponse, name: str) -> str:
    found = [h for h in r.headers.getall("Set-Cookie", []) if h.startswith(f"{name}=")]
    assert len(found) == 1, r.headers.getall("Set-Cookie", [])
    return found[0]


# -- login, cookies ---------------------------------------------------------------------------------------------


async def test_login_sets_a_strict_secure_httponly_session_cookie(site: Site, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "natt.manager")
    async with site.client() as client:
        r = await log_in(client)
        assert r.status == 303 and r.headers["Location"] == "/sessions"
        cookie = set_cookie_header(r, SESSION_COOKIE)
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")[1:]}
        assert {"httponly", "secure", "samesite", "path"} <= attrs, cookie
        assert "SameSite=Strict" in cookie and "Path=/" in cookie
        assert "domain" not in attrs and "max-age" not in attrs and "expires" not in attrs  # ends with the browser
        session_id = cookie.split(";")[0].split("=", 1)[1]
        assert len(session_id) >= 43  # 256 random bits, urlsafe base64
        async with client.get("/sessions") as page:
            text = await page.text()
            assert page.status == 200
            assert "vpnclient1" in text and "vpnclient2" in text and "IPsec/NAT-T" in text
    assert any("admin admin logged in from 127.0.0.1" in m for m in caplog.messages)
    assert not any(PASSWORD in m for m in caplog.messages)


async def test_a_second_login_gets_a_new_session_id(site: Site) -> None:
    async with site.client() as a, site.client() as b:
        ra, rb = await log_in(a), await log_in(b)
        assert set_cookie_header(ra, SESSION_COOKIE) != set_cookie_header(rb, SESSION_COOKIE)


async def test_wrong_password_is_refused_and_logged_without_the_password(site: Site,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "natt.manager")
    async with site.client() as client:
        r = await log_in(client, password="wrong password 123")
        assert r.status == 401
        assert "Login failed" in await r.text()
        assert not [h for h in r.headers.getall("Set-Cookie", []) if h.startswith(SESSION_COOKIE)]
        async with client.get("/sessions", allow_redirects=False) as page:
            assert page.status == 303 and page.headers["Location"].startswith("/login")
    failed = [m for m in caplog.messages if "login failed for 'admin' from 127.0.0.1" in m]
    assert failed, caplog.messages
    assert not any("wrong password 123" in m for m in caplog.messages)


async def test_unknown_login_is_refused_like_a_wrong_password(site: Site) -> None:
    async with site.client() as client:
        r = await log_in(client, login="nobody")
        assert r.status == 401 and "Login failed: wrong login or password." in await r.text()


async def test_login_form_without_its_csrf_token_is_refused(site: Site) -> None:
    async with site.client() as client:
        await login_token(client)  # the login cookie is set, the token left out
        r = await client.post("/login", data={"login": "admin", "password": PASSWORD}, allow_redirects=False)
        assert r.status == 403
        r = await client.post("/login", data={"login": "admin", "password": PASSWORD, "csrf": "0" * 64},
                              allow_redirects=False)
        assert r.status == 403
    async with site.client() as fresh:  # a token without its cookie
        r = await fresh.post("/login", data={"login": "admin", "password": PASSWORD, "csrf": "0" * 64},
                             allow_redirects=False)
        assert r.status == 403


# -- throttling -------------------------------------------------------------------------------------------------


async def test_failed_logins_from_one_source_are_throttled_even_for_the_right_password(site: Site) -> None:
    async with site.client() as client:
        for _ in range(2):  # login_free_failures = 2
            assert (await log_in(client, password="nope nope")).status == 401
        assert (await log_in(client, password="nope nope")).status == 401  # the third is checked, and counts
        r = await log_in(client, "operator", PASSWORD + "2")  # right password, another login, same source
        assert r.status == 429
        assert 1 <= int(r.headers["Retry-After"]) <= 30
        assert "Too many failed logins" in await r.text()
        site.clock.now += 31  # throttle waits run on the manager's clock too
        assert (await log_in(client, "operator", PASSWORD + "2")).status == 303


async def test_failed_logins_for_one_login_are_throttled_from_another_source(site: Site) -> None:
    async with site.client("127.0.0.1") as a:
        for _ in range(3):
            assert (await log_in(a, password="nope nope")).status == 401
    async with site.client("127.0.0.2") as b:
        assert (await log_in(b)).status == 429  # admin is throttled wherever the attempt comes from
        assert (await log_in(b, "operator", PASSWORD + "2")).status == 303  # that source is not


async def test_a_success_clears_the_count(site: Site) -> None:
    async with site.client() as client:
        for _ in range(2):
            assert (await log_in(client, password="nope nope")).status == 401
        assert (await log_in(client)).status == 303
    async with site.client() as client:
        for _ in range(2):
            assert (await log_in(client, password="nope nope")).status == 401
        assert (await log_in(client)).status == 303


# -- CSRF and sessions ------------------------------------------------------------------------------------------


async def test_logout_without_csrf_token_is_refused_and_reaches_nothing(site: Site) -> None:
    client, token = await logged_in(site)
    async with client:
        r = await client.post("/sessions/vpnclient1/logout", data={}, allow_redirects=False)
        assert r.status == 403 and "CSRF token is missing" in await r.text()
        r = await client.post("/sessions/vpnclient1/logout", data={"csrf": token[:-2] + "xx"}, allow_redirects=False)
        assert r.status == 403 and "CSRF token is wrong" in await r.text()
        r = await client.post("/nat-transparency", data={"nat_traversal": "on", "scope": "nat_traversal"},
                              allow_redirects=False)
        assert r.status == 403
        r = await client.post("/signout", data={}, allow_redirects=False)
        assert r.status == 403
        assert site.conc.asked("logout") == [] and site.conc.asked("nat-transparency") == []
        r = await client.post("/sessions/vpnclient1/logout", data={"csrf": token},
                              headers={"Origin": "https://evil.example"}, allow_redirects=False)
        assert r.status == 403 and "another site" in await r.text()
        assert site.conc.asked("logout") == []


async def test_logout_with_token_reaches_the_concentrator_with_the_actor(site: Site) -> None:
    client, token = await logged_in(site)
    async with client:
        r = await client.post("/sessions/vpnclient1/logout", data={"csrf": token}, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/sessions"
        async with client.get("/sessions") as page:
            assert "vpnclient1: 1 session logged out." in await page.text()
    [args] = site.conc.asked("logout")
    assert args["user"] == "vpnclient1" and args["actor"] == "manager:admin"
    assert [(a.cmd, a.actor) for a in site.conc.audits] == [("logout", "manager:admin")]


async def test_the_csrf_token_also_works_as_a_header(site: Site) -> None:
    client, token = await logged_in(site)
    async with client:
        r = await client.post("/sessions/vpnclient2/ping", headers={"X-CSRF-Token": token}, allow_redirects=False)
        assert r.status == 303
    [args] = site.conc.asked("ping")
    assert args == {"user": "vpnclient2", "count": 3, "timeout": 1.0, "actor": "manager:admin"}


async def test_one_admins_token_does_not_pass_for_another(site: Site) -> None:
    a, token_a = await logged_in(site)
    b, _ = await logged_in(site)
    async with a, b:
        r = await b.post("/sessions/vpnclient1/logout", data={"csrf": token_a}, allow_redirects=False)
        assert r.status == 403
    assert site.conc.asked("logout") == []


async def test_an_idle_session_expires_on_the_server(site: Site) -> None:
    client, token = await logged_in(site)
    async with client:
        site.clock.now += 1799
        async with client.get("/api/sessions") as r:  # polling does not keep a session alive ...
            assert r.status == 200
        site.clock.now += 2  # ... so 1801 s after the last page it is gone
        async with client.get("/sessions", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login?expired=1"
        r = await client.post("/sessions/vpnclient1/logout", data={"csrf": token}, allow_redirects=False)
        assert r.status == 401 and "expired" in await r.text()
        async with client.get("/api/sessions") as r:
            assert r.status == 401
    assert site.conc.asked("logout") == []


async def test_a_session_ends_at_its_lifetime_however_busy(site: Site) -> None:
    client, _ = await logged_in(site)
    async with client:
        for _ in range(16):  # a page every 30 minutes less a second keeps it from idling (16 x 1799 s < 8 h) ...
            site.clock.now += 1799
            async with client.get("/sessions", allow_redirects=False) as r:
                assert r.status == 200
        site.clock.now += 1799  # ... but not past 8 hours
        async with client.get("/sessions", allow_redirects=False) as r:
            assert r.status == 303


async def test_signing_out_ends_the_session_on_the_server(site: Site) -> None:
    client, token = await logged_in(site)
    async with client:
        old = client.cookie_jar.filter_cookies(URL(site.base))[SESSION_COOKIE].value
        r = await client.post("/signout", data={"csrf": token}, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/login?signedout=1"
    async with site.client() as replay:  # the old id, sent again by someone who kept it
        replay.cookie_jar.update_cookies({SESSION_COOKIE: old})
        async with replay.get("/sessions", allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/login?expired=1"


async def test_security_headers_on_every_page(site: Site) -> None:
    async with site.client() as client, client.get("/login") as r:
        assert "script-src 'self'" in r.headers["Content-Security-Policy"]
        assert "frame-ancestors 'none'" in r.headers["Content-Security-Policy"]
        assert r.headers["X-Frame-Options"] == "DENY"
        assert r.headers["X-Content-Type-Options"] == "nosniff"
        assert r.headers["Strict-Transport-Security"].startswith("max-age=")
        assert r.headers["Cache-Control"] == "no-store"
        cookie = set_cookie_header(r, LOGIN_COOKIE)
        assert "HttpOnly" in cookie and "Secure" in cookie and "SameSite=Strict" in cookie


async def test_plain_http_is_not_served(site: Site) -> None:
    async with aiohttp.ClientSession() as plain:
        with pytest.raises(aiohttp.ClientError):
            async with plain.get(site.base.replace("https://", "http://") + "/login") as r:
                await r.read()


async def test_the_certificate_is_self_signed_for_the_listen_address(site: Site) -> None:
    ctx = ssl.create_default_context(cafile=str(site.server.cert.cert)) if site.server.cert else None
    async with aiohttp.ClientSession() as client, client.get(site.base + "/login", ssl=ctx) as r:
        assert r.status == 200  # verified against the certificate itself, hostname 127.0.0.1 included


# -- pages and actions ------------------------------------------------------------------------------------------


async def test_pages_render_with_the_concentrators_data(site: Site) -> None:
    client, _ = await logged_in(site)
    async with client:
        async with client.get("/sessions/vpnclient1") as r:
            text = await r.text()
            assert r.status == 200
            for expected in ("0x11112222", "0x33334444", "Aggressive", "Pre-Shared Keys (XAUTH)", "28,800 s",
                             "86,000 s", "IPsec/NAT-T Session 1"):
                assert expected in text, expected
        async with client.get("/sessions/nobody") as r:
            assert r.status == 404 and "nobody has no active session" in await r.text()
        async with client.get("/stats") as r:
            text = await r.text()
            assert "phase1_established" in text and "aes128gcm16" in text and "keepalives_rx" in text
        async with client.get("/nat-transparency") as r:
            text = await r.text()
            assert 'id="nat-traversal" checked' in text and "ciscovpn" in text
        async with client.get("/api/sessions") as r:
            data = await r.json()
            assert [row["username"] for row in data["rows"]] == ["vpnclient1", "vpnclient2"]
            assert data["rows"][0]["bytes_rx"] == "5,000"
            assert data["summary"][2] == {"field": "active_management", "label": "Active Management Sessions",
                                          "value": "1"}


async def test_event_log_filter_reaches_the_concentrator(site: Site) -> None:
    client, _ = await logged_in(site)
    async with client:
        async with client.get("/log", params=[("class", "IKE"), ("class", "IPSECDBG"), ("sev_from", "4"),
                                              ("sev_to", "9"), ("client", "203.0.113.78")]) as r:
            text = await r.text()
            assert r.status == 200 and "SEV=9 IPSECDBG/1" in text
        assert site.conc.asked("log")[-1] == {"severity": "4-9", "classes": ["IKE", "IPSECDBG"],
                                              "peer": "203.0.113.78"}
        async with client.get("/api/log", params={"since": "1", "sev_from": "1", "sev_to": "13"}) as r:
            assert r.status == 200
        assert site.conc.asked("log")[-1] == {"severity": "1-13", "since": 1}
        async with client.get("/log", params={"client": "not-an-address"}) as r:
            assert r.status == 400 and "not an IP address" in await r.text()
        async with client.get("/log", params={"sev_from": "9", "sev_to": "3"}) as r:
            assert r.status == 400
        async with client.get("/log", params={"class": "NOPE"}) as r:
            assert r.status == 400


async def test_the_seeds_failure_is_diagnosed_and_one_click_turns_nat_t_on(site: Site) -> None:
    site.conc.nat_traversal, site.conc.protocol, site.conc.rx = False, "IPSec", 0
    client, _ = await logged_in(site)
    async with client:
        async with client.get("/sessions") as r:
            text = await r.text()
        assert "NAT Transparency (IPSec over NAT-T) is off and the client is behind PAT" in text
        assert "203.0.113.78 port 1024, not port 500" in text and "cannot cross the PAT" in text
        form = re.search(r'<form method="post" action="/nat-transparency".*?</form>', text, re.S)
        assert form, "no switch on the page"
        fields = dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form.group(0)))
        async with client.get("/sessions/vpnclient1") as r:
            assert "cannot cross the PAT" in await r.text()
        r = await client.post("/nat-transparency", data=fields, allow_redirects=False)
        assert r.status == 303 and r.headers["Location"] == "/sessions"
        assert site.conc.asked("nat-transparency") == [{"nat_traversal": True, "actor": "manager:admin"}]
        async with client.get("/sessions") as r:
            text = await r.text()
        assert "IPSec over NAT-T is on" in text  # the flash
        assert "reconnect the client to use NAT-T" in text  # the live sessions keep plain ESP until they reconnect


async def test_the_nat_transparency_form_sets_every_switch(site: Site) -> None:
    client, token = await logged_in(site)
    async with client:
        r = await client.post("/nat-transparency", data={"csrf": token, "udp:ciscovpn": "on"}, allow_redirects=False)
        assert r.status == 303
    assert site.conc.asked("nat-transparency") == [
        {"nat_traversal": False, "actor": "manager:admin", "groups": {"ciscovpn": {"ipsec_over_udp": True}}}]


async def test_a_command_the_concentrator_lacks_is_named(tmp_path: Path) -> None:
    conc = FakeConcentrator(str(tmp_path / "old.sock"), with_ping=False)
    await conc.start()
    settings = load(write_config(tmp_path, conc.path))
    server = ManagerServer(settings)
    await server.start()
    site = Site(f"https://127.0.0.1:{server.port}", conc, Clock(), server)
    try:
        client, token = await logged_in(site)
        async with client:
            r = await client.post("/sessions/vpnclient1/ping", data={"csrf": token})
            assert "Ping is not available: this concentrator has no &#39;ping&#39; command" in await r.text()
    finally:
        await server.stop()
        assert conc.server is not None
        await conc.server.close()


async def test_an_unreachable_concentrator_is_said_so(tmp_path: Path) -> None:
    settings = load(write_config(tmp_path, str(tmp_path / "nothing.sock")))
    server = ManagerServer(settings)
    await server.start()
    site = Site(f"https://127.0.0.1:{server.port}", FakeConcentrator(""), Clock(), server)
    try:
        client = site.client()
        async with client:
            assert (await log_in(client)).status == 303
            async with client.get("/sessions") as r:
                assert r.status == 503
                assert "cannot reach the concentrator" in await r.text()
    finally:
        await server.stop()
