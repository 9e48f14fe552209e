"""Interop: sessions that last, with strongSwan (charon, kernel-libipsec) as the concentrator.

Our natt-client behind our PAT gateway, a ping stream (5/s) through the tunnel while the SAs are replaced:

1. charon rekeys phase 2 first (its CHILD_SA rekey_time is short): our client answers charon's Quick Modes and
   starts none of its own;
2. our client rekeys phase 2 first (its phase 2 lifetime is short, charon's rekey_time long);
3. our client re-authenticates phase 1 (its phase 1 lifetime is short): a new IKE SA with XAUTH, Mode Config and
   Quick Modes, then a DELETE of the old one; charon keeps the address and ends with one IKE SA.

Each case prints what it measured: rekeys by each side, pings lost around each rekey, re-authentications.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from natt_daemons.common.control import ControlError
from natt_daemons.lab import procs
from natt_daemons.lab import strongswan as sw
from natt_daemons.lab.scenario import _bin, _set
from natt_daemons.lab.topology import ADDR, CLIENT1, CONC, PAT, Lab
from tests.interop.test_strongswan import (
    CONFIGS,
    GROUP,
    MODERN,
    PASSWORD,
    POOL,
    PSK,
    USER,
    Setup,
    _check_tunnel,
    _wait_connected,
)

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
    pytest.mark.skipif(sw.missing() is not None, reason=f"strongSwan unusable: {sw.missing()}"),
]

INTERVAL = 0.2  # the ping stream: 5 a second
OURS = "IPSec SA rekeyed (started here)"  # the client's event log (and stderr) for a rekey it started


def _tune(conf: str, ike: dict[str, str], child: dict[str, str]) -> str:
    """sw.swanctl_conf's text with more keys on the connection (`ike`) and on its CHILD_SA (`child`)."""
    ike_lines = "".join(f"\n        {k} = {v}" for k, v in ike.items())
    child_lines = "".join(f"\n                {k} = {v}" for k, v in child.items())
    conf, n1 = re.subn(r"(?m)^(        version = 1)$", lambda m: m.group(1) + ike_lines, conf, count=1)
    conf, n2 = re.subn(r"(?m)^(                esp_proposals = \S+)$", lambda m: m.group(1) + child_lines, conf,
                       count=1)
    assert n1 == n2 == 1, f"swanctl.conf template changed shape:\n{conf}"
    return conf


@contextlib.contextmanager
def _bring_up(charon_ike: dict[str, str], charon_child: dict[str, str], client: dict[str, str]) -> Iterator[Setup]:
    """PAT + charon (MODERN suite) + our client; `client` holds client1.toml keys (TOML value text)."""
    prefix = f"sr{secrets.token_hex(3)}-"
    lab = Lab(prefix)
    run = procs.run_dir(prefix)
    charon = sw.Charon(lab, CONC, Path(tempfile.mkdtemp(prefix=f"natt-{prefix}")))
    started: list[procs.Proc] = []
    try:
        lab.up()
        run.mkdir(parents=True, exist_ok=True, mode=0o700)
        pat_conf = _set((CONFIGS / "pat.toml").read_text(), "control_socket", f'"{run / "pat.sock"}"')
        (run / "pat.toml").write_text(pat_conf)
        pat = procs.start(lab, PAT, [_bin("natt-pat"), "run", "--config", str(run / "pat.toml")], run / "pat.log",
                          name="pat")
        started.append(pat)
        procs.wait_for(lambda: (run / "pat.sock").exists() or not pat.alive, 20, 0.1, "natt-pat control socket")
        assert pat.alive, f"natt-pat exited:\n{pat.log()[-3000:]}"

        conf = sw.swanctl_conf(MODERN, ADDR.conc_public, GROUP, PSK, {USER: PASSWORD}, POOL)
        charon.write(_tune(conf, charon_ike, charon_child))
        charon.start()
        charon.load()

        text = (CONFIGS / "client1.toml").read_text()
        text = _set(text, "control_socket", f'"{run / "client1.sock"}"')
        text = _set(text, "phase1", f'["{MODERN.client_phase1}"]')
        text = _set(text, "phase2", f'["{MODERN.client_phase2}"]')
        for k, v in client.items():
            text = _set(text, k, v)
        (run / "client1.toml").write_text(text)
        (run / "client1.toml").chmod(0o600)
        proc = procs.start(lab, CLIENT1, [_bin("natt-client"), "run", "--config", str(run / "client1.toml")],
                           run / "client1.log", name="client1")
        started.append(proc)
        yield Setup(lab, run, charon, proc)
    finally:
        for p in reversed(started):
            p.stop(8.0)
        charon.stop()
        lab.down()
        shutil.rmtree(run, ignore_errors=True)
        if not os.environ.get("NATT_KEEP"):
            shutil.rmtree(charon.workdir, ignore_errors=True)


