#!/usr/bin/env bash
# Backup and restore: pg_dump of a database where convbill ran a small
# operator (demo/demo.sql: rating, sessions, a bill run, payments, alerts),
# with a parent account's row moved after its child's, restored into a fresh
# database as README says (pg_restore with session_replication_role =
# replica).  The restore must report no error; every table convbill dumps,
# every usage_event partition, the sequences and the analytics and leakage
# views must be the same; and the restored database must go on working: a
# top-up, a new event rated, the next bill run finalized with the next
# invoice number of the series.
# Needs PGHOST/PGPORT/PGUSER of a running cluster with convbill installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
src=convbill_dump_src
dst=convbill_dump_dst
work=$(mktemp -d /tmp/convbill-dump.XXXXXX)
chmod 777 "$work"
trap 'rm -rf "$work"' EXIT
[ -n "${KEEP_DUMP_WORK:-}" ] && trap - EXIT
q() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 "$@"; }

q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $src" -c "DROP DATABASE IF EXISTS $dst" \
  -c "CREATE DATABASE $src" -c "CREATE DATABASE $dst"
q -d "$src" -f demo/demo.sql >/dev/null 2>&1 || { echo "dump test: demo/demo.sql failed"; q -d "$src" -f demo/demo.sql | tail -20; exit 1; }
# a parent updated after its child was created: its row now comes after the
# child's in the table, so a restore loads the child first
q -d "$src" -c "UPDATE convbill.account p SET name = p.name || ' (renamed)'
                WHERE p.account_id IN (SELECT c.parent_id FROM convbill.account c WHERE c.bill_to_parent)"

"$PGBIN/pg_dump" -Fc -d "$src" -f "$work/db.dump" 2> "$work/dump.err" || { cat "$work/dump.err"; exit 1; }
if ! PGOPTIONS="-c session_replication_role=replica" "$PGBIN/pg_restore" -d "$dst" "$work/db.dump" 2> "$work/restore.err"; then
    echo "dump test: pg_restore failed:"; cat "$work/restore.err"; exit 1
fi
if [ -s "$work/restore.err" ]; then
    echo "dump test: pg_restore reported:"; cat "$work/restore.err"; exit 1
fi

# the same content: every convbill table (and partition), sequence and view
snapshot() {
    q -d "$1" -At <<'SQL'
DO $$
DECLARE
    r record;
    h text;
BEGIN
    FOR r IN SELECT c.oid::regclass AS rel, c.relkind
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'convbill' AND c.relkind IN ('r', 'S', 'v')
               -- derived data rebuilt on demand, and the queue's mark (not dumped)
               AND c.relname NOT LIKE 'anomaly_%' AND c.relname <> 'usage_queue'
             ORDER BY c.relname LOOP
        IF r.relkind = 'S' THEN
            EXECUTE format('SELECT last_value::text FROM %s', r.rel) INTO h;
        ELSE
            EXECUTE format('SELECT count(*) || '' '' || coalesce(md5(string_agg(t::text, E''\n'' ORDER BY t::text)), '''')
                            FROM %s t', r.rel) INTO h;
        END IF;
        RAISE NOTICE '% %', r.rel, h;
    END LOOP;
END $$;
SQL
}
snapshot "$src" 2> "$work/src.txt" >/dev/null
snapshot "$dst" 2> "$work/dst.txt" >/dev/null
if ! diff "$work/src.txt" "$work/dst.txt"; then
    echo "dump test: the restored database differs (above: < dumped, > restored)"; exit 1
fi
tables=$(wc -l < "$work/src.txt")

# it goes on working
out=$(q -d "$dst" -At <<'SQL'
SET client_min_messages = warning;
-- a top-up: new bucket and ledger ids after the restored ones
SELECT 'top_up ' || (convbill.top_up(a.account_id, 10, 'after-restore') > (SELECT max(entry_id) FROM convbill.ledger WHERE reference IS DISTINCT FROM 'after-restore'))
FROM convbill.account a WHERE NOT a.bill_to_parent ORDER BY a.account_id LIMIT 1;
-- a new event is queued and rated (the queue's mark starts again from 0)
INSERT INTO convbill.usage_event (account_id, source, external_id, service, quantity, started_at)
SELECT s.account_id, 'after-restore', 'e1', 'sms', 1, now()
FROM convbill.subscription s JOIN convbill.plan_rate r ON r.plan_code = s.plan_code AND r.service = 'sms'
WHERE s.ended_at IS NULL ORDER BY s.account_id LIMIT 1;
SELECT 'rated ' || convbill.rate_pending();
SELECT 'event ' || status FROM convbill.usage_event WHERE source = 'after-restore';
-- the next bill run, finalized: numbers go on from the restored series
CREATE TEMP TABLE restored AS SELECT max(invoice_id) AS last_id, max(number) AS last_number
FROM convbill.invoice WHERE number LIKE 'INV-%';
SET convbill.finalize_invoices = on;
SELECT 'billed ' || (convbill.run_billing(now() + interval '62 days') > 0);
SELECT 'numbers ' || (count(*) > 0 AND min(i.number) > r.last_number AND count(DISTINCT i.number) = count(*))
FROM convbill.invoice i, restored r WHERE i.invoice_id > r.last_id AND i.number LIKE 'INV-%' GROUP BY r.last_number;
SQL
)
expected=$'top_up true\nrated 1\nevent rated\nbilled true\nnumbers true'
if [ "$out" != "$expected" ]; then
    printf 'dump test: after the restore, expected\n%s\ngot\n%s\n' "$expected" "$out"; exit 1
fi
q -d postgres -c "DROP DATABASE $src" -c "DROP DATABASE $dst"
echo "dump and restore: no error, $tables tables, partitions, sequences and views the same; the restored database rates, tops up and bills on"
