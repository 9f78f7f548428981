-- Invoice lifecycle and presentation (SPEC section 5): finalize_invoice with
-- gap-free numbers, immutability of final invoices, credit notes, payments
-- allocated oldest first, account_statement, invoice_json and invoice_html.
-- Invoices are made here by plain INSERTs (drafts with their lines), not by
-- the bill run.  Every expected number is worked out in the comment next to
-- it; times printed are fixed ones, now() is only compared with.
SET client_min_messages = warning;
DROP EXTENSION IF EXISTS convbill CASCADE;
CREATE EXTENSION convbill;
RESET client_min_messages;
SET search_path = convbill, public;
SET TimeZone = 'UTC';
\set VERBOSITY terse
\set SHOW_CONTEXT never

-- errors as "SQLSTATE: message", so each refusal shows its code
CREATE FUNCTION pg_temp.fails(q text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END $$;
-- a draft invoice with its totals; the lines are inserted separately
CREATE FUNCTION pg_temp.draft(id bigint, acc bigint, cur text, sub numeric, disc numeric, tax numeric,
                              prepaid numeric DEFAULT 0, issued timestamptz DEFAULT NULL,
                              ps timestamptz DEFAULT NULL, pe timestamptz DEFAULT NULL, ser text DEFAULT 'INV')
RETURNS bigint LANGUAGE sql AS $$
    INSERT INTO convbill.invoice (invoice_id, account_id, period_start, period_end, currency, series,
                                  subtotal, discount, tax, total, prepaid_applied, amount_due, issued_at)
    VALUES (id, acc, ps, pe, cur, ser, sub, disc, tax, sub + disc + tax, prepaid, sub + disc + tax - prepaid, issued)
    RETURNING invoice_id
$$;
-- one line
CREATE FUNCTION pg_temp.line(inv bigint, no integer, k text, amt numeric, src bigint DEFAULT NULL,
                             svc text DEFAULT NULL, qty numeric DEFAULT NULL, descr text DEFAULT NULL)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO convbill.invoice_line (account_id, invoice_id, line_no, kind, service, description, quantity,
                                       amount, source_account_id)
    SELECT i.account_id, inv, no, k, svc, descr, qty, amt, coalesce(src, i.account_id)
    FROM convbill.invoice i WHERE i.invoice_id = inv
$$;
-- the account's main money bucket and whether the ledger adds up to it
CREATE FUNCTION pg_temp.money(acc bigint)
RETURNS TABLE (balance numeric, ledger_sum numeric)
LANGUAGE sql AS $$
    SELECT b.balance, (SELECT sum(l.amount) FROM convbill.ledger l
                       WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id)
    FROM convbill.bucket b WHERE b.account_id = acc AND b.origin = 'main'
$$;

INSERT INTO service VALUES ('voice', 'second'), ('sms', 'message');
INSERT INTO seller (name, address, tax_id, email, payment_details) VALUES
    ('Telco & Sons GmbH', E'Hauptstrasse 1\n10115 Berlin', 'DE123456789', 'billing@telco.example',
     'IBAN DE00 1234 5678 9012 3456 78');
INSERT INTO account (account_id, external_ref, name, currency, timezone, parent_id, bill_to_parent, tax_code) VALUES
    (100, 'ACME', 'Acme Ltd', 'EUR', 'Europe/Berlin', NULL, false, 'VAT'),
    (101, 'ACME-SUB', 'Acme Field Team', 'EUR', 'Europe/Berlin', 100, true, NULL),
    (200, 'NIPPON', 'Nippon KK', 'JPY', 'Asia/Tokyo', NULL, false, NULL),
    (300, 'GULF', 'Gulf Trading', 'KWD', 'Asia/Kuwait', NULL, false, NULL),
    (400, 'PAYER', 'Payer Inc', 'EUR', 'UTC', NULL, false, NULL),
    (500, 'EVIL', 'Evil <script>alert("x")</script> & Sons', 'EUR', 'UTC', NULL, false, NULL);

-------------------------------------------------------------------------------
-- finalize_invoice
-------------------------------------------------------------------------------
-- 1001, Acme, March 2024 in Berlin: fee 10.00 + voice 12.34 (Acme) + sms 1.20
-- (the sub-account) = subtotal 23.54; discount -2.00; VAT 19 % of 21.54 =
-- 4.0926 -> 4.09; total 23.54 - 2.00 + 4.09 = 25.63; prepaid 5.00, due 20.63.
-- Issued 2024-03-20 12:00 Berlin (+01); due 14 local days later, 2024-04-03
-- 12:00 Berlin, which is +02 by then: 10:00 UTC (not 11:00).
SELECT pg_temp.draft(1001, 100, 'EUR', 23.54, -2.00, 4.09, 5.00, '2024-03-20 12:00+01',
                     '2024-03-01 00:00+01', '2024-04-01 00:00+02');
SELECT pg_temp.line(1001, 1, 'recurring', 10.00, NULL, NULL, 1, 'Business plan');
SELECT pg_temp.line(1001, 2, 'usage', 12.34, NULL, 'voice', 3600.000, NULL);
SELECT pg_temp.line(1001, 3, 'usage', 1.20, 101, 'sms', 12, 'Text messages');
SELECT pg_temp.line(1001, 4, 'discount', -2.00, NULL, NULL, NULL, 'Loyalty 2.00 off');
INSERT INTO invoice_line (account_id, invoice_id, line_no, kind, description, amount, source_account_id, tax_code, tax_rate)
VALUES (100, 1001, 5, 'tax', 'VAT 19 %', 4.09, 100, 'VAT', 19);
-- 1002 and 1003: 10.00 each, one line
SELECT pg_temp.draft(1002, 100, 'EUR', 10.00, 0, 0);
SELECT pg_temp.line(1002, 1, 'one_time', 9.99);     -- wrong on purpose: 9.99 <> 10.00
SELECT pg_temp.draft(1003, 400, 'EUR', 10.00, 0, 0);
SELECT pg_temp.line(1003, 1, 'one_time', 10.00);

-- refusals: the lines must make up the totals exactly, rounded to the minor unit
SELECT pg_temp.fails('SELECT convbill.finalize_invoice(1002)') AS sum_mismatch;
UPDATE invoice_line SET amount = 10.004 WHERE invoice_id = 1002;       -- a draft may change
SELECT pg_temp.fails('SELECT convbill.finalize_invoice(1002)') AS unrounded;
UPDATE invoice_line SET amount = 10.00, kind = 'tax' WHERE invoice_id = 1002;
SELECT pg_temp.fails('SELECT convbill.finalize_invoice(1002)') AS breakdown_mismatch;
UPDATE invoice_line SET kind = 'one_time' WHERE invoice_id = 1002;
SELECT pg_temp.fails('SELECT convbill.finalize_invoice(999999)') AS unknown;
SELECT pg_temp.fails('SELECT convbill.finalize_invoice(NULL)') AS null_id;
-- the same check guards a hand-made UPDATE to final
SELECT pg_temp.fails($$UPDATE convbill.invoice SET status = 'final', number = 'X-1', total = 11.00, subtotal = 11.00,
                       amount_due = 11.00 WHERE invoice_id = 1002$$) AS update_to_final;
-- nothing was numbered by the failures
SELECT count(*) AS series_rows FROM invoice_series;

-- gap-free: a rolled-back number is given again
SELECT finalize_invoice(1001);                                          -- INV-000001
BEGIN;
SELECT finalize_invoice(1002);                                          -- INV-000002 ...
ROLLBACK;                                                               -- ... given back
SELECT finalize_invoice(1003);                                          -- INV-000002 again
SELECT finalize_invoice(1002);                                          -- INV-000003
-- a failure inside a savepoint gives its number back too
BEGIN;
SELECT pg_temp.draft(1004, 400, 'EUR', 5.00, 0, 0);
SELECT pg_temp.line(1004, 1, 'one_time', 5.00);
SAVEPOINT s;
SELECT finalize_invoice(1004);                                          -- INV-000004 ...
ROLLBACK TO SAVEPOINT s;                                                -- ... given back
SELECT finalize_invoice(1004);                                          -- INV-000004
COMMIT;
SELECT finalize_invoice(1001) AS again;                                 -- idempotent: INV-000001
SELECT * FROM invoice_series ORDER BY series;                           -- INV 4
SELECT invoice_id, number, status, issued_at, due_at FROM invoice WHERE invoice_id = 1001;
-- no issued_at given: now, and due 14 local days later
SELECT issued_at <= now() AND issued_at > now() - interval '1 hour' AS issued_now,
       (due_at AT TIME ZONE 'UTC')::date - (issued_at AT TIME ZONE 'UTC')::date AS terms_days
FROM invoice WHERE invoice_id = 1003;
-- payment terms per account; a due_at set by the bill run is kept
UPDATE account SET payment_terms = 30 WHERE account_id = 200;
SELECT pg_temp.fails('UPDATE convbill.account SET payment_terms = -1 WHERE account_id = 200') AS bad_terms;
-- 2001, Nippon, JPY: 1000 + 234 = 1234, issued 2024-05-01 09:00 Tokyo, due +30 days;
-- 2002 with due_at set beforehand
SELECT pg_temp.draft(2001, 200, 'JPY', 1234, 0, 0, 0, '2024-05-01 09:00+09',
                     '2024-04-01 00:00+09', '2024-05-01 00:00+09');
SELECT pg_temp.line(2001, 1, 'recurring', 1000, NULL, NULL, 1, 'Plan S');
SELECT pg_temp.line(2001, 2, 'usage', 234, NULL, 'voice', 1170);
SELECT pg_temp.draft(2002, 200, 'JPY', 0, 0, 0, 0, '2024-05-01 09:00+09');
UPDATE invoice SET due_at = '2024-05-02 09:00+09' WHERE invoice_id = 2002;
SELECT finalize_invoice(2001), finalize_invoice(2002);                  -- INV-000005, INV-000006 (empty invoice)
SELECT invoice_id, number, due_at FROM invoice WHERE account_id = 200 ORDER BY invoice_id;
-- other series; numbers past 999999 are written in full
SELECT pg_temp.draft(3001, 300, 'KWD', 1.250, 0, 0, 0, '2024-05-01 09:00+03',
                     '2024-04-01 00:00+03', '2024-05-01 00:00+03', 'KW');
SELECT pg_temp.line(3001, 1, 'one_time', 1.250, NULL, NULL, NULL, 'Setup fee');
INSERT INTO invoice_series VALUES ('KW', 999999);
SELECT finalize_invoice(3001);                                          -- KW-1000000
SELECT invoice_number('INV', 42) AS n42, invoice_number('INV', 123456) AS n6;
SELECT pg_temp.draft(3002, 300, 'KWD', 0, 0, 0, ser => 'bad series!');
SELECT pg_temp.fails('SELECT convbill.finalize_invoice(3002)') AS bad_series;
DELETE FROM invoice WHERE invoice_id = 3002;                            -- a draft may go

-------------------------------------------------------------------------------
-- immutability
-------------------------------------------------------------------------------
SELECT pg_temp.fails('UPDATE convbill.invoice SET total = 0, subtotal = 0, discount = 0, tax = 0, prepaid_applied = 0, amount_due = 0 WHERE invoice_id = 1001') AS update_final;
SELECT pg_temp.fails('UPDATE convbill.invoice SET due_at = due_at + interval ''1 day'' WHERE invoice_id = 1001') AS update_due;
SELECT pg_temp.fails('UPDATE convbill.invoice SET status = ''draft'', number = NULL WHERE invoice_id = 1001') AS back_to_draft;
SELECT pg_temp.fails('UPDATE convbill.invoice SET status = ''void'' WHERE invoice_id = 1001') AS void_by_hand;
SELECT pg_temp.fails('DELETE FROM convbill.invoice WHERE invoice_id = 1003') AS delete_final;
SELECT pg_temp.fails('UPDATE convbill.invoice_line SET amount = 0 WHERE invoice_id = 1001 AND line_no = 1') AS update_line;
SELECT pg_temp.fails('UPDATE convbill.invoice_line SET description = ''x'' WHERE invoice_id = 1001 AND line_no = 1') AS update_line_text;
SELECT pg_temp.fails('DELETE FROM convbill.invoice_line WHERE invoice_id = 1001') AS delete_lines;
SELECT pg_temp.fails('SELECT pg_temp.line(1001, 9, ''one_time'', 0)') AS add_line;
SELECT pg_temp.fails('TRUNCATE convbill.invoice_line') AS truncate_lines;
SELECT pg_temp.fails('TRUNCATE convbill.invoice CASCADE') AS truncate_invoices;
SELECT pg_temp.fails($$INSERT INTO convbill.invoice (account_id, status, number, currency) VALUES (400, 'final', 'INV-999999', 'EUR')$$) AS insert_final;
-- a line moved from a draft into a final invoice is refused too
SELECT pg_temp.draft(1005, 100, 'EUR', 1.00, 0, 0);
SELECT pg_temp.line(1005, 1, 'one_time', 1.00);
SELECT pg_temp.fails('UPDATE convbill.invoice_line SET invoice_id = 1001, line_no = 99 WHERE invoice_id = 1005') AS move_line;
SELECT pg_temp.fails('UPDATE convbill.invoice SET status = ''void'', number = ''V-1'' WHERE invoice_id = 1005') AS void_draft;
DELETE FROM invoice_line WHERE invoice_id = 1005;
DELETE FROM invoice WHERE invoice_id = 1005;
-- everything is as it was
SELECT invoice_id, number, status, total, (SELECT count(*) FROM invoice_line l WHERE l.invoice_id = i.invoice_id) AS lines
FROM invoice i ORDER BY invoice_id;

-------------------------------------------------------------------------------
-- invoice_json and invoice_html (1001 before any credit note)
-------------------------------------------------------------------------------
SELECT jsonb_pretty(invoice_json(1001));
SELECT invoice_json(1001) #>> '{sections,1,name}' AS second_section,
       invoice_json(2001) -> 'totals' AS jpy_totals,
       invoice_json(3001) -> 'totals' ->> 'total' AS kwd_total,
       invoice_json(1002) -> 'settlement' AS settlement_1002;
SELECT pg_temp.fails('SELECT convbill.invoice_json(999999)') AS json_unknown;
-- amounts in the currency's minor unit, half-up
SELECT format_amount(1234567.891, 'EUR') AS eur, format_amount(-0.5, 'EUR') AS eur_neg,
       format_amount(1234.5, 'JPY') AS jpy, format_amount(-1234.5, 'JPY') AS jpy_neg,
       format_amount(1.2345, 'KWD') AS kwd, format_amount(0, 'KWD') AS kwd_zero,
       format_amount(999.9999, 'KWD') AS kwd_carry;
SELECT pg_temp.fails('SELECT convbill.format_amount(1, ''ZZZ'')') AS bad_currency;
SELECT pg_temp.fails('SELECT convbill.format_amount(''NaN'', ''EUR'')') AS nan;
SELECT html_escape($$<a href="x">Tom & Jerry's</a>$$) AS escaped;
-- the pages: totals as printed, sections in order, self-contained
SELECT h ~ '<td class="num" id="total">EUR 25\.63</td>' AS eur_total,
       h ~ '<td class="num" id="amount-due">EUR 20\.63</td>' AS eur_due,
       h ~ 'Prepaid balance applied</th><td class="num">-5\.00<' AS prepaid,
       h ~ '>INV-000001<' AS number,
       h ~ '2024-03-01 &ndash; 2024-03-31' AS local_period,
       h ~ '>2024-04-03<' AS due_date,
       strpos(h, '>Acme Ltd <') < strpos(h, '>Acme Field Team <') AS payer_section_first,
       h ~ 'Text messages</td><td>sms</td><td class="num">12 message</td><td class="num">1\.20<' AS sms_line,
       h ~ '3,600 second' AS voice_quantity,
       h ~ 'Telco &amp; Sons GmbH' AS seller_escaped,
       h ~ 'Hauptstrasse 1<br>10115 Berlin' AS address,
       h !~* '(https?:|src=|<link|<script|@import|url\()' AS self_contained
FROM invoice_html(1001) h;
SELECT h ~ 'id="total">JPY 1,234<' AS jpy_total, h ~ '>234<' AS jpy_line, h ~ '1,170 second' AS qty
FROM invoice_html(2001) h;
SELECT h ~ 'id="total">KWD 1\.250<' AS kwd_total, h ~ '>KW-1000000<' AS number FROM invoice_html(3001) h;
-- text from the database is escaped: no script element can come from a name
SELECT pg_temp.draft(5001, 500, 'EUR', 3.50, 0, 0);
SELECT pg_temp.line(5001, 1, 'one_time', 3.50, NULL, NULL, NULL, $$<img src=x onerror="alert(1)"> & 'more'$$);
SELECT h ~ '>DRAFT<' AS draft_number, h ~ 'class="stamp">DRAFT' AS draft_stamp,
       strpos(h, '<script') AS script_tags, strpos(h, '<img') AS img_tags,
       h ~ 'Evil &lt;script&gt;alert\(&quot;x&quot;\)&lt;/script&gt; &amp; Sons' AS name_escaped,
       h ~ '&lt;img src=x onerror=&quot;alert\(1\)&quot;&gt; &amp; &#39;more&#39;' AS description_escaped
FROM invoice_html(5001) h;
SELECT invoice_json(5001) -> 'customer' ->> 'name' AS json_name_raw, invoice_json(5001) ->> 'number' AS json_number;

-------------------------------------------------------------------------------
-- credit notes: 1001 (total 25.63, due 20.63) credited 5.63, then the rest
-------------------------------------------------------------------------------
SELECT pg_temp.fails('SELECT convbill.credit_note(1001, 0, ''x'')') AS zero;
SELECT pg_temp.fails('SELECT convbill.credit_note(1001, -1, ''x'')') AS negative;
SELECT pg_temp.fails('SELECT convbill.credit_note(1001, ''NaN'', ''x'')') AS nan;
SELECT pg_temp.fails('SELECT convbill.credit_note(1001, 25.64, ''x'')') AS too_much;
SELECT pg_temp.fails('SELECT convbill.credit_note(1001, 1.001, ''x'')') AS decimals;
SELECT pg_temp.fails('SELECT convbill.credit_note(1001, 1, NULL)') AS null_reason;
SELECT pg_temp.fails('SELECT convbill.credit_note(1001, 1, '' '')') AS empty_reason;
SELECT pg_temp.fails('SELECT convbill.credit_note(5001, 1, ''x'')') AS draft;
SELECT pg_temp.fails('SELECT convbill.credit_note(999999, 1, ''x'')') AS unknown;
SELECT credit_note(1001, 5.63, 'Dropped calls') AS cn1 \gset
SELECT number AS cn1 FROM invoice WHERE invoice_id = :cn1;   -- CN-000001
SELECT kind, status, series, number, total, subtotal, amount_due, credits_invoice_id, reason, period_start IS NULL AS no_period
FROM invoice WHERE kind = 'credit_note';
SELECT l.line_no, l.kind, l.amount, l.description, l.source_account_id
FROM invoice_line l JOIN invoice i USING (account_id, invoice_id) WHERE i.kind = 'credit_note';
-- 1001 stays final; open = 20.63 - 5.63 = 15.00
SELECT invoice_id, number, status, total, amount_due, paid, credited, open FROM invoice_settlement WHERE invoice_id = 1001;
SELECT pg_temp.fails('SELECT convbill.credit_note(1001, 20.01, ''x'')') AS beyond_rest;    -- 25.63 - 5.63 = 20.00 left
SELECT pg_temp.fails('SELECT convbill.credit_note((SELECT invoice_id FROM convbill.invoice WHERE number = ''CN-000001''), 1, ''x'')') AS credit_a_credit_note;
SELECT pg_temp.fails('UPDATE convbill.invoice SET status = ''void'' WHERE invoice_id = 1001') AS void_partly_credited;
SELECT credit_note(1001, 20.00, 'Contract cancelled') AS cn2 \gset
SELECT number AS cn2 FROM invoice WHERE invoice_id = :cn2;  -- CN-000002
-- credited in full: void; open = max(20.63 - 25.63, 0) = 0
SELECT invoice_id, number, status, total, amount_due, paid, credited, open FROM invoice_settlement WHERE invoice_id = 1001;
SELECT pg_temp.fails('SELECT convbill.credit_note(1001, 0.01, ''x'')') AS void_again;
SELECT pg_temp.fails('SELECT convbill.finalize_invoice(1001)') AS finalize_void;
SELECT pg_temp.fails('UPDATE convbill.invoice SET status = ''final'' WHERE invoice_id = 1001') AS unvoid;
SELECT pg_temp.fails('DELETE FROM convbill.invoice WHERE kind = ''credit_note''') AS delete_credit_note;
-- the money came back: adjustments +5.63 and +20.00 = 25.63 on Acme's main bucket
SELECT kind, amount, reference FROM ledger WHERE account_id = 100 ORDER BY entry_id;
SELECT * FROM pg_temp.money(100);
SELECT * FROM invoice_series ORDER BY series;                           -- CN 2, INV 6, KW 1000000
-- the credit note's page and JSON
SELECT h ~ '<h1>Credit note</h1>' AS title, h ~ 'Credits invoice <b>INV-000001</b> of 2024-03-20' AS credits,
       h ~ 'Reason: Dropped calls' AS reason, h ~ 'id="total">EUR -5\.63<' AS total,
       h !~ 'Amount due' AS no_amount_due
FROM invoice_html((SELECT invoice_id FROM invoice WHERE number = 'CN-000001')) h;
SELECT invoice_json(invoice_id) -> 'credits' ->> 'number' AS credits, invoice_json(invoice_id) -> 'totals' ->> 'total' AS total
FROM invoice WHERE number = 'CN-000002';
-- a void invoice asks for no payment (it did, for its amount due, before)
SELECT h ~ 'class="stamp">VOID' AS void_stamp, h !~ 'Please pay' AS no_payment_asked,
       h ~ 'Credited in full: nothing to pay' AS says_credited FROM invoice_html(1001) h;

-------------------------------------------------------------------------------
-- record_payment: Payer Inc (400) owes, oldest first,
--   A 4002 issued 2024-01-05: 30.00 due
--   B 4001 issued 2024-02-05: total 50.00, prepaid 10.00, due 40.00
--   C 4003 issued 2024-03-05: 20.00 due, credited 5.00 -> 15.00 open
-- (and 1003 = INV-000002, 10.00, issued now: the newest, and 1004 = 5.00)
-------------------------------------------------------------------------------
SELECT pg_temp.draft(4001, 400, 'EUR', 50.00, 0, 0, 10.00, '2024-02-05 10:00+00');
SELECT pg_temp.line(4001, 1, 'one_time', 50.00);
SELECT pg_temp.draft(4002, 400, 'EUR', 30.00, 0, 0, 0, '2024-01-05 10:00+00');
SELECT pg_temp.line(4002, 1, 'one_time', 30.00);
SELECT pg_temp.draft(4003, 400, 'EUR', 20.00, 0, 0, 0, '2024-03-05 10:00+00');
SELECT pg_temp.line(4003, 1, 'one_time', 20.00);
SELECT pg_temp.draft(4004, 400, 'EUR', 99.00, 0, 0, 0, '2024-01-01 10:00+00');   -- stays a draft
SELECT pg_temp.line(4004, 1, 'one_time', 99.00);
SELECT finalize_invoice(4001), finalize_invoice(4002), finalize_invoice(4003);  -- INV-000007..9
SELECT credit_note(4003, 5.00, 'Goodwill') AS cn3 \gset
SELECT number AS cn3 FROM invoice WHERE invoice_id = :cn3;  -- CN-000003

SELECT pg_temp.fails('SELECT convbill.record_payment(400, 0, ''P'')') AS zero;
SELECT pg_temp.fails('SELECT convbill.record_payment(400, -5, ''P'')') AS negative;
SELECT pg_temp.fails('SELECT convbill.record_payment(400, ''NaN'', ''P'')') AS nan;
SELECT pg_temp.fails('SELECT convbill.record_payment(400, ''Infinity'', ''P'')') AS inf;
SELECT pg_temp.fails('SELECT convbill.record_payment(400, 1.234, ''P'')') AS decimals;
SELECT pg_temp.fails('SELECT convbill.record_payment(200, 100.5, ''P'')') AS jpy_decimals;
SELECT pg_temp.fails('SELECT convbill.record_payment(400, NULL, ''P'')') AS null_amount;
SELECT pg_temp.fails('SELECT convbill.record_payment(400, 1, NULL)') AS null_reference;
SELECT pg_temp.fails('SELECT convbill.record_payment(400, 1, '''')') AS empty_reference;
SELECT pg_temp.fails('SELECT convbill.record_payment(400, 1, ''P'', ''infinity'')') AS infinite_time;
SELECT pg_temp.fails('SELECT convbill.record_payment(999, 1, ''P'')') AS unknown_account;
SELECT pg_temp.fails('SELECT convbill.record_payment(101, 1, ''P'')') AS billed_to_parent;
SELECT count(*) AS payments FROM payment;

-- 45.00: A 30.00 (paid), B 15.00 of 40.00
SELECT record_payment(400, 45.00, 'PAY-1', '2024-03-10 09:00+00') AS pay1 \gset
SELECT p.reference, a.invoice_id, i.number, a.amount
FROM payment_allocation a JOIN payment p USING (account_id, payment_id) JOIN invoice i USING (account_id, invoice_id)
ORDER BY p.payment_id, i.issued_at;
-- a retry returns the first payment and changes nothing; the same reference
-- with another amount is refused (another payment must not vanish)
SELECT record_payment(400, 45.00, 'PAY-1', '2024-03-10 09:00+00') = :pay1 AS same;
SELECT pg_temp.fails('SELECT convbill.record_payment(400, 99.00, ''PAY-1'')') AS same_reference_other_amount;
SELECT (SELECT count(*) FROM payment) AS payments, (SELECT count(*) FROM payment_allocation) AS allocations,
       (SELECT count(*) FROM ledger WHERE kind = 'payment') AS payment_entries;
-- 50.00: B 25.00 (rest), C 15.00, INV-000002 (1003) 10.00; nothing left over
-- 12.00: INV-000004 (1004) 5.00, 7.00 stays as credit
SELECT record_payment(400, 50.00, 'PAY-2', '2024-03-20 09:00+00') > :pay1 AS pay2;
SELECT record_payment(400, 12.00, 'PAY-3', '2024-04-01 09:00+00') > :pay1 AS pay3;
SELECT p.reference, i.number, a.amount
FROM payment_allocation a JOIN payment p USING (account_id, payment_id) JOIN invoice i USING (account_id, invoice_id)
ORDER BY p.payment_id, i.issued_at, i.invoice_id;
-- every invoice settled; a payment with nothing open stays whole on the balance
SELECT number, total, amount_due, paid, credited, open FROM invoice_settlement WHERE account_id = 400 ORDER BY issued_at;
SELECT record_payment(400, 3.00, 'PAY-4', '2024-04-02 09:00+00') > :pay1 AS pay4;
SELECT count(*) AS pay4_allocations FROM payment_allocation a JOIN payment p USING (account_id, payment_id)
WHERE p.reference = 'PAY-4';
-- money: credit note +5.00, payments 45 + 50 + 12 + 3 = 110 -> 115.00
SELECT kind, amount, reference FROM ledger WHERE account_id = 400 ORDER BY entry_id;
SELECT * FROM pg_temp.money(400);
SELECT pg_temp.fails('UPDATE convbill.payment SET amount = 1') AS update_payment;
SELECT pg_temp.fails('DELETE FROM convbill.payment_allocation') AS delete_allocation;
SELECT pg_temp.fails('TRUNCATE convbill.payment CASCADE') AS truncate_payment;
-- payments in yen: whole yen only, allocated to 2001 (1234 due)
SELECT record_payment(200, 2000, 'JP-1', '2024-05-10 00:00+09') > 0 AS jpy_paid;
SELECT number, paid, open FROM invoice_settlement WHERE account_id = 200 ORDER BY invoice_id;

-------------------------------------------------------------------------------
-- Payments while drafts are open: oldest period first, whatever order the
-- drafts are finalized in.  A payment is allocated as if every draft were
-- final; what would go to a draft is kept for it until it is final.
-- Accounts 600 and 601 get the same invoices and payments; 600 finalizes
-- October before September, 601 September before October; both must end
-- with the same allocations.  The invoices are made as the bill run makes
-- them: last_payment_id = the payer's latest payment when the period was
-- billed (money paid until then is in its prepaid, and never allocated to
-- it).
--   June       8.00, final, credited in full: void (nothing to pay)
--   August    30.00, final, credited 10.00: open 20.00
--   PRE       25.00: August 20.00; 5.00 left, September's prepaid
--   September 40.00, prepaid 5.00, due 35.00: billed after PRE, a draft
--   MID       10.00: kept for September (25.00 still due)
--   October   50.00, due 50.00: billed after MID (MID may not pay it), a draft
--   BIG       60.00: 25.00 kept for September, 35.00 for October
--   LATE       7.00: (after the first finalize) October 7.00
-- In the end, payments in the order recorded, periods oldest first:
--   MID 10.00 -> September (35.00 due, 25.00 left)
--   BIG 60.00 -> September 25.00 (paid), October 35.00 (15.00 left)
--   LATE 7.00 -> October 7.00 (8.00 left)
-- Before the fix 600 gave BIG's 50.00 to October when it was finalized
-- first (September a draft), and September kept 35.00 - 10.00 (MID) -
-- 10.00 (BIG's rest) = 15.00 open although the money had come in for it.
-------------------------------------------------------------------------------
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES
    (600, 'ORDER-A', 'Order A', 'EUR', 'UTC'), (601, 'ORDER-B', 'Order B', 'EUR', 'UTC');
-- invoice ids: account 600 -> 6006 (June) .. 6010 (October), 601 -> 6106 .. 6110
CREATE FUNCTION pg_temp.billed(inv bigint, acc bigint, total numeric, prepaid numeric, month integer)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_temp.draft(inv, acc, 'EUR', total, 0, 0, prepaid,
                          make_timestamptz(2024, month + 1, 2, 10, 0, 0, 'UTC'),
                          make_timestamptz(2024, month, 1, 0, 0, 0, 'UTC'),
                          make_timestamptz(2024, month + 1, 1, 0, 0, 0, 'UTC'));
    PERFORM pg_temp.line(inv, 1, 'one_time', total);
    UPDATE convbill.invoice
    SET last_payment_id = coalesce((SELECT max(p.payment_id) FROM convbill.payment p WHERE p.account_id = acc), 0)
    WHERE account_id = acc AND invoice_id = inv;
END $$;
CREATE FUNCTION pg_temp.two_drafts(acc bigint) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    b bigint := 6000 + (acc - 600) * 100;
BEGIN
    PERFORM convbill.record_payment(acc, 25.00, 'PRE', '2024-09-20 10:00+00');
    PERFORM pg_temp.billed(b + 9, acc, 40.00, 5.00, 9);
    PERFORM convbill.record_payment(acc, 10.00, 'MID', '2024-10-20 10:00+00');
    PERFORM pg_temp.billed(b + 10, acc, 50.00, 0, 10);
    PERFORM convbill.record_payment(acc, 60.00, 'BIG', '2024-11-05 10:00+00');
END $$;
-- what each payment paid, oldest payment first
CREATE FUNCTION pg_temp.allocations(acc bigint)
RETURNS TABLE (payment text, period text, amount numeric) LANGUAGE sql AS $$
    SELECT p.reference, to_char(i.period_start, 'YYYY-MM'), a.amount
    FROM convbill.payment_allocation a
    JOIN convbill.payment p ON p.account_id = a.account_id AND p.payment_id = a.payment_id
    JOIN convbill.invoice i ON i.account_id = a.account_id AND i.invoice_id = a.invoice_id
    WHERE a.account_id = acc ORDER BY p.payment_id, i.period_start
$$;
SELECT pg_temp.billed(b + 6, acc, 8.00, 0, 6), pg_temp.billed(b + 8, acc, 30.00, 0, 8)
FROM (VALUES (600, 6000), (601, 6100)) v(acc, b);
SELECT finalize_invoice(i) IS NOT NULL AS final FROM unnest('{6006,6008,6106,6108}'::bigint[]) i;
-- (one statement each: the credit notes are issued now(), in this order)
SELECT credit_note(6006, 8.00, 'Not used') > 0 AS june_void;
SELECT credit_note(6008, 10.00, 'Outage') > 0 AS august_credited;
SELECT credit_note(6106, 8.00, 'Not used') > 0 AS june_void;
SELECT credit_note(6108, 10.00, 'Outage') > 0 AS august_credited;
SELECT pg_temp.two_drafts(600), pg_temp.two_drafts(601);
-- both: PRE 20.00 to August, nothing else yet (MID and BIG kept)
SELECT 600 AS account, * FROM pg_temp.allocations(600)
UNION ALL SELECT 601, * FROM pg_temp.allocations(601);
-- (June and August billed before any payment, September after PRE, October after MID)
SELECT to_char(i.period_start, 'YYYY-MM') AS period, i.status, i.amount_due, p.reference AS billed_after
FROM invoice i LEFT JOIN payment p ON p.account_id = i.account_id AND p.payment_id = i.last_payment_id
WHERE i.account_id = 600 AND i.kind = 'invoice' ORDER BY i.period_start;

-- 600: October first.  What September is due stays kept for it (MID
-- 10.00, BIG 25.00); BIG's other 35.00 pays October now
SELECT finalize_invoice(6010) IS NOT NULL AS october_final;
SELECT * FROM pg_temp.allocations(600);                                 -- PRE August 20.00, BIG October 35.00
-- a payment now: September's 35.00 is kept already, LATE pays October 7.00
SELECT record_payment(600, 7.00, 'LATE', '2024-11-20 10:00+00') > 0 AS late;
SELECT count(*) AS late_allocations FROM payment_allocation a JOIN payment p USING (account_id, payment_id)
WHERE p.account_id = 600 AND p.reference = 'LATE';                      -- 1
-- per payment (payment_settlement): PRE 20.00 to August, its 5.00 left is
-- September's prepaid (September was billed after it: no draft holds it);
-- MID's 10.00 and BIG's 25.00 left are kept for September's draft, billed
-- before them (open_drafts 1); LATE all to October
SELECT reference, amount, allocated, unallocated, open_drafts
FROM payment_settlement WHERE account_id = 600 ORDER BY payment_id;
-- a retry of BIG returns it and changes nothing
SELECT record_payment(600, 60.00, 'BIG', '2024-11-05 10:00+00') = (SELECT payment_id FROM payment
       WHERE account_id = 600 AND reference = 'BIG') AS same_payment;
SELECT (SELECT count(*) FROM payment WHERE account_id = 600) AS payments,            -- 4
       (SELECT count(*) FROM payment_allocation WHERE account_id = 600) AS allocations, -- 3
       (SELECT count(*) FROM ledger WHERE account_id = 600 AND kind = 'payment') AS entries;  -- 4
-- then September: the MID 10.00 and BIG 25.00 kept for it
SELECT finalize_invoice(6009) IS NOT NULL AS september_final;
SELECT * FROM pg_temp.allocations(600);

-- 601: September first: MID 10.00 and BIG 25.00 to it; BIG's 35.00 left
-- is kept for October, a draft
SELECT finalize_invoice(6109) IS NOT NULL AS september_final;
SELECT * FROM pg_temp.allocations(601);
SELECT record_payment(601, 7.00, 'LATE', '2024-11-20 10:00+00') > 0 AS late;      -- kept for October too
SELECT finalize_invoice(6110) IS NOT NULL AS october_final;
SELECT * FROM pg_temp.allocations(601);
-- the same allocations, whatever the order (0 rows)
(SELECT * FROM pg_temp.allocations(600) EXCEPT ALL SELECT * FROM pg_temp.allocations(601))
UNION ALL
(SELECT * FROM pg_temp.allocations(601) EXCEPT ALL SELECT * FROM pg_temp.allocations(600));

-- nothing is open before October any more: a payment now pays it; 10.00
-- -> October 8.00 (50.00 - 42.00), 2.00 stays as credit
SELECT record_payment(600, 10.00, 'FIN', '2024-12-01 10:00+00') > 0 AS fin,
       record_payment(601, 10.00, 'FIN', '2024-12-01 10:00+00') > 0 AS fin;
-- June void (credited 8.00), August credited 10.00 + paid 20.00, September
-- paid 35.00, October paid 42.00 + 8.00: nothing open
SELECT s.account_id, to_char(i.period_start, 'YYYY-MM') AS period, s.status, s.amount_due, s.paid, s.credited, s.open
FROM invoice_settlement s JOIN invoice i USING (account_id, invoice_id)
WHERE s.account_id IN (600, 601) ORDER BY s.account_id, i.period_start;
-- per payment: PRE 20.00 of 25.00 (5.00 was September's prepaid), MID 10.00,
-- BIG 60.00, LATE 7.00, FIN 8.00 of 10.00
SELECT p.account_id, p.reference, p.amount, coalesce(sum(a.amount), 0) AS allocated
FROM payment p LEFT JOIN payment_allocation a USING (account_id, payment_id)
WHERE p.account_id IN (600, 601) GROUP BY p.account_id, p.payment_id ORDER BY p.account_id, p.payment_id;
-- money: payments 25 + 10 + 60 + 7 + 10 = 112.00, credit notes 8 + 10 =
-- 18.00: 130.00 on the balance (these invoices were made by hand: the bill
-- run's debits are not there)
SELECT * FROM pg_temp.money(600);

-- A credit note on a later invoice while money is kept for an older draft.
-- 602: September 20.00 and October 30.00, both billed before any
-- payment (drafts); October finalized; 45.00 paid: 20.00 kept for
-- September, October 25.00 (5.00 open); October credited 10.00: paid 25.00
-- + credited 10.00, nothing open (the 5.00 over stays on the balance as
-- credit); September finalized: the 20.00 kept for it.  (Before the fix:
-- October paid 30.00, September 15.00 with 5.00 open.)
INSERT INTO account (account_id, external_ref, name, currency, timezone) VALUES (602, 'ORDER-C', 'Order C', 'EUR', 'UTC');
SELECT pg_temp.billed(6209, 602, 20.00, 0, 9), pg_temp.billed(6210, 602, 30.00, 0, 10);
SELECT finalize_invoice(6210) IS NOT NULL AS october_final;
SELECT record_payment(602, 45.00, 'C-1', '2024-11-05 10:00+00') > 0 AS paid;
SELECT credit_note(6210, 10.00, 'Outage') > 0 AS credited;
SELECT finalize_invoice(6209) IS NOT NULL AS september_final;
SELECT * FROM pg_temp.allocations(602);
SELECT to_char(i.period_start, 'YYYY-MM') AS period, s.amount_due, s.paid, s.credited, s.open
FROM invoice_settlement s JOIN invoice i USING (account_id, invoice_id)
WHERE s.account_id = 602 ORDER BY i.period_start;

-- never (0 each, every account of this test): a payment allocated beyond
-- its amount, an invoice paid beyond its amount due, money allocated to a
-- draft or to an invoice billed after the payment (in its prepaid)
SELECT (SELECT count(*) FROM (SELECT 1 FROM payment p JOIN payment_allocation a USING (account_id, payment_id)
                              GROUP BY p.account_id, p.payment_id, p.amount HAVING sum(a.amount) > p.amount) x) AS over_payment,
       (SELECT count(*) FROM invoice_settlement WHERE paid > amount_due) AS over_invoice,
       (SELECT count(*) FROM payment_allocation a JOIN invoice i USING (account_id, invoice_id)
        WHERE i.status = 'draft' OR a.payment_id <= i.last_payment_id) AS not_payable;

-------------------------------------------------------------------------------
-- account_statement
-------------------------------------------------------------------------------
-- Payer Inc: A +30 = 30; B +50 = 80 (its prepaid 10.00 is in its
-- description: no money of this account is on the statement for it, the
-- drafts here are made by hand); C +20 = 100; PAY-1 -45 = 55; PAY-2 -50 = 5;
-- PAY-3 -12 = -7; PAY-4 -3 = -10; then, issued now (in the order they were
-- finalized): INV-000002 +10 = 0, INV-000004 +5 = 5, CN-000003 -5 = 0
-- (= 115.00 invoiced - 110.00 paid - 5.00 credited).
SELECT CASE WHEN at > '2025-01-01' THEN 'now' ELSE at::text END AS at,
       kind, document, description, debit, credit, balance
FROM account_statement WHERE account_id = 400;
-- Acme: INV-000001 +25.63; issued now: INV-000003 +10.00 = 35.63, CN-000001
-- -5.63 = 30.00, CN-000002 -20.00 = 10.00 (INV-000001 is void: credited in
-- full; INV-000003's 10.00 is owed)
SELECT CASE WHEN at > '2025-01-01' THEN 'now' ELSE at::text END AS at,
       kind, document, description, debit, credit, balance
FROM account_statement WHERE account_id = 100;
-- the last balance of each account is what was invoiced minus credit notes,
-- payments and the money put on its balance (top-ups, corrections: none here).
-- 600 and 601: invoiced 8 + 30 + 40 + 50 = 128.00, credited 18.00, paid
-- 112.00: -2.00 (FIN's 2.00 left; PRE's 5.00 left paid September as its
-- prepaid, not a line of its own); 602: 50.00 - 10.00 - 45.00 = -5.00.
SELECT s.account_id, s.balance,
       (SELECT coalesce(sum(i.total), 0) FROM invoice i
        WHERE i.account_id = s.account_id AND i.status <> 'draft')
       - (SELECT coalesce(sum(p.amount), 0) FROM payment p WHERE p.account_id = s.account_id) AS recomputed
FROM (SELECT DISTINCT ON (account_id) account_id, balance FROM account_statement
      ORDER BY account_id, at DESC, kind DESC) s
ORDER BY s.account_id;

-- amounts beyond what convbill sums exactly (15 digits before the point) are
-- refused (22003); the wording of a discarded draft's refund is convbill's
-- own: a correction cannot take it (account_statement leaves those refunds
-- out, and would have hidden it)
SELECT pg_temp.fails($$SELECT record_payment(400, 1e15, 'huge', '2024-06-01')$$) AS huge_payment;
SELECT pg_temp.fails($$SELECT adjust_balance(400, -1e16, 'huge')$$) AS huge_correction;
SELECT pg_temp.fails($$SELECT adjust_balance(400, 5, 'draft invoice 1 discarded: made up')$$) AS borrowed_wording;
