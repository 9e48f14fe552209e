"""The anti-replay sliding window of RFC 4303 section 3.4.3 (32-bit sequence numbers, no ESN).

Python ints are arbitrary-precision bitmaps, so the window is one int shifted as the top
of the window moves (the RFC 4303 appendix A shape without the block array): bit i set
means sequence number `top - i` has been received.
"""

from __future__ import annotations

from natt.errors import EspReplay

__all__ = ["ReplayWindow"]


class ReplayWindow:
    """`check` before the ICV is verified (cheap refusal); `update` only after it is."""

    __slots__ = ("_mask", "bitmap", "size", "top")

    def __init__(self, size: int = 128) -> None:
        if size < 1:
            raise ValueError(f"replay window size must be positive, not {size}")
        self.size = size
        self._mask = (1 << size) - 1
        self.top = 0  # highest sequence number accepted so far; 0 = none yet
        self.bitmap = 0

    def check(self, seq: int) -> None:
        """Raise EspReplay for seq 0, a number left of the window, or one already received."""
        if seq > self.top:
            return
        if seq == 0:
            # RFC 4303 3.3.3: the first packet sent has sequence number 1; 0 is never valid.
            raise EspReplay("sequence number 0")
        offset = self.top - seq
        if offset >= self.size:
            raise EspReplay(f"sequence number {seq} is left of the window (top {self.top})")
        if (self.bitmap >> offset) & 1:
            raise EspReplay(f"sequence number {seq} was already received")

    def update(self, seq: int) -> None:
        """Mark seq received, sliding the window right when it is the new highest."""
        if seq > self.top:
            shift = seq - self.top
            # A jump past the whole window forgets it; never shift a huge int into existence.
            self.bitmap = 1 if shift >= self.size else ((self.bitmap << shift) | 1) & self._mask
            self.top = seq
        elif self.top - seq < self.size:
            self.bitmap |= 1 << (self.top - seq)
