#!/usr/bin/env bash
# docs/cuda.md's on-device checklist as one prepared script, for the few minutes of GPU time a
# session may get. Two halves:
#
#   tools/gpu_check.sh pack   # here, no GPU needed: release builds, CUBINs precompiled for the
#                             # target architectures, all in target/gpu-check.tar.gz (carry that
#                             # file: about 23 MB, where the folder is 75 MB)
#   tools/gpu_check.sh run    # on the GPU machine, from the repository root; writes its logs and
#                             # the logits it compares under $OUT (default target/gpu-check/out)
#
# `run` needs only the NVIDIA driver: the kernels come from the precompiled cache, so no NVRTC or
# toolkit is assumed. Each step has its own time limit and the script goes on past a failure, so
# one broken step still leaves the others' evidence. Compare the logits it brings back with
# `tools/gpu_check.sh compare DIR` (here, with the repository's venv).
set -u
cd "$(dirname "$0")/.."
ROOT=$PWD
PACK=target/gpu-check
ARCHS=${AVSEG_GPU_ARCHS:-sm_87,sm_90}
PY=${PYTHON:-.venv/bin/python}

pack() {
  set -e
  mkdir -p "$PACK"
  cargo build --release -p avseg-cli
  cp target/release/avseg "$PACK/avseg"
  # The library's unit tests (the GPU tests skip without a device): the newest release test binary.
  local tests
  tests=$(cargo test --release -p avseg --features cuda-emulated --lib --no-run --message-format=json 2>/dev/null \
    | "$PY" -c 'import json,sys; print([m["executable"] for m in map(json.loads, sys.stdin) if m.get("reason")=="compiler-artifact" and m.get("executable") and m["target"]["kind"]==["lib"]][-1])')
  cp "$tests" "$PACK/avseg-lib-tests"
  strip "$PACK/avseg" "$PACK/avseg-lib-tests"
  local nvrtc
  nvrtc=$("$PY" -c 'import os, nvidia.cuda_nvrtc as m; print(os.path.join(list(m.__path__)[0], "lib"))')
  rm -rf "$PACK/kernels"
  LD_LIBRARY_PATH="$nvrtc" "$PACK/avseg" kernels --precompile --arch "$ARCHS" --cache-dir "$PACK/kernels"
  # The unit tests read models/ and tests/data/ under the path they were built in.
  echo "$ROOT" > "$PACK/built-in"
  tar -C target -czf "$PACK.tar.gz" gpu-check
  du -sh "$PACK" "$PACK.tar.gz"
}

# One step: a name, a time limit in seconds, the command; its output goes to $OUT/NAME.log.
step() {
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  printf '%-28s rc=%-3s %4ss\n' "$name" "$rc" "$((SECONDS - start))" | tee -a "$OUT/summary.txt"
  tail -n 3 "$OUT/$name.log" | sed 's/^/    /'
}

run() {
  if [ ! -x "$PACK/avseg" ]; then
    tar -C target -xzf "$PACK.tar.gz" || { echo "no $PACK.tar.gz: run 'tools/gpu_check.sh pack' first and carry it" >&2; exit 1; }
  fi
  OUT=${OUT:-$PACK/out}
  mkdir -p "$OUT"
  : > "$OUT/summary.txt"
  export AVSEG_KERNEL_CACHE=$ROOT/$PACK/kernels RUST_BACKTRACE=1
  local bin=$ROOT/$PACK/avseg
  step machine 30 sh -c 'nvidia-smi; nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv; nproc; free -g; command -v python3 nvcc'
  # The tests find the repository where they were built: link that path here when it differs.
  local built
  built=$(cat "$PACK/built-in")
  if [ "$built" != "$ROOT" ] && [ ! -e "$built" ]; then
    mkdir -p "$(dirname "$built")" 2>/dev/null && ln -s "$ROOT" "$built" 2>/dev/null \
      || echo "cannot link $built to $ROOT: the unit tests will not find their data" | tee -a "$OUT/summary.txt"
  fi
  # 1. Every kernel family loads from the precompiled cache and runs against its CPU reference,
  #    both packages run on the runner against tract, and the frame and mask stages are exact
  #    against their references, all on the GPU.
  step unit-tests 400 "$ROOT/$PACK/avseg-lib-tests" --test-threads 1 --nocapture \
    backend::cuda::device_tests backend::cuda::runner_tests::the_runner_on_a_gpu_matches_tract \
    backend::cuda::frames_tests::frames_and_masks_on_a_gpu_match_the_references
  # 2. Whole clips: GPU against the emulated device against tract, fp32 and fp16, host and device
  #    pre- and post-processing; logits and timings come back for `compare`.
  for model in default tiny-tpavi; do
    for run in cpu:fp32:host cuda:fp32:host cuda:fp16:host cuda:fp32:device cuda:fp16:device cuda-emulated:fp32:device; do
      IFS=: read -r backend precision prepost <<< "$run"
      local name=$model-$backend-$precision-$prepost
      step "$name" 240 "$bin" segment --model "models/$model" --clip models/sample --out "$OUT/$name" \
        --backend "$backend" --precision "$precision" --pre-post "$prepost" --save-logits --no-overlay \
        --gt models/sample/gt_masks
    done
  done
  grep -h "frames, backend" "$OUT"/*-*.log | tee "$OUT/timings.txt"
  # 3. Timings: per-stage medians, GFLOP/s and device memory on the GPU.
  for model in default tiny-tpavi; do
    for run in fp32:host fp16:host fp32:device fp16:device; do
      IFS=: read -r precision prepost <<< "$run"
      step "bench-$model-$precision-$prepost" 120 "$bin" bench --model "models/$model" --runs 20 \
        --backend cuda --precision "$precision" --pre-post "$prepost"
    done
  done
  grep -h -A8 "^model" "$OUT"/bench-*.log | tee "$OUT/bench.txt"
  echo "summary: $OUT/summary.txt"
}

# Largest logit difference of each GPU run against the CPU and the emulated device, and the share
# of mask pixels (sign of the logit) that agree.
compare() {
  "$PY" - "$1" <<'EOF'
import sys, pathlib
import numpy as np
out = pathlib.Path(sys.argv[1])
for model in ("default", "tiny-tpavi"):
    def load(name):
        p = out / f"{model}-{name}" / "logits.npy"
        return np.load(p) if p.exists() else None
    cpu = load("cpu-fp32-host")
    emu = load("cuda-emulated-fp32-device")
    for name in ("cuda-fp32-host", "cuda-fp16-host", "cuda-fp32-device", "cuda-fp16-device"):
        gpu = load(name)
        if gpu is None:
            print(f"{model} {name}: no logits")
            continue
        ref = emu if name.endswith("device") and emu is not None else cpu
        d = np.abs(gpu - ref).max() / np.abs(ref).max()
        agree = ((gpu > 0) == (ref > 0)).mean()
        print(f"{model} {name}: max |diff| {d:.2e} of the range, mask agreement {100 * agree:.3f} %")
EOF
}

case "${1:-}" in
  pack) pack ;;
  run) run ;;
  compare) compare "${2:?the folder run wrote (its \$OUT)}" ;;
  *) echo "usage: tools/gpu_check.sh pack|run|compare DIR" >&2; exit 2 ;;
esac
