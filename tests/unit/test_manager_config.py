"""natt-manager's pieces on their own: the strict config, the self-signed certificate, the login throttle and
sessions (with a given clock), and the diagnosis of the seed's failure on a Sessions row."""

from __future__ import annotations

import datetime
import ipaddress
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from natt_daemons.common.config import ConfigError
from natt_daemons.common.passwords import hash_password
from natt_daemons.manager import tls
from natt_daemons.manager.auth import LoginThrottle, Sessions, csrf_ok
from natt_daemons.manager.config import Throttle, load
from natt_daemons.manager.diagnosis import diagnose
from natt_daemons.manager.views import sessions_view

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
HASH = hash_password("a password")


def write(tmp_path: Path, manager: str, admins: str = f'admin = "{HASH}"\n') -> Path:
    p = tmp_path / "manager.toml"
    p.write_text(f"[manager]\n{manager}\n[admins]\n{admins}")
    p.chmod(0o600)
    return p


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as e:
        load(path)
    return str(e.value)


# -- config -----------------------------------------------------------------------------------------------------


def test_the_shipped_sample_loads() -> None:
    s = load(ROOT / "configs" / "manager.toml")
    assert (s.address, s.port, s.url) == ("192.168.2.251", 8443, "https://192.168.2.251:8443/")
    assert s.control_socket == "/run/natt/concentrator.sock" and list(s.admins) == ["admin"]
    assert s.verify("admin", "lab-admin-pass") and not s.verify("admin", "lab-admin-pas")
    assert not s.verify("nobody", "lab-admin-pass")


def test_defaults(tmp_path: Path) -> None:
    s = load(write(tmp_path, 'address = "192.0.2.1"'))
    assert (s.port, s.session_lifetime, s.idle_timeout, s.throttle) == (8443, 28800, 1800, Throttle(3, 1.0, 300.0))
    assert s.tls_cert is None and s.state_dir == Path("/var/lib/natt-manager")


def test_an_unknown_key_is_refused_with_its_line(tmp_path: Path) -> None:
    p = write(tmp_path, 'address = "192.0.2.1"\nlisten_port = 8443')
    assert refused(p) == f"{p}:3: unknown key 'listen_port' in [manager]"


def test_the_address_is_required_and_must_be_an_address(tmp_path: Path) -> None:
    assert "'address' is required" in refused(write(tmp_path, "port = 8443"))
    assert "is not an IP address" in refused(write(tmp_path, 'address = "manager.example"'))


def test_a_password_instead_of_a_hash_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, 'address = "192.0.2.1"', 'admin = "hunter22"\n')
    assert refused(p) == (f"{p}:4: [admins] admin: store a hash written by 'natt-manager passwd', not a password")


def test_no_admins_is_refused(tmp_path: Path) -> None:
    assert "[admins] is empty" in refused(write(tmp_path, 'address = "192.0.2.1"', ""))


def test_cert_without_key_is_refused(tmp_path: Path) -> None:
    assert "set both 'tls_cert' and 'tls_key'" in refused(write(tmp_path, 'address = "192.0.2.1"\ntls_cert = "c.pem"'))


def test_idle_longer_than_lifetime_is_refused(tmp_path: Path) -> None:
    p = write(tmp_path, 'address = "192.0.2.1"\nsession_lifetime = 600\nidle_timeout = 900')
    assert "'idle_timeout' (900) must not be above 'session_lifetime' (600)" in refused(p)


def test_hashes_readable_by_others_are_refused_on_check(tmp_path: Path) -> None:
    p = write(tmp_path, 'address = "192.0.2.1"')
    p.chmod(0o644)
    with pytest.raises(ConfigError, match="holds the admins' password hashes, readable by everyone"):
        load(p).secrets.enforce(None)


