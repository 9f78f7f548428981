-------------------------------------------------------------------------------
-- Presenting invoices.
--
--   seller        who issues the invoices (one row: name, address, tax id, ...)
--   invoice_json  an invoice or credit note as a JSON document: header, seller,
--                 customer, period in the account's time zone, lines by
--                 sub-account section, discounts, taxes, totals and (final
--                 invoices) what is paid, credited and open
--   invoice_html  the same as a self-contained printable HTML page (A4, inline
--                 CSS, no scripts, images or other external resources), drawn
--                 from invoice_json; every text from the database is escaped
--
-- Amounts: JSON numbers rounded to the currency's minor unit (12.50 EUR,
-- 1250 JPY, 1.250 KWD); HTML shows them with that many decimals, a "." before
-- the decimals and "," between thousands (format_amount).  Dates are local
-- dates in the account's time zone; a period is shown by its first and last
-- day (its end is exclusive).
--
-- The document is drawn from the current rows: the lines, totals and dates of
-- a final invoice never change, but the seller's and the account's names are
-- read when rendering.
-------------------------------------------------------------------------------

CREATE TABLE @extschema@.seller (
    seller          boolean PRIMARY KEY DEFAULT true CHECK (seller),  -- one row only
    name            text NOT NULL,
    address         text,                   -- lines separated by newlines
    tax_id          text,
    email           text,
    payment_details text                    -- e.g. bank account, printed in the footer
);
COMMENT ON TABLE @extschema@.seller IS
    'the issuer printed on invoices (a single row): name, address (newline-separated), tax id, e-mail, payment details';
SELECT pg_catalog.pg_extension_config_dump('@extschema@.seller', '');

