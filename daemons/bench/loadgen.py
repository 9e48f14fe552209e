"""Handshake load generator: N simulated VPN clients in one process, each doing the seed's whole flow.

Each simulated client is a real initiator (natt's own IkeEndpoint) with its own two UDP sockets, so behind the
PAT gateway every one gets its own translations, as real clients behind one PAT do: Aggressive Mode with
NAT-D, float to 4500, XAUTH, Mode Config, two Quick Modes. One selector loop and one timer heap drive them all.
It then holds the sessions for a while (keepalives and DPD run) and reports which were lost.

Run it inside the client namespace: `python -m natt_daemons.bench.loadgen --out result.json ...`.
"""

from __future__ import annotations

import contextlib
import heapq
import json
import resource
import selectors
import socket
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import click

from natt.ike import suites
from natt.ike.config import ClientProfile, Timers
from natt.ike.endpoint import IkeEndpoint
from natt.ike.events import ChildSaUp, ExchangeFailed, IkeSaDown, MessageSent

EXPECTED_CHILDREN = 2  # the seed's two Quick Modes: to the concentrator itself and to 0.0.0.0/0
SETUP_TIMEOUT = 60.0


@dataclass
class Host:
    """One simulated source: an initiator with its IKE and NAT-T sockets, carrying `per_host` clients (one,
    unless the file descriptor limit says otherwise; then a few clients share a source port, as clients
    behind a second NAT would)."""

    index: int
    endpoint: IkeEndpoint
    socks: dict[int, socket.socket]
    clients: dict[int, SimClient] = field(default_factory=dict)  # by SA id


@dataclass
class SimClient:
    index: int
    host: Host
    sa_id: int = 0
    started: float = 0.0
    up_at: float | None = None
    children: int = 0
    failed: str | None = None  # why it failed or was lost

    @property
    def pending(self) -> bool:
        return self.up_at is None and self.failed is None


@dataclass
class Result:
    target: str
    clients: int
    established: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    setup_seconds: list[float] = field(default_factory=list)
    ramp_wall: float = 0.0
    hold_seconds: float = 0.0
    lost_during_hold: int = 0
    lost_reasons: Counter[str] = field(default_factory=Counter)
    generator_cpu_ramp: float = 0.0
    retransmits: int = 0
    attempted: int = 0

    def summary(self) -> dict[str, object]:
        times = sorted(self.setup_seconds)

        def pct(p: float) -> float | None:
            return round(times[min(len(times) - 1, int(p * len(times)))], 4) if times else None

        return {
            "target": self.target,
            "clients": self.clients,
            "attempted": self.attempted,
            "established": self.established,
            "setups_per_second": round(self.established / self.ramp_wall, 1) if self.ramp_wall else 0.0,
            "setup_p50_s": pct(0.50),
            "setup_p99_s": pct(0.99),
            "failures": dict(self.failures),
            "ramp_wall_s": round(self.ramp_wall, 2),
            "hold_s": self.hold_seconds,
            "lost_during_hold": self.lost_during_hold,
            "lost_reasons": dict(self.lost_reasons),
            "generator_cpu_s_ramp": round(self.generator_cpu_ramp, 2),
            "generator_retransmits": self.retransmits,
            "setup_times": [round(t, 4) for t in times],  # for merging several generators' percentiles
        }


