#!/usr/bin/env bash
# vnet's test command: installs what it needs, then runs every check.
#
#   scripts/test.sh
#
# On a fresh Debian machine (as root) it installs missing system packages
# (apt-get, only when something is missing) and a Python virtualenv with the
# pinned OpenStack clients at tests/compat/.venv and one with the real
# OpenStack Keystone at tests/compat/.keystone-venv (each skipped when up to
# date).
# Then: rustfmt, clippy, cargo test, cargo build, the fuzz targets
# (scripts/fuzz.sh), the Python compatibility suite (pytest tests/compat)
# against the built binary, and tempest.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
VENV=$ROOT/tests/compat/.venv
REQUIREMENTS=$ROOT/tests/compat/requirements.txt
KEYSTONE_VENV=$ROOT/tests/compat/.keystone-venv
KEYSTONE_REQUIREMENTS=$ROOT/tests/compat/keystone-requirements.txt
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

step() { printf '\n==> %s\n' "$*"; }
die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }
run() { step "$*"; "$@" || die "$*"; }

# --- system packages ---------------------------------------------------------
missing=()
command -v cc >/dev/null || missing+=(gcc libc6-dev)
command -v python3 >/dev/null || missing+=(python3)
# The data-plane tests: namespaces and links (iproute2), a DHCP client inside
# test VMs (busybox udhcpc; dhclient for DHCPv6), captures on the underlay
# (tcpdump), and security groups (nftables).
command -v ip >/dev/null || missing+=(iproute2)
command -v bridge >/dev/null || missing+=(iproute2)
command -v busybox >/dev/null || missing+=(busybox)
command -v tcpdump >/dev/null || missing+=(tcpdump)
command -v dhclient >/dev/null || missing+=(isc-dhcp-client)
command -v nft >/dev/null || missing+=(nftables)
if command -v python3 >/dev/null; then
    python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3-venv)
fi
# The etcd backend: the etcd-client crate builds etcd's protos (protoc), and its
# tests start their own etcd members on loopback (Debian's etcd-server).
command -v protoc >/dev/null || missing+=(protobuf-compiler)
# protoc's well-known types (descriptor.proto): only recommended by
# protobuf-compiler, which is installed without its recommendations.
[ -e /usr/include/google/protobuf/descriptor.proto ] || missing+=(libprotobuf-dev)
installing_etcd=false
command -v etcd >/dev/null || { missing+=(etcd-server); installing_etcd=true; }
if ((${#missing[@]})); then
    step "installing system packages: ${missing[*]}"
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    $sudo apt-get update || die "apt-get update"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y --no-install-recommends "${missing[@]}" \
        || die "apt-get install ${missing[*]}"
    # The package starts a system etcd on install where it can; the tests run
    # their own members, so stop only the one this install just started.
    if $installing_etcd && [ -x /etc/init.d/etcd ]; then
        $sudo /etc/init.d/etcd stop >/dev/null 2>&1 || true
    fi
fi

command -v cargo >/dev/null || die "cargo not found: vnet needs a Rust toolchain (rustup)"
cargo fmt --version >/dev/null 2>&1 || die "rustfmt missing: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || die "clippy missing: rustup component add clippy"

# --- Python virtualenvs: the pinned clients, and Keystone apart ---------------
# Keystone's server-side dependencies must not move the clients' pins, so it
# gets a venv of its own (about 40 s to install on 2 cores).
. scripts/venv.sh
make_venv "$VENV" "$REQUIREMENTS" || die "venv $VENV"
make_venv "$KEYSTONE_VENV" "$KEYSTONE_REQUIREMENTS" || die "venv $KEYSTONE_VENV"

# --- Rust checks -------------------------------------------------------------
run cargo fmt --all -- --check
run cargo clippy --workspace --all-targets -- -D warnings
run cargo test --workspace
run cargo build -p vnet

# --- fuzzing: each target for a bounded time, from the corpus in fuzz/ -------
run scripts/fuzz.sh

# --- compatibility suite -------------------------------------------------------
VNET_BIN=$TARGET_DIR/debug/vnet
[ -x "$VNET_BIN" ] || die "no binary at $VNET_BIN after cargo build"
step "pytest tests/compat (VNET_BIN=$VNET_BIN)"
VNET_BIN=$VNET_BIN KEYSTONE_VENV=$KEYSTONE_VENV "$VENV/bin/python" -m pytest tests/compat -p no:cacheprovider \
    || die "compatibility tests (pytest tests/compat)"

# --- OpenStack's own tests -------------------------------------------------------
step "tempest.api.network (scripts/tempest.sh)"
VNET_BIN=$VNET_BIN KEYSTONE_VENV=$KEYSTONE_VENV scripts/tempest.sh || die "tempest.api.network"

step "all checks passed"
