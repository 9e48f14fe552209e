"""NAT mapping changes mid-session (RFC 3947 section 7, RFC 3948): the PAT forgets its translations.

Two clients behind the PAT gateway, both connected, a ping stream running through the tunnel; then the
PAT's connection tracking table is flushed (`conntrack -F` in the PAT namespace), which is what a PAT
reboot or an expired mapping looks like from outside. The next packet of each flow makes a new
translation. The responder (the concentrator) must move a peer's ESP and IKE destination to the new
address/port only after an authenticated message from it (authenticated ESP or authenticated IKE, both
updating one record); the initiator (the client) never follows anything and keeps sending to 4500.
Traffic must recover by itself, without a reconnect.

Each case prints its figures (lost pings, recovery seconds, ports, the concentrator's sessions view
before/after and its log lines about the move) and records them as junit properties; run with -s to see
them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from natt_daemons.common.control import call
from natt_daemons.lab import procs, scenario
from natt_daemons.lab.scenario import Scenario
from natt_daemons.lab.topology import ADDR, CLIENT1, CLIENT2, PAT

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
    pytest.mark.skipif(shutil.which("conntrack") is None, reason="needs conntrack (conntrack-tools)"),
    pytest.mark.skipif(shutil.which("ping") is None, reason="needs iputils ping (timestamps, -O)"),
]

USERS = {"client1": "vpnclient1", "client2": "vpnclient2"}
ROLES = {"client1": CLIENT1, "client2": CLIENT2}
INSIDE = {"client1": ADDR.client1, "client2": ADDR.client2}
INTERVAL = 0.2  # seconds between pings of a stream
RECOVERY_BOUND = 30.0  # generous: traffic must come back by itself within this many seconds
BLOCK_TABLE = "natt_rebind_test"  # our own table in the PAT namespace, next to (never inside) natt-pat's


@pytest.fixture
def sc() -> Iterator[Scenario]:
    """A fresh lab with both clients connected and passing traffic; everything removed afterwards."""
    with scenario.running("rb") as sc:
        for name in ("client1", "client2"):
            sc.start_client(name)
            sc.wait_connected(name)
        for name, role in ROLES.items():
            assert sc.ping(role, ADDR.server), f"{name} passes traffic before the flush"
        yield sc


# -- a bounded ping stream, parsed -----------------------------------------------------------------

_REPLY = re.compile(r"^\[(\d+\.\d+)\] \d+ bytes from [\d.]+: icmp_seq=(\d+) ")
_SUMMARY = re.compile(r"(\d+) packets transmitted, (\d+) received")


@dataclass
class PingResult:
    name: str
    transmitted: int
    replies: dict[int, float]  # icmp_seq → arrival (wall clock, from ping -D)
    raw: str

    @property
    def lost(self) -> list[int]:
        return sorted(set(range(1, self.transmitted + 1)) - self.replies.keys())

    def lost_text(self) -> str:
        """The lost sequence numbers as ranges: '12-19, 31'."""
        runs: list[list[int]] = []
        for s in self.lost:
            if runs and s == runs[-1][-1] + 1:
                runs[-1].append(s)
            else:
                runs.append([s])
        return ", ".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in runs) or "none"

    def recovery(self, since: float) -> float | None:
        """Seconds from `since` to the first reply to a ping sent after the last lost one (with no loss: to the
        first reply after `since`, at most about one ping interval); None when nothing came back after the loss."""
        last_lost = max(self.lost, default=0)
        after = [t for s, t in self.replies.items() if s > last_lost and t >= since]
        if not after:
            return None
        return max(0.0, min(after) - since)

    def answered_after(self, since: float) -> int:
        return sum(1 for t in self.replies.values() if t >= since)


class PingStream:
    """`ping -D -O -i 0.2 -c N -w deadline` in a client's namespace, in the background; output to a file."""

    def __init__(self, sc: Scenario, name: str, count: int) -> None:
        self.name, self.count = name, count
        self.path = sc.run_dir / f"ping-{name}-{time.monotonic_ns()}.out"
        self.deadline = int(count * INTERVAL + 20)
        argv = sc.lab.argv(ROLES[name], ["ping", "-n", "-D", "-O", "-i", str(INTERVAL), "-W", "1", "-c",
                                          str(count), "-w", str(self.deadline), ADDR.server])
        self._out = open(self.path, "w")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen(argv, stdout=self._out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def text(self) -> str:
        return self.path.read_text(errors="replace")

    def wait_replies(self, n: int, timeout: float) -> None:
        procs.wait_for(lambda: len(self.parse().replies) >= n, timeout, 0.1, f"{n} ping replies for {self.name}")

    def wait(self) -> PingResult:
        try:
            self.proc.wait(timeout=self.deadline + 10)
        except subprocess.TimeoutExpired:
            self.stop()
        finally:
            self._out.close()
        return self.parse()

    def stop(self) -> None:
        """End our own ping (by its Popen handle only): SIGINT makes it print its summary, then kill."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if not self._out.closed:
            self._out.close()

    def parse(self) -> PingResult:
        raw = self.text()
        replies: dict[int, float] = {}
        for line in raw.splitlines():
            if m := _REPLY.match(line):
                replies.setdefault(int(m.group(2)), float(m.group(1)))
        m = _SUMMARY.search(raw)
        transmitted = int(m.group(1)) if m else max(replies, default=0)
        return PingResult(self.name, transmitted, replies, raw)


# -- views -------------------------------------------------------------------------------------

def flows_4500(sc: Scenario) -> dict[str, int]:
    """inside address → translated (global) port of its UDP 4500 flow to the concentrator, from `xlate`."""
    out: dict[str, int] = {}
    for e in call(sc.socket("pat"), "xlate")["entries"]:
        if e["proto"] == "udp" and e["inside_port"] == 4500 and e["destination"] == ADDR.conc_public:
            out[e["inside"]] = e["global_port"]
    return out


def sessions(sc: Scenario) -> dict[str, dict]:
    return {r["username"]: r for r in call(sc.socket("concentrator"), "sessions")["remote_access"]}


def esp_ports(sc: Scenario, user: str) -> list[int]:
    """The UDP port the concentrator's ESP for `user` goes to, per phase 2 SA (session detail)."""
    (detail,) = call(sc.socket("concentrator"), "session", {"user": user})
    return [s["udp_source_port"] for s in detail["ipsec"]]


def sessions_text(rows: dict[str, dict]) -> str:
    return "; ".join(f"{u}: {r['public_ip']}:{r['public_port']} {r['protocol']} tx={r['bytes_tx']} rx={r['bytes_rx']}"
                     for u, r in sorted(rows.items()))


def log_seq(sc: Scenario, name: str) -> int:
    entries = call(sc.socket(name), "log", {})
    return max((e["seq"] for e in entries), default=0)


_MOVE_WORDS = re.compile(r"float|moved|rebind|mapping|port|address|keepalive|keep-alive|DPD|R-U-THERE|NAT", re.I)


def log_lines(sc: Scenario, name: str, since: int, limit: int = 40) -> list[str]:
    """The log entries after seq `since` that talk about a port or address move, NAT keepalives or DPD
    (80-column wrapping undone)."""
    entries = call(sc.socket(name), "log", {"since": since})
    lines = [f"#{e['seq']} {e['class']} sev={e['severity']} {e['peer']}: {e['text'].replace(chr(10), '')}"
             for e in entries if e["seq"] > since and _MOVE_WORDS.search(e["message"])]
    return lines[:limit] + ([f"... {len(lines) - limit} more"] if len(lines) > limit else [])


def counters(sc: Scenario) -> dict[str, Any]:
    """What would show traffic delivered to the wrong client: each client's decrypted/dropped counts and the
    concentrator's refusals and data-path drops."""
    out: dict[str, Any] = {}
    for name in ROLES:
        st = sc.status(name)
        out[name] = {k: st[k] for k in ("packets_decrypted", "packets_encrypted", "packets_dropped", "tunnel_port")}
    st = sc.status("concentrator")
    out["concentrator"] = {"refusals": st["refusals"], "datapath_drops": st["datapath_drops"]}
    return out


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after.get(k, 0) - before.get(k, 0) for k in after if after.get(k, 0) != before.get(k, 0)}


