"""The concentrator's admin pieces: control groups in the config, the NAT Transparency file edit, the audit entries,
and ICMP echo (real raw sockets on loopback, which needs root)."""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path

import pytest

from natt.events.ikelog import IkeLogger
from natt_daemons.common.config import ConfigError
from natt_daemons.common.control import AuditRecord, ControlError, Peer, SocketAccess
from natt_daemons.common.tomledit import set_bool, write_config
from natt_daemons.concentrator import admin, ping
from natt_daemons.concentrator import config as conc_config

pytestmark = pytest.mark.unit
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BASE = '[concentrator]\naddress = "198.51.100.50"\n{extra}[groups.g]\npsk = "k"\n'


def _conf(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "c.toml"
    p.write_text(BASE.format(extra=extra))
    p.chmod(0o600)
    return p


# -- control groups ---------------------------------------------------------------------------------------------


def test_no_control_groups_keep_the_socket_root_only(tmp_path: Path) -> None:
    s = conc_config.load(_conf(tmp_path))
    assert s.control_access == SocketAccess() and s.control_groups == {}


def test_control_groups_resolve_to_gids(tmp_path: Path) -> None:
    s = conc_config.load(_conf(tmp_path, 'control_group = "nogroup"\ncontrol_admin_group = "root"\n'))
    assert s.control_access == SocketAccess(group=65534, admin_group=0)
    assert s.control_groups == {"control_group": "nogroup", "control_admin_group": "root"}


def test_an_admin_group_alone_is_also_the_sockets_group(tmp_path: Path) -> None:
    s = conc_config.load(_conf(tmp_path, 'control_admin_group = "nogroup"\n'))
    assert s.control_access == SocketAccess(group=65534, admin_group=65534)


@pytest.mark.parametrize("key", ["control_group", "control_admin_group"])
def test_an_unknown_group_is_a_config_error(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[concentrator\]: {key} 'natt-no-such-group': no such group on this "
                                          r"system \(create it, e\.g\. 'groupadd --system natt-no-such-group'"):
        conc_config.load(_conf(tmp_path, f'{key} = "natt-no-such-group"\n'))


def test_a_misspelt_group_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="did you mean 'control_group'"):
        conc_config.load(_conf(tmp_path, 'control_grup = "nogroup"\n'))


def test_the_shipped_config_documents_the_groups_commented() -> None:
    text = (CONFIGS / "concentrator.toml").read_text()
    assert '# control_group = "natt-view"' in text and '# control_admin_group = "natt-admin"' in text
    assert conc_config.load(CONFIGS / "concentrator.toml").control_access == SocketAccess()


# -- the NAT Transparency edit ---------------------------------------------------------------------------------

SHIPPED = (CONFIGS / "concentrator.toml").read_text()


def test_set_bool_changes_the_line_and_keeps_its_comment() -> None:
    new = set_bool(SHIPPED, ("concentrator",), "nat_traversal", False)
    changed = [(a, b) for a, b in zip(SHIPPED.splitlines(), new.splitlines(), strict=True) if a != b]
    assert changed == [("nat_traversal = true", "nat_traversal = false")]
    new = set_bool(new, ("groups", "ciscovpn"), "ipsec_over_udp", True)
    changed = [(a, b) for a, b in zip(SHIPPED.splitlines(), new.splitlines(), strict=True) if a != b]
    assert changed[1] == ("ipsec_over_udp = false               # Cisco \"IPsec over UDP\" for this group's clients",
                          "ipsec_over_udp = true               # Cisco \"IPsec over UDP\" for this group's clients")


def test_set_bool_adds_a_missing_key_under_its_table() -> None:
    text = '# top\n[concentrator]\naddress = "198.51.100.50"  # pub\n\n[groups.g]\npsk = "k"\n'
    new = set_bool(text, ("concentrator",), "nat_traversal", True)
    assert new == ('# top\n[concentrator]\nnat_traversal = true\naddress = "198.51.100.50"  # pub\n\n'
                   '[groups.g]\npsk = "k"\n')
    new = set_bool(new, ("groups", "g"), "ipsec_over_udp", True)
    assert new.endswith('[groups.g]\nipsec_over_udp = true\npsk = "k"\n')


