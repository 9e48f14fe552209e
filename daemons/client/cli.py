"""natt-client: run the VPN client and control it."""

from __future__ import annotations

import getpass
import json
from typing import Any

import click

from natt_daemons.client import config as cfg
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
from natt_daemons.common.config import ConfigError
from natt_daemons.common.statstext import stats_text

DEFAULT_SOCKET = "/run/natt/client-default.sock"


def _path(sock: str | None, config: str | None) -> str:
    return socket_path(sock, config, cfg.load, DEFAULT_SOCKET)


control_options = shared_control_options(DEFAULT_SOCKET)


@daemon_group("natt-client", "the client")
def main() -> None:
    """IKEv1 VPN client with XAUTH, NAT-Traversal and a TUN virtual adapter."""


NO_PASSWORD = "no password: set password or password_file, or run with --password-stdin or --ask-password"


def _summary(s: cfg.ClientSettings) -> str:
    p = s.profile
    user = f"user {p.username} ({'password set' if p.password else NO_PASSWORD})" if p.username else "no XAUTH user"
    return (f"profile {s.name}, concentrator {p.peer}, group {p.group}, {user}, {p.mode} mode, "
            f"transparent tunneling {'on' if p.nat_traversal else 'off'}; control socket {s.control_socket}")


def _check(config: str) -> None:
    check_config(lambda: cfg.load(config), _summary)


def _preflight(config: str, password: str | None) -> None:
    """What the daemon's own load lets pass: secrets others can read, and an XAUTH user with no password (a
    misspelt key used to connect with an empty one)."""
    s = cfg.load(config, password)
    s.secrets.enforce()
    if s.profile.username and not s.profile.password:
        raise ConfigError(f"{s.path} [client]: user {s.profile.username!r} has {NO_PASSWORD}")


@main.command()
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False))
@click.option("--password-stdin", is_flag=True, help="read the XAUTH password from standard input")
@click.option("--ask-password", is_flag=True, help="prompt for the XAUTH password")
@click.option("--check", is_flag=True, help="validate the profile and exit (0: fine, 2: not); nothing is bound")
@click.option("-v", "--verbose", is_flag=True)
def run(config: str, password_stdin: bool, ask_password: bool, check: bool, verbose: bool) -> None:
    """Run the client in the foreground; it connects at once unless the profile says autoconnect = false."""
    if check:
        _check(config)
        return
    from natt_daemons.client.daemon import serve

    password = None
    if password_stdin:
        password = password_from_stdin()
    elif ask_password:
        password = getpass.getpass("XAUTH password: ")
    setup_logging(verbose)
    run_daemon(lambda: serve(config, password), preflight=lambda: _preflight(config, password))


add_check_command(main, _check, "Validate the profile without starting: "
                                "unknown keys, values, the peer's address, secrets' file modes.")


@main.command()
@control_options
def connect(sock: str | None, config: str | None, as_json: bool) -> None:
    """Bring the tunnel up."""
    emit(request(_path(sock, config), "connect"), as_json, lambda r: f"state: {r['state']}")


@main.command()
@control_options
def disconnect(sock: str | None, config: str | None, as_json: bool) -> None:
    """Tear the tunnel down, tell the concentrator, restore routes."""
    emit(request(_path(sock, config), "disconnect"), as_json, lambda r: f"state: {r['state']}")


@main.command()
@click.option("--phase1", "phase", flag_value=1, type=int,
              help="re-authenticate: a new IKE SA (phase 1, XAUTH, Mode Config) for the same session")
@click.option("--phase2", "phase", flag_value=2, type=int, default=True,
              help="new IPsec SAs for every tunnel (the default)")
@control_options
def rekey(phase: int, sock: str | None, config: str | None, as_json: bool) -> None:
    """Rekey now, without dropping the session or its traffic."""

    def text(r: dict[str, Any]) -> str:
        if r["phase"] == 1:
            return f"phase 1: re-authenticating IKE SA {r['sa_id']} as IKE SA {r['new_sa_id']}"
        return f"phase 2: rekeying {r['started']} IPsec SA(s) of IKE SA {r['sa_id']}"

    emit(request(_path(sock, config), "rekey", {"phase": phase}), as_json, text)


