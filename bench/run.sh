#!/usr/bin/env bash
# Haven vs restic vs borg, side by side, on the same corpora. See bench/README.md.
#
#   bench/run.sh [--quick] [--rounds N] [--scale] [--corpus NAME[,NAME...]] [--no-build]
#
# Environment: BENCH_DIR (work dir, default /tmp/haven-bench), BENCH_STEP_TIMEOUT (seconds per step).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${BENCH_DIR:-/tmp/haven-bench}
PKGS=/opt/swift-packages/apple
TOOLCHAIN_LIB=/opt/swift/usr/lib

QUICK=0 ROUNDS=3 ROUNDS_SET=0 SCALE=0 BUILD=1 CORPUS_FILTER=""
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }
die() { echo "bench: error: $*" >&2; exit 1; }
log() { echo "bench: $*" >&2; }

while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --rounds) [ $# -ge 2 ] || die "--rounds needs a number"; ROUNDS=$2; ROUNDS_SET=1; shift ;;
        --rounds=*) ROUNDS=${1#*=}; ROUNDS_SET=1 ;;
        --scale) SCALE=1 ;;
        --corpus) [ $# -ge 2 ] || die "--corpus needs a name"; CORPUS_FILTER=$2; shift ;;
        --corpus=*) CORPUS_FILTER=${1#*=} ;;
        --no-build) BUILD=0 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number, got '$ROUNDS'"
if [ "$QUICK" = 1 ] && [ "$ROUNDS_SET" = 0 ]; then ROUNDS=1; fi
if [ "$QUICK" = 1 ]; then MODE=quick; STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-900}; else MODE=full; STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-3600}; fi

ALL_CORPORA="source binaries random tiny"
[ "$SCALE" = 1 ] && ALL_CORPORA="$ALL_CORPORA million"
if [ -n "$CORPUS_FILTER" ]; then
    CORPORA=""
    for c in ${CORPUS_FILTER//,/ }; do
        case " source binaries random tiny million " in
            *" $c "*) CORPORA="$CORPORA $c" ;;
            *) die "unknown corpus '$c' (known: source binaries random tiny million)" ;;
        esac
    done
    CORPORA=${CORPORA# }
else
    CORPORA=$ALL_CORPORA
fi

# ---------------------------------------------------------------------------------------------- tools
ensure_tools() {
    local missing=()
    command -v restic >/dev/null || missing+=(restic)
    command -v borg >/dev/null || missing+=(borgbackup)
    [ -x /usr/bin/time ] || missing+=(time)
    command -v git >/dev/null || missing+=(git)
    command -v openssl >/dev/null || missing+=(openssl)
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
        log "installing ${missing[*]} with apt-get"
        if ! apt-get install -y "${missing[@]}" >"$BENCH_DIR/apt.log" 2>&1; then
            apt-get update >>"$BENCH_DIR/apt.log" 2>&1 || true
            apt-get install -y "${missing[@]}" >>"$BENCH_DIR/apt.log" 2>&1 || { tail -20 "$BENCH_DIR/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $BENCH_DIR/apt.log)"; }
        fi
    fi
    for c in python3 timeout diff du find xargs; do command -v "$c" >/dev/null || die "$c not found"; done
}

build_haven() {
    mkdir -p "$BENCH_DIR/bin"
    if [ "$BUILD" = 1 ]; then
        log "building Haven (swift build -c release) — this takes a few minutes"
        local attempt=1
        until (cd "$ROOT" && swift build -c release >"$BENCH_DIR/build.log" 2>&1); do
            # Others may be editing the sources while we build; that aborts the build, so try again.
            if [ $attempt -lt 4 ] && grep -q "was modified during the build" "$BENCH_DIR/build.log"; then
                log "sources changed during the build; building again (attempt $((attempt += 1)))"
                sleep 5
                continue
            fi
            tail -30 "$BENCH_DIR/build.log" >&2
            die "swift build -c release failed (log: $BENCH_DIR/build.log)"
        done
    fi
    [ -x "$ROOT/.build/release/haven" ] || die "$ROOT/.build/release/haven not found (build it or drop --no-build)"
    # A private copy, so a concurrent rebuild cannot swap the binary in the middle of a run.
    cp "$ROOT/.build/release/haven" "$BENCH_DIR/bin/haven"
    HAVEN="$BENCH_DIR/bin/haven"
}

# -------------------------------------------------------------------------------------------- corpora
cdir() { echo "$BENCH_DIR/corpora/$1-$MODE"; }

describe() {
    case "$1" in
        source) echo "Swift package sources (git archive), two tags of swift-nio/-crypto/-syntax$([ "$MODE" = full ] && echo ' + the other local packages unchanged')" ;;
        binaries) echo "Swift toolchain files ($TOOLCHAIN_LIB$([ "$MODE" = quick ] && echo ', first 300 MB')); next = ~5% changed" ;;
        random) echo "incompressible data (aes-256-ctr stream) in 32 files; next = ~5% changed" ;;
        tiny) echo "tiny text files (0–1 KB) in 200-file directories; next = ~5% changed" ;;
        million) echo "1,000,000 tiny files (memory); next = ~5% changed" ;;
    esac
}

