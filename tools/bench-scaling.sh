#!/usr/bin/env bash
# How conversion scales: converts each model at --bits 3 under /usr/bin/time and prints wall time,
# CPU utilisation, peak resident memory, and the time per billion linear weights, then projects
# the time for 1.5B, 7B and 70B models.
#
# Usage: [DEVICE=cpu|cuda|cpu-tensors] [MODELS="SmolLM2-135M-Instruct Qwen2.5-Coder-0.5B-Instruct"]
#        [BIN=target/release] bash tools/bench-scaling.sh
# Models are folders under ${ATHENA_CACHE:-~/.cache/athena}/models (tools/fetch-models.sh --qwen).
# Run it alone on the machine: the timings are the point. About 7 + 30 minutes on 2 Zen 5 cores.
#
# The projection is a range. Per linear weight, k-means and the assignment cost the same at any
# width (they grow with the centroids), while the GPTQ error feedback and the Cholesky factor of
# H^-1 grow with the layer's input width. "per weight" scales the measured time by the linear
# weights alone (the lower end); "x width" also by the weighted mean input width over the
# measured model's (the upper end, were every second spent in width-bound work).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cache="${ATHENA_CACHE:-$HOME/.cache/athena}"
device="${DEVICE:-cpu}"
models="${MODELS:-SmolLM2-135M-Instruct Qwen2.5-Coder-0.5B-Instruct}"
bin="${BIN:-$repo/target/release}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
[[ -n "${BIN:-}" ]] || (cd "$repo" && cargo build --release --bins --quiet)

# Linear weights and their mean input width (weighted by weights) of a config.json, or of the
# built-in reference shapes (hidden, intermediate, layers, heads, kv heads, head dim).
linear_shape() {
  python3 - "$@" <<'EOF'
import json, sys
def shape(h, inter, layers, heads, kv, hd):
    mats = [(heads * hd, h), (kv * hd, h), (kv * hd, h), (h, heads * hd),
            (inter, h), (inter, h), (h, inter)]
    w = sum(r * c for r, c in mats)
    return layers * w, sum(r * c * c for r, c in mats) / w
if sys.argv[1].endswith(".json"):
    c = json.load(open(sys.argv[1]))
    hd = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    n, width = shape(c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"],
                     c["num_attention_heads"], c.get("num_key_value_heads", c["num_attention_heads"]), hd)
else:
    n, width = shape(*map(int, sys.argv[1:]))
print(n, round(width))
EOF
}

printf '| model | device | linear weights | wall | CPU | peak RSS | s per 1e9 linear weights |\n|---|---|---|---|---|---|---|\n'
rows=()
for m in $models; do
  dir="$cache/models/$m"
  [[ -d "$dir" ]] || { echo "bench-scaling: $dir missing (tools/fetch-models.sh --qwen)" >&2; exit 1; }
  read -r weights width < <(linear_shape "$dir/config.json")
  /usr/bin/time -f "%e %P %M" -o "$work/time" \
    "$bin/athena-convert" "$dir" "$work/out.gguf" --bits 3 --device "$device" -f -q
  read -r wall cpu rss < "$work/time"
  per=$(python3 -c "print(f'{$wall / ($weights / 1e9):.0f}')")
  printf '| %s | %s | %.1fM | %.0f s | %s | %d MiB | %s |\n' "$m" "$device" \
    "$(python3 -c "print($weights / 1e6)")" "$wall" "$cpu" $((rss / 1024)) "$per"
  rows+=("$m $weights $width $wall")
done

# Projections from the last (largest) model measured.
read -r base weights width wall <<< "${rows[-1]}"
printf '\nProjected from %s (%s):\n\n| model | linear weights | mean input width | per weight | x width |\n|---|---|---|---|---|\n' "$base" "$device"
for ref in "Qwen2.5-1.5B 1536 8960 28 12 2 128" "Llama-2-7B 4096 11008 32 32 32 128" \
           "Llama-3-70B 8192 28672 80 64 8 128"; do
  read -r name h inter layers heads kv hd <<< "$ref"
  read -r n w < <(linear_shape "$h" "$inter" "$layers" "$heads" "$kv" "$hd")
  python3 - "$name" "$n" "$w" "$weights" "$width" "$wall" <<'EOF'
import sys
name, n, w, base_n, base_w, wall = sys.argv[1], *map(float, sys.argv[2:])
low = wall * n / base_n
high = low * w / base_w
hours = lambda s: f"{s / 3600:.1f} h"
print(f"| {name} | {n / 1e9:.2f}B | {w:.0f} | {hours(low)} | {hours(high)} |")
EOF
done
