#!/usr/bin/env bash
# Online charging under concurrency and a crash.
#
#  1. pgbench, 16 clients for 30 s: credit-control sessions (reserve, updates,
#     commit / release / abandon, retransmissions), one-shot events and
#     batches of them (duplicates from several clients at once, retries),
#     top-ups (retried references) and expiry sweeps on 50 accounts, 30% of it
#     on one hot account.  Every request is logged with its answer in the
#     request's own transaction (setup.sql).  Any client error (a deadlock, a
#     constraint) fails the test.  Then the invariants of check.sql must hold,
#     the traffic must have exercised every case they are about, and
#     selftest.sql shows that the checks catch a broken invariant.
#  2. The same traffic again; after 10 s the server is killed (kill -9 of the
#     postmaster and of all its processes at once, so that transactions in
#     flight die half done) and restarted.  Crash recovery must leave the
#     invariants intact; then the sessions the crash left open are committed,
#     a sample of the logged requests and events is sent again (the same
#     answers, nothing changed), and the invariants are checked again.
#
# It runs in a throwaway cluster of its own, configured like test/run.sh's:
# killing a server must not disturb the other tests' cluster (pg_cron jobs
# running there on their schedule).  The cluster has fsync = off and
# full_page_writes = off; both only matter when the operating system dies.
# Killing the server's processes keeps all they wrote in the OS page cache,
# so crash recovery replays a complete WAL onto untorn pages, exactly as after
# a real server crash.  synchronous_commit = off may lose the last commits a
# client was told about; the checks compare the database with itself (each
# request's log row shares its transaction), so that is fine.
#
# Needs PostgreSQL 15 with convbill installed; as root it runs the server as
# the postgres user.  Environment: STRESS_SECONDS (30), STRESS_CRASH_AFTER
# (10), STRESS_CLIENTS (16).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DB=convbill_stress
SECONDS_RUN=${STRESS_SECONDS:-30}
CRASH_AFTER=${STRESS_CRASH_AFTER:-10}
CLIENTS=${STRESS_CLIENTS:-16}
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

work=$(mktemp -d /tmp/convbill-stress.XXXXXX)
datadir=$work/data
serverlog=$work/server.log
cleanup() {
    [ -f "$datadir/postmaster.pid" ] && as_pg $PGBIN/pg_ctl -D "$datadir" -m immediate stop >/dev/null 2>&1
    rm -rf "$work"
}
trap cleanup EXIT
chmod 755 "$work"
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
as_pg $PGBIN/initdb -D "$datadir" -U postgres -A trust --no-sync >/dev/null
cat >> "$datadir/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$work'
port = 5432
max_connections = 40
fsync = off
synchronous_commit = off
full_page_writes = off
shared_buffers = '256MB'
max_wal_size = '4GB'
lc_messages = 'C'
deadlock_timeout = '200ms'
EOF
as_pg $PGBIN/pg_ctl -D "$datadir" -l "$serverlog" -w start >/dev/null
export PGHOST=$work PGPORT=5432 PGUSER=postgres PGDATABASE=$DB

# the server log's account of failed statements (a deadlock's processes and stacks)
server_errors() {
    grep -E -A14 'ERROR|PANIC|terminated by signal' "$serverlog" | grep -v -E 'LOG: +(checkpoint|statement)' | head -60
}

psql_q -d postgres -c "CREATE DATABASE $DB"
psql_q -f "$here/setup.sql" >/dev/null
psql_q -f "$here/check.sql" >/dev/null

# traffic RUN SECONDS: the pgbench mix; output in $work/pgbench.RUN
traffic() {
    local seed=$RANDOM$RANDOM
    echo "pgbench run $1: $CLIENTS clients, ${2}s, --random-seed=$seed"
    # pgbench 15 counts a deadlock as a failed transaction and goes on:
    # --verbose-errors prints it, and any failure fails the test
    $PGBIN/pgbench -n -c "$CLIENTS" -j 2 -T "$2" --random-seed="$seed" -D run="$1" -D seq=0 \
        --failures-detailed --verbose-errors \
        -f "$here/session.pgbench@60" -f "$here/event.pgbench@40" -f "$here/batch.pgbench@5" \
        -f "$here/admin.pgbench@10" -f "$here/late.pgbench@1" >"$work/pgbench.$1" 2>&1
}
summary() { grep -E '^(number of (transactions actually processed|failed transactions)|tps =)' "$1" | sed 's/^/  /'; }
check() {
    psql -X -At -v ON_ERROR_STOP=1 -c "SELECT stress.check($1)" 2>&1 || {
        echo "stress: invariants violated ($2)"; return 1; }
}
started=$(date +%s)
elapsed() { echo "  [$(( $(date +%s) - started ))s]"; }

# 1. concurrency
if ! traffic 1 "$SECONDS_RUN" || ! grep -q '^number of failed transactions: 0 ' "$work/pgbench.1"; then
    echo "stress: client errors (a deadlock, a constraint):"
    grep -E 'ERROR|DETAIL|CONTEXT|abort|failed' "$work/pgbench.1" | head -30
    echo "server log:"
    server_errors
    exit 1
fi
summary "$work/pgbench.1"
check true "after the concurrent run"
psql_q -f "$here/selftest.sql" || { echo "stress: the invariant checks missed a sabotage"; exit 1; }
echo "  the checks catch each of six sabotaged invariants"
elapsed

# 2. crash: kill -9 the server in the middle of the same traffic
traffic 2 "$((CRASH_AFTER + 10))" &
bench=$!
sleep "$CRASH_AFTER"
pm=$(head -1 "$datadir/postmaster.pid")
kill -STOP "$pm"                        # no new backends while we list them
children=$(ps -o pid= --ppid "$pm" | tr '\n' ' ')
echo "killing the postmaster ($pm) and its $(echo $children | wc -w) processes with SIGKILL"
kill -9 "$pm" $children
wait "$bench" || true                   # its clients lose the server: expected
if grep -q 'ERROR:' "$work/pgbench.2" || ! grep -q '^number of failed transactions: 0 ' "$work/pgbench.2"; then
    echo "stress: client errors in the crash run (losing the server is expected, errors are not):"
    grep -E 'ERROR|DETAIL|CONTEXT|failed' "$work/pgbench.2" | head -30
    echo "server log:"
    server_errors
    exit 1
fi
summary "$work/pgbench.2"
echo "  $(grep -c 'aborted in command' "$work/pgbench.2" || true) clients lost the server"
for _ in $(seq 1 100); do
    alive=0
    for p in $pm $children; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive -eq 0 ] && break
    sleep 0.1
done
t0=$(date +%s%N)
as_pg $PGBIN/pg_ctl -D "$datadir" -l "$serverlog" -w -t 120 start >"$work/pg_ctl" 2>&1 || {
    cat "$work/pg_ctl"; tail -20 "$serverlog"; echo "stress: the server did not come back"; exit 1; }
echo "restarted: crash recovery and start took $(( ($(date +%s%N) - t0) / 1000000 )) ms"
check false "after the crash and recovery"
psql -X -At -v ON_ERROR_STOP=1 -c "SELECT stress.after_crash(2, 600)"
check false "after completing and retransmitting after the crash"
echo "online stress: invariants hold under $CLIENTS clients and after a crash ($(( $(date +%s) - started ))s)"
