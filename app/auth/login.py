"""The one log-in service: the admin form, the client portal and the broker API all log in here.

One attempt goes through the same steps wherever it comes from:

1. the input is checked (a name and a password, a known realm);
2. the attempt is counted by the throttle *before* anything is awaited
   (:mod:`app.auth.throttle`), or refused with the wait;
3. the account is checked: a local administrator for the admin form; for the portal
   and the API a local portal account or the directory, by the realm rule of
   :mod:`app.broker.clients`; Argon2 runs on the password workers
   (:mod:`app.auth.hashing`), never on the event loop;
4. the outcome settles the throttle and is audited (failures through the rate-limited
   unauthenticated audit); a success updates ``last_login_at`` and rehashes a
   password stored with outdated parameters.

Views turn the outcome into their own answer (a page, a redirect, JSON) and start
the session or issue the token.
"""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any, Literal

from databases import Database

from app.audit import AuditLog
from app.auth.accounts import find_local_user
from app.auth.hashing import PasswordCheckBusy, PasswordWorkers
from app.auth.passwords import needs_rehash
from app.auth.throttle import Admission, LoginThrottle, parse_networks
from app.auth.throttle_store import ThrottleStore
from app.broker.clients import Realm, RealmError, choose_realm, requested_realm
from app.clock import utcnow
from app.db.records import UserRecord, fetch_record
from app.db.schema import users
from app.directory import DirectoryError, DirectoryLogin
from app.directory.accounts import upsert_directory_user
from app.i18n import N_
from app.i18n import gettext as _
from app.settings import SecuritySettings

log = logging.getLogger("kvmvdi.auth")

Area = Literal["admin", "portal", "api"]
# Longer input is no user name of ours; cut it before it reaches the database or the audit log.
MAX_USERNAME = 128
# A password longer than this is refused unchecked: Argon2 would hash anything, slowly.
MAX_PASSWORD = 1024


@dataclass(frozen=True)
class LoginAttempt:
    username: str
    password: str
    address: str
    area: Area
    # "local", "directory" or None (the realm rule decides); the admin form has none.
    realm: str | None = None


@dataclass(frozen=True)
class LoggedIn:
    user: UserRecord
    # Directory group names and DNs (empty for local accounts).
    groups: tuple[str, ...]
    realm: Realm


@dataclass(frozen=True)
class Refusal:
    """Why not: a stable code, a sentence for the user, the HTTP status, seconds to wait."""

    code: str
    # Said in the language of the request reading it (the shared refusals below are made at import).
    text: str
    status: int
    retry_after: int = 0

    @property
    def message(self) -> str:
        return _(self.text)


WRONG = Refusal("invalid_credentials", N_("Wrong user name or password."), 401)
MISSING = Refusal("invalid_request", N_("Enter your user name and password."), 400)
BUSY = Refusal("busy", N_("Too many log-ins at this moment. Try again in a few seconds."), 503, retry_after=2)
DIRECTORY_DOWN = Refusal(
    "directory_unavailable", N_("The directory cannot be reached right now. Try again in a moment."), 503
)


def throttled(wait: int) -> Refusal:
    return Refusal(
        "throttled", _("Too many failed attempts. Try again in {wait} seconds.").format(wait=wait), 429, wait
    )


