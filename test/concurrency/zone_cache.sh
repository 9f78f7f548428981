#!/usr/bin/env bash
# The destination cache is per backend: a session that already cached the
# prefixes must see another session's committed change at its next statement,
# and never a change that was rolled back.
set -euo pipefail
psql -X -q -v ON_ERROR_STOP=1 -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS convbill_zone" -c "CREATE DATABASE convbill_zone"
psql -X -q -v ON_ERROR_STOP=1 -d convbill_zone -c "CREATE EXTENSION convbill" \
    -c "INSERT INTO convbill.destination VALUES ('49', 'DE')"
out=$( { echo "SELECT convbill.zone_of('+49 30 1234');"
         sleep 3
         echo "SELECT convbill.zone_of('+49 30 1234');"
         sleep 3
         echo "SELECT convbill.zone_of('+49 40 1234');"; } \
       | psql -X -At -v ON_ERROR_STOP=1 -d convbill_zone &
       sleep 1
       psql -X -q -d convbill_zone -c "INSERT INTO convbill.destination VALUES ('4930', 'DE-Berlin')"
       sleep 3
       psql -X -q -d convbill_zone -c "BEGIN" -c "INSERT INTO convbill.destination VALUES ('4940', 'DE-Hamburg')" -c "ROLLBACK"
       wait)
expected=$'DE\nDE-Berlin\nDE'
if [ "$out" != "$expected" ]; then
    printf 'zone cache: expected\n%s\ngot\n%s\n' "$expected" "$out"
    exit 1
fi
echo "zone cache: another session's commit is seen at the next statement, its rollback never"
