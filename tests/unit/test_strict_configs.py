"""Strict configs in all three daemons ("hold under attack and faults"): an unknown key is refused with its file,
line and nearest known key; addresses and ranges are sane; secrets others can read are refused (or, with
allow_insecure_secrets, warned about); `check` / `run --check` validate without starting; and every CLI failure is
one line on stderr with exit 2, never a traceback."""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from natt_daemons.client import cli as client_cli
from natt_daemons.client import config as client_config
from natt_daemons.common import config as common_config
from natt_daemons.common.config import ConfigError, Table, find_line
from natt_daemons.common.control import ControlError
from natt_daemons.concentrator import cli as conc_cli
from natt_daemons.concentrator import config as conc_config
from natt_daemons.pat import cli as pat_cli
from natt_daemons.pat import config as pat_config

pytestmark = pytest.mark.unit
CONFIGS = Path(__file__).resolve().parents[2] / "configs"

CONC = '[concentrator]\naddress = "198.51.100.50"\n{conc}\n[groups.g]\npsk = "k"\n{group}\n'
CLIENT = '[client]\nconcentrator = "198.51.100.50"\ngroup = "g"\npsk = "k"\n{extra}\n'
PAT = ('[pat]\n{pat}\n[inside]\ninterface = "inside"\naddress = "10.10.10.1/24"\n{inside}\n'
       '[outside]\ninterface = "outside"\naddress = "203.0.113.78/24"\n')


def _write(tmp_path: Path, text: str, name: str = "c.toml", mode: int = 0o600) -> Path:
    p = tmp_path / name
    p.write_text(text)
    p.chmod(mode)
    return p


