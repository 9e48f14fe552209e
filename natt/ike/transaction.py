"""The transaction exchange: XAUTH (draft-ietf-ipsec-isakmp-xauth) and Mode Config (pull and push).

XAUTH:        R → I  REQUEST(TYPE, USER_NAME, USER_PASSWORD)   I → R  REPLY(values)
              R → I  SET(STATUS)                                I → R  ACK(STATUS)
Mode Config:  I → R  REQUEST(wanted attributes)                 R → I  REPLY(values)      (pull)
              R → I  SET(values)                                I → R  ACK(types)         (push)
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from natt.errors import MissingPayload, UnexpectedMessage, XauthFailed
from natt.ike import info
from natt.ike.events import ModeConfigDone, XauthRequested, XauthResult
from natt.ike.ikesa import IkeSA, Role, State
from natt.wire.constants import ConfigAttr, ConfigType, ExchangeType, XauthStatus
from natt.wire.message import Message
from natt.wire.payloads import ConfigAttributes, DataAttribute
from natt.wire.payloads.config import attr, ipv4_attr, parse_split_include, split_include_value

if TYPE_CHECKING:
    from natt.ike.endpoint import IkeEndpoint

XAUTH_ATTRS = {ConfigAttr.XAUTH_TYPE, ConfigAttr.XAUTH_USER_NAME, ConfigAttr.XAUTH_USER_PASSWORD,
               ConfigAttr.XAUTH_PASSCODE, ConfigAttr.XAUTH_MESSAGE, ConfigAttr.XAUTH_STATUS}

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


def _ident(ep: IkeEndpoint) -> int:
    return int.from_bytes(ep.rng(2), "big")


def _text(a: DataAttribute | None) -> str:
    if a is None or isinstance(a.value, int):
        return ""
    return a.value.decode("utf-8", "replace")


# -- XAUTH, server side ----------------------------------------------------------------------


def start_xauth(ep: IkeEndpoint, sa: IkeSA, message: str = "") -> None:
    mid = ep.new_message_id(sa)
    attrs = [attr(ConfigAttr.XAUTH_TYPE, 0), attr(ConfigAttr.XAUTH_USER_NAME), attr(ConfigAttr.XAUTH_USER_PASSWORD)]
    if message:
        attrs.append(attr(ConfigAttr.XAUTH_MESSAGE, message))
    sa.transactions[mid] = "xauth-reply"
    ep.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ConfigAttributes(ConfigType.REQUEST, _ident(ep), attrs)],
                   expect="XAUTH reply")


def _server_xauth_reply(ep: IkeEndpoint, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    assert ep.policy
    ep.answered(sa, mid)
    sa.transactions.pop(mid, None)
    user = _text(cfg.get(ConfigAttr.XAUTH_USER_NAME))
    password = _text(cfg.get(ConfigAttr.XAUTH_USER_PASSWORD))
    sa.user = user
    sa.xauth_tries += 1
    ok = bool(user) and ep.policy.verify_user(user, password)
    final = ok or sa.xauth_tries >= ep.policy.xauth_max_tries
    reason = "" if ok else f"user [{user}] failed authentication (attempt {sa.xauth_tries})"
    ep.emit(XauthResult(sa.id, sa.peer, user, ok, final, reason))
    if not final:
        start_xauth(ep, sa, "Authentication failed, please try again")
        return
    status_mid = ep.new_message_id(sa)
    sa.transactions[status_mid] = "xauth-ack" if ok else "xauth-fail-ack"
    status = XauthStatus.OK if ok else XauthStatus.FAIL
    ep.send_hashed(sa, ExchangeType.TRANSACTION, status_mid,
                   [ConfigAttributes(ConfigType.SET, _ident(ep), [attr(ConfigAttr.XAUTH_STATUS, status)])],
                   expect=None if not ok else "XAUTH status ACK")
    if not ok:
        ep.remove_sa(sa, reason)


def _server_ack(ep: IkeEndpoint, sa: IkeSA, cfg: ConfigAttributes, mid: int) -> None:
    from natt.ike import phase1

    what = sa.transactions.pop(mid, None)
    ep.answered(sa, mid)
    if what == "xauth-ack":
        sa.xauth_done = True
        _initial_contact(ep, sa)
        phase1.established(ep, sa)
    elif what == "modecfg-ack":
        pass
    else:
        raise UnexpectedMessage("ACK for nothing we sent")


def _initial_contact(ep: IkeEndpoint, sa: IkeSA) -> None:
    """INITIAL-CONTACT: the user's client has no SAs any more, so its old sessions are stale."""
    if not sa.modecfg.get("initial_contact") or not sa.user:
        return
    for other in list(ep.sas.values()):
        if other is not sa and other.user == sa.user and other.remote[0] == sa.remote[0]:
            ep.remove_sa(other, "replaced after INITIAL-CONTACT")