@pytest.mark.parametrize(("text", "words"), [
    ('[concentrator]\nnat_traversal = "yes"\n', "not written as `nat_traversal = true|false`"),
    ('[concentrator]\naddress = "x"\n', r"no \[groups\.g\] table"),
    ('concentrator.nat_traversal = true\n', r"no \[concentrator\] table"),
])
def test_set_bool_refuses_what_it_cannot_edit_safely(text: str, words: str) -> None:
    table = ("groups", "g") if "groups" in words else ("concentrator",)
    key = "ipsec_over_udp" if "groups" in words else "nat_traversal"
    with pytest.raises(ConfigError, match=words):
        set_bool(text, table, key, True)


def test_write_config_keeps_mode_and_replaces_atomically(tmp_path: Path) -> None:
    p = _conf(tmp_path)
    inode = p.stat().st_ino
    write_config(p, p.read_text() + "# more\n")
    assert p.read_text().endswith("# more\n") and p.stat().st_mode & 0o777 == 0o600
    assert p.stat().st_ino != inode  # a new file renamed over the old one, never half-written
    assert [f.name for f in tmp_path.iterdir()] == ["c.toml"]


def test_change_nat_transparency_writes_then_reloads(tmp_path: Path) -> None:
    p = _conf(tmp_path, "nat_traversal = false   # the seed's case\n")
    policy = conc_config.load(p).policy
    reloaded: list[bool] = []

    def reload() -> None:
        reloaded.append(conc_config.load(p).policy.nat_traversal)

    admin.change_nat_transparency(p, policy, {"nat_traversal": True, "groups": {"g": {"ipsec_over_udp": True}},
                                              "actor": "manager:alice"}, reload)
    assert reloaded == [True]
    assert "nat_traversal = true   # the seed's case\n" in p.read_text()
    assert conc_config.load(p).policy.groups["g"].ipsec_over_udp is True


def test_a_change_the_reload_refuses_is_undone(tmp_path: Path) -> None:
    p = _conf(tmp_path)
    before = p.read_text()

    def reload() -> None:
        raise ConfigError("refused for the test")

    with pytest.raises(ControlError, match=r"does not load, so .* is left as it was: refused for the test"):
        admin.change_nat_transparency(p, conc_config.load(p).policy, {"nat_traversal": True}, reload)
    assert p.read_text() == before


@pytest.mark.parametrize(("args", "words"), [
    ({}, "nothing to change"),
    ({"actor": "x"}, "nothing to change"),
    ({"nat_traversal": "on"}, "nat_traversal must be true or false"),
    ({"groups": {"nope": {"ipsec_over_udp": True}}}, "no group 'nope'"),
    ({"groups": {"g": {"pool": "10.0.0.0/24"}}}, "only ipsec_over_udp"),
    ({"groups": ["g"]}, "groups must be an object"),
])
def test_bad_nat_transparency_requests(tmp_path: Path, args: dict, words: str) -> None:
    p = _conf(tmp_path)
    before = p.read_text()
    with pytest.raises(ControlError, match=words):
        admin.change_nat_transparency(p, conc_config.load(p).policy, args, lambda: None)
    assert p.read_text() == before


def test_settings_view(tmp_path: Path) -> None:
    policy = conc_config.load(_conf(tmp_path, "nat_traversal = true\n")).policy
    assert admin.settings_view(policy) == {"nat_traversal": True, "groups": {
        "g": {"ipsec_over_udp": False, "ipsec_over_udp_port": 10000}}}


# -- the audit entries ----------------------------------------------------------------------------------------


def test_audit_entries_in_the_event_log() -> None:
    events = IkeLogger("concentrator", max_severity=5)
    peer = Peer(pid=4242, uid=998, gid=998)
    admin.audit(events, AuditRecord("logout", "admin", peer, {"user": "vpnclient1", "actor": "manager:alice"}), 1.0)
    admin.audit(events, AuditRecord("nat-transparency", "admin", Peer(7, 0, 0), {"nat_traversal": True}), 2.0)
    admin.audit(events, AuditRecord("ping", "admin", peer, {"user": "bob"}, error="no session for user 'bob'"), 3.0)
    admin.audit(events, AuditRecord("keys", "root", Peer(9, 65534, 65534), {"wireshark": "/tmp/k"}, refused=True,
                                    error="needs root"), 4.0)
    entries = list(events.log.filter(classes=["ADMIN"]))
    texts = [e.text for e in entries]
    assert texts == [
        "Administrator command logout by manager:alice (uid 998, pid 4242): user=vpnclient1: done",
        "Administrator command nat-transparency by root (uid 0, pid 7): nat_traversal=true: done",
        "Administrator command ping by manager:alice (uid 998, pid 4242): user=bob: failed: no session for user 'bob'"
        .replace("manager:alice", peer.name),
        "Refused command keys from nobody (uid 65534, pid 9): it needs root access",
    ]
    assert [(e.severity, e.event_id, e.peer_shown) for e in entries] == [(4, 540, False)] * 3 + [(3, 541, False)]
    assert "SEV=3 ADMIN/541 RPT=1" in events.render(entries[3])