def conntrack_flush(sc: Scenario) -> float:
    """`conntrack -F` in the PAT namespace; returns the wall-clock moment it finished."""
    out = sc.lab.run(PAT, ["conntrack", "-F"], timeout=10)
    assert out.returncode == 0, out.stdout + out.stderr
    return time.time()


def block_outbound(sc: Scenario, inside: str) -> None:
    """Hold one inside host's UDP 4500 at the PAT (filter, forward hook, before natt-pat's own chain): its
    packets are dropped before postrouting, so no translation is made for them while the block stands."""
    rules = sc.run_dir / f"{BLOCK_TABLE}.nft"
    rules.write_text(f"table ip {BLOCK_TABLE} {{\n"
                     f"  chain hold {{ type filter hook forward priority -10; policy accept;\n"
                     f"    ip saddr {inside} udp dport 4500 counter drop\n"
                     f"  }}\n}}\n")
    out = sc.lab.run(PAT, ["nft", "-f", str(rules)], timeout=10)
    assert out.returncode == 0, out.stdout + out.stderr


def unblock(sc: Scenario) -> None:
    sc.lab.run(PAT, ["nft", "delete", "table", "ip", BLOCK_TABLE], timeout=10)


def report(record: Callable[[str, object], None], title: str, figures: dict[str, Any]) -> None:
    print(f"\n===== {title} =====")
    for k, v in figures.items():
        print(f"  {k}: {v if isinstance(v, str) else json.dumps(v, default=str)}")
        record(k, v if isinstance(v, int | float | str) else json.dumps(v, default=str))


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.3) -> Any:
    """Like procs.wait_for, but returns None on timeout instead of raising (the caller reports what it saw)."""
    try:
        return procs.wait_for(pred, timeout, interval)
    except TimeoutError:
        return None


