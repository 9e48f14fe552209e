"""natt-concentrator: run the daemon and look into it."""

from __future__ import annotations

import getpass
import time
from typing import Any

import click

from natt_daemons.common.cli import (
    add_check_command,
    add_keys_command,
    check_config,
    daemon_group,
    emit,
    password_from_stdin,
    request,
    run_daemon,
    setup_logging,
    socket_path,
    stream,
)
from natt_daemons.common.cli import control_options as shared_control_options
from natt_daemons.common.passwords import hash_password
from natt_daemons.common.statstext import stats_text
from natt_daemons.concentrator import config as cfg
from natt_daemons.concentrator import ping

control_options = shared_control_options(cfg.DEFAULT_SOCKET)


def _path(sock: str | None, config: str | None) -> str:
    return socket_path(sock, config, cfg.load, cfg.DEFAULT_SOCKET)


@daemon_group("natt-concentrator", "the concentrator")
def main() -> None:
    """IKEv1 concentrator with NAT-Traversal and userspace ESP."""


def _summary(s: cfg.ConcentratorSettings) -> str:
    groups = ", ".join(f"{name} (pool {g.pool})" for name, g in s.policy.groups.items())
    return (f"address {s.address}, NAT-T {'on' if s.policy.nat_traversal else 'off'}, "
            f"{len(s.policy.groups)} group(s): {groups}; {len(s.users)} user(s); control socket {s.control_socket}"
            + "".join(f" ({k} {v})" for k, v in s.control_groups.items()))


def _check(config: str) -> None:
    check_config(lambda: cfg.load(config), _summary)


@main.command()
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="validate the config and exit (0: fine, 2: not); nothing is bound")
@click.option("-v", "--verbose", is_flag=True)
def run(config: str, check: bool, verbose: bool) -> None:
    """Run the concentrator in the foreground (SIGHUP reloads, SIGTERM stops and tells peers)."""
    if check:
        _check(config)
        return
    from natt_daemons.concentrator.daemon import serve

    setup_logging(verbose)
    run_daemon(lambda: serve(config), preflight=lambda: cfg.load(config).secrets.enforce())


add_check_command(main, _check, "Validate the config without starting: "
                                "unknown keys, values, addresses, secrets' file modes.")


@main.command()
@click.argument("user")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
def passwd(user: str, password_stdin: bool) -> None:
    """Print a salted hash for USER, to paste under [users] in the config."""
    if password_stdin:
        password = password_from_stdin()
    else:
        password = getpass.getpass(f"password for {user}: ")
        if getpass.getpass("again: ") != password:
            raise click.ClickException("passwords differ")
    if not password:
        raise click.ClickException("empty password")
    click.echo(f'{user} = "{hash_password(password)}"')


def _sessions_text(r: dict[str, Any]) -> str:
    s = r["summary"]
    lines = [
        "Session Summary",
        f"  Active LAN-to-LAN Sessions     : {s['active_lan_to_lan']}",
        f"  Active Remote Access Sessions  : {s['active_remote_access']}",
        f"  Active Management Sessions     : {s['active_management']}",
        f"  Total Active Sessions          : {s['total_active']}",
        f"  Peak Concurrent Sessions       : {s['peak_concurrent']}",
        f"  Concurrent Sessions Limit      : {s['concurrent_limit']}",
        f"  Total Cumulative Sessions      : {s['total_cumulative']}",
        "",
        "Remote Access Sessions",
        f"{'Username':<12} {'Assigned IP':<15} {'Public IP':<15} {'Group':<10} {'Protocol':<12} "
        f"{'Encryption':<11} {'Login Time':<19} {'Duration':>9} {'Client Type/Version':<24} {'Bytes Tx':>10} "
        f"{'Bytes Rx':>10}",
    ]
    for u in r["remote_access"]:
        login = time.strftime("%b %d %H:%M:%S", time.localtime(u["login_time"]))
        lines.append(f"{u['username']:<12} {u['assigned_ip']:<15} {u['public_ip']:<15} {u['group']:<10} "
                     f"{u['protocol']:<12} {u['encryption']:<11} {login:<19} {u['duration']:>9} "
                     f"{u['client'][:24]:<24} {u['bytes_tx']:>10} {u['bytes_rx']:>10}")
    if not r["remote_access"]:
        lines.append("  -- none --")
    lines += _lockouts_text(r.get("lockouts") or [])
    return "\n".join(lines)


def _lockouts_text(lockouts: list[dict[str, Any]]) -> list[str]:
    """XAUTH lockouts under the sessions table, only when there are any."""
    if not lockouts:
        return []
    lines = ["", "XAUTH Lockouts (natt-concentrator unlock clears them)",
             f"{'Kind':<7} {'User / Address':<39} {'Failures':>8}  Until"]
    for lo in lockouts:
        until = ("an operator unlocks it" if lo["until"] is None
                 else time.strftime("%b %d %H:%M:%S", time.localtime(lo["until"])))
        lines.append(f"{lo['kind']:<7} {lo['key']:<39} {lo['failures']:>8}  {until}")
    return lines


