"""Choosing the language: the browser's by default, the switch at once, the account's at the next log-in."""

from __future__ import annotations

import re

from app.db.schema import users
from tests.dashboard import RunningDashboard


async def _saved_language(dashboard: RunningDashboard, username: str) -> str:
    value = await dashboard.services.db.fetch_val(
        users.select().with_only_columns(users.c.language).where(users.c.username == username)
    )
    return str(value)


async def test_the_browser_language_decides_until_one_is_chosen(dashboard: RunningDashboard) -> None:
    browser = dashboard.client()
    english = await browser.get("/login", headers={"Accept-Language": "de, en;q=0.5"})
    assert '<html lang="en"' in english.text and ">Log in</button>" in english.text
    lithuanian = await browser.get("/login", headers={"Accept-Language": "lt-LT, en;q=0.5"})
    assert '<html lang="lt"' in lithuanian.text and ">Prisijungti</button>" in lithuanian.text
    assert lithuanian.headers["content-language"] == "lt"
    assert "Accept-Language" in lithuanian.headers["vary"]
    # The page loads the scripts' catalogue of its language (a script file: no inline code).
    url = re.search(r'<script src="(/static/i18n/lt\.js\?v=\w+)"></script>', lithuanian.text)
    assert url, "no Lithuanian catalogue for the scripts"
    script = await browser.get(url.group(1))
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert script.text.startswith("window.KVMVDI_I18N = ")

    # JSON APIs answer in the language too; the error code stays the same.
    api = await browser.get("/api/v1/admin/hypervisors", headers={"Accept-Language": "lt"})
    assert api.status_code == 401
    assert api.json() == {"error": "login_required", "message": "Pirmiausia prisijunkite."}

    # The switch on the log-in page: the next page is Lithuanian whatever the browser asks for.
    await browser.refresh_csrf("/login")
    switched = await browser.post("/language", {"language": "lt", "next": "/login?next=/vms"})
    assert switched.status_code == 303 and switched.headers["location"] == "/login?next=/vms"
    again = await browser.get("/login", headers={"Accept-Language": "en"})
    assert '<html lang="lt"' in again.text

    # A language without a catalogue changes nothing; an outside address is not followed.
    await browser.post("/language", {"language": "xx", "next": "https://elsewhere.example/"})
    assert '<html lang="lt"' in (await browser.get("/login", headers={"Accept-Language": "en"})).text


async def test_the_choice_is_saved_with_the_account_and_follows_it(dashboard: RunningDashboard) -> None:
    first = dashboard.client()
    await first.refresh_csrf("/login")
    await first.post("/language", {"language": "lt", "next": "/login"})
    response = await first.login("admin", dashboard.admin_password)
    assert response.status_code == 303
    assert await _saved_language(dashboard, "admin") == "lt"

    # Another browser, asking for English: the account's language comes back at log-in.
    second = dashboard.client()
    response = await second.login("admin", dashboard.admin_password)
    assert response.cookies.get("kvmvdi_lang") == "lt"
    page = await second.get("/account/password", headers={"Accept-Language": "en"})
    assert '<html lang="lt"' in page.text and "Keisti slaptažodį" in page.text

    # Switching from the menu takes effect on the next page and is saved.
    back = await second.post(
        "/language", {"language": "en"}, headers={"Referer": f"{dashboard.url}/account/password"}
    )
    assert back.headers["location"] == "/account/password"
    page = await second.get("/account/password")
    assert '<html lang="en"' in page.text and "Change password" in page.text
    assert await _saved_language(dashboard, "admin") == "en"


async def test_refusals_and_toasts_after_a_redirect_speak_the_readers_language(
    dashboard: RunningDashboard,
) -> None:
    admin = await dashboard.admin()
    lithuanian = {"Accept-Language": "lt"}
    # The CSRF rejection, as a page and as a JSON error (its code stays English).
    rejected = await admin.http.post("/groups", data={"name": "staff"}, headers=lithuanian)
    assert rejected.status_code == 403 and rejected.text.startswith("Trūksta CSRF žetono")
    rejected = await admin.http.post(
        "/groups", data={"name": "staff"}, headers={**lithuanian, "Accept": "application/json"}
    )
    assert rejected.json()["error"] == "csrf_failed" and rejected.json()["message"].startswith("Trūksta CSRF")
    # A toast carried by a redirect, before the page's fragment.
    added = await admin.post("/groups", {"name": "staff", "description": ""}, headers=lithuanian)
    assert added.status_code == 303
    assert added.headers["location"] == "/users?toast=Grup%C4%97+u%C5%BEregistruota#groups"
    # A form's field error.
    refused = await admin.post("/groups", {"name": "", "description": ""}, headers=lithuanian)
    assert refused.status_code == 400 and "Grupės pavadinimas:" in refused.text
