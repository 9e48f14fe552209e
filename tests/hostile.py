"""A hostile member of the group, built from the real protocol core.

In the seed's world every user holds the group name and its pre-shared key (they sit in each client
profile). This initiator is an ordinary natt IkeEndpoint with that profile; what makes it hostile is
that it also runs exchanges when the protocol says it must not (a Quick Mode during XAUTH, before Mode
Config, for another user's address), forges and replays, and holds back messages it should send.

The same moves serve the protocol tests (tests/protocol/test_hostile.py, in memory) and the lab test
against the real concentrator daemon (run as `python -m tests.hostile`, tests/lab/test_hostile_lab.py).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import sys
import time
from collections.abc import Callable

from natt.ike import quick, transaction
from natt.ike.config import ClientProfile, Phase2Proposal
from natt.ike.endpoint import IkeEndpoint
from natt.ike.events import ChildSaUp, ExchangeFailed, IkeSaDown, NotifyReceived, XauthResult
from natt.ike.ikesa import Datagram, IkeSA, State
from natt.wire.buffer import Writer
from natt.wire.constants import HEADER_LEN, NON_ESP_MARKER, ExchangeType, Flag, NotifyType, ProtocolId
from natt.wire.message import Header, encode_payloads
from natt.wire.payloads import Delete, Notify


def quick_mode(ep: IkeEndpoint, sa: IkeSA, remote_net: str, claim: str | None = None) -> int:
    """Start a Quick Mode now, whatever the state, for `claim` (an address this user was not given) if set."""
    if claim is not None:
        sa.assigned_address = claim
    return quick.start(ep, sa, remote_net)


def mode_config_request(ep: IkeEndpoint, sa: IkeSA) -> None:
    """Ask for an address now, whatever the state (before XAUTH, say)."""
    transaction.start_modecfg(ep, sa)


def forged(sa: IkeSA, exchange: int = ExchangeType.INFORMATIONAL, message_id: int = 0x01020304,
           body_blocks: int = 4) -> bytes:
    """The SA's right cookies, the encryption flag, and a random body: what anyone who saw the cookies can send."""
    body = os.urandom(16 * body_blocks)
    w = Writer()
    Header(sa.icookie, sa.rcookie, 8, exchange, Flag.ENCRYPTION, message_id, HEADER_LEN + len(body)).encode(w)
    return w.getvalue() + body


def plain_notify(sa: IkeSA, notify_type: int = NotifyType.INITIAL_CONTACT) -> bytes:
    """An unencrypted, unauthenticated Informational with the SA's cookies."""
    first, body = encode_payloads([Notify(notify_type, ProtocolId.ISAKMP, sa.icookie + sa.rcookie)])
    w = Writer()
    Header(sa.icookie, sa.rcookie, first, ExchangeType.INFORMATIONAL, 0, 0x0A0B0C0D, HEADER_LEN + len(body)).encode(w)
    return w.getvalue() + body


def delete_spi(ep: IkeEndpoint, sa: IkeSA, spi: int) -> None:
    """A properly protected DELETE (this user's keys) naming an ESP SPI that belongs to someone else."""
    ep.send_hashed(sa, ExchangeType.INFORMATIONAL, ep.new_message_id(sa),
                   [Delete(ProtocolId.IPSEC_ESP, [spi.to_bytes(4, "big")], 4)])


def framed(sa: IkeSA, data: bytes) -> bytes:
    """On 4500 IKE carries the non-ESP marker."""
    return NON_ESP_MARKER + data if sa.floated else data


class Holder:
    """Wraps an endpoint's datagrams_to_send so that chosen datagrams are held back (or dropped)."""

    def __init__(self, ep: IkeEndpoint) -> None:
        self.ep = ep
        self._take = ep.datagrams_to_send
        self.rule: Callable[[IkeSA | None, Header], bool] = lambda sa, h: False
        self.held: list[Datagram] = []
        ep.datagrams_to_send = self._filtered  # type: ignore[method-assign]

    def _filtered(self) -> list[Datagram]:
        out = []
        for d in self._take():
            data = d.data[len(NON_ESP_MARKER):] if d.data.startswith(NON_ESP_MARKER) else d.data
            header = Header.decode(data) if len(data) >= HEADER_LEN else None
            sa = next((s for s in self.ep.sas.values() if header and s.icookie == header.icookie), None)
            if header is not None and self.rule(sa, header):
                self.held.append(d)
            else:
                out.append(d)
        return out

    def release(self) -> list[Datagram]:
        """What was held goes out on the next datagrams_to_send."""
        self.rule = lambda sa, h: False
        held, self.held = self.held, []
        return held


