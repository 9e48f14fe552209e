"""natt-manager: the concentrator's web manager (run, check a config, hash an administrator's password)."""

from __future__ import annotations

import getpass

import click

from natt_daemons.common.cli import (
    CliError,
    check_config,
    daemon_group,
    password_from_stdin,
    run_daemon,
    setup_logging,
)
from natt_daemons.common.passwords import hash_password
from natt_daemons.manager import config as cfg

config_option = click.option("--config", "config", default=cfg.DEFAULT_CONFIG, show_default=True,
                             type=click.Path(dir_okay=False))


@daemon_group("natt-manager", "the manager")
def main() -> None:
    """The VPN Concentrator Manager's pages for the natt concentrator, over HTTPS."""


def _summary(s: cfg.ManagerSettings) -> str:
    tls = f"certificate {s.tls_cert}" if s.tls_cert else f"self-signed certificate in {s.state_dir}"
    return (f"listens on {s.url} ({tls}); {len(s.admins)} admin(s): {', '.join(sorted(s.admins))}; "
            f"concentrator at {s.control_socket}")


def _check(config: str) -> None:
    check_config(lambda: cfg.load(config), _summary)


@main.command()
@config_option
@click.option("--check", is_flag=True, help="validate the config and exit (0: fine, 2: not); nothing is bound")
@click.option("-v", "--verbose", is_flag=True)
def run(config: str, check: bool, verbose: bool) -> None:
    """Run the manager in the foreground (SIGTERM stops it)."""
    if check:
        _check(config)
        return
    from natt_daemons.manager.server import serve
    from natt_daemons.manager.tls import TlsError

    setup_logging(verbose)

    def start() -> int:
        try:
            return serve(config)
        except TlsError as e:
            raise CliError(f"TLS: {e}", exit_code=1) from e
        except PermissionError as e:
            raise CliError(f"permission denied: {e} (a port below 1024 needs CAP_NET_BIND_SERVICE, which the unit "
                           "does not give: use 8443; the state directory must be the manager's own)",
                           exit_code=1) from e

    run_daemon(start, preflight=lambda: cfg.load(config).secrets.enforce())


@main.command("check")
@config_option
def check_cmd(config: str) -> None:
    """Validate the config without starting: unknown keys, values, admins' hashes, secrets' file modes."""
    _check(config)


@main.command()
@click.argument("login")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
def passwd(login: str, password_stdin: bool) -> None:
    """Print a salted hash for the administrator LOGIN, to paste under [admins] in the config."""
    if not cfg.valid_login(login):
        raise click.BadParameter("1-64 of letters, digits and . _ - @", param_hint="LOGIN")
    if password_stdin:
        password = password_from_stdin()
    else:
        password = getpass.getpass(f"password for {login}: ")
        if getpass.getpass("again: ") != password:
            raise click.ClickException("passwords differ")
    if len(password) < 8:
        raise click.ClickException("a manager password needs 8 characters or more")
    click.echo(f'{login} = "{hash_password(password)}"')


if __name__ == "__main__":
    main()
