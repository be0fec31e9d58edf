"""The broker JSON API (``/api/v1``) over HTTPS, with the standard library only.

Blocking calls: the controller runs them on worker threads, never on the UI
thread. Failures become a small set of exceptions whose messages a user can read
(``BrokerUnreachable`` says which URL and why); the bearer token lives in memory
only and is sent in a header, never in a URL.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import quote

from kvm_vdi_client import __version__, i18n
from kvm_vdi_client.config import DashboardConfig
from kvm_vdi_client.i18n import gettext as _
from kvm_vdi_client.model import (
    DesktopAnswer,
    Pool,
    ProtocolError,
    User,
    missing,
    parse_desktop_answer,
    parse_pools,
)

log = logging.getLogger(__name__)


class BrokerError(Exception):
    """The dashboard refused a request; ``code`` is the API's stable error code."""

    def __init__(self, message: str, *, status: int = 0, code: str = "error") -> None:
        super().__init__(message)
        self.status = status
        self.code = code

    @property
    def message(self) -> str:
        return str(self)


class BrokerUnreachable(BrokerError):
    """No answer: connection refused, name not resolved, timeout, TLS failure."""


class InvalidCredentials(BrokerError):
    pass


class Throttled(BrokerError):
    def __init__(self, message: str, *, retry_after: float | None) -> None:
        super().__init__(message, status=429, code="throttled")
        self.retry_after = retry_after


class NotAuthenticated(BrokerError):
    """The token is missing, expired or revoked: log in again."""


class LeaseEnded(BrokerError):
    """The lease is gone (ended by an admin, expired, or released elsewhere)."""


def tls_context(config: DashboardConfig) -> ssl.SSLContext:
    """Certificate and host-name checks on unless the admin explicitly turned them off."""
    if not config.verify:
        log.warning(
            "TLS CERTIFICATE CHECKS ARE DISABLED (dashboard.verify = false): anyone on the network "
            "between this thin client and %s can read passwords and desktops. Use this in labs only.",
            config.url,
        )
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=str(config.ca_file) if config.ca_file else None)


@dataclass
class _Answer:
    status: int
    data: dict[str, Any]
    headers: Message


def _retry_after(headers: Message, data: Mapping[str, Any]) -> float | None:
    for value in (headers.get("Retry-After"), data.get("retry_after")):
        try:
            if value is not None:
                return max(0.0, float(value))
        except (TypeError, ValueError):
            continue
    return None


