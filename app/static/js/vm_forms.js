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
    const drives = form.querySelectorAll("select[data-iso-list]");
    const help = form.querySelector("#iso-help");
    if (!hypervisor || !drives.length) return;
    hypervisor.addEventListener("change", async () => {
      const keep = Array.from(drives, (drive) => drive.value);
      drives.forEach((drive) => { drive.disabled = true; });
      try {
        const result = await window.KvmVdi.api("GET", `/api/v1/admin/hypervisors/${encodeURIComponent(hypervisor.value)}/isos`);
        drives.forEach((drive) => drive.replaceChildren(new Option(gettext("(empty drive)"), "")));
        if (!result.ok) {
          help.textContent = gettext("The ISO list could not be loaded: {error}", { error: result.message });
          return;
        }
        const body = result.data;
        drives.forEach((drive, index) => {
          for (const found of body.isos) {
            const option = new Option(found.name, found.path);
            option.selected = found.path === keep[index];
            drive.add(option);
          }
        });
        help.textContent = body.isos.length ? gettext("ISO images found in the hypervisor's ISO directory.")
          : gettext("No ISO image in the hypervisor's ISO directory.");
      } finally {
        drives.forEach((drive) => { drive.disabled = false; });
      }
    });
  }

  // The images of the chosen hypervisor's images directory a new VM can use as its disk.
  function imageList(form) {
    const hypervisor = form.querySelector("#hypervisor_id");
    const select = form.querySelector("select[data-image-list]");
    const help = form.querySelector("#image-help");
    if (!hypervisor || !select) return;
    const gib = (bytes) => i18n.formatNumber(bytes / 1073741824, 1);
    hypervisor.addEventListener("change", async () => {
      const keep = select.value;
      select.disabled = true;
      try {
        const result = await window.KvmVdi.api("GET", `/api/v1/admin/hypervisors/${encodeURIComponent(hypervisor.value)}/images`);
        select.replaceChildren(new Option(gettext("A new empty disk"), ""));
        if (!result.ok) {
          help.textContent = gettext("The image list could not be loaded: {error}", { error: result.message });
          return;
        }
        for (const found of result.data.images) {
          let label = `${found.name} — ` + // i18n-ignore: a name and a format
            (found.format ? `${found.format}, ${gib(found.virtual_size)} GiB` : gettext("not a disk image"));
          if (found.disk_of) label += ", " + gettext("disk of {vm}", { vm: found.disk_of });
          const option = new Option(label, found.path);
          option.disabled = !found.importable;
          option.selected = found.path === keep && found.importable;
          select.add(option);
        }
        help.textContent = gettext("Or an existing qcow2 or raw image from the hypervisor's images directory: the VM uses it in place, its size is the image's.");
      } finally {
        select.disabled = false;
      }
    });
  }

  // What the chosen hypervisor really runs (libvirt's capabilities and trial starts): options it
  // cannot run are disabled with the reason, and the note says whether the machine gets KVM or TCG.
  function machineOffers(form) {
    const hypervisor = form.querySelector("#hypervisor_id");
    const note = form.querySelector("#machine-note");
    if (!hypervisor || !note) return;
    const field = (name) => form.querySelector(`[name="${name}"]`);
    let offers = null;

    const wanted = () => {
      const list = [];
      if (field("firmware")?.value === "uefi") list.push(field("secure_boot")?.checked ? "secure_boot" : "uefi");
      if (field("tpm")?.checked) list.push("tpm");
      const cpu = field("cpu_mode")?.value;
      if (cpu && cpu !== "default") list.push(cpu);
      return list;
    };

    const describe = () => {
      if (!offers) return;
      const options = offers.options;
      const usable = (option) => offers.domain_types.some((type) => options[option]?.[type]?.ok);
      const uefi = field("firmware")?.querySelector('option[value="uefi"]');
      if (uefi) uefi.disabled = !usable("uefi");
      const secure = field("secure_boot");
      if (secure) secure.disabled = !usable("secure_boot");
      const tpm = field("tpm");
      if (tpm) tpm.disabled = !usable("tpm");
      for (const mode of ["host-model", "host-passthrough"]) {
        const option = field("cpu_mode")?.querySelector(`option[value="${mode}"]`);
        if (option) option.disabled = !usable(mode);
      }
      const needs = wanted();
      if (!needs.length) {
        note.textContent = offers.labels[offers.domain_types[0]]
          ? gettext("Runs with {type}.", { type: offers.labels[offers.domain_types[0]] })
          : gettext("Runs with the hypervisor's default.");
        return;
      }
      const runs = offers.domain_types.find((type) => needs.every((option) => options[option]?.[type]?.ok));
      const reasons = offers.domain_types
        .map((type) => {
          const failing = needs.map((option) => options[option]?.[type]).find((answer) => answer && !answer.ok);
          return failing ? `${offers.labels[type]}: ${failing.reason}` : "";
        })
        .filter(Boolean);
      if (runs === "kvm") note.textContent = gettext("Runs with KVM.");
      else if (runs) note.textContent = gettext("Runs with {type} here (slower). {reasons}", { type: offers.labels[runs], reasons: reasons.join("; ") });
      else note.textContent = gettext("This hypervisor cannot run this machine. {reasons}", { reasons: reasons.join("; ") });
    };

    const load = async () => {
      offers = null;
      note.textContent = gettext("Checking what this hypervisor can run…");
      const result = await window.KvmVdi.api("GET", `/api/v1/admin/hypervisors/${encodeURIComponent(hypervisor.value)}/capabilities`);
      if (!result.ok) {
        note.textContent = gettext("The hypervisor's capabilities could not be read: {error}", { error: result.message });
        return;
      }
      offers = result.data;
      describe();
    };

    hypervisor.addEventListener("change", load);
    ["firmware", "secure_boot", "tpm", "cpu_mode", "machine"].forEach((name) => {
      field(name)?.addEventListener("change", describe);
    });
    if (hypervisor.value) load();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("form").forEach((form) => {
      if (form.querySelector('input[name="mode"]')) modeSwitch(form);
      isoList(form);
      imageList(form);
      machineOffers(form);
    });
    const invalid = document.querySelector(".is-invalid");
    if (invalid) invalid.focus();
    else document.querySelector("#form-errors")?.focus();
  });
})();
