"""Moves bytes, time and events between the IKE core and the daemon's sockets.

The core is sans-IO; this is the whole of its I/O: receive → core → send, and one timer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

import asyncio_dgram

from natt.ike.endpoint import IkeEndpoint
from natt.ike.events import IkeEvent
from natt_daemons.common.sockets import big_buffers

log = logging.getLogger(__name__)


class IkeDriver:
    def __init__(self, endpoint: IkeEndpoint, on_event: Callable[[IkeEvent], None]) -> None:
        self.endpoint = endpoint
        self.on_event = on_event
        self.senders: dict[int, Callable[[bytes, tuple[str, int]], None]] = {}
        self._closers: list[Callable[[], None]] = []
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.send_errors = 0

    def now(self) -> float:
        return self._loop.time()

    async def listen(self, address: str, port: int) -> int:
        """An IKE-only port (500, or 0 for any): an asyncio-dgram stream read by its own task; the bound port."""
        stream = await asyncio_dgram.bind((address, port))
        big_buffers(stream.socket)  # thousands of clients starting at once must not overflow UDP 500
        port = stream.sockname[1]
        pending: set[asyncio.Task[None]] = set()

        def send(data: bytes, addr: tuple[str, int]) -> None:
            # The stream's send is a coroutine; tasks run in creation order, so datagrams keep theirs.
            task = asyncio.ensure_future(stream.send(data, addr))
            pending.add(task)
            task.add_done_callback(self._sent)
            task.add_done_callback(pending.discard)

        self.senders[port] = send
        self._closers.append(stream.close)
        self._tasks.append(asyncio.create_task(self._recv_loop(stream, port), name=f"ike-{port}"))
        return port

    def _sent(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            self.send_errors += 1
            log.warning("IKE send failed: %s", task.exception())

    def attach(self, port: int, sock: socket.socket) -> None:
        """A socket whose reading belongs to someone else (4500: the ESP fast path demuxes it)."""

        def send(data: bytes, addr: tuple[str, int]) -> None:
            sock.sendto(data, addr)

        self.senders[port] = send
        self._closers.append(sock.close)

    async def _recv_loop(self, stream: asyncio_dgram.aio.DatagramServer, port: int) -> None:
        while True:
            try:
                data, addr = await stream.recv()
            except asyncio_dgram.TransportClosed:
                return
            self.feed(data, addr, port)

    def feed(self, data: bytes, addr: tuple[str, int], local_port: int) -> None:
        try:
            self.endpoint.receive_datagram(data, (addr[0], addr[1]), local_port, self.now())
        except Exception:  # the core raises typed errors internally; anything else is a bug to log, not die on
            log.exception("IKE core failed on a datagram from %s", addr)
        self.flush()

    def esp_peer_moved(self, sa_id: int, addr: tuple[str, int]) -> None:
        """The data path saw authenticated NAT-T ESP from a new address: the core decides whether the peer moved
        (its PortFloated then moves the data path's outbound SAs)."""
        self.endpoint.esp_peer_moved(sa_id, addr, self.now())
        self.flush()

    def unknown_esp(self, spi: int, addr: tuple[str, int], local_port: int) -> None:
        """ESP for an SPI the data path does not know: the core may send an INVALID-SPI hint (rate-limited)."""
        self.endpoint.unknown_esp(spi, addr, local_port, self.now())
        self.flush()

    def flush(self) -> None:
        # Event handlers may call back into the core (a logout deletes an SA), so go round until quiet.
        for _ in range(8):
            if not self._flush_once():
                break
        self._reschedule()

    def _flush_once(self) -> bool:
        did = False
        for d in self.endpoint.datagrams_to_send():
            did = True
            send = self.senders.get(d.local_port)
            if send is None:
                log.warning("no socket for local port %d", d.local_port)
                continue
            try:
                send(d.data, d.remote)
            except OSError as e:
                self.send_errors += 1
                log.warning("send to %s:%d failed: %s", d.remote[0], d.remote[1], e)
        while (event := self.endpoint.next_event()) is not None:
            did = True
            try:
                self.on_event(event)
            except Exception:
                log.exception("handling %s failed", type(event).__name__)
        return did

    def _reschedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        when = self.endpoint.get_timer()
        if when is not None:
            self._timer = self._loop.call_at(max(when, self.now()), self._fire)

    def _fire(self) -> None:
        self._timer = None
        try:
            self.endpoint.handle_timer(self.now())
        except Exception:
            log.exception("IKE timer handling failed")
        self.flush()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        for t in self._tasks:
            t.cancel()
        for close in self._closers:
            close()
