"""IKE core events → the two devices' logs. The exchanges never print; this module words them.

One IkeLogger per daemon: role "concentrator" writes the VPN 3000's Filterable Event Log lines,
role "client" the VPN Client's "Sev=Info/N CLASS/0x6300xxxx" lines. Both come from the catalogue.
"""

from __future__ import annotations

from typing import Any

from natt.events import catalog as C
from natt.events.catalog import Message
from natt.events.model import LogEntry
from natt.events.render import render_client, render_concentrator, render_json
from natt.events.store import EventLog
from natt.ike import events as E
from natt.ike.events import Cause
from natt.ike.ikesa import IkeSA
from natt.wire.constants import (
    EXCHANGE_NAMES,
    PAYLOAD_DECODE_NAMES,
    PAYLOAD_LOG_NAMES,
    ExchangeType,
    NotifyType,
    PayloadType,
    ProtocolId,
    VendorId,
    config_attr_name,
    notify_log_name,
    notify_name,
)
from natt.wire.message import exchange_log_name

_PEER_SUPPORT = [
    (VendorId.CISCO_UNITY_PREFIX, C.PEER_IS_UNITY),
    (VendorId.XAUTH, C.PEER_SUPPORTS_XAUTH),
    (VendorId.DPD, C.PEER_SUPPORTS_DPD),
    (VendorId.NATT_RFC3947, C.PEER_SUPPORTS_NAT_T),
    (VendorId.NATT_DRAFT_02_N, C.PEER_SUPPORTS_NAT_T),
    (VendorId.NATT_DRAFT_02, C.PEER_SUPPORTS_NAT_T),
    (VendorId.NATT_DRAFT_03, C.PEER_SUPPORTS_NAT_T),
    (VendorId.CISCO_FRAGMENTATION, C.PEER_SUPPORTS_FRAGMENTATION),
]
_FAILURES = {
    NotifyType.AUTHENTICATION_FAILED: C.AUTH_FAILED,
    NotifyType.NO_PROPOSAL_CHOSEN: C.PROPOSAL_REFUSED,
}
# ExchangeFailed causes worded by one catalogue entry with the _failure_fields; the rest have their own handling
# in _on_ExchangeFailed, or are EXCHANGE_REFUSED (refused, though not malformed).
_BY_CAUSE = {
    Cause.AUTH_FAILED: C.AUTH_FAILED,
    Cause.NO_PROPOSAL: C.PROPOSAL_REFUSED,
    Cause.MALFORMED: C.DECODE_ERROR,
    Cause.UNDECRYPTABLE: C.DECODE_ERROR,
    Cause.OTHER: C.DECODE_ERROR,
}
# Causes that belong to one phase whatever the reason text says.
_CAUSE_PHASE = {Cause.AUTH_FAILED: 1, Cause.UNKNOWN_GROUP: 1, Cause.SESSION_LIMIT: 1, Cause.SELECTOR_REFUSED: 2}


def _client_payloads(types: tuple[int, ...], notifies: tuple[int, ...], encrypted: bool) -> str:
    names, n = [], iter(notifies)
    for t in types:
        name = PAYLOAD_LOG_NAMES.get(t, str(t))
        if t == PayloadType.NOTIFY:
            code = next(n, None)
            if code is not None:
                name = f"NOTIFY:{notify_log_name(code)}"
        names.append(name)
    return C.isakmp_payloads(names, encrypted=encrypted)


def _decode_chain(types: tuple[int, ...], terminated: bool) -> str:
    return C.payload_chain(((PAYLOAD_DECODE_NAMES.get(t, "UNKNOWN"), int(t)) for t in types), terminated=terminated)


