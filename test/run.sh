#!/usr/bin/env bash
# convbill's one runner for `make test`, `make demo`, `make bench` and `make fuzz`.
#
# On a fresh Debian 12 machine, as root, it installs what is missing from Debian's
# packages, builds and installs the extension, starts a private throwaway cluster
# (initdb in a temporary directory, Unix socket only, pg_cron preloaded, run as the
# `postgres` system user because PostgreSQL refuses to run as root), does its job and
# stops the cluster even on failure.
set -euo pipefail

mode=${1:?usage: test/run.sh test|demo|bench|fuzz}
cd "$(dirname "$0")/.."
top=$PWD

PGVER=15
PGBIN=/usr/lib/postgresql/$PGVER/bin
PACKAGES=(postgresql-$PGVER postgresql-server-dev-$PGVER postgresql-$PGVER-pgtap
          postgresql-$PGVER-cron libtap-parser-sourcehandler-pgtap-perl
          make gcc clang libclang-rt-14-dev chromium)
FUZZ_SECONDS_TEST=${FUZZ_SECONDS_TEST:-20}
FUZZ_SECONDS_LONG=${FUZZ_SECONDS_LONG:-600}

log() { printf '\n== %s\n' "$*"; }

ensure_packages() {
    local missing=() p
    for p in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing Debian packages: ${missing[*]} (run as root, or install them first)" >&2
        exit 1
    fi
    log "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
        apt-get update >/dev/null
        apt-get install -y --no-install-recommends "${missing[@]}"
    }
}

build_install() {
    log "building and installing convbill"
    make -s PG_CONFIG=$PGBIN/pg_config PG_CFLAGS="-Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-sign-compare" >/dev/null
    make -s PG_CONFIG=$PGBIN/pg_config install >/dev/null
}

# Run a command as the postgres system user when we are root.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

CLUSTER=""
stop_cluster() {
    if [ -n "$CLUSTER" ] && [ -f "$CLUSTER/data/postmaster.pid" ]; then
        as_pg $PGBIN/pg_ctl -D "$CLUSTER/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    [ -n "$CLUSTER" ] && rm -rf "$CLUSTER"
    return 0
}

start_cluster() {
    CLUSTER=$(mktemp -d /tmp/convbill-cluster.XXXXXX)
    trap stop_cluster EXIT
    chmod 755 "$CLUSTER"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$CLUSTER"
    log "starting a private cluster in $CLUSTER"
    as_pg $PGBIN/initdb -D "$CLUSTER/data" -U postgres -A trust --no-sync >/dev/null
    cat >> "$CLUSTER/data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$CLUSTER'
port = 5432
shared_preload_libraries = 'pg_cron'
cron.database_name = 'postgres'
cron.host = '$CLUSTER'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 60
shared_buffers = '512MB'
work_mem = '64MB'
maintenance_work_mem = '256MB'
max_wal_size = '4GB'
lc_messages = 'C'
EOF
    as_pg $PGBIN/pg_ctl -D "$CLUSTER/data" -l "$CLUSTER/server.log" -w start >/dev/null
    export PGHOST=$CLUSTER PGPORT=5432 PGUSER=postgres
}

run_regress() {
    log "pg_regress suite"
    rm -rf results regression.diffs regression.out
    if ! make -s PG_CONFIG=$PGBIN/pg_config installcheck; then
        [ -f regression.diffs ] && cat regression.diffs
        return 1
    fi
}