def _dur(seconds: int | None) -> str:
    """Remaining seconds, compactly: 45s, 12m05s, 7h59m."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _ipsec_line(c: dict[str, Any]) -> str:
    when = f"expires {_dur(c.get('expires_in'))}"
    if c.get("delete_in") is not None:
        when += f", replaced, goes in {_dur(c['delete_in'])}"
    elif c.get("rekeyed"):
        when += ", rekeying"
    elif c.get("rekey_in") is not None:
        when += f", rekey in {_dur(c['rekey_in'])}"
    return (f"{c['local']} <-> {c['remote']} {c['transform']} in {c['inbound_spi']} out {c['outbound_spi']}\n"
            f"                        {when}; {c.get('bytes_encrypted', 0)}/{c.get('bytes_decrypted', 0)} bytes, "
            f"{c.get('packets_encrypted', 0)}/{c.get('packets_decrypted', 0)} packets (enc/dec)")


def _nat_text(nat: dict[str, Any]) -> str:
    """What NAT detection found; without NAT-D (NAT-T not negotiated) this end cannot know, and says so."""
    behind = nat.get("this_end_behind_nat")
    if behind is None:
        return "unknown (the peer sent no NAT-D: NAT-T not negotiated)"
    return f"this end {'IS' if behind else 'is NOT'} behind NAT, NAT-T {nat.get('natt') or 'not negotiated'}"


def _status_text(s: dict[str, Any]) -> str:
    lines = [
        f"Connection state      : {s['state']}",
        f"Profile               : {s['profile']} (user {s['username']})",
        f"Concentrator          : {s['concentrator']}",
        f"Client address        : {s['assigned_address'] or '-'}  (local {s['local_address']})",
        f"Transparent tunneling : {'enabled' if s['transparent_tunneling'] else 'disabled'}",
        f"Tunnel port           : {s['tunnel_port']}",
        f"Fail closed           : {'yes' if s.get('fail_closed') else 'no'}",
        f"Time up               : {s['time_up']} s",
        f"Bytes encrypted       : {s['bytes_encrypted']}",
        f"Bytes decrypted       : {s['bytes_decrypted']}",
        f"Packets encrypted     : {s['packets_encrypted']}",
        f"Packets decrypted     : {s['packets_decrypted']}",
        f"Packets dropped       : {s['packets_dropped']}",
    ]
    rt = s.get("retransmissions")
    if rt:
        lines.append(f"IKE retransmissions   : {rt['sent']} sent (no answer in time), {rt['answered']} of the "
                     "gateway's answered again")
    if s.get("traffic"):
        lines.append(f"Traffic for tunnel    : {s['traffic']}")
    if s.get("reconnect_in") is not None:
        lines.append(f"Reconnecting in       : {s['reconnect_in']} s")
    if s.get("not_reconnecting"):
        lines.append(f"Reconnect             : {s['not_reconnecting']}")
    rk = s.get("rekeys")
    if rk and (rk.get("phase1") or rk.get("phase2") or rk.get("phase1_failed")):
        failed = f" ({rk['phase1_failed']} failed)" if rk.get("phase1_failed") else ""
        lines.append(f"Rekeys                : phase 1 {rk.get('phase1', 0)}{failed}, phase 2 {rk.get('phase2', 0)}")
    if "ike" in s:
        ike, nat = s["ike"], s.get("nat", {})
        when = f"expires in {_dur(ike.get('expires_in'))}"
        if ike.get("reauthenticating"):
            when += f", re-authenticating (IKE SA {ike['reauthenticating']})"
        elif ike.get("reauth_in") is not None:
            when += f", re-authenticates in {_dur(ike['reauth_in'])}"
        lines.append(f"IKE                   : {ike['mode']} {ike['encryption']}/{ike['hashing']}, {when}")
        lines.append(f"NAT                   : {_nat_text(nat)}")
        for c in s.get("ipsec", []):
            lines.append(f"IPsec SA              : {_ipsec_line(c)}")
        for c in s.get("ipsec_next", []):
            lines.append(f"IPsec SA (next IKE SA): {_ipsec_line(c)}")
    if s.get("last_error"):
        lines.append(f"Last error            : {s['last_error']}")
    for d in s.get("diagnosis", []):
        lines.append(f"DIAGNOSIS             : {d}")
    return "\n".join(lines)


@main.command()
@control_options
def status(sock: str | None, config: str | None, as_json: bool) -> None:
    """State, assigned address, tunnel port, transforms and statistics."""
    emit(request(_path(sock, config), "status"), as_json, _status_text)


@main.command()
@control_options
def stats(sock: str | None, config: str | None, as_json: bool) -> None:
    """Counters since the daemon started, across sessions: IKE, rekeys, DPD, NAT-T, IPsec per transform."""
    emit(request(_path(sock, config), "stats"), as_json, stats_text)


add_keys_command(main, control_options, _path, "client")


@main.command("log")
@click.option("--follow", "-f", is_flag=True)
@control_options
def log_cmd(follow: bool, sock: str | None, config: str | None, as_json: bool) -> None:
    """The client log, in the 'Sev=Info/N CLASS/0x6300xxxx' format."""
    path = _path(sock, config)
    show = (lambda e: click.echo(json.dumps(e))) if as_json else (lambda e: click.echo(e["text"]))
    if follow:
        stream(path, "log-follow", {}, show)
    else:
        for e in request(path, "log", {}):
            show(e)
