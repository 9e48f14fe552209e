"""Pieces every daemon's click CLI shares: logging set-up, the control-socket call, output."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from typing import Any

import click

from natt_daemons.common.config import ConfigError
from natt_daemons.common.control import ControlError, call, follow


def control_options(default_socket: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--socket, --config and --json, which every view and control command takes."""

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        f = click.option("--json", "as_json", is_flag=True, help="machine-readable output")(f)
        f = click.option("--config", "config", type=click.Path(dir_okay=False),
                         help="the daemon's config file (its control socket path is read from it)")(f)
        return click.option("--socket", "sock", help=f"control socket (default: from --config, else "
                                                     f"{default_socket})")(f)

    return decorate


def setup_logging(verbose: bool) -> None:
    # The format uses none of these, and gathering them for every record (the caller's frame above all)
    # doubled the cost of each line a busy concentrator writes (logging HOWTO, "Optimization").
    logging._srcfile = None  # type: ignore[attr-defined]
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # Our debug, not the libraries': pyroute2 logs every netlink message at DEBUG.
    for noisy in ("pyroute2", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def socket_path(explicit: str | None, config: str | None, loader: Callable[[str], Any], default: str) -> str:
    if explicit:
        return explicit
    if config:
        try:
            return loader(config).control_socket
        except ConfigError as e:
            raise click.ClickException(str(e)) from e
    return default


def request(path: str, cmd: str, args: dict[str, Any] | None = None) -> Any:
    try:
        return call(path, cmd, args)
    except ControlError as e:
        raise click.ClickException(str(e)) from e


def stream(path: str, cmd: str, args: dict[str, Any], show: Callable[[Any], None]) -> None:
    try:
        for item in follow(path, cmd, args):
            show(item)
    except ControlError as e:
        raise click.ClickException(str(e)) from e
    except KeyboardInterrupt:
        pass


def emit(result: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(text(result))


def run_daemon(serve: Callable[[], int]) -> None:
    """Run a daemon in the foreground: configuration errors exit 2 with one clear line."""
    try:
        code = serve()
    except ConfigError as e:
        click.echo(f"configuration error: {e}", err=True)
        sys.exit(2)
    except PermissionError as e:
        click.echo(f"permission denied: {e} (the daemon needs CAP_NET_ADMIN, CAP_NET_RAW and "
                   "CAP_NET_BIND_SERVICE)", err=True)
        sys.exit(1)
    sys.exit(code)
