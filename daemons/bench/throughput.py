"""Throughput through several VPN configurations, each in a fresh lab (namespaces <prefix><role>).

For every configuration and suite: a new lab, the PAT gateway, the peers of that configuration, a ping
check, then iperf3 TCP and UDP from client1 to the server, with the CPU time each daemon used during each
run (/proc/<pid>/stat utime + stime). The lab is removed after every configuration and suite, whatever
happened; every wait is bounded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natt_daemons.bench import report
from natt_daemons.bench.procstat import cpu_seconds
from natt_daemons.bench.report import IperfRun, Result
from natt_daemons.lab import procs
from natt_daemons.lab import strongswan as sw
from natt_daemons.lab.procs import Proc
from natt_daemons.lab.scenario import CONFIGS_DIR, LAB_USERS, Scenario, ScenarioConfig, tear_down
from natt_daemons.lab.topology import ADDR, CLIENT1, CONC, INET, PAT, SERVER, Lab, LabError
from natt_daemons.lab.vpnc import VPNC, start_vpnc

USER = "vpnclient1"
GROUP, PSK = "ciscovpn", "ciscovpn-lab-key"
UDP_LEN = 1300  # iperf3 -l: 1328-byte IP packets (vpnc's TUN has MTU 1300: they are fragmented there)
FWD_PORT = 4789
FWD_NET, FWD_CLIENT, FWD_CONC = "10.99.0.0/24", "10.99.0.2", "10.99.0.1"
PAUSE = 1.0  # seconds between iperf3 runs: the previous run's queues drain
CONNECT_TIMEOUT = 40.0  # a tunnel must be up (and pass a ping) within this


class BenchError(Exception):
    pass


@dataclass(frozen=True)
class Suite:
    name: str  # ESP suite (strongSwan-style name, as the daemons' configs spell it)
    phase1: str  # phase 1 between our client and a concentrator / charon
    vpnc_phase1: str | None  # phase 1 when vpnc is the client (its DH group), None: vpnc cannot do this suite
    vpnc_dh: str = "dh2"
    weak: bool = False  # vpnc must be told to accept 3DES / MD5


SUITES: dict[str, Suite] = {s.name: s for s in (
    Suite("aes128gcm16", "aes256-sha256-modp2048", None),
    Suite("aes256-sha1", "aes256-sha256-modp2048", "aes256-sha1-modp1024"),
    Suite("aes256-sha256", "aes256-sha256-modp2048", None),
    Suite("3des-md5", "3des-md5-modp1024", "3des-md5-modp1024", weak=True),
)}
ALL = tuple(SUITES)
VPNC_SUITES = tuple(n for n, s in SUITES.items() if s.vpnc_phase1)


@dataclass
class Bench:
    """What one configuration and suite works with: the lab, its scenario (configs, run dir) and a cleanup stack."""

    lab: Lab
    sc: Scenario
    stack: contextlib.ExitStack

    def start(self, role: str, argv: list[str], name: str) -> Proc:
        p = procs.start(self.lab, role, argv, self.sc.run_dir / f"{name}.log", name=name)
        self.stack.callback(p.stop, 8.0)
        return p

    def pat(self) -> None:
        p = self.sc.start_daemon("pat", PAT, "natt-pat")
        self.stack.callback(p.stop, 8.0)
        self.sc.wait_socket("pat")

    def concentrator(self) -> Proc:
        p = self.sc.start_daemon("concentrator", CONC, "natt-concentrator")
        self.stack.callback(p.stop, 8.0)
        self.sc.wait_socket("concentrator")
        return p

    def client(self) -> Proc:
        self.sc.start_client("client1")
        p = self.sc.procs["client1"]
        self.stack.callback(p.stop, 8.0)
        self.sc.wait_connected("client1", CONNECT_TIMEOUT)
        return p

    def charon(self, suite: Suite, ike: str) -> Proc:
        workdir = Path(tempfile.mkdtemp(prefix=f"natt-bench-{self.lab.prefix}"))  # not under /run: see Charon
        self.stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        self.stack.callback(self._keep, workdir / "charon.log")
        charon = sw.Charon(self.lab, CONC, workdir)
        self.stack.callback(charon.stop)
        charon.write(sw.swanctl_conf(sw.Suite(suite.name, ike, suite.name, ike, suite.name), ADDR.conc_public,
                                     GROUP, PSK, {USER: LAB_USERS[USER]}, ADDR.pool))
        charon.start()
        charon.load()
        assert charon.proc is not None
        return charon.proc

    def _keep(self, path: Path) -> None:
        """Copy a log kept outside the run dir into it, so a failed run's logs can be saved with the rest."""
        with contextlib.suppress(OSError):
            shutil.copy(path, self.sc.run_dir / path.name)

    def vpnc(self, suite: Suite) -> Proc:
        v = start_vpnc(self.lab, CLIENT1, self.sc.run_dir, USER, LAB_USERS[USER], dh_group=suite.vpnc_dh,
                       weak=suite.weak)
        self.stack.callback(v.stop)

        def address() -> str | None:
            if not v.proc.alive:
                raise BenchError(f"vpnc exited (code {v.proc.returncode})")
            out = self.lab.run(CLIENT1, ["ip", "-4", "-o", "addr", "show", "dev", "vpnc-1"]).stdout.split()
            return out[out.index("inet") + 1] if "inet" in out else None

        procs.wait_for(address, CONNECT_TIMEOUT, 0.3, "vpnc's tunnel address")
        return v.proc

    def ip(self, role: str, *args: str) -> None:
        out = self.lab.run(role, ["ip", *args])
        if out.returncode != 0:
            raise BenchError(f"ip {' '.join(args)} in {role}: {out.stderr.strip()}")


