#!/usr/bin/env bash
# Rating while payers change: three sessions call rate_pending(50) while two
# feed events and one moves sub-accounts 2 and 3 between payers 6 and 7 (in
# pgbench, 20 s).  A change of payer that commits while a batch waits for
# the account it moves used to leave the batch holding the old payer and
# lock the new one late, out of order: batches failed with deadlocks (40P01;
# 7 in 60 s of this load).  Now: no error but the payer change's documented
# 55P03 (busy family, retry), every event rated once, every charge lowering
# its payer's money (buckets = ledger, money = charges).
# Needs PGHOST/PGPORT/PGUSER of a running cluster with convbill installed.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
db=convbill_payer_rating
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" \
    -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
psql -X -q -v ON_ERROR_STOP=1 -d $db -f "$here/payer_rating/setup.sql" >/dev/null
pgbench -n -d $db -c 2 -T 20 -f "$here/payer_rating/feed.pgbench" >/dev/null 2>&1 &
pgbench -n -d $db -c 3 -T 20 -f "$here/payer_rating/rate.pgbench" >/dev/null 2>&1 &
pgbench -n -d $db -c 1 -T 20 -f "$here/payer_rating/payer.pgbench" >/dev/null 2>&1 &
wait
psql -X -q -d $db -c "SELECT convbill.rate_pending(1000000)" >/dev/null
out=$(psql -X -At -F ' ' -d $db -c "
    SELECT (SELECT count(*) FROM pr.err WHERE NOT (label = 'payer' AND state = '55P03')),
           (SELECT count(*) FROM pr.ok WHERE label = 'payer'),
           (SELECT count(*) FROM pr.ok WHERE label = 'rate'),
           (SELECT count(*) FROM convbill.usage_event WHERE status <> 'rated'),
           (SELECT count(*) FROM convbill.usage_event e
             WHERE NOT EXISTS (SELECT 1 FROM convbill.charge c
                               WHERE c.account_id = e.account_id AND c.charge_id = e.charge_id)),
           (SELECT count(*) FROM convbill.bucket b
             WHERE b.balance <> (SELECT coalesce(sum(l.amount), 0) FROM convbill.ledger l
                                 WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id)),
           (SELECT -sum(b.balance) FROM convbill.bucket b WHERE b.kind = 'money')
             = (SELECT sum(c.amount) FROM convbill.charge c)")
read -r errors moves batches unrated uncharged off balanced <<<"$out"
psql -X -At -d $db -c "SELECT label, state, count(*), min(msg) FROM pr.err WHERE NOT (label = 'payer' AND state = '55P03') GROUP BY 1, 2" 
psql -X -q -d postgres -c "DROP DATABASE $db"
if [ "$errors" != 0 ] || [ "$moves" = 0 ] || [ "$batches" = 0 ] || [ "$unrated" != 0 ] || [ "$uncharged" != 0 ] \
   || [ "$off" != 0 ] || [ "$balanced" != t ]; then
    echo "payer_rating: errors $errors, payer changes $moves, batches $batches, events not rated $unrated, rated without charge $uncharged, buckets off their ledger $off, money = charges: $balanced"
    exit 1
fi
echo "payer_rating: $batches batches and $moves changes of payer at once: no deadlock, every event rated once, money = charges"