def _refused(load: object, p: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load(p)  # type: ignore[operator]
    return str(e.value)


# -- unknown keys -------------------------------------------------------------------------------------------------


def test_typo_in_concentrator_is_refused_with_line_and_suggestion(tmp_path: Path) -> None:
    """The issue's case: `nat_travesal = true` used to start with NAT-T silently off."""
    p = _write(tmp_path, CONC.format(conc="session_limit = 10\nnat_travesal = true", group=""))
    assert _refused(conc_config.load, p) == \
        f"{p}:4: unknown key 'nat_travesal' in [concentrator] (did you mean 'nat_traversal'?)"


def test_misspelt_password_in_client_is_refused(tmp_path: Path) -> None:
    """The issue's case: `passwrd` used to connect with an empty password."""
    p = _write(tmp_path, CLIENT.format(extra='username = "bob"\npasswrd = "secret"'))
    assert _refused(client_config.load, p) == \
        f"{p}:6: unknown key 'passwrd' in [client] (did you mean 'password'?)"


def test_unknown_group_key_names_its_group_and_line(tmp_path: Path) -> None:
    p = _write(tmp_path, CONC.format(conc="", group='pool = "10.40.1.0/24"\nsplit_network = ["192.168.2.0/24"]'))
    assert _refused(conc_config.load, p) == \
        f"{p}:7: unknown key 'split_network' in [groups.g] (did you mean 'split_networks'?)"


def test_key_in_the_wrong_table_is_told_where_it_belongs(tmp_path: Path) -> None:
    p = _write(tmp_path, CONC.format(conc='pool = "10.50.0.0/24"', group="nat_traversal = true"))
    assert "c.toml:3: unknown key 'pool' in [concentrator] ('pool' belongs in a [groups.NAME] table)" in \
        _refused(conc_config.load, p)
    p = _write(tmp_path, CONC.format(conc="", group="nat_traversal = true"))
    assert "c.toml:6: unknown key 'nat_traversal' in [groups.g] ('nat_traversal' belongs in [concentrator])" in \
        _refused(conc_config.load, p)
    p = _write(tmp_path, 'address = "198.51.100.50"\n' + CONC.format(conc="", group=""))
    assert "c.toml:1: unknown key 'address' at the top level ('address' belongs in [concentrator])" in \
        _refused(conc_config.load, p)
    p = _write(tmp_path, CLIENT.format(extra="nat_traversal = true"))
    assert "unknown key 'nat_traversal' in [client] (the client offers NAT-T with 'transparent_tunneling')" in \
        _refused(client_config.load, p)


def test_several_unknown_keys_are_all_named(tmp_path: Path) -> None:
    p = _write(tmp_path, CLIENT.format(extra="colour = 1\nflavour = 2"))
    message = _refused(client_config.load, p)
    assert message.startswith(f"{p}:5: unknown key 'colour' in [client]")
    assert "also unknown: 'flavour' (line 6)" in message


def test_pat_tables_are_strict_too(tmp_path: Path) -> None:
    p = _write(tmp_path, PAT.format(pat="", inside='netwrok = "10.10.0.0/16"'))
    assert _refused(pat_config.load, p) == \
        f"{p}:6: unknown key 'netwrok' in [inside] (did you mean 'network'?)"
    p = _write(tmp_path, PAT.format(pat="esp_pasthrough = true", inside=""))
    assert _refused(pat_config.load, p) == \
        f"{p}:2: unknown key 'esp_pasthrough' in [pat] (did you mean 'esp_passthrough'?)"
    p = _write(tmp_path, PAT.format(pat="", inside="") + "[nat]\nx = 1\n")
    assert "c.toml:10: unknown key 'nat' at the top level (did you mean 'pat'?)" in _refused(pat_config.load, p)


def test_a_table_that_is_a_value_is_refused_not_a_traceback(tmp_path: Path) -> None:
    p = _write(tmp_path, '[concentrator]\naddress = "198.51.100.50"\n[groups]\ng = "k"\n')
    assert "c.toml:4: 'g' must be a table ([groups.g]), not str" in _refused(conc_config.load, p)


def test_find_line_follows_tables_dotted_keys_quotes_and_strings() -> None:
    text = "\n".join([
        "top = 1",                                # 1
        "[groups.\"my group\"]",                  # 2
        "psk = 'a'",                              # 3
        'banner = """',                           # 4
        "pool = 'inside the banner, not a key'",  # 5
        '"""',                                    # 6
        "pool = '10.40.0.0/24'",                  # 7
        "[groups]",                               # 8
        "other.psk = 'b'",                        # 9
        "inline = { psk = 'c' }",                 # 10
        "  [ groups . third ]  # a comment",      # 11
        "  'psk' = 'd'",                          # 12
    ])
    assert find_line(text, ["top"]) == 1
    assert find_line(text, ["groups", "my group", "psk"]) == 3
    assert find_line(text, ["groups", "my group", "pool"]) == 7, "a line inside a multi-line string is no key"
    assert find_line(text, ["groups", "other", "psk"]) == 9
    assert find_line(text, ["groups", "inline", "psk"]) == 10, "inside an inline table: the table's line"
    assert find_line(text, ["groups", "third", "psk"]) == 12
    assert find_line(text, ["nothing"]) is None


def test_the_loader_cannot_read_a_key_its_list_lacks() -> None:
    """The lists of keys are the one place to read what a file may hold: reading past them is a loader bug."""
    t = Table({"psk": "k"}, {"psk"}, "[groups.g]")
    assert t.get("psk") == "k" and "psk" in t
    with pytest.raises(AssertionError, match=r"'pool' from \[groups.g\]"):
        t.get("pool")


def test_shipped_configs_pass_the_strict_check() -> None:
    conc_config.load(CONFIGS / "concentrator.toml")
    client_config.load(CONFIGS / "client1.toml")
    client_config.load(CONFIGS / "client2.toml")
    pat_config.load(CONFIGS / "pat.toml")


# -- addresses and ranges -----------------------------------------------------------------------------------------


def test_pool_holding_the_concentrators_own_address_is_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, CONC.format(conc="", group='pool = "198.51.100.0/24"'))
    assert _refused(conc_config.load, p) == \
        f"{p} [groups.g]: pool 198.51.100.0/24 contains the concentrator's own address 198.51.100.50"


def test_overlapping_pools_are_refused(tmp_path: Path) -> None:
    p = _write(tmp_path, CONC.format(conc="", group='pool = "10.40.0.0/16"')
               + '[groups.h]\npsk = "k"\npool = "10.40.7.0/24"\n')
    assert _refused(conc_config.load, p) == \
        f"{p}: the pools of [groups.g] (10.40.0.0/16) and [groups.h] (10.40.7.0/24) overlap: one address could be " \
        "given to two clients"
    p = _write(tmp_path, CONC.format(conc="", group='pool = "10.40.0.0/24"')
               + '[groups.h]\npsk = "k"\npool = "10.40.1.0/24"\n')
    assert set(conc_config.load(p).policy.groups) == {"g", "h"}, "side by side is fine"


