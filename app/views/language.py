"""Choosing the language: the switch (log-in pages, menus) and the scripts' catalogues."""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from app.api.describe import REDIRECT, TEXT, Media, describe
from app.api.forms import LanguageForm
from app.auth.accounts import save_language, saved_language
from app.i18n import available_languages
from app.i18n.negotiation import LANGUAGE_COOKIE, LANGUAGE_COOKIE_MAX_AGE
from app.i18n.scripts import script_catalogue
from app.services import services_of
from app.views.guards import current_user


def local_path(target: str, fallback: str = "/") -> str:
    """Only a path on this site (never ``//elsewhere`` or a full URL) to go back to."""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return fallback


def remember_language(response: Response, request: Request, language: str) -> None:
    response.set_cookie(
        LANGUAGE_COOKIE,
        language,
        max_age=LANGUAGE_COOKIE_MAX_AGE,
        samesite="lax",
        secure=services_of(request).settings.server.https,
    )


async def settle_language(request: Request, response: Response, user_id: int) -> Response:
    """At log-in: a language switched to on the log-in page is saved with the account;
    otherwise the account's saved language comes back to this browser."""
    db = services_of(request).db
    chosen = request.cookies.get(LANGUAGE_COOKIE, "")
    if chosen in available_languages():
        if chosen != await saved_language(db, user_id):
            await save_language(db, user_id, chosen)
    elif (saved := await saved_language(db, user_id)) in available_languages():
        remember_language(response, request, saved)
    return response


@describe("Choose the language of the pages", form=LanguageForm, responses={303: REDIRECT})
async def switch_language(request: Request) -> Response:
    """Show this browser (and the signed-in account, for next time) the chosen language."""
    form = await request.form()
    language = str(form.get("language", ""))
    referer = urlsplit(request.headers.get("referer", ""))
    came_from = referer.path + (f"?{referer.query}" if referer.query else "")
    back = local_path(str(form.get("next", "")) or came_from)
    if language not in available_languages():
        return RedirectResponse(back, status_code=303)
    user = await current_user(request)
    if user is not None:
        await save_language(services_of(request).db, user.id, language)
    response = RedirectResponse(back, status_code=303)
    remember_language(response, request, language)
    return response


@describe(
    "The scripts' messages in a language",
    responses={200: Media("text/javascript", "the catalogue, as a script"), 404: TEXT},
)
async def scripts_catalogue(request: Request) -> Response:
    language = request.path_params["language"]
    if language not in available_languages():
        return Response(status_code=404)
    catalogue = script_catalogue(language)
    return Response(
        catalogue.body,
        media_type="text/javascript",
        headers={"Cache-Control": "public, max-age=31536000, immutable"},
    )


routes = [
    Route("/language", switch_language, methods=["POST"], name="language"),
    Route("/static/i18n/{language}.js", scripts_catalogue, methods=["GET"], name="scripts_catalogue"),
]