# Packages whose last two tags give version 1 and 2; all other local packages go in unchanged (full mode).
source_packages() {
    local p
    if [ "$MODE" = quick ]; then echo swift-nio swift-crypto swift-syntax; return; fi
    for p in "$PKGS"/*.git; do basename "$p" .git; done
}

prepare_source() {
    local dir=$1 p repo tags t1 t2
    mkdir -p "$dir/v1" "$dir/v2"
    for p in $(source_packages); do
        repo="$PKGS/$p.git"
        [ -d "$repo" ] || die "missing $repo"
        tags=$(git -C "$repo" tag | sort -V | tail -2)
        [ -n "$tags" ] || { log "skipping $p: no tags"; continue; }
        t1=$(echo "$tags" | head -1); t2=$(echo "$tags" | tail -1)
        git -C "$repo" archive --prefix="$p/" "$t1" | tar -x -C "$dir/v1"
        git -C "$repo" archive --prefix="$p/" "$t2" | tar -x -C "$dir/v2"
        echo "$p $t1 $t2" >>"$dir/tags.txt"
    done
}

prepare_random() {
    local dir=$1 total=$2
    mkdir -p "$dir/v1"
    { openssl enc -aes-256-ctr -pass pass:haven-bench -nosalt </dev/zero 2>/dev/null || true; } \
        | head -c "$total" | split -b $((total / 32)) -d -a 3 - "$dir/v1/blob."
}

prepare_corpus() {
    local name=$1 dir
    dir=$(cdir "$name")
    [ -f "$dir/ready" ] && return 0
    log "preparing corpus $name in $dir"
    rm -rf "$dir"; mkdir -p "$dir"
    case "$name" in
        source) prepare_source "$dir" ;;
        binaries)
            [ -d "$TOOLCHAIN_LIB" ] || die "$TOOLCHAIN_LIB not found"
            if [ "$MODE" = quick ]; then python3 "$HERE/corpus.py" copy-subset "$TOOLCHAIN_LIB" "$dir/v1" $((300 << 20)) >/dev/null
            else cp -a "$TOOLCHAIN_LIB" "$dir/v1"; fi ;;
        random) prepare_random "$dir" $([ "$MODE" = quick ] && echo $((128 << 20)) || echo $((1 << 30))) ;;
        tiny) python3 "$HERE/corpus.py" tiny "$dir/v1" $([ "$MODE" = quick ] && echo 20000 || echo 200000) 1 ;;
        million) python3 "$HERE/corpus.py" tiny "$dir/v1" 1000000 7 ;;
    esac
    touch "$dir/ready"
}

# Turns the live tree (a copy of v1) into the next version.
next_version() {
    local name=$1 live=$2 dir
    dir=$(cdir "$name")
    if [ "$name" = source ]; then python3 "$HERE/corpus.py" sync "$dir/v2" "$live"
    else python3 "$HERE/corpus.py" mutate "$live" 2; fi
}

# ------------------------------------------------------------------------------------------ measuring
# timed ROUND CORPUS TOOL STEP CMD... : runs CMD under /usr/bin/time (in $STEP_CWD if set), records a row.
timed() {
    local round=$1 corpus=$2 tool=$3 step=$4; shift 4
    local tf="$LOGDIR/r$round-$corpus-$tool-$step.time" lf="$LOGDIR/r$round-$corpus-$tool-$step.log" rc=0
    ( cd "${STEP_CWD:-$BENCH_DIR}" && exec /usr/bin/time -f '%e %U %S %M' -o "$tf" timeout "$STEP_TIMEOUT" "$@" ) >"$lf" 2>&1 || rc=$?
    local wall user sys rss
    read -r wall user sys rss < <(tail -1 "$tf" 2>/dev/null || echo "0 0 0 0")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$corpus" "$tool" "$step" "${wall:-0}" "${user:-0}" "${sys:-0}" "${rss:-0}" "$rc" >>"$OUT/steps.tsv"
    local ok=0
    case "$tool:$rc" in *:0|haven:3|restic:3|borg:1) ok=1 ;; esac
    if [ $ok = 1 ]; then
        log "  $tool $step: ${wall}s wall, $(python3 -c "print(round($user+$sys,2))") s CPU, $((rss / 1024)) MB$([ "$rc" != 0 ] && echo " (exit $rc: warnings)")"
        return 0
    fi
    {
        echo "!!!!!!!!!!!!!!!! $tool $step FAILED on $corpus (round $round), exit $rc$([ "$rc" = 124 ] && echo ' (timeout)')"
        echo "!!!!!!!!!!!!!!!! command: $*"
        tail -15 "$lf" | sed 's/^/!!! /'
    } >&2
    echo "$tool $step on $corpus (round $round): exit $rc: $* — $(tail -3 "$lf" | tr '\n' ' ')" >>"$OUT/failures.txt"
    return 1
}

record_size() { printf '%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$(du -sb "$5" | cut -f1)" >>"$OUT/sizes.tsv"; }

# The tool's command for a step, as words on stdout-free arrays.
tool_cmd() {
    local tool=$1 step=$2 repo=$3 live=$4
    case "$tool:$step" in
        haven:init) CMD=("$HAVEN" -r "$repo" init) ;;
        haven:backup) CMD=("$HAVEN" -r "$repo" backup "$live") ;;
        haven:restore) CMD=("$HAVEN" -r "$repo" restore latest --target "$RESTORE") ;;
        haven:check) CMD=("$HAVEN" -r "$repo" check --read-data) ;;
        haven:forget_prune) CMD=("$HAVEN" -r "$repo" forget --keep-last 1 --prune) ;;
        restic:init) CMD=(restic -r "$repo" init --repository-version 2) ;;
        restic:backup) CMD=(restic -r "$repo" backup "$live") ;;
        restic:restore) CMD=(restic -r "$repo" restore latest --target "$RESTORE") ;;
        restic:check) CMD=(restic -r "$repo" check --read-data) ;;
        restic:forget_prune) CMD=(restic -r "$repo" forget --keep-last 1 --prune) ;;
        borg:init) CMD=(borg init -e repokey "$repo") ;;
        borg:backup) CMD=(borg create --compression zstd,3 "$repo::snap$BORG_N" "$live") ;;
        borg:restore) CMD=(borg extract "$repo::snap$BORG_N") ;;
        borg:check) CMD=(borg check --verify-data "$repo") ;;
        borg:forget_prune) CMD=(sh -c 'borg prune --keep-last 1 "$1" && borg compact "$1"' prune "$repo") ;;
    esac
}

run_tool() {
    local round=$1 corpus=$2 tool=$3 dir live repo tmp
    dir=$(cdir "$corpus")
    live="$BENCH_DIR/live/$corpus"        # the same path for every tool, so parent snapshots match
    repo="$BENCH_DIR/repos/$tool-$corpus"
    tmp="$BENCH_DIR/tmp/$tool-$corpus"
    RESTORE="$BENCH_DIR/restore/$tool-$corpus"
    rm -rf "$live" "$repo" "$tmp" "$RESTORE"
    mkdir -p "$BENCH_DIR/live" "$BENCH_DIR/repos" "$tmp/cache" "$tmp/borg" "$RESTORE"
    cp -a "$dir/v1" "$live"
    find "$live" -type f -print0 | xargs -0 -r cat >/dev/null    # warm the page cache
    export RESTIC_CACHE_DIR="$tmp/cache" XDG_CACHE_HOME="$tmp/cache" BORG_BASE_DIR="$tmp/borg"
    log "round $round / $corpus / $tool"
    BORG_N=0
    tool_cmd "$tool" init "$repo" "$live"; timed "$round" "$corpus" "$tool" init "${CMD[@]}" || return 0
    BORG_N=1
    tool_cmd "$tool" backup "$repo" "$live"; timed "$round" "$corpus" "$tool" backup1 "${CMD[@]}" || return 0
    record_size "$round" "$corpus" "$tool" after_first "$repo"
    BORG_N=2
    tool_cmd "$tool" backup "$repo" "$live"; timed "$round" "$corpus" "$tool" backup_unchanged "${CMD[@]}" || return 0
    next_version "$corpus" "$live" >>"$LOGDIR/r$round-$corpus-$tool-next.log"
    if [ ! -f "$OUT/v2stats-$corpus" ]; then python3 "$HERE/corpus.py" stats "$live" >"$OUT/v2stats-$corpus"; fi
    find "$live" -type f -print0 | xargs -0 -r cat >/dev/null
    BORG_N=3
    tool_cmd "$tool" backup "$repo" "$live"; timed "$round" "$corpus" "$tool" backup_next "${CMD[@]}" || return 0
    record_size "$round" "$corpus" "$tool" after_backups "$repo"
    tool_cmd "$tool" restore "$repo" "$live"
    if STEP_CWD="$RESTORE" timed "$round" "$corpus" "$tool" restore "${CMD[@]}"; then
        local dl="$LOGDIR/r$round-$corpus-$tool-diff.log"
        if diff -r --no-dereference "$RESTORE$live" "$live" >"$dl" 2>&1; then
            printf '%s\t%s\t%s\tok\t\n' "$round" "$corpus" "$tool" >>"$OUT/verify.tsv"
        else
            local n; n=$(wc -l <"$dl")
            printf '%s\t%s\t%s\tDIFFERS\t%s lines of diff, first: %s\n' "$round" "$corpus" "$tool" "$n" "$(head -1 "$dl" | cut -c1-300)" >>"$OUT/verify.tsv"
            {
                echo "!!!!!!!!!!!!!!!! RESTORE DIFFERS: $tool on $corpus (round $round): diff -r $RESTORE$live $live"
                head -10 "$dl" | sed 's/^/!!! /'
            } >&2
            echo "$tool restore on $corpus (round $round) differs from the source: $(head -3 "$dl" | tr '\n' ' ')" >>"$OUT/failures.txt"
        fi
    fi
    rm -rf "$RESTORE"
    tool_cmd "$tool" check "$repo" "$live"; timed "$round" "$corpus" "$tool" check "${CMD[@]}" || true
    tool_cmd "$tool" forget_prune "$repo" "$live"
    if timed "$round" "$corpus" "$tool" forget_prune "${CMD[@]}"; then record_size "$round" "$corpus" "$tool" after_prune "$repo"; fi
    rm -rf "$live" "$repo" "$tmp"
}

# --------------------------------------------------------------------------------------------- main
mkdir -p "$BENCH_DIR"
START=$SECONDS
ensure_tools
build_haven
OUT="$BENCH_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)"
LOGDIR="$OUT/logs"
mkdir -p "$LOGDIR"
export HAVEN_PASSWORD=bench-password RESTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
log "mode $MODE, $ROUNDS round(s), corpora: $CORPORA; raw results in $OUT"

for c in $CORPORA; do
    [ "$c" = million ] && [ "$MODE" = quick ] && log "note: million is always 1,000,000 files, also with --quick"
    prepare_corpus "$c"
done

for round in $(seq 1 "$ROUNDS"); do
    for c in $CORPORA; do
        for tool in haven restic borg; do run_tool "$round" "$c" "$tool"; done
    done
done

{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'nproc\t%s\n' "$(nproc)"
    printf 'memory\t%s\n' "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    printf 'cpu\t%s\n' "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    printf 'kernel\t%s\n' "$(uname -r)"
    printf 'haven_version\t%s\n' "$("$HAVEN" --version 2>&1 | head -1)"
    printf 'haven_commit\t%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$ROOT" diff --quiet HEAD -- Sources Package.swift 2>/dev/null || echo ' + uncommitted changes')"
    printf 'restic_version\t%s\n' "$(restic version | head -1)"
    printf 'borg_version\t%s\n' "$(borg --version | head -1)"
    printf 'mode\t%s\n' "$MODE"
    printf 'rounds\t%s\n' "$ROUNDS"
    printf 'corpora\t%s\n' "$CORPORA"
    printf 'elapsed\t%s\n' "$(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s"
} >"$OUT/meta.tsv"
for c in $CORPORA; do
    read -r f1 _ b1 < <(python3 "$HERE/corpus.py" stats "$(cdir "$c")/v1")
    read -r f2 _ b2 < <(cat "$OUT/v2stats-$c" 2>/dev/null || echo "0 0 0")
    desc=$(describe "$c")
    [ -f "$(cdir "$c")/tags.txt" ] && desc="$desc ($(awk '$2 != $3 {printf "%s%s %s→%s", (n++?", ":""), $1, $2, $3}' "$(cdir "$c")/tags.txt"))"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$c" "$desc" "$f1" "$b1" "$f2" "$b2" >>"$OUT/corpora.tsv"
done

rc=0
python3 "$HERE/report.py" "$OUT" "$HERE/RESULTS.md" || rc=$?
cp "$HERE/RESULTS.md" "$OUT/RESULTS.md"
log "wrote $HERE/RESULTS.md (raw data and logs: $OUT) in $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s"
if [ -s "$OUT/failures.txt" ]; then
    echo "bench: FAILURES:" >&2; sed 's/^/  /' "$OUT/failures.txt" >&2
fi
exit $rc