class LoadGenerator:
    def __init__(self, profile: ClientProfile, local: str, count: int, concurrency: int, per_host: int = 1) -> None:
        self.profile = profile
        self.local = local
        self.count = count
        self.concurrency = concurrency
        self.per_host = per_host
        self.hosts: list[Host] = []
        self.sel = selectors.DefaultSelector()
        self.clients: list[SimClient] = []
        self.timers: list[tuple[float, int]] = []
        self.due: dict[int, float] = {}
        self.inflight = 0
        self.pending: dict[int, SimClient] = {}  # handshakes under way
        self.retransmits = 0

    # -- one simulated client -----------------------------------------------------------------

    def _host(self) -> Host:
        if self.hosts and len(self.hosts[-1].clients) < self.per_host:
            return self.hosts[-1]
        socks: dict[int, socket.socket] = {}
        ports = []
        for _ in range(2):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind((self.local, 0))
            s.setblocking(False)
            port = s.getsockname()[1]
            socks[port] = s
            ports.append(port)
        host = Host(len(self.hosts), IkeEndpoint(self.local, ike_port=ports[0], natt_port=ports[1]), socks)
        self.hosts.append(host)
        for port, s in socks.items():
            self.sel.register(s, selectors.EVENT_READ, (host, port))
        return host

    def _new_client(self, now: float) -> SimClient:
        host = self._host()
        c = SimClient(len(self.clients), host)
        self.clients.append(c)
        c.started = now
        self.pending[c.index] = c
        c.sa_id = host.endpoint.connect(self.profile, now, local_port=host.endpoint.ike_port)
        host.clients[c.sa_id] = c
        self.inflight += 1
        self._flush(host, now)
        return c

    def _flush(self, host: Host, now: float) -> None:
        ep = host.endpoint
        for d in ep.datagrams_to_send():
            with contextlib.suppress(OSError, KeyError):  # a lost datagram is retransmitted by one side
                host.socks[d.local_port].sendto(d.data, d.remote)
        while (e := ep.next_event()) is not None:
            if isinstance(e, MessageSent) and e.retransmit:
                self.retransmits += 1
            c = host.clients.get(e.sa_id)
            if c is None:
                continue
            if isinstance(e, ChildSaUp):
                c.children += 1
                if c.children == EXPECTED_CHILDREN and c.up_at is None and c.failed is None:
                    c.up_at = now
                    self.inflight -= 1
                    self.pending.pop(c.index, None)
            elif isinstance(e, IkeSaDown) or (isinstance(e, ExchangeFailed) and e.fatal and c.up_at is None):
                self._fail(c, e.reason)
        when = ep.get_timer()
        if when is not None and self.due.get(host.index) != when:
            self.due[host.index] = when
            heapq.heappush(self.timers, (when, host.index))

    def _fail(self, c: SimClient, reason: str) -> None:
        if c.failed is None:
            if c.up_at is None:
                self.inflight -= 1
                self.pending.pop(c.index, None)
            c.failed = _reason(reason)

    # -- the loop ---------------------------------------------------------------------------------

    def _step(self, until: float) -> None:
        now = time.monotonic()
        timeout = max(0.0, min(until, self.timers[0][0] if self.timers else until) - now)
        for key, _ in self.sel.select(min(timeout, 0.05)):
            host, port = key.data
            s = key.fileobj
            for _ in range(64):
                try:
                    data, addr = s.recvfrom(65535)  # type: ignore[union-attr]
                except BlockingIOError:
                    break
                except OSError:
                    break
                now = time.monotonic()
                host.endpoint.receive_datagram(data, addr, port, now)
            self._flush(host, time.monotonic())
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            when, index = heapq.heappop(self.timers)
            if self.due.get(index) != when:
                continue
            del self.due[index]
            host = self.hosts[index]
            host.endpoint.handle_timer(now)
            self._flush(host, now)

    def ramp(self, progress: bool, max_seconds: float) -> float:
        """Start every client (at most `concurrency` handshakes at once) and wait for each to end; no new
        handshake starts after `max_seconds` (the rest are reported as not attempted)."""
        start = time.monotonic()
        last_draw = 0.0
        while True:
            now = time.monotonic()
            if now - start > max_seconds:
                self.count = len(self.clients)
            while len(self.clients) < self.count and self.inflight < self.concurrency:
                self._new_client(now)
            for c in [c for c in self.pending.values() if now - c.started > SETUP_TIMEOUT]:
                self._fail(c, "timeout")
            if len(self.clients) == self.count and self.inflight <= 0:
                break
            self._step(now + 0.05)
            if progress and now - last_draw > 0.5:
                last_draw = now
                self._draw(now - start)
        if progress:
            self._draw(time.monotonic() - start)
            sys.stderr.write("\n")
        return time.monotonic() - start

    def hold(self, seconds: float, progress: bool) -> Counter[str]:
        alive_before = {c.index for c in self.clients if c.up_at is not None and c.failed is None}
        end = time.monotonic() + seconds
        last_draw = 0.0
        while (now := time.monotonic()) < end:
            self._step(min(end, now + 0.5))
            if progress and now - last_draw > 1.0:
                last_draw = now
                lost = sum(1 for i in alive_before if self.clients[i].failed is not None)
                sys.stderr.write(f"\rholding {len(alive_before)} sessions: {end - now:5.0f} s left, {lost} lost ")
                sys.stderr.flush()
        if progress:
            sys.stderr.write("\n")
        return Counter(self.clients[i].failed or "" for i in alive_before if self.clients[i].failed is not None)

    def close(self, delete: bool) -> None:
        """Log every session out (DELETE notifies), then close the sockets."""
        now = time.monotonic()
        for c in self.clients:
            if delete and c.failed is None and c.up_at is not None:
                c.host.endpoint.delete_sa(c.sa_id, now, "load generator done")
                self._flush(c.host, now)
        for host in self.hosts:
            for s in host.socks.values():
                self.sel.unregister(s)
                s.close()
        self.sel.close()

    def _draw(self, elapsed: float) -> None:
        up = sum(1 for c in self.clients if c.up_at is not None and c.failed is None)
        failed = sum(1 for c in self.clients if c.failed is not None)
        width = 30
        filled = int(width * (up + failed) / max(1, self.count))
        rate = up / elapsed if elapsed > 0 else 0.0
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {up}/{self.count} up, {failed} failed, "
                         f"{rate:6.1f} set-ups/s ")
        sys.stderr.flush()


