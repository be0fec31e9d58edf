// The VM table's rows, live: state badges, progress bars, thumbnails and rows follow the `vm` and
// `operation` messages of the live websocket, and the actions of one VM. No reloads and no
// polling: rows are fetched only when a message says that they changed, many in one request,
// so that a burst (a thousand desktops starting) never floods the page or the server.
// vm_table.js handles the table as a whole (filters, pages, selection, actions on many VMs).
(function () {
  "use strict";

  const STATE_STYLES = {
    running: "success", paused: "warning", pmsuspended: "warning", shutoff: "secondary",
    crashed: "danger", missing: "danger", unknown: "light",
  };
  const pendingThumbs = new Map(); // vm id -> version not shown yet (row out of view)
  const visible = new Set();       // vm ids whose row is in view
  const staleRows = new Set();     // vm ids whose row is fetched again soon
  const newStates = new Map();     // vm id -> state, drawn at the next animation frame
  let rowsTimer = null;
  let rowsInFlight = false;
  let rowRetry = 0; // ms before asking again for rows the dashboard could not give just now
  let frame = null;
  const table = () => window.VmTable;

  // -- messages and requests ---------------------------------------------------------------

  function toast(message, level) {
    const kind = { error: "danger" }[level] || level || "info";
    if (window.Toast) window.Toast.show(message, kind);
  }

  // The answer's data; a refusal throws (api.js), with the readable message and the fields.
  const api = (method, path, body) => window.KvmVdi.call(method, path, body);

  function subscribe(topic, handler) {
    if (window.Live) window.Live.on(topic, handler);
  }

  // -- rows --------------------------------------------------------------------------------

  const rowOf = (id) => document.getElementById(`vm-${id}`);

  function setState(row, state) {
    row.dataset.state = state;
    const badge = row.querySelector("[data-state-badge]");
    if (badge) {
      badge.className = `badge state-badge text-bg-${STATE_STYLES[state] || "light"}`;
      badge.textContent = i18n.stateLabel(state);
    }
  }

  // State badges change at once, all of a burst in one frame; the rows follow in one request.
  function drawStates() {
    frame = null;
    for (const [id, state] of newStates) {
      const row = rowOf(id);
      if (row) setState(row, state);
    }
    newStates.clear();
  }

  function queueState(id, state) {
    newStates.set(id, state);
    if (frame === null) frame = requestAnimationFrame(drawStates);
  }

  function scheduleRow(id, delay) {
    staleRows.add(String(id));
    if (rowsTimer === null && !rowsInFlight) rowsTimer = setTimeout(refreshRows, delay ?? 150);
  }

  async function refreshRows() {
    rowsTimer = null;
    // A row whose menu is open is not pulled away from under the pointer: it waits its turn.
    const waiting = [...staleRows].filter((id) => rowOf(id)?.querySelector(".dropdown-menu.show"));
    const ids = [...staleRows].filter((id) => rowOf(id) && !waiting.includes(id)).slice(0, 400);
    staleRows.clear();
    waiting.forEach((id) => staleRows.add(id));
    let failed = false;
    if (ids.length) {
      rowsInFlight = true;
      try {
        replaceRows(ids, await window.KvmVdi.fragment(`/vms/rows?ids=${ids.join(",")}`));
      } catch (error) {
        failed = true;
      } finally {
        rowsInFlight = false;
      }
    }
    if (failed) {
      // The dashboard is busy or away for a moment (503): these rows are still stale; ask again.
      ids.forEach((id) => staleRows.add(id));
      rowRetry = Math.min(rowRetry ? rowRetry * 2 : 1000, 10000);
    } else if (ids.length) {
      rowRetry = 0;
    }
    if (staleRows.size) {
      const delay = failed ? rowRetry : (waiting.length === staleRows.size ? 1500 : 150);
      rowsTimer = setTimeout(refreshRows, delay);
    }
  }

  function replaceRows(ids, html) {
    const template = document.createElement("template");
    template.innerHTML = `<table><tbody>${html}</tbody></table>`;
    const fresh = new Map([...template.content.querySelectorAll("tr.vm-row")].map((tr) => [tr.dataset.vmId, tr]));
    let moved = false;
    for (const id of ids) {
      const current = rowOf(id);
      const row = fresh.get(id);
      if (!current) continue;
      if (!row) { removeRow(id); continue; }
      // A row that changed its place (re-classified, another parent) needs the table again.
      if (row.dataset.group !== current.dataset.group) { moved = true; continue; }
      current.replaceWith(row);
      prepareRow(row);
    }
    table()?.applySelection();
    if (moved) scheduleTable();
  }

  function refreshTable() {
    return table()?.reload();
  }

  function scheduleTable(delay) {
    table()?.scheduleReload(delay);
  }

  function removeRow(id) {
    const row = rowOf(id);
    table()?.forget(id);
    visible.delete(String(id));
    if (!row) return;
    if (row.dataset.kind === "initial") {
      document.getElementById(`group-initial-${id}`)?.remove();
    } else {
      row.remove();
    }
    // Counts and pages moved: the table again, once the burst is over.
    scheduleTable(600);
  }

  // -- thumbnails: swapped only for rows in view --------------------------------------------

  const observer = new IntersectionObserver((entries) => {
    for (const entry of entries) {
      const id = entry.target.dataset.vmId;
      if (entry.isIntersecting) {
        visible.add(id);
        const img = entry.target.querySelector("img.thumb[data-src]");
        if (img) { img.src = img.dataset.src; img.removeAttribute("data-src"); }
        if (pendingThumbs.has(id)) showThumb(id, pendingThumbs.get(id));
      } else {
        visible.delete(id);
      }
    }
  });

  // A picture that cannot be had (no longer kept, or the hypervisor cannot take one): the placeholder.
  document.addEventListener("error", (event) => {
    const img = event.target;
    if (!(img instanceof HTMLImageElement) || !img.classList.contains("thumb")) return;
    const placeholder = img.dataset.placeholder;
    if (placeholder && !img.src.endsWith(placeholder)) img.src = placeholder;
  }, true);

  function showThumb(id, version) {
    const img = rowOf(id)?.querySelector("img.thumb");
    pendingThumbs.delete(String(id));
    if (!img) return;
    img.dataset.thumbVersion = String(version);
    img.removeAttribute("data-src");
    img.src = `/vms/${id}/thumbnail.png?v=${version}`;
  }

  // -- live messages ------------------------------------------------------------------------

  function onVm(data) {
    const id = String(data.id);
    const row = rowOf(id);
    switch (data.change) {
      case "deleted":
        removeRow(id);
        return;
      case "thumbnail":
        if (!row) return;
        if (visible.has(id)) showThumb(id, data.thumbnail);
        else pendingThumbs.set(id, data.thumbnail);
        return;
      case "created":
      case "classified":
        scheduleTable();
        return;
      default:
        if (row) {
          if (data.state) queueState(id, data.state);
          scheduleRow(id); // actions, flags and the thumbnail cell depend on the state
        }
        // A VM off this page may now match the filters (or stop matching): the page again, once
        // the burst is over. Without such a filter, a VM elsewhere changes nothing here.
        if (table()?.stateMatters()) scheduleTable(1500);
    }
  }

  function operationItem(data) {
    const list = document.getElementById("operations");
    let item = list.querySelector(`[data-op-id="${data.id}"]`);
    if (!item) {
      item = document.createElement("li");
      item.className = "list-group-item";
      item.dataset.opId = data.id;
      item.innerHTML = '<div class="d-flex justify-content-between small"><span class="op-message"></span>' +
        '<span class="op-percent"></span></div><div class="progress progress-thin" role="progressbar" ' +
        'aria-valuemin="0" aria-valuemax="100"><div class="progress-bar"></div></div>';
      item.querySelector(".progress").setAttribute("aria-label", gettext("Operation {id}", { id: data.id }));
      list.appendChild(item);
    }
    return item;
  }

  function setProgress(container, percent, message) {
    const bar = container.querySelector(".progress-bar");
    const progress = container.querySelector(".progress");
    if (bar) bar.style.width = `${percent}%`;
    if (progress) progress.setAttribute("aria-valuenow", String(Math.round(percent)));
    const text = container.querySelector(".vm-progress-text, .op-message");
    if (text && message !== undefined) text.textContent = message;
    const pct = container.querySelector(".op-percent");
    if (pct) pct.textContent = `${i18n.formatNumber(Math.round(percent))} %`;
  }

  function onOperation(data) {
    const card = document.getElementById("operations-card");
    const done = ["succeeded", "failed", "interrupted"].includes(data.state);
    const item = operationItem(data);
    setProgress(item, data.progress, data.message || data.kind);
    card.classList.remove("d-none");
    const rows = [data.vm_id, ...(data.vm_ids || [])].filter((id) => id !== null && id !== undefined);
    const primary = data.vm_id !== null && data.vm_id !== undefined ? rowOf(data.vm_id) : null;
    if (primary) {
      const box = primary.querySelector(".vm-progress");
      box.classList.remove("d-none");
      primary.dataset.operationId = data.id;
      setProgress(box, data.progress, data.message);
    }
    if (!done) return;
    if (data.state === "succeeded") toast(data.message || gettext("{kind} finished", { kind: data.kind }), "success");
    else {
      const told = `${data.message ? data.message + " " : ""}${data.error || ""}`.trim(); // i18n-ignore: the server's texts
      toast(told || gettext("{kind}: {state}", { kind: data.kind, state: i18n.stateLabel(data.state) }), "error");
    }
    setTimeout(() => {
      item.remove();
      if (!document.querySelector("#operations [data-op-id]")) card.classList.add("d-none");
    }, data.state === "succeeded" ? 1500 : 6000);
    for (const id of new Set(rows.map(String))) if (rowOf(id)) scheduleRow(id, 300);
  }

  // -- actions ------------------------------------------------------------------------------

  const closeModal = (el) => window.KvmVdi.closeModal(el);
  const confirmModal = (text, okLabel) => window.KvmVdi.confirm(text, okLabel);

  // A .vv file mints a console ticket and sets a SPICE password: a POST with the CSRF token,
  // submitted as a form so that the browser saves the answer (an attachment) as a file.
  function downloadVv(id) {
    const form = document.createElement("form");
    form.method = "post";
    form.action = `/vms/${id}/console.vv`;
    form.hidden = true;
    const token = document.createElement("input");
    token.type = "hidden";
    token.name = "csrf_token";
    token.value = window.KvmVdi.csrfToken();
    form.append(token);
    document.body.append(form);
    form.submit();
    form.remove();
  }

  async function act(button) {
    const row = button.closest("tr.vm-row");
    const id = row.dataset.vmId;
    const name = row.dataset.vmName;
    const action = button.dataset.action;
    if (action === "delete") return openDelete(row);
    if (action === "classify") return openClassify(row);
    if (action === "media") return openMedia(row);
    if (action === "populate") return openPopulate(row, button);
    if (action === "vv") return downloadVv(id);
    if (button.dataset.confirm && !(await confirmModal(button.dataset.confirm, button.textContent.trim().replace(/…$/, "")))) return;
    try {
      if (action === "power") {
        await power(id, name, button);
      } else if (action === "flag") {
        await api("POST", `/api/v1/admin/vms/${id}/flags`, { [button.dataset.flag]: button.dataset.value === "true" });
      } else if (action === "children-power") {
        await api("POST", `/api/v1/admin/vms/${id}/children/power`, { action: button.dataset.power });
      } else if (action === "children-flag") {
        await api("POST", `/api/v1/admin/vms/${id}/children/flags`, { [button.dataset.flag]: button.dataset.value === "true" });
      }
    } catch (error) {
      toast(`${name}: ${error.message}`, "error");
    }
  }

  // Starting an initial machine whose own disk VDI machines run on: the server names them, the
  // admin confirms exactly those (they are forced off and put in maintenance first).
  async function power(id, name, button) {
    const body = { action: button.dataset.power };
    try {
      await api("POST", `/api/v1/admin/vms/${id}/power`, body);
    } catch (error) {
      if (error.code !== "children_depend") throw error;
      const forced = gettext("Forced off and put in maintenance: {names}.", { names: error.data.vms.join(", ") });
      const text = `${error.message}\n\n${forced}`;
      if (!(await confirmModal(text, gettext("Force them off and start")))) return;
      await api("POST", `/api/v1/admin/vms/${id}/power`, { ...body, confirm_children: error.data.vms });
    }
    toast(gettext("{name}: {action} requested", { name, action: button.textContent.trim().replace(/…$/, "") }), "info");
  }

  // Delete: the modal lists what the server says will be destroyed; the request confirms exactly that.
  // The target is one VM's id, or {ids} for the VMs selected in the table.
  let deleteTarget = null;
  let deletePlan = null;

  async function loadPlan() {
    const el = document.getElementById("delete-modal");
    const ok = el.querySelector("#delete-ok");
    const error = el.querySelector("#delete-error");
    ok.disabled = true;
    deletePlan = null;
    const query = new URLSearchParams({
      remove_disks: el.querySelector("#delete-remove-disks").checked ? "1" : "0",
      with_children: el.querySelector("#delete-with-children").checked ? "1" : "0",
    });
    const bulk = typeof deleteTarget === "object";
    try {
      const body = bulk
        ? await api("POST", "/api/v1/admin/vms/bulk/delete-plan", {
          vm_ids: deleteTarget.ids, remove_disks: el.querySelector("#delete-remove-disks").checked,
        })
        : await api("GET", `/api/v1/admin/vms/${deleteTarget}/delete-plan?${query}`);
      deletePlan = body.plan;
      const refused = el.querySelector("#delete-refused");
      const notDeleted = deletePlan.refused || [];
      refused.classList.toggle("d-none", !notDeleted.length);
      refused.textContent = notDeleted.length
        ? gettext("Not deleted: {list}.", { list: notDeleted.map((item) => `${item.name} (${item.reason})`).join("; ") })
        : "";
      error.classList.add("d-none");
      el.querySelector("#delete-plan").classList.remove("d-none");
      const fill = (list, items, empty) => {
        list.replaceChildren(...(items.length ? items : [empty]).map((text) => {
          const li = document.createElement("li");
          if (items.length) { const code = document.createElement("code"); code.textContent = text; li.appendChild(code); }
          else { li.textContent = text; li.className = "text-secondary"; }
          return li;
        }));
      };
      fill(el.querySelector("#delete-vms"), deletePlan.vms, gettext("(none)"));
      fill(el.querySelector("#delete-files"), deletePlan.files, gettext("No file is removed: the disks stay on the hypervisor."));
      const kept = el.querySelector("#delete-kept");
      const state = deletePlan.state_files || [];
      kept.classList.toggle("d-none", !deletePlan.kept_files.length && !state.length);
      kept.textContent = [
        deletePlan.kept_files.length
          ? gettext("Kept because other VMs still use them: {files}.", { files: deletePlan.kept_files.join(", ") }) : "",
        state.length
          ? gettext("Removed with the VMs (their UEFI variable stores and TPM states): {files}.", { files: state.join(", ") }) : "",
      ].filter(Boolean).join(" ");
      const vmCount = deletePlan.vms.length;
      const fileCount = deletePlan.files.length;
      ok.textContent = fileCount
        ? gettext("Delete {vms} and {files}", {
          vms: ngettext("{n} VM", "{n} VMs", vmCount), files: ngettext("{n} file", "{n} files", fileCount) })
        : gettext("Delete {vms}", { vms: ngettext("{n} VM", "{n} VMs", vmCount) });
      ok.disabled = !deletePlan.vms.length;
    } catch (err) {
      el.querySelector("#delete-plan").classList.add("d-none");
      error.textContent = err.message;
      error.classList.remove("d-none");
    }
  }

  function openDelete(row, bulk) {
    deleteTarget = bulk ? { ids: bulk.ids } : row.dataset.vmId;
    const el = document.getElementById("delete-modal");
    el.querySelector("#delete-title").textContent = bulk
      ? ngettext("Delete {n} selected VM", "Delete {n} selected VMs", bulk.ids.length)
      : gettext("Delete {name}", { name: row.dataset.vmName });
    el.querySelector("#delete-refused").classList.add("d-none");
    el.querySelector("#delete-remove-disks").checked = false;
    el.querySelector("#delete-with-children").checked = false;
    el.querySelector("#delete-children-wrap").classList.toggle("d-none", Boolean(bulk) || row.dataset.kind !== "initial");
    bootstrap.Modal.getOrCreateInstance(el).show();
    loadPlan();
  }

  async function confirmDelete() {
    const el = document.getElementById("delete-modal");
    if (!deletePlan) return;
    const body = {
      remove_disks: el.querySelector("#delete-remove-disks").checked,
      with_children: el.querySelector("#delete-with-children").checked,
      confirm_vms: deletePlan.vms,
      confirm_files: deletePlan.files,
    };
    try {
      if (typeof deleteTarget === "object") {
        delete body.with_children;
        await api("POST", "/api/v1/admin/vms/bulk/delete", { vm_ids: deleteTarget.ids, ...body });
        closeModal(el);
        table()?.clearSelection();
        toast(ngettext("Deleting {n} VM", "Deleting {n} VMs", deletePlan.vms.length), "info");
        return;
      }
      await api("DELETE", `/api/v1/admin/vms/${deleteTarget}`, body);
      closeModal(el);
      toast(gettext("Deleted {names}", { names: deletePlan.vms.join(", ") }), "success");
    } catch (err) {
      const error = el.querySelector("#delete-error");
      error.textContent = err.message;
      error.classList.remove("d-none");
      loadPlan();
    }
  }

  // Classify: parents come from the rows on the page (initials for VDI, sources for initials).
  let classifyTarget = null;
  function fillParents() {
    const el = document.getElementById("classify-modal");
    const kind = el.querySelector("#classify-kind").value;
    const select = el.querySelector("#classify-parent");
    const parentKind = { vdi: "initial", initial: "source" }[kind];
    select.replaceChildren(new Option(gettext("(no parent)"), ""));
    select.disabled = !parentKind;
    if (!parentKind) return;
    document.querySelectorAll(`tr.vm-row[data-kind="${parentKind}"]`).forEach((tr) => {
      if (tr.dataset.vmId !== classifyTarget) select.add(new Option(tr.dataset.vmName, tr.dataset.vmId));
    });
  }

  const clearErrors = (form) => window.KvmVdi.clearRefusal(form);
  const showErrors = (form, error) => window.KvmVdi.showRefusal(form, error);

  function openClassify(row) {
    classifyTarget = row.dataset.vmId;
    const el = document.getElementById("classify-modal");
    el.querySelector("#classify-title").textContent = gettext("Classify {name}", { name: row.dataset.vmName });
    const kind = el.querySelector("#classify-kind");
    kind.value = row.dataset.kind === "unclassified" ? "simple" : row.dataset.kind;
    clearErrors(el.querySelector("form"));
    fillParents();
    bootstrap.Modal.getOrCreateInstance(el).show();
  }

  async function submitClassify(event) {
    event.preventDefault();
    const form = event.target;
    clearErrors(form);
    const parent = form.querySelector("#classify-parent").value;
    try {
      await api("POST", `/api/v1/admin/vms/${classifyTarget}/classify`, {
        kind: form.querySelector("#classify-kind").value,
        parent_id: parent ? Number(parent) : null,
      });
      closeModal(document.getElementById("classify-modal"));
    } catch (error) {
      showErrors(form, error);
    }
  }

  // Populate: the modal names what is recreated; waiting for the first boots is opt-in.
  let populateTarget = null;
  function openPopulate(row, button) {
    populateTarget = row.dataset.vmId;
    const el = document.getElementById("populate-modal");
    const form = el.querySelector("form");
    clearErrors(form);
    el.querySelector("#populate-title").textContent = gettext("Populate {name}", { name: row.dataset.vmName });
    el.querySelector("#populate-text").textContent = button.dataset.summary;
    el.querySelector("#populate-wait").checked = false;
    el.querySelector("#populate-timeout").disabled = true;
    bootstrap.Modal.getOrCreateInstance(el).show();
  }

  async function submitPopulate(event) {
    event.preventDefault();
    const form = event.target;
    clearErrors(form);
    const wait = form.querySelector("#populate-wait").checked;
    const body = wait
      ? { wait_first_boot: true, first_boot_timeout: Number(form.querySelector("#populate-timeout").value) }
      : {};
    try {
      await api("POST", `/api/v1/admin/vms/${populateTarget}/populate`, body);
      closeModal(document.getElementById("populate-modal"));
    } catch (error) {
      showErrors(form, error);
    }
  }

  let mediaTarget = null;
  async function openMedia(row) {
    mediaTarget = row.dataset.vmId;
    const el = document.getElementById("media-modal");
    el.querySelector("#media-title").textContent = gettext("CD-ROM of {name}", { name: row.dataset.vmName });
    const select = el.querySelector("#media-iso");
    clearErrors(el.querySelector("form"));
    select.replaceChildren(new Option(gettext("(empty drive: eject)"), ""));
    bootstrap.Modal.getOrCreateInstance(el).show();
    try {
      const [isos, vm] = await Promise.all([
        api("GET", `/api/v1/admin/hypervisors/${row.dataset.hypervisorId}/isos`),
        api("GET", `/api/v1/admin/vms/${mediaTarget}`),
      ]);
      for (const iso of isos.isos) {
        const option = new Option(iso.name, iso.path);
        option.selected = iso.path === vm.vm.iso_path;
        select.add(option);
      }
    } catch (error) {
      showErrors(el.querySelector("form"), error);
    }
  }

  async function submitMedia(event) {
    event.preventDefault();
    const form = event.target;
    clearErrors(form);
    const iso = form.querySelector("#media-iso").value;
    try {
      await api("POST", `/api/v1/admin/vms/${mediaTarget}/media`, { iso_path: iso || null });
      closeModal(document.getElementById("media-modal"));
      toast(iso ? gettext("Inserted {iso}", { iso: iso.split("/").pop() }) : gettext("CD-ROM ejected"), "success");
    } catch (error) {
      showErrors(form, error);
    }
  }

  // -- set-up -------------------------------------------------------------------------------

  function prepareRow(row) {
    observer.observe(row);
    const id = row.dataset.vmId;
    if (pendingThumbs.has(id) && visible.has(id)) showThumb(id, pendingThumbs.get(id));
  }

  function prepareTable() {
    observer.disconnect();
    visible.clear();
    document.querySelectorAll("#vm-table tr.vm-row").forEach(prepareRow);
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.getElementById("vm-table-wrap");
    if (!page) return;
    page.addEventListener("click", (event) => {
      const button = event.target.closest("[data-action]");
      if (button) act(button);
    });
    document.getElementById("delete-remove-disks").addEventListener("change", loadPlan);
    document.getElementById("delete-with-children").addEventListener("change", loadPlan);
    document.getElementById("delete-ok").addEventListener("click", confirmDelete);
    document.getElementById("classify-kind").addEventListener("change", fillParents);
    document.getElementById("classify-form").addEventListener("submit", submitClassify);
    document.getElementById("media-form").addEventListener("submit", submitMedia);
    document.getElementById("populate-form").addEventListener("submit", submitPopulate);
    document.getElementById("populate-wait").addEventListener("change", (event) => {
      document.getElementById("populate-timeout").disabled = !event.target.checked;
    });
    prepareTable();
    // vm_table.js replaced the table (filters, another page, a reload).
    document.addEventListener("vms:table", prepareTable);
    subscribe("vm", onVm);
    subscribe("operation", onOperation);
    // Messages missed while disconnected: re-read the table once back.
    if (window.Live) window.Live.onReconnect(refreshTable);
  });

  // What vm_table.js uses for actions on the selection.
  window.VmPage = {
    confirm: confirmModal,
    openBulkDelete(ids) { openDelete(null, { ids }); },
  };
})();
