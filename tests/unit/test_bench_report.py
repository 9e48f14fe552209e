"""natt-bench's report: ratios against the reference, the table, the JSON document (made-up numbers)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from natt_daemons.bench.report import TIMES as X
from natt_daemons.bench.report import IperfRun, Result, document, ratios, reference_for, table, write_json

pytestmark = pytest.mark.unit

M = 1e6


def _results() -> list[Result]:
    return [
        Result("plain", "", IperfRun(1000 * M), IperfRun(300 * M, 0.0)),
        Result("forwarder", "", IperfRun(200 * M, cpu={"fwd-client1": 1.5, "fwd-conc": 1.25}), IperfRun(150 * M, 50.0)),
        Result("vpnc-strongswan", "aes256-sha1", IperfRun(100 * M, cpu={"vpnc": 2.0, "charon": 1.0}),
               IperfRun(50 * M, 80.0)),
        Result("vpnc-strongswan", "3des-md5", IperfRun(25 * M), IperfRun(20 * M, 90.0)),
        Result("natt", "aes128gcm16", IperfRun(50 * M, cpu={"natt-client": 1.0, "natt-conc": 0.5}),
               IperfRun(75 * M, 60.0, attempts=2)),
        Result("natt", "3des-md5", IperfRun(50 * M), IperfRun(error="iperf3: the server is busy")),
        Result("vpnc-natt", "aes256-sha1", error="TimeoutError: timed out after 40s waiting for vpnc's address"),
    ]


def test_reference_same_suite_or_fallback() -> None:
    rs = _results()
    ref, substituted = reference_for(rs, "3des-md5")
    assert (ref.suite, substituted) == ("3des-md5", False)
    ref, substituted = reference_for(rs, "aes128gcm16")  # vpnc cannot do GCM
    assert (ref.suite, substituted) == ("aes256-sha1", True)


def test_ratios() -> None:
    rs = _results()
    gcm = ratios(rs, rs[4])
    assert gcm["tcp"] == pytest.approx(0.5) and gcm["udp"] == pytest.approx(1.5) and gcm["substituted"]
    assert gcm["vs_forwarder"] == {"tcp": pytest.approx(0.25), "udp": pytest.approx(0.5)}
    des = ratios(rs, rs[5])
    assert des["tcp"] == pytest.approx(2.0) and des["udp"] is None and not des["substituted"]
    assert "vs_forwarder" not in des
    assert ratios(rs, rs[2])["tcp"] == pytest.approx(1.0)


def test_table() -> None:
    text = table(_results(), duration=10, udp_rate="300M", udp_len=1300)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["configuration", "suite", "TCP", "Mbit/s"]
    gcm = next(line for line in lines if line.startswith("natt ") and "aes128gcm16" in line)
    assert gcm.split()[2:7] == ["50.0", f"{X}0.50†", "75.0", "60.00", f"{X}1.50†"]
    assert "natt-client 1.00 natt-conc 0.50" in gcm
    des = next(line for line in lines if line.startswith("natt ") and "3des-md5" in line)
    assert des.split()[2:4] == ["50.0", f"{X}2.00"]  # same suite in the reference: no mark
    assert "FAILED" in next(line for line in lines if line.startswith("vpnc→natt"))
    assert "† no reference figure for that suite" in text
    assert f"natt aes128gcm16 against the forwarder (no crypto): TCP {X}0.25, UDP {X}0.50" in text
    assert "natt 3des-md5 UDP: iperf3: the server is busy" in text
    assert "natt aes128gcm16 UDP: measured at attempt 2" in text
    assert "vpnc→natt aes256-sha1: TimeoutError" in text
    assert "1300-byte datagrams" in text


def test_json_document(tmp_path: Path) -> None:
    meta = {"date": "2026-01-01T00:00:00+00:00", "machine": {"nproc": 2}, "versions": {"python": "3.11"}}
    doc = document(_results(), meta)
    path = write_json(doc, tmp_path / "results", "20260101-000000")
    assert path.name == "throughput-20260101-000000.json"
    back = json.loads(path.read_text())
    assert back["date"] == meta["date"] and back["reference"]["config"] == "vpnc-strongswan"
    by = {(e["config"], e["suite"]): e for e in back["results"]}
    assert by[("natt", "aes128gcm16")]["tcp"]["bps"] == 50e6
    assert by[("natt", "aes128gcm16")]["ratios"]["tcp"] == pytest.approx(0.5)
    assert by[("natt", "aes128gcm16")]["label"] == "natt"
    assert "ratios" not in by[("vpnc-natt", "aes256-sha1")] and by[("vpnc-natt", "aes256-sha1")]["error"]