def is_modecfg_request(sa: IkeSA | None, header: Header) -> bool:
    return sa is not None and header.exchange == ExchangeType.TRANSACTION and \
        sa.transactions.get(header.message_id) == "modecfg-reply"


def is_xauth_answer(sa: IkeSA | None, header: Header) -> bool:
    return sa is not None and header.exchange == ExchangeType.TRANSACTION and not sa.xauth_done and \
        sa.transactions.get(header.message_id) != "modecfg-reply"


# -- on real sockets (the lab) --------------------------------------------------------------------------


def _run_socket(args: argparse.Namespace) -> dict[str, object]:
    """One hostile session against a real concentrator. Prints what happened as JSON; bounded in time."""
    local = args.local
    profile = ClientProfile(peer=args.peer, group=args.group, psk=args.psk.encode(), username=args.user,
                            password=args.password, force_natt=True, remote_networks=("0.0.0.0/0",),
                            phase2=(Phase2Proposal(),))
    socks = {}
    for port in (500, 4500):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((local, port))
        s.setblocking(False)
        socks[port] = s
    ep = IkeEndpoint(local)
    holder = Holder(ep)
    # Never send a Mode Config request (the address claim skips it); XAUTH answers held for the bypass attempt.
    # With --after-modecfg the claim takes its own address first, and claims the other one from an established SA.
    after_modecfg = args.attack == "claim" and args.after_modecfg
    holder.rule = lambda sa, h: (is_modecfg_request(sa, h) and not after_modecfg) or \
        (args.attack == "xauth-bypass" and is_xauth_answer(sa, h))
    events: list[object] = []
    t0 = time.monotonic()
    sa_id = ep.connect(profile, t0)
    sa = ep.sas[sa_id]
    own_address = None
    if after_modecfg and sa.initiator is not None:
        sa.initiator.quick_modes_started = True  # no honest Quick Mode for its own address: only the claims
    sent_attack = 0
    deadline = t0 + args.seconds

    def flush() -> None:
        for d in ep.datagrams_to_send():
            socks[d.local_port].sendto(d.data, d.remote)
        while (e := ep.next_event()) is not None:
            events.append(e)

    flush()
    next_attack = 0.0
    while time.monotonic() < deadline:
        readable, _, _ = select.select(list(socks.values()), [], [], 0.1)
        now = time.monotonic()
        for s in readable:
            port = s.getsockname()[1]
            while True:
                try:
                    data, addr = s.recvfrom(65535)
                except BlockingIOError:
                    break
                if port == 4500 and len(data) > 4 and not data.startswith(NON_ESP_MARKER):
                    continue  # ESP: none of ours to decrypt
                ep.receive_datagram(data, addr, port, now)
        t = ep.get_timer()
        if t is not None and t <= now:
            ep.handle_timer(now)
        ready = sa.p1_last_block and (args.attack == "xauth-bypass" or sa.xauth_done)
        if after_modecfg:
            ready = ready and (own_address is not None or sa.state is State.ESTABLISHED)
            if ready and own_address is None:
                own_address = sa.assigned_address  # what Mode Config gave, before the claim overwrites it
        if ready and now >= next_attack and sent_attack < args.tries:
            quick_mode(ep, sa, args.remote_net, claim=args.claim)
            sent_attack += 1
            next_attack = now + 1.0
        flush()
        if sa_id not in ep.sas:
            break
    result = {
        "attack": args.attack,
        "quick_modes_sent": sent_attack,
        "child_sas": sum(isinstance(e, ChildSaUp) for e in events),
        "xauth": [e.ok for e in events if isinstance(e, XauthResult)],
        "notifies": sorted({e.notify_type for e in events if isinstance(e, NotifyReceived)}),
        "failures": [e.reason for e in events if isinstance(e, ExchangeFailed)][:10],
        "down": [e.reason for e in events if isinstance(e, IkeSaDown)],
    }
    if after_modecfg:
        result["own_address"] = own_address
    for s in socks.values():
        s.close()
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="a hostile group member against a concentrator (lab use only)")
    p.add_argument("--peer", required=True)
    p.add_argument("--local", required=True)
    p.add_argument("--group", default="ciscovpn")
    p.add_argument("--psk", required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--attack", choices=["xauth-bypass", "claim"], required=True)
    p.add_argument("--claim", help="the inner address to name as ours (another user's)")
    p.add_argument("--after-modecfg", action="store_true",
                   help="claim: take Mode Config's address first, then claim --claim from the established SA")
    p.add_argument("--remote-net", default="0.0.0.0/0")
    p.add_argument("--tries", type=int, default=5)
    p.add_argument("--seconds", type=float, default=15.0)
    args = p.parse_args(argv)
    json.dump(_run_socket(args), sys.stdout)
    print()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
