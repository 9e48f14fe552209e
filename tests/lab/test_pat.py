"""natt-pat for real: the daemon in a throwaway network of its own, real UDP and ESP through it.

    c1 eth0 10.10.10.2 ─┐
                        ├─ pat: bridge inside (10.10.10.1/24) | outside (203.0.113.78/24) ── out eth0 203.0.113.1
    c2 eth0 10.10.10.3 ─┘                                                 (UDP echo on 500 and 4500, ESP sink)

The test makes the namespaces (<prefix>c1, c2, pat, out), the veth pairs (created inside the
namespaces, never in the root one) and the bridge; the pat side has no addresses and its links are
down, since giving them is the daemon's job. Seed lines checked: `show xlate` ("3 in use, 4 most used",
"PAT Global 171.69.89.78(1025) Local 10.10.10.3(4500)" — two clients, one global address, different
ports), `show arp` (both sides), and the troubleshooting case (ESP dropped on the way).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from natt_daemons.common.control import ControlError, call

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, veth pairs and nftables"),
]
REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
NATT_PAT = str(Path(sys.executable).parent / "natt-pat")
CONFIG_TEMPLATE = REPO / "configs" / "pat.toml"
CLIENT1, CLIENT2, INSIDE_GW = "10.10.10.2", "10.10.10.3", "10.10.10.1"
OUTSIDE, ROUTER = "203.0.113.78", "203.0.113.1"
TABLE = "natt_pat"
STEP_TIMEOUT = 20.0

# Runs in `out`: echoes UDP on 500 and 4500, records every datagram and every ESP packet it gets as a JSON
# line. Ends by itself after its lifetime.
ECHO = r"""
import json, select, socket, sys, time
end = time.monotonic() + float(sys.argv[1])
socks = []
for port in (500, 4500):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    socks.append(s)
esp = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
print(json.dumps({"kind": "ready"}), flush=True)
while (left := end - time.monotonic()) > 0:
    for s in select.select(socks + [esp], [], [], min(left, 1.0))[0]:
        if s is esp:
            pkt, (src, _) = esp.recvfrom(4096)
            print(json.dumps({"kind": "esp", "src": src, "spi": pkt[20:24].hex()}), flush=True)
        else:
            data, (src, sport) = s.recvfrom(4096)
            print(json.dumps({"kind": "udp", "src": src, "sport": sport, "dport": s.getsockname()[1]}), flush=True)
            s.sendto(b"echo:" + data, (src, sport))
"""

# Runs in a client: from (src, sport) send a datagram to (dst, dport) and wait for the echo (3 tries).
UDP_SEND = r"""
import socket, sys
src, sport, dst, dport = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, sport))
s.settimeout(1.5)
for attempt in range(3):
    s.sendto(b"natt-pat-test", (dst, dport))
    try:
        data, peer = s.recvfrom(4096)
    except socket.timeout:
        continue
    if data.startswith(b"echo:"):
        sys.exit(0)
sys.exit(1)
"""

# Runs in a client: send COUNT ESP packets (IP protocol 50, SPI 0x1000..) to DST with a raw socket.
ESP_SEND = r"""
import socket, struct, sys, time
dst, count = sys.argv[1], int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 50)
for seq in range(1, count + 1):
    s.sendto(struct.pack("!II", 0x1000, seq) + b"\x00" * 32, (dst, 0))
    time.sleep(0.02)
