"""Who may see the view: one password (or token), login sessions in cookies, and a brake on guessing."""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import hmac
import secrets
import threading
import time
from collections import OrderedDict, deque
from email.message import Message

COOKIE = "edge_fer_session"
MAX_SESSIONS = 64  # logins kept; the oldest is forgotten first
FAILURES_ALLOWED = 5  # wrong passwords from one address within FAILURE_WINDOW before it must wait
FAILURE_WINDOW = 60.0
MAX_ADDRESSES = 1024  # addresses whose failures are remembered


class Verdict(enum.Enum):
    """What a request's credentials amount to."""

    ALLOWED = "allowed"
    MISSING = "missing"
    WRONG = "wrong"
    THROTTLED = "throttled"


class Gate:
    """Checks a request's session cookie, Basic password or Bearer token against the configured secret."""

    def __init__(self, password: str, session_seconds: float) -> None:
        self._secret = password.encode()
        self.required = bool(password)
        self.session_seconds = session_seconds
        self._sessions: OrderedDict[str, float] = OrderedDict()  # sha256 of a token -> when it expires
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def matches(self, candidate: str) -> bool:
        """The secret, compared in constant time."""
        return hmac.compare_digest(candidate.encode(errors="surrogateescape"), self._secret)

    def throttled(self, address: str) -> bool:
        """True while `address` has guessed wrong too often."""
        now = time.monotonic()
        with self._lock:
            times = self._failures.get(address)
            while times and now - times[0] > FAILURE_WINDOW:
                times.popleft()
            return times is not None and len(times) >= FAILURES_ALLOWED

    def failed(self, address: str) -> None:
        """Count one wrong password from `address`."""
        with self._lock:
            self._failures.setdefault(address, deque(maxlen=FAILURES_ALLOWED)).append(time.monotonic())
            self._failures.move_to_end(address)
            while len(self._failures) > MAX_ADDRESSES:
                self._failures.popitem(last=False)

    def check(self, headers: Message, address: str) -> Verdict:
        """The verdict on a request's headers: a valid session, or the secret as Basic password or Bearer token."""
        if not self.required:
            return Verdict.ALLOWED
        if self._session_valid(session_cookie(headers)):
            return Verdict.ALLOWED
        offered = offered_secret(headers.get("Authorization", ""))
        if offered is None:
            return Verdict.MISSING
        if self.throttled(address):
            return Verdict.THROTTLED
        if self.matches(offered):
            return Verdict.ALLOWED
        self.failed(address)
        return Verdict.WRONG

    def login(self, password: str, address: str) -> tuple[Verdict, str]:
        """The verdict on a login form, with a new session token when it is right."""
        if self.throttled(address):
            return Verdict.THROTTLED, ""
        if not self.matches(password):
            self.failed(address)
            return Verdict.WRONG, ""
        token = secrets.token_urlsafe(32)
        with self._lock:
            self._sessions[_digest(token)] = time.monotonic() + self.session_seconds
            while len(self._sessions) > MAX_SESSIONS:
                self._sessions.popitem(last=False)
        return Verdict.ALLOWED, token

    def logout(self, headers: Message) -> None:
        """Forget the request's session."""
        token = session_cookie(headers)
        if token:
            with self._lock:
                self._sessions.pop(_digest(token), None)

    def _session_valid(self, token: str) -> bool:
        if not token:
            return False
        key = _digest(token)
        with self._lock:
            expires = self._sessions.get(key)
            if expires is not None and expires < time.monotonic():
                del self._sessions[key]
                return False
            return expires is not None


def _digest(token: str) -> str:
    # Sessions are looked up by a hash of the token, so the table holds nothing a memory dump could replay.
    return hashlib.sha256(token.encode(errors="surrogateescape")).hexdigest()


def session_cookie(headers: Message) -> str:
    """The session token in the Cookie header, or ''."""
    for header in headers.get_all("Cookie") or []:
        for part in header.split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE:
                return value
    return ""


def offered_secret(authorization: str) -> str | None:
    """The password of a Basic header (any user name) or a Bearer token; None when neither is offered."""
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""  # offered, and wrong
        return decoded.partition(":")[2]
    return None
