#!/usr/bin/env bash
# Renders invoice_html() in headless Chromium and checks what a reader sees:
#   - a screenshot of the page (A4 at 150 dpi: 1240x1754) exists and is far from
#     blank (its PNG is much larger than the one of an empty page);
#   - the DOM Chromium built holds the invoice number and the amounts due as
#     printed (EUR 1,241.25), the sub-account section, and no element made from
#     a customer name that contains <script> (it is shown as text);
#   - a JPY invoice shows whole yen, a KWD one three decimals.
# Runs against the cluster in PGHOST/PGPORT/PGUSER (test/run.sh starts one).
# Chromium runs as root, so --no-sandbox.
set -euo pipefail

CHROMIUM=${CHROMIUM:-$(command -v chromium || command -v chromium-browser || true)}
if [ -z "$CHROMIUM" ]; then
    echo "render_invoice: chromium is not installed (test/run.sh installs it)" >&2
    exit 1
fi
db=convbill_render
work=$(mktemp -d /tmp/convbill-render.XXXXXX)
chmod 755 "$work"
trap 'rm -rf "$work"' EXIT

psql -X -q -d postgres -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS $db" >/dev/null
psql -X -q -d postgres -c "CREATE DATABASE $db" >/dev/null
psql -X -q -v ON_ERROR_STOP=1 -d $db >/dev/null <<'SQL'
CREATE EXTENSION convbill;
SET search_path = convbill;
INSERT INTO service VALUES ('voice', 'second'), ('data', 'MB'), ('sms', 'message');
INSERT INTO seller (name, address, tax_id, email, payment_details) VALUES
    ('Northwind Telecom AG', E'Friedrichstrasse 100\n10117 Berlin\nGermany', 'DE811111111',
     'billing@northwind.example', 'IBAN DE89 3704 0044 0532 0130 00 · BIC COBADEFFXXX');
INSERT INTO account (account_id, external_ref, name, currency, timezone, parent_id, bill_to_parent, tax_code) VALUES
    (1, 'C-1001', 'Smith <script>document.title="PWNED"</script> & Partners', 'EUR', 'Europe/Berlin', NULL, false, 'VAT'),
    (2, 'C-1001-A', 'Field team <b>north</b>', 'EUR', 'Europe/Berlin', 1, true, NULL),
    (3, 'C-2001', 'Yamada Shoji KK', 'JPY', 'Asia/Tokyo', NULL, false, NULL),
    (4, 'C-3001', 'Al Noor Trading', 'KWD', 'Asia/Kuwait', NULL, false, NULL);
-- 1000.00 + 45.60 + 12.30 + 35.17 = 1093.07; discount -50.00; VAT 19 % of
-- 1043.07 = 198.1833 -> 198.18; total 1241.25; prepaid 100.00, due 1141.25
INSERT INTO invoice (invoice_id, account_id, period_start, period_end, currency,
                     subtotal, discount, tax, total, prepaid_applied, amount_due, issued_at)
VALUES (1, 1, '2024-03-01 00:00+01', '2024-04-01 00:00+02', 'EUR',
        1093.07, -50.00, 198.18, 1241.25, 100.00, 1141.25, '2024-04-01 06:00+02');
INSERT INTO invoice_line (account_id, invoice_id, line_no, kind, service, description, quantity, amount,
                          source_account_id, plan_code, tax_code, tax_rate) VALUES
    (1, 1, 1, 'recurring', NULL, 'Business Unlimited (10 lines)', 10, 1000.00, 1, 'BIZ', NULL, NULL),
    (1, 1, 2, 'usage', 'voice', 'Calls & conferences', 45600, 45.60, 1, NULL, NULL, NULL),
    (1, 1, 3, 'usage', 'data', NULL, 2048, 12.30, 2, NULL, NULL, NULL),
    (1, 1, 4, 'one_time', NULL, 'SIM replacement <x2>', 2, 35.17, 2, NULL, NULL, NULL),
    (1, 1, 5, 'discount', NULL, 'Loyalty discount', NULL, -50.00, 1, NULL, NULL, NULL),
    (1, 1, 6, 'tax', NULL, 'VAT 19 %', NULL, 198.18, 1, NULL, 'VAT', 19);
