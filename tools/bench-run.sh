#!/usr/bin/env bash
# Speed of athena-run against llama.cpp's llama-bench on the same weights, one after the other in
# one run, as one markdown table: engine, file, file size, prompt processing (pp) and generation
# (tg) tokens/s, peak RSS of the whole process (/usr/bin/time -v), notes.
#
#   tools/bench-run.sh                                    # SmolLM2-135M-Instruct, missing files made
#   ATHENA_FILES="a.gguf b.gguf" tools/bench-run.sh       # athena-run on these files instead
#   ENGINES=llama REPS=5 tools/bench-run.sh               # only the llama.cpp rows
#   FULL=1 tools/bench-run.sh                             # --bits 2.25 with its default tuning
#
# Rows (files in $WORK, made when missing, reused when present):
#   athena-run   athena-convert MODEL OUT --bits B for B in ATHENA_BITS ("2.25 3 4"; --bits 3 takes
#                ~15 minutes on 2 cores; below 3 bits with --finetune-epochs 0 unless FULL=1:
#                speed does not depend on it) and --type T for T in ATHENA_TYPES ("q8_0 f16");
#                run as  athena-run FILE --bench-pp PP --bench-tg TG -t THREADS --bench-reps REPS --json
#   llama-bench  F16 from athena-convert MODEL f16.gguf --type f16 (the same file as athena-run's
#                f16 row) and llama-quantize F16 -> T for T in LLAMA_TYPES ("Q4_0 Q4_K_M Q8_0 F16";
#                tensors whose rows are not a multiple of 256, SmolLM2's 576, fall back to a
#                32-block type by llama-quantize's own rule, as in tools/llama_cpp_quants.sh);
#                run as  llama-bench -m FILE -p PP -n TG -t THREADS -r REPS -o json  (avg_ts)
# Runs are strictly sequential, and a lock (LOCK, default /tmp/bench-run.lock) keeps two
# invocations from converting or measuring at the same time. The cores may be shared with other
# work: each row's notes give the CPU that other processes used during its run (all CPU time in
# /proc/stat less the run's own user+system time, in cores); with 2 threads on 2 cores any other
# work slows the run down far more than its share (threads wait for each other at every step):
# on a busy machine use NICE=-20 (as root) and/or IDLE_WAIT. Without athena-run (not built) its
# rows are skipped and one row says so; a missing athena-convert or model folder is an error
# only when a file has to be made.
#
# Environment:
#   ATHENA_CACHE   cache of tools/fetch-models.sh (default ~/.cache/athena)
#   MODEL_DIR      HF folder (default $ATHENA_CACHE/models/SmolLM2-135M-Instruct)
#   WORK           files, logs and bench-run.md (default /tmp/bench-run/<model folder name>)
#   ATHENA_BIN     athena-run, athena-convert (default target/release: cargo build --release)
#   ATHENA_FILES   athena-run on exactly these files (nothing converted)
#   ATHENA_BITS225, ATHENA_BITS3, ATHENA_BITS4, ATHENA_Q8_0, ATHENA_F16   one athena file's path
#                  (default $WORK/athena-bits<B>[-ft0].gguf, $WORK/athena-q8_0.gguf, $WORK/f16.gguf)
#   LLAMA_Q4_0, LLAMA_Q4_K_M, LLAMA_Q8_0, LLAMA_F16   one llama.cpp file's path
#                  (default $WORK/llama-<T>.gguf; F16: $WORK/f16.gguf)
#   ATHENA_BITS, ATHENA_TYPES, LLAMA_TYPES   the lists above (empty: none of that kind)
#   ENGINES        "athena llama" (default), or one of them
#   FULL=1         --bits below 3 with the converter's default tuning (FAST_ARGS otherwise,
#                  default "--finetune-epochs 0")
#   PP, TG, THREADS, REPS   512, 128, 2, 3
#   LLAMA_BIN      folder with llama-bench and llama-quantize (default: built or reused by
#                  tools/llama_cpp_build.sh in BUILD, default /tmp/llcmp/build; JOBS applies)
#   LOCK           lock file (default /tmp/bench-run.lock)
#   IDLE_WAIT      seconds the whole run may spend waiting, before each measurement, for other
#                  work to use at most IDLE_MAX cores (default 0: no wait; IDLE_MAX default 0.2)
#   NICE           niceness of the measured processes and of their autogroup: each runs in a
#                  session of its own (default 0: as started; e.g. -10, as root, gives them most
#                  of the CPU when other work runs beside them)
set -euo pipefail

