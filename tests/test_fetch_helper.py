"""The page scripts' one fetch helper (app/static/js/api.js) in a real browser against a real
dashboard: the CSRF token goes with every change, and every refusal (the error model, a page that
is not JSON, no answer at all) becomes one readable message, under its field or as a toast."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from selenium.webdriver.remote.webdriver import WebDriver

from tests.browser_steps import By, log_in, toasts, wait, wait_live
from tests.dashboard import RunningDashboard
from tests.services.browser import BrowserFactory

pytestmark = pytest.mark.browser

MISSING_VM = "/api/v1/admin/vms/999999/power"


def run(driver: WebDriver, script: str) -> Any:
    """An async script's outcome: ``done(value)`` answers it; a rejection is {"rejected": ...}."""
    wrapped = (
        "const done = arguments[arguments.length - 1];"
        f"(async () => {{ {script} }})().then(done, (e) => done({{rejected: {{name: e.name, "
        "message: e.message, status: e.status, code: e.code, fields: e.fields}}));"
    )
    return driver.execute_async_script(wrapped)


async def test_every_refusal_reaches_the_page_as_a_readable_message(
    dashboard: RunningDashboard, browser: BrowserFactory
) -> None:
    def scenario() -> None:
        with browser.session() as driver:
            driver.set_script_timeout(30)
            log_in(driver, dashboard.url, "admin", dashboard.admin_password)
            wait_live(driver)

            # The same change without the session's CSRF token is refused; through the helper,
            # the token goes with it and the request reaches the VM code, which does not know it.
            bare = run(driver, f"return (await fetch('{MISSING_VM}', {{method: 'POST'}})).status;")
            assert bare == 403
            missing = run(driver, f"return await KvmVdi.call('POST', '{MISSING_VM}', {{action: 'start'}});")
            refusal = missing["rejected"]
            assert refusal["name"] == "ApiError"
            assert (refusal["status"], refusal["code"]) == (404, "not_found")
            direct = run(
                driver,
                f"return await (await fetch('{MISSING_VM}', {{method: 'POST', headers: "
                "{'X-CSRF-Token': KvmVdi.csrfToken(), 'Content-Type': 'application/json'}, "
                "body: JSON.stringify({action: 'start'})})).json();",
            )
            assert refusal["message"] == direct["message"] != ""

            # A refused body: the message and each field's own message.
            invalid = run(driver, f"return await KvmVdi.api('POST', '{MISSING_VM}', {{action: 'dance'}});")
            assert (invalid["ok"], invalid["status"]) == (False, 400)
            assert invalid["message"] == invalid["data"]["message"] != ""
            assert invalid["fields"]["action"] != ""

            # A refusal that is not JSON (a page) says what its status means.
            page = run(driver, "return await KvmVdi.fragment('/hypervisors/999999/row');")
            assert page["rejected"]["status"] == 404
            assert page["rejected"]["message"] == "Refused (404)"
            unknown = run(driver, "return await KvmVdi.api('GET', '/no/such/page');")
            assert unknown["status"] == 404 and unknown["message"] != ""

            # No answer at all (nothing listens there): a message, never an unhandled rejection.
            silent = run(driver, "return await KvmVdi.api('GET', 'http://127.0.0.1:9/');")
            assert (silent["ok"], silent["status"]) == (False, 0)
            assert silent["message"] == "The dashboard did not answer."

            # A form shows each field's message under its field, focused; a refusal naming no
            # field of the form is a toast.
            shown = run(
                driver,
                "const form = document.createElement('form');"
                'form.innerHTML = \'<input name="action"><div data-error-for="action"></div>\';'
                "document.body.append(form);"
                f"const answer = await KvmVdi.api('POST', '{MISSING_VM}', {{action: 'dance'}});"
                "const underField = KvmVdi.showRefusal(form, answer);"
                "return {underField, text: form.querySelector('[data-error-for]').textContent,"
                " invalid: form.querySelector('input').classList.contains('is-invalid'),"
                " focused: document.activeElement === form.querySelector('input'),"
                " expected: answer.fields.action};",
            )
            assert shown["underField"] is True and shown["text"] == shown["expected"]
            assert shown["invalid"] and shown["focused"]
            toasted = run(
                driver,
                "const form = document.createElement('form');"
                f"try {{ await KvmVdi.call('POST', '{MISSING_VM}', {{action: 'start'}}); }}"
                "catch (error) {"
                " return {underField: KvmVdi.showRefusal(form, error), message: error.message}; }",
            )
            assert toasted["underField"] is False
            wait(driver).until(lambda d: toasted["message"] in toasts(d))
            assert (
                driver.find_element(By.CSS_SELECTOR, "#toasts .toast").get_attribute("data-kind") == "danger"
            )

    await asyncio.to_thread(scenario)