def test_passwd_and_check_commands(tmp_path: Path) -> None:
    exe = ROOT / ".venv" / "bin" / "natt-manager"
    if not exe.exists():
        pytest.skip("natt-manager is not installed in .venv")
    out = subprocess.run([exe, "passwd", "ops", "--password-stdin"], input="long enough secret\n",
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith('ops = "scrypt$'), out.stderr
    assert "long enough secret" not in out.stdout
    p = write(tmp_path, 'address = "192.0.2.1"', out.stdout)
    assert load(p).verify("ops", "long enough secret")
    check = subprocess.run([exe, "check", "--config", str(p)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "OK: listens on https://192.0.2.1:8443/" in check.stdout, check.stderr
    bad = write(tmp_path, 'address = "192.0.2.1"\nport = 0x10000')
    check = subprocess.run([exe, "check", "--config", str(bad)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 2 and "'port' must be a number in 1..65535" in check.stderr
    short = subprocess.run([exe, "passwd", "ops", "--password-stdin"], input="short\n", capture_output=True,
                           text=True, timeout=60)
    assert short.returncode != 0 and "8 characters" in short.stderr


# -- the certificate --------------------------------------------------------------------------------------------


def test_self_signed_certificate_is_made_once_and_kept(tmp_path: Path) -> None:
    first = tls.self_signed(tmp_path / "state", "192.0.2.7")
    cert = x509.load_pem_x509_certificate(first.cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert ipaddress.ip_address("192.0.2.7") in san.get_values_for_type(x509.IPAddress)
    assert os.stat(first.key).st_mode & 0o777 == 0o600
    assert os.stat(tmp_path / "state").st_mode & 0o777 == 0o700
    again = tls.self_signed(tmp_path / "state", "192.0.2.7")
    assert again.fingerprint == first.fingerprint  # kept: a browser that trusted it keeps trusting it
    other = tls.self_signed(tmp_path / "state", "192.0.2.8")
    assert other.fingerprint != first.fingerprint  # another address: a new certificate that names it
    tls.server_context(other)


def test_an_expiring_certificate_is_renewed(tmp_path: Path) -> None:
    old = datetime.datetime.now(datetime.UTC) - tls.VALIDITY + datetime.timedelta(days=10)
    cert_pem, key_pem = tls.make_self_signed("192.0.2.7", old)
    (tmp_path / tls.SELF_SIGNED_CERT).write_bytes(cert_pem)
    (tmp_path / tls.SELF_SIGNED_KEY).write_bytes(key_pem)
    made = tls.self_signed(tmp_path, "192.0.2.7")
    assert made.cert.read_bytes() != cert_pem


def test_a_configured_certificate_that_is_not_one_is_refused(tmp_path: Path) -> None:
    (tmp_path / "c.pem").write_text("not a certificate")
    with pytest.raises(tls.TlsError, match="not a PEM certificate"):
        tls.configured(tmp_path / "c.pem", tmp_path / "k.pem")


# -- sessions and throttle --------------------------------------------------------------------------------------


def test_sessions_expire_by_idle_time_and_lifetime() -> None:
    s = Sessions(lifetime=100, idle_timeout=30)
    a = s.create("admin", 0)
    assert s.get(a.id, 29) is a
    assert s.get(a.id, 58, touch=False) is a  # a poll: not a use
    assert s.get(a.id, 60) is None and len(s) == 0
    b = s.create("admin", 0)
    for t in range(20, 100, 20):
        assert s.get(b.id, t) is b
    assert s.get(b.id, 100) is None
    c = s.create("admin", 0)
    assert csrf_ok(c, c.csrf) and not csrf_ok(c, b.csrf) and not csrf_ok(c, None) and not csrf_ok(c, "")


def test_throttle_doubles_and_decays() -> None:
    t = LoginThrottle(Throttle(free=2, backoff=1.0, backoff_max=8.0))
    for i in range(2):
        t.failed("192.0.2.1", "admin", float(i))
    assert t.wait("192.0.2.1", "admin", 1.0) == 0.0
    waits = []
    for i in range(2, 7):
        t.failed("192.0.2.1", "admin", 10.0 * i)
        waits.append(t.wait("192.0.2.9", "admin", 10.0 * i))  # the login is throttled from anywhere
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0]
    assert t.wait("192.0.2.1", "other", 60.0) == 8.0  # ... and the source for any login
    assert t.wait("192.0.2.9", "other", 60.0) == 0.0
    assert t.wait("192.0.2.1", "admin", 60.0 + 17) == 0.0  # long after: forgotten
    assert t.failures("source", "192.0.2.1") == 0


# -- the diagnosis ----------------------------------------------------------------------------------------------


ROW = {"username": "vpnclient1", "public_ip": "203.0.113.78", "public_port": 1024, "protocol": "IPSec",
       "bytes_rx": 0}


def test_the_seeds_failure_is_diagnosed() -> None:
    d = diagnose(ROW, nat_traversal=False)
    assert d is not None and d.switch_needed
    assert "behind PAT" in d.summary and "cannot cross the PAT" in d.summary
    assert any("203.0.113.78 port 1024, not port 500" in r for r in d.reasons)
    assert "NAT Transparency > IPSec over NAT-T" in d.fix and "reconnect" in d.fix


def test_no_diagnosis_when_data_flows_or_nat_t_carries_it() -> None:
    assert diagnose({**ROW, "bytes_rx": 84}, nat_traversal=False) is None
    assert diagnose({**ROW, "protocol": "IPsec/NAT-T"}, nat_traversal=False) is None
    assert diagnose(ROW, nat_traversal=None) is None  # the setting is not known: no guess


def test_nat_t_on_but_the_session_predates_it() -> None:
    d = diagnose(ROW, nat_traversal=True)
    assert d is not None and not d.switch_needed and "reconnect" in d.summary
    assert diagnose({**ROW, "public_port": 500}, nat_traversal=True) is None  # no PAT in sight: not ours to say


def test_sessions_view_marks_the_rows() -> None:
    view = sessions_view({"summary": {"total_active": 1}, "remote_access": [ROW], "lockouts": []}, False, 2)
    assert view["rows"][0]["diagnosis"]["user"] == "vpnclient1"
    totals = {s["field"]: s["value"] for s in view["summary"]}
    assert totals["active_management"] == "2" and totals["total_active"] == "3"