SELECT finalize_invoice(1);
INSERT INTO invoice (invoice_id, account_id, currency, subtotal, total, amount_due, issued_at)
VALUES (2, 3, 'JPY', 1234567, 1234567, 1234567, '2024-04-01 09:00+09');
INSERT INTO invoice_line (account_id, invoice_id, line_no, kind, service, quantity, amount, source_account_id)
VALUES (3, 2, 1, 'usage', 'voice', 1234567, 1234567, 3);
SELECT finalize_invoice(2);
INSERT INTO invoice (invoice_id, account_id, currency, subtotal, total, amount_due, issued_at)
VALUES (3, 4, 'KWD', 12.345, 12.345, 12.345, '2024-04-01 09:00+03');
INSERT INTO invoice_line (account_id, invoice_id, line_no, kind, description, amount, source_account_id)
VALUES (4, 3, 1, 'one_time', 'Installation', 12.345, 4);
SELECT finalize_invoice(3);
SQL

fail=0
check() {   # check DESCRIPTION COMMAND...
    local what=$1; shift
    if "$@"; then echo "ok - $what"; else echo "not ok - $what"; fail=1; fi
}
render() {  # render INVOICE_ID NAME: NAME.html, NAME.png, NAME.dom
    local id=$1 name=$2
    psql -X -q -At -v ON_ERROR_STOP=1 -d $db -c "SELECT convbill.invoice_html($id)" > "$work/$name.html"
    chmod 644 "$work/$name.html"
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1240,1754 \
        --screenshot="$work/$name.png" "file://$work/$name.html" >/dev/null 2>&1 || true
    "$CHROMIUM" --headless --no-sandbox --disable-gpu --dump-dom "file://$work/$name.html" \
        > "$work/$name.dom" 2>/dev/null || true
}
size() { stat -c %s "$1" 2>/dev/null || echo 0; }

# an empty page: what "blank" weighs
printf '<!DOCTYPE html><html><body></body></html>\n' > "$work/blank.html"
chmod 644 "$work/blank.html"
"$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1240,1754 \
    --screenshot="$work/blank.png" "file://$work/blank.html" >/dev/null 2>&1 || true

render 1 eur
render 2 jpy
render 3 kwd

blank=$(size "$work/blank.png")
eur=$(size "$work/eur.png")
echo "# screenshot: invoice $eur bytes, empty page $blank bytes"
check "the screenshot is a PNG" bash -c "head -c 8 '$work/eur.png' | od -An -c | grep -q 'P   N   G'"
check "the screenshot is not blank (> 8 x an empty page, > 40 kB)" \
    test "$eur" -gt $((blank * 8)) -a "$eur" -gt 40000
check "the page shows the invoice number INV-000001" grep -q '>INV-000001<' "$work/eur.dom"
check "the page shows the total EUR 1,241.25" grep -q 'id="total">EUR 1,241.25<' "$work/eur.dom"
check "the page shows the amount due EUR 1,141.25" grep -q 'id="amount-due">EUR 1,141.25<' "$work/eur.dom"
check "the page shows the local period 2024-03-01 - 2024-03-31" grep -q '2024-03-01 – 2024-03-31' "$work/eur.dom"
check "the sub-account has its section" grep -q 'Field team &lt;b&gt;north&lt;/b&gt;' "$work/eur.dom"
check "a name with <script> is text, not an element" \
    bash -c "! grep -qi '<script' '$work/eur.dom' && grep -q 'Smith &lt;script&gt;' '$work/eur.dom'"
check "no script ran (the title is still the invoice's)" grep -q '<title>Invoice INV-000001</title>' "$work/eur.dom"
check "JPY in whole yen: JPY 1,234,567" grep -q 'id="total">JPY 1,234,567<' "$work/jpy.dom"
check "KWD with three decimals: KWD 12.345" grep -q 'id="total">KWD 12.345<' "$work/kwd.dom"
check "JPY and KWD pages render" test "$(size "$work/jpy.png")" -gt $((blank * 4)) -a "$(size "$work/kwd.png")" -gt $((blank * 4))

[ -n "${KEEP_RENDER:-}" ] && cp "$work/eur.png" "$KEEP_RENDER"
psql -X -q -d postgres -c "DROP DATABASE $db" >/dev/null
exit $fail
