#!/usr/bin/env bash
# Extract every marked message (Python, Jinja2 templates, scripts), merge the template into each
# language's .po (dashboard in app/locale, launcher in thin_client/.../locale) and compile the .mo
# files. Safe to repeat. Usage: scripts/catalogues.sh [venv]
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYBABEL="$VENV/bin/pybabel"
HEADER=(--project=KVM-VDI --copyright-holder="KVM-VDI contributors" --msgid-bugs-address="" --sort-by-file)

"$PYBABEL" -q extract -F babel.cfg -k N_ -k lazy_gettext -k M_ -k Mn_:1,2 -o app/locale/messages.pot "${HEADER[@]}" app
"$PYBABEL" -q update -i app/locale/messages.pot -d app/locale -D messages --no-fuzzy-matching --ignore-obsolete
"$PYBABEL" -q compile -d app/locale -D messages

CLIENT=thin_client/kvm_vdi_client
"$PYBABEL" -q extract -o "$CLIENT/locale/kvm_vdi_client.pot" "${HEADER[@]}" "$CLIENT"
"$PYBABEL" -q update -i "$CLIENT/locale/kvm_vdi_client.pot" -d "$CLIENT/locale" -D kvm_vdi_client \
    --no-fuzzy-matching --ignore-obsolete
"$PYBABEL" -q compile -d "$CLIENT/locale" -D kvm_vdi_client
