#!/bin/sh
# CTest driver: start meao-fcgi on a temporary socket (no nginx), check the
# start-up rules (stale socket removed, live socket not stolen), run
# fcgi_probe.py against it, stop it with SIGTERM and check it cleaned up and
# logged no sanitizer report. Usage: run_probe.sh MEAO_FCGI_BINARY
set -u
BIN=$1
HERE=$(cd "$(dirname "$0")" && pwd)
T=$(mktemp -d /tmp/meao-probe.XXXXXX)
PID=
fail() { echo "FAIL: $*"; [ -f "$T/fcgi.log" ] && tail -20 "$T/fcgi.log"; [ -n "$PID" ] && kill -9 "$PID" 2>/dev/null; rm -rf "$T"; exit 1; }
export MEAO_FCGI_SOCKET="$T/fcgi.sock" MEAO_DB_PATH="$T/meao.db" MEAO_PID_FILE="$T/fcgi.pid" \
       MEAO_LOG_FILE="$T/fcgi.log" MEAO_DEBUG_ROUTES=true MEAO_RATELIMIT_SHM="$T/rl.shm" MEAO_FCGI_WORKERS=2
# a stale socket (nobody listening) must be replaced
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$MEAO_FCGI_SOCKET" || fail "stale socket"
"$BIN" & PID=$!
for i in $(seq 100); do [ -s "$T/fcgi.pid" ] && break; sleep 0.05; done
[ -s "$T/fcgi.pid" ] || fail "responder did not start"
[ "$(stat -c %a "$MEAO_FCGI_SOCKET")" = 660 ] || fail "socket mode is not 0660"
# a live socket must not be stolen
"$BIN" 2>/dev/null && fail "a second responder started on a live socket"
python3 "$HERE/fcgi_probe.py" "$MEAO_FCGI_SOCKET" || fail "probe"
kill -TERM "$PID"
wait "$PID"; rc=$?
[ "$rc" -eq 0 ] || fail "exit status $rc after SIGTERM"
[ -e "$MEAO_FCGI_SOCKET" ] && fail "socket left behind"
[ -e "$T/fcgi.pid" ] && fail "pid file left behind"
grep -E "ERROR: (Address|Leak)Sanitizer|runtime error:" "$T/fcgi.log" && fail "sanitizer report"
grep -q "meao_at_SECRET" "$T/fcgi.log" && fail "a credential reached the log"
rm -rf "$T"
echo "responder probe ok"