# -- the cases -----------------------------------------------------------------------------------

def test_conntrack_flush_mid_session_recovers_by_itself(sc: Scenario, record_property) -> None:
    """Case 1, the plain flush: `conntrack -F` in the PAT namespace while client1 pings the server.

    client1 keeps sending, so its next packet makes a new translation at once (masquerade keeps the inside
    source port when it is free, so it gets the same outside port back, normally 4500); client2 is idle and
    gets its new translation when it next sends — on a new outside port, since its inside port 4500 is taken
    outside by client1 now. Both must pass traffic again without reconnecting, and once both have sent
    authenticated traffic the concentrator's sessions view shows each user on its current translation.
    """
    ports_before = flows_4500(sc)
    rows_before = sessions(sc)
    c_before = counters(sc)
    seq = log_seq(sc, "concentrator")

    stream = PingStream(sc, "client1", count=100)  # 20 s
    try:
        stream.wait_replies(10, timeout=15)
        t_flush = conntrack_flush(sc)
        result = stream.wait()
    finally:
        stream.stop()

    assert sc.ping(CLIENT1, ADDR.server, count=3), "client1 passes traffic after the flush"
    assert sc.ping(CLIENT2, ADDR.server, count=3), "client2 passes traffic after the flush (new translation)"
    ports_after = flows_4500(sc)
    rows_after = wait_until(lambda: (r := sessions(sc)) and all(
        r[USERS[n]]["public_port"] == ports_after.get(INSIDE[n]) for n in ROLES) and r, 10) or sessions(sc)
    c_after = counters(sc)
    recovery = result.recovery(t_flush)

    report(record_property, "case 1: conntrack -F mid-session", {
        "case1_pings_sent": result.transmitted,
        "case1_pings_received": len(result.replies),
        "case1_lost_pings": len(result.lost),
        "case1_lost_seqs": result.lost_text(),
        "case1_recovery_s": round(recovery, 3) if recovery is not None else "never",
        "case1_ports_before": {n: ports_before.get(INSIDE[n]) for n in ROLES},
        "case1_ports_after": {n: ports_after.get(INSIDE[n]) for n in ROLES},
        "case1_sessions_before": sessions_text(rows_before),
        "case1_sessions_after": sessions_text(rows_after),
        "case1_counters_before": c_before,
        "case1_counters_after": c_after,
        "case1_concentrator_log": log_lines(sc, "concentrator", seq),
    })

    assert result.transmitted >= 90, result.raw[-2000:]
    assert recovery is not None, f"no reply after the flush; lost {result.lost_text()}"
    assert recovery <= RECOVERY_BOUND, f"recovered only after {recovery:.1f} s"
    assert result.answered_after(t_flush + recovery) >= 5, "the stream keeps being answered after it recovered"
    for name in ROLES:
        assert c_after[name]["packets_decrypted"] > c_before[name]["packets_decrypted"], name
        assert c_after[name]["tunnel_port"] == 4500, f"{name}: the initiator never follows, it keeps 4500"
    for name in ROLES:
        assert rows_after[USERS[name]]["public_port"] == ports_after.get(INSIDE[name]), (
            f"{USERS[name]}: sessions view public_port {rows_after[USERS[name]]['public_port']}, "
            f"the PAT translates it to {ports_after.get(INSIDE[name])} (before the flush {ports_before})")


