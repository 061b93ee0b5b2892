#!/usr/bin/env bash
# OpenStack's network API tests (tempest.api.network) against vnet, with a
# real Keystone: see tests/tempest/run.py. Called by scripts/test.sh; alone:
#
#   scripts/tempest.sh [--regex R] [--keep DIR]
#
# Needs the vnet binary (cargo build -p vnet, or $VNET_BIN) and Keystone's venv
# (tests/compat/.keystone-venv, made by scripts/test.sh, or $KEYSTONE_VENV).
# Makes tempest's own pinned venv at tests/tempest/.venv.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
. scripts/venv.sh
make_venv "$ROOT/tests/tempest/.venv" "$ROOT/tests/tempest/requirements.txt"
export VNET_BIN=${VNET_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/debug/vnet}
export KEYSTONE_VENV=${KEYSTONE_VENV:-$ROOT/tests/compat/.keystone-venv}
exec "$ROOT/tests/tempest/.venv/bin/python" "$ROOT/tests/tempest/run.py" "$@"