run_pgtap() {
    log "pgTAP suite"
    psql -X -q -v ON_ERROR_STOP=1 -d postgres -c 'CREATE DATABASE convbill_test' >/dev/null
    psql -X -q -v ON_ERROR_STOP=1 -d convbill_test \
        -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION convbill' >/dev/null
    pg_prove --failures -d convbill_test test/pgtap/*.sql
}

# pg_cron jobs: `start` registers and schedules them, `check` (last) waits for
# pg_cron to have fired them; the minute passes while the other tests run.
run_jobs() {
    log "jobs in pg_cron ($1)"
    test/jobs/jobs.sh "$1" && return 0
    echo "# pg_cron's lines of the server log:"
    grep -i 'cron' "$CLUSTER/server.log" | tail -n 20
    return 1
}

run_concurrency() {
    log "parallel rating (4 sessions) vs serial rating"
    test/concurrency/rate_parallel.sh 2>&1 | grep -v NOTICE
    [ "${PIPESTATUS[0]}" -eq 0 ] || return 1
    test/concurrency/zone_cache.sh || return 1
    log "checks under concurrent changes (parents, subscriptions, rates, session ids)"
    test/concurrency/guards.sh || return 1
    log "rating while payers change (three raters, two feeds, one payer change, 20 s)"
    test/concurrency/payer_rating.sh || return 1
    log "two bill runs at once vs a serial bill run"
    test/concurrency/bill_run_parallel.sh
}

# Online charging: pgbench, 16 clients, 30 s, then kill -9 of the server
# mid-run; in a throwaway cluster of its own (test/online/stress.sh).
run_online_stress() {
    log "online charging under 16 clients and a crash (pgbench)"
    test/online/stress.sh
}

# pg_dump of a database convbill ran in, pg_restore into a fresh one (README:
# Backup and restore): the same content, and it goes on working.
run_dump_restore() {
    log "pg_dump and pg_restore"
    PGBIN=$PGBIN test/dump/dump_restore.sh
}

run_render() {
    log "invoice_html in headless Chromium"
    test/render/render_invoice.sh
}

fuzz_run() {
    local seconds=$1
    log "fuzzing the tariff parser and evaluator for ${seconds}s"
    make -s test/fuzz/tariff_fuzz
    local work
    work=$(mktemp -d /tmp/convbill-fuzz.XXXXXX)
    cp test/fuzz/corpus/* "$work"/
    # -max_len keeps inputs in the realm of real tariffs; crashes land in test/fuzz/.
    test/fuzz/tariff_fuzz -max_total_time="$seconds" -max_len=4096 -timeout=5 \
        -print_final_stats=1 -artifact_prefix=test/fuzz/ \
        -dict=test/fuzz/tariff.dict "$work" 2>&1 | tail -n 12
    local rc=${PIPESTATUS[0]}
    rm -rf "$work"
    return "$rc"
}

ensure_packages
case "$mode" in
    test)
        build_install
        start_cluster
        fail=0
        jobs_started=0
        run_jobs start && jobs_started=1 || fail=1
        run_regress || fail=1
        run_pgtap || fail=1
        run_concurrency || fail=1
        run_online_stress || fail=1
        run_dump_restore || fail=1
        run_render || fail=1
        fuzz_run "$FUZZ_SECONDS_TEST" || fail=1
        [ $jobs_started -eq 1 ] && { run_jobs check || fail=1; }
        if [ $fail -ne 0 ]; then log "FAILED"; exit 1; fi
        log "all tests passed"
        ;;
    demo)
        build_install
        start_cluster
        psql -X -q -d postgres -c 'CREATE DATABASE convbill_demo' >/dev/null
        psql -X -q -v ON_ERROR_STOP=1 -d convbill_demo -f demo/demo.sql
        ;;
    bench)
        build_install
        start_cluster
        psql -X -q -d postgres -c 'CREATE DATABASE convbill_bench' >/dev/null
        # BENCH=02 runs only test/bench/02*; a .sql runs in psql, a .sh runs
        # as is (PGHOST/PGPORT/PGUSER set, database convbill_bench), in name order
        for b in $(ls test/bench/${BENCH:-}*.sql test/bench/${BENCH:-}*.sh 2>/dev/null | sort); do
            log "benchmark $b"
            case "$b" in
                *.sh) PGBIN=$PGBIN BENCH_DB=convbill_bench "$b" ;;
                *) psql -X -v ON_ERROR_STOP=1 -d convbill_bench -f "$b" ;;
            esac
        done
        ;;
    fuzz)
        fuzz_run "$FUZZ_SECONDS_LONG"
        ;;
    *)
        echo "unknown mode $mode" >&2
        exit 2
        ;;
esac