usage() { awk 'NR == 1 { next } !/^#/ { exit } { sub(/^# ?/, ""); print }' "${BASH_SOURCE[0]}"; }
for arg in "$@"; do
    case "$arg" in
        -h|--help) usage; exit 0 ;;
        *) echo "bench-run.sh: unknown argument '$arg' (see --help)" >&2; exit 2 ;;
    esac
done

C=${ATHENA_CACHE:-$HOME/.cache/athena}
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ATHENA_BIN=${ATHENA_BIN:-$REPO/target/release}
MODEL_DIR=${MODEL_DIR:-$C/models/SmolLM2-135M-Instruct}
NAME=$(basename "$MODEL_DIR")
WORK=${WORK:-/tmp/bench-run/$NAME}
ATHENA_BITS=${ATHENA_BITS-"2.25 3 4"}
ATHENA_TYPES=${ATHENA_TYPES-"q8_0 f16"}
LLAMA_TYPES=${LLAMA_TYPES-"Q4_0 Q4_K_M Q8_0 F16"}
ATHENA_FILES=${ATHENA_FILES:-}
ENGINES=${ENGINES:-"athena llama"}
FULL=${FULL:-0}
FAST_ARGS=${FAST_ARGS:-"--finetune-epochs 0"}
PP=${PP:-512}
TG=${TG:-128}
THREADS=${THREADS:-2}
REPS=${REPS:-3}
LOCK=${LOCK:-/tmp/bench-run.lock}
IDLE_WAIT=${IDLE_WAIT:-0}
IDLE_MAX=${IDLE_MAX:-0.2}
NICE=${NICE:-0}
export BUILD=${BUILD:-/tmp/llcmp/build}
F16=$WORK/f16.gguf
mkdir -p "$WORK"

log() { echo "bench-run: $*" >&2; }
die() { echo "bench-run: error: $*" >&2; exit 1; }
has_engine() { [[ " $ENGINES " == *" $1 "* ]]; }

# One measurement at a time, across invocations too.
if command -v flock >/dev/null; then
    exec 9>"$LOCK"
    if ! flock -n 9; then
        log "another bench-run.sh holds $LOCK; waiting for it"
        flock 9
    fi
fi

# ---------------------------------------------------------------- what is needed
ATHENA_RUN=$ATHENA_BIN/athena-run
CONVERT=$ATHENA_BIN/athena-convert
athena_ok=0
athena_skip=""
if has_engine athena; then
    if [[ -x "$ATHENA_RUN" ]]; then athena_ok=1
    else athena_skip="athena-run not built ($ATHENA_RUN missing: run cargo build --release)"; log "$athena_skip; skipping its rows"
    fi
fi

# athena files: "label|path|convert args" (convert args empty: must exist)
athena_rows=()
if [[ $athena_ok == 1 ]]; then
    if [[ -n "$ATHENA_FILES" ]]; then
        for f in $ATHENA_FILES; do
            [[ -f "$f" ]] || die "ATHENA_FILES: $f does not exist"
            athena_rows+=("|$f|")
        done
    else
        for b in $ATHENA_BITS; do
            var=ATHENA_BITS${b//./}
            args="--bits $b"; suffix=""
            if [[ "$FULL" != 1 ]] && python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) < 3 else 1)" "$b"; then
                args="$args $FAST_ARGS"; suffix=-ft0
            fi
            if [[ -n "${!var:-}" ]]; then suffix=""; fi   # a given file: its flags are not known here
            athena_rows+=("--bits $b${suffix:+ $FAST_ARGS}|${!var:-$WORK/athena-bits$b$suffix.gguf}|$args")
        done
        for t in $ATHENA_TYPES; do
            var=ATHENA_${t^^}; def=$WORK/athena-$t.gguf
            if [[ "$t" == f16 ]]; then def=$F16; fi
            athena_rows+=("--type $t|${!var:-$def}|--type $t")
        done
    fi