def _reason(text: str) -> str:
    """A failure reason without per-session details (numbers), so that they count together."""
    words = [w for w in text.replace(":", " ").split() if not any(ch.isdigit() for ch in w)]
    return " ".join(words[:8]) or text


def run(profile: ClientProfile, local: str, count: int, concurrency: int, hold: float, target: str,
        progress: bool = True, ramp_done: Path | None = None, max_ramp: float = 3600.0) -> Result:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = 2 * count + 256
    if soft < need:
        soft = min(need, hard)  # raising the hard limit needs CAP_SYS_RESOURCE, which a container may lack
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    per_host = max(1, -(-2 * count // max(2, soft - 256)))
    if per_host > 1 and progress:
        sys.stderr.write(f"{soft} file descriptors: {per_host} simulated clients share each source port\n")
    gen = LoadGenerator(profile, local, count, concurrency, per_host)
    result = Result(target, count)
    try:
        cpu0 = time.process_time()
        result.ramp_wall = gen.ramp(progress, max_ramp)
        result.attempted = len(gen.clients)
        result.generator_cpu_ramp = time.process_time() - cpu0
        result.retransmits = gen.retransmits
        for c in gen.clients:
            if c.up_at is not None and c.failed is None:
                result.established += 1
                result.setup_seconds.append(c.up_at - c.started)
            elif c.failed is not None:
                result.failures[c.failed] += 1
        if ramp_done is not None:
            ramp_done.write_text(json.dumps(result.summary()))
        if hold > 0:
            result.hold_seconds = hold
            result.lost_reasons = gen.hold(hold, progress)
            result.lost_during_hold = sum(result.lost_reasons.values())
    finally:
        gen.close(delete=True)
    return result


@click.command()
@click.option("--peer", required=True, help="the concentrator's address")
@click.option("--local", required=True, help="this namespace's address")
@click.option("--group", default="ciscovpn", show_default=True)
@click.option("--psk-file", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--user", default="vpnclient1", show_default=True)
@click.option("--password-file", type=click.Path(exists=True, dir_okay=False), required=True)
@click.option("--phase1", default="aes256-sha1-modp1024", show_default=True)
@click.option("--phase2", default="aes256-sha1", show_default=True)
@click.option("--count", "-n", default=100, show_default=True)
@click.option("--concurrency", default=64, show_default=True, help="handshakes in flight at once")
@click.option("--hold", default=0.0, show_default=True, help="seconds to hold the sessions afterwards")
@click.option("--max-ramp", default=3600.0, show_default=True, help="no new handshake after this many seconds")
@click.option("--keepalive", default=20.0, show_default=True)
@click.option("--dpd", default=30.0, show_default=True)
@click.option("--target", default="concentrator", show_default=True, help="a label for the report")
@click.option("--out", type=click.Path(dir_okay=False), required=True, help="JSON result file")
@click.option("--ramp-done", type=click.Path(dir_okay=False), help="written when every handshake has ended")
@click.option("--progress/--no-progress", default=True)
def main(peer: str, local: str, group: str, psk_file: str, user: str, password_file: str, phase1: str,
         phase2: str, count: int, concurrency: int, hold: float, max_ramp: float, keepalive: float, dpd: float,
         target: str, out: str, ramp_done: str | None, progress: bool) -> None:
    profile = ClientProfile(
        peer=peer, group=group, psk=Path(psk_file).read_text().strip().encode(), username=user,
        password=Path(password_file).read_text().strip(), mode="aggressive",
        phase1=(suites.phase1(phase1),), phase2=(suites.phase2(phase2),),
        timers=Timers(keepalive_interval=keepalive, dpd_interval=dpd),
        # Every simulated client logs in as the same user from the same public address: INITIAL-CONTACT
        # would tell the concentrator to drop the others.
        send_initial_contact=False,
    )
    result = run(profile, local, count, concurrency, hold, target, progress, Path(ramp_done) if ramp_done else None,
                 max_ramp)
    Path(out).write_text(json.dumps(result.summary(), indent=2))


if __name__ == "__main__":
    main()
