"""natt-client: run the VPN client and control it."""

from __future__ import annotations

import getpass
import json
from typing import Any

import click

from natt_daemons.client import config as cfg
from natt_daemons.common.cli import control_options as shared_control_options
from natt_daemons.common.cli import emit, request, run_daemon, setup_logging, socket_path, stream

DEFAULT_SOCKET = "/run/natt/client-default.sock"


def _path(sock: str | None, config: str | None) -> str:
    return socket_path(sock, config, cfg.load, DEFAULT_SOCKET)


control_options = shared_control_options(DEFAULT_SOCKET)


@click.group()
def main() -> None:
    """IKEv1 VPN client with XAUTH, NAT-Traversal and a TUN virtual adapter."""


@main.command()
@click.option("--config", "config", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--password-stdin", is_flag=True, help="read the XAUTH password from standard input")
@click.option("--ask-password", is_flag=True, help="prompt for the XAUTH password")
@click.option("-v", "--verbose", is_flag=True)
def run(config: str, password_stdin: bool, ask_password: bool, verbose: bool) -> None:
    """Run the client in the foreground; it connects at once unless the profile says autoconnect = false."""
    from natt_daemons.client.daemon import serve

    password = None
    if password_stdin:
        password = click.get_text_stream("stdin").readline().rstrip("\n")
    elif ask_password:
        password = getpass.getpass("XAUTH password: ")
    setup_logging(verbose)
    run_daemon(lambda: serve(config, password))


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


def _status_text(s: dict[str, Any]) -> str:
    lines = [
        f"Connection state      : {s['state']}",
        f"Profile               : {s['profile']} (user {s['username']})",
        f"Concentrator          : {s['concentrator']}",
        f"Client address        : {s['assigned_address'] or '-'}  (local {s['local_address']})",
        f"Transparent tunneling : {'enabled' if s['transparent_tunneling'] else 'disabled'}",
        f"Tunnel port           : {s['tunnel_port']}",
        f"Time up               : {s['time_up']} s",
        f"Bytes encrypted       : {s['bytes_encrypted']}",
        f"Bytes decrypted       : {s['bytes_decrypted']}",
        f"Packets encrypted     : {s['packets_encrypted']}",
        f"Packets decrypted     : {s['packets_decrypted']}",
        f"Packets dropped       : {s['packets_dropped']}",
    ]
    if "ike" in s:
        nat = s.get("nat", {})
        lines.append(f"IKE                   : {s['ike']['mode']} {s['ike']['encryption']}/{s['ike']['hashing']}")
        lines.append(f"NAT                   : this end {'IS' if nat.get('this_end_behind_nat') else 'is NOT'} "
                     f"behind NAT, NAT-T {nat.get('natt') or 'not negotiated'}")
        for c in s.get("ipsec", []):
            lines.append(f"IPsec SA              : {c['local']} <-> {c['remote']} {c['transform']} "
                         f"in {c['inbound_spi']} out {c['outbound_spi']}")
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
