#!/usr/bin/env bash
# Quality/cost benchmark on SmolLM2-135M: converts with each configuration below, then prints one
# table row per run: linear and whole-file bpw, file size, perplexity (wiki.utf8, ctx 512,
# CHUNKS chunks), conversion time and peak memory. The f32 folder's perplexity is measured in the
# same run as the reference.
#
# Usage: tools/bench-quality.sh [OUT_DIR]   (CHUNKS=32 by default; run tools/fetch-models.sh first)
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ATHENA_CACHE:-$HOME/.cache/athena}"
MODEL="$CACHE/models/SmolLM2-135M-Instruct"
TEXT="$CACHE/text/wiki.utf8"
CHUNKS="${CHUNKS:-32}"
OUT="${1:-$REPO/target/bench-quality}"
mkdir -p "$OUT"
(cd "$REPO" && cargo build --release --quiet --bin athena-convert --bin athena-eval --bin athena-verify)
BIN="$REPO/target/release"

# name | athena-convert arguments
RUNS=(
  "athena --bits 2.5|--bits 2.5"
  "athena --bits 3|--bits 3"
  "athena --bits 3 hessian plan|--bits 3 --sensitivity hessian"
  "athena --bits 4|--bits 4"
  "athena --vq 2,64,32,576 (3.06)|--vq 2,64,32,576"
  "no error feedback|--vq 2,64,32,576 --method kmeans"
  "f16 codebook|--vq 2,64,32,576 --codebook f16"
  "low-rank auto|--vq 2,64,32,576 --lowrank-rank auto"
  "natural order|--vq 2,64,32,576 --order natural"
  "gptq 3-bit/128|--bits 3 --method gptq"
  "rtn 3-bit/128|--bits 3 --method rtn"
)

ppl() { "$BIN/athena-eval" "$1" --text "$TEXT" --chunks "$CHUNKS" 2>&1 | sed -n 's/^ppl = \([0-9.]*\).*/\1/p'; }

printf '| run | linear bpw | file bpw | size MB | ppl | convert s | peak MB |\n|---|---|---|---|---|---|---|\n'
printf '| f32 HF folder | 32 | 32 | %s | %s | - | - |\n' "$(du -m "$MODEL/model.safetensors" | cut -f1)" "$(ppl "$MODEL")"
for run in "${RUNS[@]}"; do
  name="${run%%|*}"; args="${run#*|}"
  file="$OUT/$(echo "$name" | tr -c 'a-zA-Z0-9.' '_').gguf"
  log="$file.log"
  # shellcheck disable=SC2086
  /usr/bin/time -v "$BIN/athena-convert" "$MODEL" "$file" $args --force --quiet > "$log" 2>&1
  secs=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
  peak=$(( $(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log") / 1024 ))
  json=$("$BIN/athena-verify" "$file" --json)
  lin=$(echo "$json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["summary"]["linear_bpw"], 4))')
  fil=$(echo "$json" | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["summary"]["file_bpw"], 4))')
  size=$(( $(stat -c %s "$file") / 1000000 ))
  printf '| %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$lin" "$fil" "$size" "$(ppl "$file")" "$secs" "$peak"
done