def test_audit_target_masks_secrets_and_stays_short() -> None:
    assert admin.target_text({"user": "u", "password": "hunter2", "actor": "a"}) == "user=u password=********"
    assert admin.target_text({"groups": {"g": {"ipsec_over_udp": True}}}) == 'groups={"g":{"ipsec_over_udp":true}}'
    assert len(admin.target_text({"user": "x" * 500})) == admin.MAX_TARGET


# -- ICMP echo ------------------------------------------------------------------------------------------------


def test_echo_packets() -> None:
    req = ping.echo_request(0x1234, 7)
    assert req[0] == 8 and struct.unpack("!HH", req[4:8]) == (0x1234, 7) and ping.checksum(req) == 0
    reply = bytes([0]) + req[1:2] + b"\0\0" + req[4:]
    reply = reply[:2] + struct.pack("!H", ping.checksum(reply)) + reply[4:]
    ip = bytes([0x45]) + bytes(11) + bytes([10, 40, 1, 1]) + bytes([192, 168, 2, 251])
    assert ping.echo_reply_of(ip + reply) == ("10.40.1.1", 0x1234, 7)
    assert ping.echo_reply_of(ip + req) is None  # a request, not a reply
    assert ping.echo_reply_of(ip + reply[:-1] + b"X") is None  # bad checksum
    assert ping.echo_reply_of(b"\x60" + bytes(40)) is None  # not IPv4


@pytest.mark.parametrize(("count", "timeout"), [(0, 1.0), (ping.MAX_COUNT + 1, 1.0), (True, 1.0), (3, 0.0),
                                                (3, ping.MAX_TIMEOUT + 1), (3, "1")])
def test_ping_bounds(count: object, timeout: object) -> None:
    with pytest.raises(ping.PingError):
        ping.bounds(count, timeout)


@pytest.mark.skipif(os.geteuid() != 0, reason="a raw ICMP socket needs CAP_NET_RAW")
def test_ping_on_loopback_matches_its_own_replies() -> None:
    """Two runs at once on one host: each raw socket sees both runs' replies and counts only its own."""

    async def both() -> tuple[ping.PingResult, ping.PingResult]:
        return await asyncio.gather(ping.ping("127.0.0.1", 3, 1.0), ping.ping("127.0.0.1", 2, 1.0))

    a, b = asyncio.run(both())
    assert (a.sent, a.received, len(a.rtt_ms)) == (3, 3, 3)
    assert (b.sent, b.received, len(b.rtt_ms)) == (2, 2, 2)
    assert all(0 <= r < 1000 for r in a.rtt_ms + b.rtt_ms)


def test_a_config_the_daemon_may_not_write_gets_the_switch_in_the_running_configuration_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped unit's /etc is read-only: the switch still takes effect for new sessions, and says it is not
    saved (the VPN 3000's running configuration before Save)."""
    from natt_daemons.concentrator import admin

    cfg = _conf(tmp_path, "")
    settings = conc_config.load(cfg)
    settings.policy.nat_traversal = False
    before = cfg.read_text()

    def read_only(path: Path, text: str) -> None:
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(admin, "write_config", read_only)
    applied: list[bool] = []
    out = admin.change_nat_transparency(cfg, settings.policy, {"nat_traversal": True},
                                        reload=lambda: pytest.fail("nothing was written: no reload"),
                                        apply=lambda: applied.append(True))
    assert out["saved"] is False and "running configuration only" in out["note"]
    assert "Read-only file system" in out["note"]
    assert settings.policy.nat_traversal is True and applied == [True]
    assert cfg.read_text() == before
