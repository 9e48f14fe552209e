"""A hostile member of the group against the REAL concentrator daemon (the lab twin of tests/protocol/test_hostile.py).

The seed's two clients are connected through the PAT gateway; client2 (vpnclient2) is the victim and pings the
server behind the concentrator the whole time. From pubclient (203.0.113.20, no NAT) an attacker holding the
group name, its PSK and vpnclient1's credentials (tests/hostile.py, built from the real protocol core) tries:

- the XAUTH bypass: Quick Modes while its XAUTH answer is held back (with a wrong and with the right password);
- the address claim: XAUTH passed, Mode Config never asked for, Quick Modes naming the victim's address;
- the address claim from an established session: Mode Config gave the attacker an address of its own, then its
  Quick Modes name the victim's (the selector check, INVALID-ID-INFORMATION; the session stays).

It must get no child SA; the concentrator counts and logs the refusals; its sessions view never shows the
victim's address for another user; the victim's ping stream goes on (a couple of lost pings at most); both
clients stay connected and pass traffic; the concentrator logs no traceback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from natt_daemons.common.control import ControlError
from natt_daemons.lab import scenario
from natt_daemons.lab.scenario import LAB_USERS, Scenario, ScenarioConfig
from natt_daemons.lab.topology import ADDR, CLIENT1, CLIENT2, PUBCLIENT

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
]
REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"
PSK = "ciscovpn-lab-key"  # configs/concentrator.toml, group ciscovpn (every member holds it)
ATTACKER_USER = "vpnclient1"
VICTIM_USER = "vpnclient2"
ATTACK_SECONDS = 10.0  # each attacker run (tests/hostile.py bounds itself to this)
ATTACK_TRIES = 5  # Quick Modes per run, one a second
PING_INTERVAL = 0.2
PING_MAX = 400  # the victim's stream: at most 80 s at 0.2 s, stopped (SIGINT) once the attacks are over
ALLOWED_LOSS = 2  # "a couple of pings"


@dataclass
class Campaign:
    """Everything the attacks left behind, for the tests below to judge."""

    victim_address: str
    client1_address: str
    attacks: list[tuple[str, dict]] = field(default_factory=list)  # (label, the attacker's JSON line)
    refusals_before: dict[str, int] = field(default_factory=dict)
    refusals_after: dict[str, int] = field(default_factory=dict)
    status_after: dict = field(default_factory=dict)
    ping_sent: int = 0
    ping_received: int = 0
    ping_missing: list[int] = field(default_factory=list)
    ping_output: str = ""
    sessions_polls: int = 0
    sessions_errors: list[str] = field(default_factory=list)
    victim_address_owners: Counter = field(default_factory=Counter)  # usernames seen with the victim's address
    attacker_rows: list[dict] = field(default_factory=list)  # sessions rows from the attacker's public address
    log_entries: list[dict] = field(default_factory=list)  # the concentrator's log since the attacks began
    seconds: float = 0.0

    @property
    def refusal_delta(self) -> dict[str, int]:
        keys = set(self.refusals_before) | set(self.refusals_after)
        d = {k: self.refusals_after.get(k, 0) - self.refusals_before.get(k, 0) for k in sorted(keys)}
        return {k: v for k, v in d.items() if v}


def _attacker(sc: Scenario, attack: str, password: str, claim: str | None = None, *extra: str) -> dict:
    """One run of tests/hostile.py in pubclient; its JSON line."""
    argv = [sys.executable, "-m", "tests.hostile", "--peer", ADDR.conc_public, "--local", ADDR.pubclient,
            "--psk", PSK, "--user", ATTACKER_USER, "--password", password, "--attack", attack,
            "--tries", str(ATTACK_TRIES), "--seconds", str(ATTACK_SECONDS)]
    if claim is not None:
        argv += ["--claim", claim]
    argv += extra
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = sc.lab.run(PUBCLIENT, argv, cwd=str(REPO), env=env, timeout=ATTACK_SECONDS + 30)
    assert r.returncode == 0, f"the attacker failed to run ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no JSON line from the attacker:\n{r.stdout}\n{r.stderr}"
    return json.loads(lines[-1])


class _SessionsWatch(threading.Thread):
    """Polls the concentrator's sessions view while the attacks run (bounded: stops when told, or after 120 s)."""

    def __init__(self, sc: Scenario, camp: Campaign) -> None:
        super().__init__(daemon=True)
        self.sc, self.camp = sc, camp
        self.done = threading.Event()

    def run(self) -> None:
        end = time.monotonic() + 120
        while not self.done.is_set() and time.monotonic() < end and self.camp.sessions_polls < 2000:
            self.poll()
            self.done.wait(0.25)

    def poll(self) -> None:
        try:
            view = self.sc.view("concentrator", "sessions")
        except (ControlError, OSError) as e:
            self.camp.sessions_errors.append(repr(e))
            return
        self.camp.sessions_polls += 1
        for row in view["remote_access"]:  # type: ignore[index]
            if row["assigned_ip"] == self.camp.victim_address:
                self.camp.victim_address_owners[row["username"]] += 1
            if row["public_ip"] == ADDR.pubclient:
                seen = {k: row[k] for k in ("username", "assigned_ip", "public_ip", "public_port", "protocol")}
                if seen not in self.camp.attacker_rows:
                    self.camp.attacker_rows.append(seen)