# -- the ping stream, and what the client's status said while it ran ---------------------------------------------

@dataclass
class Sample:
    at: float  # wall clock
    spis: frozenset[str]  # inbound SPIs of the client's pairs (the current IKE SA's and a re-authentication's)
    state: str
    ike_sa: int | None
    address: str | None
    rekeys: dict


@dataclass
class Stream:
    sent: int
    received: set[int]
    lost: list[int]
    start: float  # wall clock of icmp_seq 1
    samples: list[Sample] = field(default_factory=list)

    def sent_at(self, seq: int) -> float:
        return self.start + (seq - 1) * INTERVAL

    def new_spis(self) -> list[tuple[float, set[str]]]:
        """(when, SPIs) each time the client showed inbound SPIs it had not shown before: a rekey."""
        seen: set[str] = set(self.samples[0].spis) if self.samples else set()
        out = []
        for s in self.samples[1:]:
            fresh = set(s.spis) - seen
            if fresh:
                out.append((s.at, fresh))
                seen |= fresh
        return out

    def lifespans(self) -> dict[str, float]:
        """How long each inbound SPI was shown (first to last sample), seconds."""
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        for s in self.samples:
            for spi in s.spis:
                first.setdefault(spi, s.at)
                last[spi] = s.at
        return {spi: last[spi] - first[spi] for spi in first}

    def loss_around(self, moments: list[float], window: float = 15.0) -> tuple[list[int], int]:
        """Lost pings per moment (each to the nearest within `window` s), and those near none."""
        per = [0] * len(moments)
        elsewhere = 0
        for seq in self.lost:
            t = self.sent_at(seq)
            near = min(range(len(moments)), key=lambda i: abs(moments[i] - t), default=None)
            if near is not None and abs(moments[near] - t) <= window:
                per[near] += 1
            else:
                elsewhere += 1
        return per, elsewhere


def _sample(s: Setup) -> Sample | None:
    try:
        st = s.status()
    except (ControlError, OSError):
        return None
    rows = [*(st.get("ipsec") or []), *(st.get("ipsec_next") or [])]
    return Sample(time.time(), frozenset(r["inbound_spi"] for r in rows), st["state"],
                  (st.get("ike") or {}).get("sa_id"), st.get("assigned_address"), st.get("rekeys") or {})


def _ping_stream(s: Setup, seconds: float) -> Stream:
    """Ping the server from behind our client for `seconds` (5/s, 1 s to answer), sampling the client's status
    twice a second meanwhile; bounded: the ping is killed `seconds` + 20 s after it started."""
    count = int(seconds / INTERVAL)
    argv = s.lab.argv(CLIENT1, ["ping", "-n", "-D", "-i", str(INTERVAL), "-W", "1", "-c", str(count),
                                ADDR.server])
    samples: list[Sample] = []
    start = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True)
    try:
        deadline = time.monotonic() + seconds + 20
        while proc.poll() is None and time.monotonic() < deadline:
            if (x := _sample(s)) is not None:
                samples.append(x)
            time.sleep(0.5)
        out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:  # only the ping this function started, by its handle
            proc.kill()
            proc.wait(5)
    received = {int(m) for m in re.findall(r"icmp_seq=(\d+) ttl=", out)}
    stamps = re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+) .*time=([\d.]+) ms", out, re.MULTILINE)
    if stamps:  # the first reply's arrival less its round trip: when icmp_seq 1 left, give or take
        ts, seq, rtt = stamps[0]
        start = float(ts) - float(rtt) / 1000 - (int(seq) - 1) * INTERVAL
    m = re.search(r"(\d+) packets transmitted", out)
    assert m, f"no ping summary:\n{out[-2000:]}"
    sent = int(m.group(1))
    if (x := _sample(s)) is not None:
        samples.append(x)
    lost = sorted(set(range(1, sent + 1)) - received)
    return Stream(sent, received, lost, start, samples)


def _report(title: str, lines: list[str]) -> None:
    print(f"\n=== {title} ===")
    for line in lines:
        print(f"  {line}")


def _charon_children(sas: str) -> list[str]:
    """The CHILD_SA lines of `swanctl --list-sas` ("net: #3, reqid 1, INSTALLED, TUNNEL-in-UDP, ESP:...")."""
    return re.findall(r"^\s+net: #\d+, reqid \d+, (\S+), .*$", sas, re.MULTILINE)


