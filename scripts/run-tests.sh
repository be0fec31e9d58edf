#!/usr/bin/env bash
# Run the test suite against real services, in two passes:
#   1. everything on SQLite;
#   2. again with KVMVDI_TEST_DATABASE=mariadb: every test that runs on the selected database
#      (see uses_selected_database in tests/conftest.py); tests that never touch it, or that
#      run on both databases themselves, already ran in pass 1.
# Extra arguments go to pytest in both passes, e.g.
#   scripts/run-tests.sh tests/test_harness.py -x -k ldap
#
# Knobs (environment):
#   VENV                     virtualenv to run from (default .venv)
#   KVMVDI_MARIADB_PASS      all (default) | off: whether pass 2 runs
#   KVMVDI_PASSES            parallel (default) | serial: pass 2 alongside pass 1, or after it
#   KVMVDI_MARIADB_SELECT    extra pytest args for pass 2 only, e.g. "-m database" to
#                            restrict it to database tests (register the marker in
#                            pyproject.toml first: --strict-markers rejects unknown ones)
#   KVMVDI_KEEP_RUN_DIR      1 | on-failure: keep /tmp/kvmvdi-test-<id> for inspection
#
# The services need root (network namespaces, libvirtd, useradd); as another
# user the script re-runs itself through sudo.
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

if [ "$(id -u)" -ne 0 ]; then
    echo "run-tests: the real services need root; re-running with sudo" >&2
    exec sudo --preserve-env "$0" "$@"
fi

PYTEST=("$VENV/bin/python" -m pytest)
COMMON=()
if [ "${CI:-}" = "true" ]; then
    # CI: no colours in logs, show the slowest tests, keep the evidence of a failed run.
    COMMON+=(--color=no --durations=15)
    export KVMVDI_KEEP_RUN_DIR=${KVMVDI_KEEP_RUN_DIR:-on-failure}
fi

status=0
started=$(date +%s)

pass2() {
    # shellcheck disable=SC2086 # KVMVDI_MARIADB_SELECT is a list of words on purpose
    KVMVDI_TEST_DATABASE=mariadb KVMVDI_DATABASE_TESTS_ONLY=1 "${PYTEST[@]}" "${COMMON[@]}" \
        ${KVMVDI_MARIADB_SELECT:-} "$@"
}

pass2_status() {
    local rc=$1
    if [ "$rc" -eq 5 ]; then
        # pytest's "no tests collected": a narrowed pass 2 may legitimately select nothing
        echo "run-tests: pass 2 selected no tests"
    elif [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
        status=$rc
    fi
}

mariadb_pass=${KVMVDI_MARIADB_PASS:-all}
if [ "$mariadb_pass" != off ] && [ "${KVMVDI_PASSES:-parallel}" = parallel ]; then
    # The passes share nothing (each has its own run dir, services, namespaces and flock-ed
    # ports), and much of a pass is spent waiting on guests, timers and services rather than
    # computing: side by side they take far less time than one after the other. Pass 2's
    # output is shown whole after pass 1's, so neither log is interleaved.
    pass2_log=$(mktemp /tmp/kvmvdi-pass2.XXXXXX)
    pass2 -p no:cacheprovider "$@" >"$pass2_log" 2>&1 &
    pass2_pid=$!
    trap 'pkill -TERM -P "$pass2_pid" 2>/dev/null; kill -TERM "$pass2_pid" 2>/dev/null || true' EXIT INT TERM
    echo "=== pass 1/2: SQLite (pass 2, MariaDB, runs alongside) ==="
    KVMVDI_TEST_DATABASE=sqlite "${PYTEST[@]}" "${COMMON[@]}" "$@" || status=$?
    rc=0
    wait "$pass2_pid" || rc=$?
    trap - EXIT INT TERM
    echo "=== pass 2/2: MariaDB (ran alongside pass 1) ==="
    cat "$pass2_log"
    rm -f "$pass2_log"
    pass2_status "$rc"
else
    echo "=== pass 1/2: SQLite ==="
    KVMVDI_TEST_DATABASE=sqlite "${PYTEST[@]}" "${COMMON[@]}" "$@" || status=$?
    if [ "$mariadb_pass" != off ]; then
        echo "=== pass 2/2: MariaDB ==="
        rc=0
        pass2 "$@" || rc=$?
        pass2_status "$rc"
    fi
fi

echo "run-tests: both passes took $(( $(date +%s) - started )) s, exit status $status"
exit "$status"
