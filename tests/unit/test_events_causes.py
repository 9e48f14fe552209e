"""The logs branch on typed causes (natt.ike.events.Cause), never on the reason text, and word the new events:
XAUTH lockouts, refused messages, the operator's unlock."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from natt.events import render_concentrator
from natt.events.ikelog import IkeLogger
from natt.ike import events as E
from natt.ike.events import Cause
from natt.wire.constants import ExchangeType, NotifyType

pytestmark = pytest.mark.unit

PEER = "203.0.113.78"
T = datetime(2003, 1, 1, tzinfo=UTC).timestamp()


def _log(**kw: Any) -> IkeLogger:
    return IkeLogger("concentrator", **kw)


def _names(logger: IkeLogger) -> list[str | None]:
    return [e.name for e in logger.log]


def _failed(reason: str, cause: Cause, notify: int | None = None, sa: Any = None) -> IkeLogger:
    logger = _log()
    logger.record(E.ExchangeFailed(1, PEER, reason, notify, True, cause), T, sa)
    return logger


def test_phase1_auth_failure_is_the_cause_not_the_text() -> None:
    logger = _failed("XAUTH-looking words in a PSK failure", Cause.AUTH_FAILED, NotifyType.AUTHENTICATION_FAILED)
    assert _names(logger) == ["AUTH_FAILED"]


def test_xauth_failure_is_worded_as_xauth_whatever_the_notify() -> None:
    sa = SimpleNamespace(user="bob", group=None)
    for cause in (Cause.XAUTH_FAILED, Cause.XAUTH_THROTTLED):
        logger = _failed("too many tries", cause, NotifyType.AUTHENTICATION_FAILED, sa)
        [entry] = list(logger.log)
        assert entry.name == "XAUTH_FAILED"
        assert entry.text.endswith("User [bob] failed extended authentication (XAUTH): too many tries")


def test_session_limit_by_cause_and_text_is_only_shown() -> None:
    [entry] = list(_failed("session limit 100 reached", Cause.SESSION_LIMIT, NotifyType.NO_PROPOSAL_CHOSEN).log)
    assert entry.name == "SESSION_LIMIT_REACHED"
    assert entry.text == "Session refused: the concurrent sessions limit is reached (session limit 100 reached)"
    # The same words without the cause are not parsed into a session-limit line.
    assert _names(_failed("session limit 100 reached", Cause.OTHER, NotifyType.NO_PROPOSAL_CHOSEN)) == [
        "DECODE_ERROR"]


def test_no_proposal_and_its_phase() -> None:
    [p1] = list(_failed("no acceptable transform", Cause.NO_PROPOSAL, NotifyType.NO_PROPOSAL_CHOSEN).log)
    assert p1.text == "Phase 1 proposal refused: no acceptable transform"
    [p2] = list(_failed("Quick Mode: no acceptable transform", Cause.NO_PROPOSAL,
                        NotifyType.NO_PROPOSAL_CHOSEN).log)
    assert p2.text.startswith("Phase 2 proposal refused")


def test_retransmit_timeout_uses_the_cause_words_when_the_reason_is_empty() -> None:
    [entry] = list(_failed("", Cause.RETRANSMIT_TIMEOUT).log)
    assert entry.name == "PEER_NOT_RESPONDING"
    assert entry.text == f"No answer from {PEER} after the last retransmission; giving up (peer did not answer)"


def test_pool_exhausted_names_the_group_pool() -> None:
    sa = SimpleNamespace(user="bob", group=SimpleNamespace(name="g", pool="10.40.1.0/24"))
    [entry] = list(_failed("whatever the core says", Cause.POOL_EXHAUSTED, None, sa).log)
    assert entry.name == "ADDRESS_POOL_EXHAUSTED"
    assert entry.text.endswith("No address for user [bob]: address pool 10.40.1.0/24 is exhausted")


def test_refusals_that_are_not_malformed_messages() -> None:
    [entry] = list(_failed("group 'x' is not configured", Cause.UNKNOWN_GROUP, NotifyType.INVALID_ID_INFORMATION).log)
    assert entry.name == "EXCHANGE_REFUSED"
    assert entry.text == f"Refused a message from {PEER} (INVALID-ID-INFORMATION): group 'x' is not configured"
    assert _names(_failed("bad padding", Cause.MALFORMED, NotifyType.PAYLOAD_MALFORMED)) == ["DECODE_ERROR"]


def test_dpd_timeout_by_cause() -> None:
    logger = _log()
    logger.record(E.IkeSaDown(1, PEER, "DPD: no answer to 5 R-U-THERE", Cause.DPD_TIMEOUT), T, None)
    assert _names(logger) == ["DPD_TIMEOUT", "IKE_SA_DELETED"]
    assert next(iter(logger.log)).text == ("Peer did not answer DPD R-U-THERE requests: the tunnel is declared dead "
                                           "(DPD: no answer to 5 R-U-THERE)")
    other = _log()
    other.record(E.IkeSaDown(1, PEER, "DPD-looking text", Cause.PEER_DELETED), T, None)
    assert _names(other) == ["IKE_SA_DELETED"]


def test_user_lockout_on_the_log_clock() -> None:
    logger = _log()
    # Core clock at 1000 s when the lockout began, 900 s long; the log's clock says 2003-01-01 00:00:00.
    logger.record(E.XauthLockout(1, PEER, "user", "bob", 10, 1900.0), T, None, core_now=1000.0)
    [entry] = list(logger.log)
    assert (entry.name, entry.cls.value, entry.severity) == ("XAUTH_USER_LOCKED", "AUTH", 3)
    assert entry.text == "User [bob] locked out after 10 failed XAUTH attempts, until 01/01/2003 00:15:00 UTC"
    assert dict(entry.fields)["until_time"] == T + 900


def test_source_lockout_until_cleared() -> None:
    logger = _log()
    logger.record(E.XauthLockout(0, PEER, "source", PEER, 12, None), T, None, core_now=5.0)
    [entry] = list(logger.log)
    assert entry.name == "XAUTH_SOURCE_LOCKED"
    assert entry.text == f"Address {PEER} locked out after 12 failed XAUTH attempts, until an administrator unlocks it"
    assert render_concentrator(entry).split("\n")[0].endswith(f"SEV=3 AUTH/530 RPT=1 {PEER}")


def test_message_refused_is_debug_detail() -> None:
    event = E.MessageRefused(1, PEER, "PHASE1", ExchangeType.QUICK_MODE, "not-allowed", Cause.NOT_ALLOWED_NOW)
    quiet = _log(max_severity=5)
    quiet.record(event, T, None)
    assert len(quiet.log) == 0 and quiet.log.filtered == 1, "counted, not kept, at the default severity"
    verbose = _log()
    verbose.record(event, T, None)
    [entry] = list(verbose.log)
    assert entry.severity >= 5
    assert entry.text == ("Dropped a Quick Mode message in state PHASE1 before processing it (not-allowed): "
                          "message not allowed in this state")


def test_unlock_audit_line() -> None:
    logger = _log()
    logger.unlocked(T, "bob", None, 1)
    logger.unlocked(T, None, None, 7)
    texts = [e.text for e in logger.log]
    assert texts == ["Administrator cleared the XAUTH failure counts and lockouts of user [bob]: 1 cleared",
                     "Administrator cleared the XAUTH failure counts and lockouts of every user and address: "
                     "7 cleared"]
    assert {e.severity for e in logger.log} == {4}, "an audit line shows at the default severity"