# -- the configurations: each sets up its peers and returns the daemons whose CPU time is measured -----------

Setup = Callable[[Bench, Suite | None], dict[str, Proc]]


def _plain(b: Bench, suite: Suite | None) -> dict[str, Proc]:
    # The internet router knows no private network (as in life): routed here for this measurement only.
    b.ip(INET, "route", "replace", ADDR.private_net, "via", ADDR.conc_public)
    return {}


def _forwarder(b: Bench, suite: Suite | None) -> dict[str, Proc]:
    b.ip(SERVER, "route", "replace", FWD_NET, "via", ADDR.conc_private)
    mod = [sys.executable, "-m", "natt_daemons.bench.forwarder"]
    conc = b.start(CONC, [*mod, "--tun", "fwd0", "--local", f"{ADDR.conc_public}:{FWD_PORT}",
                          "--address", f"{FWD_CONC}/32", "--route", f"{FWD_CLIENT}/32"], "fwd-conc")
    client = b.start(CLIENT1, [*mod, "--tun", "fwd0", "--local", f"{ADDR.client1}:{FWD_PORT}",
                               "--peer", f"{ADDR.conc_public}:{FWD_PORT}", "--address", f"{FWD_CLIENT}/32",
                               "--route", ADDR.private_net], "fwd-client1")
    for p in (conc, client):
        def ready(p: Proc = p) -> bool:
            if not p.alive:
                raise BenchError(f"{p.name} exited: {p.log().strip().splitlines()[-1:]}")
            return "forwarder ready" in p.log()

        procs.wait_for(ready, 15, 0.1, f"{p.name} ready")
    return {"fwd-client1": client, "fwd-conc": conc}


def _natt(b: Bench, suite: Suite | None) -> dict[str, Proc]:
    conc = b.concentrator()
    return {"natt-client": b.client(), "natt-conc": conc}


def _vpnc_strongswan(b: Bench, suite: Suite | None) -> dict[str, Proc]:
    assert suite is not None and suite.vpnc_phase1
    charon = b.charon(suite, suite.vpnc_phase1)
    return {"vpnc": b.vpnc(suite), "charon": charon}


def _vpnc_natt(b: Bench, suite: Suite | None) -> dict[str, Proc]:
    assert suite is not None
    conc = b.concentrator()
    return {"vpnc": b.vpnc(suite), "natt-conc": conc}


def _natt_strongswan(b: Bench, suite: Suite | None) -> dict[str, Proc]:
    assert suite is not None
    charon = b.charon(suite, suite.phase1)
    return {"natt-client": b.client(), "charon": charon}


@dataclass(frozen=True)
class Config:
    name: str
    suites: tuple[str, ...]  # () : no crypto, measured once
    setup: Setup
    needs: tuple[str, ...] = ()  # "vpnc", "strongswan"


CONFIGS: dict[str, Config] = {c.name: c for c in (
    Config("plain", (), _plain),
    Config("forwarder", (), _forwarder),
    Config("vpnc-strongswan", VPNC_SUITES, _vpnc_strongswan, ("vpnc", "strongswan")),
    Config("natt", ALL, _natt),
    Config("vpnc-natt", VPNC_SUITES, _vpnc_natt, ("vpnc",)),
    Config("natt-strongswan", ALL, _natt_strongswan, ("strongswan",)),
)}


def _missing(cfg: Config) -> str | None:
    if "vpnc" in cfg.needs and not Path(VPNC).exists():
        return "vpnc is not installed"
    if "strongswan" in cfg.needs and (why := sw.missing()):
        return why
    return None


