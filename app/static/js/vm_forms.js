// VM create forms: single/batch switch, the ISO list of the chosen hypervisor, focus on the first error.
(function () {
  "use strict";

  function modeSwitch(form) {
    const radios = form.querySelectorAll('input[name="mode"]');
    const apply = () => {
      const mode = form.querySelector('input[name="mode"]:checked')?.value || "single";
      form.querySelectorAll("[data-mode]").forEach((el) => { el.hidden = el.dataset.mode !== mode; });
    };
    radios.forEach((radio) => radio.addEventListener("change", apply));
    apply();
  }

  function isoList(form) {
    const hypervisor = form.querySelector("#hypervisor_id");
    const iso = form.querySelector("#iso_path");
    const help = form.querySelector("#iso-help");
    if (!hypervisor || !iso) return;
    hypervisor.addEventListener("change", async () => {
      const keep = iso.value;
      iso.disabled = true;
      try {
        const response = await fetch(`/api/v1/admin/hypervisors/${encodeURIComponent(hypervisor.value)}/isos`,
          { headers: { Accept: "application/json" }, credentials: "same-origin" });
        const body = await response.json();
        iso.replaceChildren(new Option("(empty drive)", ""));
        if (!response.ok) {
          help.textContent = body.message || "The ISO list is not available.";
          return;
        }
        for (const found of body.isos) {
          const option = new Option(found.name, found.path);
          option.selected = found.path === keep;
          iso.add(option);
        }
        help.textContent = body.isos.length ? "ISO images found in the hypervisor's ISO directory."
          : "No ISO image in the hypervisor's ISO directory.";
      } catch (error) {
        help.textContent = "The ISO list could not be loaded: " + error;
      } finally {
        iso.disabled = false;
      }
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("form").forEach((form) => {
      if (form.querySelector('input[name="mode"]')) modeSwitch(form);
      isoList(form);
    });
    const invalid = document.querySelector(".is-invalid");
    if (invalid) invalid.focus();
    else document.querySelector("#form-errors")?.focus();
  });
})();
