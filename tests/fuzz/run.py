"""Coverage-guided fuzzing of the datagram entry points with atheris (libFuzzer): `make fuzz`.

    python -m tests.fuzz.run -runs=1000000 [-max_len=600] [corpus_dir]

libFuzzer prints inputs/s (exec/s) and coverage (cov:, ft:) as it goes; at the end this prints the totals.
Any exception that leaves an entry point is a finding: libFuzzer stops and writes the input to crash-*.
"""

from __future__ import annotations

import sys
import time

import atheris

with atheris.instrument_imports(include=["natt"]):
    import natt.esp.sa
    import natt.ike.endpoint  # noqa: F401
    from tests.fuzz.targets import World

_world: World | None = None
_t0 = time.monotonic()


def test_one_input(data: bytes) -> None:
    global _world
    if _world is None:
        _world = World()
    _world.one(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    try:
        atheris.Fuzz()
    finally:
        if _world is not None:
            elapsed = time.monotonic() - _t0
            print(f"natt fuzz: {_world.inputs} inputs in {elapsed:.1f} s ({_world.inputs / elapsed:.0f}/s)",
                  file=sys.stderr)


if __name__ == "__main__":
    main()
