"""`natt-bench` runs end to end with tiny sizes (a smoke run: it checks the bench works, never a speed)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from natt_daemons.lab.scenario import _bin

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
]


def _run(args: list[str], results: Path) -> dict:
    out = subprocess.run([_bin("natt-bench"), *args, "--results-dir", str(results)], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (path,) = results.glob("*.json")
    return json.loads(path.read_text())


def test_connect_smoke(tmp_path: Path) -> None:
    doc = _run(["connect", "--count", "12", "--concurrency", "4", "--hold", "3", "--target", "natt"], tmp_path)
    r = doc["results"]["natt"]
    assert r["established"] == 12 and not r["failures"] and r["lost_during_hold"] == 0, r
    assert r["concentrator_sessions_counted"] == 12
    assert r["setups_per_second"] > 0 and r["memory_per_session_kib"] is not None


def test_throughput_smoke(tmp_path: Path) -> None:
    doc = _run(["throughput", "--duration", "1", "--only", "natt:aes128gcm16", "--prefix", "bs-"], tmp_path)
    (row,) = [r for r in doc["results"] if r["config"] == "natt"]
    assert row["error"] is None and row["tcp"]["bps"] > 0 and row["udp"]["bps"] > 0, row
    assert set(row["tcp"]["cpu"]) == {"natt-client", "natt-conc"}
