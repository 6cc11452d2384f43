#!/usr/bin/env bash
# Cross-check Athena's GGUF output, perplexity and tokenizer against stock llama.cpp.
#
#   1. athena-convert  HF folder -> f16 GGUF
#   2. llama-perplexity vs athena-eval on that GGUF (and, optionally, on extra GGUFs)
#   3. llama-tokenize --ids vs HF `tokenizers` (same tokenizer.json our Rust code uses)
#
# llama.cpp is built by tools/llama_cpp_build.sh (its environment variables SDIST, LLAMA_SRC,
# JOBS apply; the build goes to $WORK/build unless BUILD is set).
#
# Every path can be overridden through the environment, e.g.
#   CHUNKS=32 tools/llama_cpp_compare.sh   (after cargo build --release)
# Needs: cmake (pip install cmake), a C/C++ compiler, python3 with `tokenizers` (pip install tokenizers).
set -euo pipefail

C=${ATHENA_CACHE:-$HOME/.cache/athena}
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ATHENA_BIN=${ATHENA_BIN:-$REPO/target/release}   # athena-convert, athena-eval (cargo build --release)
MODEL_DIR=${MODEL_DIR:-$C/models/SmolLM2-135M-Instruct}
TEXT=${TEXT:-$C/text/wiki.utf8}
EXTRA_GGUFS=${EXTRA_GGUFS:-"$C/gguf/SmolLM2-135M-Instruct.Q4_1.gguf $C/gguf/Qwen2.5-Coder-0.5B-Instruct.gguf"}
WORK=${WORK:-/tmp/llcmp}
CTX=${CTX:-512}
CHUNKS=${CHUNKS:-32}                          # chunks for the f16 comparison
EXTRA_CHUNKS=${EXTRA_CHUNKS:-4}               # chunks for the extra GGUFs
THREADS=${THREADS:-2}                         # llama-perplexity threads
SKIP_EXTRA=${SKIP_EXTRA:-0}

mkdir -p "$WORK"
SUMMARY=$WORK/summary.txt
: > "$SUMMARY"
log() { echo "$*" | tee -a "$SUMMARY"; }

# ---------------------------------------------------------------- build (2 targets only)
BIN_DIR=$(BUILD=${BUILD:-$WORK/build} "$REPO/tools/llama_cpp_build.sh" llama-perplexity llama-tokenize)
PPL_BIN=$BIN_DIR/llama-perplexity
TOK_BIN=$BIN_DIR/llama-tokenize
log "llama.cpp binaries: $BIN_DIR"

# ---------------------------------------------------------------- helpers
# llama-perplexity prints "Final estimate: PPL = 12.3456 +/- 0.1234"
llama_ppl() { grep -o 'Final estimate: PPL = [0-9.]*' "$1" | awk '{print $NF}'; }
# athena-eval prints "ppl = 12.3456 +/- 0.1234 (...)"
athena_ppl() { grep -o '^ppl = [0-9.]*' "$1" | awk '{print $NF}'; }
reldiff() { python3 -c "import sys; a,l=float(sys.argv[1]),float(sys.argv[2]); print(f'{(a-l)/l*100:+.4f} %')" "$1" "$2"; }

compare_ppl() {   # compare_ppl GGUF CHUNKS TAG
    local g=$1 n=$2 tag=$3
    "$PPL_BIN" -m "$g" -f "$TEXT" -c "$CTX" --chunks "$n" -t "$THREADS" > "$WORK/llama_$tag.log" 2>&1 \
        || { log "[$tag] llama-perplexity FAILED (see $WORK/llama_$tag.log)"; return 0; }
    "$ATHENA_BIN/athena-eval" "$g" --text "$TEXT" --ctx "$CTX" --chunks "$n" > "$WORK/athena_$tag.log" 2>&1 \
        || { log "[$tag] athena-eval FAILED (see $WORK/athena_$tag.log)"; return 0; }
    local l a
    l=$(llama_ppl "$WORK/llama_$tag.log"); a=$(athena_ppl "$WORK/athena_$tag.log")
    log "[$tag] $(basename "$g") ctx=$CTX chunks=$n: llama-perplexity=$l athena-eval=$a rel.diff(athena-llama)/llama=$(reldiff "$a" "$l")"
}

