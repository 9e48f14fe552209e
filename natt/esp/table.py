"""The ESP SA table: selectors → outbound SA, SPI → inbound SA, one owner per inner address.

Sans-IO and shared: the daemons' data path (natt_daemons.common.datapath) and the in-memory protocol
simulation both keep their child SAs here, so the routing and selector rules are tested without root.

Selectors are kept as integers (RFC 4301 5.2: address & mask == net); ten thousand sessions' worth of
ipaddress objects would be a memory cost of their own.

The owner rule: a child SA's *remote* selector (the peer's inner side — a client's assigned /32 on the
concentrator; 0.0.0.0/0 or the concentrator's /32 on a client) belongs to the session (IKE SA) that
installed it first. Another session's child whose remote selector overlaps it is refused with
SelectorConflict, whatever IKE negotiated: one session can never draw traffic meant for another's
address. Ownership ends with the owning session's last child for that selector.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from natt.errors import SelectorConflict
from natt.esp.sa import EspSA
from natt.esp.transforms import make_transform

if TYPE_CHECKING:
    from natt.ike.events import ChildSaUp

_ADDRS = struct.Struct(">II")  # an IPv4 header's source and destination, at offset 12
FLOW_CACHE_MAX = 65536  # (source, destination) pairs remembered before the cache starts afresh


def parse_selector(text: str) -> tuple[int, int, int]:
    """A selector ("10.40.1.7/32") as (network, netmask, prefix length) integers. ValueError if malformed."""
    net = ipaddress.IPv4Network(text)
    return int(net.network_address), int(net.netmask), net.prefixlen


def _text(net: int, plen: int) -> str:
    return f"{ipaddress.IPv4Address(net)}/{plen}"


@dataclass(slots=True, eq=False)  # identity: the indexes look SAs up by object
class Outbound:
    esp: EspSA
    sa_id: int
    inbound_spi: int
    remote: tuple[str, int]  # port 0: not known yet (IPsec over UDP learns it from the peer)
    sock: Any  # the transport handle ESP leaves by (the daemon's UDP socket); None = raw IP protocol 50
    # NAT-T: the remote is the IKE SA's peer endpoint and moves only when IKE says so (update_remote).
    # Otherwise (IPsec over UDP) the data path learns the port from the peer's ESP (learn_remote).
    follows_ike: bool
    owner: int  # the session that owns the remote selector (its IKE SAs may change: a re-authentication)
    lnet: int
    lmask: int
    lplen: int
    rnet: int
    rmask: int
    rplen: int

    @property
    def udp(self) -> bool:
        return self.sock is not None

    @property
    def selectors(self) -> tuple[int, int, int, int]:
        return self.lnet, self.lplen, self.rnet, self.rplen


@dataclass(slots=True, eq=False)
class Inbound:
    esp: EspSA
    sa_id: int
    outbound: Outbound  # the other half of the pair: its selectors are this SA's, seen from our side
    seen_data: bool = False

    def admits(self, inner: bytes) -> bool:
        """RFC 4301 5.2: a decrypted packet must come from the peer's selector and go to ours."""
        if len(inner) < 20:
            return False
        src, dst = _ADDRS.unpack_from(inner, 12)
        o = self.outbound
        return src & o.rmask == o.rnet and dst & o.lmask == o.lnet


@dataclass(slots=True, eq=False)
class _Claim:
    """A remote selector and the session that owns it, held while any child of that session uses it."""

    net: int
    mask: int
    plen: int
    owner: int
    children: int = 0

    def overlaps(self, net: int, mask: int, plen: int) -> bool:
        # Two prefixes overlap iff they agree under the shorter one's mask.
        m = mask if plen <= self.plen else self.mask
        return net & m == self.net & m

    def __str__(self) -> str:
        return _text(self.net, self.plen)


