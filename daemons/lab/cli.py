"""natt-lab: build, inspect and remove the lab network (namespaces named <prefix><role>)."""

from __future__ import annotations

import os
import shutil
import sys

import click

from natt_daemons.lab import procs
from natt_daemons.lab.topology import ADDR, DEFAULT_PREFIX, ROLES, Lab, LabError

prefix_option = click.option(
    "--prefix", default=DEFAULT_PREFIX, show_default=True, help="name prefix of the lab's namespaces"
)


def _lab(prefix: str) -> Lab:
    try:
        return Lab(prefix)
    except LabError as e:
        raise click.UsageError(str(e)) from e


def _need_root() -> None:
    if os.geteuid() != 0:
        raise click.ClickException("the lab needs root (network namespaces, veth pairs)")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The natt lab: two VPN clients behind a PAT gateway, an internet router, the concentrator and a server,
    each in its own network namespace."""


@main.command("net-up")
@prefix_option
def net_up(prefix: str) -> None:
    """Create the lab network only (no daemons)."""
    _need_root()
    lab = _lab(prefix)
    try:
        lab.up()
    except LabError as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"lab {prefix!r} is up: {', '.join(lab.namespaces())}")
    click.echo(
        f"  clients {ADDR.client1}, {ADDR.client2} -> pat {ADDR.pat_inside} | {ADDR.pat_outside} -> inet "
        f"{ADDR.inet_public} | {ADDR.inet_core} -> conc {ADDR.conc_public} | {ADDR.conc_private} "
        f"-> server {ADDR.server}"
    )
    click.echo(f"  pubclient {ADDR.pubclient} (no NAT); ip forwarding in pat is left to the PAT daemon")


@main.command()
@prefix_option
@click.option("--configs", default="configs", show_default=True, type=click.Path(exists=True, file_okay=False),
              help="folder with concentrator.toml, pat.toml, client1.toml, client2.toml (used as they are)")
@click.option("--nat-transparency", "nat_t", type=click.Choice(["on", "off"]),
              help="set the concentrator's nat_traversal (default: as the configs say); off is the seed's failure "
                   "case: the clients connect and pass no data, and the lab shows why and how to fix it")
@click.option("--manager", is_flag=True, help="also start natt-manager (the web pages) in the concentrator's "
                                              "namespace, on its private address only")
def up(prefix: str, configs: str, nat_t: str | None, manager: bool) -> None:
    """The whole seed scenario: network, PAT gateway, concentrator, both clients connected, traffic checked."""
    from pathlib import Path

    from natt_daemons.lab import manager as web_manager
    from natt_daemons.lab import scenario, seedcase

    _need_root()
    wanted = scenario.ScenarioConfig(nat_traversal=None if nat_t is None else nat_t == "on")
    try:
        sc = scenario.bring_up(prefix, Path(configs), out=click.echo, config=wanted)
        diagnosis = seedcase.diagnosis_text(sc) if sc.no_traffic else ""
        if manager:
            web_manager.start(sc)
    except Exception as e:
        click.echo(f"lab failed: {e}", err=True)
        click.echo(f"logs are in {procs.run_dir(prefix)}; remove everything with: make lab-down", err=True)
        raise SystemExit(1) from e
    click.echo(scenario.views_text(sc))
    if diagnosis:
        click.echo("")
        click.echo(diagnosis)
    click.echo(scenario.usage_text(sc))
    if manager:
        click.echo(web_manager.usage_text(sc))


@main.command()
@prefix_option
def down(prefix: str) -> None:
    """Stop the processes the lab started and remove its namespaces (safe to run twice)."""
    _need_root()
    from natt_daemons.lab import scenario

    _lab(prefix)  # checks the prefix
    removed = scenario.tear_down(prefix)
    for item in removed:
        click.echo(f"removed {item}")
    click.echo(f"lab {prefix!r} is down" + ("" if removed else " (nothing was there)"))


@main.command()
@click.argument("ns")
@prefix_option
def shell(ns: str, prefix: str) -> None:
    """Open an interactive shell in namespace NS (a role such as client1, or the full name)."""
    _need_root()
    lab = _lab(prefix)
    try:
        name = ns if lab.owns(ns) else lab.ns(ns)
    except LabError as e:
        raise click.UsageError(str(e)) from e
    if name not in lab.namespaces():
        have = ", ".join(n[len(prefix) :] for n in lab.namespaces()) or "none: run net-up first"
        raise click.ClickException(f"no namespace {name} (namespaces of lab {prefix!r}: {have})")
    sh = os.environ.get("SHELL") or shutil.which("bash") or "/bin/sh"
    env = dict(os.environ, NATT_LAB_NS=name)
    argv = [sh]
    if os.path.basename(sh) == "bash":  # a prompt that says where you are; rc files would override it
        env["PS1"] = f"[{name}] \\u@\\h:\\w\\$ "
        argv = [sh, "--norc", "-i"]
    click.echo(f"entering {name}; leave with exit", err=True)
    sys.stdout.flush()
    os.execvpe("ip", lab.argv(name[len(prefix) :], argv), env)


@main.command()
@prefix_option
def status(prefix: str) -> None:
    """Show the lab's namespaces and the processes it registered."""
    lab = _lab(prefix)
    names = lab.namespaces()
    if not names:
        click.echo(f"lab {prefix!r}: no namespaces")
    else:
        state = "complete" if lab.complete() else "INCOMPLETE (run down, then net-up)"
        click.echo(f"lab {prefix!r}: {len(names)} namespaces, {state}")
        for n in names:
            role = n[len(prefix) :]
            click.echo(f"  {n}{'' if role in ROLES else '  (extra host)'}")
    plist = procs.registered(prefix)
    if plist:
        click.echo("processes:")
        for p in plist:
            state = "running" if p.alive else "gone"
            click.echo(f"  {p.name:<24} pid {p.pid:<8} {state:<8} in {p.role}: {' '.join(p.argv)}")
            click.echo(f"  {'':<24} log {p.log_path}")
    else:
        click.echo("processes: none registered")
    leftovers = lab.leftover_links()
    if leftovers:
        click.echo(f"leftover root-namespace links: {', '.join(leftovers)} (run down)")


if __name__ == "__main__":
    main()
