"""The client profile's session keys: fail_closed, rekey_margin, phase1_lifetime / phase2_lifetime."""

from __future__ import annotations

from pathlib import Path

import pytest

from natt_daemons.client import config as client_config
from natt_daemons.common.config import ConfigError

pytestmark = pytest.mark.unit
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE = '[client]\nconcentrator = "198.51.100.50"\ngroup = "g"\npsk = "k"\n'


def _load(tmp_path: Path, body: str) -> client_config.ClientSettings:
    p = tmp_path / "k.toml"
    p.write_text(BASE + body)
    return client_config.load(p)


def test_defaults(tmp_path: Path) -> None:
    s = _load(tmp_path, "")
    assert s.fail_closed is True and s.reconnect is True
    assert s.profile.timers.rekey_margin == 0.1
    assert {x.lifetime for x in s.profile.phase1} == {86400} and {x.lifetime for x in s.profile.phase2} == {28800}


def test_shipped_profiles_say_it(tmp_path: Path) -> None:
    for name in ("client1", "client2"):
        s = client_config.load(CONFIGS / f"{name}.toml")
        assert s.fail_closed is True and s.profile.timers.rekey_margin == 0.1
        assert s.profile.phase1[0].lifetime == 86400 and s.profile.phase2[0].lifetime == 28800


def test_values_reach_the_profile(tmp_path: Path) -> None:
    s = _load(tmp_path, "fail_closed = false\nrekey_margin = 0.25\nphase1_lifetime = 120\nphase2_lifetime = 30\n")
    assert s.fail_closed is False
    assert s.profile.timers.rekey_margin == 0.25
    assert {x.lifetime for x in s.profile.phase1} == {120} and {x.lifetime for x in s.profile.phase2} == {30}
    # The other timers are still read alongside.
    s = _load(tmp_path, "rekey_margin = 0\ndpd_interval = 12\n")
    assert s.profile.timers.rekey_margin == 0.0 and s.profile.timers.dpd_interval == 12.0
    assert _load(tmp_path, "rekey_margin = 0.5\n").profile.timers.rekey_margin == 0.5


@pytest.mark.parametrize(("body", "words"), [
    ('fail_closed = "yes"\n', "'fail_closed' must be bool"),
    ("fail_closed = 1\n", "'fail_closed' must be bool"),
    ("rekey_margin = 0.6\n", "rekey_margin 0.6 is outside 0..0.5"),
    ("rekey_margin = -0.1\n", "rekey_margin -0.1 is outside 0..0.5"),
    ('rekey_margin = "10%"\n', "'rekey_margin' must be a number"),
    ("rekey_margin = true\n", "'rekey_margin' must be a number"),
    ("phase1_lifetime = 59\n", "phase1_lifetime 59 is outside 60..86400"),
    ("phase1_lifetime = 86401\n", "phase1_lifetime 86401 is outside 60..86400"),
    ("phase2_lifetime = 29\n", "phase2_lifetime 29 is outside 30..86400"),
    ("phase2_lifetime = true\n", "phase2_lifetime True is outside"),
    ('phase2_lifetime = "1h"\n', "'phase2_lifetime' must be int"),
])
def test_bad_values_say_where_and_why(tmp_path: Path, body: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(".", r"\.")) as e:
        _load(tmp_path, body)
    assert "k.toml [client]" in str(e.value)
