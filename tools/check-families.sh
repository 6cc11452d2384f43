#!/usr/bin/env bash
# Checks each model family end to end against llama.cpp, on small random checkpoints with the
# family's own options on (tools/random_checkpoint.py). Run it before resolving an issue that
# adds or changes a family.
#
# Usage: tools/check-families.sh [--no-quant] [--no-build] [--keep DIR] [--seed N] [FAMILY...]
#
#   FAMILY    llama llama3 qwen2 qwen3 gemma3 phi3 (default: all six)
#   --no-quant  skip the --bits 3 conversion, verify and perplexity columns
#   --no-build  use the binaries in target/release as they are (default: cargo build them first)
#   --keep DIR  keep the checkpoints, GGUF files and logits in DIR (default: a temp dir, removed)
#   --seed N    seed of the random checkpoints (default 0); the tokens are always the same
#
# For each family:
#   1. python3 tools/random_checkpoint.py FAMILY DIR --seed N
#   2. athena-convert DIR f32.gguf --type f32            (a family the converter refuses is
#                                                          reported "refused: <its error>")
#   3. llama_logits f32.gguf (llama.cpp, tools/build_llama_logits.sh) and the dump-logits example
#      (--engine reference on DIR and on f32.gguf, --engine runtime on f32.gguf) on one fixed
#      sequence of 48 token ids (numpy default_rng(0), below the vocabulary size); each of ours is
#      compared with llama.cpp's: max abs diff, rel err = max|ours - llama| / max|llama|. Also
#      tools/hf_logits.py on DIR: the model as transformers defines it, in numpy float64, against
#      llama.cpp on our export (an option that the export and our reference both dropped would
#      agree between them, not with this). Pass when every rel err < 1e-3 (the runtime keeps its
#      KV cache in f16: 2e-4 to 6e-4; the reference and llama.cpp agree to about 2e-6, 2e-4 on
#      gemma3 where llama.cpp's CPU GELU reads an f16 table; a RoPE, window or attention-scale
#      option ignored moves the logits by 5e-3 or more).
#   4. unless --no-quant: athena-convert DIR q3.gguf --bits 3 --calib wiki.utf8 --calib-tokens 2048
#      --seq-len 128 --eval-text wiki.utf8 --eval-ctx 128 --eval-chunks 4, athena-verify q3.gguf,
#      athena-eval q3.gguf --text wiki.utf8 --ctx 128 --chunks 4; match when both perplexities
#      print the same (the converter measures the file it wrote with athena-eval's code).
# and prints one markdown table (progress and the commands' error lines go to stderr; the error
# lines are repeated under the table). Exit status 0 when every family checked passes (refused
# ones do not count), 1 otherwise, 2 for a usage error.
#
# Needs: python3 with numpy; cmake (pip install cmake) and a C++ compiler for the first
# llama_logits build (tools/llama_cpp_build.sh: libllama from the llama-cpp-python 0.3.36 sdist,
# 3-10 minutes on 2 cores, reused after); $ATHENA_CACHE/models/SmolLM2-135M-Instruct (its
# tokenizer) and $ATHENA_CACHE/text/wiki.utf8 from tools/fetch-models.sh (ATHENA_CACHE defaults
# to ~/.cache/athena). Time on 2 cores, after the builds: a few seconds per family without the
# quantization; with it 45 s for qwen2, llama3 and qwen3, 70 s for llama (an untied head) and
# phi3, 3 minutes for gemma3 (130 MB checkpoint): all six in 7.5 minutes.
# Environment: LLAMA_LOGITS (a built llama_logits binary), JOBS (cargo and cmake jobs, default 2).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${ATHENA_CACHE:-$HOME/.cache/athena}"
JOBS="${JOBS:-2}"
ALL=(llama llama3 qwen2 qwen3 gemma3 phi3)
QUANT=1
BUILD=1
KEEP=""
SEED=0
FAMILIES=()
usage() { echo "check-families.sh: $1 (see --help)" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case "$1" in
        --no-quant) QUANT=0 ;;
        --no-build) BUILD=0 ;;
        --keep) [ $# -ge 2 ] || usage "--keep needs a folder"; KEEP="$2"; shift ;;
        --seed) [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || usage "--seed needs a number"; SEED="$2"; shift ;;
        -h|--help) sed -n '2,/^set -uo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) usage "unknown option '$1'" ;;
        *) [[ " ${ALL[*]} " == *" $1 "* ]] || usage "unknown family '$1' (${ALL[*]})"; FAMILIES+=("$1") ;;
    esac
    shift