def _ping_stream(sc: Scenario) -> subprocess.Popen:
    """The victim's ping stream (ip netns exec execs ping itself, so the pid is ping's)."""
    argv = sc.lab.argv(CLIENT2, ["ping", "-n", "-O", "-i", str(PING_INTERVAL), "-c", str(PING_MAX), "-W", "1",
                                 ADDR.server])
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                            text=True)


def _stop_ping(p: subprocess.Popen, camp: Campaign) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGINT)  # ping prints its statistics and exits
    try:
        out, _ = p.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        out, _ = p.communicate(timeout=5)
    camp.ping_output = out
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, f"no ping statistics:\n{out[-2000:]}"
    camp.ping_sent, camp.ping_received = int(m.group(1)), int(m.group(2))
    answered = {int(s) for s in re.findall(r"icmp_seq=(\d+) ttl=", out)}
    camp.ping_missing = [s for s in range(1, camp.ping_sent + 1) if s not in answered]


def _report(camp: Campaign) -> str:
    lines = [f"victim (client2, {VICTIM_USER}) address {camp.victim_address}; client1 address {camp.client1_address}",
             f"campaign took {camp.seconds:.1f} s"]
    for label, res in camp.attacks:
        lines.append(f"attack {label}: {json.dumps(res)}")
    lines.append(f"concentrator refusals before: {json.dumps(camp.refusals_before)}")
    lines.append(f"concentrator refusals after:  {json.dumps(camp.refusals_after)}")
    lines.append(f"refusals added by the attacks: {json.dumps(camp.refusal_delta)}")
    lines.append(f"victim pings: sent {camp.ping_sent}, received {camp.ping_received}, "
                 f"lost {camp.ping_sent - camp.ping_received}, missing icmp_seq {camp.ping_missing}")
    lines.append(f"sessions polls {camp.sessions_polls} (errors {len(camp.sessions_errors)}); "
                 f"users seen with {camp.victim_address}: {dict(camp.victim_address_owners)}")
    lines.append(f"attacker rows seen in sessions: {camp.attacker_rows}")
    names = Counter(e["name"] for e in camp.log_entries if e.get("peer") == ADDR.pubclient)
    lines.append(f"concentrator log entries for {ADDR.pubclient} by name: {dict(sorted(names.items()))}")
    texts = Counter(" ".join(e["text"].split("\n", 1)[-1].split()) for e in camp.log_entries
                    if e.get("peer") == ADDR.pubclient and e["name"] in ("DECODE_ERROR", "EXCHANGE_REFUSED",
                                                                        "IKE_SA_DELETED", "MESSAGE_REFUSED"))
    lines += [f"  {n} x {t}" for t, n in texts.most_common()]
    return "\n".join(lines)


