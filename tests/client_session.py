"""A signed session cookie for a client (desktop user) account.

The client portal's own log-in lives elsewhere; these tests only need a browser
holding a valid client session, signed exactly as the dashboard signs sessions.
"""

from __future__ import annotations

import base64
import json
import secrets
import time

import itsdangerous

from app.auth.accounts import create_local_user
from tests.dashboard import BrowserLikeClient, RunningDashboard


def session_cookie(dashboard: RunningDashboard, payload: dict[str, object]) -> str:
    signer = itsdangerous.TimestampSigner(dashboard.settings.session_secret())
    data = base64.b64encode(json.dumps(payload).encode())
    return signer.sign(data).decode()


async def client_user_session(dashboard: RunningDashboard, username: str = "desk-user") -> BrowserLikeClient:
    """A browser-like client logged in as a freshly created client user."""
    user_id = await create_local_user(dashboard.services.db, username, "client-password-1", role="client")
    now = int(time.time())
    cookie = session_cookie(
        dashboard,
        {
            "uid": user_id,
            "role": "client",
            "groups": [],
            "since": now,
            "seen": now,
            "csrf": secrets.token_urlsafe(32),
        },
    )
    client = dashboard.client()
    client.http.cookies.set("kvmvdi_session", cookie)
    return client
