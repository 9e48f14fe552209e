"""What the IKE core's events add up to: counters that only go up, for the `stats` command and the metrics.

The daemons hand every event they take from the core (IkeDriver → `_on_event`) to `IkeCounters.note`, so each fact
is counted where it arises, once, and nothing here looks at the wire. What the core keeps itself (its refusal
counters `IkeEndpoint.stats`, the half-open count) and what the data path keeps (bytes, packets, drops) are read
where they live, not copied.

- set-ups: IKE SAs that completed phase 1 and XAUTH (Phase1Established), re-authentications included;
- failures, by cause: IKE SAs that ended before that (a wrong pre-shared key, XAUTH, no proposal, no answer, ...).
  A peer that deletes an SA right after this side refused it (a failed XAUTH, a fatal refusal) gave up because of
  that refusal: the failure goes to the refusal's cause, not to "peer_deleted" (a vpnc told its password is wrong
  deletes its SA rather than try again);
- ends, by cause: IKE SAs that had been set up and then ended (DPD, the peer's DELETE, a logout, a rekey, ...).
  `failures` and `ends` together count every IkeSaDown once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from natt.ike.events import (
    Cause,
    ChildSaDown,
    ChildSaMoved,
    ChildSaUp,
    DpdEvent,
    ExchangeFailed,
    IkeEvent,
    IkeSaDown,
    KeepaliveReceived,
    KeepaliveSent,
    MessageReceived,
    MessageSent,
    NatDetection,
    NattRefused,
    Phase1Established,
    PortFloated,
    Reauthenticated,
    XauthResult,
)

# DpdEvent.kind → the counter's name (RFC 3706's R-U-THERE is the request, R-U-THERE-ACK the ack).
DPD_KINDS = {"request-sent": "requests_sent", "request-received": "requests_received", "ack-sent": "acks_sent",
             "ack-received": "acks_received", "heartbeat-received": "heartbeats_received"}


def cause_label(cause: Cause) -> str:
    """A cause as a counter key and metric label: `Cause.DPD_TIMEOUT` → "dpd_timeout"."""
    return cause.name.lower()


@dataclass
class IkeCounters:
    setups: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    ends: Counter[str] = field(default_factory=Counter)
    rekeys_phase1: int = 0  # re-authentications that took a session over (Reauthenticated)
    # IPsec SA pairs that replaced an older pair of their IKE SA for the same selectors, whichever side rekeyed. The
    # pairs a re-authenticating client makes for its new IKE SA belong to that phase 1 rekey, on both sides (the
    # concentrator's new SA holds the old pairs, moved to it: ChildSaMoved; the client's holds none).
    rekeys_phase2: int = 0
    child_sas: int = 0  # IPsec SA pairs set up, rekeys included
    dpd: Counter[str] = field(default_factory=Counter)  # DPD_KINDS values
    messages_sent: int = 0  # IKE messages, retransmissions included
    messages_received: int = 0
    retransmissions: int = 0  # ours: a timer resent a message the peer had not answered
    retransmits_answered: int = 0  # the peer's: it resent a request, answered again from the reply cache
    keepalives_sent: int = 0  # NAT keepalives (RFC 3948 4), and Cisco IPsec-over-UDP ones
    keepalives_received: int = 0
    natt_negotiated: int = 0  # IKE SAs that negotiated NAT-T (NatDetection)
    natt_refused: int = 0  # peers that offered NAT-T to a concentrator with NAT transparency off
    port_floats: int = 0  # a peer's IKE/NAT-T endpoint moved to 4500 (RFC 3947 float)
    nat_rebinds: int = 0  # ... or moved again once there (a NAT mapping changed)
    xauth_failures: int = 0  # XAUTH answers refused (each try; a user may have several before the SA fails)
    # IKE SAs that completed their set-up and have not ended yet: an IkeSaDown for one of them is an end, for any
    # other a failure. Bounded by the live IKE SAs.
    _set_up: set[int] = field(default_factory=set, repr=False)
    # IKE SAs not set up yet that this side refused (XAUTH, a fatal refusal): the cause, should the peer give up.
    _refused: dict[int, Cause] = field(default_factory=dict, repr=False)
    # Inbound SPIs of pairs a re-authentication moved to a new IKE SA, until they go.
    _moved: set[int] = field(default_factory=set, repr=False)

    def note(self, event: IkeEvent) -> None:
        """Count one event of the core."""
        if isinstance(event, MessageSent):
            self.messages_sent += 1
            if event.retransmit and event.exchange:
                self.retransmits_answered += 1
            elif event.retransmit:
                self.retransmissions += 1
        elif isinstance(event, MessageReceived):
            self.messages_received += 1
        elif isinstance(event, Phase1Established):
            self.setups += 1
            self._set_up.add(event.sa_id)
            self._refused.pop(event.sa_id, None)
        elif isinstance(event, IkeSaDown):
            refused = self._refused.pop(event.sa_id, None)
            if event.sa_id in self._set_up:
                self._set_up.discard(event.sa_id)
                self.ends[cause_label(event.cause)] += 1
            elif refused is not None and event.cause is Cause.PEER_DELETED:
                self.failures[cause_label(refused)] += 1
            else:
                self.failures[cause_label(event.cause)] += 1
        elif isinstance(event, XauthResult):
            if not event.ok:
                self.xauth_failures += 1
                if event.sa_id not in self._set_up:
                    self._refused[event.sa_id] = Cause.XAUTH_FAILED
        elif isinstance(event, ExchangeFailed):
            if event.fatal and event.sa_id and event.sa_id not in self._set_up:
                self._refused[event.sa_id] = event.cause
        elif isinstance(event, ChildSaUp):
            self.child_sas += 1
            if event.rekey_of is not None or (event.replaces is not None and event.replaces not in self._moved):
                self.rekeys_phase2 += 1
        elif isinstance(event, ChildSaMoved):
            self._moved.add(event.inbound_spi)
        elif isinstance(event, ChildSaDown):
            self._moved.discard(event.inbound_spi)
        elif isinstance(event, Reauthenticated):
            self.rekeys_phase1 += 1
        elif isinstance(event, DpdEvent):
            self.dpd[DPD_KINDS.get(event.kind, event.kind.replace("-", "_"))] += 1
        elif isinstance(event, KeepaliveSent):
            self.keepalives_sent += 1
        elif isinstance(event, KeepaliveReceived):
            self.keepalives_received += 1
        elif isinstance(event, NatDetection):
            if event.natt_negotiated:
                self.natt_negotiated += 1
        elif isinstance(event, NattRefused):
            self.natt_refused += 1
        elif isinstance(event, PortFloated):
            if event.rebind:
                self.nat_rebinds += 1
            else:
                self.port_floats += 1

    @property
    def dpd_timeouts(self) -> int:
        """Set-up IKE SAs that DPD declared dead (one of `ends`; a count of its own for the pages and metrics)."""
        return self.ends[cause_label(Cause.DPD_TIMEOUT)]

    def ike(self) -> dict[str, Any]:
        """The IKE section of a `stats` reply (JSON)."""
        return {
            "setups": self.setups,
            "failures": dict(self.failures),
            "ends": dict(self.ends),
            "rekeys": {"phase1": self.rekeys_phase1, "phase2": self.rekeys_phase2},
            "child_sas": self.child_sas,
            "dpd": {**dict.fromkeys(DPD_KINDS.values(), 0), **self.dpd, "timeouts": self.dpd_timeouts},
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "retransmissions": self.retransmissions,
            "retransmits_answered": self.retransmits_answered,
            "xauth_failures": self.xauth_failures,
        }

    def natt(self) -> dict[str, Any]:
        """The NAT-T section's counters (the daemon adds what it sees live, such as sessions using NAT-T)."""
        return {
            "negotiated": self.natt_negotiated,
            "refused": self.natt_refused,
            "keepalives_sent": self.keepalives_sent,
            "keepalives_received": self.keepalives_received,
            "port_floats": self.port_floats,
            "rebinds": self.nat_rebinds,
        }
