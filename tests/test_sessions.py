"""The page's sessions, the failure throttle and the CSRF origin rule, unit by unit (the same rules
on a real server: tests/security/test_sessions.py)."""

from __future__ import annotations

import logging

import pytest

from soundsift.serving.guards import OriginCheck
from soundsift.serving.sessions import FailureThrottle, RevokedSessions, SessionSigner

KEY = "unit-test-key"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def signer(clock: Clock, revoked: RevokedSessions | None = None, key: str = KEY) -> SessionSigner:
    return SessionSigner(
        key, max_age_s=3600, revoked=RevokedSessions(None, clock=clock) if revoked is None else revoked, clock=clock
    )


def test_every_session_is_its_own_and_expires_by_the_servers_clock():
    clock = Clock()
    sessions = signer(clock)
    first, second = sessions.issue(), sessions.issue()
    assert first != second and KEY not in first
    assert sessions.verify(first) and sessions.verify(second)
    clock.now += 3599
    assert sessions.verify(first)
    clock.now += 1
    assert sessions.verify(first) is None


def test_a_revoked_session_is_refused_and_the_others_are_not():
    clock = Clock()
    sessions = signer(clock)
    first, second = sessions.issue(), sessions.issue()
    assert sessions.revoke(first)
    assert sessions.verify(first) is None and sessions.verify(second)
    assert not sessions.revoke(first), "revoking twice finds nothing to revoke"


@pytest.mark.parametrize(
    "tamper",
    [
        lambda token: token[:-1] + ("0" if token[-1] != "0" else "1"),  # signature
        lambda token: token.replace(".", ".9", 1),  # issue time
        lambda token: "x" + token,  # id
        lambda token: token.rpartition(".")[0],  # no signature
        lambda token: "",
        lambda token: "a" * 10_000,
    ],
)
def test_a_tampered_token_is_refused(tamper):
    sessions = signer(Clock())
    assert sessions.verify(tamper(sessions.issue())) is None


def test_another_key_ends_every_session():
    clock = Clock()
    token = signer(clock).issue()
    assert signer(clock, key="another-key").verify(token) is None


def test_without_a_store_only_sessions_of_this_process_count(tmp_path):
    clock = Clock()
    token = signer(clock).issue()
    clock.now += 10
    assert signer(clock).verify(token) is None, "a restarted server cannot know whether it was revoked"
    stored = RevokedSessions(tmp_path / "sessions.sqlite", clock=clock)
    assert signer(clock, stored).verify(token), "with a store, a session survives the restart"


def test_revocations_survive_a_restart_and_are_forgotten_once_expired(tmp_path):
    clock = Clock()
    store = tmp_path / "state" / "sessions.sqlite"
    sessions = signer(clock, RevokedSessions(store, clock=clock))
    revoked, kept = sessions.issue(), sessions.issue()
    sessions.revoke(revoked)
    sessions.revoked.close()
    restarted = signer(clock, RevokedSessions(store, clock=clock))
    assert restarted.verify(revoked) is None and restarted.verify(kept)
    restarted.revoked.close()
    assert len(RevokedSessions(store, clock=clock)) == 1
    clock.now += 3600  # the session has expired anyway: the store forgets its id
    assert len(RevokedSessions(store, clock=clock)) == 0


def test_the_throttle_allows_a_burst_then_one_attempt_per_refill(caplog):
    clock = Clock()
    throttle = FailureThrottle(3, 10.0, clock=clock)
    with caplog.at_level(logging.WARNING, "soundsift.serving.auth"):
        for _ in range(3):
            assert throttle.retry_after_s("10.0.0.1") == 0
            throttle.record_failure("10.0.0.1")
    assert throttle.retry_after_s("10.0.0.1") == pytest.approx(10.0)
    assert throttle.retry_after_s("10.0.0.2") == 0, "another address is not affected"
    assert [record.getMessage() for record in caplog.records] == [
        "authentication: 10.0.0.1 locked out for 10 s after 3 failed attempts"
    ]
    clock.now += 4
    assert throttle.retry_after_s("10.0.0.1") == pytest.approx(6.0)
    clock.now += 6
    assert throttle.retry_after_s("10.0.0.1") == 0
    throttle.record_failure("10.0.0.1")
    assert throttle.retry_after_s("10.0.0.1") == pytest.approx(10.0)
    clock.now += 30
    assert throttle.retry_after_s("10.0.0.1") == 0 and throttle.tracked_clients == 0, "a full bucket is forgotten"


def test_the_throttles_table_of_addresses_is_bounded():
    throttle = FailureThrottle(2, 60.0, max_clients=100, clock=Clock())
    for client in range(1000):
        throttle.record_failure(f"10.0.{client // 256}.{client % 256}")
    assert throttle.tracked_clients == 100


def scope(method: str = "POST", kind: str = "http", scheme: str = "http", **headers: str) -> dict:
    raw = [(name.replace("_", "-").encode(), value.encode()) for name, value in headers.items()]
    return {"type": kind, "method": method, "scheme": scheme, "headers": raw}


@pytest.mark.parametrize(
    ("request_scope", "allowed"),
    [
        (scope(host="127.0.0.1:7860", origin="http://127.0.0.1:7860"), True),
        (scope(host="Box.local", origin="http://box.local:80"), True),
        (scope(scheme="https", host="box.local", origin="https://box.local"), True),
        (scope(host="127.0.0.1:7860", origin="http://127.0.0.1:7861"), False),  # another port, same host
        (scope(host="127.0.0.1:7860", origin="https://127.0.0.1:7860"), False),  # another scheme
        (scope(host="127.0.0.1:7860", origin="http://localhost:7860"), False),
        (scope(host="127.0.0.1:7860", origin="null"), False),
        (scope(host="127.0.0.1:7860", origin="http://127.0.0.1:x"), False),
        (scope(host="127.0.0.1:7860"), False),  # neither Origin nor Sec-Fetch-Site
        (scope(host="127.0.0.1:7860", sec_fetch_site="same-origin"), True),
        (scope(host="127.0.0.1:7860", sec_fetch_site="none"), True),
        (scope(host="127.0.0.1:7860", sec_fetch_site="cross-site"), False),
        (scope(host="127.0.0.1:7860", origin="https://allowed.example"), True),
        (scope(kind="websocket", scheme="ws", host="127.0.0.1:7860", origin="http://127.0.0.1:7860"), True),
        (scope(kind="websocket", scheme="ws", host="127.0.0.1:7860", origin="http://evil.example"), False),
    ],
)
def test_the_origin_rule(request_scope, allowed):
    check = OriginCheck(["https://allowed.example"])
    assert (check.problem(request_scope) is None) is allowed
