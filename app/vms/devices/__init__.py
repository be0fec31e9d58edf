"""One small builder per libvirt device (in the manner of virt-manager's virtinst).

Each module turns a small frozen spec into an ElementTree element; nothing is
pasted into markup, so no value can inject XML. :mod:`app.vms.domain_xml`
composes them into a whole domain. Every builder has golden XML files under
``tests/vms/golden/``.
"""