@main.command()
@control_options
def sessions(sock: str | None, config: str | None, as_json: bool) -> None:
    """Administration > Sessions: the summary and the remote access sessions."""
    emit(request(_path(sock, config), "sessions"), as_json, _sessions_text)


def _in(seconds: int | None) -> str:
    """A remaining time as H:MM:SS ("" when there is none)."""
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _clock(wall: float | None) -> str:
    return time.strftime("%b %d %H:%M:%S", time.localtime(wall)) if wall is not None else ""


def _detail_text(items: list[dict[str, Any]]) -> str:
    out = []
    for d in items:
        ike = d["ike"]
        if out:
            out.append("")
        out += [
            f"Session {d['session_id']} (user {d['username']}, logged in {_clock(d['login_time'])}, "
            f"duration {d['duration']}, {d['bytes_tx']} bytes tx / {d['bytes_rx']} rx)",
            f"IKE Session (user {ike['username']}, {ike['public_ip']})",
            f"  Encryption             : {ike['encryption']}",
            f"  Hashing                : {ike['hashing']}",
            f"  Diffie-Hellman Group   : {ike['diffie_hellman_group']}",
            f"  Authentication Mode    : {ike['authentication_mode']}",
            f"  IKE Negotiation Mode   : {ike['negotiation_mode']}",
            f"  Rekey Time Interval    : {ike['rekey_interval']} seconds (expires in {_in(ike['expires_in'])})",
        ]
        others = [s for s in d.get("ike_sas", []) if not s["current"]]
        for s in others:
            out.append(f"  Also (being replaced)  : IKE SA {s['ike_sa_id']}, {s['state']}, "
                       f"expires in {_in(s['expires_in'])}")
        for i, s in enumerate(d["ipsec"], 1):
            state = "active"
            if s["replaced"]:
                state = "replaced" + (f", deleted in {_in(s['delete_in'])}" if s["delete_in"] is not None else "")
            out += [
                f"{s['protocol']} Session {i}",
                f"  Remote Address         : {s['remote_address']}",
                f"  Local Address          : {s['local_address']}",
                f"  Encryption             : {s['encryption']}",
                f"  Hashing                : {s['hashing']}",
                f"  Encapsulation Mode     : {s['encapsulation_mode']}",
                f"  UDP Source Port        : {s['udp_source_port']}",
                f"  UDP Destination Port   : {s['udp_destination_port']}",
                f"  Inbound / Outbound SPI : {s['inbound_spi']} / {s['outbound_spi']}",
                f"  Idle Time              : {s['idle_time'] or '0:00:00'}",
                f"  Established            : {_clock(s['established_at'])} ({state})",
                f"  Rekey Time Interval    : {s['rekey_interval']} seconds (expires in {_in(s['expires_in'])})",
                f"  Bytes Received         : {s['bytes_received']}",
                f"  Bytes Transmitted      : {s['bytes_transmitted']}",
                f"  Packets Received       : {s['packets_received']}",
                f"  Packets Transmitted    : {s['packets_transmitted']}",
            ]
    return "\n".join(out)


@main.command()
@click.argument("user")
@control_options
def session(user: str, sock: str | None, config: str | None, as_json: bool) -> None:
    """Detail of USER's IKE session and each IPsec/NAT-T session."""
    emit(request(_path(sock, config), "session", {"user": user}), as_json, _detail_text)


@main.command()
@click.argument("user")
@control_options
def logout(user: str, sock: str | None, config: str | None, as_json: bool) -> None:
    """Log USER out: every session's SAs are deleted, and the client is told why first."""
    emit(request(_path(sock, config), "logout", {"user": user}), as_json, lambda r: f"logged out {r['logged_out']}")


@main.command()
@click.argument("user")
@click.option("--phase1", "phase", flag_value=1, help="phase 1 (IKE SA): refused, with when the client's ends")
@click.option("--phase2", "phase", flag_value=2, default=True, help="phase 2 (IPsec SAs), the default")
@control_options
def rekey(user: str, phase: int, sock: str | None, config: str | None, as_json: bool) -> None:
    """Rekey USER's IPsec SAs now (new Quick Modes; the old pairs go after a grace period)."""
    emit(request(_path(sock, config), "rekey", {"user": user, "phase": phase}), as_json,
         lambda r: f"started {r['quick_modes']} Quick Mode(s) for {r['sessions']} session(s)")


@main.command()
@click.argument("user", required=False)
@click.option("--source", metavar="IP", help="the source address to unlock")
@click.option("--all", "everything", is_flag=True, help="every user and address")
@control_options
def unlock(user: str | None, source: str | None, everything: bool, sock: str | None, config: str | None,
           as_json: bool) -> None:
    """Clear failed XAUTH logins and the lockout of USER and/or --source IP (or --all)."""
    if everything == bool(user or source):
        raise click.UsageError("name USER and/or --source IP, or give --all")
    args: dict[str, Any] = {"all": True} if everything else {"user": user, "source": source}
    emit(request(_path(sock, config), "unlock", args), as_json, lambda r: f"cleared {r['cleared']}")


add_keys_command(main, control_options, _path, "concentrator")


