"""People who sign in to the console: users with a role and a password, and their sessions
(docs/design/security.md, "Users").

Passwords are hashed with Argon2id (argon2-cffi's defaults, rehashed when those change); a user
signs in with a password or a one-time login link and gets a session token: random, stored as its
SHA-256 with an expiry, so sessions survive a restart and end when the user is removed or changes
role. The session token is a credential like any other: `management/access.identify` resolves it
to the user's current role, and the gateway (which checks viewers by token hash) is given the
hashes of live sessions.

Roles: `viewer` watches; `operator` also acts (switchover, starting a backfill); `admin` also
configures (users, pairs, the configuration)."""

from __future__ import annotations

import secrets
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from gapless.config.cluster import token_digest
from gapless.contracts.management import UserRole

SESSION_S = 12 * 3600.0
LINK_S = 15 * 60.0  # a one-time login link is used at once (printed by `gapless demo`)

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (name TEXT PRIMARY KEY, role TEXT NOT NULL, password TEXT NOT NULL,
    created_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS user_sessions (token_sha256 TEXT PRIMARY KEY, user TEXT NOT NULL,
    expires_us INTEGER NOT NULL, one_time INTEGER NOT NULL);
"""


class UserError(ValueError):
    """A request about users that cannot be done (unknown user, name taken); the message says why."""


@dataclass(frozen=True)
class User:
    name: str
    role: UserRole


@dataclass(frozen=True)
class _Session:
    user: str
    expires_us: int
    one_time: bool


class Users:
    """The users table and the live sessions, cached in memory (every request is checked against
    them; this process is their only writer)."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        self.hasher = PasswordHasher()
        self._lock = threading.Lock()
        now = _now_us()
        self.db.execute("DELETE FROM user_sessions WHERE expires_us <= ?", (now,))
        self._users = {name: User(name, role) for name, role in self.db.execute("SELECT name, role FROM users")}
        self._sessions = {
            digest: _Session(user, expires, bool(one_time))
            for digest, user, expires, one_time in self.db.execute("SELECT * FROM user_sessions")
        }
        #: Bumped on every change a gateway's viewer list depends on (sessions, users).
        self.generation = 0

    # ---- users ---------------------------------------------------------------------------------

    def all(self) -> list[User]:
        return sorted(self._users.values(), key=lambda user: user.name)

    def add(self, name: str, role: UserRole, password: str) -> User:
        hashed = self.hasher.hash(password)
        with self._lock:
            if name in self._users:
                raise UserError(f"user {name!r} exists already")
            self.db.execute("INSERT INTO users VALUES (?, ?, ?, ?)", (name, role, hashed, _now_us()))
            self._users[name] = User(name, role)
        return self._users[name]

    def change(self, name: str, role: UserRole | None = None, password: str | None = None) -> User:
        """A new role or password; either ends the user's sessions (a demoted user keeps no power)."""
        hashed = None if password is None else self.hasher.hash(password)
        with self._lock:
            user = self._known(name)
            if role is not None:
                self.db.execute("UPDATE users SET role = ? WHERE name = ?", (role, name))
                user = self._users[name] = User(name, role)
            if hashed is not None:
                self.db.execute("UPDATE users SET password = ? WHERE name = ?", (hashed, name))
            self._end_sessions_of(name)
        return user

    def remove(self, name: str) -> None:
        with self._lock:
            self._known(name)
            self.db.execute("DELETE FROM users WHERE name = ?", (name,))
            del self._users[name]
            self._end_sessions_of(name)

    def check_password(self, name: str, password: str) -> User | None:
        """The user if the password is theirs (slow on purpose: Argon2id); None otherwise, and as
        slowly for an unknown name, so a caller cannot tell which names exist."""
        row = self.db.execute("SELECT password FROM users WHERE name = ?", (name,)).fetchone()
        stored = row[0] if row else self.hasher.hash(secrets.token_hex(8))
        try:
            self.hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if row is None:
            return None
        if self.hasher.check_needs_rehash(stored):
            self.db.execute("UPDATE users SET password = ? WHERE name = ?", (self.hasher.hash(password), name))
        return self._users.get(name)

    # ---- sessions ------------------------------------------------------------------------------

    def open_session(self, name: str, *, one_time: bool = False) -> tuple[str, int]:
        """A new session token for a user (a one-time login link's token if `one_time`) and when it
        expires (epoch µs)."""
        token = secrets.token_urlsafe(32)
        expires = _now_us() + int((LINK_S if one_time else SESSION_S) * 1e6)
        with self._lock:
            self._known(name)
            digest = token_digest(token)
            self.db.execute("INSERT INTO user_sessions VALUES (?, ?, ?, ?)", (digest, name, expires, int(one_time)))
            self._sessions[digest] = _Session(name, expires, one_time)
            self.generation += 1
        return token, expires

    def redeem_link(self, token: str) -> User | None:
        """The user of a one-time login link, which is used up; None for anything else."""
        digest = token_digest(token)
        with self._lock:
            session = self._sessions.get(digest)
            if session is None or not session.one_time:
                return None
            self._drop(digest)
            live = session.expires_us > _now_us()
        return self._users.get(session.user) if live else None

    def session_user(self, token: str) -> User | None:
        """The user a session token signs in (not a one-time link's: that is only redeemed)."""
        session = self._sessions.get(token_digest(token))
        if session is None or session.one_time or session.expires_us <= _now_us():
            return None
        return self._users.get(session.user)

    def end_session(self, token: str) -> None:
        with self._lock:
            self._drop(token_digest(token))

    def session_digests(self, roles: tuple[UserRole, ...]) -> list[str]:
        """Hashes of the live sessions of users with one of these roles (a gateway's viewer list)."""
        now = _now_us()
        return [
            digest
            for digest, session in self._sessions.items()
            if not session.one_time
            and session.expires_us > now
            and (user := self._users.get(session.user)) is not None
            and user.role in roles
        ]

    def close(self) -> None:
        self.db.close()

    def _known(self, name: str) -> User:
        user = self._users.get(name)
        if user is None:
            raise UserError(f"no user {name!r}")
        return user

    def _end_sessions_of(self, name: str) -> None:
        self.db.execute("DELETE FROM user_sessions WHERE user = ?", (name,))
        self._sessions = {d: s for d, s in self._sessions.items() if s.user != name}
        self.generation += 1

    def _drop(self, digest: str) -> None:
        self.db.execute("DELETE FROM user_sessions WHERE token_sha256 = ?", (digest,))
        self._sessions.pop(digest, None)
        self.generation += 1


def _now_us() -> int:
    return time.time_ns() // 1000