@pytest.mark.parametrize(("group", "words"), [
    ('pool = "10.40.1.0/24"\ndns = ["10.40.1.53"]', "dns server 10.40.1.53 is inside [groups.g] pool 10.40.1.0/24"),
    ('split_networks = ["0.0.0.0/0"]', "split_networks 0.0.0.0/0 contains the concentrator's address 198.51.100.50"),
    ('pool = "127.0.0.0/24"', "pool 127.0.0.0/24 overlaps 127.0.0.0/8 (loopback)"),
    ('pool = "224.1.0.0/16"', "pool 224.1.0.0/16 overlaps 224.0.0.0/4 (multicast)"),
    ('dns = ["0.0.0.0"]', "dns 0.0.0.0 is not a unicast host address"),
    ('phase1 = [1]', "'phase1' must be a list of strings"),
])
def test_group_address_sanity(tmp_path: Path, group: str, words: str) -> None:
    p = _write(tmp_path, CONC.format(conc="", group=group))
    assert words in _refused(conc_config.load, p)


@pytest.mark.parametrize(("conc", "words"), [
    ('address = "0.0.0.0"', "address 0.0.0.0 is not a unicast host address"),
    ("session_limit = 0", "'session_limit' must be a number in 1..1e+06"),
    ("session_limit = true", "'session_limit' must be a number"),
    ("phase2_lifetime = 10", "'phase2_lifetime' must be a number in 30..86400"),
    ("keepalive_interval = -1", "'keepalive_interval' must be a number in 1..3600 (or 0: off)"),
    ('modecfg = "psuh"', "modecfg 'psuh' must be \"pull\""),
    ('tun = "a/b"', "tun 'a/b' is not a Linux interface name"),
    ('control_socket = "/run/' + "x" * 120 + '.sock"', "a Unix socket path holds at most 107"),
])
def test_concentrator_ranges(tmp_path: Path, conc: str, words: str) -> None:
    text = CONC.format(conc=conc, group="")
    if conc.startswith("address"):
        text = text.replace('address = "198.51.100.50"\n', "")
    p = _write(tmp_path, text)
    assert words in _refused(conc_config.load, p)


def test_zero_keepalive_means_off(tmp_path: Path) -> None:
    p = _write(tmp_path, CONC.format(conc="keepalive_interval = 0\ndpd_interval = 0", group=""))
    t = conc_config.load(p).policy.timers
    assert (t.keepalive_interval, t.dpd_interval) == (0.0, 0.0)


@pytest.mark.parametrize(("peer", "words"), [
    ("vpn.example.com", "concentrator 'vpn.example.com' is not an IPv4 address"),
    ("0.0.0.0", "concentrator 0.0.0.0 is not a unicast host address"),
    ("255.255.255.255", "concentrator 255.255.255.255 is not a unicast host address"),
    ("239.1.1.1", "concentrator 239.1.1.1 is not a unicast host address"),
])
def test_client_peer_must_be_a_host_address(tmp_path: Path, peer: str, words: str) -> None:
    p = _write(tmp_path, CLIENT.format(extra="").replace("198.51.100.50", peer))
    assert words in _refused(client_config.load, p)


@pytest.mark.parametrize(("pat", "inside", "words"), [
    ("", 'network = "203.0.113.0/25"', "inside network 203.0.113.0/25 overlaps outside network 203.0.113.0/24"),
    ('gateway = "203.0.113.78"', "", "gateway 203.0.113.78 is the outside address itself"),
    ("", "", ""),
])
def test_pat_ranges(tmp_path: Path, pat: str, inside: str, words: str) -> None:
    p = _write(tmp_path, PAT.format(pat=pat, inside=inside))
    if words:
        assert words in _refused(pat_config.load, p)
    else:
        assert pat_config.load(p).inside_network == "10.10.10.0/24"


