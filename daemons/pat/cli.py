"""natt-pat: run the PAT gateway and look into it (show xlate, show arp, counters, status)."""

from __future__ import annotations

from typing import Any

import click

from natt_daemons.common.cli import (
    add_check_command,
    check_config,
    daemon_group,
    emit,
    request,
    run_daemon,
    setup_logging,
    socket_path,
)
from natt_daemons.common.cli import control_options as shared_control_options
from natt_daemons.pat import config as cfg

control_options = shared_control_options(cfg.DEFAULT_SOCKET)


def _path(sock: str | None, config: str | None) -> str:
    return socket_path(sock, config, cfg.load, cfg.DEFAULT_SOCKET)


@daemon_group("natt-pat", "the PAT gateway")
def main() -> None:
    """PAT gateway: the inside network behind one outside address (nftables masquerade over netlink)."""


def _summary(s: cfg.PatSettings) -> str:
    ports = "-".join(map(str, s.port_range)) if s.port_range else "the kernel's choice"
    return (f"inside {s.inside.name} {s.inside.cidr} (translates {s.inside_network}), outside {s.outside.name} "
            f"{s.outside.cidr}, gateway {s.gateway or '-'}, ports {ports}, "
            f"ESP passthrough {'on' if s.esp_passthrough else 'off'}, table ip {s.table}; "
            f"control socket {s.control_socket}")


def _check(config: str) -> None:
    check_config(lambda: cfg.load(config), _summary)


@main.command()
@click.option("--config", "config", required=True, type=click.Path(dir_okay=False))
@click.option("--check", is_flag=True, help="validate the config and exit (0: fine, 2: not); nothing is touched")
@click.option("-v", "--verbose", is_flag=True)
def run(config: str, check: bool, verbose: bool) -> None:
    """Run the gateway in the foreground (SIGHUP reloads, SIGTERM removes the table and stops)."""
    if check:
        _check(config)
        return
    from natt_daemons.pat.daemon import serve

    setup_logging(verbose)
    run_daemon(lambda: serve(config), preflight=lambda: cfg.load(config).secrets.enforce())


add_check_command(main, _check, "Validate the config without starting: "
                                "unknown keys, values, addresses and ranges.")


# -- text renderers (the seed's PIX output where there is one) -------------------------------------


def _port(p: int | None) -> str:
    return "" if p is None else f"({p})"


def xlate_text(r: dict[str, Any]) -> str:
    lines = [f"{r['in_use']} in use, {r['most_used']} most used"]
    for t in r["entries"]:
        lines.append(f"PAT Global {t['global']}{_port(t['global_port'])} Local {t['inside']}{_port(t['inside_port'])}")
    return "\n".join(lines)


def cisco_mac(mac: str | None) -> str:
    """00:d0:01:32:e4:0a → 00d0.0132.e40a, as the PIX prints it."""
    if not mac:
        return "(incomplete)"
    digits = mac.replace(":", "").lower()
    return ".".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def arp_text(entries: list[dict[str, Any]]) -> str:
    lines = []
    for n in entries:
        tail = str(n["age"]) if n["mac"] and n["age"] is not None else n["state"]  # seconds, else why not
        lines.append(f"{n['interface']} {n['address']} {cisco_mac(n['mac'])} {tail}")
    return "\n".join(lines) if lines else "(no neighbours)"


def stats_text(r: dict[str, Any]) -> str:
    lines = [
        f"translations created        {r['translations_created']}",
        f"translations in use         {r['in_use']} ({r['most_used']} most used, {r['translations_seen']} seen)",
        f"outbound packets / bytes    {r['packets_out']} / {r['bytes_out']}",
        f"inbound packets / bytes     {r['packets_in']} / {r['bytes_in']}",
        f"ESP dropped packets / bytes {r['esp_dropped_packets']} / {r['esp_dropped_bytes']}",
        f"ESP passed packets / bytes  {r['esp_forwarded_packets']} / {r['esp_forwarded_bytes']}",
    ]
    if not r.get("table_present", True):
        lines.append("WARNING: the nftables table is missing (send SIGHUP to put it back)")
    return "\n".join(lines)


def _duration(seconds: int) -> str:
    h, rest = divmod(int(seconds), 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


def status_text(r: dict[str, Any]) -> str:
    ins, out = r["interfaces"]["inside"], r["interfaces"]["outside"]
    ports = "-".join(str(p) for p in r["port_range"]) if r["port_range"] else "kernel's choice"
    esp = "yes (ESP from the inside is forwarded)" if r["esp_passthrough"] else "no"
    lines = [
        f"table            ip {r['table']}{'' if r['table_present'] else ' (MISSING)'}",
        f"inside           {ins['name']} {ins['address']} (translates {r['inside_network']})",
        f"outside          {out['name']} {out['address']} (global address {r['outside_address']})",
        f"gateway          {r['gateway'] or '-'}",
        f"port range       {ports}",
        f"esp passthrough  {esp}",
        f"uptime           {_duration(r['uptime'])}",
    ]
    if r.get("esp_note"):
        lines.append(f"note: {r['esp_note']}")
    return "\n".join(lines)


# -- control commands ------------------------------------------------------------------------------


@main.command()
@control_options
def xlate(sock: str | None, config: str | None, as_json: bool) -> None:
    """show xlate: the translations in use, newest first."""
    emit(request(_path(sock, config), "xlate"), as_json, xlate_text)


@main.command()
@control_options
def arp(sock: str | None, config: str | None, as_json: bool) -> None:
    """show arp: the neighbours of the outside and inside interfaces."""
    emit(request(_path(sock, config), "arp"), as_json, arp_text)


@main.command()
@control_options
def stats(sock: str | None, config: str | None, as_json: bool) -> None:
    """Counters: translations created and in use, packets and bytes, ESP dropped."""
    emit(request(_path(sock, config), "stats"), as_json, stats_text)


@main.command()
@control_options
def status(sock: str | None, config: str | None, as_json: bool) -> None:
    """The gateway's set-up: table, interfaces, networks, ESP policy, uptime."""
    emit(request(_path(sock, config), "status"), as_json, status_text)
