#!/usr/bin/env bash
# Compile-checks avseg for aarch64-unknown-linux-gnu (Jetson, JetPack 6), without a board.
#
# Needs the Rust target (rustup) and a cross C compiler: tract-linalg assembles its NEON kernels
# with the target's cc even for `cargo check`. When either cannot be installed, the check prints a
# visible `skipped:` line and succeeds; under CI a failure to compile is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  rustup target add "$target" >/dev/null 2>&1 || { echo "skipped: aarch64 check (rustup cannot install $target)"; exit 0; }
fi
if ! command -v aarch64-linux-gnu-gcc >/dev/null; then
  if [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc-aarch64-linux-gnu libc6-dev-arm64-cross; } >/dev/null \
      || { echo "skipped: aarch64 check (cannot install gcc-aarch64-linux-gnu)"; exit 0; }
  else
    echo "skipped: aarch64 check (gcc-aarch64-linux-gnu not installed)"; exit 0
  fi
fi
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
cargo check --locked --target "$target" --workspace --lib --bins
echo "aarch64 check: ok"