class IkeLogger:
    def __init__(self, role: str, capacity: int = 10000, *, reveal_secrets: bool = False,
                 max_severity: int = 13, rate_limit: float = 0.0) -> None:
        if role not in ("concentrator", "client"):
            raise ValueError(f"role {role!r}")
        self.role = role
        self.log = EventLog(capacity, reveal_secrets=reveal_secrets, max_severity=max_severity,
                            rate_limit=rate_limit)
        self._children_up: dict[int, int] = {}  # session → its child SAs so far (the client's wording)
        self._session_of: dict[int, int] = {}  # IKE SA → its session
        self._attempted: set[int] = set()
        self._core_now: float | None = None

    # -- writing ------------------------------------------------------------------------------

    def _emit(self, msg: Message, now: float, peer: str | None, sa: IkeSA | None = None, *,
              scoped: bool = False, **fields: Any) -> LogEntry | None:
        group = user = None
        if scoped and sa is not None and self.role == "concentrator":
            group = sa.group.name if sa.group else None
            user = sa.user or None
        return self.log.emit(msg, now, peer, group=group, user=user, **fields)

    def _wants(self, msg: Message) -> bool:
        """Whether `msg` would be kept: lets a handler skip building fields the log would drop."""
        return msg.severity <= self.log.max_severity

    def record(self, event: E.IkeEvent, now: float, sa: IkeSA | None, *, core_now: float | None = None) -> None:
        """Log what `event` says. `now` is the log's clock (epoch seconds); `core_now` the time the core was
        given with the call that produced the event, to place core times (a lockout's end) on the log's clock.
        Without it the two clocks are taken to be one."""
        handler = getattr(self, f"_on_{type(event).__name__}", None)
        if handler is not None:
            self._core_now = core_now
            handler(event, now, sa)

    def _log_time(self, core_time: float, now: float) -> float:
        return core_time if self._core_now is None else now + (core_time - self._core_now)

    def _on_Overload(self, e: E.Overload, now: float, sa: IkeSA | None) -> None:
        dropped = ", ".join(f"{reason} {count}" for reason, count in e.dropped)
        top = ", ".join(f"{source} ({count})" for source, count in e.top) or "none"
        self.log.emit(C.IKE_OVERLOAD, now, total=sum(c for _r, c in e.dropped), seconds=e.seconds, dropped=dropped,
                      evicted=e.evicted, sources=e.sources, top=top, half_open=e.half_open)

    def unlocked(self, now: float, user: str | None, source: str | None, cleared: int) -> None:
        """The audit line of an operator's unlock (natt-concentrator unlock)."""
        self.log.emit(C.XAUTH_UNLOCKED, now, what=C.unlock_scope(user, source), cleared=cleared)

    def admin_command(self, now: float, *, command: str, actor: str, uid: int, pid: int, target: str,
                      outcome: str) -> None:
        """The audit line of an admin command on the control socket, done or failed."""
        self.log.emit(C.ADMIN_COMMAND, now, command=command, actor=actor, uid=uid, pid=pid, target=target,
                      outcome=outcome)

    def admin_refused(self, now: float, *, command: str, actor: str, uid: int, pid: int, needs: str) -> None:
        """The audit line of a command refused for want of access."""
        self.log.emit(C.ADMIN_REFUSED, now, command=command, actor=actor, uid=uid, pid=pid, needs=needs)

    def first_data(self, spi: int, sa_id: int, now: float) -> None:
        if self.role == "concentrator":
            self.log.emit(C.INBOUND_SA_DATA, now)

    def diagnosis(self, text: str, now: float, sa: IkeSA | None) -> None:
        self.log.emit(C.DIAGNOSIS, now, sa.peer if sa else None, text=text)

    # -- one method per core event ---------------------------------------------------------------

    def _on_MessageSent(self, e: E.MessageSent, now: float, sa: IkeSA | None) -> None:
        if e.retransmit:
            if e.exchange:  # a cached reply answered a retransmitted request
                self.log.emit(C.RETRANSMITTING, now, e.peer, exchange=EXCHANGE_NAMES.get(e.exchange, e.exchange),
                              msgid=e.message_id, attempt=1)
            elif self.role == "client":  # our timer resent a message the peer has not answered
                self.log.emit(C.RESENDING, now, e.peer, what=e.what or "the last message", attempt=e.attempt)
            else:
                self.log.emit(C.RETRANSMITTING, now, e.peer, exchange=e.what or "last", msgid=e.message_id,
                              attempt=e.attempt)
            return
        if self.role == "client":
            if e.exchange in (ExchangeType.AGGRESSIVE, ExchangeType.IDENTITY_PROTECTION) and \
                    e.sa_id not in self._attempted:
                self._attempted.add(e.sa_id)
                self.log.emit(C.IKE_ATTEMPT, now, e.peer)
            self.log.emit(C.ISAKMP_SENDING, now, e.peer, exchange=exchange_log_name(e.exchange),
                          payloads=_client_payloads(e.payloads, e.notifies, e.encrypted))
        elif self._wants(C.MESSAGE_SENT):
            self._emit(C.MESSAGE_SENT, now, e.peer, msgid=e.message_id,
                       payloads=_decode_chain(e.payloads, terminated=False), length=0)

    def _on_MessageReceived(self, e: E.MessageReceived, now: float, sa: IkeSA | None) -> None:
        if self.role == "client":
            self.log.emit(C.ISAKMP_PACKET_RECEIVED, now, e.peer)
            self.log.emit(C.ISAKMP_RECEIVING, now, e.peer, exchange=exchange_log_name(e.exchange),
                          payloads=_client_payloads(e.payloads, e.notifies, e.encrypted))
            return
        first = e.payloads[0] if e.payloads else 0
        if self._wants(C.ISAKMP_HEADER_DECODE):
            self.log.emit(C.ISAKMP_HEADER_DECODE, now, e.peer, icookie=C.spaced_hex(e.icookie),
                          rcookie=C.spaced_hex(e.rcookie), next_payload=C.decode_label(
                              PAYLOAD_DECODE_NAMES.get(first, "UNKNOWN"), int(first)),
                          exchange=f"Oakley {EXCHANGE_NAMES.get(e.exchange, e.exchange)}",
                          flags=C.isakmp_flags(e.flags), msgid=e.message_id, length=e.length)
        if self._wants(C.MESSAGE_RECEIVED):
            self.log.emit(C.MESSAGE_RECEIVED, now, e.peer, msgid=e.message_id,
                          payloads=_decode_chain(e.payloads, terminated=True), length=e.length)
        if e.encrypted and sa is not None and sa.user:
            self._emit(C.PROCESSING_HASH, now, e.peer, sa, scoped=True)

    def _on_VendorIdSeen(self, e: E.VendorIdSeen, now: float, sa: IkeSA | None) -> None:
        if self.role != "client":
            return
        self.log.emit(C.VENDOR_ID_PAYLOAD, now, e.peer, vid=e.data)
        for prefix, msg in _PEER_SUPPORT:
            if e.data.startswith(prefix):
                self.log.emit(msg, now, e.peer)
                break

    def _on_NatDetection(self, e: E.NatDetection, now: float, sa: IkeSA | None) -> None:
        msg = C.NAT_DETECTION_STATUS if self.role == "client" else C.NAT_DETECTED
        self.log.emit(msg, now, e.peer, remote=C.nat_word(e.remote_behind_nat), local=C.nat_word(e.local_behind_nat))

    def _on_PortFloated(self, e: E.PortFloated, now: float, sa: IkeSA | None) -> None:
        if e.rebind:
            self._emit(C.PEER_REBOUND, now, e.peer, sa, scoped=True, address=e.remote_address or e.peer,
                       remote_port=e.remote_port, via="ESP packet" if e.by_esp else "IKE message")
            return
        self.log.emit(C.PORT_FLOATED, now, e.peer, local_port=e.local_port, remote_port=e.remote_port)

    def _on_WeakAlgorithm(self, e: E.WeakAlgorithm, now: float, sa: IkeSA | None) -> None:
        self.log.emit(C.WEAK_ALGORITHM, now, e.peer, what=e.what)

    def _on_NattRefused(self, e: E.NattRefused, now: float, sa: IkeSA | None) -> None:
        self.log.emit(C.NAT_T_DISABLED, now, e.peer)

    def _on_XauthRequested(self, e: E.XauthRequested, now: float, sa: IkeSA | None) -> None:
        if self.role == "client":
            self.log.emit(C.XAUTH_LAUNCH, now, e.peer)
            self.log.emit(C.XAUTH_RETURNED, now, e.peer)

    def _on_XauthResult(self, e: E.XauthResult, now: float, sa: IkeSA | None) -> None:
        if e.ok:
            self.log.emit(C.XAUTH_ACCEPTED, now, e.peer, user=e.user)
        else:
            self.log.emit(C.XAUTH_FAILED, now, e.peer, user=e.user, reason=e.reason or "refused")

    def _on_Phase1Established(self, e: E.Phase1Established, now: float, sa: IkeSA | None) -> None:
        if self.role == "client":
            self.log.emit(C.PHASE1_ESTABLISHED, now, e.peer, count=1)
            if sa is not None and sa.profile is not None and sa.profile.nat_traversal and sa.natt is None:
                self.log.emit(C.NAT_T_NOT_OFFERED, now, e.peer)
            return
        self._emit(C.PHASE1_COMPLETED, now, e.peer, sa, scoped=True, mode=e.mode, cipher=e.cipher, hash=e.hash,
                   dh_group=e.dh_group)
        if sa is not None and sa.natt is None and sa.remote[1] != 500:
            self.log.emit(C.NAT_WITHOUT_NAT_T, now, e.peer, port=sa.remote[1])

    def _on_ModeConfigDone(self, e: E.ModeConfigDone, now: float, sa: IkeSA | None) -> None:
        if self.role == "concentrator":
            self.log.emit(C.ADDRESS_ASSIGNED, now, e.peer, address=e.address, user=sa.user if sa else "")
            return
        self.log.emit(C.MODECFG_REPLY_ADDRESS, now, e.peer, attribute="INTERNAL_IPV4_ADDRESS", value=e.address)
        if e.save_password is not None:
            self.log.emit(C.MODECFG_REPLY_VALUE, now, e.peer, attribute="MODECFG_UNITY_SAVEPWD",
                          value=int(e.save_password))
        if e.pfs is not None:
            self.log.emit(C.MODECFG_REPLY_VALUE, now, e.peer, attribute="MODECFG_UNITY_PFS", value=int(e.pfs))
        if e.app_version:
            self.log.emit(C.MODECFG_REPLY_STRING, now, e.peer, attribute=config_attr_name(7), value=e.app_version)
        if e.natt_port is not None:
            self.log.emit(C.MODECFG_REPLY_NAT_T_PORT, now, e.peer, port=e.natt_port)
        self.log.emit(C.MODECFG_RECEIVED, now, e.peer)

    def _on_NotifyReceived(self, e: E.NotifyReceived, now: float, sa: IkeSA | None) -> None:
        if self.role == "concentrator":
            self.log.emit(C.NOTIFY_DECODE, now, e.peer, doi="IPSEC (1)",
                          protocol=f"{ProtocolId(e.protocol_id).name if e.protocol_id in (1, 3) else e.protocol_id}"
                                   f" ({e.protocol_id})",
                          notify=_notify_decode_name(e.notify_type), spi=C.spaced_hex(e.spi),
                          length=12 + len(e.spi) + len(e.data))
        elif e.notify_type == NotifyType.RESPONDER_LIFETIME:
            from natt.ike.proposals import lifetime_seconds

            seconds = lifetime_seconds(e.data, e.protocol_id)
            if seconds:
                self.log.emit(C.RESPONDER_LIFETIME, now, e.peer, seconds=seconds)
        if e.notify_type < NotifyType.CONNECTED:
            self.log.emit(_FAILURES.get(e.notify_type, C.DECODE_ERROR), now, e.peer,
                          **_failure_fields(e.notify_type, f"peer says {notify_name(e.notify_type)}"))

    def _on_DpdEvent(self, e: E.DpdEvent, now: float, sa: IkeSA | None) -> None:
        if self.role == "client":
            if e.kind == "request-sent":
                self.log.emit(C.PING_PUBLIC_SA, now, e.peer)
            return
        if e.kind == "heartbeat-received":
            self._emit(C.KEEPALIVE_TYPE_MISMATCH, now, e.peer, sa, scoped=True, kind="Altiga keep-alive")
        elif e.kind == "ack-sent":
            self._emit(C.DPD_ACK_SENT, now, e.peer, sa, scoped=True, seq=e.seq)
        elif e.kind == "request-sent":
            self._emit(C.DPD_REQUEST_SENT, now, e.peer, sa, scoped=True, seq=e.seq)

    def _on_KeepaliveSent(self, e: E.KeepaliveSent, now: float, sa: IkeSA | None) -> None:
        if self.role == "concentrator":
            self.log.emit(C.NAT_KEEPALIVE_SENT, now, e.peer)

    def _on_KeepaliveReceived(self, e: E.KeepaliveReceived, now: float, sa: IkeSA | None) -> None:
        if self.role == "concentrator":
            self.log.emit(C.NAT_KEEPALIVE_RECEIVED, now)

    def _on_CommittedByEsp(self, e: E.CommittedByEsp, now: float, sa: IkeSA | None) -> None:
        self._emit(C.QM_COMMITTED_BY_ESP, now, e.peer, sa, scoped=True, msgid=e.message_id, inbound_spi=e.inbound_spi)

    def _on_Reauthenticated(self, e: E.Reauthenticated, now: float, sa: IkeSA | None) -> None:
        self._emit(C.REAUTHENTICATED, now, e.peer, sa, scoped=True, new_sa=e.sa_id, old_sa=e.old_sa_id)

    def _on_ChildSaUp(self, e: E.ChildSaUp, now: float, sa: IkeSA | None) -> None:
        old = e.rekey_of if e.rekey_of is not None else e.replaces
        if old is not None:
            self._emit(C.PHASE2_REKEYED, now, e.peer, sa, scoped=True,
                       who="started here" if e.rekey_of is not None else "started by the peer",
                       inbound_spi=e.inbound_spi, outbound_spi=e.outbound_spi, old_spi=old, lifetime=e.lifetime)
        if self.role == "client":
            self.log.emit(C.IPSEC_SA_LOADING, now, e.peer, msgid=e.message_id, outbound_spi=e.outbound_spi,
                          inbound_spi=e.inbound_spi)
            # Counted per session: the tunnels a re-authentication moves are more of the same connection.
            key = e.session_id or e.sa_id
            self._session_of[e.sa_id] = key
            count = self._children_up.get(key, 0) + 1
            self._children_up[key] = count
            if count == 1:
                self.log.emit(C.SECURE_CONNECTION_ESTABLISHED, now, e.peer)
                self.log.emit(C.CONNECTION_ESTABLISHED, now, e.peer)
            else:
                self.log.emit(C.ADDITIONAL_PHASE2, now, e.peer)
            return
        self._emit(C.QM_KEY_GENERATING, now, e.peer, sa, scoped=True)
        self._emit(C.QM_KEY_GENERATING, now, e.peer, sa, scoped=True)
        if e.udp_encap and sa is not None and sa.cisco_udp_port is not None:
            self._emit(C.IPSEC_OVER_UDP, now, e.peer, sa, scoped=True, port=e.local_port)
        elif e.udp_encap:
            self._emit(C.NAT_T_NEGOTIATED, now, e.peer, sa, scoped=True)
        dst, _, bits = e.local_selector.partition("/")
        self._emit(C.LOADING_SUBNET, now, e.peer, sa, scoped=True, dst=dst, mask=_mask(int(bits or 32)),
                   src=e.remote_selector.partition("/")[0])
        self._emit(C.SECURITY_NEGOTIATION_COMPLETE, now, e.peer, sa, scoped=True, role="Responder",
                   inbound_spi=e.inbound_spi, outbound_spi=e.outbound_spi)
        self._emit(C.PHASE2_COMPLETED, now, e.peer, sa, scoped=True, msgid=e.message_id)

    def _on_ChildSaDown(self, e: E.ChildSaDown, now: float, sa: IkeSA | None) -> None:
        self.log.emit(C.IPSEC_SA_DELETED, now, e.peer, inbound_spi=e.inbound_spi, outbound_spi=e.outbound_spi,
                      reason=e.reason)

    def _on_IkeSaDown(self, e: E.IkeSaDown, now: float, sa: IkeSA | None) -> None:
        key = self._session_of.pop(e.sa_id, e.sa_id)
        if e.cause is Cause.REKEYED:  # its successor carries the session (REAUTHENTICATED said so)
            self.log.emit(C.IKE_SA_DELETED, now, e.peer, reason=e.reason)
            return
        if e.cause is Cause.DPD_TIMEOUT:
            self.log.emit(C.DPD_TIMEOUT, now, e.peer, detail=_detail(e.reason, e.cause))
        self.log.emit(C.IKE_SA_DELETED, now, e.peer, reason=e.reason)
        if self.role == "client":
            self.log.emit(C.KEYS_DELETED, now)
            self.log.emit(C.CONNECTION_TERMINATED, now, e.peer, reason=e.reason)
            self._children_up.pop(key, None)

    def _on_ExchangeFailed(self, e: E.ExchangeFailed, now: float, sa: IkeSA | None) -> None:
        detail = _detail(e.reason, e.cause)
        if e.cause in (Cause.XAUTH_FAILED, Cause.XAUTH_THROTTLED):
            self.log.emit(C.XAUTH_FAILED, now, e.peer, user=sa.user if sa and sa.user else "", reason=detail)
        elif e.cause is Cause.SESSION_LIMIT:
            self.log.emit(C.SESSION_LIMIT_REACHED, now, e.peer, detail=detail)
        elif e.cause is Cause.RETRANSMIT_TIMEOUT:
            self.log.emit(C.PEER_NOT_RESPONDING, now, e.peer, detail=detail)
        elif e.cause is Cause.POOL_EXHAUSTED:
            pool = sa.group.pool if sa is not None and sa.group is not None else "of the group"
            self.log.emit(C.ADDRESS_POOL_EXHAUSTED, now, e.peer, user=sa.user if sa and sa.user else "", pool=pool)
        else:
            self.log.emit(_BY_CAUSE.get(e.cause, C.EXCHANGE_REFUSED), now, e.peer,
                          **_failure_fields(e.notify, detail, phase=_CAUSE_PHASE.get(e.cause)))

    def _on_MessageRefused(self, e: E.MessageRefused, now: float, sa: IkeSA | None) -> None:
        # Emitted even when filtered (cheap fields): the log then still counts them (RPT).
        self._emit(C.MESSAGE_REFUSED, now, e.peer, sa, scoped=True, exchange=EXCHANGE_NAMES.get(e.exchange, e.exchange),
                   state=e.state, kind=e.kind, cause=e.cause.value)

    def _on_XauthLockout(self, e: E.XauthLockout, now: float, sa: IkeSA | None) -> None:
        until = None if e.until is None else self._log_time(e.until, now)
        fields: dict[str, Any] = {"failures": e.failures, "until": C.lockout_until(until), "until_time": until}
        if e.kind == "user":
            self.log.emit(C.XAUTH_USER_LOCKED, now, e.peer, username=e.key, **fields)
        else:
            self.log.emit(C.XAUTH_SOURCE_LOCKED, now, e.peer, address=e.key, **fields)

    # -- reading ---------------------------------------------------------------------------------

    def render(self, entry: LogEntry) -> str:
        return render_concentrator(entry) if self.role == "concentrator" else render_client(entry)

    def query(self, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Entries as {"text": rendered, ...json fields}, filtered as the CLI asks."""
        classes = args.get("classes")
        severity = _severity_range(args.get("severity"))
        since = args.get("since")
        entries = self.log.filter(classes=classes, severity=severity, peer=args.get("peer"),
                                  since_seq=int(since) if since is not None else None)
        return [self.as_item(e) for e in entries]

    def as_item(self, entry: LogEntry) -> dict[str, Any]:
        """The JSON of an entry for the control socket: `text` as the device shows it (wrapped at 80 columns on
        the concentrator), `message` whole (what a program should search)."""
        return {**render_json(entry), "message": entry.text, "text": self.render(entry)}

    def matches(self, entry: LogEntry, args: dict[str, Any]) -> bool:
        return bool(self.log_filter_one(entry, args))

    @staticmethod
    def log_filter_one(entry: LogEntry, args: dict[str, Any]) -> bool:
        classes = args.get("classes")
        low, high = _severity_range(args.get("severity")) or (1, 13)
        return (not classes or entry.cls.value in classes) and low <= entry.severity <= high


def _severity_range(text: object) -> tuple[int, int] | None:
    if text is None or text == "":
        return None
    if isinstance(text, list | tuple):
        return int(text[0]), int(text[1])
    low, _, high = str(text).partition("-")
    return int(low), int(high or low)


def _mask(bits: int) -> str:
    value = (0xFFFFFFFF << (32 - bits)) & 0xFFFFFFFF if bits else 0
    return ".".join(str((value >> s) & 0xFF) for s in (24, 16, 8, 0))


def _notify_decode_name(code: int) -> str:
    special = {NotifyType.CISCO_HEARTBEAT: "Altiga keep-alive", NotifyType.R_U_THERE: "DPD R-U-THERE",
               NotifyType.R_U_THERE_ACK: "DPD R-U-THERE-ACK"}
    return f"{special.get(code, notify_name(code))} ({code})"


def _failure_fields(notify: int | None, reason: str, *, phase: int | None = None) -> dict[str, Any]:
    """Fields of the failure templates. The phase is the caller's when it knows it (from the cause); only
    without it is it guessed from the text."""
    if phase is None:
        phase = 2 if "phase 2" in reason.lower() or "Quick Mode" in reason else 1
    return {"phase": phase, "reason": reason, "notify": notify_name(notify) if notify is not None else "error",
            "detail": reason}


def _detail(reason: str, cause: Cause) -> str:
    """What a failure's message shows: the core's own words, or the cause's when it gave none."""
    return reason or cause.value
