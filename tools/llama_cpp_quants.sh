#!/usr/bin/env bash
# llama.cpp's own quantizers on the same weights as Athena, measured the way Athena's files are:
# for each type, the linear weights' bits per weight (every byte of the blk.*.attn_{q,k,v,output}
# and ffn_{gate,up,down} tensors, as --bits counts them) and the perplexity on TEXT.
#
#   1. athena-convert MODEL_DIR -> f16 GGUF (the reference: its perplexity is the first row)
#   2. llama-imatrix on CALIB (the importance matrix llama.cpp's low-bit types are meant to use;
#      calibrated on the same C4 text as Athena), unless IMATRIX=0
#   3. llama-quantize to every type in TYPES without the matrix, and to every type in TYPES and
#      IQ_TYPES with it
#   4. perplexity with athena-eval (ctx CTX, first CHUNKS chunks, the figure docs/benchmarks.md
#      reports for Athena); types athena-eval cannot read (the IQ family) with llama-perplexity,
#      which computes with quantized activations (0.2-0.5% off athena-eval on quantized files,
#      docs/benchmarks.md "Perplexity checked against llama.cpp"); LLAMA_PPL=1 adds
#      llama-perplexity for every row
#
#   tools/llama_cpp_quants.sh                                   # SmolLM2-135M
#   MODEL_DIR=~/.cache/athena/models/Qwen2.5-Coder-0.5B-Instruct tools/llama_cpp_quants.sh
#   TYPES= IQ_TYPES="Q2_K IQ3_XXS" tools/llama_cpp_quants.sh   # an empty list runs none of it
#
# Needs `cargo build --release`, pip packages gguf and numpy, and what tools/llama_cpp_build.sh
# needs (its first build takes 10-20 minutes on 2 cores). Prints a markdown table (also in
# $WORK/table.md).
set -euo pipefail

C=${ATHENA_CACHE:-$HOME/.cache/athena}
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ATHENA_BIN=${ATHENA_BIN:-$REPO/target/release}
MODEL_DIR=${MODEL_DIR:-$C/models/SmolLM2-135M-Instruct}
TEXT=${TEXT:-$C/text/wiki.utf8}
CALIB=${CALIB:-$C/text/c4.utf8}
TYPES=${TYPES-"Q2_K Q3_K_S Q3_K_M Q4_K_S Q4_K_M"}
IQ_TYPES=${IQ_TYPES-"IQ2_XS IQ2_M IQ3_XXS IQ3_M"}
IMATRIX=${IMATRIX:-1}
IMATRIX_CHUNKS=${IMATRIX_CHUNKS:-64}     # of CTX tokens: 32768, Athena's default calibration
CTX=${CTX:-512}
CHUNKS=${CHUNKS:-32}
THREADS=${THREADS:-2}
LLAMA_PPL=${LLAMA_PPL:-0}
NAME=$(basename "$MODEL_DIR")
WORK=${WORK:-/tmp/llquants/$NAME}
mkdir -p "$WORK"

BIN=$("$REPO/tools/llama_cpp_build.sh" llama-quantize llama-imatrix llama-perplexity)

F16=$WORK/f16.gguf
[[ -f "$F16" ]] || "$ATHENA_BIN/athena-convert" "$MODEL_DIR" "$F16" --type f16 --quiet

IMAT=$WORK/imatrix.gguf
if [[ "$IMATRIX" == 1 && ! -f "$IMAT" ]]; then
    echo "== llama-imatrix ($IMATRIX_CHUNKS chunks of $CTX from $(basename "$CALIB"))" >&2
    "$BIN/llama-imatrix" -m "$F16" -f "$CALIB" -c "$CTX" --chunks "$IMATRIX_CHUNKS" \
        -t "$THREADS" -o "$IMAT" > "$WORK/imatrix.log" 2>&1
fi

linear_bpw() {  # bits per weight of the linear weights and of the whole file
    python3 - "$1" <<'PY'
import os, re, sys
import gguf
r = gguf.GGUFReader(sys.argv[1])
lin = re.compile(r"^blk\.\d+\.(attn_(q|k|v|output)|ffn_(gate|up|down))\.weight$")
bits = n = 0
kinds = {}
for t in r.tensors:
    if lin.match(t.name):
        bits += 8 * int(t.n_bytes); n += int(t.n_elements)
        kinds[t.tensor_type.name] = kinds.get(t.tensor_type.name, 0) + 1
total = sum(int(t.n_elements) for t in r.tensors)
mix = " ".join(f"{k}x{v}" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))
print(f"{bits / n:.4f}|{8 * os.path.getsize(sys.argv[1]) / total:.4f}|{mix}")
PY
}
# The reference engine: it reads every ggml type by dequantizing (the runtime reads F32, F16,
# BF16, Q8_0 and Athena weights only).
athena_ppl() { "$ATHENA_BIN/athena-eval" "$1" --engine reference --text "$TEXT" --ctx "$CTX" --chunks "$CHUNKS" 2>/dev/null \
    | grep -o '^ppl = [0-9.]*' | awk '{print $NF}'; }
llama_ppl() { "$BIN/llama-perplexity" -m "$1" -f "$TEXT" -c "$CTX" --chunks "$CHUNKS" -t "$THREADS" 2>&1 \
    | grep -o 'Final estimate: PPL = [0-9.]*' | awk '{print $NF}'; }

TABLE=$WORK/table.md
{
    echo "$NAME, $(basename "$TEXT"), ctx $CTX, $CHUNKS chunks; imatrix: $IMATRIX_CHUNKS x $CTX tokens of $(basename "$CALIB")"
    echo
    echo "| file | linear bpw | file bpw | linear tensor types | ppl (athena-eval) | ppl (llama-perplexity) |"
    echo "|---|---|---|---|---|---|"
} > "$TABLE"
row() {  # row LABEL GGUF
    local info a l=""
    info=$(linear_bpw "$2")
    a=$(athena_ppl "$2" || true)
    if [[ -z "$a" || "$LLAMA_PPL" == 1 ]]; then l=$(llama_ppl "$2" || true); fi
    echo "| $1 | ${info//|/ | } | ${a:--} | ${l:--} |" | tee -a "$TABLE" >&2
}

row "f16 (reference)" "$F16"
for imat in 0 1; do
    if [[ "$imat" == 1 && "$IMATRIX" != 1 ]]; then continue; fi
    types=$TYPES; args=(); tag=""; suffix=""
    if [[ "$imat" == 1 ]]; then types="$TYPES $IQ_TYPES"; args=(--imatrix "$IMAT"); tag=" imatrix"; suffix=-imat; fi
    for t in $types; do
        out=$WORK/$t$suffix.gguf
        if ! "$BIN/llama-quantize" "${args[@]}" "$F16" "$out" "$t" "$THREADS" > "$out.log" 2>&1; then
            echo "| $t$tag | llama-quantize failed: see $out.log | | | | |" | tee -a "$TABLE" >&2
            continue
        fi
        row "$t$tag" "$out"
        rm -f "$out"
    done
done
echo; cat "$TABLE"
