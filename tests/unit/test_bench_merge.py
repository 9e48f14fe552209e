"""Several load-generator processes' results become one (sums, and percentiles over all set-up times)."""

from __future__ import annotations

import pytest

from natt_daemons.bench.handshakes import _merge

pytestmark = pytest.mark.unit


def _part(times: list[float], failures: dict[str, int], wall: float, lost: int = 0) -> dict:
    return {"clients": len(times) + sum(failures.values()), "attempted": len(times) + sum(failures.values()),
            "established": len(times), "setup_times": times, "failures": failures, "ramp_wall_s": wall,
            "hold_s": 300.0, "lost_during_hold": lost, "lost_reasons": {"DPD": lost} if lost else {},
            "generator_cpu_s_ramp": 1.5, "generator_retransmits": 2}


def test_merge_sums_and_takes_percentiles_over_everything() -> None:
    a = _part([0.1] * 90, {"timeout": 2}, wall=10.0)
    b = _part([1.0] * 9 + [5.0], {"timeout": 1, "INVALID-ID": 3}, wall=20.0, lost=1)
    m = _merge("natt", [a, b])
    assert m["established"] == 100 and m["clients"] == 106 and m["generators"] == 2
    assert m["setups_per_second"] == 5.0, "established over the slowest generator's ramp"
    assert m["failures"] == {"timeout": 3, "INVALID-ID": 3}
    assert m["setup_p50_s"] == 0.1 and m["setup_p99_s"] == 5.0
    assert m["lost_during_hold"] == 1 and m["lost_reasons"] == {"DPD": 1}
    assert m["generator_cpu_s_ramp"] == 3.0 and m["generator_retransmits"] == 4
