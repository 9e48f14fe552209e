"""The web application: aiohttp handlers for the VPN 3000 Manager's pages, and the security around them.

Every page but the login form needs an administrator's session (a cookie naming a server-side session). Every
POST needs that session's CSRF token (a form field, or the X-CSRF-Token header) and, when the browser sends an
Origin, this site's own. Admin actions reach the concentrator with `actor = "manager:<login>"`, so its event
log records who did what; the manager logs its own logins, refusals and actions (never a password).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from aiohttp import web

from natt_daemons.common.control import ControlError, Unreachable
from natt_daemons.manager import views
from natt_daemons.manager.auth import AdminSession, LoginCsrf, LoginThrottle, Sessions, csrf_ok
from natt_daemons.manager.config import ManagerSettings
from natt_daemons.manager.link import ConcentratorLink, NotAvailable

log = logging.getLogger("natt.manager")

HERE = Path(__file__).parent
SESSION_COOKIE = "__Host-natt_session"  # __Host-: Secure, Path=/, no Domain, or the browser refuses it
LOGIN_COOKIE = "__Host-natt_login"
MAX_BODY = 64 * 1024
PUBLIC = ("/login", "/static/")
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
PING_COUNT = 3

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Manager:
    """What the handlers share: settings, the concentrator link, administrators' sessions, the login throttle."""

    def __init__(self, settings: ManagerSettings, link: ConcentratorLink | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.link = link or ConcentratorLink(settings.control_socket)
        self.clock = clock
        self.sessions = Sessions(settings.session_lifetime, settings.idle_timeout)
        self.throttle = LoginThrottle(settings.throttle)
        self.login_csrf = LoginCsrf()
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined,
            trim_blocks=True, lstrip_blocks=True)
        self.templates.filters["urlpart"] = lambda s: quote(str(s), safe="")

    async def nat_state(self) -> tuple[bool | None, dict[str, Any] | None]:
        """NAT-T on or off and the groups' IPsec-over-UDP switches (`settings`), or from `status` (no groups) on a
        concentrator without `settings`; (None, None) when it cannot be told."""
        try:
            s = await self.link.call("settings")
            return bool(s.get("nat_traversal")), dict(s.get("groups") or {})
        except NotAvailable:
            pass
        except ControlError:
            return None, None
        try:
            status = await self.link.call("status")
            return bool(status.get("nat_traversal")), None
        except ControlError:
            return None, None


MANAGER = web.AppKey("manager", Manager)
# The administrator's session on the request (aiohttp 3.12 and later type request keys; older ones take a string).
ADMIN: Any = web.RequestKey("admin", AdminSession) if hasattr(web, "RequestKey") else "admin_session"


def manager_of(request: web.Request) -> Manager:
    return request.app[MANAGER]


def admin_of(request: web.Request) -> AdminSession:
    return request[ADMIN]


def actor(request: web.Request) -> str:
    return f"manager:{admin_of(request).login}"


def _printable(text: str, limit: int = 64) -> str:
    """A login name as given, safe for a log line (it is the user's input)."""
    return repr(text[:limit])


# -- rendering --------------------------------------------------------------------------------------------------


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    m = manager_of(request)
    admin: AdminSession | None = request.get(ADMIN)
    page = m.templates.get_template(template).render(
        admin=admin, csrf=admin.csrf if admin else "", flashes=admin.take_flashes() if admin else [],
        path=request.path, url=m.settings.url, **context)
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


def control_error_page(request: web.Request, title: str, error: ControlError) -> web.Response:
    status = 503 if isinstance(error, Unreachable) else 502
    return render(request, "error.html", status=status, title=title, error=str(error),
                  unreachable=isinstance(error, Unreachable))


def redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location)


# -- middlewares ------------------------------------------------------------------------------------------------


@web.middleware
async def security_headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as e:
        response = e
        _headers(response)
        raise
    _headers(response)
    return response


def _headers(response: web.StreamResponse) -> None:
    h = response.headers
    h.setdefault("Content-Security-Policy", CSP)
    h["X-Content-Type-Options"] = "nosniff"
    h["X-Frame-Options"] = "DENY"
    h["Referrer-Policy"] = "same-origin"  # "no-referrer" makes Chrome send "Origin: null" on its own forms
    h["Strict-Transport-Security"] = "max-age=31536000"
    h["Cross-Origin-Opener-Policy"] = "same-origin"
    h.setdefault("Cache-Control", "no-store")


