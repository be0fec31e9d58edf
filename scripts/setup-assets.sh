#!/usr/bin/env bash
# Install the front-end packages into node_modules. npm runs only when
# package.json or package-lock.json changed since the last successful install.
set -euo pipefail

cd "$(dirname "$0")/.."
STAMP=node_modules/.kvmvdi-assets.sha256

fingerprint() { cat package.json package-lock.json 2>/dev/null | sha256sum | cut -d' ' -f1; }

want=$(fingerprint || true)
have=$(cat "$STAMP" 2>/dev/null || true)
if [ -d node_modules ] && [ "$want" = "$have" ]; then
    exit 0
fi

if [ -f package-lock.json ]; then
    echo "setup-assets: npm ci" >&2
    npm ci --no-audit --no-fund --loglevel=error
else
    # First install only: creates package-lock.json, which is committed.
    echo "setup-assets: npm install (no package-lock.json yet)" >&2
    npm install --no-audit --no-fund --loglevel=error
fi
# Recompute: npm install may just have written package-lock.json.
fingerprint > "$STAMP"