done
[ ${#FAMILIES[@]} -gt 0 ] || FAMILIES=("${ALL[@]}")

log() { echo "check-families: $*" >&2; }
die() { log "$*"; exit 1; }

WIKI="$CACHE/text/wiki.utf8"
[ -f "$CACHE/models/SmolLM2-135M-Instruct/tokenizer.json" ] \
    || die "$CACHE/models/SmolLM2-135M-Instruct: missing (run tools/fetch-models.sh)"
[ "$QUANT" = 0 ] || [ -f "$WIKI" ] || die "$WIKI: missing (run tools/fetch-models.sh)"
python3 -c 'import numpy' 2>/dev/null || die "python3 has no numpy (pip install numpy)"

BIN="$REPO/target/release"
if [ "$BUILD" = 1 ]; then
    log "cargo build --release -j$JOBS --bins --example dump-logits"
    (cd "$REPO" && cargo build --quiet --release -j"$JOBS" --bins --example dump-logits) \
        || die "cargo build failed"
fi
for b in athena-convert athena-verify athena-eval examples/dump-logits; do
    [ -x "$BIN/$b" ] || die "$BIN/$b: missing (cargo build --release --bins --example dump-logits)"
done
if [ -n "${LLAMA_LOGITS:-}" ]; then
    LL="$LLAMA_LOGITS"
else
    log "building llama_logits (tools/build_llama_logits.sh; the first time takes minutes)"
    LL="$(JOBS="$JOBS" "$REPO/tools/build_llama_logits.sh")" || die "tools/build_llama_logits.sh failed"
fi
[ -x "$LL" ] || die "$LL: not an executable"

if [ -n "$KEEP" ]; then
    mkdir -p "$KEEP" || die "$KEEP: cannot create"
    WORK="$(cd "$KEEP" && pwd)"
else
    WORK="$(mktemp -d)"
    trap 'rm -rf "$WORK"' EXIT
fi

# general.name of the files: not the family's name, which llama.cpp matches to apply a family's
# own tokenizer fixes (a name containing "phi3" makes it look up "</s>", which SmolLM2's
# vocabulary lacks: "error loading model vocabulary: unordered_map::at").
NAME="random checkpoint"
TOKENS="$(python3 -c 'import numpy as np; print(",".join(map(str, np.random.default_rng(0).integers(0, 49152, 48))))')"

# The last line of a command's stderr, as one table-safe line.
err_line() { tail -n 1 "$1" | tr -d '\r' | sed 's/|/\\|/g' | cut -c1-400; }

# compare OURS LLAMA: prints "MAXABS RELERR" or an error.
compare() {
    python3 - "$1" "$2" <<'EOF'
import sys
import numpy as np
ours, ref = (np.fromfile(p, "<f4") for p in sys.argv[1:3])
if ours.size != ref.size:
    sys.exit(f"{ours.size} logits, llama.cpp {ref.size}")
if not np.isfinite(ours).all():
    sys.exit("non-finite logits")
d = float(np.abs(ours - ref).max())
print(f"{d:.3g} {d / float(np.abs(ref).max()):.2e}")
EOF
}

# The empty cells of a row that stopped before the logits (refused, or no checkpoint).
BLANK="| | | | | | | "
[ "$QUANT" = 1 ] && BLANK="$BLANK| | | | "
ROWS=()
NOTES=()
FAILED=0
for fam in "${FAMILIES[@]}"; do
    d="$WORK/$fam"
    rm -rf "$d" "$d".*
    t0=$(date +%s)
    log "$fam: random checkpoint"
    if ! python3 "$REPO/tools/random_checkpoint.py" "$fam" "$d" --seed "$SEED" >/dev/null 2>"$d.gen.err"; then
        ROWS+=("| $fam | random_checkpoint.py failed: $(err_line "$d.gen.err") $BLANK| no |")
        FAILED=1
        continue
    fi
    if ! "$BIN/athena-convert" "$d" "$d.f32.gguf" --type f32 --name "$NAME" --quiet 2>"$d.export.err"; then
        e="$(err_line "$d.export.err")"
        log "$fam: refused: $e"
        ROWS+=("| $fam | refused: ${e#athena-convert: error: } $BLANK| - |")
        continue
    fi
    pass=yes
    cells=()
    hf="-"
    if out="$("$LL" "$d.f32.gguf" --tokens "$TOKENS" --out "$d.llama.bin" 2>"$d.llama.err")"; then
        loads="yes (${out##*arch=})"
    else
        e="$(err_line "$d.llama.err")"
        loads="no"
        NOTES+=("- $fam: $e")
        pass=no
    fi
    if [ "$loads" != no ]; then
        if ! python3 "$REPO/tools/hf_logits.py" "$d" --tokens "$TOKENS" --out "$d.hf.bin" \
                >/dev/null 2>"$d.hf.err"; then
            NOTES+=("- $fam: $(err_line "$d.hf.err")")
            hf="failed"
            pass=no
        elif r="$(compare "$d.hf.bin" "$d.llama.bin" 2>"$d.hf.cmp.err")"; then
            hf="${r#* }"
            python3 -c "import sys; sys.exit(0 if float('$hf') < 1e-3 else 1)" || pass=no
        else
            NOTES+=("- $fam (hf_logits.py): logits: $(err_line "$d.hf.cmp.err")")
            hf="failed"
            pass=no
        fi
    fi
    for run in "reference $d hf" "reference $d.f32.gguf gguf" "runtime $d.f32.gguf gguf"; do
        read -r engine model kind <<<"$run"
        name="$engine-$kind"
        if [ "$loads" = no ]; then
            cells+=("-" "-")
        elif ! "$BIN/examples/dump-logits" "$model" --tokens "$TOKENS" --engine "$engine" \
                --out "$d.$name.bin" >/dev/null 2>"$d.$name.err"; then
            NOTES+=("- $fam (--engine $engine on $(basename "$model")): $(err_line "$d.$name.err")")
            cells+=("failed" "-")
            pass=no
        elif r="$(compare "$d.$name.bin" "$d.llama.bin" 2>"$d.$name.cmp.err")"; then
            read -r maxabs relerr <<<"$r"
            cells+=("$maxabs" "$relerr")
            python3 -c "import sys; sys.exit(0 if float('$relerr') < 1e-3 else 1)" || pass=no
        else
            NOTES+=("- $fam (--engine $engine on $(basename "$model")): logits: $(err_line "$d.$name.cmp.err")")
            cells+=("failed" "-")
            pass=no
        fi
    done
    row="| $fam | $loads | $hf | ${cells[0]} | ${cells[1]} | ${cells[2]} | ${cells[3]} | ${cells[4]} | ${cells[5]} |"

    if [ "$QUANT" = 1 ]; then
        log "$fam: athena-convert --bits 3 (calibration 2048 tokens)"
        verify="-"; ppl_c=""; ppl_e=""
        rm -f "$d.q3.gguf"
        if ! "$BIN/athena-convert" "$d" "$d.q3.gguf" --bits 3 --name "$NAME" --calib "$WIKI" \
                --calib-tokens 2048 --seq-len 128 --eval-text "$WIKI" --eval-ctx 128 --eval-chunks 4 \
                --quiet >"$d.q3.out" 2>"$d.q3.err"; then
            NOTES+=("- $fam (athena-convert --bits 3): $(err_line "$d.q3.err")")
        fi
        ppl_c="$(sed -n 's/^ppl = \([0-9.eE+-]*\) .*/\1/p' "$d.q3.out" | tail -n 1)"
        # The converter keeps a file it wrote when only its perplexity run failed: check it anyway.
        if [ -f "$d.q3.gguf" ]; then
            if "$BIN/athena-verify" "$d.q3.gguf" >/dev/null 2>"$d.verify.err"; then
                verify=ok
            else
                verify=no
                NOTES+=("- $fam (athena-verify q3.gguf): $(err_line "$d.verify.err")")
            fi
            if "$BIN/athena-eval" "$d.q3.gguf" --text "$WIKI" --ctx 128 --chunks 4 \
                    >"$d.eval.out" 2>"$d.eval.err"; then
                ppl_e="$(sed -n 's/^ppl = \([0-9.eE+-]*\) .*/\1/p' "$d.eval.out" | tail -n 1)"
            else
                NOTES+=("- $fam (athena-eval q3.gguf): $(err_line "$d.eval.err")")
            fi
        fi
        if [ -n "$ppl_c" ] && [ "$ppl_c" = "$ppl_e" ]; then match=yes; else match=no; fi
        [ "$verify" = ok ] && [ "$match" = yes ] || pass=no
        row="$row $verify | ${ppl_c:--} | ${ppl_e:--} | $match |"
    fi
    [ "$pass" = yes ] || FAILED=1
    log "$fam: done in $(( $(date +%s) - t0 )) s (pass: $pass)"
    ROWS+=("$row $pass |")
done

head="| family | llama.cpp loads | rel err (transformers, numpy) | max abs diff (reference HF) | rel err | max abs diff (reference GGUF) | rel err | max abs diff (runtime GGUF) | rel err |"
rule="|---|---|---|---|---|---|---|---|---|"
if [ "$QUANT" = 1 ]; then
    head="$head verify ok | ppl convert | ppl eval | match |"
    rule="$rule---|---|---|---|"
fi
echo
echo "$head pass |"
echo "$rule---|"
printf '%s\n' "${ROWS[@]}"
if [ ${#NOTES[@]} -gt 0 ]; then
    echo
    printf '%s\n' "${NOTES[@]}"
fi
[ -n "$KEEP" ] && log "files kept in $WORK"
exit "$FAILED"
