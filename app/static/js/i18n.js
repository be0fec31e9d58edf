// Translations for the scripts: the language's catalogue (/static/i18n/<lang>.js, loaded just
// before this file) defines window.KVMVDI_I18N; without one, messages stay in English.
// gettext("Started {name}.", {name}) and ngettext("{n} desktop", "{n} desktops", n) fill
// brace placeholders; the catalogue's plural rule picks the form (Lithuanian has three).
(function () {
  "use strict";
  const data = window.KVMVDI_I18N || { language: "en", messages: {}, plural: (n) => Number(n !== 1) };
  const language = document.documentElement.lang || data.language || "en";

  function fill(text, params) {
    if (!params) return text;
    return text.replace(/\{(\w+)\}/g, (whole, key) => (key in params ? String(params[key]) : whole));
  }

  function gettext(message, params) {
    const found = data.messages[message];
    return fill(typeof found === "string" && found ? found : message, params);
  }

  function ngettext(singular, plural, n, params) {
    const forms = data.messages[singular];
    const text = Array.isArray(forms) ? forms[data.plural(n)] || forms[0] : n === 1 ? singular : plural;
    return fill(text, Object.assign({ n: formatNumber(n) }, params));
  }

  function formatNumber(value, digits) {
    const options = digits === undefined ? {} : { minimumFractionDigits: digits, maximumFractionDigits: digits };
    return new Intl.NumberFormat(language, options).format(value);
  }

  function formatDateTime(value) {
    const date = value instanceof Date ? value : new Date(value);
    return new Intl.DateTimeFormat(language, { dateStyle: "medium", timeStyle: "medium" }).format(date);
  }

  // A VM's state as the page's language says it (the same words as the server's labels).
  const STATES = {
    running: gettext("running"),
    paused: gettext("paused"),
    pmsuspended: gettext("suspended"),
    shutoff: gettext("shut off"),
    shutdown: gettext("shutting down"),
    crashed: gettext("crashed"),
    blocked: gettext("blocked"),
    missing: gettext("not defined"),
    undefined: gettext("not defined"),
    unknown: gettext("unknown"),
  };

  function stateLabel(state) {
    return STATES[state] || state;
  }

  window.gettext = gettext;
  window.ngettext = ngettext;
  window.i18n = { language, gettext, ngettext, formatNumber, formatDateTime, stateLabel };
})();