def _is_api(request: web.Request) -> bool:
    return request.path.startswith("/api/")


def _refuse(request: web.Request, status: int, message: str) -> web.Response:
    if _is_api(request):
        return web.json_response({"error": message}, status=status)
    m = manager_of(request)
    page = m.templates.get_template("refused.html").render(
        admin=None, csrf="", flashes=[], path=request.path, url=m.settings.url, title="Refused", status=status,
        message=message)
    return web.Response(text=page, status=status, content_type="text/html", charset="utf-8")


@web.middleware
async def authenticate(request: web.Request, handler: Handler) -> web.StreamResponse:
    """An administrator's live session, or no further: pages go to the login form, polls get 401."""
    if request.path.startswith(PUBLIC):
        return await handler(request)
    m = manager_of(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    admin = m.sessions.get(cookie, m.clock(), touch=not _is_api(request))
    if admin is None:
        if cookie:
            log.info("request from %s with an ended or expired session refused: %s %s", request.remote,
                     request.method, request.path)
        if request.method == "GET" and not _is_api(request):
            raise redirect("/login?expired=1" if cookie else "/login")
        return _refuse(request, 401, "Your session has expired or ended: log in again.")
    request[ADMIN] = admin
    if request.method == "POST":
        refusal = await _check_post(request, admin)
        if refusal is not None:
            log.warning("%s from %s (admin %s) refused: %s", request.path, request.remote, admin.login, refusal)
            return _refuse(request, 403, refusal)
    return await handler(request)


def _origin_ok(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"https://{request.host}":
        return False
    return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")


async def _check_post(request: web.Request, admin: AdminSession) -> str | None:
    if not _origin_ok(request):
        return "the request comes from another site"
    form = await request.post()
    token = request.headers.get("X-CSRF-Token") or form.get("csrf")
    if not token:
        return "the CSRF token is missing"
    if not isinstance(token, str) or not csrf_ok(admin, token):
        return "the CSRF token is wrong"
    return None


# -- login ------------------------------------------------------------------------------------------------------


def _set_cookie(response: web.StreamResponse, name: str, value: str) -> None:
    response.set_cookie(name, value, path="/", secure=True, httponly=True, samesite="Strict")


def _del_cookie(response: web.StreamResponse, name: str) -> None:
    # A __Host- cookie is only replaced (here: expired) by a Set-Cookie with the same Secure and Path.
    response.del_cookie(name, path="/", secure=True, httponly=True, samesite="Strict")


def _login_form(request: web.Request, status: int = 200, message: str = "", kind: str = "error",
                login: str = "") -> web.Response:
    m = manager_of(request)
    cookie = request.cookies.get(LOGIN_COOKIE) or m.login_csrf.new_cookie()
    response = render(request, "login.html", status=status, title="Login", message=message, kind=kind,
                      login=login, login_token=m.login_csrf.token(cookie))
    if request.cookies.get(LOGIN_COOKIE) != cookie:
        _set_cookie(response, LOGIN_COOKIE, cookie)
    return response


async def login_page(request: web.Request) -> web.StreamResponse:
    m = manager_of(request)
    if m.sessions.get(request.cookies.get(SESSION_COOKIE), m.clock()) is not None:
        raise redirect("/sessions")
    if "expired" in request.query:
        return _login_form(request, message="Your session has expired or ended: log in again.", kind="info")
    if "signedout" in request.query:
        return _login_form(request, message="You have signed out.", kind="info")
    return _login_form(request)


async def login_submit(request: web.Request) -> web.StreamResponse:
    m = manager_of(request)
    form = await request.post()
    login, password = str(form.get("login", "")), str(form.get("password", ""))
    source = request.remote or "?"
    if not _origin_ok(request):
        log.warning("login from %s refused: the form was posted from another site (Origin %s)", source,
                    request.headers.get("Origin"))
        return _login_form(request, 403, "The login form was sent from another site.", login=login)
    if not m.login_csrf.ok(request.cookies.get(LOGIN_COOKIE), str(form.get("csrf", ""))):
        log.warning("login from %s refused: the login form's CSRF token is %s", source,
                    "wrong" if form.get("csrf") and request.cookies.get(LOGIN_COOKIE) else "missing")
        return _login_form(request, 403, "The login form has expired: try again.", login=login)
    now = m.clock()
    wait = m.throttle.wait(source, login, now)
    if wait > 0:
        log.warning("login for %s from %s refused: throttled for %.0f s more", _printable(login), source, wait)
        response = _login_form(request, 429, f"Too many failed logins: try again in {wait:.0f} s.", login=login)
        response.headers["Retry-After"] = str(max(1, round(wait)))
        return response
    ok = bool(login) and bool(password) and \
        await asyncio.get_running_loop().run_in_executor(None, m.settings.verify, login, password)
    if not ok:
        m.throttle.failed(source, login, m.clock())
        log.warning("login failed for %s from %s (%d failures from this address)", _printable(login), source,
                    m.throttle.failures("source", source))
        return _login_form(request, 401, "Login failed: wrong login or password.", login=login)
    m.throttle.succeeded(source, login)
    admin = m.sessions.create(login, m.clock())
    log.info("admin %s logged in from %s", login, source)
    response = redirect("/sessions")
    _set_cookie(response, SESSION_COOKIE, admin.id)
    _del_cookie(response, LOGIN_COOKIE)
    raise response


async def signout(request: web.Request) -> web.StreamResponse:
    m = manager_of(request)
    admin = admin_of(request)
    m.sessions.end(admin.id)
    log.info("admin %s signed out from %s", admin.login, request.remote)
    response = redirect("/login?signedout=1")
    _del_cookie(response, SESSION_COOKIE)
    raise response


async def root(request: web.Request) -> web.StreamResponse:
    raise redirect("/sessions")


# -- Administration > Sessions ----------------------------------------------------------------------------------


async def _sessions_view(m: Manager) -> dict[str, Any]:
    result = await m.link.call("sessions")
    nat, _ = await m.nat_state()
    return views.sessions_view(result, nat, len(m.sessions))


async def sessions_page(request: web.Request) -> web.StreamResponse:
    m = manager_of(request)
    try:
        view = await _sessions_view(m)
    except ControlError as e:
        return control_error_page(request, "Sessions", e)
    return render(request, "sessions.html", title="Administration | Sessions", view=view)


async def sessions_api(request: web.Request) -> web.StreamResponse:
    try:
        return web.json_response(await _sessions_view(manager_of(request)))
    except ControlError as e:
        return web.json_response({"error": str(e)}, status=502)


async def _detail_view(m: Manager, user: str) -> dict[str, Any]:
    try:
        details = await m.link.call("session", {"user": user})
    except NotAvailable:
        raise
    except ControlError as e:
        if "no session" in str(e):
            details = []
        else:
            raise
    rows = (await m.link.call("sessions")).get("remote_access", [])
    row = next((r for r in rows if r.get("username") == user), None)
    nat, _ = await m.nat_state()
    return views.detail_view(user, details, row, nat)


async def detail_page(request: web.Request) -> web.StreamResponse:
    m = manager_of(request)
    user = request.match_info["user"]
    try:
        view = await _detail_view(m, user)
    except ControlError as e:
        return control_error_page(request, f"Session {user}", e)
    return render(request, "detail.html", title=f"Administration | Sessions | {user}", view=view,
                  status=200 if view["sessions"] else 404)


async def detail_api(request: web.Request) -> web.StreamResponse:
    try:
        return web.json_response(await _detail_view(manager_of(request), request.match_info["user"]))
    except ControlError as e:
        return web.json_response({"error": str(e)}, status=502)


def _back(form: Any, user: str) -> str:
    return f"/sessions/{quote(user, safe='')}" if form.get("back") == "detail" else "/sessions"


async def logout_user(request: web.Request) -> web.StreamResponse:
    m, admin = manager_of(request), admin_of(request)
    user = request.match_info["user"]
    try:
        result = await m.link.call("logout", {"user": user, "reason": f"logged out by {admin.login} (manager)",
                                              "actor": actor(request)})
        n = int(result.get("logged_out", 0)) if isinstance(result, dict) else 0
        admin.flash("ok", f"{user}: {n} session{'s' if n != 1 else ''} logged out.")
        log.info("admin %s logged out user %s (%d session(s))", admin.login, user, n)
    except ControlError as e:
        admin.flash("error", f"Logout of {user} failed: {e}")
        log.warning("admin %s: logout of user %s failed: %s", admin.login, user, e)
    raise redirect("/sessions")  # the session's detail page is gone with it


async def ping_user(request: web.Request) -> web.StreamResponse:
    m, admin = manager_of(request), admin_of(request)
    user = request.match_info["user"]
    form = await request.post()
    try:
        r = await m.link.call("ping", {"user": user, "count": PING_COUNT, "timeout": 1.0, "actor": actor(request)})
        rtts = ", ".join(f"{x:.1f}" for x in r.get("rtt_ms", []))
        text = (f"Ping {user} ({r.get('address', '?')}) through the tunnel: {r.get('sent', 0)} sent, "
                f"{r.get('received', 0)} received" + (f"; round trip {rtts} ms" if rtts else ""))
        admin.flash("ok" if r.get("received") else "error", text)
        log.info("admin %s pinged user %s: %s/%s answered", admin.login, user, r.get("received"), r.get("sent"))
    except NotAvailable as e:
        admin.flash("error", f"Ping is not available: {e}.")
    except ControlError as e:
        admin.flash("error", f"Ping of {user} failed: {e}")
    raise redirect(_back(form, user))


# -- Monitoring > Filterable Event Log --------------------------------------------------------------------------


class BadFilter(ValueError):
    """A log filter that cannot be asked for; the message says which field."""


def log_filter(query: Any) -> dict[str, Any]:
    """The `log` command's filter from the form's fields (GET): classes, severity from..to, client address."""
    classes = [c for c in query.getall("class", []) if c]
    unknown = [c for c in classes if c not in views.LOG_CLASSES]
    if unknown:
        raise BadFilter(f"unknown event class {unknown[0]!r}")
    try:
        low = int(query.get("sev_from") or views.SEVERITY_RANGE[0])
        high = int(query.get("sev_to") or views.SEVERITY_RANGE[1])
    except ValueError as e:
        raise BadFilter("severities are whole numbers 1..13") from e
    if not (views.SEVERITY_RANGE[0] <= low <= high <= views.SEVERITY_RANGE[1]):
        raise BadFilter(f"severity range {low}-{high} is not within 1-13 (from <= to)")
    args: dict[str, Any] = {"severity": f"{low}-{high}"}
    if classes and set(classes) != set(views.LOG_CLASSES):
        args["classes"] = classes
    peer = (query.get("client") or "").strip()
    if peer:
        try:
            args["peer"] = str(ipaddress.ip_address(peer))
        except ValueError as e:
            raise BadFilter(f"client address {peer!r} is not an IP address") from e
    return args


def _form_state(query: Any, args: dict[str, Any]) -> dict[str, Any]:
    low, _, high = args["severity"].partition("-")
    return {"classes": set(args.get("classes", views.LOG_CLASSES)), "sev_from": int(low), "sev_to": int(high),
            "client": args.get("peer", ""), "tail": query.get("tail") == "on"}


async def log_page(request: web.Request) -> web.StreamResponse:
    m = manager_of(request)
    try:
        args = log_filter(request.query)
    except BadFilter as e:
        args = {"severity": "1-13"}
        return render(request, "log.html", status=400, title="Monitoring | Filterable Event Log", error=str(e),
                      entries=[], total=0, form=_form_state(request.query, args), classes=views.LOG_CLASSES,
                      last_seq=0, query="")
    try:
        items = await m.link.call("log", args)
    except ControlError as e:
        return control_error_page(request, "Filterable Event Log", e)
    entries = views.log_view(items)
    shown = entries[-m.settings.log_entries:]
    return render(request, "log.html", title="Monitoring | Filterable Event Log", error="", entries=shown,
                  total=len(entries), form=_form_state(request.query, args), classes=views.LOG_CLASSES,
                  last_seq=max((e["seq"] for e in entries), default=0), query=request.query_string)


async def log_api(request: web.Request) -> web.StreamResponse:
    m = manager_of(request)
    try:
        args = log_filter(request.query)
        since = int(request.query.get("since", "0"))
    except (BadFilter, ValueError) as e:
        return web.json_response({"error": str(e)}, status=400)
    try:
        items = await m.link.call("log", {**args, "since": since})
    except ControlError as e:
        return web.json_response({"error": str(e)}, status=502)
    return web.json_response({"entries": views.log_view(items)[-m.settings.log_entries:]})


# -- Statistics -------------------------------------------------------------------------------------------------


async def _stats_view(m: Manager) -> tuple[dict[str, Any], str]:
    try:
        return views.stats_view(await m.link.call("stats")), ""
    except NotAvailable as e:
        return views.status_stats_view(await m.link.call("status")), f"{e}: showing the counters of 'status'."


async def stats_page(request: web.Request) -> web.StreamResponse:
    try:
        view, note = await _stats_view(manager_of(request))
    except ControlError as e:
        return control_error_page(request, "Statistics", e)
    return render(request, "stats.html", title="Monitoring | Statistics", view=view, note=note)


async def stats_api(request: web.Request) -> web.StreamResponse:
    try:
        view, _ = await _stats_view(manager_of(request))
    except ControlError as e:
        return web.json_response({"error": str(e)}, status=502)
    return web.json_response(view)


# -- Configuration > Tunneling > IPSec > NAT Transparency -------------------------------------------------------


async def natt_page(request: web.Request) -> web.StreamResponse:
    m = manager_of(request)
    note = ""
    try:
        settings = await m.link.call("settings")
        nat, groups, editable = bool(settings.get("nat_traversal")), dict(settings.get("groups") or {}), True
    except NotAvailable as e:
        nat, groups, editable = None, {}, False
        note = f"The switches cannot be changed from here: {e}."
        with contextlib.suppress(ControlError):
            nat = bool((await m.link.call("status")).get("nat_traversal"))
    except ControlError as e:
        return control_error_page(request, "NAT Transparency", e)
    return render(request, "nat_transparency.html", title="Configuration | Tunneling | IPSec | NAT Transparency",
                  nat_traversal=nat, groups=groups, editable=editable, note=note)


async def natt_submit(request: web.Request) -> web.StreamResponse:
    m, admin = manager_of(request), admin_of(request)
    form = await request.post()
    back = "/sessions" if form.get("back") == "sessions" else "/nat-transparency"
    args: dict[str, Any] = {"nat_traversal": form.get("nat_traversal") == "on", "actor": actor(request)}
    try:
        if form.get("scope") != "nat_traversal":  # the whole form: the groups' IPsec over UDP too
            current = await m.link.call("settings")
            args["groups"] = {name: {"ipsec_over_udp": form.get(f"udp:{name}") == "on"}
                              for name in (current.get("groups") or {})}
        new = await m.link.call("nat-transparency", args)
    except ControlError as e:
        admin.flash("error", f"NAT Transparency was not changed: {e}")
        log.warning("admin %s: NAT Transparency change failed: %s", admin.login, e)
        raise redirect(back) from None
    on = bool(new.get("nat_traversal")) if isinstance(new, dict) else args["nat_traversal"]
    udp = [n for n, g in (new.get("groups") or {}).items() if g.get("ipsec_over_udp")] if isinstance(new, dict) else []
    saved = new.get("saved", True) if isinstance(new, dict) else True
    where = ("saved and the concentrator reloaded" if saved else
             f"applied to the running configuration, NOT SAVED ({new.get('note', '')})")
    admin.flash("ok" if saved else "error",
                f"NAT Transparency {where}: IPSec over NAT-T is {'on' if on else 'off'}; IPSec over UDP is on for "
                f"{', '.join(udp) or 'no group'}. Sessions set up before keep their encapsulation until their "
                "clients reconnect.")
    log.info("admin %s set NAT Transparency: nat_traversal=%s, ipsec_over_udp=%s", admin.login, on, udp)
    raise redirect(back)


# -- the application --------------------------------------------------------------------------------------------


def create_app(settings: ManagerSettings, link: ConcentratorLink | None = None,
               clock: Callable[[], float] = time.monotonic) -> web.Application:
    app = web.Application(middlewares=[security_headers, authenticate], client_max_size=MAX_BODY)
    app[MANAGER] = Manager(settings, link, clock)
    r = app.router
    r.add_get("/", root)
    r.add_get("/login", login_page)
    r.add_post("/login", login_submit)
    r.add_post("/signout", signout)
    r.add_get("/sessions", sessions_page)
    r.add_get("/api/sessions", sessions_api)
    r.add_get("/sessions/{user}", detail_page)
    r.add_get("/api/sessions/{user}", detail_api)
    r.add_post("/sessions/{user}/logout", logout_user)
    r.add_post("/sessions/{user}/ping", ping_user)
    r.add_get("/log", log_page)
    r.add_get("/api/log", log_api)
    r.add_get("/stats", stats_page)
    r.add_get("/api/stats", stats_api)
    r.add_get("/nat-transparency", natt_page)
    r.add_post("/nat-transparency", natt_submit)
    r.add_static("/static/", HERE / "static")
    return app