def _charon_ike_sas(sas: str) -> list[str]:
    return re.findall(r"^natt: #\d+, (\S+), IKEv1", sas, re.MULTILINE)


def _fail(s: Setup, why: str) -> str:
    return f"{why}\n--- swanctl --list-sas ---\n{_safe_list(s)}\n{s.diagnostics()}"


def _safe_list(s: Setup) -> str:
    try:
        return s.charon.list_sas()
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return f"(swanctl failed: {e})"


def _lines(text: str, pattern: str) -> list[str]:
    return [line for line in text.splitlines() if re.search(pattern, line)]


# A Quick Mode's first message in charon's log: sent (charon starts a rekey) or received (our client starts one).
QM_STARTED_BY_CHARON = r"generating QUICK_MODE request \d+ \[ HASH SA No( KE)? ID ID"
QM_STARTED_BY_CLIENT = r"parsed QUICK_MODE request \d+ \[ HASH SA No( KE)? ID ID"


def _tunnels(st: dict) -> int:
    """How many tunnels (selector pairs) the client has: the seed makes two, charon's address/32 and 0.0.0.0/0."""
    return len({(r["local"], r["remote"]) for r in st["ipsec"]})


# -- 1. charon rekeys phase 2 first -----------------------------------------------------------------------------

def test_charon_rekeys_first() -> None:
    """charon's CHILD_SAs: rekey at 18-20 s, life 40 s. Our client takes the 40 s charon proposes (its own phase 2
    lifetime is 40 s too) and would rekey only at 34-36 s: charon's Quick Modes always come first, and each
    replaced pair is marked rekeyed here, so our client never starts one of its own. charon keeps a rekeyed pair
    until it expires (strongSwan's delete_rekeyed = no), and so does our client (it deletes only the pairs it
    replaced itself): with a rekey every ~18 s and a 40 s life, up to three pairs per tunnel live at once, and each
    goes when its 40 s are up."""
    with _bring_up(charon_ike={},
                   charon_child={"rekey_time": "20s", "life_time": "40s", "rand_time": "2s"},
                   client={"phase2_lifetime": "40", "rekey_margin": "0.1"}) as s:
        _check_tunnel(s, MODERN)
        tunnels = _tunnels(s.status())
        setup_log = len(s.charon.log())
        stream = _ping_stream(s, 90)
        log, ours = s.charon.log()[setup_log:], s.client.log()
        ended = _sample(s)
        rekeys = stream.new_spis()
        fresh = sum(len(x) for _, x in rekeys)  # two tunnels rekeyed within one sample show up as one moment
        charon_started, client_started = len(_lines(log, QM_STARTED_BY_CHARON)), len(_lines(log, QM_STARTED_BY_CLIENT))
        most = max((len(x.spis) for x in stream.samples), default=0)
        # SPIs the stream saw come and go (not the first pairs, nor those still there at the end): their life.
        spans = stream.lifespans()
        ended_spis = set(ended.spis) if ended else set()
        gone = {k: v for k, v in spans.items() if k not in stream.samples[0].spis and k not in ended_spis}
        longest = max(gone.values(), default=0.0)
        per, elsewhere = stream.loss_around([t for t, _ in rekeys])
        _report("charon rekeys first", [
            f"pings: {stream.sent} sent, {len(stream.received)} answered, lost: {stream.lost}",
            f"rekeys seen by our client ({tunnels} tunnels): {fresh} new SPIs, at "
            f"{[round(t - stream.start, 1) for t, _ in rekeys]} s into the stream",
            f"client status rekeys: {ended.rekeys if ended else '?'}; '{OURS}' lines: {ours.count(OURS)}",
            f"Quick Modes during the stream: started by charon {charon_started}, by our client {client_started}",
            f"most pairs at once on the client: {most}; longest-lived replaced pair: {longest:.1f} s "
            f"({len(gone)} came and went)",
            f"loss per rekey: {per}, elsewhere: {elsewhere}",
        ])
        assert ours.count(OURS) == 0 and client_started == 0, \
            _fail(s, "our client started a rekey although charon's came first")
        assert fresh >= 3 * tunnels, _fail(s, f"expected charon to rekey each tunnel 3 times in 90 s: {rekeys}")
        assert charon_started >= 3 * tunnels, _fail(s, f"charon initiated {charon_started} Quick Modes")
        assert ended is not None and ended.state == "connected", _fail(s, f"client not connected: {ended}")
        assert ended.rekeys.get("phase2", 0) >= 3 * tunnels, _fail(s, f"client counted {ended.rekeys} rekeys")
        assert gone and longest <= 40 + 2, _fail(s, f"a pair outlived its 40 s lifetime: {gone}")
        assert most <= 3 * tunnels, _fail(s, f"{most} pairs at once for {tunnels} tunnels: old ones were kept")
        assert max(per, default=0) <= 2 and elsewhere <= 2, \
            _fail(s, f"lost {per} pings around the rekeys (and {elsewhere} elsewhere)")
        assert s.lab.ping(CLIENT1, ADDR.server, count=2, wait=2), _fail(s, "no traffic after the rekeys")


