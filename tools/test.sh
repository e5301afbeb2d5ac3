#!/usr/bin/env bash
# Runs every avseg test:
#   1. a Python venv (tools/requirements.txt, then the tools themselves: pip install -e tools) for
#      the ONNX Runtime and block-fidelity checks, which run under pytest (tools/tests, tools/avsreg);
#   2. live cross-checks: the export tooling's blocks vs the official reference tensors, and
#      avseg's tract logits vs ONNX Runtime on the bundled model and sample;
#   3. a compile check of every CUDA kernel with NVRTC from the PyPI wheel, and a run of every
#      kernel on a CPU emulation of CUDA (tools/kernel_emu; no GPU needed for either);
#   4. the Rust unit and integration tests of every crate (cargo test --workspace);
#   5. every fuzz target for $AVSEG_FUZZ_SECONDS (CI: 10 s each; tools/fuzz.sh, fuzz/README.md).
# The official reference tensors are read from $AVSEG_REFERENCE_DIR, default tests/data/reference.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${AVSEG_VENV:-.venv}
# No pip wheel cache: the venv is the only copy CI needs, and the cache would double pip's disk use.
export PIP_NO_CACHE_DIR=${PIP_NO_CACHE_DIR:-1}
# Each stage's header carries the wall-clock time and the seconds since the start, so a CI log
# shows where its 45 minutes go.
stage() { echo "== $* [$(date -u +%H:%M:%S), ${SECONDS} s]"; }
export AVSEG_REFERENCE_DIR=${AVSEG_REFERENCE_DIR:-$(pwd)/tests/data/reference}

stage "Python venv ($VENV: tools/requirements.txt, the tools, the NVRTC wheel)"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tools/requirements.txt
# The tools as a package (avseg_export, avseg_tools, avsreg, train_default + console scripts);
# the pinned requirements above are its dependencies.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e tools
case "$(uname -s)-$(uname -m)" in
  Linux-x86_64|Linux-aarch64) nvrtc_wheel=1 ;;
  *) nvrtc_wheel= ;;
esac
if [ -n "$nvrtc_wheel" ]; then
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tools/requirements-nvrtc.txt
fi

# Everything `cargo test --workspace` needs, the CLI included, built once. The tests' dev-dependencies
# switch on features of shared crates (tract's among them), so a plain `cargo build -p avseg-cli`
# first would compile tract a second time for the test stage (about 5 minutes on 2 cores).
stage "build (the CLI and every test, as cargo test --workspace builds them)"
cargo test --locked --workspace --no-run
bin="${CARGO_TARGET_DIR:-target}/debug/avseg"
# The Python tests that drive the binary take it from here.
export AVSEG_BIN="$(cd "$(dirname "$bin")" && pwd)/avseg"
pytest() { "$VENV/bin/python" -m pytest "$@"; }

stage "lean C library: no CLI, evaluation or file-decoder crates in libavseg's dependency tree"
leaked=$(cargo tree --locked -p avseg-ffi -e normal --prefix none \
  | grep -E '^(clap|csv|indicatif|env_logger|symphonia|png|zune-jpeg|image-webp|avseg-eval) ' | sort -u || true)
if [ -n "$leaked" ]; then
  echo "libavseg must not depend on: $leaked" >&2; exit 1
fi
echo "ok"

stage "CUDA kernels: NVRTC compile check for sm_87 and sm_90 (no GPU needed)"
if [ -n "$nvrtc_wheel" ]; then
  nvrtc_lib=$("$VENV/bin/python" -c 'import os, nvidia.cuda_nvrtc as m; print(os.path.join(list(m.__path__)[0], "lib"))')
  LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" "$bin" kernels --check --arch sm_87,sm_90
elif [ -n "${CI:-}" ]; then
  echo "no NVRTC wheel for $(uname -s)-$(uname -m)" >&2; exit 1
else
  echo "skipped: kernel compile check (no nvidia-cuda-nvrtc-cu12 wheel for $(uname -s)-$(uname -m))"
fi

stage "CUDA kernels emulated on the CPU vs independent restatements of their math"
tools/kernel_emu/run.sh

stage "export-tool block fidelity vs official reference tensors"
# Skipped without the tensors (a failure under CI): conftest.py's reference_dir.
pytest tools/tests/test_blocks.py tools/tests/test_blocks_avsegformer.py

stage "exported TPAVI/VGGish graphs vs an independent numpy forward (literal N×N attention)"
pytest tools/tests/test_tiny_numpy.py

stage "every official family (width-reduced, official key layout) vs an independent numpy forward"
pytest tools/tests/test_tpavi_families.py tools/tests/test_avsegformer_numpy.py

stage "package checksums, the two-stage package's choice rule, the weight soup, the in-graph veto, and the .pth reader fuzzed with Hypothesis"
pytest tools/tests/test_package_checksums.py tools/tests/test_bavs_rule.py tools/tests/test_soup.py \
  tools/tests/test_veto.py tools/tests/test_checkpoint_fuzz.py

stage "training tools that need PyTorch (only with the training venv, docs/training.md)"
TRAIN_VENV=${AVSEG_TRAIN_VENV:-.venv-train}
if "$TRAIN_VENV/bin/python" -c "import torch" >/dev/null 2>&1; then
  "$TRAIN_VENV/bin/python" -m pytest tools/tests/test_hard_twins.py
