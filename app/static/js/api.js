/* The one way the page scripts talk to the dashboard: fetch() with the session's cookie and
 * CSRF token, JSON both ways, and every refusal (the error model: {error, message, fields}) or
 * missing answer turned into one readable message.
 *
 *   KvmVdi.api(method, url, body)  -> {ok, status, data, message, fields}; never rejects
 *   KvmVdi.call(method, url, body) -> the answer's data, or throws an ApiError (message, fields)
 *   KvmVdi.fragment(url, {signal}) -> an HTML fragment's text, or throws an ApiError
 *   KvmVdi.showRefusal(form, error) -> each field's message under its field, else a toast
 *     (error: an ApiError or a refused api() answer)
 */
(function () {
  "use strict";

  function csrfToken() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  // What a person reads: the server's own message, else what the status means.
  function messageOf(status, data) {
    if (data && typeof data.message === "string" && data.message) return data.message;
    if (status === 0) return gettext("The dashboard did not answer.");
    if (status === 502 || status === 503 || status === 504) {
      return gettext("The dashboard cannot do this right now ({status}). Try again in a moment.", { status });
    }
    return gettext("Refused ({status})", { status });
  }

  function result(status, ok, data) {
    return { ok, status, data, message: ok ? "" : messageOf(status, data), fields: (data && data.fields) || {} };
  }

  class ApiError extends Error {
    constructor(answer) {
      super(answer.message);
      this.name = "ApiError";
      this.status = answer.status;
      this.code = answer.data.error || "";
      this.fields = answer.fields;
      this.data = answer.data;
    }
  }

  async function parsed(response) {
    const text = await response.text().catch(() => "");
    if (!text) return {};
    try {
      const data = JSON.parse(text);
      return data !== null && typeof data === "object" ? data : {};
    } catch (_) {
      return {}; // not JSON (a proxy's error page): the status speaks instead
    }
  }

  async function api(method, url, body, { signal } = {}) {
    const headers = { Accept: "application/json" };
    if (method !== "GET" && method !== "HEAD") headers["X-CSRF-Token"] = csrfToken();
    const options = { method, credentials: "same-origin", headers, signal };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, options);
    } catch (error) {
      if (error.name === "AbortError") throw error;
      return result(0, false, {});
    }
    return result(response.status, response.ok, await parsed(response));
  }

  async function call(method, url, body, options) {
    const answer = await api(method, url, body, options);
    if (!answer.ok) throw new ApiError(answer);
    return answer.data;
  }

  async function fragment(url, { signal } = {}) {
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin", signal });
    } catch (error) {
      if (error.name === "AbortError") throw error;
      throw new ApiError(result(0, false, {}));
    }
    if (response.ok) return response.text();
    const json = (response.headers.get("Content-Type") || "").includes("application/json");
    throw new ApiError(result(response.status, false, json ? await parsed(response) : {}));
  }

  function clearRefusal(form) {
    form.querySelectorAll(".is-invalid").forEach((el) => el.classList.remove("is-invalid"));
    form.querySelectorAll("[data-error-for]").forEach((el) => { el.textContent = ""; el.classList.remove("d-block"); });
  }

  // A refused form: each field's message under it (the first such field focused); a refusal
  // that names no field of this form as a toast. True when a field showed it.
  function showRefusal(form, error) {
    let shown = false;
    for (const [field, message] of Object.entries(error.fields || {})) {
      const feedback = form.querySelector(`[data-error-for="${CSS.escape(field)}"]`);
      if (!feedback) continue;
      const input = form.querySelector(`[name="${CSS.escape(field)}"]`);
      feedback.textContent = message;
      feedback.classList.add("d-block");
      if (input) {
        input.classList.add("is-invalid");
        if (!shown) input.focus();
      }
      shown = true;
    }
    if (!shown && window.Toast) window.Toast.show(error.message, "danger");
    return shown;
  }

  window.KvmVdi = Object.assign(window.KvmVdi || {}, {
    csrfToken, api, call, fragment, ApiError, clearRefusal, showRefusal,
  });
})();