def select(only: tuple[str, ...]) -> list[tuple[Config, str]]:
    """(configuration, suite) pairs to run, in table order. `only` items: NAME or NAME:SUITE (→ or -> ok)."""
    def norm(s: str) -> str:
        return s.strip().lower().replace("→", "-").replace("->", "-")

    wanted: list[tuple[str, str | None]] = []
    for item in only:
        name, _, suite = norm(item).partition(":")
        if name not in CONFIGS:
            raise BenchError(f"unknown configuration {item!r}: choose from {', '.join(CONFIGS)}")
        if suite and suite not in CONFIGS[name].suites:
            raise BenchError(f"{name} has no suite {suite!r}: {', '.join(CONFIGS[name].suites) or 'none'}")
        wanted.append((name, suite or None))
    pairs = []
    for cfg in CONFIGS.values():
        for suite in cfg.suites or ("",):
            if not wanted or any(n == cfg.name and s in (None, suite) for n, s in wanted):
                pairs.append((cfg, suite))
    return pairs


# -- measuring ---------------------------------------------------------------------------------------------

def iperf3(lab: Lab, args: list[str], duration: float, daemons: dict[str, Proc]) -> tuple[dict[str, Any], dict]:
    """Run iperf3 in client1 against the server; returns (its JSON, CPU seconds per daemon meanwhile)."""
    before = {n: cpu_seconds(p.pid) for n, p in daemons.items()}
    argv = ["iperf3", "-c", ADDR.server, "-t", f"{duration:g}", "-J", "--connect-timeout", "5000", *args]
    try:
        out = lab.run(CLIENT1, argv, timeout=duration + 30)
    except subprocess.TimeoutExpired:
        raise BenchError(f"iperf3 did not finish within {duration + 30:g} s") from None
    after = {n: cpu_seconds(p.pid) for n, p in daemons.items()}
    cpu = {n: round(a - b, 3) for n, a in after.items() if a is not None and (b := before[n]) is not None}
    try:
        data = json.loads(out.stdout)
    except json.JSONDecodeError:
        raise BenchError(f"iperf3 gave no JSON (exit {out.returncode}): {out.stderr.strip()[:200]}") from None
    if data.get("error"):
        raise BenchError(f"iperf3: {data['error']}")
    return data, cpu


def tcp_run(lab: Lab, duration: float, daemons: dict[str, Proc]) -> IperfRun:
    data, cpu = iperf3(lab, [], duration, daemons)
    return IperfRun(bps=float(data["end"]["sum_received"]["bits_per_second"]), cpu=cpu)


def udp_run(lab: Lab, duration: float, rate: str, length: int, daemons: dict[str, Proc]) -> IperfRun:
    data, cpu = iperf3(lab, ["-u", "-b", rate, "-l", str(length)], duration, daemons)
    end = data["end"]
    lost = float(end["sum"].get("lost_percent", 0.0))
    received = end.get("sum_received", {}).get("bits_per_second")  # iperf3 ≥ 3.? ; else the sender's less loss
    bps = float(received) if received is not None else float(end["sum"]["bits_per_second"]) * (1 - lost / 100)
    return IperfRun(bps=bps, lost_percent=lost, cpu=cpu)


