/* Toasts for results: Toast.show(message, kind). Also shows the ?toast= message a
 * redirect carried (then removes it from the address bar) and "toast" messages
 * pushed on the live channel. Text only: messages are never parsed as HTML. */
(function () {
  "use strict";

  var ICONS = { success: "check-circle", info: "info-circle", warning: "exclamation-triangle", danger: "x-octagon" };

  function container() {
    var el = document.getElementById("toasts");
    if (!el) {
      el = document.createElement("div");
      el.id = "toasts";
      el.className = "toast-container position-fixed bottom-0 end-0 p-3";
      document.body.appendChild(el);
    }
    return el;
  }

  function show(message, kind) {
    kind = ICONS[kind] ? kind : "success";
    var toast = document.createElement("div");
    toast.className = "toast align-items-center border-0 text-bg-" + kind;
    toast.setAttribute("role", kind === "danger" ? "alert" : "status");
    toast.setAttribute("aria-live", kind === "danger" ? "assertive" : "polite");
    toast.setAttribute("aria-atomic", "true");
    toast.dataset.kind = kind;

    var row = document.createElement("div");
    row.className = "d-flex";
    var body = document.createElement("div");
    body.className = "toast-body";
    var icon = document.createElement("i");
    icon.className = "bi bi-" + ICONS[kind] + " me-2";
    icon.setAttribute("aria-hidden", "true");
    body.appendChild(icon);
    body.appendChild(document.createTextNode(message));
    var close = document.createElement("button");
    close.type = "button";
    close.className = "btn-close btn-close-white me-2 m-auto";
    close.setAttribute("data-bs-dismiss", "toast");
    close.setAttribute("aria-label", gettext("Close"));
    row.appendChild(body);
    row.appendChild(close);
    toast.appendChild(row);
    container().appendChild(toast);

    // Errors stay until dismissed; confirmations fade after a while.
    var instance = new bootstrap.Toast(toast, { autohide: kind !== "danger", delay: 7000 });
    toast.addEventListener("hidden.bs.toast", function () { toast.remove(); });
    instance.show();
    return toast;
  }

  function showRedirectToast() {
    var params = new URLSearchParams(location.search);
    if (!params.has("toast")) return;
    show(params.get("toast"), params.get("toast_kind") || "success");
    params.delete("toast");
    params.delete("toast_kind");
    var query = params.toString();
    history.replaceState(history.state, "", location.pathname + (query ? "?" + query : "") + location.hash);
  }

  window.Toast = { show: show };

  if (window.Live) {
    window.Live.on("toast", function (data) {
      if (data && data.message) show(String(data.message), data.kind);
    });
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", showRedirectToast);
  } else {
    showRedirectToast();
  }
})();