# -- Mode Config, server side -----------------------------------------------------------------


def _config_values(ep: IkeEndpoint, sa: IkeSA, wanted: set[int]) -> list[DataAttribute]:
    assert sa.group and ep.policy
    if sa.assigned_address is None:
        sa.assigned_address = ep.pool_for(sa.group).allocate(str(sa.id))
    g = sa.group
    out = [ipv4_attr(ConfigAttr.INTERNAL_IP4_ADDRESS, sa.assigned_address)]
    if ConfigAttr.INTERNAL_IP4_NETMASK in wanted:
        out.append(ipv4_attr(ConfigAttr.INTERNAL_IP4_NETMASK, ep.pool_for(g).netmask))
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
        out.append(attr(ConfigAttr.APPLICATION_VERSION, ep.policy.version))
    if ConfigAttr.UNITY_NATT_PORT in wanted:
        # Transparency preference (VPN 3000): IPsec over TCP (not built), then NAT-T, then IPsec over UDP.
        if sa.udp_encap:
            out.append(attr(ConfigAttr.UNITY_NATT_PORT, ep.natt_port))
        elif g.ipsec_over_udp:
            sa.cisco_udp_port = g.ipsec_over_udp_port
            out.append(attr(ConfigAttr.UNITY_NATT_PORT, g.ipsec_over_udp_port))
    return out


def _server_request(ep: IkeEndpoint, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    if sa.state is not State.ESTABLISHED:
        raise UnexpectedMessage("Mode Config request before XAUTH completed")
    sa.peer_app_version = _text(cfg.get(ConfigAttr.APPLICATION_VERSION))
    wanted = {a.type for a in cfg.attributes}
    values = _config_values(ep, sa, wanted)
    ep.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ConfigAttributes(ConfigType.REPLY, cfg.identifier, values)],
                   in_reply_to=data)
    _server_config_done(ep, sa, values)


def push_modecfg(ep: IkeEndpoint, sa: IkeSA) -> None:
    mid = ep.new_message_id(sa)
    values = _config_values(ep, sa, set(CLIENT_REQUEST) | {ConfigAttr.APPLICATION_VERSION})
    sa.transactions[mid] = "modecfg-ack"
    ep.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ConfigAttributes(ConfigType.SET, _ident(ep), values)],
                   expect="Mode Config ACK")
    _server_config_done(ep, sa, values)


def _server_config_done(ep: IkeEndpoint, sa: IkeSA, values: list[DataAttribute]) -> None:
    ep.emit(_config_event(sa, values))
    # The seed's concentrator follows Mode Config with its phase 1 lifetime (RESPONDER-LIFETIME).
    info.send_phase1_lifetime(ep, sa)


# -- client side --------------------------------------------------------------------------------


def start_modecfg(ep: IkeEndpoint, sa: IkeSA) -> None:
    p = sa.profile
    assert p
    mid = ep.new_message_id(sa)
    want_port = sa.udp_encap or (p.nat_traversal and p.ipsec_over_udp)
    attrs = [attr(t) for t in CLIENT_REQUEST if t != ConfigAttr.UNITY_NATT_PORT or want_port]
    attrs.append(attr(ConfigAttr.APPLICATION_VERSION, p.app_version))
    sa.transactions[mid] = "modecfg-reply"
    sa.state = State.MODECFG
    ep.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ConfigAttributes(ConfigType.REQUEST, _ident(ep), attrs)],
                   expect="Mode Config reply")