else
  echo "skipped: no training venv at $TRAIN_VENV (PyTorch, ~6 GB; CI does not install it)"
fi

stage "tract vs ONNX Runtime, live, on the bundled sample (tiny TPAVI, the two-stage package)"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin" features --model models/tiny-tpavi --audio models/sample/audio.wav --out "$work/logmel.npy" \
  --frames models/sample/frames --frames-out "$work/frames.npy"
"$bin" segment --model models/tiny-tpavi --clip models/sample --out "$work/out" --save-logits
"$VENV/bin/python" -m avseg_tools.check_ort --model models/tiny-tpavi --logmel "$work/logmel.npy" \
  --frames "$work/frames.npy" --logits "$work/out/logits.npy" --tol 1e-4

# The trained two-stage package: the segmenter's class logits and the tagger's probabilities.
"$bin" features --model models/bavs-avsreg --audio models/sample/audio.wav --out "$work/b_logmel.npy" \
  --frames models/sample/frames --frames-out "$work/b_frames.npy"
"$bin" segment --model models/bavs-avsreg --clip models/sample --out "$work/b_out" --save-logits
"$VENV/bin/python" -m avseg_tools.check_ort --model models/bavs-avsreg --logmel "$work/b_logmel.npy" \
  --frames "$work/b_frames.npy" --logits "$work/b_out/logits.npy" --tags "$work/b_out/tags.npy" --tol 1e-4

stage "tract vs ONNX Runtime, live, on every official family's fixture package"
# 96x96 packages, tolerance 1e-4; avseg is $AVSEG_BIN.
pytest tools/tests/test_tract_families.py
# Each of the eight `avseg convert --family` values, from a checkpoint file as users have them.
pytest tools/tests/test_convert_families.py

stage "AVS-Reg generator: determinism and sanity (tools/avsreg)"
# Sources are Debian/PyPI media (GPL stamps: never committed). Installed only in CI or as root.
# --variety: the check covers the --variety backgrounds too, so a machine that installed the
# sources before they existed installs them now.
if ! "$VENV/bin/python" -m avsreg.generate --check-sources --variety >/dev/null 2>&1; then
  if [ -n "${CI:-}" ] || [ "$(id -u)" -eq 0 ]; then
    PYTHON="$VENV/bin/python" tools/avsreg/install_sources.sh
  fi
fi
# Without the sources the tests skip (under CI they fail): conftest.py's avsreg_sources.
pytest tools/avsreg

stage "default model: tract vs ONNX Runtime, and quality on fresh AVS-Reg clips (seed 1)"
"$bin" features --model models/default --audio models/sample/audio.wav --out "$work/d_logmel.npy" \
  --frames models/sample/frames --frames-out "$work/d_frames.npy"
"$bin" segment --model models/default --clip models/sample --out "$work/d_out" --save-logits
"$VENV/bin/python" -m avseg_tools.check_ort --model models/default --logmel "$work/d_logmel.npy" \
  --frames "$work/d_frames.npy" --logits "$work/d_out/logits.npy" --tol 1e-4
if "$VENV/bin/python" -m avsreg.generate --check-sources --variety >/dev/null 2>&1; then
  "$VENV/bin/python" -m train_default.check_default --avseg "$bin" --work "$work/default_check"
else
  echo "skipped: AVS-Reg sources not installed, so the default model's quality check cannot run"
fi

stage "aarch64 (Jetson) compile check"
tools/check_aarch64.sh

stage "cargo test (every crate of the workspace)"
cargo test --locked --workspace
# avseg's CPU kernels again as their portable build (what aarch64 and older x86 run): this machine
# picks AVX-512 or AVX2 builds above (src/backend/cpu/mod.rs, Isa).
stage "CPU kernels, portable build (AVSEG_CPU_ISA=baseline)"
# (--workspace: the same features as the run above, so nothing is rebuilt.) The post stage's
# softmax loops are compiled per instruction set too (src/post/softmax.rs).
AVSEG_CPU_ISA=baseline cargo test --locked --workspace --lib -- backend:: post::

# Last, so that a build failure of the nightly toolchain cannot hide the stable tests' results.
# 10 s per target under CI (30 until 2026-12-05, 20 until 2026-12-06): the quality checks of the
# default and two-stage packages took the time, and CI must stay under 45 minutes on 2 cores. Long
# runs are tools/fuzz.sh's job (fuzz/README.md). AVSEG_FUZZ_SECONDS sets any other length.
stage "fuzz targets (cargo-fuzz, nightly), ${AVSEG_FUZZ_SECONDS:-10} s each"
if [ -n "${CI:-}" ] || [ -n "${AVSEG_FUZZ_SECONDS:-}" ]; then
  # Short runs: a quicker build (opt-level 1) unless AVSEG_FUZZ_QUICK_BUILD says otherwise.
  AVSEG_FUZZ_QUICK_BUILD=${AVSEG_FUZZ_QUICK_BUILD:-1} tools/fuzz.sh all "${AVSEG_FUZZ_SECONDS:-10}"
else
  echo "skipped: fuzz targets (set AVSEG_FUZZ_SECONDS=10 to run them; CI always does)"
fi
stage "all passed"