def test_pat_interface_address_must_be_a_host(tmp_path: Path) -> None:
    p = _write(tmp_path, PAT.format(pat="", inside="").replace("10.10.10.1/24", "10.10.10.0/24"))
    assert "address 10.10.10.0/24 is the network address of 10.10.10.0/24" in _refused(pat_config.load, p)
    p = _write(tmp_path, PAT.format(pat="", inside="").replace("203.0.113.78/24", "10.10.10.9/8"))
    assert "overlaps" in _refused(pat_config.load, p)


# -- secrets ------------------------------------------------------------------------------------------------------


def _psk_file_config(tmp_path: Path, psk_mode: int, top: str = "") -> Path:
    psk = tmp_path / "g.psk"
    psk.write_text("from-a-file\n")
    psk.chmod(psk_mode)
    return _write(tmp_path, top + '[concentrator]\naddress = "198.51.100.50"\n[groups.g]\npsk_file = "g.psk"\n')


def test_world_readable_psk_file_is_refused(tmp_path: Path) -> None:
    s = conc_config.load(_psk_file_config(tmp_path, 0o644))
    with pytest.raises(ConfigError) as e:
        s.secrets.enforce()
    psk = tmp_path / "g.psk"
    assert str(e.value).startswith(f"{psk} holds the psk of [groups.g], readable by everyone (mode 0644): "
                                   f"chmod 600 {psk}")
    assert "allow_insecure_secrets = true" in str(e.value)


