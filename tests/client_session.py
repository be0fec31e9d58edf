"""A browser-like client holding a portal (client) session, made without going through a log-in form.

The client portal's own log-in lives elsewhere; these tests only need a browser
holding a valid client session: one is stored server-side, exactly as a log-in
stores it, and its id put in the session cookie.
"""

from __future__ import annotations

from app.auth.accounts import create_local_user
from app.auth.session_cookie import COOKIE_NAME, new_session_id
from tests.dashboard import BrowserLikeClient, RunningDashboard


async def client_user_session(dashboard: RunningDashboard, username: str = "desk-user") -> BrowserLikeClient:
    """A browser-like client logged in as a freshly created client user."""
    user_id = await create_local_user(dashboard.services.db, username, "client-password-1", role="client")
    session_id = new_session_id()
    await dashboard.services.sessions.create(session_id, user_id=user_id, role="client")
    client = dashboard.client()
    client.http.cookies.set(COOKIE_NAME, session_id)
    return client