# -- 2. our client rekeys phase 2 first -------------------------------------------------------------------------

def test_client_rekeys_first() -> None:
    """Our client proposes a 30 s phase 2 lifetime and rekeys at 25.5-27 s (rekey_margin 0.1); charon adopts 30 s
    for the pair but its rekey_time stays 1 h: it never rekeys. Each old pair is deleted by our client 10 s after
    its rekey at the latest (or at expiry): no duplicates are left."""
    with _bring_up(charon_ike={},
                   charon_child={"rekey_time": "1h", "life_time": "2h", "rand_time": "5m"},
                   client={"phase2_lifetime": "30", "rekey_margin": "0.1"}) as s:
        _check_tunnel(s, MODERN)
        tunnels = _tunnels(s.status())
        setup_log = len(s.charon.log())
        stream = _ping_stream(s, 90)
        log, ours = s.charon.log()[setup_log:], s.client.log()
        rekeys = stream.new_spis()
        fresh = sum(len(x) for _, x in rekeys)
        per, elsewhere = stream.loss_around([t for t, _ in rekeys])

        # No duplicates left: wait (bounded: an old pair goes 10 s after its rekey) for one pair per tunnel.
        def settled() -> tuple[Sample, list[str]] | None:
            x = _sample(s)
            children = _charon_children(_safe_list(s))
            return (x, children) if x is not None and len(x.spis) == len(children) == tunnels else None

        try:
            last, children = procs.wait_for(settled, 20, 0.5, "one pair per tunnel left on each side")
        except TimeoutError as e:
            raise AssertionError(_fail(s, str(e))) from None
        _report("our client rekeys first", [
            f"pings: {stream.sent} sent, {len(stream.received)} answered, lost: {stream.lost}",
            f"rekeys ({tunnels} tunnels): {fresh} new SPIs, at {[round(t - stream.start, 1) for t, _ in rekeys]} s",
            f"client status rekeys: {last.rekeys}; '{OURS}' lines: {ours.count(OURS)}",
            f"charon: 'detected rekeying of CHILD_SA' x{log.count('detected rekeying of CHILD_SA')}, "
            f"'received DELETE for ESP CHILD_SA' x{log.count('received DELETE for ESP CHILD_SA')}, "
            f"Quick Modes during the stream: started by our client {len(_lines(log, QM_STARTED_BY_CLIENT))}, "
            f"by charon {len(_lines(log, QM_STARTED_BY_CHARON))}",
            f"loss per rekey: {per}, elsewhere: {elsewhere}",
            f"left: client {sorted(last.spis)}, charon {children}",
        ])
        assert ours.count(OURS) >= 3 * tunnels, _fail(s, f"our client logged {ours.count(OURS)} rekeys of its own")
        assert fresh >= 3 * tunnels and last.rekeys.get("phase2", 0) >= 3 * tunnels, \
            _fail(s, f"rekeys: {rekeys} {last.rekeys}")
        assert "received 30s lifetime" in log, _fail(s, "charon was not told the 30 s lifetime")
        assert log.count("detected rekeying of CHILD_SA") >= 3 * tunnels, _fail(s, "charon saw too few rekeys")
        assert log.count("received DELETE for ESP CHILD_SA") >= 3 * tunnels, _fail(s, "old pairs not deleted")
        assert not _lines(log, QM_STARTED_BY_CHARON), _fail(s, "charon started a Quick Mode itself")
        assert last.state == "connected" and children == ["INSTALLED"] * tunnels, _fail(s, f"{last} {children}")
        assert max(per, default=0) <= 2 and elsewhere <= 2, \
            _fail(s, f"lost {per} pings around the rekeys (and {elsewhere} elsewhere)")


# -- 3. our client re-authenticates phase 1 ---------------------------------------------------------------------

