"""Moves bytes, time and events between the IKE core and the daemon's sockets.

The core is sans-IO; this is the whole of its I/O: receive → core → send, and one timer.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable

from natt.ike.endpoint import IkeEndpoint
from natt.ike.events import IkeEvent
from natt_daemons.common.sockets import bind_udp

log = logging.getLogger(__name__)

MAX_BATCH = 256  # datagrams read from one IKE socket per wake-up (the data path's budget too)
RECV_SIZE = 65535
READ_BUDGET = 0.004  # seconds of IKE work per wake-up of one socket, whatever the batch
# ... and of the socket shared with ESP (4500), for messages naming no IKE SA held here: clients start on 500 and
# float, so strangers there are few unless it is a flood, and every millisecond spent on them is one the socket is
# not read in, and the kernel sheds ESP with the flood (the lab's 4500 flood: a third of the pings lost at 4 ms).
SHARED_BUDGET = 0.001


class IkeDriver:
    def __init__(self, endpoint: IkeEndpoint, on_event: Callable[[IkeEvent], None]) -> None:
        self.endpoint = endpoint
        self.on_event = on_event
        self.senders: dict[int, Callable[[bytes, tuple[str, int]], None]] = {}
        self._closers: list[Callable[[], None]] = []
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self.send_errors = 0
        self.datagrams = 0  # read from the IKE-only ports
        self.budget_stops = 0  # wake-ups that left datagrams waiting (or shed them) because the time budget was spent
        self.datagrams_shared = 0  # IKE read from a socket shared with ESP (4500) and handed to the core
        self.shed = 0  # ... and shed unread by the core, the budget spent (never those of an SA held here)

    def now(self) -> float:
        return self._loop.time()

    async def listen(self, address: str, port: int) -> int:
        """An IKE-only port (500, or 0 for any); the bound port.

        Read as the data path reads 4500: up to MAX_BATCH datagrams a wake-up straight from the non-blocking
        socket. (It was an asyncio-dgram stream: one datagram per loop turn through a future, with no way to bound
        the work per wake-up; in the lab flood it drained 51,000 first messages a second, this 54,000 to
        69,000.) The budget keeps 4500 (ESP and the established peers' IKE), the TUN and the timers served
        whatever arrives on 500."""
        sock = bind_udp(address, port)  # big buffers: thousands of clients starting at once must not overflow 500
        port = sock.getsockname()[1]

        def send(data: bytes, addr: tuple[str, int]) -> None:
            try:
                sock.sendto(data, addr)
            except BlockingIOError:
                self.send_errors += 1  # the send buffer is full (a flood's answers): dropped, as UDP may be
            except OSError as e:
                self.send_errors += 1
                log.warning("IKE send to %s:%d failed: %s", addr[0], addr[1], e)

        self.senders[port] = send
        self._loop.add_reader(sock.fileno(), self._readable, sock, port)

        def close() -> None:
            self._loop.remove_reader(sock.fileno())
            sock.close()

        self._closers.append(close)
        return port

    def _readable(self, sock: socket.socket, port: int) -> None:
        # A count and a time budget: each admitted first message costs a DH (about 0.8 ms), so a batch of them
        # must not hold the loop; what is left waits in the socket (and past its buffer the kernel sheds it).
        deadline = time.perf_counter() + READ_BUDGET
        for _ in range(MAX_BATCH):
            if time.perf_counter() > deadline:
                self.budget_stops += 1
                break
            try:
                data, addr = sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as e:  # an ICMP error queued on the socket; the next read goes on
                log.debug("IKE socket %d: %s", port, e)
                continue
            self.datagrams += 1
            self._receive(data, addr, port)
        self.flush()

    def attach(self, port: int, sock: socket.socket) -> None:
        """A socket whose reading belongs to someone else (4500: the ESP fast path demuxes it)."""

        def send(data: bytes, addr: tuple[str, int]) -> None:
            sock.sendto(data, addr)

        self.senders[port] = send
        self._closers.append(sock.close)

    def _receive(self, data: bytes, addr: tuple[str, int], local_port: int) -> None:
        try:
            self.endpoint.receive_datagram(data, (addr[0], addr[1]), local_port, self.now())
        except Exception:  # the core raises typed errors internally; anything else is a bug to log, not die on
            log.exception("IKE core failed on a datagram from %s", addr)

    def feed(self, data: bytes, addr: tuple[str, int], local_port: int) -> None:
        self._receive(data, addr, local_port)
        self.flush()

    def feed_batch(self, batch: list[tuple[bytes, tuple[str, int]]], local_port: int) -> None:
        """The IKE datagrams one read of a shared socket brought (4500: ESP comes on it too, and the data path
        serves that first). Those of IKE SAs held here go first, whatever the load; the rest while SHARED_BUDGET
        lasts, and what is left then is shed (counted), as the kernel sheds a full buffer, so that a flood of first
        messages on 4500 cannot hold up the ESP and the established peers' IKE read with it."""
        deadline = time.perf_counter() + SHARED_BUDGET
        known: list[tuple[bytes, tuple[str, int]]] = []
        rest: list[tuple[bytes, tuple[str, int]]] = []
        for item in batch:
            (known if self.endpoint.of_known_sa(item[0], local_port) else rest).append(item)
        for i, (data, addr) in enumerate(known + rest):
            if i >= len(known) and time.perf_counter() > deadline:
                self.shed += len(batch) - i
                self.budget_stops += 1
                break
            self.datagrams_shared += 1
            self._receive(data, addr, local_port)
        self.flush()

    def esp_peer_moved(self, sa_id: int, addr: tuple[str, int]) -> None:
        """The data path saw authenticated NAT-T ESP from a new address: the core decides whether the peer moved
        (its PortFloated then moves the data path's outbound SAs)."""
        self.endpoint.esp_peer_moved(sa_id, addr, self.now())
        self.flush()

    def unknown_esp(self, spi: int, addr: tuple[str, int], local_port: int, packet: bytes) -> bool:
        """ESP for an SPI the data path does not know: it may complete a Quick Mode whose HASH(3) was lost (True:
        the flush below has installed the pair, the data path may take the packet again), or the core may send an
        INVALID-SPI hint (rate-limited)."""
        committed = self.endpoint.unknown_esp(spi, addr, local_port, self.now(), packet)
        self.flush()
        return committed

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
        when = self.endpoint.get_timer()
        if when is not None:
            when = max(when, self.now())  # a deadline already past is due now
        if self._timer is not None:
            if when is not None and self._timer.when() <= when:
                return  # armed no later than needed (an early fire only looks and files again). Never re-armed
                # later: a stream of datagrams, each one rescheduling, would push a due timer off for ever.
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = self._loop.call_at(when, self._fire)

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
        for close in self._closers:
            close()
