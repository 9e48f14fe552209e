"""The transaction exchange: XAUTH (draft-ietf-ipsec-isakmp-xauth) and Mode Config (pull and push).

XAUTH:        R → I  REQUEST(TYPE, USER_NAME, USER_PASSWORD)   I → R  REPLY(values)
              R → I  SET(STATUS)                                I → R  ACK(STATUS)
Mode Config:  I → R  REQUEST(wanted attributes)                 R → I  REPLY(values)      (pull)
              R → I  SET(values)                                I → R  ACK(types)         (push)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import TYPE_CHECKING

from natt.errors import MissingPayload, UnexpectedMessage, XauthFailed
from natt.ike import info
from natt.ike.events import Cause, ModeConfigDone, XauthLockout, XauthRequested, XauthResult
from natt.ike.ikesa import IkeSA, State
from natt.ike.rules import Kind
from natt.wire.constants import ConfigAttr, ConfigType, ExchangeType, XauthStatus
from natt.wire.message import Message
from natt.wire.payloads import ConfigAttributes, DataAttribute
from natt.wire.payloads.config import attr, ipv4_attr, parse_split_include, split_include_value

if TYPE_CHECKING:
    from natt.ike.context import IkeContext

# What the client asks for in its Mode Config request (the seed's Cisco client set).
CLIENT_REQUEST = (
    ConfigAttr.INTERNAL_IP4_ADDRESS,
    ConfigAttr.INTERNAL_IP4_NETMASK,
    ConfigAttr.INTERNAL_IP4_DNS,
    ConfigAttr.INTERNAL_IP4_NBNS,
    ConfigAttr.UNITY_BANNER,
    ConfigAttr.UNITY_SAVE_PASSWD,
    ConfigAttr.UNITY_DEF_DOMAIN,
    ConfigAttr.UNITY_SPLIT_INCLUDE,
    ConfigAttr.UNITY_PFS,
    ConfigAttr.UNITY_NATT_PORT,
)


def _ident(ctx: IkeContext) -> int:
    return int.from_bytes(ctx.rng(2), "big")


def _text(a: DataAttribute | None) -> str:
    if a is None or isinstance(a.value, int):
        return ""
    return a.value.decode("utf-8", "replace")


# -- XAUTH, server side ----------------------------------------------------------------------


def start_xauth(ctx: IkeContext, sa: IkeSA, message: str = "") -> None:
    mid = ctx.new_message_id(sa)
    attrs = [attr(ConfigAttr.XAUTH_TYPE, 0), attr(ConfigAttr.XAUTH_USER_NAME), attr(ConfigAttr.XAUTH_USER_PASSWORD)]
    if message:
        attrs.append(attr(ConfigAttr.XAUTH_MESSAGE, message))
    sa.transactions[mid] = "xauth-reply"
    sa.state = State.XAUTH
    ctx.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ConfigAttributes(ConfigType.REQUEST, _ident(ctx), attrs)],
                    expect="XAUTH reply")


def _server_xauth_reply(ctx: IkeContext, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    ctx.answered(sa, mid)
    sa.transactions.pop(mid, None)
    user = _text(cfg.get(ConfigAttr.XAUTH_USER_NAME))
    password = _text(cfg.get(ConfigAttr.XAUTH_USER_PASSWORD))
    sa.user = user
    assert sa.responder
    sa.responder.xauth_tries += 1
    if not user:
        _server_xauth_done(ctx, sa, False, "no user name given", final=True)
        return
    throttled = ctx.throttle.check(user, sa.peer, ctx.now)
    if not throttled.allowed:
        # Refused unchecked: a locked-out user or source costs no password hash.
        ctx.stats["xauth-throttled"] += 1
        why = (f"{throttled.kind} [{throttled.key}] locked out after failed logins" if throttled.locked else
               f"{throttled.kind} [{throttled.key}] must wait {throttled.wait:.0f} s after failed logins")
        _server_xauth_done(ctx, sa, False, why, final=True, cause=Cause.XAUTH_THROTTLED)
        return
    ctx.check_credentials(sa, user, password)  # the verdict comes back through Xauth.verdict


def _server_xauth_done(ctx: IkeContext, sa: IkeSA, ok: bool, reason: str, *, final: bool,
                       cause: Cause = Cause.XAUTH_FAILED, tell: bool = False) -> None:
    ctx.emit(XauthResult(sa.id, sa.peer, sa.user, ok, final, reason))
    if not final:
        start_xauth(ctx, sa, "Authentication failed, please try again")
        return
    status_mid = ctx.new_message_id(sa)
    status = XauthStatus.OK if ok else XauthStatus.FAIL
    if ok:
        sa.transactions[status_mid] = "xauth-ack"
        sa.state = State.XAUTH_STATUS
    attrs = [attr(ConfigAttr.XAUTH_STATUS, status)]
    if tell:  # a reason the user may read (a login limit); never why a password failed
        attrs.append(attr(ConfigAttr.XAUTH_MESSAGE, reason[:200]))
    ctx.send_hashed(sa, ExchangeType.TRANSACTION, status_mid, [ConfigAttributes(ConfigType.SET, _ident(ctx), attrs)],
                    expect="XAUTH status ACK" if ok else None)
    if not ok:
        ctx.remove_sa(sa, f"XAUTH failed for user [{sa.user}]: {reason}", cause)


def _server_xauth_verdict(ctx: IkeContext, sa: IkeSA, ok: bool) -> None:
    assert ctx.policy
    user, now = sa.user, ctx.now
    if ok:
        ctx.throttle.succeeded(user, sa.peer, now)
        refused = ctx.admit_login(sa)
        if refused is not None:
            _server_xauth_done(ctx, sa, False, refused, final=True, cause=Cause.LOGIN_LIMIT, tell=True)
            return
        _server_xauth_done(ctx, sa, True, "", final=True)
        return
    for lock in ctx.throttle.failed(user, sa.peer, now):
        ctx.emit(XauthLockout(sa.id, sa.peer, lock.kind, lock.key, lock.failures, lock.until))
    again = ctx.throttle.check(user, sa.peer, now)
    tries = sa.responder.xauth_tries if sa.responder else 0
    final = tries >= ctx.policy.xauth_max_tries or not again.allowed
    _server_xauth_done(ctx, sa, False, f"user [{user}] failed authentication (attempt {tries})",
                       final=final, cause=Cause.XAUTH_FAILED if again.allowed else Cause.XAUTH_THROTTLED)


def _server_xauth_ack(ctx: IkeContext, sa: IkeSA) -> None:
    """The client read the status: XAUTH is done, phase 1 is up, Mode Config comes next."""
    from natt.ike import phase1

    for mid, what in list(sa.transactions.items()):
        if what == "xauth-ack":
            sa.transactions.pop(mid)
            ctx.answered(sa, mid)
    sa.xauth_done = True
    phase1.established(ctx, sa)


def _server_xauth_status_ack(ctx: IkeContext, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    _server_xauth_ack(ctx, sa)


# -- Mode Config, server side -----------------------------------------------------------------


def _config_values(ctx: IkeContext, sa: IkeSA, wanted: set[int]) -> list[DataAttribute]:
    assert sa.group and ctx.policy
    if sa.assigned_address is None:
        # Owned by the session: a re-authenticated IKE SA of the same login gets the same address.
        sa.assigned_address = ctx.pool_for(sa.group).allocate(f"session-{sa.session_id}")
    g = sa.group
    out = [ipv4_attr(ConfigAttr.INTERNAL_IP4_ADDRESS, sa.assigned_address)]
    if ConfigAttr.INTERNAL_IP4_NETMASK in wanted:
        out.append(ipv4_attr(ConfigAttr.INTERNAL_IP4_NETMASK, ctx.pool_for(g).netmask))
    if ConfigAttr.INTERNAL_IP4_DNS in wanted:
        out += [ipv4_attr(ConfigAttr.INTERNAL_IP4_DNS, a) for a in g.dns]
    if ConfigAttr.INTERNAL_IP4_NBNS in wanted:
        out += [ipv4_attr(ConfigAttr.INTERNAL_IP4_NBNS, a) for a in g.nbns]
    if ConfigAttr.UNITY_DEF_DOMAIN in wanted and g.domain:
        out.append(attr(ConfigAttr.UNITY_DEF_DOMAIN, g.domain))
    if ConfigAttr.UNITY_BANNER in wanted and g.banner:
        out.append(attr(ConfigAttr.UNITY_BANNER, g.banner))
    if ConfigAttr.UNITY_SPLIT_INCLUDE in wanted and g.split_networks:
        out.append(attr(ConfigAttr.UNITY_SPLIT_INCLUDE, split_include_value(list(g.split_networks))))
    if ConfigAttr.UNITY_SAVE_PASSWD in wanted:
        out.append(attr(ConfigAttr.UNITY_SAVE_PASSWD, int(g.save_password)))
    if ConfigAttr.UNITY_PFS in wanted:
        out.append(attr(ConfigAttr.UNITY_PFS, int(g.pfs)))
    if ConfigAttr.APPLICATION_VERSION in wanted:
        out.append(attr(ConfigAttr.APPLICATION_VERSION, ctx.policy.version))
    if ConfigAttr.UNITY_NATT_PORT in wanted:
        # Transparency preference (VPN 3000): IPsec over TCP (not built), then NAT-T, then IPsec over UDP.
        if sa.udp_encap:
            out.append(attr(ConfigAttr.UNITY_NATT_PORT, ctx.natt_port))
        elif g.ipsec_over_udp:
            sa.cisco_udp_port = g.ipsec_over_udp_port
            out.append(attr(ConfigAttr.UNITY_NATT_PORT, g.ipsec_over_udp_port))
    return out


def _server_request(ctx: IkeContext, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    if sa.state is State.XAUTH_STATUS:
        # The status ACK was lost on the way; only a client that read the status OK asks for its settings.
        _server_xauth_ack(ctx, sa)
    sa.peer_app_version = _text(cfg.get(ConfigAttr.APPLICATION_VERSION))
    wanted = {a.type for a in cfg.attributes}
    values = _config_values(ctx, sa, wanted)
    ctx.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ConfigAttributes(ConfigType.REPLY, cfg.identifier, values)],
                   in_reply_to=data)
    if sa.state is State.ESTABLISHED:
        return  # a pull beside a push: answered with the same values, said once
    sa.state = State.ESTABLISHED
    _server_config_done(ctx, sa, values)


def push_modecfg(ctx: IkeContext, sa: IkeSA) -> None:
    mid = ctx.new_message_id(sa)
    values = _config_values(ctx, sa, set(CLIENT_REQUEST) | {ConfigAttr.APPLICATION_VERSION})
    sa.transactions[mid] = "modecfg-ack"
    ctx.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ConfigAttributes(ConfigType.SET, _ident(ctx), values)],
                   expect="Mode Config ACK")
    sa.state = State.ESTABLISHED  # the address is given: Quick Modes for it may come
    _server_config_done(ctx, sa, values)


def _server_config_done(ctx: IkeContext, sa: IkeSA, values: list[DataAttribute]) -> None:
    ctx.emit(_config_event(sa, values))
    # The seed's concentrator follows Mode Config with its phase 1 lifetime (RESPONDER-LIFETIME).
    info.send_phase1_lifetime(ctx, sa)


# -- client side --------------------------------------------------------------------------------


def start_modecfg(ctx: IkeContext, sa: IkeSA) -> None:
    p = sa.profile
    assert p
    mid = ctx.new_message_id(sa)
    want_port = sa.udp_encap or (p.nat_traversal and p.ipsec_over_udp)
    attrs = [attr(t) for t in CLIENT_REQUEST if t != ConfigAttr.UNITY_NATT_PORT or want_port]
    attrs.append(attr(ConfigAttr.APPLICATION_VERSION, p.app_version))
    sa.transactions[mid] = "modecfg-reply"
    sa.state = State.MODECFG
    ctx.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ConfigAttributes(ConfigType.REQUEST, _ident(ctx), attrs)],
                   expect="Mode Config reply")


def _client_xauth_request(ctx: IkeContext, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    p = sa.profile
    assert p
    hold = sa.initiator
    assert hold
    hold.xauth_answers += 1
    ctx.emit(XauthRequested(sa.id, sa.peer))
    if hold.xauth_answers > max(p.xauth_max_tries, 1) or not p.username:
        raise XauthFailed(f"XAUTH asked again after {hold.xauth_answers - 1} answers: giving up")
    values = [attr(ConfigAttr.XAUTH_USER_NAME, p.username), attr(ConfigAttr.XAUTH_USER_PASSWORD, p.password)]
    if cfg.get(ConfigAttr.XAUTH_TYPE) is not None:
        values.insert(0, attr(ConfigAttr.XAUTH_TYPE, 0))
    sa.user = p.username
    ctx.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ConfigAttributes(ConfigType.REPLY, cfg.identifier, values)],
                   in_reply_to=data)


def _client_status(ctx: IkeContext, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    from natt.ike import phase1

    status = cfg.get(ConfigAttr.XAUTH_STATUS)
    assert status is not None  # rules.classify
    ack = ConfigAttributes(ConfigType.ACK, cfg.identifier, [attr(ConfigAttr.XAUTH_STATUS, status.as_int())])
    ctx.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ack], in_reply_to=data)
    ok = status.as_int() == XauthStatus.OK
    said = _text(cfg.get(ConfigAttr.XAUTH_MESSAGE))
    why = f"concentrator refused the user: {said}" if said else "concentrator refused the user"
    ctx.emit(XauthResult(sa.id, sa.peer, sa.user, ok, True, "" if ok else why))
    if not ok:
        ctx.remove_sa(sa, f"XAUTH failed for user [{sa.user}]" + (f": {said}" if said else ""), Cause.XAUTH_FAILED)
        return
    sa.xauth_done = True
    phase1.established(ctx, sa)


def _client_set(ctx: IkeContext, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    # Mode Config push: acknowledge the types and take the values.
    ack = ConfigAttributes(ConfigType.ACK, cfg.identifier, [attr(a.type) for a in cfg.attributes])
    ctx.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ack], in_reply_to=data)
    _client_config(ctx, sa, cfg)


def _client_reply(ctx: IkeContext, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    sa.transactions.pop(mid, None)
    ctx.answered(sa, mid)
    _client_config(ctx, sa, cfg)


def _client_config(ctx: IkeContext, sa: IkeSA, cfg: ConfigAttributes) -> None:
    from natt.ike import quick

    event = _config_event(sa, cfg.attributes)
    if not event.address:
        raise MissingPayload("Mode Config gave no INTERNAL_IP4_ADDRESS")
    sa.assigned_address = event.address
    sa.peer_app_version = event.app_version
    sa.state = State.ESTABLISHED
    assert sa.profile
    if event.natt_port and not sa.udp_encap and sa.profile.nat_traversal and sa.profile.ipsec_over_udp:
        sa.cisco_udp_port = event.natt_port  # no NAT-T: the concentrator offers IPsec over UDP on this port
        info.start_liveness(ctx, sa)  # keepalives now go to that port
    ctx.emit(event)
    assert sa.initiator
    if sa.initiator.quick_modes_started:
        return  # a push and a pull both answered: the tunnels are already on their way
    sa.initiator.quick_modes_started = True
    networks = list(event.split_networks) or list(sa.profile.remote_networks)
    for net in networks:
        quick.start(ctx, sa, net)


def _config_event(sa: IkeSA, attrs: list[DataAttribute]) -> ModeConfigDone:
    def ips(t: int) -> tuple[str, ...]:
        return tuple(str(ipaddress.IPv4Address(a.value)) for a in attrs
                     if a.type == t and isinstance(a.value, bytes) and len(a.value) == 4)

    def one(t: int) -> DataAttribute | None:
        return next((a for a in attrs if a.type == t), None)

    addr = ips(ConfigAttr.INTERNAL_IP4_ADDRESS)
    mask = ips(ConfigAttr.INTERNAL_IP4_NETMASK)
    split = one(ConfigAttr.UNITY_SPLIT_INCLUDE)
    natt_port = one(ConfigAttr.UNITY_NATT_PORT)
    save = one(ConfigAttr.UNITY_SAVE_PASSWD)
    pfs = one(ConfigAttr.UNITY_PFS)
    return ModeConfigDone(
        sa.id, sa.peer,
        address=addr[0] if addr else "",
        netmask=mask[0] if mask else None,
        dns=ips(ConfigAttr.INTERNAL_IP4_DNS),
        nbns=ips(ConfigAttr.INTERNAL_IP4_NBNS),
        domain=_text(one(ConfigAttr.UNITY_DEF_DOMAIN)),
        banner=_text(one(ConfigAttr.UNITY_BANNER)),
        split_networks=tuple(str(n) for n in parse_split_include(split.value))
        if split is not None and isinstance(split.value, bytes) else (),
        natt_port=natt_port.as_int() if natt_port is not None else None,
        app_version=_text(one(ConfigAttr.APPLICATION_VERSION)),
        save_password=bool(save.as_int()) if save is not None else None,
        pfs=bool(pfs.as_int()) if pfs is not None else None,
    )


# -- the tasks -----------------------------------------------------------------------------------

_ANSWERS = {Kind.XAUTH_REPLY: "xauth-reply", Kind.XAUTH_ACK: "xauth-ack", Kind.CFG_REPLY: "modecfg-reply",
            Kind.CFG_ACK: "modecfg-ack"}


class _Transaction:
    handlers: dict[Kind, _Handler]

    def process(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind, data: bytes) -> None:
        cfg = msg.get(ConfigAttributes)
        assert cfg is not None  # verify
        self.handlers[kind](ctx, sa, cfg, msg.header.message_id, data)

    def verify(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind) -> None:
        info.check_hash(sa, msg)
        if msg.get(ConfigAttributes) is None:
            raise MissingPayload("transaction exchange without an attribute payload")
        want = _ANSWERS.get(kind)
        if want is not None and sa.transactions.get(msg.header.message_id) != want:
            raise UnexpectedMessage(f"{kind.value} answering nothing we asked (M-ID {msg.header.message_id:#010x})")


def _server_config_ack(ctx: IkeContext, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    sa.transactions.pop(mid, None)
    ctx.answered(sa, mid)


_Handler = Callable[["IkeContext", IkeSA, ConfigAttributes, int, bytes], None]


class Xauth(_Transaction):
    """draft-beaulieu-ike-xauth-02: the gateway asks, the client answers, the gateway says OK or FAIL."""

    def __init__(self) -> None:
        self.handlers: dict[Kind, _Handler] = {
            Kind.XAUTH_REQUEST: _client_xauth_request, Kind.XAUTH_STATUS: _client_status,
            Kind.XAUTH_REPLY: _server_xauth_reply, Kind.XAUTH_ACK: _server_xauth_status_ack}

    def verdict(self, ctx: IkeContext, sa: IkeSA, ok: bool) -> None:
        _server_xauth_verdict(ctx, sa, ok)


class ModeConfig(_Transaction):
    """draft-dukes-ike-mode-cfg-02: the client pulls (REQUEST/REPLY) or the gateway pushes (SET/ACK)."""

    def __init__(self) -> None:
        self.handlers: dict[Kind, _Handler] = {
            Kind.CFG_REQUEST: _server_request, Kind.CFG_REPLY: _client_reply, Kind.CFG_SET: _client_set,
            Kind.CFG_ACK: _server_config_ack}


XAUTH = Xauth()
MODE_CONFIG = ModeConfig()
