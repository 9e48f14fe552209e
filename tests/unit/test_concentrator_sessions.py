"""The concentrator's sessions across rekeys (issue: sessions that last): one row per login, a login time and byte
counters that do not restart at a phase 2 rekey or a phase 1 re-authentication, the detail per IPsec SA, and the
operator's rekey and logout commands.

The daemon's own code runs (Concentrator._on_event, its control commands, Datapath.admit/remove/end_session and
the views); what is simulated is only the wire and the transport: the real IkeEndpoints talk through the protocol
simulation (tests/protocol/sim.py), and the concentrator's SA table is the simulation's node table. The event loop's
clock is the simulation's, so the daemon hands the core the same time the simulation does. No sockets are opened.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from natt.esp.table import Outbound
from natt.ike.config import Phase1Proposal, Phase2Proposal, Timers
from natt.ike.events import Cause, ChildSaUp, IkeSaDown, ModeConfigDone, XauthCheck
from natt.ike.ikesa import State
from natt.wire.constants import NATT_PORT, NON_ESP_MARKER, ExchangeType
from natt.wire.message import Header
from natt_daemons.common.control import ControlError
from natt_daemons.common.datapath import Datapath, DatapathStats, SessionTotals, TransformTotals
from natt_daemons.concentrator import cli, views
from natt_daemons.concentrator import config as conc_config
from natt_daemons.concentrator.daemon import Concentrator
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import Network, Node, Packet, Pat, ipv4_packet

pytestmark = pytest.mark.unit
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SERVER = "192.168.2.10"


class SimDatapath(Datapath):
    """The daemon's Datapath over the simulation's SA table: admit, remove, end_session and the session totals are
    the real ones; only the transport handle differs (the local UDP port, as the simulation's nodes use)."""

    def __init__(self, node: Node) -> None:  # no sockets: nothing here moves packets, the simulation does
        self.node = node
        self.table = node.table
        self.inbound = node.table.inbound
        self.session_totals: dict[int, SessionTotals] = {}
        self.retired: dict[str, TransformTotals] = {}
        self.stats = DatapathStats()

    def install(self, up: ChildSaUp, peer: str) -> Outbound:
        out = self.table.install(up, peer, up.local_port if up.udp_encap else None,
                                 follows_ike=up.udp_encap and up.local_port == NATT_PORT)
        self.node.ups[up.inbound_spi] = up
        return out

    def remove(self, inbound_spi: int) -> Any:
        self.node.ups.pop(inbound_spi, None)
        return super().remove(inbound_spi)


class SimDriver:
    """IkeDriver.flush: what the core queued goes out (here: the simulation moves it until all is quiet)."""

    def __init__(self, net: Network) -> None:
        self.net = net

    def flush(self) -> None:
        self.net.pump()


class SimLoop(asyncio.SelectorEventLoop):
    """The daemon reads the core's time from its loop: here that is the simulation's clock."""

    def __init__(self, net: Network) -> None:
        super().__init__()
        self.net = net

    def time(self) -> float:
        return self.net.now


class Lab:
    """The seed's set-up in memory, with our concentrator daemon (minus its sockets) on the public side."""

    def __init__(self, tmp_path: Path, **policy: object) -> None:
        self.net = Network(make_policy(**policy), CONCENTRATOR,
                           Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
        conc = self.net.concentrator
        settings = conc_config.load(CONFIGS / "concentrator.toml")
        settings.control_socket = str(tmp_path / "c.sock")
        settings.policy = conc.endpoint.policy  # type: ignore[assignment]
        self.daemon = c = Concentrator(settings)
        c.endpoint = conc.endpoint
        c.datapath = SimDatapath(conc)
        c.driver = SimDriver(self.net)  # type: ignore[assignment]
        conc.take_events = self._conc_events  # type: ignore[method-assign]
        self.drop: Callable[[Packet], bool] = lambda p: False
        send = self.net.send
        self.net.send = lambda p: None if self.drop(p) else send(p)  # type: ignore[method-assign]

    def _conc_events(self) -> bool:
        """The concentrator's events go to the daemon's handler; the password check (a worker thread in the
        daemon) is answered at once."""
        ep, answered = self.net.concentrator.endpoint, False
        while (e := ep.next_event()) is not None:
            self.net.concentrator.events.append(e)
            if isinstance(e, XauthCheck):
                assert ep.policy is not None
                ep.xauth_verdict(e.ticket, ep.policy.verify_user(e.user, e.password), ep.now)
                answered = True
            else:
                self.daemon._on_event(e)
        return answered

    def run(self, body: Callable[[], Awaitable[None]]) -> None:
        try:
            with asyncio.Runner(loop_factory=lambda: SimLoop(self.net)) as runner:
                runner.run(body())
        finally:
            self.daemon._xauth_pool.shutdown()

    def client(self, name: str = "client1", user: str = "vpnclient1", address: str = "10.10.10.2",
               **profile: object) -> Node:
        node = self.net.add_client(name, address)
        self.net.connect(name, make_profile(user, **profile))
        self.net.pump()
        assert node.of(ChildSaUp), "connected"
        return node

    @property
    def dp(self) -> SimDatapath:
        return self.daemon.datapath  # type: ignore[return-value]

    async def sessions(self) -> dict[str, Any]:
        return await self.daemon._cmd_sessions({})  # type: ignore[no-any-return]

    async def rows(self) -> dict[str, dict[str, Any]]:
        return {r["username"]: r for r in (await self.sessions())["remote_access"]}

    async def detail(self, user: str = "vpnclient1") -> dict[str, Any]:
        (d,) = await self.daemon._cmd_session({"user": user})
        return d  # type: ignore[no-any-return]


class Traffic:
    """One packet each way per step between a client and the server behind the concentrator; what each side's
    decryption delivered is what the session's Bytes Rx / Tx must say."""

    def __init__(self, lab: Lab, node: Node) -> None:
        self.lab, self.node = lab, node
        self.rx = self.tx = self.packets = 0  # as the concentrator counts them (inner bytes)

    def step(self) -> None:
        net, node = self.lab.net, self.node
        address = node.of(ModeConfigDone)[-1].address
        up = ipv4_packet(address, SERVER, b"u" * 40)
        down = ipv4_packet(SERVER, address, b"d" * 100)
        before = len(net.concentrator.delivered), len(node.delivered)
        assert net.route_esp(node, up) is not None and net.route_esp(net.concentrator, down) is not None
        assert (len(net.concentrator.delivered), len(node.delivered)) == (before[0] + 1, before[1] + 1), \
            (node.esp_errors, net.concentrator.esp_errors)
        self.rx += len(up)
        self.tx += len(down)
        self.packets += 1

    def check(self, row: dict[str, Any]) -> None:
        assert (row["bytes_rx"], row["bytes_tx"]) == (self.rx, self.tx), "every byte of the session, once"
        assert (row["packets_rx"], row["packets_tx"]) == (self.packets, self.packets)


def _informational_from(node: Node) -> Callable[[Packet], bool]:
    def drop(p: Packet) -> bool:
        if p.src[0] != node.address or p.dst[0] != CONCENTRATOR:
            return False
        data = p.data[len(NON_ESP_MARKER):] if p.data.startswith(NON_ESP_MARKER) else p.data
        try:
            return Header.decode(data).exchange == ExchangeType.INFORMATIONAL
        except Exception:
            return False  # ESP

    return drop


def test_phase2_rekeys_keep_one_row_and_count_every_byte(tmp_path: Path) -> None:
    """vpnc never rekeys: the concentrator does, every ~55 s of a 60 s lifetime. The row stays one, with the same
    login time, and Bytes Tx/Rx keep growing by exactly what passed (the removed pairs' counts are kept)."""
    lab = Lab(tmp_path, phase2_lifetime=60)

    async def body() -> None:
        client = lab.client(timers=Timers(rekey_margin=0.0, dpd_interval=30.0),
                            phase2=(Phase2Proposal(lifetime=60),))
        traffic = Traffic(lab, client)
        first = (await lab.rows())["vpnclient1"]
        grace_seen = False
        for _ in range(260):
            lab.net.advance(0.5, step=0.5)
            traffic.step()
            rows = await lab.rows()
            assert list(rows) == ["vpnclient1"]
            row = rows["vpnclient1"]
            assert (row["session_id"], row["login_time"]) == (first["session_id"], first["login_time"])
            traffic.check(row)
            detail = await lab.detail()
            assert {k: detail[k] for k in ("bytes_rx", "packets_rx")} == \
                {"bytes_rx": row["bytes_rx"], "packets_rx": row["packets_rx"]}
            replaced = [s for s in detail["ipsec"] if s["replaced"]]
            if replaced:  # make-before-break: old pairs live for the grace period, their deletion announced
                grace_seen = True
                assert all(s["delete_in"] is not None and s["delete_in"] <= 10 for s in replaced)
            current = sorted(s["local_address"] for s in detail["ipsec"] if not s["replaced"])
            assert len(current) == 2 and len(set(current)) == 2, "one current pair per tunnel"
        rekeys = [u for u in lab.net.concentrator.of(ChildSaUp) if u.rekey_of is not None]
        assert len(rekeys) >= 4 and grace_seen
        (totals,) = lab.dp.session_totals.values()
        assert totals.packets_rx > 0, "removed pairs carried traffic, and it is still counted"
        summary = (await lab.sessions())["summary"]
        assert (summary["total_cumulative"], summary["peak_concurrent"], summary["total_active"]) == (1, 1, 1)

    lab.run(body)


def test_reauthentication_is_one_session_with_one_login_time(tmp_path: Path) -> None:
    """The client re-authenticates (a new IKE SA, the same session id): while both IKE SAs live there is still one
    row, its current IKE SA the new one, both SAs' pairs in the detail (the old ones replaced); when the old SA
    goes, the login time, the address and the counters stay."""
    lab = Lab(tmp_path)

    async def body() -> None:
        client = lab.client()
        traffic = Traffic(lab, client)
        for _ in range(5):
            lab.net.advance(1.0)
            traffic.step()
        before = (await lab.rows())["vpnclient1"]
        (old_client_sa,) = client.endpoint.sas
        (old,) = lab.net.concentrator.endpoint.sas.values()
        lab.drop = _informational_from(client)  # the client's DELETE of its old SA is lost for now
        assert client.endpoint.reauthenticate(old_client_sa, lab.net.now) is not None
        lab.net.pump()
        lab.drop = lambda p: False
        conc_sas = lab.net.concentrator.endpoint.sas
        assert len(conc_sas) == 2 and len({sa.session_id for sa in conc_sas.values()}) == 1
        new = next(sa for sa in conc_sas.values() if sa is not old)
        traffic.step()

        rows = await lab.rows()
        assert list(rows) == ["vpnclient1"]
        row = rows["vpnclient1"]
        assert row["ike_sas"] == 2
        assert (row["session_id"], row["login_time"], row["assigned_ip"]) == \
            (before["session_id"], before["login_time"], before["assigned_ip"])
        traffic.check(row)
        detail = await lab.detail()
        assert detail["ike"]["ike_sa_id"] == new.id and detail["ike"]["session_id"] == row["session_id"]
        assert [(s["ike_sa_id"], s["current"]) for s in detail["ike_sas"]] == [(old.id, False), (new.id, True)]
        # The new SA took the session over at once (its pairs moved to it), then made its own pairs.
        assert sorted((s["ike_sa_id"], s["replaced"]) for s in detail["ipsec"]) == \
            [(new.id, False), (new.id, False), (new.id, True), (new.id, True)]
        assert not old.children
        assert sum(s["bytes_received"] for s in detail["ipsec"]) == row["bytes_rx"], "nothing removed yet"
        assert (await lab.sessions())["summary"]["total_cumulative"] == 1

        # The DELETE arrives after all: the old SA goes, the session lives on in the new one.
        lab.net.concentrator.endpoint.delete_sa(old.id, lab.net.now, "peer deleted the SA", Cause.PEER_DELETED)
        lab.net.pump()
        row = (await lab.rows())["vpnclient1"]
        assert row["ike_sas"] == 1 and (row["session_id"], row["login_time"]) == \
            (before["session_id"], before["login_time"])
        traffic.check(row)
        assert list(lab.daemon.login_wall) == [row["session_id"]] and list(lab.dp.session_totals) == \
            [row["session_id"]]
        traffic.step()
        traffic.check((await lab.rows())["vpnclient1"])

    lab.run(body)


def test_reauthentications_on_their_own_schedule_keep_the_session(tmp_path: Path) -> None:
    """Phase 1 lifetime 120 s: the client re-authenticates before each expiry (deleting its old SA at once). At
    every step one row, the first login time, and the exact counters."""
    lab = Lab(tmp_path, phase1_lifetime=120)

    async def body() -> None:
        client = lab.client(phase1=(Phase1Proposal(lifetime=120),))
        traffic = Traffic(lab, client)
        first = (await lab.rows())["vpnclient1"]
        for _ in range(400):
            lab.net.advance(1.0)
            traffic.step()
            row = (await lab.rows())["vpnclient1"]
            assert (row["session_id"], row["login_time"]) == (first["session_id"], first["login_time"])
            traffic.check(row)
        ends = lab.net.concentrator.of(IkeSaDown)
        assert len(ends) >= 3, "three IKE SAs replaced"
        assert len(lab.daemon.login_wall) == 1 and len(lab.dp.session_totals) == 1
        assert (await lab.sessions())["summary"]["total_cumulative"] == 1

    lab.run(body)


def test_logout_tells_the_client_and_ends_the_sessions_books(tmp_path: Path) -> None:
    lab = Lab(tmp_path)

    async def body() -> None:
        one = lab.client()
        two = lab.client("client2", "vpnclient2", "10.10.10.3")
        Traffic(lab, one).step()
        rows = await lab.rows()
        assert set(rows) == {"vpnclient1", "vpnclient2"}
        assert rows["vpnclient1"]["session_id"] != rows["vpnclient2"]["session_id"]
        with pytest.raises(ControlError, match="no session for user 'nobody'"):
            await lab.daemon._cmd_logout({"user": "nobody"})
        assert await lab.daemon._cmd_logout({"user": "vpnclient1"}) == {"logged_out": 1}
        (down,) = one.of(IkeSaDown)
        assert "logged out by the administrator" in down.reason, "the client was told why"
        assert [d.cause for d in lab.net.concentrator.of(IkeSaDown)] == [Cause.ADMIN]
        survivor = rows["vpnclient2"]["session_id"]
        assert set(lab.daemon.login_wall) == {survivor} and set(lab.dp.session_totals) == {survivor}
        assert set(lab.daemon._sa_session) == {two_sa.id for two_sa in lab.net.concentrator.endpoint.sas.values()}
        assert list(await lab.rows()) == ["vpnclient2"]
        assert not two.of(IkeSaDown)

    lab.run(body)


def test_rekey_command(tmp_path: Path) -> None:
    """`rekey USER` (phase 2): the concentrator starts a Quick Mode per pair now, the old pairs are replaced after
    the grace period, and the counters go on. `--phase1` is refused with the reason and when phase 1 ends."""
    lab = Lab(tmp_path)

    async def body() -> None:
        client = lab.client()
        traffic = Traffic(lab, client)
        lab.net.advance(5.0)
        traffic.step()
        d = lab.daemon
        with pytest.raises(ControlError, match="no session"):
            await d._cmd_rekey({"user": "nobody"})
        with pytest.raises(ControlError, match="phase must be 1 or 2"):
            await d._cmd_rekey({"user": "vpnclient1", "phase": 3})
        with pytest.raises(ControlError) as refused:
            await d._cmd_rekey({"user": "vpnclient1", "phase": 1})
        text = str(refused.value)
        assert "\n" not in text and "re-authenticates" in text and "expires at" in text and "(in 23:59:" in text

        assert await d._cmd_rekey({"user": "vpnclient1"}) == {"quick_modes": 2, "sessions": 1}
        traffic.step()
        detail = await lab.detail()
        assert len(detail["ipsec"]) == 4
        assert sorted(s["replaced"] for s in detail["ipsec"]) == [False, False, True, True]
        assert {s["delete_in"] for s in detail["ipsec"] if s["replaced"]} == {10}
        traffic.check((await lab.rows())["vpnclient1"])
        lab.net.advance(12.0)
        traffic.step()
        detail = await lab.detail()
        assert len(detail["ipsec"]) == 2 and not any(s["replaced"] for s in detail["ipsec"])
        assert {s["expires_in"] for s in detail["ipsec"]} <= {28800 - 12, 28800 - 13}, detail["ipsec"]
        traffic.check((await lab.rows())["vpnclient1"])
        assert {e.cause for e in lab.net.concentrator.of(IkeSaDown)} == set()

    lab.run(body)


def test_detail_shows_the_seed_fields_and_lifetimes(tmp_path: Path) -> None:
    lab = Lab(tmp_path)

    async def body() -> None:
        client = lab.client()
        Traffic(lab, client).step()
        lab.net.advance(100.0)
        d = await lab.detail()
        ike = d["ike"]
        assert ike["rekey_interval"] == 86400 and 86400 - 101 <= ike["expires_in"] <= 86400 - 100
        assert ike["negotiation_mode"] == "Aggressive" and ike["udp_destination_port"] == 4500
        assert ike["authentication_mode"] == "Pre-Shared Keys (XAUTH)"
        assert len(d["ipsec"]) == 2
        for s in d["ipsec"]:
            assert s["rekey_interval"] == 28800 and 28800 - 101 <= s["expires_in"] <= 28800 - 100
            assert s["protocol"] == "IPsec/NAT-T" and s["udp_destination_port"] == 4500
            assert not s["replaced"] and s["delete_in"] is None
            assert s["established_at"] <= d["login_time"] + 1
        text = cli._detail_text([d])
        assert "Rekey Time Interval    : 86400 seconds (expires in 23:58:" in text
        assert "IPsec/NAT-T Session 2" in text and "(active)" in text

    lab.run(body)


def test_group_sessions_skips_logins_under_way_and_picks_the_newest_established() -> None:
    from natt.ike.ikesa import IkeSA, Role

    def sa(id_: int, session: int, state: State, established: float | None, user: str = "u") -> IkeSA:
        s = IkeSA(id_, Role.RESPONDER, bytes(8), bytes(8), ("a", 500), ("b", 500), 0.0)
        s.session_id, s.state, s.established_at, s.user = session, state, established, user
        return s

    sessions = views.group_sessions([
        sa(1, 1, State.ESTABLISHED, 10.0), sa(5, 1, State.ESTABLISHED, 50.0),  # a re-authentication
        sa(2, 2, State.ESTABLISHED, 20.0), sa(6, 2, State.XAUTH, None),  # one under way
        sa(3, 3, State.MODECFG, 30.0),  # not logged in yet
        sa(4, 4, State.ESTABLISHED, 40.0, user=""),  # no user: not a remote access session
    ])
    assert [(s.id, [x.id for x in s.sas], s.current.id) for s in sessions] == [(1, [1, 5], 5), (2, [2, 6], 2)]
    totals = {1: SessionTotals(bytes_rx=7, packets_rx=1)}
    from natt.esp.table import SaTable

    assert views.counters(sessions[0], SaTable(), totals) == \
        {"bytes_tx": 0, "bytes_rx": 7, "packets_tx": 0, "packets_rx": 1}
    assert views.counters(sessions[1], SaTable(), totals)["bytes_rx"] == 0


def test_rekey_cli_defaults_to_phase2(monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    sent: list[tuple[str, dict[str, Any] | None]] = []

    def request(path: str, cmd: str, args: dict[str, Any] | None = None) -> Any:
        sent.append((cmd, args))
        return {"quick_modes": 2, "sessions": 1}

    monkeypatch.setattr(cli, "request", request)
    runner = CliRunner()
    for argv in (["rekey", "bob"], ["rekey", "bob", "--phase2"], ["rekey", "bob", "--phase1"]):
        result = runner.invoke(cli.main, argv)
        assert result.exit_code == 0, result.output
    assert result.output.strip() == "started 2 Quick Mode(s) for 1 session(s)"
    assert [a["phase"] for _, a in sent if a] == [2, 2, 1] and {c for c, _ in sent} == {"rekey"}
    assert runner.invoke(cli.main, ["rekey"]).exit_code == 2, "USER is required"
