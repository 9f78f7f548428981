#!/usr/bin/env bash
# Concurrent bill runs (SPEC section 5: "a re-run or a concurrent run creates
# nothing twice").
#
# 1. 2,000 accounts (200 of them sections of a parent's invoice) in five time
#    zones and all billing days, with fees (arrears and advance), usage,
#    one-time charges, discounts, taxes and prepaid money; a copy of the
#    database is made.  Two sessions call run_billing(same as_of) at the same
#    moment (both wait on an advisory lock held by a third session, which then
#    lets go); then: every (account, period) that ended is invoiced exactly
#    once, every charge of an ended period is on exactly one invoice, and every
#    invoice and line (and every balance) equals a serial run's on the copy.
# 2. A rater that holds a sub-account and then wants its payer (as rating and
#    its charge_debit trigger do) while a bill run holds the payer: no
#    deadlock; the busy family waits for the next run, which bills it once.
# 3. The committing procedure run_billing_batches(as_of, 50) on another copy:
#    as soon as its first batch has committed, another session locks a
#    billed account (FOR NO KEY UPDATE, as reserve() does) while the
#    procedure still runs; in the end every invoice, line and balance equals
#    the serial run_billing's (several batches, missed periods caught up,
#    sections of a parent's invoice).
# 4. Two procedures (batches of 40 and 70) and a run_billing at once on a
#    fourth copy: together they bill exactly what the serial run bills.
# 5. Accounts held by another session during the procedure (one paying
#    account, and a sub-account of another family) are reported by a WARNING
#    with their count and billed by the next run: nothing dropped silently.
# Needs PGHOST/PGPORT/PGUSER of a running cluster with convbill installed.
set -euo pipefail
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }
psql_v() { psql -X -q -At -v ON_ERROR_STOP=1 "$@"; }
AS_OF="2026-11-01 00:00+00"
PAR=convbill_bill_par
SER=convbill_bill_ser
LCK=convbill_bill_lock
PRO=convbill_bill_proc
MIX=convbill_bill_mix
FAM=convbill_bill_fam
KEY=4242                                 # the barrier's advisory lock
tmp=$(mktemp -d /tmp/convbill-billrun.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

for db in $PAR $SER $LCK $PRO $MIX $FAM; do
    psql_q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db"
done
psql_q -d postgres -c "CREATE DATABASE $PAR"
psql_q -d $PAR >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION convbill;
SET search_path = convbill, public;
SELECT setseed(0.17);
INSERT INTO service VALUES ('voice', 'second', 'Calls'), ('sms', 'message', 'Text messages'), ('data', 'MB', 'Data');
INSERT INTO plan (code, name, currency, recurring_fee, billing, allowances) VALUES
    ('S', 'Small', 'EUR', 9.99, 'arrears', '{"voice": 600}'),
    ('A', 'Office', 'EUR', 19.90, 'advance', '{}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES
    ('S', 'voice', '{"price": "0.002", "increment": {"first": 60, "next": 1}}'),
    ('S', 'sms', '{"price": "0.09"}'),
    ('S', 'data', '{"model": "graduated", "scope": "cycle", "tiers": [{"up_to": 500, "price": "0.0125"}, {"up_to": null, "price": "0.004"}]}'),
    ('A', 'sms', '{"price": "0.08"}'),
    ('A', 'data', '{"price": "0.0101"}');
INSERT INTO tax_rate VALUES ('VAT', 19, '-infinity'), ('RED', 7, '-infinity'), ('VAT', 20, '2026-10-01');
-- 1..1800 pay for themselves; 1801..2000 are sections of 1..200's invoices
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day, parent_id, bill_to_parent, tax_code)
SELECT g, 'ACC-' || g, 'Account ' || g, 'EUR',
       (ARRAY['UTC', 'Europe/Berlin', 'Pacific/Kiritimati', 'America/New_York', 'Pacific/Pago_Pago'])[1 + p % 5],
       1 + p % 28, CASE WHEN g > 1800 THEN p END, g > 1800,
       (ARRAY[NULL, 'VAT', 'RED'])[1 + g % 3]
FROM generate_series(1, 2000) g CROSS JOIN LATERAL (SELECT CASE WHEN g > 1800 THEN g - 1800 ELSE g END AS p) x
ORDER BY g;
SELECT count(subscribe(g, CASE WHEN g % 4 = 0 THEN 'A' ELSE 'S' END,
                       timestamptz '2026-08-10' + (g % 20) * interval '1 day' + (g % 7) * interval '5 hours'))
FROM generate_series(1, 2000) g;
SELECT count(unsubscribe(s.subscription_id, timestamptz '2026-09-20' + (s.account_id % 30) * interval '1 day'))
FROM subscription s WHERE s.account_id % 10 = 0;
INSERT INTO discount (account_id, percent) SELECT g, 10 FROM generate_series(7, 2000, 7) g;
INSERT INTO discount (account_id, amount, max_periods) SELECT g, 2.00, 1 FROM generate_series(11, 2000, 11) g;
SELECT count(top_up(g, 50.00, 'pre-' || g)) FROM generate_series(5, 1800, 5) g;
SELECT ensure_usage_partitions('2026-08-01', 4);
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
SELECT 1 + (random() * 1999)::int, 'src', 'e' || g,
       (ARRAY['voice', 'voice', 'data', 'sms'])[1 + (random() * 3)::int],
       round((random() * 400)::numeric, 1),
       timestamptz '2026-08-20' + random() * interval '90 days'
FROM generate_series(1, 30000) g;
SELECT rate_pending();
SELECT count(add_charge(g, 4.99, 'SIM card', 'one_time', timestamptz '2026-09-15' + (g % 40) * interval '1 day',
                        'sim-' || g))
FROM generate_series(3, 2000, 3) g;
SQL
for db in $SER $PRO $MIX $FAM; do
    psql_q -d postgres -c "CREATE DATABASE $db TEMPLATE $PAR"
done

# The barrier: a session holds advisory lock $KEY in database $1 until $2
# sessions wait for it (30 s at most), then lets them all go at once; the
# count it saw is left in $tmp/barrier, its pid in $holder.
start_barrier() {
    psql_v -d "$1" -c "SELECT pg_advisory_lock($KEY)" \
        -c "DO \$\$ BEGIN
                FOR i IN 1 .. 600 LOOP
                    EXIT WHEN (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $KEY
                               AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
                               AND NOT granted) = $2;
                    PERFORM pg_sleep(0.05);
                END LOOP;
            END \$\$" \
        -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = $KEY AND NOT granted" \
        > "$tmp/barrier" &
    holder=$!
}

# 1. two runs at once, released together by the barrier
start_barrier $PAR 2
sleep 0.5
pids=()
for i in 1 2; do
    psql_v -d $PAR -c "SELECT pg_advisory_lock_shared($KEY)" -c "SELECT convbill.run_billing('$AS_OF')" \
        > "$tmp/run$i" 2>&1 &
    pids+=($!)
done
fail=0
wait $holder || fail=1
for p in "${pids[@]}"; do wait "$p" || fail=1; done
if [ $fail -ne 0 ]; then echo "a bill run failed:"; cat "$tmp"/run*; exit 1; fi
[ "$(tail -1 "$tmp/barrier")" = "2" ] || { echo "the two runs did not wait on the barrier together"; exit 1; }
n1=$(tail -1 "$tmp/run1"); n2=$(tail -1 "$tmp/run2")

# the serial reference on the copy
nser=$(psql_v -d $SER -c "SELECT convbill.run_billing('$AS_OF')")
[ "$nser" -gt 4000 ] || { echo "the serial run made only $nser invoices"; exit 1; }
if [ $((n1 + n2)) -ne "$nser" ]; then
    echo "concurrent runs made $n1 + $n2 invoices, the serial run $nser"; exit 1
fi

# invariants of a billed database
invariants() {
psql_q -d "$1" -v as_of="$AS_OF" <<'SQL'
SET search_path = convbill, public;
CREATE TEMP TABLE v AS SELECT :'as_of'::timestamptz AS as_of;
DO $$
DECLARE
    bad bigint;
    as_of timestamptz := (SELECT v.as_of FROM v);
BEGIN
    -- every period that ended and has something to bill: exactly one invoice
    SELECT count(*) INTO bad FROM (SELECT account_id, period_start FROM invoice WHERE kind = 'invoice'
                                   GROUP BY 1, 2 HAVING count(*) > 1) d;
    IF bad <> 0 THEN RAISE EXCEPTION '% periods invoiced twice', bad; END IF;
    SELECT count(*) INTO bad FROM charge c WHERE c.period_end <= as_of AND c.invoice_id IS NULL;
    IF bad <> 0 THEN RAISE EXCEPTION '% charges of ended periods not invoiced', bad; END IF;
    SELECT count(*) INTO bad FROM charge c WHERE c.period_end > as_of AND c.invoice_id IS NOT NULL;
    IF bad <> 0 THEN RAISE EXCEPTION '% charges of open periods invoiced', bad; END IF;
    SELECT count(*) INTO bad FROM charge c JOIN invoice i ON i.invoice_id = c.invoice_id
    JOIN account a ON a.account_id = c.account_id
    WHERE i.account_id <> CASE WHEN a.bill_to_parent THEN a.parent_id ELSE a.account_id END
       OR i.period_start <> c.period_start;
    IF bad <> 0 THEN RAISE EXCEPTION '% charges on another account''s or period''s invoice', bad; END IF;
    -- no charge counted on two invoices: each invoice's charged is the sum of its charges
    SELECT count(*) INTO bad FROM invoice i
    LEFT JOIN (SELECT invoice_id, sum(amount) AS s FROM charge GROUP BY 1) c ON c.invoice_id = i.invoice_id
    WHERE i.charged <> coalesce(c.s, 0);
    IF bad <> 0 THEN RAISE EXCEPTION '% invoices whose charged differs from their charges', bad; END IF;
    SELECT count(*) INTO bad FROM invoice i
    LEFT JOIN (SELECT account_id, invoice_id, sum(amount) AS s FROM invoice_line GROUP BY 1, 2) l
           ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
    WHERE i.total <> coalesce(l.s, 0) OR i.amount_due <> i.total - i.prepaid_applied;
    IF bad <> 0 THEN RAISE EXCEPTION '% invoices whose total is not the sum of their lines', bad; END IF;
    -- invoices only for sections' payers, none for a section
    SELECT count(*) INTO bad FROM invoice i JOIN account a ON a.account_id = i.account_id WHERE a.bill_to_parent;
    IF bad <> 0 THEN RAISE EXCEPTION '% invoices of accounts billed to their parent', bad; END IF;
    SELECT count(*) INTO bad FROM bucket b
    LEFT JOIN (SELECT account_id, bucket_id, sum(amount) AS s FROM ledger GROUP BY 1, 2) l
           ON l.account_id = b.account_id AND l.bucket_id = b.bucket_id
    WHERE b.balance <> coalesce(l.s, 0);
    IF bad <> 0 THEN RAISE EXCEPTION '% buckets whose ledger does not add up', bad; END IF;
END $$;
SQL
}
invariants $PAR

# every invoice, line and balance equals the serial run's (ids aside)
dump() {
    psql_v -d "$1" <<'SQL'
SET search_path = convbill, public;
SELECT 'invoice', i.account_id, i.period_start, i.period_end, i.status, i.subtotal, i.discount, i.tax, i.total,
       i.prepaid_applied, i.amount_due, i.charged
FROM invoice i ORDER BY i.account_id, i.period_start;
SELECT 'line', i.account_id, i.period_start, l.line_no, l.kind, l.source_account_id, l.service, l.description,
       l.quantity, l.amount, l.tax_code, l.tax_rate
FROM invoice i JOIN invoice_line l ON l.account_id = i.account_id AND l.invoice_id = i.invoice_id
ORDER BY i.account_id, i.period_start, l.line_no;
SELECT 'money', b.account_id, b.balance FROM bucket b WHERE b.kind = 'money' ORDER BY b.account_id, b.bucket_id;
SELECT 'closed', account_id, period_start FROM closed_period ORDER BY 2, 3;
SQL
}
dump $SER > "$tmp/ser.txt"
# same_as_serial <db> <name> <what>: <db>'s invoices, lines, balances and
# closed periods equal the serial run's (dumped to $tmp/<name>.txt)
same_as_serial() {
    dump "$1" > "$tmp/$2.txt"
    if ! cmp -s "$tmp/$2.txt" "$tmp/ser.txt"; then
        diff -u "$tmp/ser.txt" "$tmp/$2.txt" | head -20
        echo "$3 differ from the serial run"; exit 1
    fi
}
same_as_serial $PAR par "concurrent bill runs"
echo "concurrent bill runs: $n1 + $n2 invoices (serial: $nser), $(grep -c '^line' "$tmp/par.txt") lines and every balance equal the serial run's; each period invoiced once, each charge billed once"

# 2. a rater holding a sub-account, then wanting its payer, during a bill run
psql_q -d postgres -c "CREATE DATABASE $LCK"
psql_q -d $LCK >/dev/null <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION convbill;
SET search_path = convbill, public;
INSERT INTO plan (code, name, currency, recurring_fee) VALUES ('P', 'Plan', 'EUR', 10);
INSERT INTO account (account_id, external_ref, name, currency, parent_id, bill_to_parent) VALUES
    (1, 'PARENT', 'Parent', 'EUR', NULL, false), (2, 'CHILD', 'Child', 'EUR', 1, true), (3, 'OTHER', 'Other', 'EUR', NULL, false);
SELECT subscribe(a, 'P', '2026-09-01') FROM generate_series(1, 3) a;
SQL
# the "rater": holds the child, 1 s later wants the parent (as charge_debit does)
psql_v -d $LCK -c "BEGIN" -c "SELECT 1 FROM convbill.account WHERE account_id = 2 FOR NO KEY UPDATE" \
    -c "SELECT pg_sleep(1)" -c "SELECT 1 FROM convbill.account WHERE account_id = 1 FOR NO KEY UPDATE" \
    -c "COMMIT" > "$tmp/rater" 2>&1 &
rater=$!
sleep 0.3
# the bill run holds what it took for 2 s more
if ! psql_v -d $LCK -c "BEGIN" -c "SELECT convbill.run_billing('2026-10-01')" -c "SELECT pg_sleep(2)" \
        -c "COMMIT" > "$tmp/busy_run" 2>&1; then
    echo "the bill run failed next to the rater:"; cat "$tmp/busy_run"; exit 1
fi
wait $rater || { echo "the rater failed next to the bill run:"; cat "$tmp/rater"; exit 1; }
busy=$(grep -v -E '^(WARNING|DETAIL|HINT):' "$tmp/busy_run" | sed -n 1p)
[ "$busy" = "1" ] || { echo "the run next to the rater made $busy invoices, not 1 (account 3)"; exit 1; }
# the family it could not take is reported, not dropped silently
grep -q 'WARNING:  run_billing: 1 account(s) not billed: another session holds them' "$tmp/busy_run" \
    && grep -q 'DETAIL:  Accounts 1 ' "$tmp/busy_run" \
    || { echo "the busy family was not reported:"; cat "$tmp/busy_run"; exit 1; }
again=$(psql_v -d $LCK -c "SELECT convbill.run_billing('2026-10-01')")
[ "$again" = "1" ] || { echo "the next run made $again invoices, not 1 (the parent with its child)"; exit 1; }
sections=$(psql_v -d $LCK -c "SELECT string_agg(source_account_id || ':' || amount, ' ' ORDER BY line_no)
                              FROM convbill.invoice_line WHERE account_id = 1")
[ "$sections" = "1:10.00 2:10.00" ] || { echo "the parent's invoice has lines $sections"; exit 1; }
echo "a rater holding a sub-account during a bill run: no deadlock; the family is reported (WARNING) and billed once by the next run"

# 3. the committing procedure: a billed account can be locked while it runs
psql_v -d $PRO -c "CALL convbill.run_billing_batches('$AS_OF', 50)" > "$tmp/proc" 2>&1 &
proc=$!
if ! psql_v -d $PRO > "$tmp/probe" 2>&1 <<'SQL'
SET lock_timeout = '5s';
DO $$ BEGIN
    FOR i IN 1 .. 600 LOOP          -- until the first batch has committed (30 s at most)
        EXIT WHEN EXISTS (SELECT 1 FROM convbill.invoice);
        PERFORM pg_sleep(0.05);
    END LOOP;
END $$;
BEGIN;
SELECT account_id AS billed FROM convbill.invoice ORDER BY invoice_id LIMIT 1 \gset
-- as reserve() and charge_event() lock an account
SELECT 'locked ' || account_id FROM convbill.account WHERE account_id = :billed FOR NO KEY UPDATE;
SELECT 'procedure running ' || count(*) FROM pg_stat_activity
WHERE datname = current_database() AND state = 'active' AND query LIKE 'CALL convbill.run_billing_batches%';
SELECT 'invoices then ' || count(*) FROM convbill.invoice;
COMMIT;
SQL
then
    echo "the probe could not lock a billed account while the procedure ran:"; cat "$tmp/probe"; exit 1
fi
wait $proc || { echo "the procedure failed:"; cat "$tmp/proc"; exit 1; }
grep -q '^locked ' "$tmp/probe" || { echo "the probe locked nothing:"; cat "$tmp/probe"; exit 1; }
grep -qx 'procedure running 1' "$tmp/probe" \
    || { echo "the procedure had finished before the probe locked a billed account:"; cat "$tmp/probe"; exit 1; }
IFS='|' read -r pinv pbatches plongest < <(tail -1 "$tmp/proc")
[ "$pinv" = "$nser" ] || { echo "the procedure made $pinv invoices, the serial run $nser"; cat "$tmp/proc"; exit 1; }
[ "$pbatches" -gt 10 ] || { echo "the procedure ran only $pbatches batches"; exit 1; }
then_inv=$(sed -n 's/^invoices then //p' "$tmp/probe")
[ "$then_inv" -lt "$nser" ] || { echo "the probe ran after all $nser invoices existed"; exit 1; }
invariants $PRO
same_as_serial $PRO pro "run_billing_batches' invoices"
echo "run_billing_batches(as_of, 50): $pinv invoices in $pbatches batches (longest $plongest), equal to the serial run's; a billed account was locked by another session while it ran (after $then_inv invoices)"

# 4. two procedures and a run_billing at once, released together by the barrier
start_barrier $MIX 3
sleep 0.5
pids=()
for b in 40 70; do
    psql_v -d $MIX -c "SELECT pg_advisory_lock_shared($KEY)" \
        -c "CALL convbill.run_billing_batches('$AS_OF', $b)" > "$tmp/mix$b" 2>&1 &
    pids+=($!)
done
psql_v -d $MIX -c "SELECT pg_advisory_lock_shared($KEY)" -c "SELECT convbill.run_billing('$AS_OF')" \
    > "$tmp/mixrun" 2>&1 &
pids+=($!)
fail=0
wait $holder || fail=1
for p in "${pids[@]}"; do wait "$p" || fail=1; done
if [ $fail -ne 0 ]; then echo "a run failed:"; cat "$tmp"/mix*; exit 1; fi
[ "$(tail -1 "$tmp/barrier")" = "3" ] || { echo "the three runs did not wait on the barrier together"; exit 1; }
m40=$(tail -1 "$tmp/mix40" | cut -d'|' -f1); m70=$(tail -1 "$tmp/mix70" | cut -d'|' -f1); mrun=$(tail -1 "$tmp/mixrun")
if [ $((m40 + m70 + mrun)) -ne "$nser" ]; then
    echo "the procedures and run_billing made $m40 + $m70 + $mrun invoices, the serial run $nser"; cat "$tmp"/mix*; exit 1
fi
invariants $MIX
same_as_serial $MIX mix "two procedures and a run_billing at once"
echo "two run_billing_batches and a run_billing at once: $m40 + $m70 + $mrun invoices, equal to the serial run's"

# 5. accounts busy during the procedure: reported, then billed by the next run.
# A session holds account 3 (a paying account) and 2 (a sub-account of 1),
# as requests in progress do, while the procedure bills October
# busy_2_3 "<command>" <output file> <what>: run the command while another
# session holds accounts 2 and 3 (for 3 s)
busy_2_3() {
    psql_v -d $LCK -c "BEGIN" -c "SELECT 1 FROM convbill.account WHERE account_id IN (2, 3) FOR NO KEY UPDATE" \
        -c "SELECT pg_sleep(3)" -c "COMMIT" > "$tmp/holder" 2>&1 &
    local holder=$!
    sleep 0.5
    psql_v -d $LCK -c "$1" > "$2" 2>&1 || { echo "the $3 failed next to the busy accounts:"; cat "$2"; exit 1; }
    wait $holder || { echo "the session holding the accounts failed:"; cat "$tmp/holder"; exit 1; }
}
busy_2_3 "CALL convbill.run_billing_batches('2026-11-01', 1)" "$tmp/busy_proc" procedure
[ "$(tail -1 "$tmp/busy_proc" | cut -d'|' -f1)" = "0" ] \
    || { echo "the procedure billed busy accounts:"; cat "$tmp/busy_proc"; exit 1; }
grep -q 'WARNING:  run_billing: 2 account(s) not billed: another session holds them' "$tmp/busy_proc" \
    && grep -q 'DETAIL:  Accounts 1, 3 ' "$tmp/busy_proc" \
    || { echo "the busy accounts were not reported:"; cat "$tmp/busy_proc"; exit 1; }
# the same under the bill job (pg_cron keeps no WARNING): job_run.warning says it
# (the job bills as of now: October has ended; 1 and 3 are busy, nothing is billed)
busy_2_3 "CALL convbill.run_job_proc('bill')" "$tmp/busy_job" "bill job"
job_warning=$(psql_v -d $LCK -c "SELECT status || '|' || coalesce(warning, '') FROM convbill.job_run
                                 WHERE job = 'bill' ORDER BY run_id DESC LIMIT 1")
[ "$job_warning" = "succeeded|run_billing: 2 account(s) not billed: another session holds them (1, 3)" ] \
    || { echo "the bill job's run does not report the busy accounts: $job_warning"; cat "$tmp/busy_job"; exit 1; }
[ "$(psql_v -d $LCK -c "SELECT count(*) FROM convbill.invoice WHERE period_start = '2026-10-01'")" = "0" ] \
    || { echo "the bill job billed busy accounts"; exit 1; }
again=$(psql_v -d $LCK -c "CALL convbill.run_billing_batches('2026-11-01', 1)" 2>&1)
[ "$(echo "$again" | tail -1 | cut -d'|' -f1)" = "2" ] \
    || { echo "the next run did not bill the two accounts:"; echo "$again"; exit 1; }
october=$(psql_v -d $LCK -c "SELECT string_agg(account_id || ':' || total, ' ' ORDER BY account_id)
                            FROM convbill.invoice WHERE period_start = '2026-10-01'")
[ "$october" = "1:20.00 3:10.00" ] || { echo "October's invoices are $october"; exit 1; }
echo "accounts busy during the procedure or the bill job: reported (2 accounts, WARNING; job_run.warning), billed by the next run"

# 6. a sub-account detached from its parent between two committed batches of
# one run: the parent's later invoices do not bill it (the run re-reads each
# family when it takes its payer), and the next run bills it as the payer it
# now is - every charge made after the change is on its own invoice, paid
# from its own money
# one session steps through the run (its list of what is due lives in the
# session's temp tables across the commits); another detaches 1950 from 150
# after the first batch (payers 1.. come first: 150 is not billed yet)
steps=$(psql_v -d $FAM <<SQL
SELECT convbill.run_billing_step('$AS_OF', 40) > 0;
\\! psql -X -q -d $FAM -c "UPDATE convbill.account SET bill_to_parent = false WHERE account_id = 1950"
DO \$\$ BEGIN WHILE convbill.run_billing_step('$AS_OF', 40) > 0 LOOP END LOOP; END \$\$;
SELECT 'done';
SQL
)
psql_v -d $FAM -c "SELECT convbill.run_billing('$AS_OF')" >/dev/null
out=$(psql_v -d $FAM <<'SQL'
SELECT (SELECT count(*) FROM convbill.invoice_line l WHERE l.account_id = 150 AND l.source_account_id = 1950) || ' '
    || (SELECT count(*) FROM convbill.invoice i WHERE i.account_id = 1950) || ' '
    || (SELECT count(*) FROM convbill.charge c LEFT JOIN convbill.invoice i ON i.invoice_id = c.invoice_id
        WHERE c.account_id = 1950 AND c.kind = 'recurring' AND i.account_id IS DISTINCT FROM 1950);
SQL
)
if [ "$steps" != $'t\ndone' ] || [ "$(cut -d' ' -f1 <<<"$out")" != 0 ] || [ "$(cut -d' ' -f2 <<<"$out")" -lt 1 ] \
   || [ "$(cut -d' ' -f3 <<<"$out")" != 0 ]; then
    echo "detached sub-account (steps: $steps): its lines on 150's invoices, its own invoices, its fees on another's invoice: $out"
    exit 1
fi
echo "a sub-account detached during a committing run: not on its old parent's later invoices; billed by the next run on $(cut -d' ' -f2 <<<"$out") invoice(s) of its own"

for db in $PAR $SER $LCK $PRO $MIX $FAM; do
    psql_q -d postgres -c "DROP DATABASE $db"
done
