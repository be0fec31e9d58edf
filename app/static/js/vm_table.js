// The VM table as a whole, at fleet size: search and filters (applied as you type), sorting and
// pages (fetched, never a full reload), the admin's view (density, rows per page, collapsed
// initial machines: kept by the server, not this browser), the selection and actions on many
// VMs. vms.js handles the rows themselves: live updates and the actions of one VM.
(function () {
  "use strict";

  const selected = new Set(); // VM ids (strings), kept across pages, filters and reloads
  let query = window.location.search.replace(/^\?/, ""); // the query the table shows now
  let loading = null; // AbortController of the table load in flight
  let reloadTimer = null;
  let retryTimer = null;
  let typingTimer = null;

  const wrap = () => document.getElementById("vm-table-wrap");
  const filters = () => document.getElementById("vm-filters");

  function toast(message, kind) {
    if (window.Toast) window.Toast.show(message, kind || "info");
  }

  // The answer's data; a refusal throws (api.js), with the readable message and the fields.
  const api = (method, path, body) => window.KvmVdi.call(method, path, body);

  // -- loading the table for a query ---------------------------------------------------------

  // The element to give the focus back to once the table is replaced (a keyboard user keeps
  // their place): a row's checkbox, a sort header, a pager link.
  function focusKey() {
    const active = document.activeElement;
    if (!active || !wrap().contains(active)) return null;
    if (active.dataset.select) return `[data-select="${active.dataset.select}"]`;
    if (active.id) return `#${CSS.escape(active.id)}`;
    const header = active.closest("th[aria-sort]");
    if (header) return `th:nth-child(${header.cellIndex + 1}) .sort-link`; // i18n-ignore: a selector
    if (active.closest("#vm-pager")) return "#vm-pager .active .page-link";
    return null;
  }

  async function load(nextQuery, { history = "replace", attempt = 0 } = {}) {
    if (loading) loading.abort();
    const controller = new AbortController();
    loading = controller;
    clearTimeout(reloadTimer);
    clearTimeout(retryTimer);
    reloadTimer = null;
    let html;
    let problem = null;
    try {
      html = await window.KvmVdi.fragment(`/vms/table${nextQuery ? "?" + nextQuery : ""}`, { signal: controller.signal });
    } catch (error) {
      if (error.name === "AbortError") return;
      problem = error.message;
    } finally {
      if (loading === controller) loading = null;
    }
    if (problem !== null) {
      // The dashboard is busy or away for a moment: ask again a few times, then say so.
      if (attempt < 3) {
        retryTimer = setTimeout(() => load(nextQuery, { history, attempt: attempt + 1 }), 1000 * 2 ** attempt);
      } else {
        toast(gettext("The table could not be loaded: {problem}", { problem }), "warning");
      }
      return;
    }
    const refocus = focusKey();
    query = nextQuery;
    const url = `/vms${query ? "?" + query : ""}`;
    if (history === "push") window.history.pushState({ query }, "", url);
    else if (history === "replace") window.history.replaceState({ query }, "", url);
    wrap().innerHTML = html;
    document.dispatchEvent(new CustomEvent("vms:table"));
    applySelection();
    if (refocus) wrap().querySelector(refocus)?.focus();
  }

  function reload() {
    return load(query, { history: "none" });
  }

  // Reload once things settle: live changes may come in bursts (a thousand desktops starting).
  function scheduleReload(delay) {
    if (reloadTimer !== null) return;
    reloadTimer = setTimeout(() => {
      reloadTimer = null;
      // Never pull the table away from under an open menu: look again shortly.
      if (wrap().querySelector(".dropdown-menu.show")) scheduleReload(1000);
      else reload();
    }, delay ?? 400);
  }

  function filterQuery(page) {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(filters())) {
      const text = String(value).trim();
      if (!text || (key === "sort" && text === "name") || (key === "dir" && text === "asc")) continue;
      params.set(key, text);
    }
    if (page && page > 1) params.set("page", String(page));
    return params.toString();
  }

  // A filter whose answer a VM's state (or flags, or user) can change: rows may join or leave.
  function stateMatters() {
    const params = new URLSearchParams(query);
    return ["state", "flag", "user", "q"].some((key) => params.get(key)) || params.get("sort") === "state"
      || params.get("sort") === "user";
  }

  function syncFilters(fromQuery) {
    const params = new URLSearchParams(fromQuery);
    for (const element of filters().elements) {
      if (!element.name) continue;
      if (element.name === "sort") element.value = params.get("sort") || "name";
      else if (element.name === "dir") element.value = params.get("dir") || "asc";
      else element.value = params.get(element.name) || "";
    }
  }

  // -- the admin's view: density, rows per page, collapsed initial machines -------------------

  async function changeView(change) {
    try {
      await api("PATCH", "/api/v1/admin/me/vm-table", change);
    } catch (error) {
      toast(gettext("The view could not be saved: {error}", { error: error.message }), "danger");
      return;
    }
    await reload();
  }

  function setDensity(button) {
    document.querySelectorAll("[data-density]").forEach((other) => {
      const on = other === button;
      other.classList.toggle("active", on);
      other.setAttribute("aria-pressed", String(on));
    });
    changeView({ density: button.dataset.density });
  }

  function toggleChildren(button) {
    const id = Number(button.dataset.toggleChildren);
    const expanded = button.getAttribute("aria-expanded") === "true";
    changeView(expanded ? { collapse: [id] } : { expand: [id] });
  }

  // -- selection -------------------------------------------------------------------------------

  function rowBoxes() {
    return [...wrap().querySelectorAll("input[data-select]")];
  }

  function applySelection() {
    for (const box of rowBoxes()) {
      box.checked = selected.has(box.dataset.select);
      box.closest("tr")?.classList.toggle("vm-selected", box.checked);
    }
    const pageBox = document.getElementById("select-page");
    const boxes = rowBoxes();
    const checked = boxes.filter((box) => box.checked).length;
    if (pageBox) {
      pageBox.checked = boxes.length > 0 && checked === boxes.length;
      pageBox.indeterminate = checked > 0 && checked < boxes.length;
    }
    const bar = document.getElementById("vm-bulk");
    bar.classList.toggle("d-none", selected.size === 0);
    bar.classList.toggle("d-flex", selected.size > 0);
    document.getElementById("bulk-count").textContent =
      selected.size === 0 ? gettext("No VM selected") : ngettext("{n} VM selected", "{n} VMs selected", selected.size);
    const summary = document.getElementById("vm-summary");
    const matching = summary ? Number(summary.dataset.matching) : 0;
    const all = document.getElementById("bulk-all");
    all.textContent = gettext("Select all {count} matching", { count: i18n.formatNumber(matching) });
    all.classList.toggle("d-none", matching <= checked || selected.size >= matching);
  }

  function choose(box) {
    if (box.checked) selected.add(box.dataset.select);
    else selected.delete(box.dataset.select);
    applySelection();
  }

  function choosePage(on) {
    for (const box of rowBoxes()) {
      if (on) selected.add(box.dataset.select);
      else selected.delete(box.dataset.select);
    }
    applySelection();
  }

  async function chooseAllMatching() {
    const params = new URLSearchParams(query);
    params.delete("page");
    try {
      const { ids } = await api("GET", `/api/v1/admin/vms/ids?${params}`);
      ids.forEach((id) => selected.add(String(id)));
    } catch (error) {
      toast(error.message, "danger");
    }
    applySelection();
  }

  // -- actions on the selection ----------------------------------------------------------------

  const POWER_LABELS = { start: gettext("Start"), shutdown: gettext("Shut down"), poweroff: gettext("Force off") };

  function names(limit) {
    const known = [...selected].map((id) => document.getElementById(`vm-${id}`)?.dataset.vmName).filter(Boolean);
    const shown = known.slice(0, limit);
    const more = selected.size - shown.length;
    return shown.join(", ") + (more > 0 ? " " + gettext("and {count} more", { count: more }) : "");
  }

  async function bulk(button) {
    const ids = [...selected].map(Number);
    if (!ids.length) return;
    const kind = button.dataset.bulk;
    if (kind === "delete") {
      window.VmPage.openBulkDelete(ids, names(8));
      return;
    }
    if (kind === "power") {
      const action = button.dataset.power;
      if (button.dataset.confirm) {
        const ok = await window.VmPage.confirm(
          ngettext("Force {n} VM off ({names})? Unsaved work in it is lost.",
            "Force {n} VMs off ({names})? Unsaved work in them is lost.", ids.length, { names: names(8) }),
          gettext("Force off"),
        );
        if (!ok) return;
      }
      try {
        await api("POST", "/api/v1/admin/vms/bulk/power", { vm_ids: ids, action });
        toast(ngettext("{action}: requested for {n} VM", "{action}: requested for {n} VMs", ids.length,
          { action: POWER_LABELS[action] }), "info");
      } catch (error) {
        toast(error.message, "danger");
      }
      return;
    }
    if (kind === "maintenance") {
      const on = button.dataset.value === "true";
      try {
        const { vms } = await api("POST", "/api/v1/admin/vms/bulk/maintenance", { vm_ids: ids, maintenance: on });
        toast(on
          ? ngettext("{n} VM put into maintenance", "{n} VMs put into maintenance", vms.length)
          : ngettext("{n} VM taken out of maintenance", "{n} VMs taken out of maintenance", vms.length), "success");
      } catch (error) {
        toast(error.message, "danger");
      }
    }
  }

  // -- set-up ------------------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", () => {
    const form = filters();
    if (!form || !wrap()) return;
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      clearTimeout(typingTimer);
      load(filterQuery(1), { history: "push" });
    });
    form.addEventListener("input", (event) => {
      if (!(event.target instanceof HTMLInputElement) || event.target.type === "hidden") return;
      clearTimeout(typingTimer);
      typingTimer = setTimeout(() => load(filterQuery(1)), 250);
    });
    form.addEventListener("change", (event) => {
      if (event.target instanceof HTMLSelectElement && event.target.id !== "per-page") {
        load(filterQuery(1), { history: "push" });
      }
    });
    document.getElementById("per-page").addEventListener("change", (event) => {
      changeView({ per_page: Number(event.target.value) });
    });
    document.querySelectorAll("[data-density]").forEach((button) => {
      button.addEventListener("click", () => setDensity(button));
    });
    document.getElementById("bulk-all").addEventListener("click", chooseAllMatching);
    document.getElementById("bulk-clear").addEventListener("click", () => { selected.clear(); applySelection(); });
    document.getElementById("vm-bulk").addEventListener("click", (event) => {
      const button = event.target.closest("[data-bulk]");
      if (button) bulk(button);
    });
    // Sorting, pages and "clear filters" are links: followed here without a reload.
    document.getElementById("vm-card").addEventListener("click", (event) => {
      const link = event.target.closest("a[data-page-link]");
      if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
      event.preventDefault();
      if (link.closest(".disabled")) return;
      const next = new URL(link.href, window.location.href).search.replace(/^\?/, "");
      syncFilters(next);
      load(next, { history: "push" });
    });
    wrap().addEventListener("click", (event) => {
      const toggle = event.target.closest("[data-toggle-children]");
      if (toggle) toggleChildren(toggle);
    });
    wrap().addEventListener("change", (event) => {
      const box = event.target;
      if (!(box instanceof HTMLInputElement)) return;
      if (box.id === "select-page") choosePage(box.checked);
      else if (box.dataset.select) choose(box);
    });
    window.addEventListener("popstate", (event) => {
      const back = event.state?.query ?? window.location.search.replace(/^\?/, "");
      syncFilters(back);
      load(back, { history: "none" });
    });
    window.history.replaceState({ query }, "", window.location.href);
    applySelection();
  });

  window.VmTable = {
    reload,
    scheduleReload,
    stateMatters,
    applySelection,
    forget(id) { selected.delete(String(id)); },
    clearSelection() { selected.clear(); applySelection(); },
  };
})();
