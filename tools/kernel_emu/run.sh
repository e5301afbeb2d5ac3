#!/usr/bin/env bash
# Runs avseg's CUDA kernels on the CPU (shim.h emulates blocks, barriers and warp shuffles)
# against independent double-precision restatements of their math. No GPU and no CUDA needed,
# only a C++20 compiler. Exits non-zero on any mismatch.
set -euo pipefail
cd "$(dirname "$0")/../.."
cxx=${CXX:-g++}
if ! command -v "$cxx" >/dev/null; then
  if [ -n "${CI:-}" ]; then echo "no C++ compiler ($cxx) for the kernel emulation" >&2; exit 1; fi
  echo "skipped: kernel emulation (no C++ compiler $cxx)"; exit 0
fi
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
for t in tpavi kernels; do
  "$cxx" -std=c++20 -O2 -pthread -I kernels -I kernels/emu "tools/kernel_emu/$t.cpp" -o "$out/$t"
  "$out/$t"
done
