"""A private strongSwan (charon + swanctl) run inside one lab namespace: the reference peer for tests and bench.

Everything lives in one directory: strongswan.conf, swanctl.conf, the charon log, the vici socket, and
charon's pid file. charon's pid file path is compiled in (/var/run/charon.pid) and charon refuses to start
when it exists, so charon runs in a private mount namespace with that directory's run/ bind-mounted over
/run: its pid file is <dir>/run/charon.pid and no other charon on the host is affected. The kernel has no
ESP, so charon uses the kernel-libipsec plugin (ESP in userspace, over a TUN device).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

from natt_daemons.lab import procs
from natt_daemons.lab.topology import Lab

CHARON = Path("/usr/lib/ipsec/charon")
SWANCTL = shutil.which("swanctl") or "/usr/sbin/swanctl"

# The plugins charon loads, by name. xauth-generic (XAuth against `secrets { xauth {...} }`) is in Debian's
# libcharon-extauth-plugins; openssl and gcm (3DES, AES-GCM) in libstrongswan-standard-plugins.
PLUGINS = (
    "random nonce openssl aes gcm sha1 sha2 md5 hmac gmp curve25519 kdf pem pkcs1 pubkey x509 "
    "kernel-libipsec kernel-netlink socket-default vici attr updown xauth-generic"
)
NEEDED = {
    "kernel-libipsec": "libcharon-extra-plugins",
    "xauth-generic": "libcharon-extauth-plugins",
    "openssl": "libstrongswan-standard-plugins",
    "gcm": "libstrongswan-standard-plugins",
}


def missing() -> str | None:
    """Why strongSwan cannot run here, or None."""
    if not CHARON.exists():
        return f"{CHARON} is not installed (strongswan-charon)"
    if not Path(SWANCTL).exists():
        return "swanctl is not installed (strongswan-swanctl)"
    for plugin, package in NEEDED.items():
        if not Path(f"/usr/lib/ipsec/plugins/libstrongswan-{plugin}.so").exists():
            return f"strongSwan's {plugin} plugin is not installed ({package})"
    if shutil.which("unshare") is None:
        return "unshare (util-linux) is not installed"
    return None


def strongswan_conf(workdir: Path, bench: bool = False) -> str:
    """bench: log only errors, and let thousands of clients behind one PAT address be half-open at once."""
    level = 0 if bench else 2
    limits = "\n    block_threshold = 1000000\n    init_limit_half_open = 0" if bench else ""
    return f"""\
charon {{
    load_modular = no
    load = {PLUGINS}
    port = 500
    port_nat_t = 4500{limits}
    install_routes = yes
    # IKEv1 Aggressive Mode with a PSK exposes a hash of the key to offline attack; the seed uses it.
    i_dont_care_about_security_and_use_aggressive_mode_psk = yes
    filelog {{
        charon {{
            path = {workdir}/charon.log
            time_format = %b %e %T
            default = {min(level, 1)}
            ike = {level}
            cfg = {level}
            knl = {level}
            esp = {level}
            append = no
            flush_line = yes
        }}
    }}
    plugins {{
        vici {{
            socket = unix://{workdir}/charon.vici
        }}
        kernel-libipsec {{
            allow_peer_ts = no
        }}
    }}
}}
swanctl {{
    load = pem pkcs1 x509 pubkey random nonce
}}
"""


@dataclass
class Suite:
    name: str
    ike: str  # swanctl proposal, e.g. "3des-md5-modp1024"
    esp: str  # swanctl esp_proposal, e.g. "3des-md5"
    client_phase1: str  # natt suite names
    client_phase2: str


def swanctl_conf(
    suite: Suite,
    local_id: str,
    group: str,
    psk: str,
    users: dict[str, str],
    pool: str,
    rekey_time: str | None = None,
    dpd_delay: int = 10,
) -> str:
    """One IKEv1 Aggressive Mode + XAuth + Mode Config connection; rekey_time (e.g. "60s") for the CHILD_SAs."""
    rekey = f"\n                rekey_time = {rekey_time}\n                life_time = 8h" if rekey_time else ""
    secrets = "".join(
        f'    xauth-{i} {{\n        id = {u}\n        secret = "{p}"\n    }}\n'
        for i, (u, p) in enumerate(users.items())
    )
    return f"""\
