/* The hypervisor list follows the live channel: state badges, reasons and
 * figures change in place; rows added or removed elsewhere appear or vanish.
 * "Check now" runs through the JSON API and reports in a toast. */
(function () {
  "use strict";

  var API = "/api/v1/admin/hypervisors";
  var BADGES = {
    up: ["text-bg-success", gettext("Up")],
    down: ["text-bg-danger", gettext("Down")],
    unknown: ["text-bg-secondary", gettext("Unknown")],
  };
  var FIGURES = ["libvirt_version", "cpus", "memory", "free", "last_check"];

  function rowOf(id) {
    return document.querySelector('tr[data-hypervisor-id="' + id + '"]');
  }

  function setField(row, field, text) {
    var cell = row.querySelector('[data-field="' + field + '"]');
    if (cell && cell.textContent !== text) cell.textContent = text;
  }

  function applyState(row, state, reason) {
    var badge = row.querySelector('[data-field="state"]');
    var look = BADGES[state] || BADGES.unknown;
    if (badge) {
      Object.keys(BADGES).forEach(function (key) { badge.classList.remove(BADGES[key][0]); });
      badge.classList.add(look[0]);
      badge.textContent = look[1];
    }
    row.dataset.state = state in BADGES ? state : "unknown";
    if (reason !== undefined && reason !== null) setField(row, "reason", reason);
  }

  function applyReasonCode(row, code) {
    if (code === undefined || code === null) return;
    var repin = row.querySelector('[data-field="repin"]');
    if (repin) repin.hidden = code !== "host_key_mismatch";
  }

  function applyRecord(row, hv) {
    applyState(row, hv.state, hv.reason);
    applyReasonCode(row, hv.reason_code);
    FIGURES.forEach(function (field) {
      if (hv.display && field in hv.display) setField(row, field, hv.display[field]);
    });
  }

  function updateEmptyState() {
    var count = document.querySelectorAll("tr[data-hypervisor-id]").length;
    document.getElementById("hypervisor-list").hidden = count === 0;
    document.getElementById("hypervisor-empty").hidden = count !== 0;
  }

  function insertRow(id) {
    return window.KvmVdi.fragment("/hypervisors/" + id + "/row")
      .catch(function () { return null; }) // the next message or reconnection brings it
      .then(function (html) {
        if (!html || rowOf(id)) return;
        var template = document.createElement("template");
        template.innerHTML = html.trim();
        var row = template.content.querySelector("tr");
        if (row) document.getElementById("hypervisor-rows").appendChild(row);
        updateEmptyState();
      });
  }

  function refreshOne(id) {
    return window.KvmVdi.api("GET", API + "/" + id).then(function (result) {
      var row = rowOf(id);
      if (result.status === 404) {
        if (row) row.remove();
        updateEmptyState();
        return;
      }
      if (!result.ok) return;
      if (row) applyRecord(row, result.data);
      else insertRow(id);
    });
  }

  function refreshAll() {
    window.KvmVdi.api("GET", API).then(function (result) {
      if (!result.ok) return;
      var seen = {};
      result.data.hypervisors.forEach(function (hv) {
        seen[hv.id] = true;
        var row = rowOf(hv.id);
        if (row) applyRecord(row, hv);
        else insertRow(hv.id);
      });
      document.querySelectorAll("tr[data-hypervisor-id]").forEach(function (row) {
        if (!seen[row.dataset.hypervisorId]) row.remove();
      });
      updateEmptyState();
    });
  }

  Live.on("hypervisor", function (data) {
    if (data.id === undefined) return;
    var row = rowOf(data.id);
    if (data.removed || data.state === "removed") {
      if (row) row.remove();
      updateEmptyState();
      return;
    }
    // The state is in the message itself; the figures come from the record.
    if (row && data.state) {
      applyState(row, data.state, data.reason);
      applyReasonCode(row, data.reason_code);
    }
    refreshOne(data.id);
  });
  Live.onReconnect(refreshAll);

  document.addEventListener("submit", function (event) {
    var form = event.target.closest("form.js-check");
    if (!form) return;
    event.preventDefault();
    var button = form.querySelector("button");
    var id = button.dataset.id;
    button.disabled = true;
    var original = button.innerHTML;
    button.innerHTML = '<span class="spinner-border spinner-border-sm" aria-hidden="true"></span> ';
    button.append(gettext("Checking…"));
    window.KvmVdi.api("POST", API + "/" + id + "/check")
      .then(function (result) {
        if (result.ok) {
          Toast.show(result.data.message, result.data.ok ? "success" : "danger");
          var row = rowOf(id);
          if (row && result.data.hypervisor) applyRecord(row, result.data.hypervisor);
        } else {
          Toast.show(result.message, "danger");
        }
      })
      .finally(function () {
        button.disabled = false;
        button.innerHTML = original;
        button.focus();
      });
  });
})();
