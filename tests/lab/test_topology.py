"""The lab network in real namespaces: reachability, isolation, clean removal, coexistence, processes."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natt_daemons.lab import procs
from natt_daemons.lab.topology import ADDR, IFACE, ROLES, Lab, LabError

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces and veth pairs"),
]
REPO = Path(__file__).resolve().parents[2]


def random_prefix() -> str:
    return f"nt{secrets.token_hex(3)}-"


def netns_names() -> set[str]:
    return set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    lab = Lab(random_prefix())
    try:
        lab.up()
        yield lab
    finally:
        lab.down()
    assert not lab.exists()


@pytest.fixture
def fresh_lab() -> Iterator[Lab]:
    """A lab of its own for tests that take it down themselves; removed in any case."""
    lab = Lab(random_prefix())
    try:
        lab.up()
        yield lab
    finally:
        lab.down()


def test_every_namespace_exists(lab: Lab) -> None:
    assert lab.complete()
    assert {lab.ns(r) for r in ROLES} <= netns_names()
    assert lab.namespaces() == sorted(lab.ns(r) for r in ROLES)


@pytest.mark.parametrize(
    ("role", "dst"),
    [
        ("client1", ADDR.pat_inside),
        ("client2", ADDR.pat_inside),
        ("pat", ADDR.inet_public),
        ("pat", ADDR.conc_public),  # routed through inet
        ("pubclient", ADDR.conc_public),
        ("conc", ADDR.server),
    ],
)
def test_reachable(lab: Lab, role: str, dst: str) -> None:
    assert lab.ping(role, dst), f"{role} cannot reach {dst}"


def test_client_cannot_reach_concentrator_without_nat(lab: Lab) -> None:
    # No NAT yet (and pat does not forward until the PAT daemon says so): nothing comes back to 10.10.10.0/24.
    assert lab.sysctl("pat", "net.ipv4.ip_forward") == "0"
    assert not lab.ping("client1", ADDR.conc_public)


def test_interfaces_addresses_and_sysctls(lab: Lab) -> None:
    out = lab.run("pat", ["ip", "-br", "-4", "addr"], check=True).stdout
    assert f"{IFACE.pat_inside} " in out and f"{ADDR.pat_inside}/24" in out
    assert f"{ADDR.pat_outside}/24" in out
    master = lab.run("pat", ["ip", "-o", "link", "show", "master", IFACE.pat_inside], check=True).stdout
    assert IFACE.pat_port_client1 in master and IFACE.pat_port_client2 in master
    route = lab.run("client2", ["ip", "route", "show", "default"], check=True).stdout
    assert f"via {ADDR.pat_inside} dev {IFACE.host}" in route
    assert lab.sysctl("inet", "net.ipv4.ip_forward") == "1"
    assert lab.sysctl("conc", "net.ipv4.ip_forward") == "1"
    for role in ROLES:
        assert lab.sysctl(role, "net.ipv6.conf.all.disable_ipv6") == "1", role
        assert lab.run(role, ["ip", "-6", "-o", "addr"]).stdout.strip() == "", role
        assert ",UP" in lab.run(role, ["ip", "-o", "link", "show", "lo"]).stdout, role


def test_the_root_namespace_keeps_no_lab_links(lab: Lab) -> None:
    assert lab.leftover_links() == []


def test_run_is_bounded(lab: Lab) -> None:
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        lab.run("server", ["sleep", "10"], timeout=0.5)
    assert time.monotonic() - t0 < 5


def test_extra_public_host(lab: Lab) -> None:
    mac = lab.run("inet", ["cat", f"/sys/class/net/{IFACE.inet_public}/address"]).stdout
    name = lab.attach_public("extra", "203.0.113.30")
    try:
        assert lab.ping("extra", ADDR.conc_public)
        # the router keeps its MAC whatever the new port's MAC is (neighbours' ARP caches stay right)
        assert lab.run("inet", ["cat", f"/sys/class/net/{IFACE.inet_public}/address"]).stdout == mac
        assert lab.ping("extra", ADDR.pat_outside)
    finally:
        lab.run("inet", ["ip", "link", "del", "pub-extra"])  # also removes the peer in the extra namespace
        subprocess.run(["ip", "netns", "del", name], check=True, timeout=10)


def test_second_lab_coexists(lab: Lab) -> None:
    other = Lab(random_prefix())
    try:
        other.up()
        assert other.complete() and lab.complete()
        assert set(other.namespaces()).isdisjoint(lab.namespaces())
        assert other.ping("client1", ADDR.pat_inside)
        assert other.ping("pubclient", ADDR.conc_public)
        assert lab.ping("client2", ADDR.pat_inside)
    finally:
        other.down()
    assert not other.exists()
    assert lab.complete() and lab.ping("pat", ADDR.conc_public)


def test_up_refuses_an_existing_lab(lab: Lab) -> None:
    with pytest.raises(LabError, match="exists already"):
        Lab(lab.prefix).up()
    assert lab.complete()


def test_prefixes_and_ownership() -> None:
    for bad in ("", "natt", "has space-", "x" * 12 + "-", "a/b-"):
        with pytest.raises(LabError):
            Lab(bad)
    lab = Lab("natt-")
    assert lab.ns("client1") == "natt-client1"
    assert lab.owns("natt-client1") and lab.owns("natt-c1a")
    assert not lab.owns("natt-x-client1")  # another lab, prefix natt-x-
    assert not lab.owns("nattclient1")


# processes --------------------------------------------------------------------------------------


def test_process_runs_in_its_namespace_and_stops(lab: Lab, tmp_path: Path) -> None:
    p = procs.start(lab, "conc", ["sleep", "60"], tmp_path / "sleep.log")
    try:
        assert p.alive
        assert p.pidfile.read_text().split()[:2] == [str(p.pid), str(p.start_time)]
        want = os.stat(f"/run/netns/{lab.ns('conc')}").st_ino
        # `ip netns exec` enters the namespace a moment after the fork: wait (bounded) for the exec.
        assert procs.wait_for(lambda: os.stat(f"/proc/{p.pid}/ns/net").st_ino == want, 5.0, 0.02, "setns")
        assert [q.name for q in procs.registered(lab.prefix)] == [p.name]
        assert p.stop(timeout=5)
        assert not p.alive and p.returncode == -15
        assert not p.pidfile.exists()
    finally:
        p.stop(timeout=1)


def test_process_that_ignores_sigterm_is_killed(lab: Lab, tmp_path: Path) -> None:
    code = "import signal as s, time; s.signal(s.SIGTERM, s.SIG_IGN); print('ready', flush=True); time.sleep(30)"
    p = procs.start(lab, "pat", [sys.executable, "-c", code], tmp_path / "stubborn.log")
    try:
        procs.wait_for(lambda: "ready" in p.log(), timeout=5, what="the shell's trap")
        t0 = time.monotonic()
        assert p.stop(timeout=0.5) is False  # needed SIGKILL
        assert time.monotonic() - t0 < 5
        assert not p.alive and p.returncode == -9
    finally:
        p.stop(timeout=1)


def test_wait_for_is_bounded() -> None:
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="never"):
        procs.wait_for(lambda: False, timeout=0.3, interval=0.05, what="never")
    assert time.monotonic() - t0 < 2
    assert procs.wait_for(lambda: 42, timeout=1) == 42


def test_another_shell_ends_exactly_the_registered_processes(fresh_lab: Lab, tmp_path: Path) -> None:
    lab = fresh_lab
    mine = procs.start(lab, "client1", ["sleep", "60"], tmp_path / "c1.log")
    theirs = subprocess.Popen(["sleep", "60"])  # not registered: down must leave it alone
    try:
        status = _cli("status", "--prefix", lab.prefix)
        assert mine.name in status.stdout and "running" in status.stdout
        out = _cli("down", "--prefix", lab.prefix)
        assert f"pid {mine.pid}" in out.stdout
        procs.wait_for(lambda: not mine.alive, timeout=5, what="the registered process to end")
        assert theirs.poll() is None
        assert not lab.exists()
        assert lab.leftover_links() == []
        assert not procs.run_dir(lab.prefix).exists()
        again = _cli("down", "--prefix", lab.prefix)
        assert "nothing was there" in again.stdout
    finally:
        theirs.kill()
        theirs.wait()
        mine.stop(timeout=1)


def test_down_is_idempotent_and_leaves_nothing(fresh_lab: Lab) -> None:
    lab = fresh_lab
    lab.down()
    assert not lab.exists()
    assert not any(lab.owns(n) for n in netns_names())
    assert lab.leftover_links() == []
    assert lab.down() == []  # harmless the second time


def test_down_removes_leftover_root_veths() -> None:
    from pyroute2 import IPRoute

    lab = Lab(random_prefix())
    with IPRoute() as ipr:  # what an interrupted up() can leave behind
        ipr.link("add", ifname=lab.prefix + "zza", kind="veth", peer=lab.prefix + "zzb")
    try:
        assert lab.leftover_links() == [lab.prefix + "zza", lab.prefix + "zzb"]
        lab.down()
        assert lab.leftover_links() == []
    finally:
        lab.down()


def test_make_lab_down_shell_fallback(fresh_lab: Lab, tmp_path: Path) -> None:
    """Without a venv, `make lab-down` cleans up with the shell: registered pids, namespaces, veths."""
    lab = fresh_lab
    p = procs.start(lab, "inet", ["sleep", "60"], tmp_path / "s.log")
    try:
        out = subprocess.run(
            ["make", "-s", "-C", str(REPO), "lab-down", f"LAB_PREFIX={lab.prefix}", f"VENV={tmp_path}/no-venv"],
            capture_output=True, text=True, timeout=60,
        )
        assert out.returncode == 0, out.stdout + out.stderr
        assert "shell cleanup" in out.stdout and str(p.pid) in out.stdout
        procs.wait_for(lambda: not p.alive, timeout=5, what="the registered process to end")
        assert not lab.exists() and lab.leftover_links() == []
        assert not (procs.pid_dir(lab.prefix)).exists()
    finally:
        p.stop(timeout=1)


def _cli(*args: str) -> subprocess.CompletedProcess:
    out = subprocess.run(
        [sys.executable, "-m", "natt_daemons.lab.cli", *args], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out
