#!/usr/bin/env bash
# test/bench/03_online.sh — online charging throughput on one server, one run.
#
# Run by `test/run.sh bench` (BENCH=03 for this one alone) with PGHOST, PGPORT
# and PGUSER set and the database convbill_bench created; by hand:
#   PGHOST=... PGPORT=... PGUSER=postgres BENCH_DB=mydb test/bench/03_online.sh
#
# (1) pgbench, 8 clients (-j 2, -M prepared, -n), BENCH03_SECONDS (20) each,
#     BENCH03_ROUNDS (3) rounds, the three workloads interleaved in every round:
#       simple-update   pgbench's built-in script on its own tables (-i -s 1:
#                       100,000 pgbench_accounts), transactions/s
#       sessions        reserve (one transaction) then commit (a second one) of
#                       120 s of voice, 75 s used, on a random one of 10,000
#                       accounts: sessions/s, each session counted once
#       hot account     the same, all 8 clients on one account
#       floor           (context) the rows a session must write (account
#                       locks, session row, hold, debit, release, charge),
#                       bare, one statement per transaction: floor.pgbench
#     Target: 2 x sessions/s >= 0.6 x simple-update TPS (spread accounts).
# (2) charge_events() in batches of 1,000 over the 10,000 accounts,
#     BENCH03_BATCHES (200) batches per round, 3 rounds: events/s, against
#     INSERT ... SELECT of as many rows into a plain copy of convbill.charge.
#     Target: <= 3x the baseline's time.
# Medians of the rounds.  Correctness is checked (no failed or aborted
# pgbench transaction; every session committed and charged once; every event
# answered and charged once; the ledger sums to every bucket) and fails the
# run; a missed target is reported, not raised.  About 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/03_online"

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
DB=${BENCH_DB:-convbill_bench}
SECONDS_PER_RUN=${BENCH03_SECONDS:-20}
ROUNDS=${BENCH03_ROUNDS:-3}
BATCHES=${BENCH03_BATCHES:-200}
CLIENTS=8

psql() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -d "$DB" "$@"; }

# run pgbench and print its TPS; any failed or aborted transaction is an error
bench() {
    local out
    out=$("$PGBIN/pgbench" -n -M prepared -c "$CLIENTS" -j 2 -T "$SECONDS_PER_RUN" "$@" "$DB" 2>&1) || {
        echo "$out" >&2
        return 1
    }
    if ! grep -q '^number of failed transactions: 0 ' <<<"$out" || grep -qi 'aborted' <<<"$out"; then
        echo "$out" >&2
        echo "pgbench $*: failed or aborted transactions" >&2
        return 1
    fi
    sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' <<<"$out"
}

result() {  # section what round value
    psql -c "INSERT INTO bench03_result VALUES ('$1', '$2', $3, $4)"
}

echo "setting up: 10,001 accounts, pgbench -i -s 1"
psql -f setup.sql >/dev/null
"$PGBIN/pgbench" -i -s 1 -q "$DB" >/dev/null 2>&1
psql -c "SELECT version()" -c "SHOW shared_buffers" -c "SHOW synchronous_commit" -A -t \
    | sed 's/^/  /'
echo "  $(nproc) CPUs; $CLIENTS clients, ${SECONDS_PER_RUN}s per run, $ROUNDS rounds"

# warm-up: every backend plans its statements once; then fresh statistics
bench -f session.pgbench -T 5 >/dev/null
psql -c "ANALYZE"

for r in $(seq 1 "$ROUNDS"); do
    echo "round $r"
    tps=$(bench -b simple-update)
    result sessions 'simple-update, transactions/s' "$r" "$tps"
    tps=$(bench -f session.pgbench)
    result sessions 'reserve + commit, sessions/s, 10,000 accounts' "$r" "$tps"
    tps=$(bench -f hot.pgbench)
    result sessions 'reserve + commit, sessions/s, 1 hot account' "$r" "$tps"
    tps=$(bench -f floor.pgbench)
    result sessions 'floor: the rows of a session written bare, sessions/s, 10,000 accounts' "$r" "$tps"
done

echo "checking the sessions"
psql -f check_sessions.sql

echo "charge_events: $BATCHES batches of 1,000 per round, 3 rounds"
psql -v batches="$BATCHES" -f events.sql

echo "checking the ledger"
psql -f check_ledger.sql

psql -P footer=off <<'EOF'
\echo
\echo '=== 03 online charging: medians of the rounds (2 vCPU machine) ==='
WITH m AS (
    SELECT section, what, array_agg(round(value::numeric, 2) ORDER BY round) AS rounds,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS median
    FROM bench03_result GROUP BY section, what
)
SELECT section, what, rounds, round(median::numeric, 2) AS median FROM m
ORDER BY section DESC, what DESC;
\echo '=== targets ==='
WITH m AS (
    SELECT what, percentile_cont(0.5) WITHIN GROUP (ORDER BY value) AS v
    FROM bench03_result GROUP BY what
)
SELECT '2 x sessions/s / simple-update TPS (10,000 accounts)' AS target,
       round((2 * s.v / u.v)::numeric, 3) AS value, '>= 0.6' AS wanted,
       CASE WHEN 2 * s.v >= 0.6 * u.v THEN 'met' ELSE 'MISSED' END AS status
FROM m s, m u
WHERE s.what = 'reserve + commit, sessions/s, 10,000 accounts' AND u.what = 'simple-update, transactions/s'
UNION ALL
SELECT '2 x sessions/s / simple-update TPS (1 hot account)', round((2 * s.v / u.v)::numeric, 3), '(reported)', ''
FROM m s, m u
WHERE s.what = 'reserve + commit, sessions/s, 1 hot account' AND u.what = 'simple-update, transactions/s'
UNION ALL
SELECT '2 x floor sessions/s / simple-update TPS (context: the rows alone)', round((2 * s.v / u.v)::numeric, 3),
       '(context)', ''
FROM m s, m u
WHERE s.what = 'floor: the rows of a session written bare, sessions/s, 10,000 accounts'
  AND u.what = 'simple-update, transactions/s'
UNION ALL
SELECT 'charge_events time / INSERT ... SELECT time', round(x.v::numeric, 2), '<= 3',
       CASE WHEN x.v <= 3 THEN 'met' ELSE 'MISSED' END
FROM m x WHERE x.what = 'x baseline (target <= 3)'
UNION ALL
SELECT 'floor: charge_events rows alone, bare / INSERT ... SELECT time', round(x.v::numeric, 2), '(context)', ''
FROM m x WHERE x.what = 'floor: the rows alone, bare, x baseline (context)';
EOF

# leave nothing behind
psql -c "DROP TABLE bench03_result, bench03_charge_baseline, bench03_floor_charge, bench03_floor_answer, bench03_floor_ledger, bench03_floor_bucket" \
     -c "DROP PROCEDURE bench03_events(int, int, int, double precision), bench03_baseline(int, int, int, double precision), bench03_floor(int, int, int, double precision)" \
     -c "SET client_min_messages = warning" -c "DROP EXTENSION convbill CASCADE"
"$PGBIN/pgbench" -i -I d "$DB" >/dev/null 2>&1