@pytest.fixture(scope="module")
def sc() -> Iterator[Scenario]:
    # The attacker logs in with vpnclient1's password while client1 is logged in as vpnclient1: the group lets
    # one user have several sessions here, so that XAUTH lets it through to what is tested (what comes after).
    with scenario.seed_lab("hl", CONFIGS, ScenarioConfig(concentrator_extra={"max_logins": "0"})) as s:
        yield s


@pytest.fixture(scope="module")
def campaign(sc: Scenario) -> Campaign:
    st1, st2 = sc.wait_connected("client1"), sc.wait_connected("client2")
    assert st2["username"] == VICTIM_USER and st1["username"] == ATTACKER_USER
    camp = Campaign(victim_address=st2["assigned_address"], client1_address=st1["assigned_address"])
    assert camp.victim_address and camp.victim_address != camp.client1_address
    conc = sc.status("concentrator")
    camp.refusals_before = dict(conc["refusals"])
    last = sc.view("concentrator", "log")
    since = max((e["seq"] for e in last), default=0)  # type: ignore[union-attr]

    t0 = time.monotonic()
    ping = _ping_stream(sc)
    watch = _SessionsWatch(sc, camp)
    watch.start()
    try:
        time.sleep(2)  # a few pings before the first attack
        camp.attacks.append(("xauth-bypass, wrong password",
                             _attacker(sc, "xauth-bypass", "wrong-password")))
        camp.attacks.append(("xauth-bypass, right password",
                             _attacker(sc, "xauth-bypass", LAB_USERS[ATTACKER_USER])))
        camp.attacks.append((f"claim {camp.victim_address}",
                             _attacker(sc, "claim", LAB_USERS[ATTACKER_USER], camp.victim_address)))
        camp.attacks.append((f"claim {camp.victim_address} after Mode Config",
                             _attacker(sc, "claim", LAB_USERS[ATTACKER_USER], camp.victim_address,
                                       "--after-modecfg")))
        time.sleep(2)  # the stream goes on a little after the last attack
    finally:
        watch.done.set()
        watch.join(timeout=10)
        _stop_ping(ping, camp)
    camp.seconds = time.monotonic() - t0
    camp.status_after = sc.status("concentrator")
    camp.refusals_after = dict(camp.status_after["refusals"])
    camp.log_entries = list(sc.view("concentrator", "log", {"since": since}))  # type: ignore[arg-type]
    print("\n" + _report(camp))
    return camp


def test_attacker_gets_no_child_sa(campaign: Campaign) -> None:
    for label, res in campaign.attacks:
        assert res["quick_modes_sent"] >= 1, f"{label}: the attacker never got as far as a Quick Mode: {res}"
        assert res["child_sas"] == 0, f"{label}: the attacker got a child SA: {res}"


def test_xauth_outcome_is_as_expected(campaign: Campaign) -> None:
    (_, wrong), (_, right), (_, claim), (_, established) = campaign.attacks
    # The bypass holds its XAUTH answer back: no verdict at all, whatever the password.
    assert wrong["xauth"] == [] and right["xauth"] == []
    # The claims complete XAUTH with vpnclient1's real password (from another address than client1).
    assert claim["xauth"] == [True], claim
    assert established["xauth"] == [True], established
    own = established.get("own_address")
    assert own and own not in (campaign.victim_address, campaign.client1_address), established


def test_claim_from_an_established_session_is_told_invalid_id(campaign: Campaign) -> None:
    """The selector check: refused with INVALID-ID-INFORMATION (18), the attacker's session is not torn down."""
    _, res = campaign.attacks[3]
    assert 18 in res["notifies"], res
    assert res["down"] == [], "an authenticated user's bad proposal is refused, its session stays"
    d = campaign.refusal_delta
    assert d.get("INVALID-ID-INFORMATION", 0) >= res["quick_modes_sent"], d
    refused = [e for e in campaign.log_entries if e.get("peer") == ADDR.pubclient and e["name"] == "EXCHANGE_REFUSED"]
    for e in refused[:2]:
        print(e["text"])
    assert [e for e in refused if campaign.victim_address in e["message"]], \
        f"no EXCHANGE_REFUSED naming {campaign.victim_address}: {[e['text'] for e in refused]}"
    mine = [r for r in campaign.attacker_rows if r["username"] == ATTACKER_USER]
    assert mine and {r["assigned_ip"] for r in mine} == {res["own_address"]}, campaign.attacker_rows


