#!/usr/bin/env bash
# Create the project's virtualenv (argument, default .venv) and install the project
# with its dev extras, plus the thin-client launcher (thin_client/, tested with the
# rest), at the versions of constraints.txt (those the suite is tested with). pip runs
# only when a pyproject.toml or the constraints differ from the ones recorded at the
# last successful install, so repeated runs cost milliseconds.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${1:-.venv}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.kvmvdi-pyproject.sha256"

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup-python: creating $VENV with $("$PYTHON" --version 2>&1)" >&2
    "$PYTHON" -m venv "$VENV"
fi

want=$(cat pyproject.toml thin_client/pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
have=$(cat "$STAMP" 2>/dev/null || true)
if [ "$want" = "$have" ]; then
    exit 0
fi

echo "setup-python: installing the project into $VENV (a pyproject.toml or the constraints changed)" >&2
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c constraints.txt -e '.[dev]'
"$VENV/bin/python" -m pip install -q -c constraints.txt -e thin_client
# Written last: an interrupted install is retried on the next run.
echo "$want" > "$STAMP"
