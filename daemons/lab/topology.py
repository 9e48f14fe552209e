"""The lab network: seven namespaces joined by veth pairs and two bridges, built with pyroute2.

    client1 eth0 10.10.10.2 ─┐                                            ┌─ conc public 198.51.100.50
    client2 eth0 10.10.10.3 ─┤ pat: bridge inside 10.10.10.1              │  conc private 192.168.2.251 ─ server eth0
                             └─ pat outside 203.0.113.78 ─┐               │                                 192.168.2.10
    pubclient eth0 203.0.113.20 ─────────────── inet: bridge pub 203.0.113.1, core 198.51.100.1

Every namespace is named <prefix><role>. A name belongs to a lab when it is the prefix followed by
letters, digits or underscores only (no dash), so `natt-` never claims `natt-x-client1`.
veth pairs are created in the root namespace under temporary names <prefix><tag>a / <prefix><tag>b
(at most 15 characters), then moved into their namespaces and renamed there; nothing else in the
root namespace is touched. Sysctls are written from a forked child that entered the namespace
(pyroute2's ChildProcess + netns.setns), not through `ip netns exec sysctl`.
"""

from __future__ import annotations

import contextlib
import errno
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pyroute2 import IPRoute, netns
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.process import ChildProcess

DEFAULT_PREFIX = "natt-"
MAX_PREFIX = 11  # 15 (IFNAMSIZ - 1) minus the longest temporary tag ("x12a")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*-$")
_ROLE_RE = re.compile(r"^[A-Za-z0-9_]+$")
RUN_TIMEOUT = 30.0  # default bound for Lab.run

# roles (namespace name = prefix + role)
CLIENT1 = "client1"
CLIENT2 = "client2"
PAT = "pat"
INET = "inet"
PUBCLIENT = "pubclient"
CONC = "conc"
SERVER = "server"
ROLES: tuple[str, ...] = (CLIENT1, CLIENT2, PAT, INET, PUBCLIENT, CONC, SERVER)


@dataclass(frozen=True)
class Addresses:
    """Every lab address (SCENARIO.md, lab column). Tests and configs read them from ADDR."""

    prefixlen: int = 24
    inside_net: str = "10.10.10.0/24"
    client1: str = "10.10.10.2"
    client2: str = "10.10.10.3"
    pat_inside: str = "10.10.10.1"
    public_net: str = "203.0.113.0/24"
    pat_outside: str = "203.0.113.78"
    inet_public: str = "203.0.113.1"
    pubclient: str = "203.0.113.20"
    core_net: str = "198.51.100.0/24"
    inet_core: str = "198.51.100.1"
    conc_public: str = "198.51.100.50"
    private_net: str = "192.168.2.0/24"
    conc_private: str = "192.168.2.251"
    server: str = "192.168.2.10"
    pool: str = "10.40.1.0/24"  # the concentrator's address pool (not configured on any link)


@dataclass(frozen=True)
class Interfaces:
    """Interface names inside the namespaces."""

    host: str = "eth0"  # client1, client2, pubclient, server and extra public hosts
    pat_inside: str = "inside"  # a bridge holding pat_port_client1/2
    pat_port_client1: str = "in-client1"
    pat_port_client2: str = "in-client2"
    pat_outside: str = "outside"
    inet_public: str = "pub"  # a bridge holding inet_port_pat, inet_port_pubclient and extra hosts' ports
    inet_port_pat: str = "pub-pat"
    inet_port_pubclient: str = "pub-pubclient"
    inet_core: str = "core"
    conc_public: str = "public"
    conc_private: str = "private"


ADDR = Addresses()
IFACE = Interfaces()


class LabError(Exception):
    """The lab cannot be built or used as asked; the message says why."""


@dataclass(frozen=True)
class _End:
    role: str
    ifname: str
    address: str | None = None
    bridge: str | None = None


@dataclass(frozen=True)
class _Wire:
    tag: str  # temporary root-namespace names: prefix + tag + "a" / "b"
    a: _End
    b: _End