connections {{
    natt {{
        version = 1
        aggressive = yes
        proposals = {suite.ike}
        pools = p
        dpd_delay = {dpd_delay}s
        encap = no
        local {{
            auth = psk
            id = {local_id}
        }}
        remote-1 {{
            auth = psk
            id = keyid:{group}
        }}
        remote-2 {{
            auth = xauth
        }}
        children {{
            net {{
                local_ts = 0.0.0.0/0
                esp_proposals = {suite.esp}{rekey}
            }}
        }}
    }}
}}
pools {{
    p {{
        addrs = {pool}
    }}
}}
secrets {{
    ike-group {{
        id = keyid:{group}
        secret = "{psk}"
    }}
{secrets}}}
"""


def swanctl_client_conf(
    suite: Suite,
    gateway: str,
    group: str,
    psk: str,
    user: str,
    password: str,
    *,
    remote_ts: str = "192.168.2.0/24",
    rekey_time: str | None = None,
    child_rekey_time: str | None = None,
    child_life_time: str | None = None,
    child_rand_time: str | None = None,
    dpd_delay: int = 30,
) -> str:
    """charon as a Cisco-style remote access CLIENT (the VPN Client's part): IKEv1 Aggressive Mode with the group
    name as KEY_ID and the group PSK, then XAUTH as `user`, a virtual IP by Mode Config (pull), and one CHILD_SA
    "net" to remote_ts, started by `Charon.initiate()` (start_action none).

    rekey_time (e.g. "80s"): when charon renews the IKE SA; IKEv1 has no IKE rekey, so charon re-authenticates
    (a new phase 1, XAUTH, Mode Config and Quick Modes, then the old IKE SA is deleted). child_rekey_time,
    child_life_time, child_rand_time: the CHILD_SA's soft and hard lifetimes and the random part taken off the
    soft one (strongSwan's defaults: 1h, 1.1 x rekey, life - rekey). charon proposes life_time as the phase 2
    lifetime."""
    ike_rekey = f"\n        rekey_time = {rekey_time}" if rekey_time else ""
    child = "".join(f"\n                {k} = {v}" for k, v in (
        ("rekey_time", child_rekey_time), ("life_time", child_life_time), ("rand_time", child_rand_time)) if v)
    return f"""\
connections {{
    natt {{
        version = 1
        aggressive = yes
        remote_addrs = {gateway}
        proposals = {suite.ike}
        vips = 0.0.0.0
        dpd_delay = {dpd_delay}s{ike_rekey}
        local-1 {{
            auth = psk
            id = keyid:{group}
        }}
        local-2 {{
            auth = xauth
            xauth_id = {user}
        }}
        remote-1 {{
            auth = psk
            id = %any
        }}
        children {{
            net {{
                remote_ts = {remote_ts}
                esp_proposals = {suite.esp}
                start_action = none{child}
            }}
        }}
    }}
}}
secrets {{
    ike-group {{
        id = keyid:{group}
        secret = "{psk}"
    }}
    xauth-user {{
        id = {user}
        secret = "{password}"
    }}
}}
"""


@dataclass
class Charon:
    lab: Lab
    role: str
    workdir: Path
    proc: procs.Proc | None = None
    env: dict[str, str] = field(default_factory=dict)
    bench: bool = False
    name: str = "charon"  # its name in the lab's process registry: one per lab, so two charons need two names

    @property
    def uri(self) -> str:
        return f"unix://{self.workdir}/charon.vici"

    @property
    def log_path(self) -> Path:
        return self.workdir / "charon.log"

    @property
    def pidfile(self) -> Path:
        return self.workdir / "run" / "charon.pid"

    def write(self, swanctl: str) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.workdir / "run").mkdir(exist_ok=True, mode=0o700)
        (self.workdir / "strongswan.conf").write_text(strongswan_conf(self.workdir, self.bench))
        p = self.workdir / "swanctl.conf"
        p.write_text(swanctl)
        p.chmod(0o600)

    def start(self, timeout: float = 20.0) -> None:
        self.env = {**os.environ, "STRONGSWAN_CONF": str(self.workdir / "strongswan.conf")}
        # `ip netns exec` → unshare → sh → charon, each exec'ing the next: the recorded pid is charon's.
        script = f'mount --bind "{self.workdir}/run" /run && exec "{CHARON}"'
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", script]
        self.proc = procs.start(self.lab, self.role, argv, self.workdir / "charon.out", name=self.name,
                                 env=self.env)

        def ready() -> bool:
            if not self.proc.alive:
                raise RuntimeError(f"charon exited:\n{self.proc.log()[-3000:]}\n{self.log()[-3000:]}")
            return (self.workdir / "charon.vici").exists()

        procs.wait_for(ready, timeout, 0.1, "charon's vici socket")

    def swanctl(self, command: str, *args: str, timeout: float = 20.0) -> str:
        argv = [SWANCTL, command, "--uri", self.uri, *args]  # swanctl takes options after the command only
        out = self.lab.run(self.role, argv, env=self.env, timeout=timeout)
        if out.returncode != 0:
            what = " ".join([command, *args])
            raise RuntimeError(f"swanctl {what} failed ({out.returncode}):\n{out.stdout}{out.stderr}")
        return out.stdout

    def load(self) -> str:
        return self.swanctl("--load-all", "--file", str(self.workdir / "swanctl.conf"))

    def initiate(self, child: str = "net", timeout: int = 30) -> str:
        """Start a client connection (swanctl_client_conf) and wait until its CHILD_SA is up, at most timeout s."""
        return self.swanctl("--initiate", "--child", child, "--timeout", str(timeout), timeout=timeout + 10)

    def list_sas(self) -> str:
        return self.swanctl("--list-sas")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self) -> None:
        """SIGTERM to charon by its recorded pid (SIGKILL after a bound); its pid file is checked too."""
        if self.proc is not None:
            self.proc.stop(8.0)
            self.proc = None
        # A charon started here can only have written its pid file into workdir/run; if one is still
        # there and names a live charon (e.g. the Proc handle was lost), end exactly that pid.
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int(self.pidfile.read_text().split()[0])
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            if comm == "charon":
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)


def virtual_ip(list_sas: str) -> str | None:
    """The virtual IP a client charon got by Mode Config (`local ... [10.40.1.1]` in `swanctl --list-sas`)."""
    m = re.search(r"^\s+local\s+.*\[(\d+\.\d+\.\d+\.\d+)\]\s*$", list_sas, re.MULTILINE)
    return m.group(1) if m else None


def spis(list_sas: str) -> set[str]:
    """The ESP SPIs (hex, both directions) of every CHILD_SA in `swanctl --list-sas` output."""
    return set(re.findall(r"^\s+(?:in|out)\s+([0-9a-f]{8}),", list_sas, re.MULTILINE))