class SaTable:
    """Every child SA of every session: routing for outbound packets, SPIs for inbound ones, selector owners."""

    def __init__(self) -> None:
        # SPI → inbound SA. The data path binds this dict once: it is never replaced, only changed.
        self.inbound: dict[int, Inbound] = {}
        # Routed outbound SAs: host selectors (a client's /32, thousands on a concentrator) by address, the
        # rest (a client's 0.0.0.0/0, a few) in a list, most specific first; and every routed SA of a session.
        self._hosts: dict[int, list[Outbound]] = {}
        self._wide: list[Outbound] = []
        self._by_sa: dict[int, list[Outbound]] = {}
        self._routed_by_owner: dict[int, list[Outbound]] = {}
        self._all_by_owner: dict[int, dict[int, Inbound]] = {}  # every pair of a session, oldest first
        self._in_by_sa: dict[int, dict[int, Inbound]] = {}
        self._flows: dict[bytes, Outbound | None] = {}
        # Remote selector owners, the same split: /32 by address, the few wider ones in a list.
        self._host_claims: dict[int, _Claim] = {}
        self._wide_claims: list[_Claim] = []

    # -- install / remove ----------------------------------------------------------------

    def install(self, up: ChildSaUp, peer: str, sock: Any, follows_ike: bool) -> Outbound:
        """Add a child SA pair; it routes at once. SelectorConflict (and nothing changed) if its remote selector
        overlaps one another session owns."""
        lnet, lmask, lplen = parse_selector(up.local_selector)
        rnet, rmask, rplen = parse_selector(up.remote_selector)
        owner = up.session_id or up.sa_id
        claim = self._conflict(owner, rnet, rmask, rplen)
        if claim is not None:
            raise SelectorConflict(f"SA {up.sa_id}: remote selector {up.remote_selector} overlaps {claim}, "
                                   f"owned by session {claim.owner}")
        if up.inbound_spi in self.inbound:  # a reused SPI replaces what it named, with its claim
            self.remove(up.inbound_spi)
        t = make_transform(up.transform, up.key_bits, up.auth)
        out = Outbound(EspSA(up.outbound_spi, t, up.keymat_out, outbound=True), up.sa_id, up.inbound_spi,
                       (peer, up.remote_port if up.udp_encap else 0), sock, follows_ike, owner,
                       lnet, lmask, lplen, rnet, rmask, rplen)
        # The newest SA of the session for a selector pair wins (a rekey, or the same tunnel under a re-
        # authenticated IKE SA); the old one stays for inbound until removed.
        for old in [o for o in self._routed_by_owner.get(owner, ()) if o.selectors == out.selectors]:
            self._unroute(old)
        self._route_add(out)
        self._claim(owner, rnet, rmask, rplen)
        entry = Inbound(EspSA(up.inbound_spi, t, up.keymat_in, outbound=False), up.sa_id, out)
        self._all_by_owner.setdefault(owner, {})[up.inbound_spi] = entry
        self.inbound[up.inbound_spi] = entry
        self._in_by_sa.setdefault(up.sa_id, {})[up.inbound_spi] = entry
        return out

    def remove(self, inbound_spi: int) -> Inbound | None:
        """Forget a child SA pair (by our inbound SPI); None if it was not here."""
        entry = self.inbound.pop(inbound_spi, None)
        if entry is None:
            return None
        out = entry.outbound
        routed = out in self._routed_by_owner.get(out.owner, ())
        self._unroute(out)
        self._release(out.owner, out.rnet, out.rplen)
        mine = self._in_by_sa.get(entry.sa_id)
        if mine is not None:
            mine.pop(inbound_spi, None)
            if not mine:
                del self._in_by_sa[entry.sa_id]
        owned = self._all_by_owner.get(out.owner)
        if owned is not None:
            owned.pop(inbound_spi, None)
            if not owned:
                del self._all_by_owner[out.owner]
        if routed and owned:
            # The pair that routed these selectors went before an older one of the same session: the newest left
            # routes again, or the tunnel's traffic would have no SA until the next rekey.
            heir = next((e.outbound for e in reversed(owned.values()) if e.outbound.selectors == out.selectors),
                        None)
            if heir is not None:
                self._route_add(heir)
        return entry

    def move(self, inbound_spi: int, sa_id: int) -> None:
        """A pair now belongs to another IKE SA of its session (a re-authentication took it over): keys, SPIs,
        selectors, owner and route stay; only the IKE SA it reports to (DPD, peer moves) changes."""
        entry = self.inbound.get(inbound_spi)
        if entry is None or entry.sa_id == sa_id:
            return
        old, out = entry.sa_id, entry.outbound
        mine = self._in_by_sa.get(old, {})
        mine.pop(inbound_spi, None)
        if not mine:
            self._in_by_sa.pop(old, None)
        self._in_by_sa.setdefault(sa_id, {})[inbound_spi] = entry
        routed = self._by_sa.get(old, [])
        if out in routed:
            routed.remove(out)
            if not routed:
                del self._by_sa[old]
            self._by_sa.setdefault(sa_id, []).append(out)
        entry.sa_id = out.sa_id = sa_id

    # -- owners --------------------------------------------------------------------------------

    def owner(self, selector: str) -> int | None:
        """The session owning exactly this remote selector, if any."""
        net, _, plen = parse_selector(selector)
        claim = self._host_claims.get(net) if plen == 32 else next(
            (c for c in self._wide_claims if c.net == net and c.plen == plen), None)
        return None if claim is None else claim.owner

    def _conflict(self, owner: int, net: int, mask: int, plen: int) -> _Claim | None:
        if plen == 32:
            host = self._host_claims.get(net)
            if host is not None and host.owner != owner:
                return host
        else:  # a wide selector (rare on a concentrator) may cover any owned host
            host = next((c for c in self._host_claims.values() if c.owner != owner and c.net & mask == net), None)
            if host is not None:
                return host
        return next((c for c in self._wide_claims if c.owner != owner and c.overlaps(net, mask, plen)), None)

    def _claim(self, owner: int, net: int, mask: int, plen: int) -> None:
        if plen == 32:
            claim = self._host_claims.get(net)
            if claim is None:
                claim = self._host_claims[net] = _Claim(net, mask, plen, owner)
        else:
            claim = next((c for c in self._wide_claims if c.net == net and c.plen == plen), None)
            if claim is None:
                claim = _Claim(net, mask, plen, owner)
                self._wide_claims.append(claim)
        claim.children += 1

    def _release(self, owner: int, net: int, plen: int) -> None:
        if plen == 32:
            claim = self._host_claims.get(net)
        else:
            claim = next((c for c in self._wide_claims if c.net == net and c.plen == plen), None)
        if claim is None or claim.owner != owner:
            return
        claim.children -= 1
        if claim.children <= 0:
            if plen == 32:
                del self._host_claims[net]
            else:
                self._wide_claims.remove(claim)

    # -- routing ---------------------------------------------------------------------------------

    def route(self, pkt: bytes) -> Outbound | None:
        """The outbound SA for an IPv4 packet (at least 20 bytes), by its source and destination: the remote
        selector must hold the destination and the local selector the source. Cached per address pair."""
        key = pkt[12:20]
        try:
            return self._flows[key]
        except KeyError:
            pass
        src, dst = _ADDRS.unpack(key)
        found = next((o for o in self._hosts.get(dst, ()) if src & o.lmask == o.lnet), None)
        if found is None:
            found = next((o for o in self._wide if dst & o.rmask == o.rnet and src & o.lmask == o.lnet), None)
        if len(self._flows) >= FLOW_CACHE_MAX:
            self._flows.clear()
        self._flows[key] = found
        return found

    def _route_add(self, out: Outbound) -> None:
        if out.rplen == 32:
            self._hosts.setdefault(out.rnet, []).insert(0, out)
        else:
            self._wide.append(out)
            self._wide.sort(key=lambda o: (o.rplen, o.lplen), reverse=True)
        self._by_sa.setdefault(out.sa_id, []).append(out)
        self._routed_by_owner.setdefault(out.owner, []).append(out)
        self._flows.clear()

    def _unroute(self, out: Outbound) -> None:
        if out.rplen == 32:
            group = self._hosts.get(out.rnet, [])
            if out in group:
                group.remove(out)
                if not group:
                    del self._hosts[out.rnet]
        elif out in self._wide:
            self._wide.remove(out)
        for index, key in ((self._by_sa, out.sa_id), (self._routed_by_owner, out.owner)):
            mine = index.get(key, [])
            if out in mine:
                mine.remove(out)
                if not mine:
                    del index[key]
        self._flows.clear()

    # -- where the peer is ---------------------------------------------------------------------

    def update_remote(self, sa_id: int, remote: tuple[str, int]) -> None:
        """IKE floated or was rebound: the session's NAT-T ESP follows it. IPsec over UDP learns its own port."""
        for entry in self._in_by_sa.get(sa_id, {}).values():
            if entry.outbound.follows_ike:
                entry.outbound.remote = remote

    def learn_remote(self, sa_id: int, sock: Any, remote: tuple[str, int]) -> None:
        """IPsec over UDP: authenticated ESP (or the only session a keepalive can be from) tells the peer's
        translated address and port, for the session's SAs on that transport that do not follow IKE."""
        for entry in self._in_by_sa.get(sa_id, {}).values():
            o = entry.outbound
            if not o.follows_ike and o.sock == sock:
                o.remote = remote

    # -- views -------------------------------------------------------------------------------------

    @property
    def outbound(self) -> list[Outbound]:
        """Every routed outbound SA (a view for status pages; the data path uses the indexes)."""
        return [o for group in self._by_sa.values() for o in group]

    def children(self, sa_id: int) -> list[Inbound]:
        """A session's child SAs, superseded ones included until they are removed."""
        return list(self._in_by_sa.get(sa_id, {}).values())
