"""The throughput results as a table (with ratios against the reference) and as a JSON document.

Pure formatting: the measurement (throughput.py) hands over Result objects; nothing here runs anything.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REFERENCE = "vpnc-strongswan"  # vpnc against strongSwan charon: what the ratios are taken against
REFERENCE_FALLBACK_SUITE = "aes256-sha1"  # the reference figure used for suites vpnc cannot do
FORWARDER = "forwarder"
FORWARDER_COMPARED = ("natt", "aes128gcm16")  # also shown as a ratio against the crypto-free forwarder

LABELS = {
    "plain": "plain",
    "forwarder": "forwarder",
    "vpnc-strongswan": "vpnc→strongswan",
    "natt": "natt",
    "vpnc-natt": "vpnc→natt",
    "natt-strongswan": "natt→strongswan",
}
SUBSTITUTED = "†"
TIMES = "\u00d7"  # the multiplication sign before a ratio


@dataclass
class IperfRun:
    """One iperf3 run: bits/s received at the server, UDP loss, CPU seconds each daemon used meanwhile."""

    bps: float | None = None
    lost_percent: float | None = None
    cpu: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    attempts: int = 1  # a failed run is tried once more


@dataclass
class Result:
    config: str  # a key of LABELS
    suite: str  # ESP suite, "" when there is no crypto
    tcp: IperfRun | None = None
    udp: IperfRun | None = None
    error: str | None = None  # the set-up failed: no runs

    @property
    def label(self) -> str:
        return LABELS.get(self.config, self.config)


def _find(results: list[Result], config: str, suite: str) -> Result | None:
    return next((r for r in results if r.config == config and r.suite == suite), None)


def reference_for(results: list[Result], suite: str) -> tuple[Result | None, bool]:
    """The reference result for a suite, and whether it is the fallback suite's (the reference lacks it)."""
    ref = _find(results, REFERENCE, suite) if suite else None
    if ref is not None and not ref.error:
        return ref, False
    return _find(results, REFERENCE, REFERENCE_FALLBACK_SUITE), True


def ratio(value: float | None, ref: float | None) -> float | None:
    if value is None or not ref:
        return None
    return value / ref


def _bps(run: IperfRun | None) -> float | None:
    return run.bps if run is not None and not run.error else None


def ratios(results: list[Result], r: Result) -> dict[str, Any]:
    """{tcp, udp: ratio against the reference or None; reference: "config suite"; substituted: bool}."""
    ref, substituted = reference_for(results, r.suite)
    out: dict[str, Any] = {
        "reference": f"{REFERENCE} {ref.suite}" if ref else None,
        "substituted": substituted,
        "tcp": ratio(_bps(r.tcp), _bps(ref.tcp) if ref else None),
        "udp": ratio(_bps(r.udp), _bps(ref.udp) if ref else None),
    }
    if (r.config, r.suite) == FORWARDER_COMPARED:
        fwd = _find(results, FORWARDER, "")
        out["vs_forwarder"] = {
            "tcp": ratio(_bps(r.tcp), _bps(fwd.tcp) if fwd else None),
            "udp": ratio(_bps(r.udp), _bps(fwd.udp) if fwd else None),
        }
    return out


def _mbit(bps: float | None) -> str:
    return "-" if bps is None else f"{bps / 1e6:.1f}"


def _times(x: float | None, mark: str = "") -> str:
    return "-" if x is None else f"{TIMES}{x:.2f}{mark}"


def _cpu(run: IperfRun | None) -> str:
    if run is None or not run.cpu:
        return "-"
    return " ".join(f"{name} {sec:.2f}" for name, sec in run.cpu.items())


def _run_error(run: IperfRun | None) -> str | None:
    return run.error if run is not None else None


COLUMNS = ("configuration", "suite", "TCP Mbit/s", "vs ref", "UDP Mbit/s", "loss %", "vs ref",
           "CPU s during TCP", "CPU s during UDP")


def table(results: list[Result], duration: float, udp_rate: str, udp_len: int | None = None) -> str:
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for r in results:
        suite = r.suite or "-"
        if r.error:
            rows.append((r.label, suite, "FAILED", "", "", "", "", "", ""))
            notes.append(f"{r.label} {suite}: {r.error}")
            continue
        q = ratios(results, r)
        is_ref = r.config == REFERENCE
        mark = SUBSTITUTED if q["substituted"] and not is_ref else ""
        loss = r.udp.lost_percent if r.udp is not None and not r.udp.error else None
        rows.append((
            r.label, suite,
            _mbit(_bps(r.tcp)), _times(q["tcp"], mark),
            _mbit(_bps(r.udp)), "-" if loss is None else f"{loss:.2f}", _times(q["udp"], mark),
            _cpu(r.tcp), _cpu(r.udp),
        ))
        for kind, run in (("TCP", r.tcp), ("UDP", r.udp)):
            if (err := _run_error(run)) is not None:
                notes.append(f"{r.label} {suite} {kind}: {err}")
            elif run is not None and run.attempts > 1:
                notes.append(f"{r.label} {suite} {kind}: measured at attempt {run.attempts} (the first failed)")
        if "vs_forwarder" in q:
            vf = q["vs_forwarder"]
            notes.insert(0, f"{r.label} {suite} against the forwarder (no crypto): TCP {_times(vf['tcp'])}, "
                            f"UDP {_times(vf['udp'])}")
    widths = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(COLUMNS)]
    right = {2, 3, 4, 5, 6}

    def line(cells: tuple[str, ...]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths,
                                                                                                 strict=True))).rstrip()

    out = [line(COLUMNS), line(tuple("-" * w for w in widths)), *(line(row) for row in rows), ""]
    datagrams = f" in {udp_len}-byte datagrams" if udp_len else ""
    out.append(f"iperf3 client1 → server, {duration:g} s per run; UDP offered at {udp_rate}{datagrams}. "
               f"Ratios: against {LABELS[REFERENCE]} with the same suite (= {TIMES}1.00).")
    if any(SUBSTITUTED in row[3] or SUBSTITUTED in row[6] for row in rows):
        out.append(f"{SUBSTITUTED} no reference figure for that suite (vpnc cannot do it, or it failed or was not "
                   f"run): against {LABELS[REFERENCE]} {REFERENCE_FALLBACK_SUITE} instead.")
    out.append("CPU s: user+system seconds each daemon process used while the iperf3 run lasted.")
    out.extend(notes)
    return "\n".join(out)


def document(results: list[Result], meta: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: meta (date, machine, versions, settings) and one entry per configuration and suite."""
    entries = []
    for r in results:
        e = asdict(r)
        e["label"] = r.label
        if not r.error:
            e["ratios"] = ratios(results, r)
        entries.append(e)
    return {**meta, "reference": {"config": REFERENCE, "fallback_suite": REFERENCE_FALLBACK_SUITE},
            "results": entries}


def write_json(doc: dict[str, Any], results_dir: Path, stamp: str) -> Path:
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / f"throughput-{stamp}.json"
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    return path
