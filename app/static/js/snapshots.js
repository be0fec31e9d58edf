// Snapshots of one persistent desktop (the admin's page and the user's portal page): the list
// follows the `snapshot` live messages; take, revert and delete ask for a confirmation where
// something is lost. Admin calls answer with an operation (its end arrives live); the portal's
// answer carries the outcome and the fresh list.
(function () {
  "use strict";

  const root = document.getElementById("snapshots");
  if (!root) return;
  const vmId = Number(root.dataset.vmId);
  const vmName = root.dataset.vmName;
  const base = root.dataset.api;
  const limit = root.dataset.limit === undefined ? null : Number(root.dataset.limit);
  const rows = document.getElementById("snapshot-rows");
  const status = document.getElementById("snapshot-status");
  const form = document.getElementById("snapshot-form");
  const api = (method, url, body) => window.KvmVdi.api(method, url, body);
  let count = 0;

  function toast(message, kind) {
    if (window.Toast) window.Toast.show(message, kind);
  }

  function cell(text, className) {
    const td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    return td;
  }

  function button(label, action, name, danger) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = `btn btn-sm ${danger ? "btn-outline-danger" : "btn-outline-secondary"} ms-1`;
    b.textContent = label;
    b.dataset.snapshotAction = action;
    b.dataset.snapshot = name;
    return b;
  }

  function render(snapshots) {
    count = snapshots.length;
    if (!snapshots.length) {
      const tr = document.createElement("tr");
      tr.appendChild(cell(gettext("No snapshot yet. Take one before a risky change: you can come back to it."), "text-secondary small"));
      tr.firstChild.colSpan = 4;
      rows.replaceChildren(tr);
    } else {
      rows.replaceChildren(...snapshots.slice().reverse().map((s) => {
        const tr = document.createElement("tr");
        tr.dataset.snapshotName = s.name;
        const name = cell(s.name, "fw-semibold");
        if (s.current) name.append(" ", Object.assign(document.createElement("span"), { className: "badge text-bg-light border fw-normal", textContent: gettext("latest") }));
        if (s.description) name.appendChild(Object.assign(document.createElement("div"), { className: "small text-secondary fw-normal", textContent: s.description }));
        // The hypervisor's times are UTC without a zone.
        tr.append(name, cell(window.i18n.formatDateTime(`${s.created_at}Z`), "small"),
          cell(s.with_memory ? gettext("disk and memory (was running)") : gettext("disk (was shut off)"), "small"));
        const actions = cell("", "text-end text-nowrap");
        actions.append(button(gettext("Revert…"), "revert", s.name, true), button(gettext("Delete…"), "delete", s.name, true));
        tr.appendChild(actions);
        return tr;
      }));
    }
    document.getElementById("snapshot-take").disabled = limit !== null && count >= limit;
    status.textContent = limit !== null
      ? gettext("{count} of {limit}", { count: window.i18n.formatNumber(count), limit: window.i18n.formatNumber(limit) })
      : window.i18n.formatNumber(count);
  }

  async function load() {
    const result = await api("GET", root.dataset.listUrl);
    if (result.ok) render(result.data.snapshots);
    else rows.replaceChildren(Object.assign(document.createElement("tr"), { textContent: result.message }));
  }

  // Admin: 202 with an operation (the list comes live); portal: the outcome and the list.
  function answered(result, doing) {
    if (!result.ok) {
      toast(result.message, "danger");
      if (result.data.snapshots) render(result.data.snapshots);
      return false;
    }
    if (result.data.snapshots) render(result.data.snapshots);
    if (result.data.operation) status.textContent = doing;
    else toast(result.data.message, result.data.state === "running" ? "info" : "success");
    return true;
  }

  async function take(event) {
    event.preventDefault();
    window.KvmVdi.clearRefusal(form);
    const body = { name: form.querySelector("#snapshot-name").value.trim(), description: form.querySelector("#snapshot-description").value };
    const submit = document.getElementById("snapshot-take");
    submit.disabled = true;
    status.textContent = gettext("Taking the snapshot…");
    try {
      const result = await api("POST", base, body);
      if (!result.ok && Object.keys(result.fields).length) {
        window.KvmVdi.showRefusal(form, result);
        return;
      }
      if (answered(result, gettext("Taking the snapshot…"))) form.reset();
    } finally {
      submit.disabled = limit !== null && count >= limit;
    }
  }

  async function act(target) {
    const name = target.dataset.snapshot;
    const revert = target.dataset.snapshotAction === "revert";
    const text = revert
      ? gettext(
        "Revert {vm} to snapshot {name}?\n\nEverything changed on it since the snapshot was taken is lost. " +
          "A snapshot taken while it ran brings the session back running; one taken while it was shut off leaves it shut off.",
        { vm: vmName, name },
      )
      : gettext("Delete snapshot {name} of {vm}? You can no longer come back to it.", { vm: vmName, name });
    if (!(await window.KvmVdi.confirm(text, revert ? gettext("Revert") : gettext("Delete")))) return;
    const doing = revert ? gettext("Reverting…") : gettext("Deleting…");
    status.textContent = doing;
    const path = `${base}/${encodeURIComponent(name)}/${revert ? "revert" : "delete"}`;
    answered(await api("POST", path), doing);
  }

  document.addEventListener("DOMContentLoaded", () => {
    form.addEventListener("submit", take);
    rows.addEventListener("click", (event) => {
      const target = event.target.closest("[data-snapshot-action]");
      if (target) act(target);
    });
    load();
    if (!window.Live) return;
    window.Live.on("snapshot", (data) => { if (data.vm_id === vmId) render(data.snapshots); });
    window.Live.on("operation", (data) => {
      if (data.vm_id !== vmId || !["succeeded", "failed", "interrupted"].includes(data.state)) return;
      if (data.state === "succeeded") toast(data.message, "success");
      else toast(`${data.message || ""} ${data.error || ""}`.trim(), "danger");
      load();
    });
    window.Live.onReconnect(load);
  });
})();
