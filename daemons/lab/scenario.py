"""The seed scenario on top of the lab network: configs, daemons, connection, traffic, views.

`natt-lab up` and the lab tests share this, so what a newcomer sees is what the tests check.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from natt_daemons.common.control import ControlError, call
from natt_daemons.common.passwords import hash_password
from natt_daemons.common.tomledit import set_bool
from natt_daemons.lab import procs
from natt_daemons.lab.topology import ADDR, CLIENT1, CLIENT2, CONC, PAT, Lab

LAB_USERS = {"vpnclient1": "lab-pass-1", "vpnclient2": "lab-pass-2"}
CLIENTS = {CLIENT1: "client1", CLIENT2: "client2"}
CONFIGS_DIR = Path(__file__).resolve().parents[2] / "configs"  # the repository's templates


def _bin(name: str) -> str:
    """The console script next to the running interpreter (the venv), else from PATH."""
    here = Path(sys.executable).parent / name
    if here.exists():
        return str(here)
    found = shutil.which(name)
    if found is None:
        raise FileNotFoundError(f"{name} is not installed (run make venv)")
    return found


def _set(text: str, key: str, value: str) -> str:
    """Replace `key = ...` in a TOML text, keeping the comments (a tiny, deliberate templating); a key the
    template only shows as a commented-out example (`# key = ...`) is set on that line."""
    line = f'{key} = {value}'
    new, n = re.subn(rf"(?m)^{re.escape(key)}\s*=.*$", line, text, count=1)
    if n == 0:
        new, n = re.subn(rf"(?m)^#\s*{re.escape(key)}\s*=.*$", line, text, count=1)
    if n == 0:
        raise ValueError(f"template has no '{key} =' line")
    return new


@dataclass
class ScenarioConfig:
    # The concentrator's NAT Transparency: True/False set it, None keeps what the given config says (natt-lab up
    # --configs DIR uses the files as they are unless --nat-transparency is given).
    nat_traversal: bool | None = True
    esp_passthrough: bool = False
    concentrator_extra: dict[str, str] = field(default_factory=dict)  # key → TOML value text
    client_extra: dict[str, str] = field(default_factory=dict)
    pat_extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Scenario:
    lab: Lab
    templates: Path
    config: ScenarioConfig = field(default_factory=ScenarioConfig)
    procs: dict[str, procs.Proc] = field(default_factory=dict)
    no_traffic: list[str] = field(default_factory=list)  # client roles whose pings failed (NAT transparency off)

    @property
    def run_dir(self) -> Path:
        return procs.run_dir(self.lab.prefix)

    def socket(self, name: str) -> str:
        return str(self.run_dir / f"{name}.sock")

    def config_path(self, name: str) -> Path:
        return self.run_dir / f"{name}.toml"

    # -- configs ----------------------------------------------------------------------------

    def write_configs(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        conc = (self.templates / "concentrator.toml").read_text()
        conc = _set(conc, "control_socket", f'"{self.socket("concentrator")}"')
        if self.config.nat_traversal is not None:
            conc = set_bool(conc, ("concentrator",), "nat_traversal", self.config.nat_traversal,
                            where=str(self.templates / "concentrator.toml"))
        for k, v in self.config.concentrator_extra.items():
            conc = _set(conc, k, v)
        conc += "".join(f'{u} = "{hash_password(p)}"\n' for u, p in LAB_USERS.items())
        self._write("concentrator", conc)
        for name in CLIENTS.values():
            text = (self.templates / f"{name}.toml").read_text()
            text = _set(text, "control_socket", f'"{self.socket(name)}"')
            for k, v in self.config.client_extra.items():
                text = _set(text, k, v)
            self._write(name, text)
        pat = (self.templates / "pat.toml").read_text()
        pat = _set(pat, "control_socket", f'"{self.socket("pat")}"')
        pat = _set(pat, "esp_passthrough", "true" if self.config.esp_passthrough else "false")
        for k, v in self.config.pat_extra.items():
            pat = _set(pat, k, v)
        self._write("pat", pat)

    def _write(self, name: str, text: str) -> None:
        p = self.config_path(name)
        p.write_text(text)
        p.chmod(0o600)

    # -- daemons ----------------------------------------------------------------------------

    def start_daemon(self, name: str, role: str, program: str) -> procs.Proc:
        argv = [_bin(program), "run", "--config", str(self.config_path(name))]
        p = procs.start(self.lab, role, argv, self.run_dir / f"{name}.log", name=name)
        self.procs[name] = p
        return p

    def wait_socket(self, name: str, timeout: float = 20.0) -> None:
        proc = self.procs.get(name)

        def ready() -> bool:
            if proc is not None and not proc.alive:
                raise RuntimeError(f"{name} exited:\n{proc.log()[-3000:]}")
            return Path(self.socket(name)).exists()

        procs.wait_for(ready, timeout, 0.1, f"{name} control socket")

    def start_infrastructure(self) -> None:
        self.write_configs()
        self.start_daemon("pat", PAT, "natt-pat")
        self.start_daemon("concentrator", CONC, "natt-concentrator")
        self.wait_socket("pat")
        self.wait_socket("concentrator")

    def start_client(self, name: str) -> None:
        role = next(r for r, n in CLIENTS.items() if n == name)
        self.start_daemon(name, role, "natt-client")
        self.wait_socket(name)

    def status(self, name: str) -> dict:
        return call(self.socket(name), "status")

    def wait_connected(self, name: str, timeout: float = 30.0) -> dict:
        def connected() -> dict | None:
            try:
                s = self.status(name)
            except ControlError:
                return None
            return s if s["state"] == "connected" and s.get("ipsec") else None

        return procs.wait_for(connected, timeout, 0.2, f"{name} connected")

    def ping(self, role: str, dst: str, count: int = 3) -> bool:
        return self.lab.ping(role, dst, count=count, wait=2)

    def view(self, name: str, cmd: str, args: dict | None = None) -> object:
        return call(self.socket(name), cmd, args)

    def stop(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop(8.0)


def bring_up(prefix: str, templates: Path, out=print, config: ScenarioConfig | None = None) -> Scenario:
    """Everything `make lab` does: network, daemons, both clients connected, traffic checked."""
    lab = Lab(prefix)
    if lab.exists():
        lab.down()
    lab.up()
    sc = Scenario(lab, templates, config or ScenarioConfig())
    t0 = time.monotonic()
    sc.start_infrastructure()
    out(f"PAT gateway and concentrator running ({time.monotonic() - t0:.1f} s)")
    for name in CLIENTS.values():
        t = time.monotonic()
        sc.start_client(name)
        sc.wait_connected(name)
        out(f"{name} connected in {time.monotonic() - t:.2f} s")
    for role in CLIENTS:
        ok = sc.ping(role, ADDR.server)
        out(f"ping {ADDR.server} from {role}: {'ok' if ok else 'FAILED'}")
        if not ok:
            sc.no_traffic.append(role)
    if sc.no_traffic:
        if call(sc.socket("concentrator"), "settings")["nat_traversal"]:
            raise RuntimeError(f"no traffic from {', '.join(sc.no_traffic)} to {ADDR.server} through the tunnel")
        # The seed's failure case, asked for (NAT transparency off): the lab is up; diagnosis_text says why.
        out("no data passes: NAT transparency is off on the concentrator (the seed's failure case)")
    return sc


@contextlib.contextmanager
def seed_lab(tag: str, templates: Path = CONFIGS_DIR, config: ScenarioConfig | None = None) -> Iterator[Scenario]:
    """bring_up under a fresh prefix (`<tag><6 hex>-`), quietly; stopped and removed on exit, whatever happened."""
    prefix = f"{tag}{secrets.token_hex(3)}-"
    sc = None
    try:
        sc = bring_up(prefix, templates, out=lambda *_: None, config=config)
        yield sc
    finally:
        if sc is not None:
            sc.stop()
        tear_down(prefix)


def _cli(program: str, sc: Scenario, name: str, *args: str) -> str:
    """What the operator would type, run for real, so the printout is the CLI's own."""
    import subprocess

    out = subprocess.run([_bin(program), *args, "--socket", sc.socket(name)], capture_output=True, text=True,
                         timeout=30)
    return (out.stdout + out.stderr).rstrip()


