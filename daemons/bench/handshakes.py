"""`natt-bench connect`: the handshake load generator against our concentrator and strongSwan, in one run.

For each target a fresh lab is built (own prefix), the concentrator (ours, or charon with kernel-libipsec)
starts in the conc namespace, and the generator (loadgen.py) runs in client1 behind our PAT gateway. The
concentrator's resident memory is read before the first handshake and when every session is up; the
difference divided by the sessions up is its memory per session.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import resource
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natt_daemons.bench.procstat import cpu_seconds, rss_kib
from natt_daemons.common.control import call
from natt_daemons.lab import procs, scenario
from natt_daemons.lab import strongswan as sw
from natt_daemons.lab.scenario import LAB_USERS, ScenarioConfig, _bin, _set
from natt_daemons.lab.topology import ADDR, CLIENT1, CONC, PAT, Lab

GROUP, PSK = "ciscovpn", "ciscovpn-lab-key"
USER = "vpnclient1"
POOL = "10.40.0.0/18"  # 16382 addresses


@dataclass
class Plan:
    count: int
    concurrency: int
    hold: float
    phase1: str = "aes256-sha1-modp1024"  # DH group 2, as the seed
    phase2: str = "aes256-sha1"
    keepalive: float = 20.0
    dpd: float = 30.0
    max_ramp: float = 600.0  # seconds; a target slower than this reports how far it got


def _workers(count: int) -> int:
    """Generator processes needed: each simulated client holds two sockets, and a process may have only
    RLIMIT_NOFILE's hard limit of descriptors (a container may not raise it)."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard == resource.RLIM_INFINITY:
        return 1
    return max(1, -(-(2 * count) // max(64, hard - 512)))


def _generator(lab: Lab, run: Path, plan: Plan, name: str, count: int, concurrency: int) -> procs.Proc:
    (run / "bench.psk").write_text(PSK)
    (run / "bench.pw").write_text(LAB_USERS[USER])
    for f in ("bench.psk", "bench.pw"):
        (run / f).chmod(0o600)
    argv = [sys.executable, "-m", "natt_daemons.bench.loadgen", "--peer", ADDR.conc_public, "--local", ADDR.client1,
            "--group", GROUP, "--psk-file", str(run / "bench.psk"), "--user", USER,
            "--password-file", str(run / "bench.pw"), "--phase1", plan.phase1, "--phase2", plan.phase2,
            "--count", str(count), "--concurrency", str(concurrency), "--hold", str(plan.hold),
            "--keepalive", str(plan.keepalive), "--dpd", str(plan.dpd), "--target", name,
            "--max-ramp", str(plan.max_ramp),
            "--out", str(run / f"loadgen-{name}.json"), "--ramp-done", str(run / f"ramp-{name}.json")]
    return procs.start(lab, CLIENT1, argv, run / f"loadgen-{name}.log", name=f"loadgen-{name}")


def _merge(target: str, parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from several generator processes (sums, and percentiles over all set-up times)."""
    times = sorted(t for p in parts for t in p.pop("setup_times"))

    def pct(q: float) -> float | None:
        return times[min(len(times) - 1, int(q * len(times)))] if times else None

    failures: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    for p in parts:
        failures.update(p["failures"])
        lost.update(p["lost_reasons"])
    established = sum(p["established"] for p in parts)
    wall = max(p["ramp_wall_s"] for p in parts)
    return {
        "target": target, "generators": len(parts),
        "clients": sum(p["clients"] for p in parts), "attempted": sum(p["attempted"] for p in parts),
        "established": established, "setups_per_second": round(established / wall, 1) if wall else 0.0,
        "setup_p50_s": pct(0.50), "setup_p99_s": pct(0.99), "failures": dict(failures), "ramp_wall_s": wall,
        "hold_s": parts[0]["hold_s"], "lost_during_hold": sum(p["lost_during_hold"] for p in parts),
        "lost_reasons": dict(lost), "generator_cpu_s_ramp": round(sum(p["generator_cpu_s_ramp"] for p in parts), 2),
        "generator_retransmits": sum(p["generator_retransmits"] for p in parts),
    }


def _drive(lab: Lab, run: Path, plan: Plan, target: str, pid: int,
           sessions: Any) -> dict[str, Any]:
    """Run the generator(s) against the concentrator `pid`; `sessions()` counts its sessions."""
    rss0, cpu0 = rss_kib(pid) or 0, cpu_seconds(pid) or 0.0
    n = _workers(plan.count)
    names = [f"{target}-{i}" for i in range(n)]
    gens = [_generator(lab, run, plan, name, plan.count // n + (i < plan.count % n),
                       max(1, plan.concurrency // n)) for i, name in enumerate(names)]
    deadline = time.monotonic() + 180 + plan.max_ramp + plan.hold
    try:
        while not all((run / f"ramp-{name}.json").exists() for name in names):
            if not all(g.alive for g in gens) or time.monotonic() > deadline:
                logs = "\n".join(g.log()[-2000:] for g in gens)
                raise RuntimeError(f"a load generator stopped before the ramp ended:\n{logs}")
            _relay(gens[0])
            time.sleep(0.5)
        up_rss, up_cpu = rss_kib(pid) or 0, cpu_seconds(pid) or 0.0
        counted = sessions()
        while any(g.alive for g in gens) and time.monotonic() < deadline:
            _relay(gens[0])
            time.sleep(0.5)
        _relay(gens[0])
        parts = []
        for name, g in zip(names, gens, strict=True):
            out = run / f"loadgen-{name}.json"
            if not out.exists():
                raise RuntimeError(f"load generator {name} gave no result:\n{g.log()[-3000:]}")
            parts.append(json.loads(out.read_text()))
    finally:
        for g in gens:
            g.stop(15.0)
    result = _merge(target, parts)
    up = result["established"]
    result["concentrator_sessions_counted"] = counted
    result["concentrator_rss_kib_before"] = rss0
    result["concentrator_rss_kib_all_up"] = up_rss
    result["memory_per_session_kib"] = round((up_rss - rss0) / up, 1) if up else None
    result["concentrator_cpu_s_ramp"] = round(up_cpu - cpu0, 2)
    return result


_relayed: dict[int, int] = {}


def _relay(gen: procs.Proc) -> None:
    """Show the generator's progress bar (its log) on our stderr."""
    text = gen.log()
    seen = _relayed.get(gen.pid, 0)
    if len(text) > seen:
        sys.stderr.write(text[seen:])
        sys.stderr.flush()
        _relayed[gen.pid] = len(text)


def against_natt(plan: Plan) -> dict[str, Any]:
    extra = {"phase1": f'["{plan.phase1}"]', "phase2": f'["{plan.phase2}"]', "pool": f'"{POOL}"',
             "session_limit": str(plan.count + 100), "dpd_interval": str(plan.dpd),
             "keepalive_interval": str(plan.keepalive), "log_severity": "5",
             # The load generator logs every simulated client in as the same user, all from the PAT's one address:
             # no simultaneous-login limit, and a half-open budget for that one source as large as the run.
             "max_logins": "0", "half_open_per_source": str(max(plan.count, 50)),
             "half_open_limit": str(max(plan.count, 2000)),
             # ... and call admission (new negotiations a second) out of the way: the bench measures the DH rate.
             "half_open_rate": "100000", "half_open_per_source_rate": "100000"}
    with scenario.running("hn", ScenarioConfig(concentrator_extra=extra)) as sc:
        pid = sc.procs["concentrator"].pid
        return _drive(sc.lab, sc.run_dir, plan, "natt", pid,
                      lambda: call(sc.socket("concentrator"), "status")["sessions"])


@contextlib.contextmanager
def _strongswan_lab(plan: Plan) -> Iterator[tuple[Lab, Path, sw.Charon]]:
    prefix = "hs" + time.strftime("%H%M%S") + "-"
    lab = Lab(prefix)
    run = procs.run_dir(prefix)
    charon = sw.Charon(lab, CONC, Path(tempfile.mkdtemp(prefix=f"natt-{prefix}")), bench=True)
    pat: procs.Proc | None = None
    try:
        lab.up()
        run.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = _set(scenario.CONFIGS_DIR.joinpath("pat.toml").read_text(), "control_socket",
                    f'"{run / "pat.sock"}"')
        (run / "pat.toml").write_text(conf)
        pat = procs.start(lab, PAT, [_bin("natt-pat"), "run", "--config", str(run / "pat.toml")], run / "pat.log",
                          name="pat")
        procs.wait_for(lambda: (run / "pat.sock").exists() or not pat.alive, 20, 0.1, "natt-pat control socket")
        suite = sw.Suite("bench", ike=plan.phase1, esp=plan.phase2,
                         client_phase1=plan.phase1, client_phase2=plan.phase2)
        charon.write(sw.swanctl_conf(suite, ADDR.conc_public, GROUP, PSK, {USER: LAB_USERS[USER]}, POOL,
                                     dpd_delay=int(plan.dpd)))
        charon.start()
        charon.load()
        yield lab, run, charon
    finally:
        if pat is not None:
            pat.stop(8.0)
        charon.stop()
        lab.down()
        shutil.rmtree(run, ignore_errors=True)
        shutil.rmtree(charon.workdir, ignore_errors=True)


def _charon_sessions(charon: sw.Charon) -> int:
    m = re.search(r"IKE_SAs:\s+(\d+) total", charon.swanctl("--stats"))
    return int(m.group(1)) if m else -1


def against_strongswan(plan: Plan) -> dict[str, Any]:
    with _strongswan_lab(plan) as (lab, run, charon):
        assert charon.proc is not None
        return _drive(lab, run, plan, "strongswan", charon.proc.pid, lambda: _charon_sessions(charon))


TARGETS = {"natt": against_natt, "strongswan": against_strongswan}


def run(plan: Plan, targets: tuple[str, ...], results_dir: Path, out: Any = print) -> dict[str, Any]:
    """Every target with the same plan, one after the other; a table on `out`, JSON under `results_dir`."""
    import datetime
    import platform

    doc: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"nproc": len(os.sched_getaffinity(0)), "kernel": platform.release()},
        "plan": plan.__dict__,
        "results": {},
    }
    for name in targets:
        out(f"--- {name}: {plan.count} clients, {plan.concurrency} handshakes in flight, hold {plan.hold:.0f} s")
        try:
            doc["results"][name] = TARGETS[name](plan)
        except Exception as e:  # one target failing must not lose the other's figures
            doc["results"][name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
    out(table(doc["results"]))
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"handshakes-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(doc, indent=2))
    out(f"written: {path}")
    return doc


def table(results: dict[str, dict[str, Any]]) -> str:
    ref = results.get("strongswan", {})
    rows = [("target", "up/attempted", "set-ups/s", "vs strongSwan", "p50 s", "p99 s", "failures", "KiB/session",
             "held", "lost")]
    for name, r in results.items():
        if "error" in r:
            rows.append((name, "error", r["error"][:60], "", "", "", "", "", "", ""))
            continue
        rate, ref_rate = r["setups_per_second"], ref.get("setups_per_second")
        ratio = f"{rate / ref_rate:.2f}" if ref_rate else "-"
        failures = ", ".join(f"{k}: {v}" for k, v in r["failures"].items()) or "0"
        rows.append((name, f"{r['established']}/{r.get('attempted', r['clients'])}", f"{rate:.1f}", ratio,
                     str(r["setup_p50_s"]), str(r["setup_p99_s"]), failures, str(r["memory_per_session_kib"]),
                     f"{r['hold_s']:.0f} s", str(r["lost_during_hold"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)
