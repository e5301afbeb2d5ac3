#!/usr/bin/env bash
# Fuzzes avseg's input boundaries with cargo-fuzz (libFuzzer, AddressSanitizer) on nightly Rust.
#
#   tools/fuzz.sh TARGET SECONDS [LIBFUZZER ARGS...]   one target (fuzz/fuzz_targets/TARGET.rs)
#   tools/fuzz.sh all SECONDS                          every target in turn (CI: 30 s each)
#   tools/fuzz.sh list                                 the target names
#
# Installs what it needs: the nightly toolchain (if rustup lacks one) and cargo-fuzz (from
# crates.io, pinned). The committed seeds in fuzz/corpus/TARGET are read, never written: new inputs
# go to target/fuzz-corpus/TARGET (kept between runs), crashes to fuzz/artifacts/TARGET. A crash
# ends the run with a non-zero status and the input to reproduce it with:
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...
# Each crash found becomes a regression test (see fuzz/README.md).
# The Python side (the restricted .pth unpickler) runs under Hypothesis in tools/tests
# (test_checkpoint_fuzz.py); AVSEG_FUZZ_EXAMPLES sets its example count.
# Environment: AVSEG_FUZZ_TOOLCHAIN (default nightly), AVSEG_FUZZ_RSS_MB (default 2048),
# AVSEG_FUZZ_QUICK_BUILD=1 (tools/test.sh sets it for CI's 20 s runs): the targets are built at
# opt-level 1 with line tables only, which builds about 2 minutes faster on 2 cores; libFuzzer
# runs fewer inputs per second, which a 20 s smoke run can spare and a long session should not.
set -euo pipefail
cd "$(dirname "$0")/.."
TOOLCHAIN=${AVSEG_FUZZ_TOOLCHAIN:-nightly}
CARGO_FUZZ_VERSION=0.13.1
RSS_MB=${AVSEG_FUZZ_RSS_MB:-2048}

targets() { sed -n 's/^name = "\([a-z_0-9]*\)"$/\1/p' fuzz/Cargo.toml | grep -v '^avseg-fuzz$'; }

[ "${1:-}" = list ] && { targets; exit 0; }
[ $# -ge 2 ] || { sed -n '2,9p' "$0" >&2; exit 2; }
what=$1 seconds=$2
shift 2

if ! rustup toolchain list | grep -q "^$TOOLCHAIN"; then
  rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
if ! cargo fuzz --version 2>/dev/null | grep -q "$CARGO_FUZZ_VERSION"; then
  cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi

if [ "${AVSEG_FUZZ_QUICK_BUILD:-}" = 1 ]; then
  export CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_DEBUG=line-tables-only
fi

run() {
  local t=$1
  shift
  local work=$PWD/target/fuzz-corpus/$t
  mkdir -p "$work" "fuzz/corpus/$t"
  echo "== fuzz $t for ${seconds} s"
  # -timeout: one input taking 30 s is a hang. -rss_limit_mb: a leak or unbounded allocation.
  # -max_len: the largest seed (package_onnx's graphs) plus room to grow.
  cargo "+$TOOLCHAIN" fuzz run --fuzz-dir fuzz "$t" "$work" "$PWD/fuzz/corpus/$t" -- \
    -max_total_time="$seconds" -timeout=30 -rss_limit_mb="$RSS_MB" -max_len=65536 -print_final_stats=1 "$@"
}

if [ "$what" = all ]; then
  cargo "+$TOOLCHAIN" fuzz build --fuzz-dir fuzz
  for t in $(targets); do run "$t" "$@"; done
else
  targets | grep -qx "$what" || { echo "unknown fuzz target $what; targets: $(targets | tr '\n' ' ')" >&2; exit 2; }
  run "$what" "$@"
fi
