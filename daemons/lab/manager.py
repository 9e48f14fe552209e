"""natt-manager in the lab: in the concentrator's namespace, listening only on its private side (192.168.2.251).

The server namespace (192.168.2.10, the host behind the concentrator) reaches it directly, as the seed's
operator's browser on the private LAN reaches the VPN 3000 Manager; the clients and the internet do not: the
manager binds the private address only. `natt-lab up --manager` and the browser test start it through here.
"""

from __future__ import annotations

import hashlib
import ssl
import sys
from pathlib import Path

from natt_daemons.common.passwords import hash_password
from natt_daemons.lab import procs
from natt_daemons.lab.scenario import Scenario
from natt_daemons.lab.topology import ADDR, CONC, SERVER

LAB_ADMIN = ("admin", "lab-admin-pass")
PORT = 8443
NAME = "manager"


def url() -> str:
    return f"https://{ADDR.conc_private}:{PORT}/"


def write_config(sc: Scenario, admins: dict[str, str] | None = None, **extra: str) -> Path:
    """The lab's manager.toml next to the daemons' configs; `extra` adds [manager] keys (TOML value text)."""
    admins = admins or dict([LAB_ADMIN])
    lines = [
        "# natt-manager in the lab (written by natt_daemons.lab.manager)",
        "[manager]",
        f'address = "{ADDR.conc_private}"',
        f"port = {PORT}",
        f'control_socket = "{sc.socket("concentrator")}"',
        f'state_dir = "{sc.run_dir / "manager-state"}"',
        *(f"{k} = {v}" for k, v in extra.items()),
        "",
        "[admins]",
        *(f'{login} = "{hash_password(password)}"' for login, password in admins.items()),
    ]
    path = sc.config_path(NAME)
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def _listening(sc: Scenario) -> bool:
    """A TLS handshake from the server namespace succeeds (what a browser there would do first)."""
    proc = sc.procs.get(NAME)
    if proc is not None and not proc.alive:
        raise RuntimeError(f"natt-manager exited:\n{proc.log()[-3000:]}")
    code = ("import socket, ssl, sys\n"
            "c = ssl.create_default_context(); c.check_hostname = False; c.verify_mode = ssl.CERT_NONE\n"
            f"s = socket.create_connection(({ADDR.conc_private!r}, {PORT}), timeout=2)\n"
            "c.wrap_socket(s).close()\n")
    out = sc.lab.run(SERVER, [sys.executable, "-c", code], check=False, capture_output=True, timeout=10)
    return out.returncode == 0


def start(sc: Scenario, timeout: float = 30.0, **extra: str) -> str:
    """Write the config, start natt-manager in the concentrator's namespace, wait until the server namespace can
    reach it; its URL."""
    write_config(sc, **extra)
    sc.start_daemon(NAME, CONC, "natt-manager")
    procs.wait_for(lambda: _listening(sc), timeout, 0.3, "natt-manager listening")
    return url()


def stop(sc: Scenario) -> None:
    proc = sc.procs.pop(NAME, None)
    if proc is not None:
        proc.stop(5.0)


def fingerprint(sc: Scenario) -> str:
    """The SHA-256 fingerprint of the certificate the manager made (for the operator to compare)."""
    pem = (sc.run_dir / "manager-state" / "manager-cert.pem").read_text()
    der = ssl.PEM_cert_to_DER_cert(pem)
    return ":".join(f"{b:02X}" for b in hashlib.sha256(der).digest())


def usage_text(sc: Scenario) -> str:
    p = sc.lab.prefix
    login, password = LAB_ADMIN
    return "\n".join([
        "",
        f"natt-manager: {url()} (in {p}conc, on the private side only; login {login}, password {password})",
        f"  certificate: self-signed, SHA-256 {fingerprint(sc)}",
        f"  from the server namespace: ip netns exec {p}server curl -k {url()}login",
        f"  a browser there:           ip netns exec {p}server chromium --ignore-certificate-errors "
        f"--user-data-dir=$(mktemp -d) {url()}",
        f"  its log: {sc.run_dir / (NAME + '.log')}",
    ])


def wait_logged(sc: Scenario, text: str, timeout: float = 10.0) -> None:
    """Wait until the manager's own log has a line containing `text`."""
    proc = sc.procs[NAME]
    procs.wait_for(lambda: text in proc.log(), timeout, 0.2, f"manager log line {text!r}")