"""

# Runs in pat: the nftables tables of family ip in that namespace, over netlink.
LIST_TABLES = "import json; from natt_daemons.pat import nft; print(json.dumps(nft.list_tables()))"
LIST_RULES = "import json, sys; from natt_daemons.pat import nft; print(json.dumps(nft.rules(sys.argv[1])))"
# Runs in pat: a table natt-pat did not make (no comment), to see that the daemon leaves it alone.
FOREIGN_TABLE = (
    "import sys; from pyroute2.netlink.nfnetlink.nftsocket import NFTSocket; from natt_daemons.pat import nft; "
    "m = [nft._batch_marker(nft.NFNL_MSG_BATCH_BEGIN), nft.new_table(sys.argv[1], comment=None), "
    "nft._batch_marker(nft.NFNL_MSG_BATCH_END)]; s = NFTSocket(); s.nlm_request_batch(m); s.close()"
)


def wait_for(what: str, check: Callable[[], Any], timeout: float = STEP_TIMEOUT, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(every)


class Net:
    """The namespaces, links and processes of one test; destroy() removes all of it."""

    def __init__(self, tmp: Path) -> None:
        self.prefix = f"ntpat{secrets.token_hex(3)}-"
        self.tmp = tmp
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen] = []
        self.echo_log = tmp / "echo.jsonl"

    def ns(self, role: str) -> str:
        return self.prefix + role

    def ip(self, *args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=15)

    def build(self) -> None:
        for role in ("c1", "c2", "pat", "out"):
            self.ip("netns", "add", self.ns(role))
            self.namespaces.append(self.ns(role))
            self.ip("-n", self.ns(role), "link", "set", "lo", "up")
        pat = self.ns("pat")
        self.ip("-n", pat, "link", "add", "inside", "type", "bridge", "forward_delay", "0", "stp_state", "0")
        for role, port, addr in (("c1", "in-c1", CLIENT1), ("c2", "in-c2", CLIENT2)):
            self.ip("-n", self.ns(role), "link", "add", "eth0", "type", "veth", "peer", "name", port, "netns", pat)
            self.ip("-n", pat, "link", "set", port, "master", "inside", "up")
            self.ip("-n", self.ns(role), "addr", "add", f"{addr}/24", "dev", "eth0")
            self.ip("-n", self.ns(role), "link", "set", "eth0", "up")
            self.ip("-n", self.ns(role), "route", "add", "default", "via", INSIDE_GW)
        out = self.ns("out")
        self.ip("-n", out, "link", "add", "eth0", "type", "veth", "peer", "name", "outside", "netns", pat)
        self.ip("-n", out, "addr", "add", f"{ROUTER}/24", "dev", "eth0")
        self.ip("-n", out, "link", "set", "eth0", "up")

    def destroy(self) -> None:
        for p in self.procs:  # only the processes this test started, by their pid
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(5)
        for name in self.namespaces:
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=15)

    # -- processes ----------------------------------------------------------------------------

    def spawn(self, role: str, argv: list[str], log: Path) -> subprocess.Popen:
        with log.open("ab") as f:
            p = subprocess.Popen(["ip", "netns", "exec", self.ns(role), *argv], stdin=subprocess.DEVNULL,
                                 stdout=f, stderr=subprocess.STDOUT if log != self.echo_log else None)
        self.procs.append(p)
        return p

    def run_in(self, role: str, argv: list[str], timeout: float = STEP_TIMEOUT) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.ns(role), *argv], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)

    def start_echo(self) -> None:
        self.spawn("out", [PYTHON, "-c", ECHO, "300"], self.echo_log)
        wait_for("the echo responder", lambda: self.echo_log.exists() and '"ready"' in self.echo_log.read_text())

    def echo_events(self, kind: str) -> list[dict[str, Any]]:
        lines = self.echo_log.read_text().splitlines() if self.echo_log.exists() else []
        return [e for e in map(json.loads, lines) if e["kind"] == kind]

    def udp(self, role: str, src: str, sport: int, dport: int) -> None:
        r = self.run_in(role, [PYTHON, "-c", UDP_SEND, src, str(sport), ROUTER, str(dport)])
        assert r.returncode == 0, f"no echo for {src}:{sport} -> {ROUTER}:{dport} through the PAT: {r.stderr}"

    def esp(self, role: str, count: int) -> None:
        r = self.run_in(role, [PYTHON, "-c", ESP_SEND, ROUTER, str(count)])
        assert r.returncode == 0, r.stderr

    def tables(self) -> list[str]:
        r = self.run_in("pat", [PYTHON, "-c", LIST_TABLES])
        assert r.returncode == 0, r.stderr
        return [t["name"] for t in json.loads(r.stdout)]

    def rules(self, table: str) -> list[dict[str, Any]]:
        r = self.run_in("pat", [PYTHON, "-c", LIST_RULES, table])
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def mac(self, role: str, ifname: str) -> str:
        r = subprocess.run(["ip", "-n", self.ns(role), "-j", "link", "show", ifname], capture_output=True, text=True,
                           check=True, timeout=15)
        return json.loads(r.stdout)[0]["address"]

    def sysctl(self, role: str, key: str) -> str:
        r = self.run_in(role, ["cat", "/proc/sys/" + key.replace(".", "/")])
        return r.stdout.strip()


class Pat:
    """One natt-pat process in the test's pat namespace."""

    def __init__(self, net: Net, name: str = "pat", **overrides: str) -> None:
        self.net = net
        self.config = net.tmp / f"{name}.toml"
        self.socket = str(net.tmp / f"{name}.sock")
        self.log = net.tmp / f"{name}.log"
        self.write_config(**overrides)
        self.proc: subprocess.Popen | None = None

    def write_config(self, **overrides: str) -> None:
        """The shipped configs/pat.toml with our socket, and `key = value` lines replaced or dropped (None)."""
        text = CONFIG_TEMPLATE.read_text()
        values: dict[str, str | None] = {"control_socket": json.dumps(self.socket), "poll_interval": "0.5",
                                         **overrides}
        for key, value in values.items():
            line = "" if value is None else f"{key} = {value}"
            text, n = re.subn(rf"(?m)^{re.escape(key)}\s*=.*$", line, text, count=1)
            assert n == 1, f"configs/pat.toml has no '{key} =' line"
        self.config.write_text(text)

    def start(self, wait: bool = True) -> Pat:
        self.proc = self.net.spawn("pat", [NATT_PAT, "run", "--config", str(self.config)], self.log)
        if wait:
            wait_for("the control socket", self._up)
        return self

    def _up(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"natt-pat exited with {self.proc.returncode}:\n{self.log.read_text()}")
        return os.path.exists(self.socket)

    def wait_exit(self, timeout: float = STEP_TIMEOUT) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)  # ip netns exec execs natt-pat: this pid is the daemon's own

    def call(self, cmd: str) -> Any:
        return call(self.socket, cmd)

    def cli(self, *args: str) -> str:
        r = subprocess.run([NATT_PAT, *args, "--socket", self.socket], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stdout


@pytest.fixture
def net(tmp_path: Path) -> Iterator[Net]:
    n = Net(tmp_path)
    try:
        n.build()
        n.start_echo()
        yield n
    finally:
        n.destroy()


def send_seed_flows(net: Net) -> None:
    """What the seed's two clients do: IKE from 10.10.10.2:500, then NAT-T from both on 4500."""
    net.udp("c1", CLIENT1, 500, 500)
    net.udp("c1", CLIENT1, 4500, 4500)
    net.udp("c2", CLIENT2, 4500, 4500)


def test_daemon_configures_interfaces_and_installs_one_table(net: Net) -> None:
    assert net.sysctl("pat", "net.ipv4.ip_forward") == "0"
    pat = Pat(net).start()
    assert net.tables() == [TABLE]
    assert net.sysctl("pat", "net.ipv4.ip_forward") == "1"
    assert net.sysctl("pat", "net.netfilter.nf_conntrack_acct") == "1"
    by_chain = {r["chain"]: r for r in net.rules(TABLE)}
    assert set(by_chain) == {"postrouting", "forward"}
    assert by_chain["postrouting"]["expressions"][-3:] == ["immediate", "immediate", "masq"], "masquerade to :lo-hi"
    assert by_chain["forward"]["comment"] == "esp-drop" and by_chain["forward"]["expressions"][-1] == "immediate"
    st = pat.call("status")
    assert st["interfaces"]["inside"] == {"name": "inside", "address": "10.10.10.1/24"}
    assert st["outside_address"] == OUTSIDE and st["inside_network"] == "10.10.10.0/24"
    assert st["port_range"] == [1025, 65535] and st["esp_passthrough"] is False
    text = pat.cli("status")
    assert "ip natt_pat" in text and "NAT-T" in text, "status says why ESP is dropped and what fixes it"


def test_xlate_two_clients_one_global_address_different_ports(net: Net) -> None:
    pat = Pat(net).start()
    send_seed_flows(net)
    x = pat.call("xlate")
    assert x["in_use"] == 3 and x["most_used"] >= 3
    flows = {(e["inside"], e["inside_port"]): e for e in x["entries"]}
    assert set(flows) == {(CLIENT1, 500), (CLIENT1, 4500), (CLIENT2, 4500)}
    for e in flows.values():
        assert e["proto"] == "udp" and e["global"] == OUTSIDE and e["destination"] == ROUTER
        assert 1025 <= e["global_port"] <= 65535, "port_range = [1025, 65535]"
        assert e["packets_out"] >= 1 and e["packets_in"] >= 1, "conntrack accounting is on"
    assert flows[(CLIENT1, 4500)]["global_port"] != flows[(CLIENT2, 4500)]["global_port"]
    seen = {(e["src"], e["sport"]) for e in net.echo_events("udp")}
    assert seen == {(OUTSIDE, e["global_port"]) for e in flows.values()}, "the far side sees only the global address"

    text = pat.cli("xlate").splitlines()
    assert re.fullmatch(r"3 in use, \d+ most used", text[0])
    for (inside, port), e in flows.items():
        assert f"PAT Global {OUTSIDE}({e['global_port']}) Local {inside}({port})" in text[1:]
    assert text[1].endswith(f"Local {CLIENT2}(4500)"), "newest first, as in the seed"

    stats = pat.call("stats")
    assert stats["translations_created"] == 3 and stats["in_use"] == 3
    assert stats["packets_out"] >= 3 and stats["bytes_in"] > 0


def test_plain_masquerade_without_port_range(net: Net) -> None:
    pat = Pat(net, port_range=None).start()
    net.udp("c1", CLIENT1, 500, 500)
    (entry,) = pat.call("xlate")["entries"]
    assert entry["global_port"] == 500, "nothing forces another port: the kernel keeps the source port"
    assert pat.call("status")["port_range"] is None
    assert [r["expressions"][-1] for r in net.rules(TABLE) if r["chain"] == "postrouting"] == ["masq"]


def test_arp_lists_neighbours_of_both_sides(net: Net) -> None:
    pat = Pat(net).start()
    send_seed_flows(net)
    entries = pat.call("arp")
    got = {(n["interface"], n["address"]): n["mac"] for n in entries}
    assert got.get(("outside", ROUTER)) == net.mac("out", "eth0")
    assert got.get(("inside", CLIENT1)) == net.mac("c1", "eth0")
    assert got.get(("inside", CLIENT2)) == net.mac("c2", "eth0")
    text = pat.cli("arp")
    mac = net.mac("c1", "eth0").replace(":", "")
    assert f"inside {CLIENT1} {mac[0:4]}.{mac[4:8]}.{mac[8:12]} " in text, "the PIX's `show arp` shape"
    assert text.splitlines()[0].startswith("outside "), "outside first, as in the seed"


def test_esp_from_inside_is_dropped_without_passthrough(net: Net) -> None:
    pat = Pat(net).start()
    net.esp("c1", 5)
    stats = wait_for("the ESP drop counter", lambda: (s := pat.call("stats"))["esp_dropped_packets"] >= 5 and s)
    assert stats["esp_dropped_bytes"] > 0 and stats["esp_forwarded_packets"] == 0
    net.udp("c1", CLIENT1, 4500, 4500)  # the path works; only ESP is stopped
    time.sleep(0.5)
    assert net.echo_events("esp") == [], "no ESP crosses the PAT"
    assert pat.call("xlate")["in_use"] == 1, "a dropped ESP packet makes no translation"
    assert "Dropped" in pat.cli("stats").title()
    wait_for("the warning in the log", lambda: "ESP" in pat.log.read_text() and "NAT-T" in pat.log.read_text())


def test_sighup_reload_lets_esp_through(net: Net) -> None:
    pat = Pat(net).start()
    net.esp("c1", 2)
    wait_for("2 ESP dropped", lambda: pat.call("stats")["esp_dropped_packets"] >= 2)

    pat.config.write_text("this is not [toml")  # a bad reload keeps the running set-up
    pat.signal(signal.SIGHUP)
    wait_for("the reload error in the log", lambda: "reload failed" in pat.log.read_text())
    assert pat.call("status")["esp_passthrough"] is False and net.tables() == [TABLE]

    pat.write_config(esp_passthrough="true")
    pat.signal(signal.SIGHUP)
    wait_for("esp_passthrough on", lambda: pat.call("status")["esp_passthrough"] is True)
    assert net.tables() == [TABLE]
    assert {r["comment"] for r in net.rules(TABLE)} == {"masquerade", "esp-pass"}
    net.esp("c1", 3)
    got = wait_for("ESP at the far side", lambda: net.echo_events("esp"))
    assert {e["src"] for e in got} == {OUTSIDE}, "ESP leaves masqueraded"
    stats = wait_for("the ESP pass counter", lambda: (s := pat.call("stats"))["esp_forwarded_packets"] >= 3 and s)
    assert stats["esp_dropped_packets"] >= 2, "counters survive the table's replacement"
    assert pat.proc is not None and pat.proc.poll() is None


def test_sigterm_removes_exactly_our_table_and_exits_0(net: Net) -> None:
    net.run_in("pat", [PYTHON, "-c", FOREIGN_TABLE, "someone_else"]).check_returncode()
    pat = Pat(net).start()
    assert sorted(net.tables()) == sorted(["someone_else", TABLE])
    second = Pat(net, name="second").start(wait=False)
    assert second.wait_exit() == 2, "a second daemon does not take over a running one's table"
    assert "belongs to natt-pat pid" in second.log.read_text()
    assert "Traceback" not in second.log.read_text()
    assert os.path.exists(pat.socket), "nor its control socket"

    pat.signal(signal.SIGTERM)
    assert pat.wait_exit() == 0
    assert net.tables() == ["someone_else"]
    assert not os.path.exists(pat.socket)
    assert net.sysctl("pat", "net.ipv4.ip_forward") == "0", "forwarding back as the daemon found it"
    with pytest.raises(ControlError):
        pat.call("status")


def test_foreign_table_of_the_same_name_is_refused(net: Net) -> None:
    net.run_in("pat", [PYTHON, "-c", FOREIGN_TABLE, TABLE]).check_returncode()
    pat = Pat(net).start(wait=False)
    assert pat.wait_exit() == 2
    log = pat.log.read_text()
    assert "not made by natt-pat" in log and "Traceback" not in log
    assert net.tables() == [TABLE], "left alone"
    assert net.sysctl("pat", "net.ipv4.ip_forward") == "0"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ({"port_range": "[70000, 1]"}, "port_range"),
        ({"esp_passthrough": '"yes"'}, "esp_passthrough"),
        ({"gateway": '"198.51.100.1"'}, "not on the outside network"),
        ({"table": '"bad name"'}, "table"),
    ],
)
def test_bad_config_exits_2_without_traceback(net: Net, edit: dict[str, str], message: str) -> None:
    pat = Pat(net, **edit).start(wait=False)
    assert pat.wait_exit() == 2
    log = pat.log.read_text()
    assert "configuration error" in log and message in log and "Traceback" not in log
    assert net.tables() == []


def test_missing_interface_is_a_config_error(net: Net) -> None:
    pat = Pat(net)
    pat.config.write_text(pat.config.read_text().replace('interface = "outside"', 'interface = "nosuch0"'))
    pat.start(wait=False)
    assert pat.wait_exit() == 2
    assert "nosuch0" in pat.log.read_text() and "Traceback" not in pat.log.read_text()