class LoginService:
    def __init__(
        self,
        *,
        db: Database,
        audit: AuditLog,
        throttle: LoginThrottle,
        passwords: PasswordWorkers,
        directory: DirectoryLogin,
    ) -> None:
        self.db = db
        self.audit = audit
        self.throttle = throttle
        self.passwords = passwords
        self.directory = directory

    async def log_in(self, attempt: LoginAttempt) -> LoggedIn | Refusal:
        username = attempt.username.strip()[:MAX_USERNAME]
        where: dict[str, str] = {"area": attempt.area}
        if not username or not attempt.password or len(attempt.password) > MAX_PASSWORD:
            return MISSING if not username or not attempt.password else WRONG
        named: Realm | None = "local"
        if attempt.area != "admin":
            try:
                named = requested_realm(attempt.realm, self.directory)
            except RealmError as exc:
                return Refusal("invalid_request", _("Account type ('realm'): {exc}.").format(exc=exc), 400)
        # Counted before anything is awaited: parallel guesses each take their place here.
        admission = await self.throttle.admit(username=username, address=attempt.address)
        if not isinstance(admission, Admission):
            await self.audit.record_unauthenticated(
                "login_throttled", actor=username, client_address=attempt.address, **where
            )
            return throttled(admission.retry_after)
        try:
            realm = await choose_realm(self.db, named, self.directory, username)
            if attempt.area != "admin":
                where["realm"] = realm
            found = await self._check(attempt.area, realm, username, attempt.password)
        except PasswordCheckBusy:
            await admission.withdrawn()
            return BUSY
        except DirectoryError:
            await admission.withdrawn()
            return DIRECTORY_DOWN
        except BaseException:
            await admission.withdrawn()
            raise
        if found is None:
            await admission.failed()
            await self.audit.record_unauthenticated(
                "login_failed", actor=username, client_address=attempt.address, **where
            )
            return WRONG
        await admission.succeeded()
        await self.audit.record("login", actor=found.user.username, client_address=attempt.address, **where)
        return found

    async def check_password(
        self, *, user_id: int, username: str, password: str, address: str
    ) -> bool | Refusal:
        """A signed-in local user's current password (the change-password form), throttled like a log-in."""
        admission = await self.throttle.admit(username=username, address=address)
        if not isinstance(admission, Admission):
            await self.audit.record("password_change_throttled", actor=username, client_address=address)
            return throttled(admission.retry_after)
        row = await fetch_record(self.db, UserRecord, users.select().where(users.c.id == user_id))
        try:
            ok = (
                row is not None
                and len(password) <= MAX_PASSWORD
                and await self.passwords.verify(row.password_hash, password)
            )
        except PasswordCheckBusy:
            await admission.withdrawn()
            return BUSY
        except BaseException:
            await admission.withdrawn()
            raise
        if ok:
            await admission.succeeded()
        else:
            await admission.failed()
        return ok

    async def _check(self, area: Area, realm: Realm, username: str, password: str) -> LoggedIn | None:
        if realm == "local":
            row = await self._local(username, password)
            if row is None or row.role != ("admin" if area == "admin" else "client"):
                return None
            return LoggedIn(user=row, groups=(), realm="local")
        identity = await self.directory.authenticate(username, password)
        if identity is None:
            return None
        row = await upsert_directory_user(self.db, identity)
        if row.disabled:
            return None
        return LoggedIn(
            user=row, groups=tuple(sorted({*identity.groups, *identity.group_dns})), realm="directory"
        )

    async def _local(self, username: str, password: str) -> UserRecord | None:
        """The enabled local user row for these credentials; an unknown name costs a check all the same."""
        row = await find_local_user(self.db, username)
        if not await self.passwords.verify(row.password_hash if row is not None else None, password):
            return None
        if row is None or row.disabled or row.password_hash is None:
            return None
        values: dict[str, Any] = {"last_login_at": utcnow()}
        if needs_rehash(row.password_hash):
            values["password_hash"] = await self.passwords.hash(password)
        await self.db.execute(users.update().where(users.c.id == row.id).values(**values))
        return row


async def start_login_service(
    security: SecuritySettings,
    *,
    db: Database,
    audit: AuditLog,
    directory: DirectoryLogin,
    throttle_store: ThrottleStore,
    stack: AsyncExitStack,
) -> LoginService:
    """The log-in service with its password workers started (stopped by ``stack``)."""
    passwords = PasswordWorkers(
        workers=security.argon2_workers,
        queue=security.argon2_queue,
        kind=security.argon2_worker_kind,
        nice=security.argon2_worker_nice,
        idle_seconds=security.argon2_idle_seconds,
    )
    await passwords.start()
    stack.push_async_callback(passwords.stop)
    throttle = LoginThrottle(
        throttle_store,
        max_failures=security.login_max_failures,
        max_failures_per_address=security.login_max_failures_per_address,
        window=security.login_failure_window,
        trusted_networks=parse_networks(security.login_trusted_networks),
    )
    return LoginService(db=db, audit=audit, throttle=throttle, passwords=passwords, directory=directory)