class BrokerClient:
    def __init__(self, config: DashboardConfig) -> None:
        self.config = config
        self.base = config.url.rstrip("/") + "/api/v1"
        self.token: str | None = None
        if config.is_plain_http:
            log.warning(
                "dashboard.url %s uses plain http: passwords and SPICE tickets travel unencrypted. "
                "Use https outside of labs and tests.",
                config.url,
            )
            handlers: list[urllib.request.BaseHandler] = []
        else:
            handlers = [urllib.request.HTTPSHandler(context=tls_context(config))]
        # No proxies from the environment: the token must go straight to the dashboard.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), *handlers)

    # -- transport ---------------------------------------------------------

    def _request(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> _Answer:
        headers = {
            "Accept": "application/json",
            # The dashboard's messages (refusals, errors) in the launcher's language.
            "Accept-Language": i18n.language(),
            "User-Agent": f"kvm-vdi-client/{__version__}",
        }
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        # The scheme is http(s) only: config.py validates dashboard.url.
        request = urllib.request.Request(  # noqa: S310
            self.base + path, data=payload, headers=headers, method=method
        )
        try:
            with self._opener.open(request, timeout=self.config.timeout) as response:
                return _Answer(response.status, self._decode(response.read()), response.headers)
        except urllib.error.HTTPError as error:
            with error:
                answer = _Answer(error.code, self._decode(error.read()), error.headers)
            return answer
        except urllib.error.URLError as error:
            raise BrokerUnreachable(self._describe(error.reason)) from None
        except (TimeoutError, ConnectionError, ssl.SSLError) as error:
            raise BrokerUnreachable(self._describe(error)) from None
        except OSError as error:
            raise BrokerUnreachable(self._describe(error)) from None

    def _describe(self, reason: object) -> str:
        where = self.config.url
        if isinstance(reason, ssl.SSLCertVerificationError):
            return _(
                "The certificate of {url} could not be verified ({reason}). "
                "Check dashboard.ca_file in the launcher configuration."
            ).format(url=where, reason=reason.verify_message)
        if isinstance(reason, ssl.SSLError):
            return _("A secure connection to {url} failed ({reason}).").format(
                url=where, reason=reason.reason or reason
            )
        if isinstance(reason, TimeoutError):
            return _("The dashboard at {url} did not answer within {seconds} s.").format(
                url=where, seconds=f"{self.config.timeout:g}"
            )
        if isinstance(reason, ConnectionRefusedError):
            return _("The dashboard at {url} refused the connection (is it running?).").format(url=where)
        if isinstance(reason, socket.gaierror):
            return _("The dashboard's name in {url} could not be resolved ({reason}).").format(
                url=where, reason=reason.strerror
            )
        if isinstance(reason, OSError) and reason.strerror:
            return _("The dashboard at {url} cannot be reached: {reason}.").format(
                url=where, reason=reason.strerror
            )
        return _("The dashboard at {url} cannot be reached: {reason}.").format(url=where, reason=reason)

    def _decode(self, raw: bytes) -> dict[str, Any]:
        if not raw:
            return {}
        try:
            data = json.loads(raw)
        except ValueError:
            raise ProtocolError(
                _(
                    "The dashboard at {url} answered something that is not JSON; "
                    "is dashboard.url the dashboard's address?"
                ).format(url=self.config.url)
            ) from None
        return data if isinstance(data, dict) else {}

    def _fail(self, answer: _Answer) -> BrokerError:
        code = str(answer.data.get("error") or f"http_{answer.status}")
        message = str(
            answer.data.get("message")
            or _("The dashboard answered HTTP {status}.").format(status=answer.status)
        )
        if answer.status == 401:
            return NotAuthenticated(
                _("Your session with the dashboard has ended; log in again."), status=401, code=code
            )
        if answer.status == 429:
            return Throttled(message, retry_after=_retry_after(answer.headers, answer.data))
        if answer.status in (404, 410) and code in ("lease_not_found", "lease_ended"):
            return LeaseEnded(message, status=answer.status, code=code)
        return BrokerError(message, status=answer.status, code=code)

    # -- the API -----------------------------------------------------------

    def login(self, username: str, password: str) -> User:
        self.token = None
        body = {"username": username, "password": password}
        if self.config.realm is not None:
            body["realm"] = self.config.realm
        answer = self._request("POST", "/login", body)
        if answer.status == 401:
            raise InvalidCredentials(
                _("Wrong user name or password."), status=401, code="invalid_credentials"
            )
        if answer.status != 200:
            raise self._fail(answer)
        token = answer.data.get("token")
        if not isinstance(token, str) or not token:
            raise missing("token")
        self.token = token
        return User.parse(answer.data.get("user") or {"username": username})

    def logout(self) -> None:
        if self.token is None:
            return
        try:
            self._request("POST", "/logout")
        finally:
            self.token = None

    def pools(self) -> tuple[Pool, ...]:
        answer = self._request("GET", "/pools")
        if answer.status != 200:
            raise self._fail(answer)
        return parse_pools(answer.data)

    def request_desktop(self, pool_id: int) -> DesktopAnswer:
        answer = self._request("POST", f"/pools/{int(pool_id)}/desktop")
        if answer.status in (200, 202, 409):
            return parse_desktop_answer(answer.status, answer.data)
        raise self._fail(answer)

    def heartbeat(self, lease_id: str) -> str:
        answer = self._request("POST", f"/leases/{quote(lease_id, safe='')}/heartbeat")
        if answer.status != 200:
            raise self._fail(answer)
        return str(answer.data.get("expires_at") or "")

    def release(self, lease_id: str) -> None:
        answer = self._request("POST", f"/leases/{quote(lease_id, safe='')}/release")
        if answer.status not in (200, 204, 404, 410):
            raise self._fail(answer)

    def power(self, vm_id: int, action: str) -> str:
        answer = self._request("POST", f"/desktops/{int(vm_id)}/power", {"action": action})
        if answer.status not in (200, 202):
            raise self._fail(answer)
        return str(answer.data.get("state") or "")
