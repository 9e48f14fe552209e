"""natt-bench: measurements in fresh lab namespaces. Each measurement is one subcommand of the group `main`."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import click

MAIN_CONTEXT = {"help_option_names": ["-h", "--help"]}
_MAIN_PID = os.getpid()


def _terminate(signum: int, _frame: object) -> None:
    """SIGTERM / SIGHUP end the run through the normal unwinding, so every lab is still removed.

    Only in this process: a forked helper (pyroute2 forks to enter namespaces) inherits the handler, and
    unwinding its copy of our stack would run our cleanup there; it just ends, as with the default action.
    """
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    sys.exit(128 + signum)


def _interrupt(signum: int, frame: object) -> None:
    """Ctrl-C reaches the whole process group: the same rule, KeyboardInterrupt in this process only."""
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt


@click.group(context_settings=MAIN_CONTEXT)
def main() -> None:
    """natt benchmarks. Each builds its own lab (namespaces <prefix><role>) and removes it when done."""
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    signal.signal(signal.SIGINT, _interrupt)


@main.command()
@click.option("--duration", default=10.0, show_default=True, type=click.FloatRange(min=1),
              help="seconds of each iperf3 run (one TCP, one UDP per configuration and suite)")
@click.option("--udp-rate", default="300M", show_default=True, help="UDP rate offered (iperf3 -b)")
@click.option("--udp-len", default=1200, show_default=True, type=click.IntRange(64, 1400),
              help="UDP datagram payload (iperf3 -l); vpnc's TUN MTU is 1300, so only ≤ 1272 avoids fragments there")
@click.option("--only", multiple=True, metavar="NAME[:SUITE]",
              help="configurations to run (repeatable): plain, forwarder, vpnc-strongswan, natt, vpnc-natt, "
                   "natt-strongswan; optionally one suite, e.g. natt:aes128gcm16")
@click.option("--results-dir", default="bench/results", show_default=True, type=click.Path(file_okay=False),
              help="where the JSON (and the logs of failed runs) go")
@click.option("--prefix", default="bn-", show_default=True, help="lab namespace prefix (ends in '-', ≤ 11 chars)")
def throughput(duration: float, udp_rate: str, udp_len: int, only: tuple[str, ...], results_dir: str,
               prefix: str) -> None:
    """iperf3 TCP and UDP throughput through each VPN configuration, against vpnc→strongSwan."""
    from natt_daemons.bench.throughput import BenchError, run

    try:
        run(prefix, duration, udp_rate, only, Path(results_dir), udp_len=udp_len, out=click.echo)
    except BenchError as e:
        raise click.ClickException(str(e)) from e


@main.command()
@click.option("--count", "-n", default=1000, show_default=True, type=click.IntRange(min=1),
              help="simulated clients, each doing the seed's whole flow")
@click.option("--concurrency", default=64, show_default=True, type=click.IntRange(min=1),
              help="handshakes in flight at once")
@click.option("--hold", default=30.0, show_default=True, type=click.FloatRange(min=0),
              help="seconds to hold the sessions afterwards (keepalives and DPD running)")
@click.option("--max-ramp", default=600.0, show_default=True, type=click.FloatRange(min=1),
              help="no new handshake after this many seconds (a slow target reports how far it got)")
@click.option("--phase1", default="aes256-sha1-modp1024", show_default=True, help="IKE suite (DH group 2)")
@click.option("--phase2", default="aes256-sha1", show_default=True, help="ESP suite")
@click.option("--target", "targets", multiple=True, type=click.Choice(["natt", "strongswan"]),
              help="which concentrators (repeatable; default both, ours first)")
@click.option("--results-dir", default="bench/results", show_default=True, type=click.Path(file_okay=False))
def connect(count: int, concurrency: int, hold: float, max_ramp: float, phase1: str, phase2: str,
            targets: tuple[str, ...], results_dir: str) -> None:
    """Handshake load: N simulated clients behind the PAT against our concentrator and strongSwan."""
    from natt_daemons.bench.handshakes import Plan, run

    plan = Plan(count, concurrency, hold, phase1, phase2, max_ramp=max_ramp)
    run(plan, targets or ("natt", "strongswan"), Path(results_dir), out=click.echo)


if __name__ == "__main__":
    main()
