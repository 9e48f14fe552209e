"""The narrow interface the exchange tasks get: what a task may ask of the endpoint that runs it.

A task (phase1.AggressiveMode, transaction.Xauth, quick.QuickMode, ...) builds and reads its own
messages. It never sees the SA database, the timer heap or the sockets' side: it sends through
`send`/`send_hashed`, reports through `emit`, reads the configuration through `policy`/`group_for`,
asks for credentials to be checked with `check_credentials`, and ends an SA with `remove_sa`.
IkeEndpoint implements this protocol.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Protocol

from natt.ike.config import ConcentratorPolicy, GroupPolicy
from natt.ike.events import Cause, IkeEvent
from natt.ike.ikesa import Datagram, IkeSA
from natt.ike.pool import AddressPool
from natt.ike.rules import Kind
from natt.ike.throttle import LoginThrottle
from natt.wire.message import Message
from natt.wire.payloads import Payload


class IkeContext(Protocol):
    now: float
    rng: Callable[[int], bytes]
    local_address: str
    natt_port: int
    policy: ConcentratorPolicy | None
    stats: Counter[str]
    throttle: LoginThrottle
    # Our inbound SPI → (IKE SA id, message ID) of a Quick Mode whose message 2 we sent, awaiting HASH(3): the
    # peer's ESP on that SPI may complete it (quick.commit_by_esp).
    awaiting_commit: dict[int, tuple[int, int]]

    def emit(self, event: IkeEvent) -> None: ...

    def send(self, sa: IkeSA, exchange: int, message_id: int, payloads: list[Payload], *, encrypt: bool,
             expect: str | None = None, in_reply_to: bytes | None = None) -> Datagram: ...

    def send_hashed(self, sa: IkeSA, exchange: int, message_id: int, payloads: list[Payload], *,
                    expect: str | None = None, in_reply_to: bytes | None = None) -> Datagram: ...

    def queue(self, datagram: Datagram) -> None: ...

    def new_message_id(self, sa: IkeSA) -> int: ...

    def answered(self, sa: IkeSA, message_id: int) -> None: ...

    def float_ports(self, sa: IkeSA) -> None: ...

    def group_for(self, identity: str) -> tuple[GroupPolicy, bool]: ...

    def pool_for(self, group: GroupPolicy) -> AddressPool: ...

    def check_credentials(self, sa: IkeSA, user: str, password: str) -> None: ...

    def phase1_done(self, sa: IkeSA) -> None: ...

    def session_established(self, sa: IkeSA) -> None: ...

    def sessions_of(self, user: str) -> list[IkeSA]: ...

    def admit_login(self, sa: IkeSA) -> str | None: ...

    def adopt_session(self, sa: IkeSA) -> bool: ...

    def session_peers(self, sa: IkeSA) -> list[IkeSA]: ...

    def remove_sa(self, sa: IkeSA, reason: str, cause: Cause = Cause.OTHER) -> None: ...

    def delete_sa(self, sa_id: int, now: float, reason: str = "administrator request",
                  cause: Cause = Cause.ADMIN, *, tell: bool = False) -> None: ...


class Task(Protocol):
    """One exchange's handling of the messages it owns (strongSwan's ikev1 tasks: process_r/process_i).

    verify: the message's HASH (or HASH_I/HASH_R) and that it answers something this SA asked; raises a
    NattError and changes nothing. process: runs only after verify passed and the endpoint committed the IV
    chain, liveness and peer address; it builds the replies and moves the SA's state.
    """

    def verify(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind) -> None: ...

    def process(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind, data: bytes) -> None: ...
