#!/usr/bin/env bash
# selftest.sh — proves the workloads' own checks, without Ferry.
#
#   bash test/workloads/selftest.sh [-v] [filter]
#
# 1. Builds everything (make -s).
# 2. Positive cases: every workload (every mode) is started, its .ready file is
#    awaited (short polling, timeout), optionally disturbed in a way that must
#    NOT change its state (SIGSTOP/SIGCONT, a ptrace attach/detach by gdb),
#    then sent SIGTERM: the result must be exactly "PASS", the exit status 0,
#    stdout empty, stderr empty (debug off), no temp files left behind.
# 3. Negative cases: between READY and SIGTERM an outside action breaks one
#    piece of state (a byte of memory through /proc/PID/mem, a byte written
#    into its pipe through /proc/PID/fd/N, an extra signal, a renice, a
#    register, a restart code or the umask changed through gdb):
#    the result must be "FAIL <reason>" naming that piece of state, exit 0.
# `filter` runs only the cases whose label contains it. Requires root
# (identity drops to uid 1000); python3 for /proc/PID/mem; gdb for the
# ptrace cases (skipped, and reported, when missing). (prlimit on another
# process needs CAP_SYS_RESOURCE, which these machines lack, so rlimits are
# not used as a negative case.)
set -u

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$HERE/bin
VERBOSE=0
if [ "${1:-}" = "-v" ]; then VERBOSE=1; shift; fi
FILTER=${1:-}

if [ "$(id -u)" != 0 ]; then
    echo "selftest.sh: must run as root" >&2
    exit 2
fi
make -s -C "$HERE" || { echo "selftest.sh: build failed" >&2; exit 1; }

TMPROOT=$(mktemp -d /tmp/ferry-wl-selftest.XXXXXX)
STARTED=()
cleanup() {
    for p in "${STARTED[@]}"; do
        kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
    done
    wait 2>/dev/null
    rm -rf "$TMPROOT"
}
trap cleanup EXIT

NPASS=0
NFAIL=0
NSKIP=0
FAILED=()
SKIPPED=()
HAVE_GDB=0; command -v gdb >/dev/null && HAVE_GDB=1
HAVE_PY=0; command -v python3 >/dev/null && HAVE_PY=1

# poll_until <timeout-seconds> <command...>: true once the command succeeds
poll_until() {
    local limit=$(( $1 * 100 )) i=0
    shift
    while ! "$@"; do
        i=$((i + 1))
        [ $i -ge $limit ] && return 1
        sleep 0.01
    done
}

proc_state() { awk '{print $3}' "/proc/$1/stat" 2>/dev/null; }
is_stopped() { [ "$(proc_state "$PID")" = T ]; }
file_exists() { [ -f "$1" ]; }

# debug value "key=0x..." printed by the workload on stderr
debug_addr() { grep -o "$1=0x[0-9a-f]*" "$DIR/stderr" | head -1 | cut -d= -f2; }

# flip one byte of the workload's memory through /proc/PID/mem
flip_byte() {
    python3 - "$PID" "$1" <<'EOF'
import os, sys
pid, addr = int(sys.argv[1]), int(sys.argv[2], 0)
fd = os.open("/proc/%d/mem" % pid, os.O_RDWR)
b = os.pread(fd, 1, addr)
os.pwrite(fd, bytes([b[0] ^ 0x5a]), addr)
os.close(fd)
EOF
}

gdb_batch() { gdb -q -nx -p "$PID" -batch "$@" >"$DIR/gdb.log" 2>&1; }

