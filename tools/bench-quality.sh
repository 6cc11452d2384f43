#!/usr/bin/env bash
# Quality/cost benchmark on SmolLM2-135M (SET=qwen: Qwen2.5-Coder-0.5B): converts with each
# configuration below, then prints one table row per run: linear and whole-file bpw, file size,
# perplexity (wiki.utf8, ctx 512, CHUNKS chunks), conversion time and peak memory. The f32
# folder's perplexity is measured in the same run as the reference.
#
# Usage: [SET=budget|ablation|all|qwen|embeddings|qwen-embeddings] [CHUNKS=32] tools/bench-quality.sh [OUT_DIR]
# (SET=embeddings: --bits 3 and 4 with the embedding and head quantized and as Q8_0, and the
# --file-bits 3 / 3.5 / 4.5 whole-file budgets, ~8-10 minutes a row on SmolLM2;
# SET=qwen-embeddings the same rows on Qwen2.5-Coder-0.5B, about an hour a row)
# (run tools/fetch-models.sh first; on 2 cores SET=budget took about 2.5 hours at c7c76d6
# (2026-12-05), plus about 9 minutes each for the --bits 5 and 5.5 rows added in dfa5f61; the
# --bits 2, 2.25 and 2.5 rows about half an hour each with block-wise tuning; since 8494ef4
# (2026-12-06) those three also tune end to end by default, which took 13-27 minutes per epoch
# at 2f240ee, so expect about an hour more; SET=ablation about 2 hours: eleven --bits 3
# conversions of 6.5-8 minutes, each then verified and measured, ~10 minutes a row at 450c8b1;
# SET=qwen converts Qwen2.5-Coder-0.5B instead (tools/fetch-models.sh --qwen first): 38-57
# minutes per --bits 3 conversion at f3e2fe0, so about 2.5 hours. Results and their commits:
# docs/benchmarks.md)
#
# Perplexity of each file comes from `athena-verify FILE --text` (the code behind athena-eval and
# athena-convert --eval-text), so every row is also a verified file.
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

# name | athena-convert arguments. The budget rows meet --bits with the mixed-precision plan; the
# ablation rows switch off or change one part of the default --bits 3 conversion, so each
# difference is that part's effect alone at the same budget (the plan absorbs any extra bytes, e.g.
# of f16 codebooks or low-rank factors, by lowering other layers' index bits).
BUDGET_RUNS=(
  "f32 export (reference)|--type f32"
  "athena --bits 2|--bits 2"
  "athena --bits 2.25|--bits 2.25"
  "athena --bits 2.5|--bits 2.5"
  "athena --bits 3|--bits 3"
  "athena --bits 4|--bits 4"
  "athena --bits 5|--bits 5"
  "athena --bits 5.5 (llama.cpp Q4_K_M's 5.53)|--bits 5.5"
  "athena --bits 3, 8192 calibration tokens|--bits 3 --calib-tokens 8192"
  "athena --bits 3, d=2 plan only|--bits 3 --max-dim 2"
  "athena --bits 3, no column rotation|--bits 3 --rotation-block 0"
  "baseline kmeans --bits 3 (no Hessian at all)|--bits 3 --method kmeans"
  "baseline gptq --bits 3 (scalar, 1x128 grids)|--bits 3 --method gptq"
  "baseline gptq --bits 4|--bits 4 --method gptq"
  "baseline rtn --bits 3|--bits 3 --method rtn"
  "baseline rtn --bits 4|--bits 4 --method rtn"
)
ABLATION_RUNS=(
  "--bits 3: full method (defaults)|--bits 3"
  "--bits 3: no Hessian metric|--bits 3 --no-hessian-metric"
  "--bits 3: no error feedback|--bits 3 --no-error-feedback"
  "--bits 3: no codebook update|--bits 3 --no-codebook-update"
  "--bits 3: no row scales|--bits 3 --no-row-scales"
  "--bits 3: f16 codebooks|--bits 3 --codebook f16"
  "--bits 3: low-rank residual auto|--bits 3 --lowrank-rank auto"
  "--bits 3: natural group order|--bits 3 --order natural"
  "--bits 3: plain Hessian for v_proj (no BoA)|--bits 3 --no-attention-hessians"
  "--bits 3: no column rotation|--bits 3 --rotation-block 0"
  "--bits 3: paper tiles (C = d)|--bits 3 --tiles paper"
)
# The second model (widths 896 and 4864: its d = 3 codebooks end each row in a partial group).
QWEN_RUNS=(
  "f32 export (reference)|--type f32"
  "athena --bits 3|--bits 3"
  "athena --bits 3, d <= 3|--bits 3 --max-dim 3"
  "athena --bits 4|--bits 4"
)
# The whole file at the budget: embeddings as Athena weights (the default since 2026-12-07) or
# Q8_0, and budgets over every tensor byte, to compare with llama.cpp's files by size.
EMBEDDING_RUNS=(
  "athena --bits 3, Q8_0 embeddings|--bits 3 --embeddings q8_0"
  "athena --bits 3|--bits 3"
  "athena --bits 4, Q8_0 embeddings|--bits 4 --embeddings q8_0"
  "athena --bits 4|--bits 4"
  "athena --file-bits 3|--file-bits 3"
  "athena --file-bits 3.5|--file-bits 3.5"
  "athena --file-bits 4.5|--file-bits 4.5"
)
case "${SET:-all}" in
  budget) RUNS=("${BUDGET_RUNS[@]}") ;;
  qwen) RUNS=("${QWEN_RUNS[@]}"); MODEL="$CACHE/models/Qwen2.5-Coder-0.5B-Instruct" ;;
  ablation) RUNS=("${ABLATION_RUNS[@]}") ;;
  embeddings) RUNS=("${EMBEDDING_RUNS[@]}") ;;
  qwen-embeddings) RUNS=("${EMBEDDING_RUNS[@]}"); MODEL="$CACHE/models/Qwen2.5-Coder-0.5B-Instruct" ;;
  all)
    # The ablation set repeats two budget conversions (--bits 3 and --bits 3 --rotation-block 0)
    # as its own references: run each set of arguments once.
    RUNS=("${BUDGET_RUNS[@]}")
    for run in "${ABLATION_RUNS[@]}"; do
      dup=0
      for have in "${RUNS[@]}"; do [[ "${have#*|}" == "${run#*|}" ]] && dup=1; done
      ((dup)) || RUNS+=("$run")
    done
    ;;
  *) echo "SET must be budget, ablation, all, qwen, embeddings or qwen-embeddings" >&2; exit 2 ;;
