"""Processes the lab starts inside its namespaces, and a pidfile registry to end exactly those.

Every process started here is recorded in <RUN_BASE>/<prefix>/pids/<name>.pid (RUN_BASE is
/run/natt-lab unless NATT_LAB_RUN_DIR says otherwise). The first line is "<pid> <starttime>",
starttime being field 22 of /proc/<pid>/stat (clock ticks since boot); the second line is JSON
with the role, argv and log path. A pid is signalled only while its starttime still matches, and
through a pidfd opened before that check, so a recycled pid is never hit. `make lab-down`'s shell
fallback reads the same first line and makes the same check.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from natt_daemons.lab.topology import Lab

RUN_BASE = Path(os.environ.get("NATT_LAB_RUN_DIR", "/run/natt-lab"))
T = TypeVar("T")

# Processes started by this Python process, so that stopping them also reaps them (no zombies).
_LOCAL: dict[tuple[str, str], Proc] = {}


def run_dir(prefix: str) -> Path:
    return RUN_BASE / prefix


def pid_dir(prefix: str) -> Path:
    return run_dir(prefix) / "pids"


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.1, what: str = "") -> T:
    """Call predicate until it returns something true, and return that; TimeoutError after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        left = deadline - time.monotonic()
        if left <= 0:
            what = what or getattr(predicate, "__name__", "a condition")
            raise TimeoutError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(min(interval, left))


def proc_start_time(pid: int) -> int | None:
    """starttime of a live (not zombie) process, or None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class Proc:
    """A process started in a lab namespace (by this process, or found in the registry)."""

    prefix: str
    name: str
    role: str
    pid: int
    start_time: int
    argv: list[str]
    log_path: str
    popen: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def pidfile(self) -> Path:
        return pid_dir(self.prefix) / f"{self.name}.pid"

    @property
    def alive(self) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        return proc_start_time(self.pid) == self.start_time

    @property
    def returncode(self) -> int | None:
        return self.popen.poll() if self.popen is not None else None

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> bool:
        """Send sig to this process only; False when it is gone (or its pid now belongs to another)."""
        if self.popen is not None:
            if self.popen.poll() is not None:
                return False
            self.popen.send_signal(sig)
            return True
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return False
        except OSError:  # no pidfd support: checked kill, with a tiny reuse window
            if proc_start_time(self.pid) != self.start_time:
                return False
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)
            return True
        try:
            if proc_start_time(self.pid) != self.start_time:
                return False
            signal.pidfd_send_signal(fd, sig)
            return True
        except ProcessLookupError:
            return False
        finally:
            os.close(fd)

    def wait(self, timeout: float) -> bool:
        """Whether the process ended within timeout seconds."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
                return True
            except subprocess.TimeoutExpired:
                return False
        try:
            wait_for(lambda: not self.alive, timeout, 0.05)
            return True
        except TimeoutError:
            return False

    def stop(self, timeout: float = 5.0) -> bool:
        """SIGTERM, then SIGKILL if still running after timeout seconds; unregisters it.

        Returns True when SIGTERM was enough (or it had ended already), False when SIGKILL was needed.
        """
        graceful = True
        if self.signal(signal.SIGTERM) and not self.wait(timeout):
            graceful = False
            self.signal(signal.SIGKILL)
            self.wait(5.0)
        self.unregister()
        return graceful

    def unregister(self) -> None:
        _LOCAL.pop((self.prefix, self.name), None)
        with contextlib.suppress(FileNotFoundError):
            self.pidfile.unlink()
        _tidy(self.prefix)

    def _write_pidfile(self) -> None:
        d = pid_dir(self.prefix)
        for _ in range(3):  # another lab's _tidy may remove RUN_BASE between two levels of mkdir
            with contextlib.suppress(FileNotFoundError):
                d.mkdir(parents=True, exist_ok=True, mode=0o700)
                break
        meta = {"role": self.role, "argv": self.argv, "log": self.log_path}
        tmp = d / f".{self.name}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{self.pid} {self.start_time}\n{json.dumps(meta)}\n")
        tmp.replace(self.pidfile)


def _name_for(prefix: str, role: str, argv: Sequence[str], name: str | None) -> str:
    base = name or f"{role}-{Path(argv[0]).name}"
    base = re.sub(r"[^A-Za-z0-9_.@-]", "_", base)[:64]
    taken = {p.name for p in registered(prefix) if p.alive}
    if name is not None and base in taken:
        raise ValueError(f"a process named {base!r} is running in lab {prefix!r} already")
    candidate, n = base, 1
    while candidate in taken:
        n += 1
        candidate = f"{base}-{n}"
    return candidate


def start(
    lab: Lab,
    role: str,
    argv: Sequence[str],
    log_path: str | os.PathLike[str],
    name: str | None = None,
    env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> Proc:
    """Start argv in prefix+role through `ip netns exec` (which execs it: the pid is the program's own),
    in a new session, stdin from /dev/null, stdout and stderr appended to log_path; and register it."""
    from natt_daemons.lab.topology import LabError

    nsname = lab.ns(role)
    if not os.path.exists(f"/run/netns/{nsname}"):
        raise LabError(f"namespace {nsname} does not exist")
    argv = [str(a) for a in argv]
    pname = _name_for(lab.prefix, role, argv, name)
    log = Path(log_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        popen = subprocess.Popen(
            lab.argv(role, argv),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
            cwd=cwd,
        )
    st = proc_start_time(popen.pid) or 0  # 0 only if it ended at once: it then never matches a live pid
    proc = Proc(lab.prefix, pname, role, popen.pid, st, argv, str(log), popen)
    proc._write_pidfile()
    _LOCAL[(lab.prefix, pname)] = proc
    return proc


def registered(prefix: str) -> list[Proc]:
    """Every process in the registry of a lab, oldest first (alive or not: see Proc.alive)."""
    d = pid_dir(prefix)
    found: list[tuple[float, Proc]] = []
    for path in d.glob("*.pid") if d.is_dir() else ():
        name = path.name[: -len(".pid")]
        local = _LOCAL.get((prefix, name))
        try:
            first, *rest = path.read_text().splitlines()
            pid_s, start_s = first.split()[:2]
            meta: dict[str, Any] = json.loads(rest[0]) if rest else {}
            mtime = path.stat().st_mtime
        except (OSError, ValueError, IndexError):
            continue
        if local is not None and local.pid == int(pid_s):
            found.append((mtime, local))
            continue
        role, argv, log = meta.get("role", "?"), meta.get("argv", []), meta.get("log", "")
        found.append((mtime, Proc(prefix, name, role, int(pid_s), int(start_s), argv, log)))
    return [p for _, p in sorted(found, key=lambda t: t[0])]


def stop_registered(prefix: str, timeout: float = 5.0) -> list[str]:
    """Stop every registered process of a lab, newest first; clear the registry. Returns what was stopped."""
    stopped = []
    for proc in reversed(registered(prefix)):
        if proc.alive:
            how = "stopped" if proc.stop(timeout) else "killed"
            stopped.append(f"{proc.name} (pid {proc.pid}, {how})")
        else:
            proc.unregister()
    _tidy(prefix)
    return stopped


def _tidy(prefix: str) -> None:
    """Remove the registry directories that are empty (logs a caller put there stay, and so do they)."""
    for d in (pid_dir(prefix), run_dir(prefix), RUN_BASE):
        with contextlib.suppress(OSError):
            d.rmdir()