def test_refusals_are_counted(campaign: Campaign) -> None:
    d = campaign.refusal_delta
    print(f"refusals added: {d}")
    # Before Mode Config every attack Quick Mode is refused by the state table, by its header (retransmissions
    # add more); after it, by the selector check.
    by_table = sum(res["quick_modes_sent"] for _, res in campaign.attacks[:3])
    assert d.get("not-allowed:QUICK_MODE", 0) >= by_table, f"{by_table} attack Quick Modes, refusals counted: {d}"
    assert d.get("not-allowed", 0) >= d.get("not-allowed:QUICK_MODE", 0)
    assert d.get("INVALID-ID-INFORMATION", 0) >= campaign.attacks[3][1]["quick_modes_sent"], d


def test_victim_address_is_never_shown_for_another_user(campaign: Campaign) -> None:
    assert campaign.sessions_polls >= 10, f"too few polls: {campaign.sessions_polls} {campaign.sessions_errors}"
    owners = set(campaign.victim_address_owners)
    assert owners <= {VICTIM_USER}, f"{campaign.victim_address} shown for {owners}"
    assert VICTIM_USER in owners, "the victim's own session stays listed throughout"
    assert not [r for r in campaign.attacker_rows if r["assigned_ip"] == campaign.victim_address]


def test_victim_ping_stream_uninterrupted(campaign: Campaign) -> None:
    lost = campaign.ping_sent - campaign.ping_received
    assert campaign.ping_sent >= 50, campaign.ping_output[-2000:]
    assert lost <= ALLOWED_LOSS, f"the victim lost {lost} pings (icmp_seq {campaign.ping_missing})"


def test_both_clients_still_connected_and_pass_traffic(sc: Scenario, campaign: Campaign) -> None:
    for name, role, address in (("client1", CLIENT1, campaign.client1_address),
                                ("client2", CLIENT2, campaign.victim_address)):
        st = sc.status(name)
        assert st["state"] == "connected", f"{name}: {st.get('state')} {st.get('last_error')}"
        assert st["assigned_address"] == address, f"{name} kept its address"
        assert sc.ping(role, ADDR.server), f"{name} still reaches {ADDR.server}"
    rows = sc.view("concentrator", "sessions")["remote_access"]  # type: ignore[index]
    mine = {(r["username"], r["assigned_ip"]) for r in rows if r["public_ip"] == ADDR.pat_outside}
    assert mine == {(ATTACKER_USER, campaign.client1_address), (VICTIM_USER, campaign.victim_address)}, rows


def test_concentrator_log_has_the_refusals(campaign: Campaign) -> None:
    ours = [e for e in campaign.log_entries if e.get("peer") == ADDR.pubclient]
    refused = [e for e in ours if e["name"] in ("MESSAGE_REFUSED", "EXCHANGE_REFUSED")]
    for e in refused[:6]:
        print(e["text"])
    qm = [e for e in refused if e["name"] == "MESSAGE_REFUSED" and "Quick Mode" in e["message"]]
    assert qm, f"no MESSAGE_REFUSED for a Quick Mode from {ADDR.pubclient}: {[e['text'] for e in ours][-20:]}"
    states = {e["fields"].get("state") for e in qm}
    print(f"{len(qm)} Quick Modes refused (MESSAGE_REFUSED) in states {states}")
    assert "xauth" in states, "refused while XAUTH was pending"
    assert states & {"modecfg", "xauth-status"}, "refused after XAUTH, before Mode Config"


def test_concentrator_logged_no_traceback(sc: Scenario, campaign: Campaign) -> None:
    text = sc.procs["concentrator"].log()
    noted = [ln for ln in text.splitlines() if re.search(r"WARNING|ERROR|CRITICAL|Exception", ln)]
    print(f"concentrator stderr log: {len(text.splitlines())} lines, {len(noted)} warnings/errors")
    for ln in noted[:20]:
        print("  " + ln)
    assert sc.procs["concentrator"].alive
    assert "Traceback" not in text, text[-4000:]