def _safe(fn: Callable[[], IperfRun], attempts: int = 2) -> IperfRun:
    """One iperf3 run; a failed one (e.g. its control connection reset in an overloaded tunnel) is tried again
    once, after a pause for the queues to drain. The result says how many attempts it took."""
    error = ""
    for attempt in range(1, attempts + 1):
        time.sleep(PAUSE)
        try:
            run = fn()
        except (BenchError, KeyError, ValueError, OSError) as e:
            error = str(e) or type(e).__name__
            continue
        run.attempts = attempt
        return run
    return IperfRun(error=error, attempts=attempts)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def measure(prefix: str, cfg: Config, suite_name: str, duration: float, rate: str, udp_len: int,
            logs_dir: Path | None, out: Callable[[str], None]) -> Result:
    """One configuration and suite in a fresh lab, removed before returning."""
    result = Result(cfg.name, suite_name)
    trace = ""
    if why := _missing(cfg):
        result.error = f"skipped: {why}"
        return result
    suite = SUITES.get(suite_name)
    extra = {"phase1": f'["{suite.phase1}"]', "phase2": f'["{suite.name}"]'} if suite else {}
    conc_extra = dict(extra)
    if suite and cfg.name == "vpnc-natt":
        conc_extra["phase1"] = f'["{suite.vpnc_phase1}"]'
    lab = Lab(prefix)
    if lab.exists():
        raise BenchError(f"a lab with prefix {prefix!r} exists already: remove it (natt-lab down --prefix "
                         f"{prefix}) or pass another --prefix")
    sc = Scenario(lab, CONFIGS_DIR, ScenarioConfig(concentrator_extra=conc_extra, client_extra=extra))
    try:
        with contextlib.ExitStack() as stack:
            lab.up()
            sc.write_configs()
            b = Bench(lab, sc, stack)
            b.pat()
            server = b.start(SERVER, ["iperf3", "-s", "-B", ADDR.server], "iperf3-server")
            procs.wait_for(lambda: server.alive and lab.run(SERVER, ["ss", "-Hltn", "sport = :5201"]).stdout,
                           10, 0.1, "iperf3 server listening")
            daemons = cfg.setup(b, suite)
            procs.wait_for(lambda: lab.ping(CLIENT1, ADDR.server, count=1, wait=1), 15, 0.2,
                           f"ping {ADDR.server} from client1")
            out(f"  {result.label}{' ' + suite_name if suite_name else ''}: up, measuring TCP, then UDP")
            result.tcp = _safe(lambda: tcp_run(lab, duration, daemons))
            result.udp = _safe(lambda: udp_run(lab, duration, rate, udp_len, daemons))
            dead = [n for n, p in daemons.items() if not p.alive]
            if dead:
                result.error = f"{', '.join(dead)} ended during the runs"
    except Exception as e:
        result.error = _first_line(e)
        trace = "".join(traceback.format_exception(e))
    finally:
        if logs_dir is not None and (result.error or _failed(result)):
            _save_logs(sc.run_dir, logs_dir / f"{cfg.name}-{suite_name or 'none'}", trace)
        sc.stop()
        tear_down(prefix)
    return result


def _failed(r: Result) -> bool:
    return any(run is not None and run.error for run in (r.tcp, r.udp))


def _save_logs(run_dir: Path, dest: Path, trace: str) -> None:
    with contextlib.suppress(OSError):
        dest.mkdir(parents=True, exist_ok=True)
        if trace:
            (dest / "traceback.txt").write_text(trace)
        for f in run_dir.glob("*.log"):
            shutil.copy(f, dest / f.name)


# -- the run -----------------------------------------------------------------------------------------------

def _first_output_line(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = (out.stdout or out.stderr).strip().splitlines()
    return lines[0] if lines else None


def _pkg_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_model() -> str | None:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return None


def environment() -> dict[str, Any]:
    return {
        "machine": {"nproc": os.cpu_count(), "cpu_model": _cpu_model(), "kernel": platform.release(),
                    "loadavg_start": list(os.getloadavg())},
        "versions": {
            "python": platform.python_version(),
            "cryptography": _pkg_version("cryptography"),
            "natt": _pkg_version("natt"),
            "vpnc": _first_output_line([VPNC, "--version"]),
            "strongswan": _first_output_line([str(sw.CHARON), "--version"]),
            "iperf3": _first_output_line(["iperf3", "--version"]),
        },
    }


def run(prefix: str, duration: float, rate: str, only: tuple[str, ...], results_dir: Path,
        udp_len: int = UDP_LEN, out: Callable[[str], None] = print) -> tuple[str, Path]:
    """Measure every selected configuration and suite; print and write the results. Returns (table, JSON path)."""
    if os.geteuid() != 0:
        raise BenchError("the bench needs root (network namespaces, TUN devices, nftables)")
    try:
        Lab(prefix)
    except LabError as e:
        raise BenchError(str(e)) from e
    if shutil.which("iperf3") is None:
        raise BenchError("iperf3 is not installed (make deps)")
    pairs = select(only)
    now = dt.datetime.now(dt.UTC).astimezone()
    stamp = now.strftime("%Y%m%d-%H%M%S")
    logs_dir = results_dir / f"throughput-{stamp}-logs"
    meta = {"date": now.isoformat(timespec="seconds"), **environment(),
            "settings": {"duration_s": duration, "udp_rate": rate, "udp_length": udp_len, "prefix": prefix}}
    out(f"natt-bench throughput: {len(pairs)} runs of {duration:g} s TCP + {duration:g} s UDP, lab prefix {prefix!r}")
    results: list[Result] = []
    for cfg, suite in pairs:
        r = measure(prefix, cfg, suite, duration, rate, udp_len, logs_dir, out)
        if r.error:
            out(f"  {r.label} {suite}: {r.error}")
        results.append(r)
    meta["machine"]["loadavg_end"] = list(os.getloadavg())  # others' load on the machine skews the figures
    text = report.table(results, duration, rate, udp_len)
    path = report.write_json(report.document(results, meta), results_dir, stamp)
    out("")
    out(text)
    out(f"\nresults: {path}" + (f"\nlogs of failed runs: {logs_dir}" if logs_dir.exists() else ""))
    return text, path
