/* Small page behaviours shared by every admin page. */
(function () {
  "use strict";

  // "Copy" buttons: data-copy-target names the element whose text is copied.
  document.addEventListener("click", function (event) {
    var button = event.target.closest(".js-copy");
    if (!button) return;
    var target = document.getElementById(button.dataset.copyTarget);
    if (!target) return;
    var text = target.textContent.trim();
    var done = function () { if (window.Toast) window.Toast.show(gettext("Copied to the clipboard."), "info"); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectText(target); });
    } else {
      selectText(target);
    }
  });

  // Forms with data-confirm ask before they are sent (no inline handlers: the CSP forbids them).
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
    if (!window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  function selectText(element) {
    var range = document.createRange();
    range.selectNodeContents(element);
    var selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    if (window.Toast) window.Toast.show(gettext("Selected: press Ctrl+C to copy."), "info");
  }

  // Bootstrap ignores hide() while a modal is still sliding in: a quick answer (Enter right
  // after the dialog appeared) would leave it open. Each modal's state is kept here.
  document.addEventListener("show.bs.modal", function (event) { event.target.dataset.modalState = "showing"; });
  document.addEventListener("shown.bs.modal", function (event) { event.target.dataset.modalState = "shown"; });
  document.addEventListener("hidden.bs.modal", function (event) { event.target.dataset.modalState = "hidden"; });

  function closeModal(el) {
    var modal = bootstrap.Modal.getOrCreateInstance(el);
    if (el.dataset.modalState === "showing") {
      el.addEventListener("shown.bs.modal", function () { modal.hide(); }, { once: true });
    } else {
      modal.hide();
    }
  }

  /* The page's #confirm-modal with this text; resolves true when confirmed. */
  function confirmModal(text, okLabel) {
    return new Promise(function (resolve) {
      var el = document.getElementById("confirm-modal");
      el.querySelector("#confirm-text").textContent = text;
      var ok = el.querySelector("#confirm-ok");
      ok.textContent = okLabel || gettext("Confirm");
      var modal = bootstrap.Modal.getOrCreateInstance(el);
      var answered = false;
      var shown = false;
      var onOk = function () { answered = true; if (shown) modal.hide(); };
      ok.addEventListener("click", onOk, { once: true });
      el.addEventListener("hidden.bs.modal", function () { ok.removeEventListener("click", onOk); resolve(answered); }, { once: true });
      el.addEventListener("shown.bs.modal", function () {
        shown = true;
        if (answered) modal.hide(); else ok.focus();
      }, { once: true });
      modal.show();
    });
  }

  // The fetch helpers (api.js) are loaded before this file.
  window.KvmVdi = Object.assign(window.KvmVdi || {}, { closeModal: closeModal, confirm: confirmModal });
})();