# ---------------------------------------------------------------- 1. convert
F16=$WORK/smollm2-f16.gguf
"$ATHENA_BIN/athena-convert" "$MODEL_DIR" "$F16" --type f16 --force 2>&1 | tee "$WORK/convert.log"

# ---------------------------------------------------------------- 2. perplexity
compare_ppl "$F16" "$CHUNKS" f16
if [[ "$SKIP_EXTRA" != 1 ]]; then
    for g in $EXTRA_GGUFS; do
        [[ -f "$g" ]] || { log "skip (missing): $g"; continue; }
        compare_ppl "$g" "$EXTRA_CHUNKS" "$(basename "$g" .gguf)"
    done
fi

# ---------------------------------------------------------------- 3. token ids
# llama-tokenize reads -f verbatim; --no-escape keeps backslashes as bytes; --no-bos because
# HF encode(add_special_tokens=False) adds none (SmolLM2's add_bos_token is false anyway).
"$TOK_BIN" -m "$F16" -f "$TEXT" --ids --no-bos --no-escape --log-disable > "$WORK/llama_ids.txt" 2> "$WORK/llama_tokenize.err"
cat > "$WORK/compare_ids.py" <<'PYEOF'
#!/usr/bin/env python3
"""Tokenize TEXT with HF `tokenizers` (tokenizer.json) and compare with llama-tokenize --ids output.

usage: compare_ids.py TOKENIZER_JSON TEXT LLAMA_IDS_FILE [OUT_HF_IDS]
LLAMA_IDS_FILE holds llama-tokenize's `--ids` output: a Python-style list "[1, 2, 3]".
"""
import ast, sys
from tokenizers import Tokenizer

tok_json, text_path, llama_ids_path = sys.argv[1:4]
tok = Tokenizer.from_file(tok_json)
text = open(text_path, encoding="utf-8").read()
hf = tok.encode(text, add_special_tokens=False).ids
if len(sys.argv) > 4:
    open(sys.argv[4], "w").write(" ".join(map(str, hf)) + "\n")

raw = open(llama_ids_path, encoding="utf-8").read().strip()
# take the last line that looks like a list (llama-tokenize may print log lines before it)
line = [l for l in raw.splitlines() if l.strip().startswith("[")][-1]
ll = ast.literal_eval(line.strip())

n = min(len(hf), len(ll))
mism = [i for i in range(n) if hf[i] != ll[i]]
first = mism[0] if mism else (n if len(hf) != len(ll) else None)
print(f"hf_tokenizers_count={len(hf)} llama_tokenize_count={len(ll)}")
print(f"positionwise_mismatches={len(mism)} (over the first {n} positions)")
if first is None:
    print("RESULT: IDENTICAL id sequences")
else:
    print(f"RESULT: DIFFERENT; first mismatch at position {first}")
    lo = max(0, first - 5)
    print("  hf   ", hf[lo:first + 10])
    print("  llama", ll[lo:first + 10])
    try:
        print("  hf   decoded:", repr(tok.decode(hf[lo:first + 10])))
        print("  llama decoded:", repr(tok.decode(ll[lo:first + 10])))
    except Exception as e:
        print("  decode failed:", e)
sys.exit(0 if first is None else 1)
PYEOF
python3 -c "import tokenizers" 2>/dev/null || pip install tokenizers
python3 "$WORK/compare_ids.py" "$MODEL_DIR/tokenizer.json" "$TEXT" "$WORK/llama_ids.txt" "$WORK/hf_ids.txt" \
    > "$WORK/ids_compare.txt" 2>&1 || true
log "token ids ($(basename "$TEXT")): $(tr '\n' ';' < "$WORK/ids_compare.txt")"

echo; echo "== summary ($SUMMARY)"; cat "$SUMMARY"