def test_flush_forcing_new_translated_ports(sc: Scenario, record_property) -> None:
    """Case 2: a flush after which both clients come back on DIFFERENT outside ports.

    How the new ports are forced: both clients send from inside port 4500, and the masquerade keeps the
    source port when it is free, so after a flush the first of them to send takes outside port 4500 again
    (client1 connected first, so before the flush it normally holds 4500 and client2 a random port P).
    The test holds client1's UDP 4500 at the PAT (a drop rule in a table of its own, forward hook, before
    natt-pat's chains, so no translation is made for the held packets), flushes, lets client2 send first —
    client2 takes outside port 4500, client1's old one — and only then releases client1, whose 4500 is now
    taken, so it gets a random new port. Whatever the race with stray inbound packets, both end on ports
    other than their old ones (the test checks it and says if the swap did not happen as planned).

    Then: the PAT's xlate shows the new ports; the concentrator's `sessions` view shows each user's new
    public_port and its ESP goes to the new port (session detail) after authenticated traffic; both ping
    streams recover; and neither client gets the other's traffic (no unknown-SPI drops at the clients, no
    selector mismatches at the concentrator, each client's decrypted count grows).
    """
    ports_before = flows_4500(sc)
    assert set(ports_before) == {ADDR.client1, ADDR.client2}, ports_before
    old = {n: ports_before[INSIDE[n]] for n in ROLES}
    rows_before = sessions(sc)
    for n in ROLES:
        assert rows_before[USERS[n]]["public_port"] == old[n], (n, rows_before, old)
    c_before = counters(sc)
    seq = log_seq(sc, "concentrator")
    seq_clients = {n: log_seq(sc, n) for n in ROLES}

    streams = {n: PingStream(sc, n, count=150) for n in ROLES}  # 30 s each
    try:
        for s in streams.values():
            s.wait_replies(10, timeout=15)
        block_outbound(sc, ADDR.client1)
        t_block = time.time()
        time.sleep(1.0)  # client1's last replies are home; client2 keeps its mapping busy
        t_flush = conntrack_flush(sc)
        mid = wait_until(lambda: (f := flows_4500(sc)).get(ADDR.client2) and f, 5, 0.1) or flows_4500(sc)
        time.sleep(1.0)
        unblock(sc)
        t_unblock = time.time()
        wait_until(lambda: flows_4500(sc).get(ADDR.client1), 5, 0.1)
        results = {n: s.wait() for n, s in streams.items()}
    finally:
        for s in streams.values():
            s.stop()
        unblock(sc)

    ports_after = flows_4500(sc)
    new = {n: ports_after.get(INSIDE[n]) for n in ROLES}
    # Fresh authenticated traffic from both, then give the concentrator a bounded moment to show the move.
    pings_after = {n: sc.ping(ROLES[n], ADDR.server, count=3) for n in ROLES}
    rows_after = wait_until(lambda: (r := sessions(sc)) and all(
        r.get(USERS[n], {}).get("public_port") == new[n] for n in ROLES) and r, 10) or sessions(sc)
    esp_after = {n: esp_ports(sc, USERS[n]) for n in ROLES}
    c_after = counters(sc)
    rec = {n: results[n].recovery(t_flush) for n in ROLES}
    rec1_unblock = results["client1"].recovery(t_unblock)

    report(record_property, "case 2: flush forcing new translated ports", {
        "case2_ports_before": old,
        "case2_ports_while_client1_held": {n: mid.get(INSIDE[n]) for n in ROLES},
        "case2_ports_after": new,
        "case2_client2_took_client1_old_port": new["client2"] == old["client1"],
        "case2_block_s_before_flush": round(t_flush - t_block, 3),
        "case2_held_s_after_flush": round(t_unblock - t_flush, 3),
        **{f"case2_{n}_pings_sent": results[n].transmitted for n in ROLES},
        **{f"case2_{n}_lost_pings": len(results[n].lost) for n in ROLES},
        **{f"case2_{n}_lost_seqs": results[n].lost_text() for n in ROLES},
        **{f"case2_{n}_recovery_s_from_flush": round(rec[n], 3) if rec[n] is not None else "never"
           for n in ROLES},
        "case2_client1_recovery_s_from_release": round(rec1_unblock, 3) if rec1_unblock is not None else "never",
        "case2_pings_after": pings_after,
        "case2_sessions_before": sessions_text(rows_before),
        "case2_sessions_after": sessions_text(rows_after),
        "case2_esp_ports_after": esp_after,
        "case2_counters_before": c_before,
        "case2_counters_after": c_after,
        "case2_concentrator_log": log_lines(sc, "concentrator", seq),
        **{f"case2_{n}_log": log_lines(sc, n, seq_clients[n], limit=15) for n in ROLES},
    })

    problems: list[str] = []

    def check(ok: object, text: str) -> None:
        if not ok:
            problems.append(text)

    # The PAT: new translations, on ports other than before.
    for n in ROLES:
        check(new[n] is not None, f"{n}: no UDP 4500 translation after the flush ({ports_after})")
        check(new[n] != old[n], f"{n}: outside port did not change ({old[n]} → {new[n]})")
    check(new["client1"] != new["client2"], f"two clients on one outside port: {new}")
    # Traffic came back by itself.
    for n in ROLES:
        r = rec[n]
        check(r is not None and r <= RECOVERY_BOUND,
              f"{n}: ping stream did not recover within {RECOVERY_BOUND:g} s of the flush "
              f"(recovery {r}, lost {results[n].lost_text()})")
        check(pings_after[n], f"{n}: no traffic after the flush")
        check(c_after[n]["packets_decrypted"] > c_before[n]["packets_decrypted"], f"{n}: decrypted nothing more")
        check(c_after[n]["tunnel_port"] == 4500, f"{n}: the initiator must keep sending to 4500")
    # Neither client got the other's traffic.
    for n in ROLES:
        d = c_after[n]["packets_dropped"] - c_before[n]["packets_dropped"]
        check(d == 0, f"{n}: {d} packets dropped (ESP for the other client, unknown SPI?)")
    conc_drops = grown(c_before["concentrator"]["datapath_drops"], c_after["concentrator"]["datapath_drops"])
    check("selector-mismatch" not in conc_drops, f"concentrator selector mismatches: {conc_drops}")
    # The concentrator moved each peer, in one record: ESP destination and the session's public port.
    for n in ROLES:
        check(all(p == new[n] for p in esp_after[n]),
              f"{USERS[n]}: concentrator ESP goes to {esp_after[n]}, the new translation is {new[n]}")
        check(rows_after.get(USERS[n], {}).get("public_port") == new[n],
              f"{USERS[n]}: sessions view public_port {rows_after.get(USERS[n], {}).get('public_port')}, "
              f"the new translation is {new[n]} (old {old[n]})")
    assert not problems, "\n".join(problems)
