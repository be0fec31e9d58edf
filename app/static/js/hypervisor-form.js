/* The hypervisor form shows only the connection fields of the chosen transport. */
(function () {
  "use strict";
  var select = document.getElementById("f-transport");
  if (!select) return;
  function update() {
    document.querySelectorAll("fieldset[data-transport]").forEach(function (fieldset) {
      fieldset.hidden = fieldset.dataset.transport.split(" ").indexOf(select.value) < 0;
    });
  }
  select.addEventListener("change", update);
  update();
  var summary = document.getElementById("form-errors");
  if (summary) summary.focus();
})();
