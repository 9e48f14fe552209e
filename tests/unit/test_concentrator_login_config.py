"""The concentrator's session keys: per group `max_logins` (the VPN 3000's "Simultaneous Logins") and
`login_limit_action`, and `rekey_margin` (phase 2 soft lifetime) in [concentrator]; wrong values are refused with
the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from natt.ike.config import Timers
from natt_daemons.common.config import ConfigError
from natt_daemons.concentrator import config as conc_config

pytestmark = pytest.mark.unit
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE = '[concentrator]\naddress = "198.51.100.50"\n{conc}\n[groups.g]\npsk = "k"\n{group}\n'


def _load(tmp_path: Path, conc: str = "", group: str = "") -> conc_config.ConcentratorSettings:
    p = tmp_path / "c.toml"
    p.write_text(BASE.format(conc=conc, group=group))
    return conc_config.load(p)


def test_defaults_one_login_refused_and_a_tenth(tmp_path: Path) -> None:
    s = _load(tmp_path)
    g = s.policy.groups["g"]
    assert (g.max_logins, g.login_limit_action) == (1, "refuse")
    assert s.policy.timers.rekey_margin == Timers().rekey_margin == 0.1


def test_values_reach_the_policy_and_keep_the_other_timers(tmp_path: Path) -> None:
    s = _load(tmp_path, "rekey_margin = 0.25\nkeepalive_interval = 9\ndpd_interval = 15",
              'max_logins = 3\nlogin_limit_action = "replace"')
    g = s.policy.groups["g"]
    assert (g.max_logins, g.login_limit_action) == (3, "replace")
    t = s.policy.timers
    assert (t.rekey_margin, t.keepalive_interval, t.dpd_interval) == (0.25, 9.0, 15.0)
    assert (t.retransmit_base, t.retransmit_tries, t.dpd_retries) == \
        (Timers.retransmit_base, Timers.retransmit_tries, Timers.dpd_retries)
    assert _load(tmp_path, "rekey_margin = 0", "max_logins = 0").policy.groups["g"].max_logins == 0, "no limit"
    assert _load(tmp_path, "rekey_margin = 0").policy.timers.rekey_margin == 0.0


def test_the_shipped_config_documents_them() -> None:
    text = (CONFIGS / "concentrator.toml").read_text()
    for key in ("max_logins", "login_limit_action", "rekey_margin"):
        (line,) = [ln for ln in text.splitlines() if ln.startswith(f"{key} =")]
        assert "#" in line, f"{key} has a comment"
    s = conc_config.load(CONFIGS / "concentrator.toml")
    g = s.policy.groups["ciscovpn"]
    assert (g.max_logins, g.login_limit_action, s.policy.timers.rekey_margin) == (1, "refuse", 0.1)


@pytest.mark.parametrize(("conc", "group", "key"), [
    ("", "max_logins = -1", "'max_logins'"),
    ("", 'max_logins = "one"', "'max_logins'"),
    ("", "max_logins = true", "'max_logins'"),
    ("", "max_logins = 1.5", "'max_logins'"),
    ("", 'login_limit_action = "kick"', "'login_limit_action'"),
    ("", "login_limit_action = 1", "'login_limit_action'"),
    ("rekey_margin = 0.6", "", "'rekey_margin'"),
    ("rekey_margin = -0.1", "", "'rekey_margin'"),
    ('rekey_margin = "10%"', "", "'rekey_margin'"),
    ("rekey_margin = true", "", "'rekey_margin'"),
])
def test_bad_values_name_the_key(tmp_path: Path, conc: str, group: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key) as e:
        _load(tmp_path, conc, group)
    where = "[groups.g]" if group else "[concentrator]"
    assert where in str(e.value)
