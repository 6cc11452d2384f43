#!/usr/bin/env bash
# Keep the `cuda` feature compiling on a machine without a GPU or a system CUDA install:
# `cargo check --features cuda --all-targets` with the compiler tools/cuda-env.sh finds or
# installs (PyPI wheels). No GPU is needed.
#
# Usage: bash tools/check-cuda.sh [extra cargo check args]
# Takes ~11 minutes on 2 cores from a cold target dir (target/cuda-check, kept apart from the CPU one).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
source "$repo/tools/cuda-env.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target/cuda-check}"
cd "$repo"
cargo check --features cuda --all-targets "$@"
echo "check-cuda: ok"