@main.command("ping")
@click.argument("user")
@click.option("--count", "-c", default=3, show_default=True, type=click.IntRange(1, ping.MAX_COUNT),
              help="echo requests to send")
@click.option("--timeout", "-W", default=1.0, show_default=True,
              type=click.FloatRange(ping.MIN_TIMEOUT, ping.MAX_TIMEOUT), help="seconds to wait for each reply")
@control_options
def ping_cmd(user: str, count: int, timeout: float, sock: str | None, config: str | None, as_json: bool) -> None:
    """Ping USER's assigned address through the tunnel (ICMP echo from the concentrator; exit 1 if no reply)."""
    r = request(_path(sock, config), "ping", {"user": user, "count": count, "timeout": timeout},
                timeout=ping.longest(count, timeout) + 10.0)
    emit(r, as_json, _ping_text)
    if not r["received"]:
        raise SystemExit(1)


def _ping_text(r: dict[str, Any]) -> str:
    rtts = r["rtt_ms"]
    loss = 100 * (r["sent"] - r["received"]) // max(1, r["sent"])
    lines = [f"ping {r['user']} ({r['address']}) through the tunnel: {r['sent']} sent, {r['received']} received, "
             f"{loss}% loss"]
    if rtts:
        lines.append(f"rtt min/avg/max = {min(rtts):.3f}/{sum(rtts) / len(rtts):.3f}/{max(rtts):.3f} ms")
    return "\n".join(lines)


def _settings_text(r: dict[str, Any]) -> str:
    lines = ["NAT Transparency",
             f"  IPSec over NAT-T (nat_traversal)  : {'on' if r['nat_traversal'] else 'off'}"]
    for name, g in r["groups"].items():
        lines.append(f"  IPSec over UDP, group {name:<12}: {'on' if g['ipsec_over_udp'] else 'off'} "
                     f"(UDP {g['ipsec_over_udp_port']})")
    if "note" in r:
        lines.append(f"  {'saved' if r.get('saved') else 'NOT SAVED'}: {r['note']}")
    return "\n".join(lines)


@main.command()
@control_options
def settings(sock: str | None, config: str | None, as_json: bool) -> None:
    """The NAT Transparency settings in force: NAT-T, and IPsec over UDP per group."""
    emit(request(_path(sock, config), "settings"), as_json, _settings_text)


def _on_off(value: str) -> bool:
    return value == "on"


@main.command("nat-transparency")
@click.option("--nat-t", "nat_t", type=click.Choice(["on", "off"]), help="IPSec over NAT-T (nat_traversal)")
@click.option("--ipsec-over-udp", "udp", nargs=2, multiple=True, metavar="GROUP on|off",
              help="Cisco IPsec over UDP for one group (repeat for several)")
@control_options
def nat_transparency(nat_t: str | None, udp: tuple[tuple[str, str], ...], sock: str | None, config: str | None,
                     as_json: bool) -> None:
    """Show, or switch, NAT Transparency: the concentrator writes the change into its config file (those lines
    only) and reloads as on SIGHUP; new sessions use it, live ones keep theirs (reconnect them)."""
    args: dict[str, Any] = {}
    if nat_t is not None:
        args["nat_traversal"] = _on_off(nat_t)
    for group, value in udp:
        if value not in ("on", "off"):
            raise click.BadParameter(f"{value!r}: say on or off", param_hint="--ipsec-over-udp")
        args.setdefault("groups", {})[group] = {"ipsec_over_udp": _on_off(value)}
    path = _path(sock, config)
    result = request(path, "nat-transparency", args) if args else request(path, "settings")
    emit(result, as_json, _settings_text)


@main.command("log")
@click.option("--class", "classes", help="comma-separated event classes, e.g. IKE,IPSECDBG")
@click.option("--severity", default="1-13", show_default=True, help="range of severities, e.g. 1-5")
@click.option("--follow", "-f", is_flag=True, help="keep printing new events")
@control_options
def log_cmd(classes: str | None, severity: str, follow: bool, sock: str | None, config: str | None,
            as_json: bool) -> None:
    """The filterable event log, in the concentrator's format."""
    args = {"classes": classes.split(",") if classes else None, "severity": severity}
    path = _path(sock, config)
    show = (lambda e: click.echo(__import__("json").dumps(e))) if as_json else (lambda e: click.echo(e["text"]))
    if follow:
        stream(path, "log-follow", args, show)
    else:
        for e in request(path, "log", args):
            show(e)


@main.command()
@control_options
def status(sock: str | None, config: str | None, as_json: bool) -> None:
    """Listening address, NAT transparency switch, refusals and datapath drops."""
    emit(request(_path(sock, config), "status"), as_json,
         lambda r: "\n".join(f"{k:<16}: {v}" for k, v in r.items()))


@main.command()
@control_options
def stats(sock: str | None, config: str | None, as_json: bool) -> None:
    """Statistics since the start: IKE (set-ups, failures by cause, rekeys, DPD), IPsec, NAT-T, per transform."""
    emit(request(_path(sock, config), "stats"), as_json, stats_text)
