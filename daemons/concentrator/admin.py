"""The concentrator's admin commands beyond the views: the audit trail, Ping, and the NAT Transparency switches.

Kept out of daemon.py so that each piece is a function of what it needs (the event log, an IKE SA, the config
file's path and the live policy), testable without a running concentrator.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from natt.events.ikelog import IkeLogger
from natt.events.model import MASK, is_secret_field
from natt.ike.config import ConcentratorPolicy
from natt.ike.ikesa import IkeSA
from natt_daemons.common.config import ConfigError
from natt_daemons.common.control import AuditRecord, ControlError
from natt_daemons.common.tomledit import set_bool, write_config
from natt_daemons.concentrator import ping

log = logging.getLogger("natt.concentrator")

MAX_TARGET = 200  # characters of the command's arguments an audit entry shows


# -- the audit trail ------------------------------------------------------------------------------------------


def target_text(args: dict[str, Any]) -> str:
    """What the command was aimed at, from its arguments (the actor apart): `user=vpnclient1`, or
    `nat_traversal=true`. Anything that looks secret is masked, and the text is kept short."""
    parts = []
    for key, value in args.items():
        if key == "actor" or value is None:
            continue
        shown = MASK if is_secret_field(key) else json.dumps(value, separators=(",", ":"), default=str)
        parts.append(f"{key}={shown.strip(chr(34)) if isinstance(value, str) else shown}")
    text = " ".join(parts) or "-"
    return text if len(text) <= MAX_TARGET else text[: MAX_TARGET - 3] + "..."


def audit(events: IkeLogger, record: AuditRecord, now: float) -> None:
    """One event-log entry per admin or root command: who (actor and uid), what, on what, and how it ended."""
    actor = record.actor[:64]
    if record.refused:
        events.admin_refused(now, command=record.cmd, actor=actor, uid=record.peer.uid, pid=record.peer.pid,
                             needs=record.access)
        return
    outcome = "done" if record.error is None else f"failed: {record.error}"
    events.admin_command(now, command=record.cmd, actor=actor, uid=record.peer.uid, pid=record.peer.pid,
                         target=target_text(record.args), outcome=outcome[:MAX_TARGET])


# -- Ping -----------------------------------------------------------------------------------------------------


async def ping_session(user: str, sa: IkeSA, args: dict[str, Any]) -> dict[str, Any]:
    """Ping the address the session was given, through its tunnel."""
    address = sa.assigned_address
    if not address:
        raise ControlError(f"user {user!r} has no assigned address to ping (Mode Config not done)")
    split = sa.group.split_networks if sa.group else ()
    try:
        count, timeout = ping.bounds(args.get("count", 3), args.get("timeout", 1.0))
        result = await ping.ping(address, count, timeout, source=ping.source_for(split) if split else None)
    except ping.PingError as e:
        raise ControlError(str(e)) from e
    except PermissionError as e:
        raise ControlError(f"cannot open a raw ICMP socket: {e.strerror} (the concentrator needs CAP_NET_RAW)") from e
    log.info("ping %s (%s): %d sent, %d received", user, address, result.sent, result.received)
    return {"user": user, "address": result.address, "sent": result.sent, "received": result.received,
            "rtt_ms": result.rtt_ms}


# -- NAT Transparency -----------------------------------------------------------------------------------------


def settings_view(policy: ConcentratorPolicy) -> dict[str, Any]:
    """The NAT Transparency settings in force: NAT-T, and IPsec over UDP per group."""
    return {
        "nat_traversal": bool(policy.nat_traversal),
        "groups": {name: {"ipsec_over_udp": g.ipsec_over_udp, "ipsec_over_udp_port": g.ipsec_over_udp_port}
                   for name, g in policy.groups.items()},
    }


def _flag(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise ControlError(f"{what} must be true or false, not {value!r}")
    return value


def requested_changes(args: dict[str, Any], policy: ConcentratorPolicy) -> list[tuple[tuple[str, ...], str, bool]]:
    """(table, key, value) for each switch the command names; ControlError for anything else."""
    changes: list[tuple[tuple[str, ...], str, bool]] = []
    if args.get("nat_traversal") is not None:
        changes.append((("concentrator",), "nat_traversal", _flag(args["nat_traversal"], "nat_traversal")))
    groups = args.get("groups") or {}
    if not isinstance(groups, dict):
        raise ControlError("groups must be an object: {\"GROUP\": {\"ipsec_over_udp\": true}}")
    for name, switches in groups.items():
        if name not in policy.groups:
            raise ControlError(f"no group {name!r} (groups: {', '.join(sorted(policy.groups))})")
        if not isinstance(switches, dict) or set(switches) - {"ipsec_over_udp"}:
            raise ControlError(f"group {name!r}: only ipsec_over_udp can be switched here, not {switches!r}")
        if "ipsec_over_udp" in switches:
            changes.append((("groups", name), "ipsec_over_udp",
                            _flag(switches["ipsec_over_udp"], f"groups.{name}.ipsec_over_udp")))
    if not changes:
        raise ControlError("nothing to change: give nat_traversal and/or groups {GROUP: {ipsec_over_udp}}")
    return changes


def apply_running(policy: ConcentratorPolicy, changes: list[tuple[tuple[str, ...], str, bool]]) -> None:
    """The switches applied to the configuration in force only (the VPN 3000's running configuration, before
    "Save"): new sessions get them; a restart or reload goes back to the file."""
    for table, key, value in changes:
        if table == ("concentrator",) and key == "nat_traversal":
            policy.nat_traversal = value
        elif table[0] == "groups" and key == "ipsec_over_udp":
            policy.groups[table[1]].ipsec_over_udp = value


def change_nat_transparency(path: Path, policy: ConcentratorPolicy, args: dict[str, Any],
                            reload: Callable[[], None], apply: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Write the switches into the config file (their lines only, comments kept), then `reload` (SIGHUP's). A
    file the reload refuses is put back as it was, and the old configuration stays in force. A file the daemon
    may not write (the shipped unit's read-only /etc) gets the switches in the running configuration only, and
    the answer says they are not saved. `apply` then does what a reload does beside the policy (ports)."""
    changes = requested_changes(args, policy)
    try:
        old = path.read_text(encoding="utf-8")
        new = old
        for table, key, value in changes:
            new = set_bool(new, table, key, value, where=str(path))
        if new != old:
            write_config(path, new)
    except ConfigError as e:
        raise ControlError(str(e)) from e
    except OSError as e:
        apply_running(policy, changes)
        apply()
        why = (f"cannot write {path}: {e.strerror or e}; applied to the running configuration only (a restart "
               "or reload goes back to the file): to keep it, edit the file (or let the concentrator's user write "
               "it) and send SIGHUP")
        log.warning("NAT transparency changed (%s) in the running configuration only: %s", _done(changes), why)
        return {"saved": False, "note": why}
    try:
        reload()
    except Exception as e:
        if new != old:
            write_config(path, old)
        raise ControlError(f"the changed configuration does not load, so {path} is left as it was: {e}") from e
    log.info("NAT transparency changed (%s): %s, reloaded", _done(changes), "written" if new != old else "already so")
    return {"saved": True, "note": f"written to {path} and reloaded"}


def _done(changes: list[tuple[tuple[str, ...], str, bool]]) -> str:
    return ", ".join(f"{'.'.join((*table[1:], key))}={'on' if value else 'off'}" for table, key, value in changes)
