#!/usr/bin/env bash
# Keep the `cuda` feature compiling on a machine without a GPU or a system CUDA install.
#
# Installs the CUDA 13 compiler from PyPI wheels (all pinned to one release) into a venv under
# ${ATHENA_CACHE:-~/.cache/athena}/cuda-venv, points CUDA_ROOT / PATH at it and runs
# `cargo check --features cuda` (all targets). No GPU is needed: candle's kernels are compiled to PTX
# for CUDA_COMPUTE_CAP (default 80) and the driver library is loaded only at run time.
#
# Usage: bash tools/check-cuda.sh [extra cargo check args]
# Takes ~11 minutes on 2 cores from a cold target dir (target/cuda-check, kept apart from the CPU one).
set -euo pipefail

CUDA_VERSION=13.2.86 # the newest release that all five wheels share
cache="${ATHENA_CACHE:-$HOME/.cache/athena}"
venv="$cache/cuda-venv"
repo="$(cd "$(dirname "$0")/.." && pwd)"

if [[ ! -x "$venv/bin/pip" ]]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check \
  "nvidia-cuda-nvcc==$CUDA_VERSION" "nvidia-cuda-crt==$CUDA_VERSION" "nvidia-nvvm==$CUDA_VERSION" \
  "nvidia-cuda-runtime==$CUDA_VERSION" "nvidia-cuda-cccl==$CUDA_VERSION"

root="$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)"
[[ -x "$root/bin/nvcc" ]] || { echo "check-cuda: nvcc not found under $root" >&2; exit 1; }
# The wheels ship versioned sonames only; the linker and cudarc's build script look for the bare names.
for lib in cudart nvvm; do
  so="$(ls "$root"/lib/lib$lib.so.* 2>/dev/null | head -n1 || true)"
  [[ -n "$so" && ! -e "$root/lib/lib$lib.so" ]] && ln -s "$(basename "$so")" "$root/lib/lib$lib.so"
done
export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_TOOLKIT_ROOT_DIR="$root"
export PATH="$root/bin:$root/nvvm/bin:$PATH"
export LD_LIBRARY_PATH="$root/lib:${LD_LIBRARY_PATH:-}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-80}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/cuda-check}"

echo "check-cuda: nvcc $("$root/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p'), compute cap $CUDA_COMPUTE_CAP"
cd "$repo"
cargo check --features cuda --all-targets "$@"
echo "check-cuda: ok"
