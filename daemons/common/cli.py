"""Pieces every daemon's click CLI shares: the command group, logging set-up, the control-socket call, output.

What goes wrong reaches the user as one line on stderr, `natt-concentrator: what and why`, never a traceback:
exit 2 when the command could not be carried out at all (a bad config, a daemon it cannot reach), 1 when the
daemon refused it or the daemon could not start.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from natt_daemons.common.config import ConfigError
from natt_daemons.common.control import ControlError, Unreachable, call, follow

log = logging.getLogger(__name__)


def _root() -> click.Command | None:
    ctx = click.get_current_context(silent=True)
    return ctx.find_root().command if ctx is not None else None


def program() -> str:
    """The CLI's name for its messages ("natt-concentrator"), whatever argv[0] was."""
    root = _root()
    return root.name if root is not None and root.name else "natt"


class CliError(click.ClickException):
    """One line on stderr, prefixed with the program's name, and exit 2 (or the code given)."""

    def __init__(self, message: str, exit_code: int = 2) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.prog = program()  # taken now: the context is gone by the time click shows the error

    def show(self, file: Any = None) -> None:
        click.echo(f"{self.prog}: {self.format_message()}", err=True)


def control_failure(e: ControlError) -> CliError:
    """Not reaching the daemon is exit 2; the daemon refusing the command, exit 1."""
    return CliError(str(e), exit_code=2 if isinstance(e, Unreachable) else 1)


class DaemonGroup(click.Group):
    """A daemon's command group: names what its commands talk to ("the concentrator"), and turns what goes wrong
    in any of them into one line."""

    def __init__(self, *args: Any, daemon: str = "the daemon", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.daemon = daemon

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ConfigError as e:
            raise CliError(f"configuration error: {e}") from e
        except ControlError as e:
            raise control_failure(e) from e
        except OSError as e:
            log.debug("command failed", exc_info=True)
            raise CliError(_os_error(e), exit_code=1) from e


def _os_error(e: OSError) -> str:
    text = e.strerror or str(e)
    return f"{e.filename}: {text}" if e.filename else text


def daemon_group(name: str, daemon: str) -> Callable[[Callable[..., Any]], DaemonGroup]:
    """@daemon_group("natt-concentrator", "the concentrator") over the CLI's main()."""
    return click.group(name=name, cls=DaemonGroup, daemon=daemon)  # type: ignore[return-value]


def _daemon() -> str:
    root = _root()
    return root.daemon if isinstance(root, DaemonGroup) else "the daemon"


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
            raise CliError(f"configuration error: {e}") from e
    return default


def request(path: str, cmd: str, args: dict[str, Any] | None = None, timeout: float = 10.0) -> Any:
    try:
        return call(path, cmd, args, timeout=timeout, daemon=_daemon())
    except ControlError as e:
        raise control_failure(e) from e


def stream(path: str, cmd: str, args: dict[str, Any], show: Callable[[Any], None]) -> None:
    try:
        for item in follow(path, cmd, args, daemon=_daemon()):
            show(item)
    except ControlError as e:
        raise control_failure(e) from e
    except KeyboardInterrupt:
        pass


def emit(result: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
    else:
        click.echo(text(result))


def check_config(load: Callable[[], Any], summary: Callable[[Any], str]) -> None:
    """`--check`: load and validate the config, secrets' file modes included, and print one line; bind nothing.
    A warning (allow_insecure_secrets) goes to stderr first; a ConfigError is one line and exit 2."""
    try:
        settings = load()
        warnings = settings.secrets.enforce(None)
    except ConfigError as e:
        raise CliError(f"configuration error: {e}") from e
    for w in warnings:
        click.echo(f"{program()}: warning: {w}", err=True)
    click.echo(f"{settings.path}: OK: {summary(settings)}")


def add_check_command(main: click.Group, check: Callable[[str], None], help_text: str) -> None:
    """`check --config FILE`: what `run --check` does, as a command of its own (the daemons' CLIs share it)."""

    @main.command("check", help=help_text)
    @click.option("--config", "config", required=True, type=click.Path(dir_okay=False))
    def check_cmd(config: str) -> None:
        check(config)


def add_keys_command(main: click.Group, options: Callable[[Callable[..., Any]], Callable[..., Any]],
                     path_of: Callable[[str | None, str | None], str], writer: str) -> None:
    """`keys --wireshark DIR` (root only): the daemon writes Wireshark's decryption tables for its live SAs."""
    from natt_daemons.common.keyexport import reply_text

    @main.command(help=f"Write Wireshark's IKEv1 and ESP decryption tables for the live SAs (root only; the {writer} "
                       "writes them).")
    @click.option("--wireshark", "directory", required=True, type=click.Path(file_okay=False),
                  help="directory for ikev1_decryption_table and esp_sa (made 0700 if missing)")
    @options
    def keys(directory: str, sock: str | None, config: str | None, as_json: bool) -> None:
        emit(request(path_of(sock, config), "keys", {"wireshark": os.path.abspath(directory)}), as_json, reply_text)


def password_from_stdin() -> str:
    """`--password-stdin`: the first line of standard input, without its newline (a pipe from a secrets store)."""
    return sys.stdin.readline().rstrip("\n")


def run_daemon(serve: Callable[[], int], preflight: Callable[[], object] | None = None) -> None:
    """Run a daemon in the foreground: configuration errors exit 2 with one clear line. `preflight` checks what
    the daemon's own load does not (secrets others can read) before anything is bound."""
    try:
        if preflight is not None:
            preflight()
        code = serve()
    except ConfigError as e:
        raise CliError(f"configuration error: {e}") from e
    except PermissionError as e:
        raise CliError(f"permission denied: {e} (the daemon needs CAP_NET_ADMIN, CAP_NET_RAW and "
                       "CAP_NET_BIND_SERVICE)", exit_code=1) from e
    except OSError as e:
        log.debug("the daemon stopped", exc_info=True)
        raise CliError(f"the daemon stopped: {_os_error(e)} (-v shows where)", exit_code=1) from e
    sys.exit(code)
