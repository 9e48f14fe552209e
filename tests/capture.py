"""tshark on a lab interface: capture while a block runs, then read fields and look for decode errors."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path

from natt_daemons.lab import procs
from natt_daemons.lab.topology import Lab

IKE_AND_ESP = "udp port 500 or udp port 4500 or ip proto 50"


@contextlib.contextmanager
def capture(lab: Lab, role: str, iface: str, pcap: Path, bpf: str = IKE_AND_ESP,
            duration: int = 40) -> Iterator[Path]:
    """tshark writes `pcap` from `iface` in namespace `role` (bounded by `duration` seconds) while the block runs."""
    os.chmod(pcap.parent, 0o755)  # tshark drops privileges to write
    proc = procs.start(lab, role, ["tshark", "-q", "-i", iface, "-w", str(pcap), "-a", f"duration:{duration}",
                                   "-f", bpf], pcap.with_suffix(".log"), name=f"tshark-{iface}")
    try:
        procs.wait_for(lambda: pcap.exists(), 15, 0.2, "tshark started")
        yield pcap
    finally:
        proc.stop(10.0)


def _decode_args(decode_as: Sequence[str]) -> list[str]:
    return [a for d in decode_as for a in ("-d", d)]


def fields(pcap: Path, *names: str, decode_as: Sequence[str] = ()) -> list[list[str]]:
    """One row per packet with the named tshark fields (empty string where absent)."""
    argv = ["tshark", "-n", "-r", str(pcap), *_decode_args(decode_as), "-T", "fields"]
    argv += [a for n in names for a in ("-e", n)]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout
    return [row.split("\t") for row in out.strip().splitlines()]


def verbose(pcap: Path, decode_as: Sequence[str] = ()) -> str:
    argv = ["tshark", "-n", "-r", str(pcap), *_decode_args(decode_as), "-V"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True).stdout


def problems(text: str) -> list[str]:
    """The lines of a `verbose` decode where tshark found a malformed packet or an error."""
    return [line for line in text.splitlines() if "Malformed" in line or "Expert Info (Error" in line]
