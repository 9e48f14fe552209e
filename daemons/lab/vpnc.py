"""Run the real vpnc (Debian's package) as a client inside a lab namespace, with a script of ours.

vpnc's own vpnc-script would rewrite /etc/resolv.conf, which namespaces share with the host; the
script written here only sets the tunnel's address and one route, inside the namespace.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from natt_daemons.lab import procs
from natt_daemons.lab.topology import Lab

VPNC = shutil.which("vpnc") or "/usr/sbin/vpnc"

SCRIPT = """#!/bin/sh
# Called by vpnc with $reason; touches only the namespace it runs in.
case "$reason" in
  connect)
    ip link set dev "$TUNDEV" up mtu 1300
    ip addr add "$INTERNAL_IP4_ADDRESS/32" dev "$TUNDEV"
    ip route replace 192.168.2.0/24 dev "$TUNDEV"
    ;;
  disconnect)
    ip route del 192.168.2.0/24 dev "$TUNDEV" 2>/dev/null
    ;;
esac
exit 0
"""


@dataclass
class Vpnc:
    proc: procs.Proc
    conf: Path

    def stop(self) -> None:
        self.proc.stop(10.0)


def start_vpnc(lab: Lab, role: str, run_dir: Path, user: str, password: str, *, natt_mode: str = "natt",
               dh_group: str = "dh2", secret: str = "ciscovpn-lab-key", weak: bool = False, debug: int = 1,
               unbuffered: bool = False) -> Vpnc:
    """vpnc in `role`'s namespace, its log in run_dir/vpnc-ROLE.log. debug: vpnc's level (1..3; 3 dumps every
    packet it parses). unbuffered: its stdout line-buffered (stdbuf), so the log is current while it runs and
    complete if it has to be killed."""
    script = run_dir / "vpnc-script"
    if not script.exists():
        script.write_text(SCRIPT)
        script.chmod(0o700)
    conf = run_dir / f"vpnc-{role}.conf"
    conf.write_text("\n".join([
        "IPSec gateway 198.51.100.50",
        "IPSec ID ciscovpn",
        f"IPSec secret {secret}",
        f"Xauth username {user}",
        f"Xauth password {password}",
        f"IKE DH Group {dh_group}",
        "Perfect Forward Secrecy server",
        f"NAT Traversal Mode {natt_mode}",
        # vpnc refuses 3DES and MD5 (the seed's suite) unless told.
        *(["Enable weak encryption", "Enable weak authentication"] if weak else []),
        f"Interface name vpnc-{role[-1]}",
        f"Script {script}",
        "No Detach",
        f"Debug {debug}",
        "",
    ]))
    conf.chmod(0o600)
    argv = [VPNC, "--pid-file", str(run_dir / f"vpnc-{role}.pid"), str(conf)]
    if unbuffered and shutil.which("stdbuf"):
        argv = [shutil.which("stdbuf") or "stdbuf", "-oL", "-eL", *argv]  # stdbuf execs vpnc: the pid stays vpnc's
    return Vpnc(procs.start(lab, role, argv, run_dir / f"vpnc-{role}.log", name=f"vpnc-{role}"), conf)
