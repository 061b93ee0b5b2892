#!/usr/bin/env bash
# Runs every cargo fuzz target in fuzz/ for a bounded time, from the corpus
# kept in the repo (fuzz/corpus/TARGET: real captured inputs, and every
# input that ever crashed a target, kept as a regression).
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]     (default 45; FUZZ_SECONDS too)
#
# Installs cargo-fuzz when missing. Builds on stable without a sanitizer
# (`-s none`; the other machines here have no nightly) but with debug
# assertions, so overflows and failed asserts count as crashes. Inputs the
# run discovers go to a scratch directory, not the repo; a crash fails the
# run and leaves its input under fuzz/artifacts/TARGET/: fix the cause, then
# add the input to fuzz/corpus/TARGET.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECONDS_PER_TARGET=${1:-${FUZZ_SECONDS:-45}}
CARGO_FUZZ_VERSION=0.13.2

die() { printf '\nFAILED: %s\n' "$*" >&2; exit 1; }

if [ "$(cargo fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked || die "cargo install cargo-fuzz"
fi

FLAGS=(-s none -a)
cargo fuzz build "${FLAGS[@]}" || die "cargo fuzz build"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for target in $(cargo fuzz list); do
    mkdir -p "$scratch/$target" "fuzz/corpus/$target"
    printf '\n==> fuzz %s for %s s\n' "$target" "$SECONDS_PER_TARGET"
    cargo fuzz run "${FLAGS[@]}" "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
        -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        || die "fuzz target $target crashed: its input is under fuzz/artifacts/$target/"
done
