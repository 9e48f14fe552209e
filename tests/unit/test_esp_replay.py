"""The anti-replay window of RFC 4303 section 3.4.3 (no ESN)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natt.errors import EspReplay
from natt.esp import ReplayWindow

pytestmark = pytest.mark.unit


def accept(window: ReplayWindow, seq: int) -> None:
    window.check(seq)
    window.update(seq)


def test_zero_is_never_valid() -> None:
    """RFC 4303 3.3.3: the first packet is 1, so sequence number 0 is refused, before and after."""
    window = ReplayWindow()
    with pytest.raises(EspReplay):
        window.check(0)
    accept(window, 1)
    with pytest.raises(EspReplay):
        window.check(0)


def test_duplicate_refused_and_check_does_not_update() -> None:
    """RFC 4303 3.4.3: a duplicate is refused; checking alone (before the ICV) marks nothing."""
    window = ReplayWindow()
    window.check(5)  # say the ICV then failed: no update
    accept(window, 5)
    with pytest.raises(EspReplay):
        window.check(5)


def test_out_of_order_inside_window_accepted_once() -> None:
    """RFC 4303 3.4.3: packets left of the top but inside the window are accepted once."""
    window = ReplayWindow(64)
    accept(window, 100)
    for seq in (99, 37, 60):
        accept(window, seq)
        with pytest.raises(EspReplay):
            window.check(seq)


def test_too_old_refused() -> None:
    """RFC 4303 3.4.3: a number left of the window (top - size or older) is refused."""
    window = ReplayWindow(128)
    accept(window, 200)
    accept(window, 73)  # 200 - 127: the window's left edge
    with pytest.raises(EspReplay):
        window.check(72)
    with pytest.raises(EspReplay):
        window.check(1)


def test_big_jump_forgets_the_window() -> None:
    """A jump beyond the window size resets the bitmap (and never builds a giant int)."""
    window = ReplayWindow(32)
    accept(window, 1)
    accept(window, 0xFFFFFFFF)
    assert window.top == 0xFFFFFFFF
    assert window.bitmap == 1
    accept(window, 0xFFFFFFFF - 31)
    with pytest.raises(EspReplay):
        window.check(0xFFFFFFFF - 32)


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError):
        ReplayWindow(0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(min_value=0, max_value=400), st.booleans()), max_size=300),
    st.sampled_from([32, 64, 128]),
)
def test_matches_a_set_model(arrivals: list[tuple[int, bool]], size: int) -> None:
    """Against the RFC 4303 3.4.3 definition written naively: accept iff seq > 0, never seen,
    and seq > highest - size."""
    window = ReplayWindow(size)
    seen: set[int] = set()
    for seq, icv_ok in arrivals:
        top = max(seen, default=0)
        expected = seq > 0 and seq not in seen and seq > top - size
        try:
            window.check(seq)
            accepted = True
        except EspReplay:
            accepted = False
        assert accepted == expected, (seq, top)
        if accepted and icv_ok:  # when the ICV fails, the window is not updated
            window.update(seq)
            seen.add(seq)
