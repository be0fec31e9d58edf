// The image versions page of an initial machine, live: the panel is fetched again whenever an
// `image` message (or a `vm` message of one of its machines) says it changed, and the progress of
// a publication or roll-out follows the `operation` messages. No polling.
(function () {
  "use strict";

  const panel = document.getElementById("versions-panel");
  if (!panel) return;
  const initialId = Number(panel.dataset.initialId);
  const initialName = panel.dataset.initialName;
  const api = (method, url, body) => window.KvmVdi.api(method, url, body);
  const base = `/api/v1/admin/vms/${initialId}/versions`;
  let timer = null;

  function toast(message, kind) {
    if (window.Toast) window.Toast.show(message, kind);
  }

  async function refresh() {
    clearTimeout(timer);
    timer = null;
    try {
      panel.innerHTML = await window.KvmVdi.fragment(`/vms/${initialId}/versions/panel`);
    } catch (_) {
      /* kept as it is: the next message or reconnection fetches it again */
    }
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, 200);
  }

  function childIds() {
    return new Set([...panel.querySelectorAll("[data-child-id]")].map((tr) => Number(tr.dataset.childId)));
  }

  function onOperation(data) {
    if (data.vm_id !== initialId) return;
    const card = document.getElementById("image-operation");
    const done = ["succeeded", "failed", "interrupted"].includes(data.state);
    card.classList.remove("d-none");
    card.querySelector(".op-message").textContent = data.message || data.kind;
    card.querySelector(".op-percent").textContent = `${Math.round(data.progress)} %`;
    card.querySelector(".progress-bar").style.width = `${data.progress}%`;
    card.querySelector(".progress").setAttribute("aria-valuenow", String(Math.round(data.progress)));
    if (!done) return;
    if (data.state === "succeeded") toast(data.message || gettext("{kind} finished", { kind: data.kind }), "success");
    else toast(`${data.message || ""} ${data.error || ""}`.trim() || gettext("{kind}: {state}", { kind: data.kind, state: data.state }), "danger");
    setTimeout(() => card.classList.add("d-none"), data.state === "succeeded" ? 1500 : 6000);
    schedule();
  }

  // -- actions ------------------------------------------------------------------------------

  async function answer(request, success) {
    const result = await request;
    if (!result.ok) {
      toast(result.message, "danger");
      return false;
    }
    if (success) toast(success, "success");
    schedule();
    return true;
  }

  async function act(button) {
    const action = button.dataset.imageAction;
    if (action === "delete") return openDelete(button.dataset.versionId);
    const label = button.textContent.trim();
    if (button.dataset.confirm && !(await window.KvmVdi.confirm(button.dataset.confirm, label))) return;
    if (action === "rollout") await answer(api("POST", `${base}/rollout`));
    else if (action === "rollback") await answer(api("POST", `${base}/rollback`), gettext("Rolled back."));
    else if (action === "target") {
      await answer(api("POST", `${base}/target`, { version_id: Number(button.dataset.versionId) }), gettext("Target changed."));
    }
  }

  // Publish: the form's answer is the operation; its progress arrives live.
  const clearErrors = (form) => window.KvmVdi.clearRefusal(form);

  // The explanation follows the chosen origin; shutting down does not apply to a running copy.
  function showOrigin(el) {
    const running = el.querySelector("#publish-origin-running").checked;
    el.querySelector("#publish-shutdown-choice").classList.toggle("d-none", running);
    el.querySelector("#publish-running-text").classList.toggle("d-none", !running);
    el.querySelector("#publish-stopped-text").classList.toggle("d-none", running);
  }

  async function submitPublish(event) {
    event.preventDefault();
    const form = event.target;
    clearErrors(form);
    const origin = form.querySelector('input[name="origin"]:checked').value;
    const note = form.querySelector("#publish-note").value;
    // A running initial is copied where it runs, through its own endpoint.
    const result = origin === "running"
      ? await api("POST", `${base}/from-running`, { note })
      : await api("POST", base, { origin, shutdown: form.querySelector("#publish-shutdown").checked, note });
    if (!result.ok) {
      window.KvmVdi.showRefusal(form, result);
      return;
    }
    window.KvmVdi.closeModal(document.getElementById("publish-modal"));
    onOperation(result.data.operation);
  }

  // Delete: the modal shows the server's plan; the request confirms exactly its files.
  let plan = null;
  let planFor = null;

  async function openDelete(versionId) {
    const el = document.getElementById("version-delete-modal");
    const ok = el.querySelector("#version-delete-ok");
    const error = el.querySelector("#version-delete-error");
    const shown = el.querySelector("#version-delete-plan");
    plan = null;
    planFor = versionId;
    ok.disabled = true;
    error.classList.add("d-none");
    shown.classList.add("d-none");
    bootstrap.Modal.getOrCreateInstance(el).show();
    const result = await api("GET", `${base}/${versionId}/delete-plan`);
    if (!result.ok) {
      error.textContent = result.message;
      error.classList.remove("d-none");
      return;
    }
    plan = result.data.plan;
    el.querySelector("#version-delete-title").textContent = gettext("Delete {version} of {name}", { version: plan.version.label, name: initialName });
    el.querySelector("#version-delete-files").replaceChildren(...plan.files.map((path) => {
      const li = document.createElement("li");
      const code = document.createElement("code");
      code.textContent = path;
      li.appendChild(code);
      return li;
    }));
    const working = el.querySelector("#version-delete-working");
    working.classList.toggle("d-none", !plan.working_disk);
    working.textContent = plan.working_disk
      ? gettext(
        "The working disk of {name} ({path}) is based on it: it is recreated on {version}, and changes made by starting {name} since are discarded.",
        { name: initialName, path: plan.working_disk.path, version: plan.working_disk.recreated_on },
      )
      : "";
    ok.textContent = gettext("Delete {version}", { version: plan.version.label });
    ok.disabled = false;
    shown.classList.remove("d-none");
  }

  async function confirmDelete() {
    if (!plan) return;
    const el = document.getElementById("version-delete-modal");
    const result = await api("POST", `${base}/${planFor}/delete`, { confirm_files: plan.files });
    if (!result.ok) {
      const error = el.querySelector("#version-delete-error");
      error.textContent = result.message;
      error.classList.remove("d-none");
      return;
    }
    window.KvmVdi.closeModal(el);
    toast(gettext("Deleted {version}.", { version: plan.version.label }), "success");
    schedule();
  }

  document.addEventListener("DOMContentLoaded", () => {
    panel.addEventListener("click", (event) => {
      const button = event.target.closest("[data-image-action]");
      if (button && !button.disabled) act(button);
    });
    document.getElementById("publish-open").addEventListener("click", () => {
      const el = document.getElementById("publish-modal");
      clearErrors(el.querySelector("form"));
      // A running initial is offered its point-in-time copy, chosen first.
      const marker = panel.querySelector("#image-initial-state");
      const running = marker !== null && marker.dataset.running === "yes";
      el.querySelector("#publish-running-choice").classList.toggle("d-none", !running);
      el.querySelector(running ? "#publish-origin-running" : "#publish-origin-source").checked = true;
      showOrigin(el);
      bootstrap.Modal.getOrCreateInstance(el).show();
    });
    document.getElementById("publish-form").addEventListener("change", () => showOrigin(document.getElementById("publish-modal")));
    document.getElementById("publish-form").addEventListener("submit", submitPublish);
    document.getElementById("version-delete-ok").addEventListener("click", confirmDelete);
    if (!window.Live) return;
    window.Live.on("image", (data) => { if (data.initial_id === initialId) schedule(); });
    window.Live.on("vm", (data) => { if (data.id === initialId || childIds().has(data.id)) schedule(); });
    window.Live.on("operation", onOperation);
    window.Live.onReconnect(refresh);
  });
})();