# ---- actions run between READY and SIGTERM (PID, DIR set) -------------------
act_none() { :; }
act_stopcont() {
    kill -STOP "$PID" && poll_until 5 is_stopped || { echo "did not stop"; return 1; }
    kill -CONT "$PID"
}
act_ptrace() { gdb_batch -ex 'info registers rip'; }
act_counter_flip() {
    local a; a=$(debug_addr buffer) || return 1
    flip_byte $((a + 12345))
}
act_memory_flip_pattern() {
    local a; a=$(debug_addr anon16) || return 1
    flip_byte $((a + 6 * 4096 + 100))
}
act_memory_flip_zero() {
    local a; a=$(debug_addr anon16) || return 1
    flip_byte $((a + 2500 * 4096 + 7))
}
act_memory_flip_ro() {
    local a; a=$(debug_addr ro) || return 1
    flip_byte $((a + 4096 * 3 + 1))
}
# Simulate a page that pre-copy failed to resend: save churn page 700, wait
# until the loop has rewritten it completely (its last bytes changed), then put
# the old generation back.
act_memory_stale_churn() {
    local a; a=$(debug_addr churn) || return 1
    python3 - "$PID" $((a + 700 * 4096)) <<'EOF2'
import os, sys, time
pid, page = int(sys.argv[1]), int(sys.argv[2])
fd = os.open("/proc/%d/mem" % pid, os.O_RDWR)
old = os.pread(fd, 4096, page)
deadline = time.monotonic() + 10
while os.pread(fd, 8, page + 4088) == old[4088:]:
    if time.monotonic() > deadline:
        sys.exit("churn page 700 was never rewritten")
    time.sleep(0.0005)
os.pwrite(fd, old, page)
os.close(fd)
EOF2
}
act_gdb_mmap() { gdb_batch -ex 'call (void *)mmap(0, 8192, 3, 0x22, -1, 0)'; }
act_fds_pipe_byte() { printf X >"/proc/$PID/fd/20"; }
act_gdb_close_29() { gdb_batch -ex 'call (int)close(29)'; }
act_signals_hup() { kill -HUP "$PID"; }
act_gdb_eintr() { gdb_batch -ex 'set $orig_rax = -1' -ex 'set $rax = -4'; }
act_gdb_mxcsr() { gdb_batch -ex 'set $mxcsr = 0x1f80'; }
act_signals_extra_rt() { kill -s RTMIN+3 "$PID"; }
act_identity_umask() { gdb_batch -ex 'call (int)umask(022)'; }
act_identity_renice() { renice -n 9 -p "$PID" >/dev/null; }
act_gdb_leak_restart() { gdb_batch -ex 'set $orig_rax = -1'; }
act_gdb_r12() { gdb_batch -ex 'set $r12 = 0x1234'; }

# ---- process trees and threads (tree, session, zombie, threads) ----------------
# every descendant of $1 (through /proc/PID/task/TID/children)
descendants() {
    local c
    for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        echo "$c"
        descendants "$c"
    done
}
# SIGSTOP every process of the tree, wait until all are stopped, SIGCONT them
act_tree_stopcont() {
    local pids
    pids="$PID $(descendants "$PID")"
    all_stopped() {
        local p s
        for p in $pids; do
            s=$(proc_state "$p")
            case "$s" in T|Z|X|"") ;; *) return 1 ;; esac
        done
    }
    kill -STOP $pids 2>/dev/null
    poll_until 5 all_stopped || { kill -CONT $pids 2>/dev/null; echo "tree did not stop"; return 1; }
    kill -CONT $pids
}
# pid of a role from the root's debug lines: "role N 'name' pid=PID ..."
role_pid() { grep -o "'$1' pid=[0-9]*" "$DIR/stderr" | head -1 | cut -d= -f2; }
# SIGKILL the process of role $ROLE
act_kill_role() {
    local p; p=$(role_pid "$ROLE")
    [ -n "$p" ] || { echo "no pid for role '$ROLE'"; return 1; }
    kill -KILL "$p"
}
# 16 bytes that are not the next record, written into node 0.0's stream (in node 0)
act_tree_inject() {
    local p fd
    p=$(role_pid 'node 0')
    fd=$(grep -o "'node 0.0' pid=.*parent_fd=[0-9]*" "$DIR/stderr" | grep -o 'parent_fd=[0-9]*' | cut -d= -f2)
    [ -n "$p" ] && [ -n "$fd" ] || { echo "no pid/fd for node 0"; return 1; }
    printf XXXXXXXXXXXXXXXX >"/proc/$p/fd/$fd"
}
# node 0 reopens the shared file on the same fd: its own description, offset 0
act_gdb_tree_reopen() {
    local p fd path
    p=$(role_pid 'node 0')
    fd=$(grep -o 'shared_fd=[0-9]*' "$DIR/stderr" | cut -d= -f2)
    path=$(grep -o 'shared_fd=[0-9]* path=[^ ]*' "$DIR/stderr" | sed 's/.* path=//')
    gdb -q -nx -p "$p" -batch -ex "call (int)dup2((int)open(\"$path\", 2), $fd)" >"$DIR/gdb.log" 2>&1
}
act_gdb_reap_zombie() { gdb_batch -ex "call (int)waitpid($(role_pid zombie), 0, 0)"; }
act_threads_rt2() { kill -s RTMIN+2 "$PID"; }
# gdb numbers threads in creation order: thread 2 is worker 1, thread 3 worker 2
act_gdb_thread_rename() { gdb_batch -ex 'thread 3' -ex 'call (int)prctl(15, "hacked", 0, 0, 0)'; }
act_gdb_rseq_unregister() {
    gdb_batch -ex 'thread 2' -ex 'call (long)syscall(334, (char *)$fs_base + (long)__rseq_offset, 32, 1, 0x53053053)'
}
act_gdb_robust_list() { gdb_batch -ex 'thread 2' -ex 'call (long)syscall(273, 0, 24)'; }