WIRES: tuple[_Wire, ...] = (
    _Wire("c1", _End(CLIENT1, IFACE.host, ADDR.client1), _End(PAT, IFACE.pat_port_client1, bridge=IFACE.pat_inside)),
    _Wire("c2", _End(CLIENT2, IFACE.host, ADDR.client2), _End(PAT, IFACE.pat_port_client2, bridge=IFACE.pat_inside)),
    _Wire(
        "po",
        _End(PAT, IFACE.pat_outside, ADDR.pat_outside),
        _End(INET, IFACE.inet_port_pat, bridge=IFACE.inet_public),
    ),
    _Wire(
        "pc",
        _End(PUBCLIENT, IFACE.host, ADDR.pubclient),
        _End(INET, IFACE.inet_port_pubclient, bridge=IFACE.inet_public),
    ),
    _Wire("co", _End(INET, IFACE.inet_core, ADDR.inet_core), _End(CONC, IFACE.conc_public, ADDR.conc_public)),
    _Wire("sv", _End(CONC, IFACE.conc_private, ADDR.conc_private), _End(SERVER, IFACE.host, ADDR.server)),
)
BRIDGES: dict[str, tuple[str, str]] = {
    PAT: (IFACE.pat_inside, ADDR.pat_inside),
    INET: (IFACE.inet_public, ADDR.inet_public),
}
GATEWAYS: dict[str, str] = {
    CLIENT1: ADDR.pat_inside,
    CLIENT2: ADDR.pat_inside,
    PAT: ADDR.inet_public,
    PUBCLIENT: ADDR.inet_public,
    CONC: ADDR.inet_core,
    SERVER: ADDR.conc_private,
}
FORWARDING = (INET, CONC)  # the PAT daemon turns forwarding on in pat itself
NO_IPV6 = ("net.ipv6.conf.all.disable_ipv6", "net.ipv6.conf.default.disable_ipv6")


def check_prefix(prefix: str) -> str:
    if not _PREFIX_RE.match(prefix) or len(prefix) > MAX_PREFIX:
        raise LabError(
            f"bad lab prefix {prefix!r}: letters, digits, '_' or '-', ending in '-', at most {MAX_PREFIX} characters"
        )
    return prefix


def _sysctl_path(key: str) -> str:
    if not re.match(r"^[A-Za-z0-9_.-]+$", key) or ".." in key:
        raise LabError(f"bad sysctl name {key!r}")
    return "/proc/sys/" + key.replace(".", "/")


def _sysctl_child(nsname: str, items: list[tuple[str, str | None]]) -> bytes:
    """Runs in a forked child: enter the namespace, write then read back each sysctl."""
    netns.setns(nsname, flags=0, fork=False)
    out = []
    for path, value in items:
        if value is not None:
            with open(path, "w") as f:
                f.write(value)
        with open(path) as f:
            out.append(f.read().strip())
    return "\n".join(out).encode()


def ns_sysctl(nsname: str, values: Sequence[tuple[str, str | None]]) -> list[str]:
    """Set (value not None) and read sysctls inside a namespace; returns the values read back."""
    items = [(_sysctl_path(k), v) for k, v in values]
    child = ChildProcess(target=_sysctl_child, args=[nsname, items])
    try:
        child.run()
        data = child.get_data(timeout=5)
    finally:
        child.stop(kill=True)
    return data.decode().split("\n")


def _one(ipr: IPRoute, ifname: str) -> int:
    found = ipr.link_lookup(ifname=ifname)
    if not found:
        raise LabError(f"interface {ifname} not found")
    return found[0]


def _wait_oper_up(iprs: dict[str, IPRoute], timeout: float = 10.0) -> None:
    """Wait until every link but lo reports operstate UP (carrier changes reach it within about a second)."""
    deadline = time.monotonic() + timeout
    while True:
        down = [
            f"{role}/{m.get_attr('IFLA_IFNAME')}"
            for role, ipr in iprs.items()
            for m in ipr.get_links()
            if m.get_attr("IFLA_IFNAME") != "lo" and m.get_attr("IFLA_OPERSTATE") != "UP"
        ]
        if not down:
            return
        if time.monotonic() > deadline:
            raise LabError(f"links still not up after {timeout:g}s: {', '.join(down)}")
        time.sleep(0.05)


def _link_kind(msg: Any) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


# The ICMP echo used by Lab.ping when iputils' ping is not installed: run inside the namespace as root.
_PY_PING = r"""
import os, select, socket, struct, sys, time
dst, count, wait = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
def csum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xFFFF); s += s >> 16
    return ~s & 0xFFFF
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
ident, got = os.getpid() & 0xFFFF, 0
for seq in range(1, count + 1):
    body = struct.pack("!HH", ident, seq) + b"natt-lab-ping..."
    s.sendto(struct.pack("!BBH", 8, 0, csum(b"\x08\x00\x00\x00" + body)) + body, (dst, 0))
    end = time.monotonic() + wait
    while (left := end - time.monotonic()) > 0:
        if not select.select([s], [], [], left)[0]:
            break
        pkt, (src, _) = s.recvfrom(2048)
        icmp = pkt[(pkt[0] & 15) * 4:]
        if src == dst and icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
            got += 1
            break
print(f"{got}/{count} replies from {dst}")
sys.exit(0 if got else 1)
"""