esac

field() { python3 -c "import json,sys; v=json.load(sys.stdin)$1; print(round(v, 4))"; }

echo "$(basename "$MODEL"), ppl on $(basename "$TEXT") (ctx 512, $CHUNKS chunks), $(date -u +%F), $(git -C "$REPO" rev-parse --short HEAD)"
echo
# linear bpw: what --bits budgets (the quantized linear layers; the head and embedding are not
# counted); tensor bpw: what --file-bits budgets (every tensor byte over every parameter); file
# bpw: the whole file, metadata included.
printf '| run | linear bpw | tensor bpw | file bpw | size MB | ppl | convert time | peak MB |\n|---|---|---|---|---|---|---|---|\n'
for run in "${RUNS[@]}"; do
  name="${run%%|*}"; args="${run#*|}"
  file="$OUT/$(echo "$name" | tr -c 'a-zA-Z0-9.' '_').gguf"
  log="$file.log"
  # shellcheck disable=SC2086
  if ! /usr/bin/time -v "$BIN/athena-convert" "$MODEL" "$file" $args --force --quiet > "$log" 2>&1; then
    printf '| %s | failed: %s ||||||||\n' "$name" "$(grep -m1 'athena-convert' "$log" || tail -n1 "$log")"
    continue
  fi
  secs=$(sed -n 's/.*Elapsed (wall clock) time (h:mm:ss or m:ss): //p' "$log")
  peak=$(( $(sed -n 's/.*Maximum resident set size (kbytes): //p' "$log") / 1024 ))
  json=$("$BIN/athena-verify" "$file" --json --text "$TEXT" --chunks "$CHUNKS")
  lin=$(echo "$json" | field '["summary"]["linear_bpw"]')
  fil=$(echo "$json" | field '["summary"]["file_bpw"]')
  ten=$(echo "$json" | field '["summary"]["tensor_bpw"]')
  [[ "$(echo "$json" | field '["summary"]["athena_weights"]')" == 0 ]] && lin="(plain $args)"
  ppl=$(echo "$json" | field '["perplexity"]["ppl"]')
  size=$(python3 -c "print(round($(stat -c %s "$file") / 1e6, 1))")
  printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$name" "$lin" "$ten" "$fil" "$size" "$ppl" "$secs" "$peak"
done