# ---- one case ------------------------------------------------------------------
# run_case <label> <expect: PASS | FAIL:substring> <action> <bin> [args...]
#   @DIR@ in args is replaced by the case's temp dir; STDIN_FIFO=1 gives the
#   workload a FIFO opened O_RDWR as stdin (never delivers data or EOF).
run_case() {
    local label=$1 expect=$2 action=$3
    shift 3
    if [ -n "$FILTER" ] && [[ "$label" != *"$FILTER"* ]]; then return; fi
    case "$action" in
        act_ptrace|act_gdb_*|act_identity_umask)
            if [ $HAVE_GDB = 0 ]; then NSKIP=$((NSKIP + 1)); SKIPPED+=("$label (no gdb)"); return; fi ;;
        act_*flip*|act_memory_stale_churn)
            if [ $HAVE_PY = 0 ]; then NSKIP=$((NSKIP + 1)); SKIPPED+=("$label (no python3)"); return; fi ;;
    esac
    DIR=$(mktemp -d "$TMPROOT/case.XXXXXX")
    local res=$DIR/result args=() a debug=0
    for a in "$@"; do args+=("${a//@DIR@/$DIR}"); done
    [ "$expect" != PASS ] && debug=1
    local stdin=/dev/null
    if [ "${STDIN_FIFO:-0}" = 1 ]; then mkfifo "$DIR/stdin.fifo"; stdin=$DIR/stdin.fifo; fi
    if [ $debug = 1 ]; then
        FERRY_WL_DEBUG=1 "${args[0]}" "$res" "${args[@]:1}" 0<>"$stdin" >"$DIR/stdout" 2>"$DIR/stderr" &
    else
        env -u FERRY_WL_DEBUG "${args[0]}" "$res" "${args[@]:1}" 0<>"$stdin" >"$DIR/stdout" 2>"$DIR/stderr" &
    fi
    PID=$!
    STARTED+=("$PID")
    local problem="" status=""
    if ! poll_until 10 file_exists "$res.ready"; then
        problem="no READY within 10 s${res:+ (result: $(cat "$res" 2>/dev/null))}"
    elif [ "$(cat "$res.ready")" != "READY $PID" ]; then
        problem="ready file says '$(cat "$res.ready")', expected 'READY $PID'"
    else
        local out
        if ! out=$($action 2>&1); then problem="action $action failed: $out"; fi
    fi
    kill -TERM "$PID" 2>/dev/null
    if ! poll_until 20 file_exists "$res"; then
        [ -z "$problem" ] && problem="no result within 20 s of SIGTERM"
        kill -KILL "$PID" 2>/dev/null
    fi
    wait "$PID" 2>/dev/null
    status=$?
    local result
    result=$(cat "$res" 2>/dev/null)
    if [ -z "$problem" ]; then
        if [ "$status" != 0 ]; then
            problem="exit status $status (result: $result)"
        elif [ "$expect" = PASS ] && [ "$result" != PASS ]; then
            problem="expected PASS, got: $result"
        elif [ "$expect" != PASS ]; then
            local want=${expect#FAIL:}
            if [[ "$result" != "FAIL "* ]]; then
                problem="expected a FAIL mentioning '$want', got: $result"
            elif [[ "$result" != *"$want"* ]]; then
                problem="FAIL does not mention '$want': $result"
            fi
        fi
    fi
    if [ -z "$problem" ] && [ -s "$DIR/stdout" ]; then
        problem="wrote to stdout: $(head -c 200 "$DIR/stdout")"
    fi
    if [ -z "$problem" ] && [ $debug = 0 ] && [ -s "$DIR/stderr" ]; then
        problem="wrote to stderr without FERRY_WL_DEBUG: $(head -c 200 "$DIR/stderr")"
    fi
    if [ -z "$problem" ] && ls "$DIR"/*.tmp >/dev/null 2>&1; then
        problem="left temp files: $(ls "$DIR"/*.tmp)"
    fi
    if [ -z "$problem" ]; then
        NPASS=$((NPASS + 1))
        if [ $VERBOSE = 1 ] || [ "$expect" != PASS ]; then
            printf 'ok    %-44s %s\n' "$label" "$result"
        else
            printf 'ok    %s\n' "$label"
        fi
    else
        NFAIL=$((NFAIL + 1))
        FAILED+=("$label: $problem")
        printf 'FAIL  %-44s %s\n' "$label" "$problem"
        if [ $VERBOSE = 1 ] && [ -s "$DIR/stderr" ]; then sed 's/^/      | /' "$DIR/stderr"; fi
    fi
}

W=$BIN
echo "== positive: nothing happens to the process =="
for act in none stopcont ptrace; do
    run_case "counter/$act" PASS act_$act "$W/counter"
    run_case "counter-static/$act" PASS act_$act "$W/counter-static"
    run_case "counter 0us/$act" PASS act_$act "$W/counter" 0
    run_case "sleeper/$act" PASS act_$act "$W/sleeper"
    run_case "sleeper 1s/$act" PASS act_$act "$W/sleeper" 1
    for m in pipe poll pause; do
        run_case "reader $m/$act" PASS act_$act "$W/reader" "$m"
    done
    STDIN_FIFO=1 run_case "reader stdin/$act" PASS act_$act "$W/reader" stdin
    run_case "memory/$act" PASS act_$act "$W/memory" @DIR@
    run_case "memory no-churn/$act" PASS act_$act "$W/memory" @DIR@ 0
    for l in auto sse avx avx512; do
        if [ $l = avx512 ] && ! grep -qw avx512bw /proc/cpuinfo; then continue; fi
        if [ $l = avx ] && ! grep -qw avx /proc/cpuinfo; then continue; fi
        run_case "cpu $l/$act" PASS act_$act "$W/cpu" "$l"
    done
    run_case "signals/$act" PASS act_$act "$W/signals"
    run_case "identity/$act" PASS act_$act "$W/identity" @DIR@
    run_case "fds/$act" PASS act_$act "$W/fds" @DIR@
done
for m in tty iouring inotify perf userfaultfd; do
    run_case "unsupported $m/none" PASS act_none "$W/unsupported" "$m" @DIR@
    run_case "unsupported $m/stopcont" PASS act_stopcont "$W/unsupported" "$m" @DIR@
done
for act in none stopcont ptrace tree_stopcont; do
    run_case "threads/$act" PASS act_$act "$W/threads"
    run_case "threads 1/$act" PASS act_$act "$W/threads" 1
    run_case "threads 16/$act" PASS act_$act "$W/threads" 16
    run_case "tree/$act" PASS act_$act "$W/tree"
    run_case "tree mixed/$act" PASS act_$act "$W/tree" 2 2 mixed
    run_case "tree 3x3 mixed/$act" PASS act_$act "$W/tree" 3 3 mixed
    run_case "session/$act" PASS act_$act "$W/session"
    run_case "zombie/$act" PASS act_$act "$W/zombie"
done

echo "== negative: an outside action breaks state, the check must say so =="
run_case "counter/flip buffer byte" "FAIL:1 MiB buffer" act_counter_flip "$W/counter"
run_case "counter-static/flip buffer byte" "FAIL:1 MiB buffer" act_counter_flip "$W/counter-static"
run_case "memory/flip anon pattern byte" "FAIL:anon16 page 6 (pattern)" act_memory_flip_pattern "$W/memory" @DIR@
run_case "memory/write untouched zero page" "FAIL:anon16 page 2500 (never touched)" act_memory_flip_zero "$W/memory" @DIR@
run_case "memory/flip read-only region byte" "FAIL:read-only region" act_memory_flip_ro "$W/memory" @DIR@
run_case "memory/stale churn page (missed dirty page)" "FAIL:page holds generation" act_memory_stale_churn "$W/memory" @DIR@
run_case "memory/extra mapping made by a tracer" "FAIL:/proc/self/maps" act_gdb_mmap "$W/memory" @DIR@
run_case "fds/byte written into the pipe" "FAIL:pipe: expected 3000 unread bytes found 3001" act_fds_pipe_byte "$W/fds" @DIR@
run_case "fds/fd 29 closed by a tracer" "FAIL:open fds" act_gdb_close_29 "$W/fds" @DIR@
run_case "signals/extra SIGRTMIN+3 from outside" "FAIL:SIGRTMIN+3" act_signals_extra_rt "$W/signals"
run_case "signals/SIGHUP from outside" "FAIL:a handler ran before the signals were unblocked" act_signals_hup "$W/signals"
run_case "identity/umask changed by a tracer" "FAIL:Umask" act_identity_umask "$W/identity" @DIR@
run_case "identity/reniced" "FAIL:nice" act_identity_renice "$W/identity" @DIR@
run_case "sleeper/-516 leaked by a tracer" "FAIL:-516" act_gdb_leak_restart "$W/sleeper"
run_case "sleeper/EINTR without a signal" "FAIL:EINTR without a signal" act_gdb_eintr "$W/sleeper"
run_case "sleeper eintr-ok/EINTR without a signal" PASS act_gdb_eintr "$W/sleeper" 3600 eintr-ok
run_case "reader pipe/-512 leaked by a tracer" "FAIL:ERESTARTSYS" act_gdb_leak_restart "$W/reader" pipe
run_case "reader pause/-514 leaked by a tracer" "FAIL:ERESTARTNOHAND" act_gdb_leak_restart "$W/reader" pause
run_case "cpu/r12 changed by a tracer" "FAIL:register r12" act_gdb_r12 "$W/cpu"
run_case "cpu/MXCSR changed by a tracer" "FAIL:MXCSR" act_gdb_mxcsr "$W/cpu"
ROLE='node 0.0' run_case "tree/leaf SIGKILLed" "FAIL:process 'node 0.0' vanished" act_kill_role "$W/tree"
ROLE='node 0' run_case "tree/inner node SIGKILLed" "FAIL:process 'node 0' vanished" act_kill_role "$W/tree"
ROLE='node 0.0' run_case "tree mixed/seqpacket leaf SIGKILLed" "FAIL:process 'node 0.0' vanished" act_kill_role "$W/tree" 2 2 mixed
run_case "tree/record injected into a stream" "FAIL:stream from 'node 0.0'" act_tree_inject "$W/tree"
run_case "tree/shared file reopened by a tracer" "FAIL:shared file offset is 0" act_gdb_tree_reopen "$W/tree"
ROLE='pipe 2' run_case "session/pipeline member SIGKILLed" "FAIL:process 'pipe 2' vanished" act_kill_role "$W/session"
ROLE='orphan' run_case "session/orphan SIGKILLed" "FAIL:process 'orphan' vanished" act_kill_role "$W/session"
ROLE='leader' run_case "session/session leader SIGKILLed" "FAIL:process 'leader' vanished" act_kill_role "$W/session"
ROLE='live' run_case "zombie/live child SIGKILLed" "FAIL:process 'live' vanished" act_kill_role "$W/zombie"
run_case "zombie/zombie reaped by a tracer" "FAIL:the zombie" act_gdb_reap_zombie "$W/zombie"
run_case "threads/SIGRTMIN+2 sent to the process" "FAIL:ShdPnd" act_threads_rt2 "$W/threads"
run_case "threads/thread renamed by a tracer" "FAIL:comm is 'hacked'" act_gdb_thread_rename "$W/threads"
run_case "threads/rseq unregistered by a tracer" "FAIL:rseq registration is lost" act_gdb_rseq_unregister "$W/threads"
run_case "threads/robust list cleared by a tracer" "FAIL:get_robust_list" act_gdb_robust_list "$W/threads"

echo
echo "selftest: $NPASS ok, $NFAIL failed, $NSKIP skipped"
for f in "${SKIPPED[@]}"; do echo "  skipped: $f"; done
for f in "${FAILED[@]}"; do echo "  FAILED: $f"; done
[ $NFAIL = 0 ]
