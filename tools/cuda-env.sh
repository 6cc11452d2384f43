# Sourced by tools/check-cuda.sh and tools/gpu-check.sh: points CUDA_ROOT / PATH at a CUDA
# compiler. A system CUDA (nvcc on PATH) is used as it is; otherwise the CUDA 13 compiler is
# installed from PyPI wheels (all pinned to one release) into a venv under
# ${ATHENA_CACHE:-~/.cache/athena}/cuda-venv. CUDA_COMPUTE_CAP is the first GPU's (nvidia-smi),
# else 80: candle's kernels are compiled to PTX for it, and the driver library is loaded only
# at run time, so no GPU is needed to build.

if command -v nvcc > /dev/null; then
  root="$(dirname "$(dirname "$(command -v nvcc)")")"
else
  CUDA_VERSION=13.2.86 # the newest release that all five wheels share
  venv="${ATHENA_CACHE:-$HOME/.cache/athena}/cuda-venv"
  if [[ ! -x "$venv/bin/pip" ]]; then
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check \
    "nvidia-cuda-nvcc==$CUDA_VERSION" "nvidia-cuda-crt==$CUDA_VERSION" "nvidia-nvvm==$CUDA_VERSION" \
    "nvidia-cuda-runtime==$CUDA_VERSION" "nvidia-cuda-cccl==$CUDA_VERSION"
  root="$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)"
  [[ -x "$root/bin/nvcc" ]] || { echo "cuda-env: nvcc not found under $root" >&2; exit 1; }
  # The wheels ship versioned sonames only; the linker and cudarc's build script look for the
  # bare names.
  for lib in cudart nvvm; do
    so="$(ls "$root"/lib/lib$lib.so.* 2>/dev/null | head -n1 || true)"
    [[ -n "$so" && ! -e "$root/lib/lib$lib.so" ]] && ln -s "$(basename "$so")" "$root/lib/lib$lib.so"
  done
  export PATH="$root/bin:$root/nvvm/bin:$PATH"
fi
export CUDA_ROOT="$root" CUDA_PATH="$root" CUDA_TOOLKIT_ROOT_DIR="$root"
export LD_LIBRARY_PATH="$root/lib:$root/lib64:${LD_LIBRARY_PATH:-}"
if [[ -z "${CUDA_COMPUTE_CAP:-}" ]]; then
  cap="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d '. ' || true)"
  export CUDA_COMPUTE_CAP="${cap:-80}"
fi
echo "cuda-env: nvcc $(nvcc --version | sed -n 's/.*release \([0-9.]*\).*/\1/p') under $root, compute cap $CUDA_COMPUTE_CAP" >&2