def views_text(sc: Scenario) -> str:
    parts = [
        ("natt-concentrator sessions", _cli("natt-concentrator", sc, "concentrator", "sessions")),
        ("natt-pat xlate", _cli("natt-pat", sc, "pat", "xlate")),
        ("natt-pat arp", _cli("natt-pat", sc, "pat", "arp")),
    ]
    for name in CLIENTS.values():
        parts.append((f"natt-client status ({name})", _cli("natt-client", sc, name, "status")))
    return "\n\n".join(f"=== {title} ===\n{text}" for title, text in parts)


def _short(program: str) -> str:
    """The console script as the reader can type it from the repository (.venv/bin/...)."""
    import os

    path = _bin(program)
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else path


def usage_text(sc: Scenario) -> str:
    p = sc.lab.prefix
    conc, pat, client = _short("natt-concentrator"), _short("natt-pat"), _short("natt-client")
    return "\n".join([
        "",
        f"The lab {p!r} is running. Try:",
        f"  make lab-shell NS=client1               # a shell in {p}client1 (also: client2, pat, inet, conc, server)",
        f"  ip netns exec {p}client1 ping 192.168.2.10",
        f"  {conc} sessions --socket {sc.socket('concentrator')}",
        f"  {conc} session vpnclient1 --socket {sc.socket('concentrator')}",
        f"  {conc} log --class IKE,IPSECDBG --severity 1-9 --socket {sc.socket('concentrator')}",
        f"  {pat} xlate --socket {sc.socket('pat')}",
        f"  {client} status --socket {sc.socket('client1')}",
        f"  {client} disconnect --socket {sc.socket('client1')}",
        f"Configs and logs: {sc.run_dir}",
        "Remove everything: make lab-down",
    ])


def tear_down(prefix: str) -> list[str]:
    """Everything the lab made: processes, namespaces, links, then its configs and logs."""
    removed = Lab(prefix).down()
    run = procs.run_dir(prefix)
    if run.exists():
        shutil.rmtree(run, ignore_errors=True)
        removed.append(str(run))
    return removed


@contextlib.contextmanager
def running(tag: str, config: ScenarioConfig | None = None, templates: Path = CONFIGS_DIR) -> Iterator[Scenario]:
    """A fresh lab (prefix `<tag><6 hex>-`) with the PAT gateway and concentrator started; removed on exit."""
    prefix = f"{tag}{secrets.token_hex(3)}-"
    sc = Scenario(Lab(prefix), templates, config or ScenarioConfig())
    try:
        sc.lab.up()
        sc.start_infrastructure()
        yield sc
    finally:
        sc.stop()
        tear_down(prefix)