def test_client_reauthenticates_against_charon() -> None:
    """Our client's phase 1 lifetime is 90 s: it re-authenticates at 76.5-81 s (rekey_margin 0.1) — a new IKE SA
    from the same socket without INITIAL-CONTACT, XAUTH, Mode Config, its Quick Mode, then DELETE of the old one.

    charon is told never to re-authenticate (reauth_time = 0) nor rekey (rekey_time = 0) the IKE SA itself: in
    IKEv1 either means charon starting a new phase 1 towards the client, and our client (like vpnc and Cisco's)
    cannot be an IKEv1 responder. The phase 2 lifetime stays long: the only change is the re-authentication."""
    with _bring_up(charon_ike={"reauth_time": "0s", "rekey_time": "0s"},
                   charon_child={"rekey_time": "1h", "life_time": "2h", "rand_time": "5m"},
                   client={"phase1_lifetime": "90", "rekey_margin": "0.1"}) as s:
        first = _wait_connected(s)
        _check_tunnel(s, MODERN)
        tunnels = _tunnels(first)
        address, ike_before = first["assigned_address"], first["ike"]["sa_id"]
        stream = _ping_stream(s, 100)
        log, ours = s.charon.log(), s.client.log()

        def one_ike_sa() -> str | None:
            sas = _safe_list(s)
            return sas if _charon_ike_sas(sas) == ["ESTABLISHED"] else None

        try:
            sas = procs.wait_for(one_ike_sa, 20, 0.5, "charon down to one IKE SA")
        except TimeoutError as e:
            raise AssertionError(_fail(s, str(e))) from None
        last = _sample(s)
        moments = [x.at for a, x in zip(stream.samples, stream.samples[1:], strict=False) if x.ike_sa != a.ike_sa]
        per, elsewhere = stream.loss_around(moments)
        children = _charon_children(sas)
        _report("our client re-authenticates phase 1", [
            f"pings: {stream.sent} sent, {len(stream.received)} answered, lost: {stream.lost}",
            f"IKE SA {ike_before} -> {last.ike_sa if last else '?'} at "
            f"{[round(t - stream.start, 1) for t in moments]} s; client status rekeys: "
            f"{last.rekeys if last else '?'}",
            f"address {address} -> {last.address if last else '?'}; states seen: "
            f"{sorted({x.state for x in stream.samples})}",
            f"charon IKE SAs at the end: {_charon_ike_sas(sas)}, CHILD_SAs: {children}",
            f"loss around the re-authentication: {per}, elsewhere: {elsewhere}",
            *[f"charon: {line}" for line in _lines(log, r"detected reauth|deleting IKE_SA|assigning virtual IP|"
                                                        r"reassigning|DELETE for|not found|INITIAL_CONTACT|"
                                                        r"XAuth authentication of")][:30],
        ])
        assert last is not None and last.rekeys.get("phase1") == 1, _fail(s, f"re-authentications: {last}")
        assert last.ike_sa != ike_before, _fail(s, "the client's IKE SA did not change")
        assert "re-authenticated (phase 1 rekey)" in ours, _fail(s, "no re-authentication in the client log")
        assert {x.state for x in stream.samples} == {"connected"}, _fail(s, "the client left 'connected'")
        assert {x.address for x in stream.samples} == {address} and last.address == address, \
            _fail(s, f"the address changed: {sorted({x.address or '' for x in stream.samples})}")
        assert len(re.findall(rf"XAuth authentication of '{USER}' successful", log)) == 2, \
            _fail(s, "charon did not see exactly two XAUTH logins")
        assert "detected reauth of existing IKE_SA" in log, _fail(s, "charon did not take it as a re-authentication")
        assert len(re.findall(rf"assigning virtual IP {re.escape(address)} to peer", log)) == 2, \
            _fail(s, "charon did not give the same address twice")
        assert f"remote {address}/32" in sas, _fail(s, "charon's CHILD_SAs are not for the client's address")
        assert max(per, default=0) <= 2 and elsewhere <= 2, \
            _fail(s, f"lost {per} pings around the re-authentication (and {elsewhere} elsewhere)")
        assert s.lab.ping(CLIENT1, ADDR.server, count=2, wait=2), _fail(s, "no traffic after the re-authentication")
        # Last: no stale pairs on charon. charon adopts the old IKE SA's CHILD_SAs into the new one when the new
        # one is established ("detected reauth of existing IKE_SA, adopting N children"), takes our client's
        # Quick Modes as rekeys of those, and looks a DELETE's SPIs up in the IKE SA it arrives on: DELETEs for
        # the old pairs sent on the old IKE SA find nothing ("CHILD_SA not found, ignored"), and the old pairs
        # stay REKEYED until their hard lifetime.
        assert children == ["INSTALLED"] * tunnels, _fail(
            s, f"charon keeps {children} for {tunnels} tunnels after the re-authentication: the DELETEs for the old "
               f"pairs went on the old IKE SA, whose CHILD_SAs charon had moved to the new one: "
               f"{_lines(log, r'not found')}")