-- Text made safe for HTML element content and quoted attribute values.
CREATE FUNCTION @extschema@.html_escape(s text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(pg_catalog.replace(
           s, '&', '&amp;'), '<', '&lt;'), '>', '&gt;'), '"', '&quot;'), '''', '&#39;');
COMMENT ON FUNCTION @extschema@.html_escape(text) IS
    'escape & < > " and '' for HTML text and attribute values';

-- Digits of a plain decimal with "," between groups of three in the integer part.
CREATE FUNCTION @extschema@.group_digits(s text)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN pg_catalog.regexp_replace(pg_catalog.split_part(s, '.', 1), '(\d)(?=(\d{3})+$)', '\1,', 'g')
       OPERATOR(pg_catalog.||)
       CASE WHEN pg_catalog.strpos(s, '.') OPERATOR(pg_catalog.>) 0
            THEN '.' OPERATOR(pg_catalog.||) pg_catalog.split_part(s, '.', 2) ELSE '' END;
COMMENT ON FUNCTION @extschema@.group_digits(text) IS
    'internal: 1234567.5 -> 1,234,567.5 (the text of a numeric)';

-- An amount in a currency's minor unit: 1,234.50 (EUR), 1,235 (JPY), 1.250 (KWD).
CREATE FUNCTION @extschema@.format_amount(amount numeric, currency text)
RETURNS text
LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e integer := @extschema@.currency_exponent(currency);
BEGIN
    IF e IS NULL THEN
        RAISE EXCEPTION 'format_amount: unknown currency "%"', currency USING ERRCODE = '22023';
    END IF;
    IF amount = 'NaN' OR amount IN ('Infinity', '-Infinity') THEN
        RAISE EXCEPTION 'format_amount: amount must be finite, not %', amount USING ERRCODE = '22023';
    END IF;
    RETURN @extschema@.group_digits(round(amount, e)::text);
END $$;
COMMENT ON FUNCTION @extschema@.format_amount(numeric, text) IS
    'an amount rounded (half-up) to the currency''s minor unit with exactly that many decimals and "," between thousands: 1,234.50 EUR, 1,235 JPY, 1.250 KWD';

-------------------------------------------------------------------------------
-- invoice_json
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.invoice_json(invoice_id bigint)
RETURNS jsonb
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_invoice_id ALIAS FOR $1;
    acc bigint := @extschema@.invoice_account(p_invoice_id, 'invoice_json');
    inv @extschema@.invoice;
    a @extschema@.account;
    e integer;
    doc jsonb;
BEGIN
    SELECT * INTO inv FROM @extschema@.invoice WHERE account_id = acc AND invoice_id = p_invoice_id;
    SELECT * INTO a FROM @extschema@.account WHERE account_id = acc;
    e := @extschema@.currency_exponent(inv.currency);
    WITH l AS (
        SELECT l.*, s.unit,
               CASE l.kind WHEN 'recurring' THEN 1 WHEN 'usage' THEN 2 WHEN 'one_time' THEN 3
                           WHEN 'adjustment' THEN 4 WHEN 'credit' THEN 5 WHEN 'discount' THEN 6 ELSE 7 END AS ord,
               jsonb_build_object('line_no', l.line_no, 'kind', l.kind, 'service', l.service, 'unit', s.unit,
                                  'zone', l.zone, 'description', l.description, 'quantity', l.quantity,
                                  'amount', round(l.amount, e), 'source_account_id', l.source_account_id,
                                  'subscription_id', l.subscription_id, 'plan_code', l.plan_code,
                                  'discount_id', l.discount_id, 'tax_code', l.tax_code, 'tax_rate', l.tax_rate) AS j
        FROM @extschema@.invoice_line l
        LEFT JOIN @extschema@.service s ON s.code = l.service
        WHERE l.account_id = acc AND l.invoice_id = p_invoice_id
    ),
    sections AS (
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'account_id', x.source_account_id, 'external_ref', sa.external_ref, 'name', sa.name,
                   'subtotal', round(x.subtotal, e), 'lines', x.lines)
                   ORDER BY x.source_account_id <> acc, x.source_account_id), '[]') AS j
        FROM (SELECT l.source_account_id, sum(l.amount) AS subtotal,
                     jsonb_agg(l.j ORDER BY l.ord, l.service, l.zone, l.line_no) AS lines
              FROM l WHERE l.kind NOT IN ('discount', 'tax')
              GROUP BY l.source_account_id) x
        LEFT JOIN @extschema@.account sa ON sa.account_id = x.source_account_id
    )
    SELECT jsonb_build_object(
        'invoice_id', inv.invoice_id,
        'account_id', inv.account_id,
        'kind', inv.kind,
        'status', inv.status,
        'series', inv.series,
        'number', inv.number,
        'currency', inv.currency,
        'minor_unit', e,
        'issued_at', inv.issued_at,
        'due_at', inv.due_at,
        'issue_date', (inv.issued_at AT TIME ZONE a.timezone)::date,
        'due_date', (inv.due_at AT TIME ZONE a.timezone)::date,
        'timezone', a.timezone,
        'period', CASE WHEN inv.period_start IS NOT NULL THEN jsonb_build_object(
                      'start', inv.period_start, 'end', inv.period_end,
                      'first_day', (inv.period_start AT TIME ZONE a.timezone)::date,
                      'last_day', ((inv.period_end AT TIME ZONE a.timezone) - interval '1 microsecond')::date) END,
        'seller', (SELECT jsonb_build_object('name', s.name, 'address', s.address, 'tax_id', s.tax_id,
                                             'email', s.email, 'payment_details', s.payment_details)
                   FROM @extschema@.seller s),
        'customer', jsonb_build_object('account_id', a.account_id, 'external_ref', a.external_ref,
                                       'name', a.name, 'tax_code', a.tax_code),
        'credits', CASE WHEN inv.credits_invoice_id IS NOT NULL THEN
                       (SELECT jsonb_build_object('invoice_id', o.invoice_id, 'number', o.number,
                                                  'issue_date', (o.issued_at AT TIME ZONE a.timezone)::date)
                        FROM @extschema@.invoice o
                        WHERE o.account_id = acc AND o.invoice_id = inv.credits_invoice_id) END,
        'reason', inv.reason,
        'sections', (SELECT sections.j FROM sections),
        'discounts', (SELECT coalesce(jsonb_agg(l.j ORDER BY l.line_no), '[]') FROM l WHERE l.kind = 'discount'),
        'taxes', (SELECT coalesce(jsonb_agg(l.j ORDER BY l.line_no), '[]') FROM l WHERE l.kind = 'tax'),
        'totals', jsonb_build_object('subtotal', round(inv.subtotal, e), 'discount', round(inv.discount, e),
                                     'tax', round(inv.tax, e), 'total', round(inv.total, e),
                                     'prepaid_applied', round(inv.prepaid_applied, e),
                                     'amount_due', round(inv.amount_due, e)),
        'settlement', (SELECT jsonb_build_object('paid', round(st.paid, e), 'credited', round(st.credited, e),
                                                 'open', round(st.open, e))
                       FROM @extschema@.invoice_settlement st
                       WHERE st.account_id = acc AND st.invoice_id = p_invoice_id))
    INTO doc;
    RETURN doc;
END $$;
COMMENT ON FUNCTION @extschema@.invoice_json(bigint) IS
    'an invoice or credit note as JSON: header, seller, customer, local period, lines by sub-account section (fees, usage, one-time, adjustments), discounts, taxes, totals and, once final, paid/credited/open; amounts rounded to the currency''s minor unit';

-------------------------------------------------------------------------------
-- invoice_html
-------------------------------------------------------------------------------

-- The label of an invoice line: its description, else what it is.
CREATE FUNCTION @extschema@.invoice_line_label(l jsonb)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN coalesce(l OPERATOR(pg_catalog.->>) 'description',
                CASE l OPERATOR(pg_catalog.->>) 'kind'
                    WHEN 'recurring' THEN 'Recurring fee ' OPERATOR(pg_catalog.||) coalesce(l OPERATOR(pg_catalog.->>) 'plan_code', '')
                    WHEN 'usage' THEN 'Usage ' OPERATOR(pg_catalog.||) coalesce(l OPERATOR(pg_catalog.->>) 'service', '')
                         OPERATOR(pg_catalog.||) coalesce(' (' OPERATOR(pg_catalog.||) (l OPERATOR(pg_catalog.->>) 'zone') OPERATOR(pg_catalog.||) ')', '')
                    WHEN 'one_time' THEN 'One-time charge'
                    WHEN 'adjustment' THEN 'Adjustment'
                    WHEN 'discount' THEN 'Discount'
                    WHEN 'tax' THEN 'Tax ' OPERATOR(pg_catalog.||) coalesce(l OPERATOR(pg_catalog.->>) 'tax_code', '')
                    ELSE 'Credit' END);
COMMENT ON FUNCTION @extschema@.invoice_line_label(jsonb) IS
    'internal: the text shown for an invoice line (its description, else its kind and service)';

CREATE FUNCTION @extschema@.invoice_html(invoice_id bigint)
RETURNS text
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_invoice_id ALIAS FOR $1;
    d jsonb := @extschema@.invoice_json(p_invoice_id);
    cur text := d->>'currency';
    credit boolean := d->>'kind' = 'credit_note';
    title text := CASE WHEN credit THEN 'Credit note' ELSE 'Invoice' END;
    num text := coalesce(d->>'number', 'DRAFT');
    h text;
    sec jsonb;
    l jsonb;
    t jsonb := d->'totals';
    section_name text;
BEGIN
    h := '<!DOCTYPE html>' || E'\n' || '<html lang="en"><head><meta charset="utf-8">'
      || '<meta name="viewport" content="width=device-width, initial-scale=1">'
      || '<title>' || @extschema@.html_escape(title || ' ' || num) || '</title><style>'
      || '@page{size:A4;margin:14mm}'
      || '*{box-sizing:border-box}'
      || 'body{font-family:"DejaVu Sans","Liberation Sans",Arial,Helvetica,sans-serif;font-size:10.5pt;color:#1d2430;margin:0;padding:40px 48px;background:#fff;position:relative}'
      || 'header{display:flex;justify-content:space-between;align-items:flex-start;border-bottom:3px solid #1f4e79;padding-bottom:16px;margin-bottom:20px}'
      || '.seller-name{font-size:16pt;font-weight:bold;color:#1f4e79}'
      || '.muted{color:#5b6675}'
      || 'h1{font-size:22pt;margin:0 0 8px;color:#1f4e79;text-align:right;letter-spacing:.5px}'
      || 'h2{font-size:11pt;margin:0 0 6px;text-transform:uppercase;letter-spacing:.6px;color:#5b6675}'
      || 'h3{font-size:11pt;margin:18px 0 6px;color:#1f4e79}'
      || 'table{border-collapse:collapse;width:100%}'
      || 'table.meta{width:auto;margin-left:auto}'
      || 'table.meta th{text-align:left;font-weight:normal;color:#5b6675;padding:2px 12px 2px 0}'
      || 'table.meta td{text-align:right;padding:2px 0;font-weight:bold}'
      || '.parties{display:flex;justify-content:space-between;margin-bottom:8px}'
      || '.customer{border:1px solid #d5dbe3;border-radius:4px;padding:10px 14px;min-width:45%}'
      || 'table.lines{table-layout:fixed}'
      || 'table.lines th{background:#eef2f7;text-align:left;padding:6px 8px;font-size:9.5pt;border-bottom:1px solid #c7d0db}'
      || 'table.lines th.num{text-align:right}'
      || 'table.lines td{padding:5px 8px;border-bottom:1px solid #e6eaf0;vertical-align:top}'
      || 'table.lines tr.sub td{font-weight:bold;border-bottom:none;border-top:1px solid #c7d0db}'
      || '.num{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}'
      || 'table.totals{width:46%;margin:22px 0 0 auto}'
      || 'table.totals th{text-align:left;font-weight:normal;padding:4px 8px}'
      || 'table.totals td{padding:4px 8px}'
      || 'table.totals tr.total th,table.totals tr.total td{font-weight:bold;border-top:1px solid #1d2430}'
      || 'table.totals tr.due th,table.totals tr.due td{font-weight:bold;font-size:12pt;background:#1f4e79;color:#fff}'
      || 'footer{margin-top:36px;padding-top:10px;border-top:1px solid #d5dbe3;font-size:9pt;color:#5b6675}'
      || '.stamp{position:absolute;top:260px;left:0;right:0;text-align:center;font-size:96pt;font-weight:bold;color:rgba(200,30,30,.13);transform:rotate(-18deg);pointer-events:none}'
      || '.note{margin:10px 0;padding:8px 12px;background:#f6f8fb;border-left:3px solid #1f4e79}'
      || '</style></head><body>' || E'\n';
    IF d->>'status' = 'draft' THEN
        h := h || '<div class="stamp">DRAFT</div>';
    ELSIF d->>'status' = 'void' THEN
        h := h || '<div class="stamp">VOID</div>';
    END IF;

    -- header: seller, document title and its dates
    h := h || '<header><div class="seller">';
    IF d->'seller' IS NOT NULL AND jsonb_typeof(d->'seller') = 'object' THEN
        h := h || '<div class="seller-name">' || @extschema@.html_escape(d->'seller'->>'name') || '</div>';
        IF d->'seller'->>'address' IS NOT NULL THEN
            h := h || '<div>' || replace(@extschema@.html_escape(d->'seller'->>'address'), E'\n', '<br>') || '</div>';
        END IF;
        IF d->'seller'->>'tax_id' IS NOT NULL THEN
            h := h || '<div class="muted">Tax ID ' || @extschema@.html_escape(d->'seller'->>'tax_id') || '</div>';
        END IF;
        IF d->'seller'->>'email' IS NOT NULL THEN
            h := h || '<div class="muted">' || @extschema@.html_escape(d->'seller'->>'email') || '</div>';
        END IF;
    END IF;
    h := h || '</div><div class="doc"><h1>' || title || '</h1><table class="meta">'
      || '<tr><th>Number</th><td id="number">' || @extschema@.html_escape(num) || '</td></tr>';
    IF d->>'issue_date' IS NOT NULL THEN
        h := h || '<tr><th>Date</th><td>' || (d->>'issue_date') || '</td></tr>';
    END IF;
    IF d->>'due_date' IS NOT NULL AND NOT credit THEN
        h := h || '<tr><th>Due</th><td>' || (d->>'due_date') || '</td></tr>';
    END IF;
    IF d->'period' IS NOT NULL AND jsonb_typeof(d->'period') = 'object' THEN
        h := h || '<tr><th>Period</th><td>' || (d->'period'->>'first_day') || ' &ndash; '
          || (d->'period'->>'last_day') || '</td></tr>';
    END IF;
    h := h || '<tr><th>Currency</th><td>' || @extschema@.html_escape(cur) || '</td></tr>'
      || '</table></div></header>' || E'\n';

    -- customer
    h := h || '<div class="parties"><div class="customer"><h2>Bill to</h2><div class="seller-name" style="font-size:12pt">'
      || @extschema@.html_escape(d->'customer'->>'name') || '</div>'
      || '<div class="muted">Customer ' || @extschema@.html_escape(d->'customer'->>'external_ref')
      || ' &middot; account ' || (d->'customer'->>'account_id') || '</div>';
    IF d->'customer'->>'tax_code' IS NOT NULL THEN
        h := h || '<div class="muted">Tax code ' || @extschema@.html_escape(d->'customer'->>'tax_code') || '</div>';
    END IF;
    h := h || '</div></div>' || E'\n';
    IF credit THEN
        h := h || '<div class="note">Credits invoice <b>'
          || @extschema@.html_escape(coalesce(d->'credits'->>'number', '?')) || '</b>'
          || coalesce(' of ' || (d->'credits'->>'issue_date'), '')
          || coalesce('. Reason: ' || @extschema@.html_escape(d->>'reason'), '') || '</div>';
    END IF;

    -- one section per (sub-)account: fees, usage, one-time charges, adjustments
    FOR sec IN SELECT e.value FROM jsonb_array_elements(d->'sections') e LOOP
        h := h || '<section><h3>' || @extschema@.html_escape(coalesce(sec->>'name', 'Account ' || (sec->>'account_id')))
          || coalesce(' <span class="muted">(' || @extschema@.html_escape(sec->>'external_ref') || ')</span>', '')
          || '</h3><table class="lines"><colgroup><col style="width:50%"><col style="width:16%">'
          || '<col style="width:17%"><col style="width:17%"></colgroup><thead><tr><th>Description</th><th>Service</th>'
          || '<th class="num">Quantity</th><th class="num">Amount (' || @extschema@.html_escape(cur) || ')</th></tr></thead><tbody>';
        FOR l IN SELECT e.value FROM jsonb_array_elements(sec->'lines') e LOOP
            h := h || '<tr><td>' || @extschema@.html_escape(@extschema@.invoice_line_label(l)) || '</td><td>'
              || @extschema@.html_escape(coalesce(l->>'service', '') || coalesce(' / ' || (l->>'zone'), '')) || '</td><td class="num">'
              || coalesce(@extschema@.html_escape(@extschema@.group_digits(trim_scale((l->>'quantity')::numeric)::text)
                          || coalesce(' ' || (l->>'unit'), '')), '')
              || '</td><td class="num">' || @extschema@.format_amount((l->>'amount')::numeric, cur) || '</td></tr>';
        END LOOP;
        h := h || '<tr class="sub"><td colspan="3">Subtotal ' || @extschema@.html_escape(coalesce(sec->>'name', ''))
          || '</td><td class="num">' || @extschema@.format_amount((sec->>'subtotal')::numeric, cur)
          || '</td></tr></tbody></table></section>' || E'\n';
    END LOOP;

    -- discounts and taxes
    IF jsonb_array_length(d->'discounts') > 0 THEN
        h := h || '<section><h3>Discounts</h3><table class="lines"><colgroup><col style="width:50%">'
          || '<col style="width:33%"><col style="width:17%"></colgroup><thead><tr><th>Description</th><th>Account</th>'
          || '<th class="num">Amount (' || @extschema@.html_escape(cur) || ')</th></tr></thead><tbody>';
        FOR l IN SELECT e.value FROM jsonb_array_elements(d->'discounts') e LOOP
            section_name := (SELECT s->>'name' FROM jsonb_array_elements(d->'sections') s
                             WHERE s->>'account_id' = l->>'source_account_id');
            h := h || '<tr><td>' || @extschema@.html_escape(@extschema@.invoice_line_label(l)) || '</td><td>'
              || @extschema@.html_escape(coalesce(section_name, '')) || '</td><td class="num">'
              || @extschema@.format_amount((l->>'amount')::numeric, cur) || '</td></tr>';
        END LOOP;
        h := h || '</tbody></table></section>' || E'\n';
    END IF;
    IF jsonb_array_length(d->'taxes') > 0 THEN
        h := h || '<section><h3>Taxes</h3><table class="lines"><colgroup><col style="width:66%">'
          || '<col style="width:17%"><col style="width:17%"></colgroup><thead><tr><th>Description</th><th class="num">Rate</th>'
          || '<th class="num">Amount (' || @extschema@.html_escape(cur) || ')</th></tr></thead><tbody>';
        FOR l IN SELECT e.value FROM jsonb_array_elements(d->'taxes') e LOOP
            h := h || '<tr><td>' || @extschema@.html_escape(@extschema@.invoice_line_label(l)) || '</td><td class="num">'
              || coalesce(trim_scale((l->>'tax_rate')::numeric)::text || ' %', '') || '</td><td class="num">'
              || @extschema@.format_amount((l->>'amount')::numeric, cur) || '</td></tr>';
        END LOOP;
        h := h || '</tbody></table></section>' || E'\n';
    END IF;

    -- totals
    h := h || '<table class="totals">'
      || '<tr><th>Subtotal</th><td class="num">' || @extschema@.format_amount((t->>'subtotal')::numeric, cur) || '</td></tr>';
    IF (t->>'discount')::numeric <> 0 THEN
        h := h || '<tr><th>Discount</th><td class="num">' || @extschema@.format_amount((t->>'discount')::numeric, cur) || '</td></tr>';
    END IF;
    h := h || '<tr><th>Tax</th><td class="num">' || @extschema@.format_amount((t->>'tax')::numeric, cur) || '</td></tr>'
      || '<tr class="total"><th>Total</th><td class="num" id="total">' || @extschema@.html_escape(cur) || ' '
      || @extschema@.format_amount((t->>'total')::numeric, cur) || '</td></tr>';
    IF NOT credit THEN
        h := h || '<tr><th>Prepaid balance applied</th><td class="num">'
          || @extschema@.format_amount(-(t->>'prepaid_applied')::numeric, cur) || '</td></tr>'
          || '<tr class="due"><th>Amount due</th><td class="num" id="amount-due">' || @extschema@.html_escape(cur) || ' '
          || @extschema@.format_amount((t->>'amount_due')::numeric, cur) || '</td></tr>';
    END IF;
    h := h || '</table>' || E'\n';

    -- footer
    h := h || '<footer>';
    -- what is still open (a final invoice: amount due less payments and
    -- credit notes; nothing for a void one)
    IF NOT credit AND d->>'due_date' IS NOT NULL
       AND coalesce((d->'settlement'->>'open')::numeric, (t->>'amount_due')::numeric) > 0
       AND d->>'status' <> 'void' THEN
        h := h || '<div>Please pay ' || @extschema@.html_escape(cur) || ' '
          || @extschema@.format_amount(coalesce((d->'settlement'->>'open')::numeric, (t->>'amount_due')::numeric), cur)
          || ' by ' || (d->>'due_date') || ', quoting ' || @extschema@.html_escape(num) || '.</div>';
    ELSIF NOT credit AND d->>'status' = 'void' THEN
        h := h || '<div>Credited in full: nothing to pay.</div>';
    ELSIF NOT credit AND d->>'due_date' IS NOT NULL THEN
        h := h || '<div>Nothing to pay.</div>';
    END IF;
    IF d->'seller'->>'payment_details' IS NOT NULL THEN
        h := h || '<div>' || replace(@extschema@.html_escape(d->'seller'->>'payment_details'), E'\n', '<br>') || '</div>';
    END IF;
    h := h || '<div>Dates in ' || @extschema@.html_escape(d->>'timezone') || '.</div></footer>'
      || E'\n</body></html>\n';
    RETURN h;
END $$;
COMMENT ON FUNCTION @extschema@.invoice_html(bigint) IS
    'an invoice or credit note as a self-contained printable HTML page (A4, inline CSS, no external resources): seller and customer, number (or DRAFT), local period, lines by sub-account and service, discounts, taxes, totals, prepaid applied, amount due; all text escaped';