def _client_xauth_request(ep: IkeEndpoint, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    p = sa.profile
    assert p
    sa.xauth_tries += 1
    ep.emit(XauthRequested(sa.id, sa.peer))
    if sa.xauth_tries > max(p.xauth_max_tries, 1) or not p.username:
        raise XauthFailed(f"XAUTH asked again after {sa.xauth_tries - 1} answers: giving up")
    values = [attr(ConfigAttr.XAUTH_USER_NAME, p.username), attr(ConfigAttr.XAUTH_USER_PASSWORD, p.password)]
    if cfg.get(ConfigAttr.XAUTH_TYPE) is not None:
        values.insert(0, attr(ConfigAttr.XAUTH_TYPE, 0))
    sa.user = p.username
    ep.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ConfigAttributes(ConfigType.REPLY, cfg.identifier, values)],
                   in_reply_to=data)


def _client_set(ep: IkeEndpoint, sa: IkeSA, cfg: ConfigAttributes, mid: int, data: bytes) -> None:
    from natt.ike import phase1

    status = cfg.get(ConfigAttr.XAUTH_STATUS)
    if status is not None:
        ack = ConfigAttributes(ConfigType.ACK, cfg.identifier, [attr(ConfigAttr.XAUTH_STATUS, status.as_int())])
        ep.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ack], in_reply_to=data)
        ok = status.as_int() == XauthStatus.OK
        ep.emit(XauthResult(sa.id, sa.peer, sa.user, ok, True, "" if ok else "concentrator refused the user"))
        if not ok:
            ep.remove_sa(sa, f"XAUTH failed for user [{sa.user}]")
            return
        sa.xauth_done = True
        phase1.established(ep, sa)
        return
    # Mode Config push: acknowledge the types and take the values.
    ack = ConfigAttributes(ConfigType.ACK, cfg.identifier, [attr(a.type) for a in cfg.attributes])
    ep.send_hashed(sa, ExchangeType.TRANSACTION, mid, [ack], in_reply_to=data)
    _client_config(ep, sa, cfg)


def _client_reply(ep: IkeEndpoint, sa: IkeSA, cfg: ConfigAttributes, mid: int) -> None:
    if sa.transactions.pop(mid, None) != "modecfg-reply":
        raise UnexpectedMessage("Mode Config reply we did not ask for")
    ep.answered(sa, mid)
    _client_config(ep, sa, cfg)


def _client_config(ep: IkeEndpoint, sa: IkeSA, cfg: ConfigAttributes) -> None:
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
        info.start_liveness(ep, sa)  # keepalives now go to that port
    ep.emit(event)
    if sa.modecfg.get("quick_modes_started"):
        return  # a push and a pull both answered: the tunnels are already on their way
    sa.modecfg["quick_modes_started"] = True
    networks = list(event.split_networks) or list(sa.profile.remote_networks)
    for net in networks:
        quick.start(ep, sa, net)


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


# -- dispatch ---------------------------------------------------------------------------------------


def receive(ep: IkeEndpoint, sa: IkeSA, msg: Message, data: bytes) -> None:
    info.check_hash(sa, msg)
    cfg = msg.get(ConfigAttributes)
    if cfg is None:
        raise MissingPayload("transaction exchange without an attribute payload")
    mid = msg.header.message_id
    is_xauth = any(a.type in XAUTH_ATTRS for a in cfg.attributes)
    if sa.role is Role.INITIATOR:
        if cfg.cfg_type == ConfigType.REQUEST and is_xauth:
            _client_xauth_request(ep, sa, cfg, mid, data)
        elif cfg.cfg_type == ConfigType.SET:
            _client_set(ep, sa, cfg, mid, data)
        elif cfg.cfg_type == ConfigType.REPLY:
            _client_reply(ep, sa, cfg, mid)
        else:
            raise UnexpectedMessage(f"config type {cfg.cfg_type} sent to a client")
        return
    if cfg.cfg_type == ConfigType.REPLY and sa.transactions.get(mid) == "xauth-reply":
        _server_xauth_reply(ep, sa, cfg, mid, data)
    elif cfg.cfg_type == ConfigType.ACK:
        _server_ack(ep, sa, cfg, mid)
    elif cfg.cfg_type == ConfigType.REQUEST:
        _server_request(ep, sa, cfg, mid, data)
    else:
        raise UnexpectedMessage(f"config type {cfg.cfg_type} sent to a concentrator")
