"""What every payload shares: the type it is carried as, and body encode/decode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Self

from natt.wire.buffer import Reader, Writer


@dataclass
class Payload:
    """A payload body. The 4-byte generic header is the message codec's business."""

    TYPE: ClassVar[int]
    # The body exactly as received (hashes are computed over received bytes, not re-encodings).
    raw: bytes = field(default=b"", init=False, repr=False, compare=False)

    @property
    def payload_type(self) -> int:
        return self.TYPE

    def encode_body(self, w: Writer) -> None:
        raise NotImplementedError

    @classmethod
    def decode_body(cls, r: Reader, payload_type: int) -> Self:
        raise NotImplementedError

    def body(self) -> bytes:
        w = Writer()
        self.encode_body(w)
        return w.getvalue()
