#!/usr/bin/env bash
# CPU speed of avseg against ONNX Runtime on the same package graphs (issue 14's table).
#
#   tools/bench_cpu.sh [RUNS]        (default 5 timed runs per cell; medians)
#
# Makes three packages: models/default (bundled), and TPAVI-R50 and AVSegFormer-R50 at 224² from
# full-width official-layout checkpoints with random weights (avseg-fullsize-checkpoints, then
# avseg convert). Then, for 1 and 2 threads, runs `avseg bench --vs-onnxruntime` with avseg's CPU
# kernels and with tract's own (--cpu-kernels tract), and prints one table: per-clip graph time,
# audio encoder and segmenter, load time and peak RSS for avseg and ONNX Runtime, and avseg/ORT.
# Not part of CI: the checkpoints are about 1.3 GB and the run takes several minutes.
# Environment: AVSEG_VENV (default .venv, made by tools/test.sh), AVSEG_BENCH_DIR (default
# target/bench-cpu), CARGO_PROFILE (default release).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
VENV=${AVSEG_VENV:-.venv}
DIR=${AVSEG_BENCH_DIR:-target/bench-cpu}
PROFILE=${CARGO_PROFILE:-release}

if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r tools/requirements.txt
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e tools
fi
export AVSEG_PYTHON="$VENV/bin/python"

cargo build --locked --profile "$PROFILE" -p avseg-cli >&2
bin="target/$PROFILE/avseg"
[ "$PROFILE" = dev ] && bin=target/debug/avseg

mkdir -p "$DIR"
if [ ! -f "$DIR/ckpt/tpavi-r50.safetensors" ] || [ ! -f "$DIR/ckpt/avsegformer-r50.safetensors" ]; then
  "$VENV/bin/avseg-fullsize-checkpoints" --out "$DIR/ckpt" --family tpavi-r50 --family avsegformer-r50 >&2
fi
[ -f "$DIR/tpavi-r50/avseg.json" ] || "$bin" convert --family tpavi-r50 --checkpoint "$DIR/ckpt/tpavi-r50.safetensors" \
  --vggish "$DIR/ckpt/vggish.safetensors" --out "$DIR/tpavi-r50" --size 224 >&2
[ -f "$DIR/avsegformer-r50/avseg.json" ] || "$bin" convert --family avsegformer-r50 \
  --checkpoint "$DIR/ckpt/avsegformer-r50.safetensors" --out "$DIR/avsegformer-r50" --size 224 >&2

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }
# The kernel table runs on a graph cache of its own (loads after the first read it); the load
# table at the end measures a cold first load (empty cache) and a second load.
export AVSEG_GRAPH_CACHE="$DIR/graph-cache"
echo "# $(date -u +%Y-%m-%d), $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1), $(nproc) cores; medians of $RUNS runs per clip (5 frames)"
echo
echo "| model | threads | kernels | avseg graphs ms | ORT graphs ms | avseg/ORT | audio enc. avseg / ORT ms | segmenter avseg / ORT ms | load avseg / ORT ms | peak RSS avseg / ORT MB |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for model in models/default "$DIR/tpavi-r50" "$DIR/avsegformer-r50"; do
  for threads in 1 2; do
    for kernels in avseg tract; do
      line=$("$bin" bench --model "$model" --runs "$RUNS" --threads "$threads" --cpu-kernels "$kernels" --vs-onnxruntime \
        | grep '^summary ')
      g=$(echo "$line" | field graphs_ms); o=$(echo "$line" | field ort_graphs_ms)
      ratio=$(awk -v a="$g" -v b="$o" 'BEGIN { printf "%.2f", a / b }')
      printf '| %s | %s | %s | %.1f | %.1f | **%s** | %.1f / %.1f | %.1f / %.1f | %s / %s | %s / %s |\n' \
        "$(basename "$model")" "$threads" "$kernels" "$g" "$o" "$ratio" \
        "$(echo "$line" | field audio_encoder_ms)" "$(echo "$line" | field ort_audio_encoder_ms)" \
        "$(echo "$line" | field segmenter_ms)" "$(echo "$line" | field ort_segmenter_ms)" \
        "$(echo "$line" | field load_ms)" "$(echo "$line" | field ort_load_ms)" \
        "$(echo "$line" | field peak_rss_mb)" "$(echo "$line" | field ort_peak_rss_mb)"
    done
  done
done

echo
echo "| model | first load ms (ONNX, rewrite, cache written) | second load ms (graph cache) |"
echo "|---|---|---|"
for model in models/default "$DIR/tpavi-r50" "$DIR/avsegformer-r50"; do
  rm -rf "$AVSEG_GRAPH_CACHE"
  first=$("$bin" bench --model "$model" --runs 1 | grep '^summary ' | field load_ms)
  second=$("$bin" bench --model "$model" --runs 1 | grep '^summary ' | field load_ms)
  printf '| %s | %s | %s |\n' "$(basename "$model")" "$first" "$second"
done
