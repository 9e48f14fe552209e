"""Mode Config address pools: one per group, addresses handed out and taken back."""

from __future__ import annotations

import ipaddress

from natt.errors import PoolExhausted


class AddressPool:
    def __init__(self, network: str, exclude: tuple[str, ...] = ()) -> None:
        self.network = ipaddress.IPv4Network(network, strict=False)
        self._excluded = {ipaddress.IPv4Address(a) for a in exclude}
        self._hosts = self.network.hosts()
        self._free: list[ipaddress.IPv4Address] = []
        self._in_use: dict[ipaddress.IPv4Address, str] = {}
        self._by_owner: dict[str, ipaddress.IPv4Address] = {}

    @property
    def netmask(self) -> str:
        return str(self.network.netmask)

    def allocate(self, owner: str) -> str:
        """The owner's previous address if it still holds one, else the lowest free one."""
        if owner in self._by_owner:
            return str(self._by_owner[owner])
        addr = self._free.pop(0) if self._free else self._next_fresh()
        self._in_use[addr] = owner
        self._by_owner[owner] = addr
        return str(addr)

    def _next_fresh(self) -> ipaddress.IPv4Address:
        for addr in self._hosts:
            if addr not in self._excluded and addr not in self._in_use:
                return addr
        raise PoolExhausted(f"address pool {self.network} exhausted")

    def release(self, address: str) -> None:
        addr = ipaddress.IPv4Address(address)
        owner = self._in_use.pop(addr, None)
        if owner is not None:
            self._by_owner.pop(owner, None)
            self._free.append(addr)
            self._free.sort()

    def in_use(self) -> dict[str, str]:
        return {str(a): o for a, o in self._in_use.items()}
