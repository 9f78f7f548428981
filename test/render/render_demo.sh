#!/usr/bin/env bash
# Renders one invoice of a database to a PNG with headless Chromium (A4 at
# 150 dpi, 1240x1754), for the README: by default docs/invoice-demo.png.
#
#   test/render/render_demo.sh DBNAME [INVOICE_ID [OUT.png]]
#
# Without INVOICE_ID: the final invoice with the most lines (the richest one).
# Uses the cluster in PGHOST/PGPORT/PGUSER, e.g. the one `make demo` started.
set -euo pipefail
cd "$(dirname "$0")/../.."

db=${1:?usage: test/render/render_demo.sh DBNAME [INVOICE_ID [OUT.png]]}
id=${2:-}
out=${3:-docs/invoice-demo.png}
CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
[ -n "$CHROMIUM" ] || { echo "chromium is not installed (test/run.sh installs it)" >&2; exit 1; }

if [ -z "$id" ]; then
    id=$(psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" -c "
        SELECT i.invoice_id FROM convbill.invoice i
        WHERE i.kind = 'invoice' AND i.status = 'final'
        ORDER BY (SELECT count(*) FROM convbill.invoice_line l
                  WHERE l.account_id = i.account_id AND l.invoice_id = i.invoice_id) DESC, i.invoice_id
        LIMIT 1")
    [ -n "$id" ] || { echo "no final invoice in $db" >&2; exit 1; }
fi
work=$(mktemp -d /tmp/convbill-demo-render.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT
psql -X -q -At -v ON_ERROR_STOP=1 -d "$db" -c "SELECT convbill.invoice_html($id)" > "$work/invoice.html"
chmod 644 "$work/invoice.html"
mkdir -p "$(dirname "$out")"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1240,1754 \
    --screenshot="$work/invoice.png" "file://$work/invoice.html" >/dev/null 2>&1
cp "$work/invoice.png" "$out"
echo "invoice $id -> $out ($(stat -c %s "$out") bytes)"
