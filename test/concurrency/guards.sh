#!/usr/bin/env bash
# Checks that hold under concurrent changes (README: "also under concurrent
# changes"), in two sessions: A changes something and holds its transaction
# open for 2 s; B, whose snapshot is taken before A commits, makes the
# conflicting change meanwhile and waits for A's lock.
#   1-3. REPEATABLE READ: a parent cycle (A: 200 -> 201, B: 201 -> 200), an
#        overlapping subscription to the same plan, an overlapping rate of the
#        same (plan, service, zone).  B must fail (40001, could not serialize:
#        its retry then sees A's change and gets the check's own error), and
#        the database holds no cycle, one subscription, one rate.
#   4.   READ COMMITTED: two first requests of one session id for two
#        accounts: B gets 23505 once A commits, and one session exists.
#   5.   READ COMMITTED: a change of payer while A holds the payer (as a
#        request does): B is refused at once (55P03), not left waiting.
#   6.   a REPEATABLE READ report while rebuild_analytics() runs sees the
#        revenue of its snapshot.
# Needs PGHOST/PGPORT/PGUSER of a running cluster with convbill installed.
set -euo pipefail
db=convbill_guards
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -X -q -v ON_ERROR_STOP=1 -d $db <<'SQL'
CREATE EXTENSION convbill;
SET search_path = convbill;
INSERT INTO service VALUES ('sms', 'message'), ('voice', 'second');
INSERT INTO plan (code, name, currency) VALUES ('P', 'p', 'EUR'), ('Q', 'q', 'EUR');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES ('P', 'sms', '{"price": "0.10"}');
INSERT INTO account (account_id, external_ref, name, currency, credit_limit) VALUES
    (1, 'a1', 'a1', 'EUR', 100), (2, 'a2', 'a2', 'EUR', 100),
    (10, 'a10', 'a10', 'EUR', 0), (200, 'a200', 'a200', 'EUR', 0), (201, 'a201', 'a201', 'EUR', 0);
INSERT INTO account (account_id, external_ref, name, currency, parent_id, bill_to_parent) VALUES
    (11, 'a11', 'a11', 'EUR', 1, true);
SELECT subscribe(1, 'P', '2020-01-01'), subscribe(2, 'P', '2020-01-01');
SQL

fail=0
# race NAME ISOLATION "A's statement" "B's statement" EXPECTED_SQLSTATE
race() {
    local name=$1 iso=$2 a=$3 b=$4 want=$5 out
    { psql -X -q -v ON_ERROR_STOP=1 -d $db \
          -c "BEGIN ISOLATION LEVEL $iso" -c "SELECT 1" -c "$a" -c "SELECT pg_sleep(2)" -c "COMMIT" >/dev/null; } &
    sleep 0.5
    out=$(psql -X -q -v VERBOSITY=sqlstate -d $db \
              -c "BEGIN ISOLATION LEVEL $iso" -c "SELECT 1" -c "$b" -c "COMMIT" 2>&1 >/dev/null || true)
    wait
    if ! grep -q "ERROR:  $want" <<<"$out"; then
        echo "guards: $name: the second session should fail with $want, got: ${out:-no error}"
        fail=1
    fi
}
race "parent cycle" "REPEATABLE READ" \
    "UPDATE convbill.account SET parent_id = 201 WHERE account_id = 200" \
    "UPDATE convbill.account SET parent_id = 200 WHERE account_id = 201" 40001
race "overlapping subscription" "REPEATABLE READ" \
    "SELECT convbill.subscribe(10, 'Q', '2026-01-01')" \
    "SELECT convbill.subscribe(10, 'Q', '2026-02-01')" 40001
race "overlapping rate" "REPEATABLE READ" \
    "INSERT INTO convbill.plan_rate (plan_code, service, tariff, valid_from) VALUES ('Q', 'voice', '{\"price\": \"0.01\"}', '2026-01-01')" \
    "INSERT INTO convbill.plan_rate (plan_code, service, tariff, valid_from) VALUES ('Q', 'voice', '{\"price\": \"0.02\"}', '2026-02-01')" 40001
race "one session id, two accounts" "READ COMMITTED" \
    "SELECT convbill.reserve(1, 'sms', 'sess-X', 5)" \
    "SELECT convbill.reserve(2, 'sms', 'sess-X', 5)" 23505
# 5. a change of payer while a request holds the payer (READ COMMITTED): it
#    is refused at once (55P03, retry), never waited for — the request may
#    want the changed account next, which would be a deadlock
race "payer change, family busy" "READ COMMITTED" \
    "SELECT 1 FROM convbill.account WHERE account_id = 1 FOR NO KEY UPDATE" \
    "UPDATE convbill.account SET bill_to_parent = false WHERE account_id = 11" 55P03

# 6. a REPEATABLE READ report while rebuild_analytics() runs: the revenue
#    views stay those of its snapshot (before, the rebuild's TRUNCATE left
#    them empty for it)
psql -X -q -d $db -c "SELECT convbill.add_charge(2, 5.00, 'set-up', 'one_time', '2026-11-02 10:00+00')" >/dev/null
seen=$( { psql -X -At -d $db -c "BEGIN ISOLATION LEVEL REPEATABLE READ" -c "SELECT 1" -c "SELECT pg_sleep(2)" \
              -c "SELECT coalesce(sum(amount), 0) FROM convbill.revenue_monthly WHERE kind = 'one_time'" -c "COMMIT" \
          | sed -n 4p; } &
        sleep 0.5; psql -X -q -d $db -c "SELECT convbill.rebuild_analytics()" >/dev/null; wait)
if [ "$seen" != "5.00" ]; then
    echo "guards: a report during rebuild_analytics() saw one-time revenue '$seen', not 5.00"
    fail=1
fi

state=$(psql -X -At -d $db -c "
    SELECT (SELECT count(*) FROM convbill.account WHERE account_id IN (200, 201) AND parent_id IS NOT NULL),
           (SELECT count(*) FROM convbill.subscription WHERE account_id = 10),
           (SELECT count(*) FROM convbill.plan_rate WHERE plan_code = 'Q'),
           (SELECT count(*) FROM convbill.reservation WHERE session_id = 'sess-X'),
           (SELECT count(*) FROM convbill.account WHERE account_id = 11 AND bill_to_parent)")
if [ "$state" != "1|1|1|1|1" ]; then
    echo "guards: expected 1 parent link, 1 subscription, 1 rate, 1 session, 11 still billed to 1; got $state"
    fail=1
fi
psql -X -q -d postgres -c "DROP DATABASE $db"
[ $fail -eq 0 ] || exit 1
echo "guards: concurrent parent cycle, subscription, rate (REPEATABLE READ) and session id and busy payer change (READ COMMITTED) refused; a report during a rollup rebuild keeps its snapshot"
