#!/usr/bin/env bash
# Parallel rating: 4 sessions run rate_pending() at once over the same pending
# events; afterwards every event is rated exactly once, nothing is charged twice,
# and every per-account total equals a serial run's over the same data.
# Needs PGHOST/PGPORT/PGUSER of a running cluster with convbill installed.
set -euo pipefail
here=$(dirname "$0")
psql_q() { psql -X -q -v ON_ERROR_STOP=1 "$@"; }

for db in convbill_par convbill_ser; do
    psql_q -d postgres -c "DROP DATABASE IF EXISTS $db" -c "CREATE DATABASE $db"
    psql_q -d $db -f "$here/setup.sql" >/dev/null
done

# serial reference
psql_q -d convbill_ser -c "DO \$\$ BEGIN WHILE convbill.rate_pending(1500) > 0 LOOP END LOOP; END \$\$" 

# four raters at once, small batches so they interleave on shared accounts
pids=()
for i in 1 2 3 4; do
    ( for _ in $(seq 1 200); do
          n=$(psql -X -At -v ON_ERROR_STOP=1 -d convbill_par -c "SELECT convbill.rate_pending(700)")
          [ "$n" = "0" ] && break
      done ) &
    pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
[ $fail -eq 0 ] || { echo "a rating session failed"; exit 1; }

psql_q -d convbill_par -f "$here/checks.sql"
psql -X -At -d convbill_ser -f "$here/totals.sql" > /tmp/convbill_ser_totals.txt
psql -X -At -d convbill_par -f "$here/totals.sql" > /tmp/convbill_par_totals.txt
if ! diff -u /tmp/convbill_ser_totals.txt /tmp/convbill_par_totals.txt | head -20; then :; fi
if ! cmp -s /tmp/convbill_ser_totals.txt /tmp/convbill_par_totals.txt; then
    echo "parallel rating differs from serial rating"
    exit 1
fi
echo "parallel rating: $(grep -c '^account' /tmp/convbill_par_totals.txt) account-period-service totals equal the serial run; $(grep '^status' /tmp/convbill_par_totals.txt | tr '\n' ' ')"
