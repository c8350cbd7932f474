"""Who may call the server: the API key, the page's sessions, and back-off for wrong keys.

- A session is a signed token ``<id>.<issued>.<signature>`` set as an HttpOnly cookie at /login. The
  signature is an HMAC with a secret derived from the API key, so changing the key ends every
  session; the server checks the issue time against ``session_max_age_s`` itself (the cookie's
  Max-Age is only a hint to the browser); and /logout revokes the session's id on the server.
- Revoked ids are kept until their session would have expired anyway: in memory, and in a SQLite
  file when ``session_store`` names one, so a restart does not bring a logged-out session back.
  Without a store the server cannot know what was revoked before it started, so it accepts only
  sessions it issued itself.
- Failed attempts (a wrong bearer key, a wrong key at /login) are counted per client address in a
  token bucket: ``auth_failure_burst`` attempts at once, then one more every ``auth_failure_refill_s``;
  an address with no attempts left gets 429 with Retry-After, without its key being looked at.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import math
import secrets
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger("soundsift.serving.auth")

SESSION_COOKIE = "soundsift_session"
# Addresses whose failures are remembered at once; the stalest is forgotten first. 10,000 buckets
# are about 2 MB, whatever an attacker with many addresses sends.
MAX_TRACKED_CLIENTS = 10_000
_SIGNING_CONTEXT = b"soundsift web session v2"


@dataclass(frozen=True)
class Session:
    session_id: str
    issued_at: int


class RevokedSessions:
    """Ids of logged-out sessions until they expire, optionally kept in a SQLite file."""

    def __init__(self, path: Path | None, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()
        self._database: sqlite3.Connection | None = None
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._database = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._database.execute("CREATE TABLE IF NOT EXISTS revoked (session_id TEXT PRIMARY KEY, expires REAL)")
            self._database.execute("DELETE FROM revoked WHERE expires <= ?", (clock(),))
            self._revoked = dict(self._database.execute("SELECT session_id, expires FROM revoked"))

    @property
    def persistent(self) -> bool:
        return self._database is not None

    def revoke(self, session_id: str, expires: float) -> None:
        now = self.clock()
        with self._lock:
            self._revoked = {key: until for key, until in self._revoked.items() if until > now}
            self._revoked[session_id] = expires
            if self._database is not None:
                self._database.execute("DELETE FROM revoked WHERE expires <= ?", (now,))
                self._database.execute("INSERT OR REPLACE INTO revoked VALUES (?, ?)", (session_id, expires))

    def __contains__(self, session_id: str) -> bool:
        return session_id in self._revoked

    def __len__(self) -> int:
        return len(self._revoked)

    def close(self) -> None:
        if self._database is not None:
            self._database.close()


class SessionSigner:
    """Issues and checks the page's session tokens for one API key."""

    def __init__(
        self,
        api_key: str,
        *,
        max_age_s: float,
        revoked: RevokedSessions,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._secret = hmac.new(api_key.encode(), _SIGNING_CONTEXT, hashlib.sha256).digest()
        self.max_age_s = max_age_s
        self.revoked = revoked
        self.clock = clock
        # Without a persistent store, sessions from before this process may have been revoked.
        self.not_before = 0 if revoked.persistent else math.floor(clock())

    def issue(self) -> str:
        session_id = base64.urlsafe_b64encode(secrets.token_bytes(18)).decode()
        payload = f"{session_id}.{math.floor(self.clock())}"
        return f"{payload}.{self._sign(payload)}"

    def verify(self, token: str | None) -> Session | None:
        """The session a token stands for, or None when it is forged, expired or revoked."""
        if not token or len(token) > 200:
            return None
        payload, _, signature = token.rpartition(".")
        session_id, _, issued = payload.partition(".")
        if not hmac.compare_digest(signature.encode(), self._sign(payload).encode()) or not issued.isdigit():
            return None
        issued_at = int(issued)
        if issued_at < self.not_before or self.clock() - issued_at >= self.max_age_s or session_id in self.revoked:
            return None
        return Session(session_id, issued_at)

    def revoke(self, token: str | None) -> bool:
        session = self.verify(token)
        if session is None:
            return False
        self.revoked.revoke(session.session_id, session.issued_at + self.max_age_s)
        return True

    def _sign(self, payload: str) -> str:
        return hmac.new(self._secret, payload.encode(), hashlib.sha256).hexdigest()


@dataclass
class _Bucket:
    tokens: float
    updated: float


class FailureThrottle:
    """Per-client token bucket of failed authentication attempts (bounded to MAX_TRACKED_CLIENTS)."""

    def __init__(
        self,
        burst: int,
        refill_s: float,
        *,
        max_clients: int = MAX_TRACKED_CLIENTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.burst, self.refill_s, self.max_clients, self.clock = burst, refill_s, max_clients, clock
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after_s(self, client: str) -> float:
        """0 while ``client`` may try a key; otherwise the seconds until it may try one again."""
        with self._lock:
            bucket = self._refilled(client)
            return 0.0 if bucket is None or bucket.tokens >= 1 else (1 - bucket.tokens) * self.refill_s

    def record_failure(self, client: str) -> None:
        with self._lock:
            bucket = self._refilled(client) or _Bucket(float(self.burst), self.clock())
            was_open = bucket.tokens >= 1
            bucket.tokens -= 1
            self._buckets[client] = bucket
            self._buckets.move_to_end(client)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
            if was_open and bucket.tokens < 1:  # this failure spent the last attempt: one line per lockout
                logger.warning(
                    "authentication: %s locked out for %.0f s after %d failed attempts",
                    client,
                    (1 - bucket.tokens) * self.refill_s,
                    self.burst,
                )

    @property
    def tracked_clients(self) -> int:
        return len(self._buckets)

    def _refilled(self, client: str) -> _Bucket | None:
        bucket = self._buckets.get(client)
        if bucket is None:
            return None
        now = self.clock()
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.updated) / self.refill_s)
        bucket.updated = now
        if bucket.tokens >= self.burst:  # a full bucket is the same as none: forget the client
            del self._buckets[client]
        return bucket


class Authenticator:
    """The server's one API key, its sessions and its failure throttle, shared by the access guard
    and the login routes."""

    def __init__(self, api_key: str, sessions: SessionSigner, throttle: FailureThrottle) -> None:
        self._api_key = api_key.encode()
        self.sessions = sessions
        self.throttle = throttle

    def attempt(self, client: str, candidate: str) -> KeyAttempt:
        """Check a key sent by ``client`` (a bearer key or the login form): a locked-out client's key
        is not even looked at; a wrong one spends one of the client's attempts."""
        wait_s = self.throttle.retry_after_s(client)
        if wait_s > 0:
            return KeyAttempt(accepted=False, retry_after_s=wait_s)
        if hmac.compare_digest(candidate.strip().encode("utf-8", "replace"), self._api_key):
            return KeyAttempt(accepted=True)
        self.throttle.record_failure(client)
        return KeyAttempt(accepted=False)


@dataclass(frozen=True)
class KeyAttempt:
    accepted: bool
    retry_after_s: float = 0.0
    """Above 0: the client was locked out (429 with Retry-After), its key not checked."""