fi

llama_rows=()
if has_engine llama; then
    for t in $LLAMA_TYPES; do
        var=LLAMA_$t; def=$WORK/llama-$t.gguf
        if [[ "$t" == F16 ]]; then def=$F16; fi
        llama_rows+=("$t|${!var:-$def}")
    done
fi

need_convert=0
for r in "${athena_rows[@]}"; do
    IFS='|' read -r _ f a <<< "$r"
    [[ -f "$f" || -z "$a" ]] || need_convert=1
done
SRC16=${LLAMA_F16:-$F16}   # what llama-quantize reads
for r in "${llama_rows[@]}"; do
    IFS='|' read -r t f <<< "$r"
    if [[ ! -f "$f" && ( "$t" == F16 || ! -f "$SRC16" ) ]]; then need_convert=1; fi
done
if [[ $need_convert == 1 ]]; then
    [[ -x "$CONVERT" ]] || die "$CONVERT missing: run cargo build --release (or pass existing files, see --help)"
    [[ -f "$MODEL_DIR/config.json" ]] || die "model folder $MODEL_DIR missing: run tools/fetch-models.sh (or set MODEL_DIR)"
fi

LLAMA_BIN=${LLAMA_BIN:-}
if [[ ${#llama_rows[@]} -gt 0 && -z "$LLAMA_BIN" ]]; then
    [[ -x "$BUILD/bin/llama-bench" && -x "$BUILD/bin/llama-quantize" ]] ||
        log "building llama-bench and llama-quantize with tools/llama_cpp_build.sh (10-20 minutes on 2 cores; log in $BUILD/athena-build.log)"
    LLAMA_BIN=$("$REPO/tools/llama_cpp_build.sh" llama-bench llama-quantize) ||
        die "tools/llama_cpp_build.sh failed (see $BUILD/athena-build.log); or set LLAMA_BIN to a folder with llama-bench and llama-quantize"
fi
if [[ ${#llama_rows[@]} -gt 0 ]]; then
    [[ -x "$LLAMA_BIN/llama-bench" ]] || die "$LLAMA_BIN/llama-bench missing: run tools/llama_cpp_build.sh llama-bench llama-quantize"
fi

# ---------------------------------------------------------------- files
convert() {  # convert OUT ARGS...
    local out=$1; shift
    local lg=$out.convert.log t0=$SECONDS
    log "athena-convert $MODEL_DIR $out $* (log: $lg)"
    "$CONVERT" "$MODEL_DIR" "$out" "$@" > "$lg" 2>&1 || { tail -n 5 "$lg" >&2; die "athena-convert failed (see $lg)"; }
    log "  done in $(( SECONDS - t0 )) s"
}
declare -A quant_note=()
if [[ ${#llama_rows[@]} -gt 0 ]]; then
    for r in "${llama_rows[@]}"; do
        IFS='|' read -r t f <<< "$r"
        if [[ "$t" == F16 && ! -f "$f" ]]; then convert "$f" --type f16; fi
    done
    for r in "${llama_rows[@]}"; do
        IFS='|' read -r t f <<< "$r"
        if [[ -f "$f" || "$t" == F16 ]]; then continue; fi
        [[ -f "$SRC16" ]] || convert "$SRC16" --type f16
        log "llama-quantize $SRC16 -> $f ($t; log: $f.quantize.log)"
        "$LLAMA_BIN/llama-quantize" "$SRC16" "$f.tmp" "$t" "$THREADS" > "$f.quantize.log" 2>&1 ||
            { tail -n 5 "$f.quantize.log" >&2; rm -f "$f.tmp"; die "llama-quantize to $t failed (see $f.quantize.log)"; }
        mv "$f.tmp" "$f"
    done
    for r in "${llama_rows[@]}"; do
        IFS='|' read -r t f <<< "$r"
        if [[ -f "$f.quantize.log" ]]; then  # the types llama-quantize chose (fallbacks included)
            mix=$(grep -oE 'converting to [A-Za-z0-9_]+' "$f.quantize.log" | awk '{ n[$3]++ }
                END { for (k in n) printf "%d %s x%d\n", n[k], k, n[k] }' | sort -rn | cut -d' ' -f2- | paste -sd' ' || true)
            n=$(grep -o '[0-9]* of [0-9]* tensor(s) required fallback' "$f.quantize.log" | awk '{print $1 " of " $3}' || true)
            q="${mix:+matrices $mix}${n:+ ($n tensors fell back: rows not a multiple of the block)}"
            quant_note[$t]=${q# }
        fi
    done
fi
for r in "${athena_rows[@]}"; do
    IFS='|' read -r _ f a <<< "$r"
    if [[ -f "$f" ]]; then continue; fi
    # shellcheck disable=SC2086  # a holds flags
    convert "$f" $a
done

# ---------------------------------------------------------------- measuring
if [[ -x /usr/bin/time ]]; then
    timed() { /usr/bin/time -v -o "$1" "${@:2}"; }
else  # the lines of GNU time -v that are read below, from the child's rusage (KiB on Linux)
    timed() {
        python3 -c '
import resource, subprocess, sys
rc = subprocess.call(sys.argv[2:])
r = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as f:
    f.write("User time (seconds): %.2f\nSystem time (seconds): %.2f\n" % (r.ru_utime, r.ru_stime))
    f.write("Maximum resident set size (kbytes): %d\n" % r.ru_maxrss)
sys.exit(rc)' "$@"
    }
fi
peak_mib() { awk -F': ' '/Maximum resident set size/ { printf "%.1f", $2 / 1024 }' "$1"; }
size_mib() { awk -v b="$(stat -c %s "$1")" 'BEGIN { printf "%.1f", b / 1048576 }'; }
HZ=$(getconf CLK_TCK 2>/dev/null || echo 100)
NCPU=$(grep -c '^cpu[0-9]' /proc/stat)
cpu_snap() {  # busy and total jiffies over all CPUs (iowait counts as idle, steal as busy)
    awk '/^cpu / { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat
}
others_between() {  # others_between "B0 T0" "B1 T1" OWN_CPU_SECONDS: cores used by other processes
    awk -v a="$1" -v b="$2" -v own="$3" -v hz="$HZ" -v n="$NCPU" 'BEGIN {
        split(a, x, " "); split(b, y, " "); wall = (y[2] - x[2]) / n
        o = wall > 0 ? (y[1] - x[1] - own * hz) / wall : 0; printf "%.2f", o < 0 ? 0 : o }'
}
IDLE_LEFT=$IDLE_WAIT
idle_wait() {  # wait (out of IDLE_LEFT s) for other work below IDLE_MAX cores (2 s samples)
    local waited=0 s0 o
    while :; do
        s0=$(cpu_snap); sleep 2; o=$(others_between "$s0" "$(cpu_snap)" 0)
        if awk -v o="$o" -v m="$IDLE_MAX" 'BEGIN { exit !(o <= m) }' || (( waited >= IDLE_LEFT )); then break; fi
        if (( waited == 0 )); then log "  other work uses $o cores; waiting up to $IDLE_LEFT s for it to drop below $IDLE_MAX"; fi
        waited=$(( waited + 2 ))
    done
    WAITED=$waited
    IDLE_LEFT=$(( IDLE_LEFT > waited ? IDLE_LEFT - waited : 0 ))
}
OTHERS=""
measure() {  # measure BASE CMD...: runs CMD under timed (BASE.time), stdout BASE.json, stderr BASE.err
    local base=$1 s0 s1 own rc=0
    shift
    WAITED=0
    if (( IDLE_LEFT > 0 )); then idle_wait; fi
    s0=$(cpu_snap)
    if [[ "$NICE" == 0 ]]; then
        timed "$base.time" "$@" > "$base.json" 2> "$base.err" || rc=$?
    else  # a session of its own, so that its autogroup (the scheduler's unit) gets the niceness too
        timed "$base.time" setsid -w sh -c 'echo "$0" > /proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"' \
            "$NICE" "$@" > "$base.json" 2> "$base.err" || rc=$?
    fi
    s1=$(cpu_snap)
    own=$(awk -F': ' '/User time|System time/ { s += $2 } END { print s + 0 }' "$base.time" 2>/dev/null || echo 0)
    OTHERS="other work $(others_between "$s0" "$s1" "$own") of $NCPU cores"
    if (( WAITED > 0 )); then OTHERS="$OTHERS (after waiting $WAITED s)"; fi
    return $rc
}

ROWS=()
LLAMA_BUILD_COMMIT=""
bench_llama() {  # bench_llama TYPE FILE
    local t=$1 f=$2 base=$WORK/bench-llama-$1 parsed pp tg note
    log "llama-bench $t ($(basename "$f"))"
    if ! measure "$base" "$LLAMA_BIN/llama-bench" -m "$f" -p "$PP" -n "$TG" -t "$THREADS" -r "$REPS" -o json; then
        ROWS+=("| llama.cpp | $(basename "$f") ($t) | $(size_mib "$f") | - | - | - | llama-bench failed: $(tail -n 1 "$base.err") |")
        return
    fi
    parsed=$(python3 - "$base.json" "$PP" "$TG" <<'PY'
import json, sys
runs = json.load(open(sys.argv[1]))
pp, tg = int(sys.argv[2]), int(sys.argv[3])
def pick(p, g):
    r = [x for x in runs if x["n_prompt"] == p and x["n_gen"] == g]
    return (f'{r[0]["avg_ts"]:.1f}', f'{r[0]["stddev_ts"]:.1f}') if r else ("-", "-")
(a, sa), (b, sb) = pick(pp, 0), pick(0, tg)
c = runs[0] if runs else {}
print(f'{a}|{b}|pp sd {sa}, tg sd {sb}|{c.get("build_commit", "")} (build {c.get("build_number", "")})')
PY
) || parsed="-|-|could not parse $base.json|"
    IFS='|' read -r pp tg note LLAMA_BUILD_COMMIT <<< "$parsed"
    if [[ -n "${quant_note[$t]:-}" ]]; then note="$note; ${quant_note[$t]}"; fi
    ROWS+=("| llama.cpp | $(basename "$f") ($t) | $(size_mib "$f") | $pp | $tg | $(peak_mib "$base.time") | $note; $OTHERS |")
}
bench_athena() {  # bench_athena LABEL FILE
    local label=$1 f=$2 base parsed pp tg note
    base=$WORK/bench-athena-$(basename "$f" .gguf)
    log "athena-run $(basename "$f")${label:+ ($label)}"
    if ! measure "$base" "$ATHENA_RUN" "$f" --bench-pp "$PP" --bench-tg "$TG" -t "$THREADS" \
        --bench-reps "$REPS" --json; then
        ROWS+=("| athena-run | $(basename "$f")${label:+ ($label)} | $(size_mib "$f") | - | - | - | athena-run failed: $(tail -n 1 "$base.err") |")
        return
    fi
    parsed=$(python3 - "$base.json" "$PP" "$TG" <<'PY'
import json, sys
lines = [l for l in open(sys.argv[1]) if l.lstrip().startswith("{")]
r = json.loads(lines[-1])
pp, tg = int(sys.argv[2]), int(sys.argv[3])
num = lambda k, f: "?" if r.get(k) is None else f % r[k]
note = [f'load {num("load_s", "%.2f")} s', f'own peak RSS {num("peak_rss_mib", "%.0f")} MiB']
if r.get("kernels"):
    note.append(f'kernels {r["kernels"]}')
if r.get("pp_tokens") != pp or r.get("tg_tokens") != tg:
    note.append(f'ran pp {r.get("pp_tokens")} / tg {r.get("tg_tokens")} tokens')
print(f'{r["pp_tps"]:.1f}|{r["tg_tps"]:.1f}|{", ".join(note)}')
PY
) || parsed="-|-|could not parse $base.json"
    IFS='|' read -r pp tg note <<< "$parsed"
    ROWS+=("| athena-run | $(basename "$f")${label:+ ($label)} | $(size_mib "$f") | $pp | $tg | $(peak_mib "$base.time") | $note; $OTHERS |")
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
t_start=$SECONDS
if [[ -n "$athena_skip" ]]; then
    ROWS+=("| athena-run | - | - | - | - | - | $athena_skip |")
fi
for r in "${athena_rows[@]}"; do
    IFS='|' read -r label f _ <<< "$r"
    bench_athena "$label" "$f"
done
for r in "${llama_rows[@]}"; do
    IFS='|' read -r t f <<< "$r"
    bench_llama "$t" "$f"
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- report
llama_version() {
    local src pkg ver commit
    if [[ -f "$BUILD/CMakeCache.txt" && "$LLAMA_BIN" -ef "$BUILD/bin" ]]; then
        src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$BUILD/CMakeCache.txt")
        pkg=$(cd "$src/../.." 2>/dev/null && pwd || true)
        if [[ -n "$pkg" && -f "$pkg/PKG-INFO" ]]; then
            ver=$(sed -n 's/^Version: //p' "$pkg/PKG-INFO" | head -n 1)
            commit=$(awk -v v="## [$ver]" 'index($0, v) == 1 { on = 1; next } /^## \[/ { on = 0 } on' "$pkg/CHANGELOG.md" 2>/dev/null \
                | grep -o -m 1 'ggml-org/llama.cpp@[0-9a-f]*' || true)
            echo "llama-cpp-python $ver sdist, vendored llama.cpp ${commit:-(commit unknown)}; llama-bench build_commit $LLAMA_BUILD_COMMIT"
            return
        fi
    fi
    echo "llama-bench in $LLAMA_BIN, build_commit $LLAMA_BUILD_COMMIT"
}
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
commit=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)
TABLE=$WORK/bench-run.md
{
    echo "## athena-run vs llama.cpp: $NAME, pp$PP / tg$TG, $THREADS threads, $REPS reps"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "- machine: ${cpu:-unknown CPU}, $(nproc) cores available ($(grep -c ^processor /proc/cpuinfo) in /proc/cpuinfo), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo)"
    echo "- athena: commit $commit, $ATHENA_BIN/athena-run"
    if [[ ${#llama_rows[@]} -gt 0 ]]; then echo "- llama.cpp: $(llama_version)"; fi
    echo "- load average at start: $load_start; at end: $load_end; $(( SECONDS - t_start )) s of runs, one at a time$(if [[ "$NICE" != 0 ]]; then echo ", niceness $NICE"; fi)"
    echo
    echo "| engine | file | size MiB | pp$PP tok/s | tg$TG tok/s | peak RSS MiB | notes |"
    echo "|---|---|---:|---:|---:|---:|---|"
    for r in "${ROWS[@]}"; do echo "$r"; done
    echo
    echo "pp$PP: one batch of $PP prompt tokens; tg$TG: $TG tokens generated one at a time from an empty context (llama-bench's definitions; athena-run --bench-pp/--bench-tg)."
    echo "Peak RSS: /usr/bin/time -v (ru_maxrss) of the whole process, loading and every repetition included; llama-bench maps the file (mmap), so touched weight pages count."
    if [[ "${athena_rows[*]}" == *"$FAST_ARGS|"* ]]; then
        echo "Athena files below 3 bits made here are converted with $FAST_ARGS to save time (FULL=1: the converter's default tuning); the layout and so the speed do not depend on it."
    fi
} > "$TABLE"
echo
cat "$TABLE"
log "table written to $TABLE"
