"""Wireshark key export in the lab: tshark, given only the tables `keys --wireshark` wrote, opens a capture.

The capture is taken on the PAT gateway's outside interface (what an operator captures between the PAT and the
concentrator): IKE from 500 floats to 4500 and the ESP is UDP-encapsulated there. The concentrator's export
(exact outer addresses) and the client's (its own address a `*`: the PAT hides it) each decrypt the inner ICMP
between the client's assigned address and 192.168.2.10 and the Quick Mode messages, for AES-GCM, AES-CBC with
HMAC-SHA1 and the seed's 3DES with HMAC-MD5. The tables are 0600 in a 0700 directory, and no key reaches a log.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest

from natt_daemons.common.control import call
from natt_daemons.lab import scenario
from natt_daemons.lab.scenario import Scenario, ScenarioConfig
from natt_daemons.lab.topology import ADDR, CLIENT1, PAT
from tests.capture import capture

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.tshark,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
]
QUICK_MODE, SA_PAYLOAD, NONCE_PAYLOAD = "32", "1", "10"
# suite → (client phase 1, client phase 2, the transform the session shows)
SUITES = {
    "aes-gcm": ('["aes256-sha256-modp2048"]', '["aes128gcm16"]', "AES-128-GCM-16"),
    "aes-cbc-sha1": ('["aes128-sha1-modp2048"]', '["aes256-sha1"]', "AES-256-CBC/HMAC-SHA1-96"),
    "3des-md5": ('["3des-md5-modp1024"]', '["3des-md5"]', "3DES-168/HMAC-MD5-96"),
}
DAEMONS = {"concentrator": "natt-concentrator", "client1": "natt-client"}


def export(sc: Scenario, name: str, directory: Path) -> dict:
    """The real CLI, as an operator runs it."""
    argv = [scenario._bin(DAEMONS[name]), "keys", "--wireshark", str(directory), "--socket", sc.socket(name),
            "--json"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def decode(pcap: Path, config_dir: Path) -> list[list[str]]:
    """tshark with the exported directory as its whole personal configuration: the tables and nothing else."""
    argv = ["tshark", "-n", "-r", str(pcap), "-o", "esp.enable_encryption_decode:TRUE",
            "-o", "esp.enable_authentication_check:TRUE", "-T", "fields", "-e", "isakmp.exchangetype",
            "-e", "isakmp.typepayload", "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type", "-e", "esp.icv_good"]
    env = {"PATH": "/usr/bin:/bin", "WIRESHARK_CONFIG_DIR": str(config_dir)}
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True, env=env).stdout
    return [(row.split("\t") + [""] * 6)[:6] for row in out.splitlines() if row]


def inner_icmp(rows: list[list[str]]) -> set[tuple[str, str, str]]:
    """(inner source, inner destination, ICMP type) of each decrypted packet: ip.src lists outer, then inner."""
    found = set()
    for r in rows:
        srcs, dsts = r[2].split(","), r[3].split(",")
        if r[4] and len(srcs) == 2 == len(dsts):
            found.add((srcs[1], dsts[1], r[4]))
    return found


def quick_mode_decrypted(rows: list[list[str]]) -> bool:
    """A Quick Mode message 1 or 2 shows its SA and Nonce payloads: only once decrypted."""
    return any(r[0] == QUICK_MODE and {SA_PAYLOAD, NONCE_PAYLOAD} <= set(r[1].split(",")) for r in rows)


def secrets_in(directory: Path) -> set[str]:
    """Every key the tables hold, lower-case hex."""
    keys = set()
    for line in (directory / "ikev1_decryption_table").read_text().splitlines():
        if line and not line.startswith("#"):
            keys.add(line.split(",")[1].lower())
    for line in (directory / "esp_sa").read_text().splitlines():
        if line and not line.startswith("#"):
            fields = [f.strip('"') for f in line.split(",")]
            keys |= {f[2:].lower() for f in (fields[5], fields[7]) if f.startswith("0x")}
    return keys


@pytest.mark.parametrize("suite", list(SUITES))
def test_tshark_decrypts_the_pat_outside_capture_with_the_exported_keys(tmp_path: Path, suite: str) -> None:
    p1, p2, transform = SUITES[suite]
    pcap = tmp_path / "outside.pcap"
    exports = {name: tmp_path / "keys" / name for name in DAEMONS}
    (tmp_path / "keys").mkdir(mode=0o700)
    with scenario.running("wk", ScenarioConfig(client_extra={"phase1": p1, "phase2": p2})) as sc:
        with capture(sc.lab, PAT, "outside", pcap, duration=90):
            sc.start_client("client1")
            st = sc.wait_connected("client1")
            assert {c["transform"] for c in st["ipsec"]} == {transform}, st["ipsec"]
            assert st["nat"]["this_end_behind_nat"] is True
            address = st["assigned_address"]
            assert sc.ping(CLIENT1, ADDR.server)
            replies = {name: export(sc, name, directory) for name, directory in exports.items()}
            time.sleep(1)  # the last packets reach the capture file
        logs = {name: (sc.run_dir / f"{name}.log").read_text() for name in DAEMONS}
        event_logs = {name: json.dumps(call(sc.socket(name), "log", {})) for name in DAEMONS}

    pairs = len(st["ipsec"])
    for name, reply in replies.items():
        assert (reply["ike_sas"], reply["esp_sas"]) == (1, 2 * pairs), (name, reply)
        directory = exports[name]
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()} == {
            "ikev1_decryption_table": 0o600, "esp_sa": 0o600}
        for key in secrets_in(directory):
            assert key not in logs[name].lower() and key not in event_logs[name].lower(), f"{name} logged a key"

        rows = decode(pcap, directory)
        icmp = inner_icmp(rows)
        assert {(address, ADDR.server, "8"), (ADDR.server, address, "0")} <= icmp, (name, sorted(icmp))
        assert all(r[5] == "1" for r in rows if r[4]), f"{name}: every decrypted packet's ICV checked out"
        assert quick_mode_decrypted(rows), f"{name}: Quick Mode decrypted with the IKEv1 table"

    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    control = decode(pcap, empty)
    assert not inner_icmp(control) and not quick_mode_decrypted(control), "without the tables nothing opens"
