"""The systemd units: `systemd-analyze verify` is clean, and the hardening each one promises is there.

The daemons are not installed at /usr/local/bin on a test machine, and verify refuses an ExecStart whose
binary is missing, so the copy that is verified has ExecStart's program replaced by /bin/true (same
arguments); every other byte of the unit is the file from systemd/.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

UNIT_DIR = Path(__file__).resolve().parents[2] / "systemd"
UNITS = {  # unit file -> (program, config path, the name to verify: a template needs an instance)
    "natt-concentrator.service": ("natt-concentrator", "/etc/natt/concentrator.toml", "natt-concentrator.service"),
    "natt-pat.service": ("natt-pat", "/etc/natt/pat.toml", "natt-pat.service"),
    "natt-client@.service": ("natt-client", "/etc/natt/client/%i.toml", "natt-client@lab.service"),
}
NEEDS_TUN = {"natt-concentrator.service", "natt-client@.service"}
CAPS = {"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_NET_BIND_SERVICE"}


def parse(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections -> key -> every value given (systemd allows repeated keys), comments dropped."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"key outside a section: {raw!r}"
        assert not line.endswith("\\"), "no continuation lines expected"
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def service(unit: str) -> dict[str, list[str]]:
    return parse((UNIT_DIR / unit).read_text())["Service"]


def one(svc: dict[str, list[str]], key: str) -> str:
    assert key in svc, f"{key}= missing"
    return svc[key][-1]


def rewrite_exec_start(text: str, program: str) -> str:
    old = f"ExecStart=/usr/local/bin/{program} "
    assert text.count(old) == 1
    return text.replace(old, "ExecStart=/bin/true ")


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (make apt-deps installs the systemd package)")
    program, _, verify_name = UNITS[unit]
    original = (UNIT_DIR / unit).read_bytes()
    copy = rewrite_exec_start(original.decode(), program).encode()
    changed = [(a, b) for a, b in zip(original.splitlines(), copy.splitlines(), strict=True) if a != b]
    assert len(changed) == 1 and changed[0][0].startswith(b"ExecStart="), "only ExecStart's program may differ"
    (tmp_path / unit).write_bytes(copy)
    out = subprocess.run(
        [analyze, "verify", str(tmp_path / verify_name)], capture_output=True, text=True, timeout=120
    )
    text = out.stdout + out.stderr
    ours = [ln for ln in text.splitlines() if "natt-" in ln or str(tmp_path) in ln]
    assert out.returncode == 0, text
    assert ours == [], "\n".join(ours)


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_service_basics(unit: str) -> None:
    program, config, _ = UNITS[unit]
    parsed = parse((UNIT_DIR / unit).read_text())
    assert parsed["Unit"].get("Documentation"), "Documentation= missing"
    svc = parsed["Service"]
    assert one(svc, "Type") == "notify"
    assert one(svc, "NotifyAccess") == "main"
    assert one(svc, "ExecStart") == f"/usr/local/bin/{program} run --config {config}"
    assert one(svc, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert one(svc, "Restart") == "on-failure"
    assert one(svc, "RestartSec") == "5"


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_least_privilege(unit: str) -> None:
    svc = service(unit)
    assert set(one(svc, "CapabilityBoundingSet").split()) == CAPS
    assert set(one(svc, "AmbientCapabilities").split()) == CAPS
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes",
        "ProtectControlGroups": "yes",
        "RestrictNamespaces": "yes",
        "LockPersonality": "yes",
        "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native",
        "RuntimeDirectory": "natt",
        "RuntimeDirectoryMode": "0700",
        # three services share /run/natt: without this, stopping one deletes the others' control sockets
        "RuntimeDirectoryPreserve": "yes",
    }.items():
        assert one(svc, key) == value, f"{unit}: {key}"
    assert set(one(svc, "RestrictAddressFamilies").split()) == {"AF_UNIX", "AF_INET", "AF_INET6", "AF_NETLINK"}
    assert "PermissionsStartOnly" not in svc


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_devices_and_writable_paths(unit: str) -> None:
    svc = service(unit)
    writable = " ".join(svc.get("ReadWritePaths", [])).split()
    if unit in NEEDS_TUN:
        assert one(svc, "PrivateDevices") == "no"
        assert one(svc, "DevicePolicy") in ("closed", "strict")
        assert svc["DeviceAllow"] == ["/dev/net/tun rw"]
        assert writable == []
    else:  # the PAT gateway: no devices; of /proc/sys only forwarding and conntrack's accounting switches
        assert one(svc, "PrivateDevices") == "yes"
        assert "DeviceAllow" not in svc
        assert writable == ["/proc/sys/net/ipv4/ip_forward", "-/proc/sys/net/netfilter/nf_conntrack_acct",
                            "-/proc/sys/net/netfilter/nf_conntrack_timestamp"]


@pytest.mark.parametrize("unit", sorted(UNITS))
def test_each_relaxation_is_explained(unit: str) -> None:
    text = (UNIT_DIR / unit).read_text()
    lines = text.splitlines()
    for key in ("PrivateDevices=no", "ReadWritePaths=", "RuntimeDirectoryPreserve=", "CapabilityBoundingSet="):
        for i, line in enumerate(lines):
            if line.startswith(key):
                above = "\n".join(lines[max(0, i - 4) : i])
                assert re.search(r"^#", above, re.M), f"{unit}: no comment above {line}"