def test_world_readable_psk_file_is_allowed_with_the_setting(tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    s = conc_config.load(_psk_file_config(tmp_path, 0o644, top="allow_insecure_secrets = true\n"))
    assert s.policy.groups["g"].psk == b"from-a-file"
    with caplog.at_level("WARNING"):
        (warning,) = s.secrets.enforce()
    assert warning.startswith("INSECURE SECRET: ") and "chmod 600" in warning
    assert any(r.levelname == "WARNING" and "INSECURE SECRET" in r.getMessage() for r in caplog.records)


def test_private_psk_file_passes(tmp_path: Path) -> None:
    assert conc_config.load(_psk_file_config(tmp_path, 0o600)).secrets.enforce() == []


def test_inline_secrets_make_the_config_itself_a_secret(tmp_path: Path) -> None:
    p = _write(tmp_path, CLIENT.format(extra='username = "bob"\npassword = "pw"'), mode=0o644)
    with pytest.raises(ConfigError, match=re.escape(f"{p} holds the psk and the password, readable by everyone (mode "
                                                    f"0644): chmod 600 {p}")):
        client_config.load(p).secrets.enforce()
    p.chmod(0o600)
    assert client_config.load(p).secrets.enforce() == []


def test_group_readable_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Read access by a group other than ours is exposure; by the services' group (natt) it is how the daemon,
    running as natt, reads its config (root:natt 0640)."""
    foreign = 65534
    if foreign in {os.getegid(), *os.getgroups()}:
        pytest.skip("this process is in the test's foreign group")
    p = _write(tmp_path, CLIENT.format(extra=""), mode=0o640)
    os.chown(p, -1, foreign)
    monkeypatch.setattr(common_config, "_service_gid", lambda: None)
    with pytest.raises(ConfigError, match=r"readable by group \S+ \(mode 0640\): chmod 600"):
        client_config.load(p).secrets.enforce()
    monkeypatch.setattr(common_config, "_service_gid", lambda: foreign)
    assert client_config.load(p).secrets.enforce() == []
    p.chmod(0o644)
    with pytest.raises(ConfigError, match=r"readable by everyone \(mode 0644\): chmod 640"):
        client_config.load(p).secrets.enforce()


def test_psk_and_psk_file_together_are_refused(tmp_path: Path) -> None:
    (tmp_path / "g.psk").write_text("x")
    p = _write(tmp_path, CONC.format(conc="", group='psk_file = "g.psk"'))
    assert "set 'psk' or 'psk_file', not both" in _refused(conc_config.load, p)


def test_allow_insecure_secrets_must_be_a_boolean(tmp_path: Path) -> None:
    p = _write(tmp_path, 'allow_insecure_secrets = "yes"\n' + CLIENT.format(extra=""))
    assert "c.toml:1: 'allow_insecure_secrets' must be true or false" in _refused(client_config.load, p)


# -- check --------------------------------------------------------------------------------------------------------


def _invoke(cli: object, prog: str, argv: list[str]) -> Result:
    return CliRunner().invoke(cli, argv, prog_name=prog)  # type: ignore[arg-type]


def _one_line_error(result: Result, prog: str, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    assert not isinstance(result.exception, Exception) or isinstance(result.exception, SystemExit), \
        f"a traceback: {result.exception!r}"
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("argv", [["check"], ["run", "--check"]])
def test_check_says_ok_in_one_line(tmp_path: Path, argv: list[str]) -> None:
    conc = _write(tmp_path, (CONFIGS / "concentrator.toml").read_text(), "conc.toml")
    r = _invoke(conc_cli.main, "natt-concentrator", [*argv, "--config", str(conc)])
    assert r.exit_code == 0 and r.stderr == ""
    assert r.stdout == f"{conc}: OK: address 198.51.100.50, NAT-T on, 1 group(s): ciscovpn (pool 10.40.1.0/24); " \
                       "0 user(s); control socket /run/natt/concentrator.sock\n"
    client = _write(tmp_path, (CONFIGS / "client1.toml").read_text(), "client1.toml")
    r = _invoke(client_cli.main, "natt-client", [*argv, "--config", str(client)])
    assert r.exit_code == 0 and r.stdout.count("\n") == 1
    assert "OK: profile client1, concentrator 198.51.100.50, group ciscovpn, user vpnclient1 (password set)" in r.stdout
    r = _invoke(pat_cli.main, "natt-pat", [*argv, "--config", str(CONFIGS / "pat.toml")])
    assert r.exit_code == 0 and r.stdout.count("\n") == 1
    assert "OK: inside inside 10.10.10.1/24 (translates 10.10.10.0/24), outside outside 203.0.113.78/24" in r.stdout


@pytest.mark.parametrize("argv", [["check"], ["run", "--check"]])
def test_check_refuses_in_one_line_with_exit_2(tmp_path: Path, argv: list[str]) -> None:
    p = _write(tmp_path, CONC.format(conc="nat_travesal = true", group=""))
    line = _one_line_error(_invoke(conc_cli.main, "natt-concentrator", [*argv, "--config", str(p)]),
                           "natt-concentrator")
    assert line == f"natt-concentrator: configuration error: {p}:3: unknown key 'nat_travesal' in [concentrator] " \
                   "(did you mean 'nat_traversal'?)"
    missing = tmp_path / "nope.toml"
    line = _one_line_error(_invoke(pat_cli.main, "natt-pat", [*argv, "--config", str(missing)]), "natt-pat")
    assert line == f"natt-pat: configuration error: {missing}: no such file"


def test_check_refuses_readable_secrets_and_warns_when_allowed(tmp_path: Path) -> None:
    p = _write(tmp_path, CLIENT.format(extra=""), mode=0o644)
    line = _one_line_error(_invoke(client_cli.main, "natt-client", ["check", "--config", str(p)]), "natt-client")
    assert f"chmod 600 {p}" in line
    p.write_text("allow_insecure_secrets = true\n" + CLIENT.format(extra=""))
    r = _invoke(client_cli.main, "natt-client", ["check", "--config", str(p)])
    assert r.exit_code == 0 and "OK: " in r.stdout
    assert r.stderr.startswith("natt-client: warning: INSECURE SECRET: ") and f"chmod 600 {p}" in r.stderr


def test_check_binds_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no(*args: object, **kwargs: object) -> None:
        raise AssertionError("check must not bind or start anything")

    from natt_daemons.concentrator import daemon

    monkeypatch.setattr(daemon, "serve", no)
    monkeypatch.setattr(socket.socket, "bind", no)
    p = _write(tmp_path, CONC.format(conc="", group=""))
    assert _invoke(conc_cli.main, "natt-concentrator", ["run", "--check", "--config", str(p)]).exit_code == 0


def test_run_refuses_readable_secrets_before_starting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from natt_daemons.concentrator import daemon

    started: list[str] = []
    monkeypatch.setattr(daemon, "serve", lambda config: started.append(config) or 0)
    p = _write(tmp_path, CONC.format(conc="", group=""), mode=0o604)
    line = _one_line_error(_invoke(conc_cli.main, "natt-concentrator", ["run", "--config", str(p)]),
                           "natt-concentrator")
    assert line.startswith(f"natt-concentrator: configuration error: {p} holds the psk of [groups.g], readable by "
                           "everyone (mode 0604)")
    assert started == [], "refused before anything was bound"
    p.chmod(0o600)
    assert _invoke(conc_cli.main, "natt-concentrator", ["run", "--config", str(p)]).exit_code == 0
    assert started == [str(p)]


def test_client_run_refuses_a_user_without_password(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from natt_daemons.client import daemon

    started: list[str | None] = []
    monkeypatch.setattr(daemon, "serve", lambda config, password: started.append(password) or 0)
    p = _write(tmp_path, CLIENT.format(extra='username = "bob"'))
    line = _one_line_error(_invoke(client_cli.main, "natt-client", ["run", "--config", str(p)]), "natt-client")
    assert "user 'bob' has no password: set password or password_file, or run with --password-stdin" in line
    assert started == []
    r = CliRunner().invoke(client_cli.main, ["run", "--config", str(p), "--password-stdin"], input="typed\n")
    assert r.exit_code == 0 and started == ["typed"]


# -- control commands: one line, exit 2 ---------------------------------------------------------------------------


def test_over_long_socket_path_is_one_line(tmp_path: Path) -> None:
    path = "/run/natt/" + "x" * 110 + ".sock"
    line = _one_line_error(_invoke(conc_cli.main, "natt-concentrator", ["status", "--socket", path]),
                           "natt-concentrator")
    assert line == f"natt-concentrator: cannot reach the concentrator at {path}: the path is {len(path)} bytes " \
                   "long, a Unix socket path holds at most 107"


def test_permission_denied_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """As a user that is neither root nor the daemon's (root bypasses the mode, so connect is made to refuse)."""

    def refuse(self: socket.socket, address: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    line = _one_line_error(_invoke(client_cli.main, "natt-client", ["status", "--socket", "/run/natt/c.sock"]),
                           "natt-client")
    assert line == "natt-client: cannot reach the client at /run/natt/c.sock: permission denied (run as root, or " \
                   "as the user the daemon runs as)"


def test_socket_under_a_regular_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    path = str(tmp_path / "file" / "pat.sock")
    line = _one_line_error(_invoke(pat_cli.main, "natt-pat", ["xlate", "--socket", path]), "natt-pat")
    assert line == f"natt-pat: cannot reach the PAT gateway at {path}: a part of the path is not a directory"


def test_missing_and_stale_sockets_are_one_line(tmp_path: Path) -> None:
    missing = str(tmp_path / "none.sock")
    line = _one_line_error(_invoke(conc_cli.main, "natt-concentrator", ["sessions", "--socket", missing]),
                           "natt-concentrator")
    assert line.startswith(f"natt-concentrator: cannot reach the concentrator at {missing}: no control socket there")
    stale = str(tmp_path / "stale.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.bind(stale)  # a socket file nothing listens on: what a killed daemon leaves
    line = _one_line_error(_invoke(conc_cli.main, "natt-concentrator", ["log", "--follow", "--socket", stale]),
                           "natt-concentrator")
    assert line == f"natt-concentrator: cannot reach the concentrator at {stale}: connection refused (not running: " \
                   "the socket is left from an earlier run)"


def test_bad_config_for_a_control_command_is_one_line(tmp_path: Path) -> None:
    p = _write(tmp_path, PAT.format(pat="tabel = 'x'", inside=""))
    line = _one_line_error(_invoke(pat_cli.main, "natt-pat", ["status", "--config", str(p)]), "natt-pat")
    assert line == f"natt-pat: configuration error: {p}:2: unknown key 'tabel' in [pat] (did you mean 'table'?)"


def test_a_refusal_by_the_daemon_is_one_line_with_exit_1(monkeypatch: pytest.MonkeyPatch) -> None:
    from natt_daemons.common import cli as common_cli

    def refuse(path: str, cmd: str, args: object = None, **kwargs: object) -> None:
        raise ControlError("no session for user 'bob'")

    monkeypatch.setattr(common_cli, "call", refuse)
    line = _one_line_error(_invoke(conc_cli.main, "natt-concentrator", ["logout", "bob", "--socket", "/x.sock"]),
                           "natt-concentrator", code=1)
    assert line == "natt-concentrator: no session for user 'bob'"
