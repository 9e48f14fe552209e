"""systemd/natt-manager.service: verify is clean, no capabilities, the daemons' sandbox, and the code it runs fits.

The daemons' units are checked in test_systemd_units.py, whose checks name the natt user and the daemons'
capabilities; the manager is another kind of service (its own user, no capabilities, no netlink), so it has its
own checks here, reusing that file's parser and helpers. Exposure figures are systemd 252's (Debian 12).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_systemd_units import UNIT_DIR, analyze, one, parse, rewrite_exec_start

pytestmark = pytest.mark.unit

UNIT = "natt-manager.service"
SYSUSERS = UNIT_DIR / "sysusers.d" / "natt-manager.conf"
FAMILIES = {"AF_UNIX", "AF_INET", "AF_INET6"}
# The concentrator's control-socket groups: natt-view connects (views), natt-admin acts (not natt: it reads /etc/natt).
CONTROL_GROUPS = {"natt-view", "natt-admin"}
ACCEPTED_OPEN = {
    "PrivateNetwork=": "it serves the host's network",
    "PrivateUsers=": "a private user namespace would show the control socket's groups as nobody",
    "RootDirectory=/RootImage=": "installed into the host's Python",
    "SupplementaryGroups=": "the control socket's groups (natt-view, natt-admin)",
    "RestrictAddressFamilies=~AF_UNIX": "the control socket, sd_notify",
    "RestrictAddressFamilies=~AF_(INET|INET6)": "HTTPS",
    "DeviceAllow=": "ProtectClock= adds char-rtc r",
    "IPAddressDeny=": "administrators connect from the site's admin network, which a drop-in may name",
}
MAX_EXPOSURE = 1.3  # measured; the daemons' units are at 1.1-1.8


def service() -> dict[str, list[str]]:
    return parse((UNIT_DIR / UNIT).read_text())["Service"]


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    original = (UNIT_DIR / UNIT).read_text()
    (tmp_path / UNIT).write_text(rewrite_exec_start(original, "natt-manager"))
    out = subprocess.run([analyze(), "verify", str(tmp_path / UNIT)], capture_output=True, text=True, timeout=120)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert [ln for ln in text.splitlines() if "natt-" in ln or str(tmp_path) in ln] == [], text


def test_no_capabilities_and_its_own_user() -> None:
    svc = service()
    assert one(svc, "CapabilityBoundingSet") == ""
    assert one(svc, "AmbientCapabilities") == ""
    assert one(svc, "User") == "natt-manager" and one(svc, "Group") == "natt-manager"
    assert set(one(svc, "SupplementaryGroups").split()) == CONTROL_GROUPS
    assert svc.get("DynamicUser", ["no"])[-1] == "no"
    assert one(svc, "ExecStart") == "/usr/local/bin/natt-manager run --config /etc/natt/manager.toml"
    assert one(svc, "Type") == "notify" and one(svc, "NotifyAccess") == "main"


def test_sandbox() -> None:
    svc = service()
    for key, value in {
        "NoNewPrivileges": "yes", "UMask": "0077", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "PrivateMounts": "yes", "PrivateIPC": "yes",
        "RemoveIPC": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
        "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes", "ProtectHostname": "yes",
        "ProtectProc": "invisible", "ProcSubset": "pid", "RestrictNamespaces": "yes", "RestrictRealtime": "yes",
        "RestrictSUIDSGID": "yes", "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
        "SystemCallArchitectures": "native", "SystemCallErrorNumber": "EPERM", "StateDirectory": "natt-manager",
        "StateDirectoryMode": "0700",
    }.items():
        assert one(svc, key) == value, key
    assert set(one(svc, "RestrictAddressFamilies").split()) == FAMILIES
    lines = svc["SystemCallFilter"]
    assert lines[0] == "@system-service" and all(line.startswith("~") for line in lines[1:])
    assert {"@privileged", "@resources"} <= {g for line in lines[1:] for g in line[1:].split()}
    assert "ReadWritePaths" not in svc and "DeviceAllow" not in svc


def test_the_code_needs_no_more_than_the_unit_gives() -> None:
    """The manager's modules open no socket family the unit forbids, no raw socket, no device, no netlink."""
    code = ("import importlib, json, sys\n"
            "for m in ('natt_daemons.manager.cli', 'natt_daemons.manager.server'): importlib.import_module(m)\n"
            "print(json.dumps([[n, getattr(m, '__file__', None)] for n, m in sys.modules.items()]))")
    mods = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                                     check=True).stdout)
    files = [Path(f) for n, f in mods if n.startswith("natt_daemons") and f]
    assert any(f.name == "link.py" for f in files)
    source = "\n".join(f.read_text() for f in files)
    families = set(re.findall(r"socket\.socket\(\s*socket\.(AF_[A-Z0-9]+)", source))
    assert families <= FAMILIES, families
    assert "SOCK_RAW" not in source and "/dev/net/tun" not in source
    assert not any(n == "pyroute2" for n, _ in mods), "the manager must not pull in pyroute2 (netlink)"


def test_exposure() -> None:
    path = str(UNIT_DIR / UNIT)
    out = subprocess.run([analyze(), "security", "--offline=yes", "--json=short", path], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    open_checks = {c["name"] for c in json.loads(out.stdout) if not c["set"]}
    assert open_checks <= set(ACCEPTED_OPEN), sorted(open_checks - set(ACCEPTED_OPEN))
    out = subprocess.run([analyze(), "security", "--offline=yes", path], capture_output=True, text=True, timeout=120)
    m = re.search(r"Overall exposure level for \S+: (\d+\.\d)", out.stdout + out.stderr)
    assert m and float(m.group(1)) <= MAX_EXPOSURE, out.stdout[-300:]


def test_sysusers_makes_the_user_and_its_groups(tmp_path: Path) -> None:
    sysusers = shutil.which("systemd-sysusers")
    if sysusers is None:
        pytest.skip("systemd-sysusers is not installed")
    out = subprocess.run([sysusers, "--dry-run", f"--root={tmp_path}", str(SYSUSERS)], capture_output=True,
                         text=True, timeout=60)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "Creating user 'natt-manager'" in text, text
    for group in CONTROL_GROUPS:
        assert f"Creating group '{group}'" in text, text