@dataclass
class Lab:
    """One copy of the lab network, identified by its name prefix."""

    prefix: str = DEFAULT_PREFIX

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    # names -------------------------------------------------------------------------------------
    def ns(self, role: str) -> str:
        if not _ROLE_RE.match(role):
            raise LabError(f"bad role {role!r}: letters, digits and '_' only")
        return self.prefix + role

    def owns(self, name: str) -> bool:
        """Whether a namespace or root-namespace link name belongs to this lab."""
        return name.startswith(self.prefix) and bool(_ROLE_RE.match(name[len(self.prefix) :]))

    def namespaces(self) -> list[str]:
        return sorted(n for n in netns.listnetns() if self.owns(n))

    def exists(self) -> bool:
        """True when any namespace of this lab exists (a complete or a half-built lab)."""
        return bool(self.namespaces())

    def complete(self) -> bool:
        """True when every namespace of the standard topology exists."""
        have = set(self.namespaces())
        return all(self.ns(r) in have for r in ROLES)

    @property
    def run_dir(self) -> str:
        from natt_daemons.lab.procs import run_dir

        return str(run_dir(self.prefix))

    # building ----------------------------------------------------------------------------------
    def up(self) -> None:
        """Create the whole network. Refuses if any namespace of this prefix exists; cleans up on failure."""
        if self.exists():
            raise LabError(f"a lab with prefix {self.prefix!r} exists already ({', '.join(self.namespaces())})")
        try:
            self._build()
        except BaseException:
            self.down()
            raise

    def _build(self) -> None:
        for role in ROLES:
            self._new_ns(role, forwarding=role in FORWARDING)
        iprs: dict[str, IPRoute] = {}
        try:
            for role in ROLES:
                iprs[role] = IPRoute(netns=self.ns(role), flags=0)
            for role, (name, _) in BRIDGES.items():
                iprs[role].link("add", ifname=name, kind="bridge", br_stp_state=0, br_forward_delay=0)
            with IPRoute() as root:
                for wire in WIRES:
                    self._wire(root, iprs, wire.tag, wire.a, wire.b)
            for role, (name, address) in BRIDGES.items():
                ipr = iprs[role]
                idx = _one(ipr, name)
                ipr.addr("add", index=idx, address=address, prefixlen=ADDR.prefixlen)
                ipr.link("set", index=idx, state="up")
                # A bridge takes the lowest MAC of its ports unless one is set: pin the one it has now (with
                # its ports in), so a host attached later cannot change it under the neighbours' ARP caches.
                ipr.link("set", index=idx, address=ipr.get_links(idx)[0].get_attr("IFLA_ADDRESS"))
            for role, gateway in GATEWAYS.items():
                iprs[role].route("add", dst="0.0.0.0/0", gateway=gateway)
            _wait_oper_up(iprs)
        finally:
            for ipr in iprs.values():
                ipr.close()
        for role in ROLES:  # 'all' also reaches the devices that existed before 'default' was set
            ns_sysctl(self.ns(role), [(k, "1") for k in NO_IPV6])

    def _new_ns(self, role: str, forwarding: bool) -> None:
        name = self.ns(role)
        netns.create(name)
        settings: list[tuple[str, str | None]] = [(k, "1") for k in NO_IPV6]
        if forwarding:
            settings.append(("net.ipv4.ip_forward", "1"))
        ns_sysctl(name, settings)
        with IPRoute(netns=name, flags=0) as ipr:
            ipr.link("set", index=_one(ipr, "lo"), state="up")

    def _wire(self, root: IPRoute, iprs: dict[str, IPRoute], tag: str, a: _End, b: _End) -> None:
        """A veth pair made in the root namespace under temporary names, then moved and renamed."""
        tmp_a, tmp_b = self.prefix + tag + "a", self.prefix + tag + "b"
        root.link("add", ifname=tmp_a, kind="veth", peer=tmp_b)
        for tmp, end in ((tmp_a, a), (tmp_b, b)):
            root.link("set", index=_one(root, tmp), net_ns_fd=self.ns(end.role))
            ipr = iprs[end.role]
            idx = _one(ipr, tmp)
            ipr.link("set", index=idx, ifname=end.ifname)
            if end.bridge:
                ipr.link("set", index=idx, master=_one(ipr, end.bridge))
            if end.address:
                ipr.addr("add", index=idx, address=end.address, prefixlen=ADDR.prefixlen)
            ipr.link("set", index=idx, state="up")

    def attach_public(self, role: str, address: str, gateway: str = ADDR.inet_public) -> str:
        """Add one more host on the public segment (bridge `pub` in inet): namespace prefix+role with eth0.

        Its port on the bridge is called pub-<role> (role at most 11 characters). Returns the namespace name.
        """
        if len(role) > 11:
            raise LabError(f"role {role!r} too long for a bridge port name (11 characters at most)")
        if not self.complete():
            raise LabError(f"lab {self.prefix!r} is not up")
        name = self.ns(role)
        if name in netns.listnetns():
            raise LabError(f"namespace {name} exists already")
        with IPRoute() as root:
            taken = {m.get_attr("IFLA_IFNAME") for m in root.get_links()}
            tag = next((f"x{n}" for n in range(100) if f"{self.prefix}x{n}a" not in taken), None)
            if tag is None:
                raise LabError("no free temporary interface name")
            self._new_ns(role, forwarding=False)
            iprs: dict[str, IPRoute] = {}
            try:
                iprs[role] = IPRoute(netns=name, flags=0)
                iprs[INET] = IPRoute(netns=self.ns(INET), flags=0)
                self._wire(root, iprs, tag, _End(role, IFACE.host, address), _End(INET, f"pub-{role}", bridge="pub"))
                iprs[role].route("add", dst="0.0.0.0/0", gateway=gateway)
                _wait_oper_up({role: iprs[role]})
            except BaseException:
                with contextlib.suppress(OSError):
                    netns.remove(name)
                raise
            finally:
                for ipr in iprs.values():
                    ipr.close()
        ns_sysctl(name, [(k, "1") for k in NO_IPV6])
        return name

    # removing ----------------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop the processes this lab registered, remove its namespaces and leftover root veths.

        Idempotent: on a lab that is not there it does nothing. Returns what it removed, for the CLI.
        """
        from natt_daemons.lab.procs import stop_registered

        removed = [f"process {p}" for p in stop_registered(self.prefix)]
        for name in self.namespaces():
            try:
                netns.remove(name)
            except FileNotFoundError:
                continue
            removed.append(f"namespace {name}")
        with IPRoute() as root:
            for msg in root.get_links():
                ifname = msg.get_attr("IFLA_IFNAME")
                if self.owns(ifname) and _link_kind(msg) == "veth":
                    try:
                        root.link("del", index=msg["index"])
                    except NetlinkError as e:
                        if e.code != errno.ENODEV:  # its peer's deletion took it already
                            raise
                    removed.append(f"link {ifname}")
        return removed

    def leftover_links(self) -> list[str]:
        """Root-namespace links whose name belongs to this lab (empty when the lab is down)."""
        with IPRoute() as root:
            return sorted(n for m in root.get_links() if self.owns(n := m.get_attr("IFLA_IFNAME")))

    # using ---------------------------------------------------------------------------------------
    def argv(self, role: str, argv: Iterable[str]) -> list[str]:
        """The command line that runs argv inside a namespace of this lab."""
        return ["ip", "netns", "exec", self.ns(role), *argv]

    def run(self, role: str, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess:
        """Run a command in prefix+role and wait for it (at most `timeout`, default RUN_TIMEOUT, seconds).

        Output is captured as text unless the caller says otherwise; check defaults to False.
        Raises subprocess.TimeoutExpired when the bound is hit (the command is killed).
        """
        if self.ns(role) not in netns.listnetns():
            raise LabError(f"namespace {self.ns(role)} does not exist")
        kw.setdefault("timeout", RUN_TIMEOUT)
        kw.setdefault("check", False)
        kw.setdefault("text", True)
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(self.argv(role, argv), **kw)

    def ping(self, role: str, dst: str, count: int = 2, wait: float = 1.0) -> bool:
        """Whether dst answers an ICMP echo from prefix+role: `ping -c count -W wait`, bounded in time.

        Falls back to a small raw-socket echo in Python when iputils' ping is not installed.
        """
        bound = count * (wait + 0.2) + 5
        if shutil.which("ping"):
            argv = ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(int(max(wait, 1))), dst]
        else:
            argv = [sys.executable, "-c", _PY_PING, dst, str(count), str(wait)]
        try:
            return self.run(role, argv, timeout=bound).returncode == 0
        except subprocess.TimeoutExpired:
            return False

    def sysctl(self, role: str, key: str, value: str | int | None = None) -> str:
        """Read (and first set, when value is given) one sysctl inside prefix+role."""
        return ns_sysctl(self.ns(role), [(key, None if value is None else str(value))])[0]
