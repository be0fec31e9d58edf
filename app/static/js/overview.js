/* The overview's figures follow the live channel: any change to hypervisors,
 * VMs, pools or leases re-reads the summary once (changes in a burst are merged). */
(function () {
  "use strict";

  var timer = null;

  function apply(summary) {
    document.querySelectorAll("[data-figure]").forEach(function (element) {
      var value = summary[element.dataset.figure];
      if (value !== undefined && element.textContent !== String(value)) element.textContent = String(value);
    });
    document.querySelectorAll("[data-hide-zero]").forEach(function (element) {
      element.hidden = !summary[element.dataset.hideZero];
    });
  }

  function refresh() {
    timer = null;
    window.KvmVdi.api("GET", "/api/v1/admin/summary").then(function (result) {
      if (result.ok) apply(result.data);
    });
  }

  function soon() {
    if (timer === null) timer = setTimeout(refresh, 300);
  }

  ["hypervisor", "vm", "pool", "lease"].forEach(function (topic) { Live.on(topic, soon); });
  Live.onReconnect(soon);
})();
