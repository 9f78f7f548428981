-------------------------------------------------------------------------------
-- The life of an invoice after the bill run made it a draft.
--
--   finalize_invoice  draft -> final: checks that the lines make up the totals,
--                     takes the next number of the invoice's series (gap-free)
--                     and sets issued_at and due_at
--   credit_note       a final credit note against a final invoice (series
--                     'CN'); the credit goes back to the customer's money and
--                     lowers what is open; credit notes for the whole total
--                     void the invoice
--   record_payment    money received: credited to the account's main money
--                     bucket, allocated to its open invoices oldest period
--                     first (allocate_payments: what a draft is due is kept
--                     for it until it is final)
--   invoice_settlement  per invoice: paid, credited, still open
--   account_statement   invoices, payments, top-ups, credit notes and corrections
--                     with a running balance
--
-- Numbers: series || '-' || the number zero-padded to 6 digits (INV-000042;
-- wider numbers are written in full: INV-1000000).  invoice_series holds the
-- last number of each series; finalize_invoice raises it with an upsert in the
-- finalizing transaction, so concurrent finalizers of one series queue on its
-- row and a rollback gives the number back: numbers are gap-free.  A final
-- invoice is never deleted, so none disappears later either.
--
-- Immutability (triggers, whoever writes): invoices are created as drafts;
-- a draft and its lines may change or go; a final or void invoice and its
-- lines can never be updated, deleted or truncated, and get no new lines.  The
-- one change allowed is final -> void, status only, and only once the final
-- credit notes against it add up to its whole total (the trigger checks the
-- credit notes themselves, so no flag or setting can open the door).
-- Restoring invoice data from a dump therefore needs its triggers disabled
-- (pg_restore --disable-triggers), as account and bucket data already do.
--
-- Money: every charge already debited the payer's money when it was made (see
-- 50_balance.sql); the bill run debits only what the invoice adds to its
-- charges (taxes, discounts, rounding), so the balance carries the whole
-- total, and finalizing moves no money.  A payment credits the main
-- money bucket (ledger 'payment'); a credit note credits it too (ledger
-- 'adjustment', reference = the credit note's number).  An overpayment, or a
-- credit note on an invoice already paid, stays on the balance as credit,
-- which the next bill run applies as prepaid money.
--
-- Open amount of a final invoice = amount_due - payments allocated to it -
-- credit notes against it, never below zero.  A credit note is for a gross
-- amount (tax included) and makes one 'credit' line.
-------------------------------------------------------------------------------

ALTER TABLE @extschema@.account
    ADD COLUMN payment_terms integer NOT NULL DEFAULT 14 CHECK (payment_terms BETWEEN 0 AND 365);
COMMENT ON COLUMN @extschema@.account.payment_terms IS
    'days from an invoice''s issue to its due date (local calendar days in the account''s time zone)';

CREATE INDEX invoice_credits ON @extschema@.invoice (account_id, credits_invoice_id)
    WHERE credits_invoice_id IS NOT NULL;
CREATE INDEX payment_allocation_invoice ON @extschema@.payment_allocation (account_id, invoice_id);

-- The account an invoice belongs to; P0002 for an unknown invoice_id.  (No
-- exception block: callers such as invoice_json are parallel safe.)
CREATE FUNCTION @extschema@.invoice_account(p_invoice_id bigint, p_caller text)
RETURNS bigint
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    acc bigint;
    n bigint;
BEGIN
    IF p_invoice_id IS NULL THEN
        RAISE EXCEPTION '%: invoice_id must not be NULL', p_caller USING ERRCODE = '22004';
    END IF;
    SELECT min(i.account_id), count(*) INTO acc, n FROM @extschema@.invoice i WHERE i.invoice_id = p_invoice_id;
    IF n = 0 THEN
        RAISE EXCEPTION '%: invoice % does not exist', p_caller, p_invoice_id USING ERRCODE = 'P0002';
    ELSIF n > 1 THEN
        RAISE EXCEPTION '%: invoice_id % belongs to more than one account', p_caller, p_invoice_id
            USING ERRCODE = '21000';
    END IF;
    RETURN acc;
END $$;
COMMENT ON FUNCTION @extschema@.invoice_account(bigint, text) IS
    'internal: the account an invoice_id belongs to (P0002 when there is none)';

-- The number a series gives its n-th document: INV-000042, INV-1000000.
CREATE FUNCTION @extschema@.invoice_number(series text, n bigint)
RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
RETURN $1 OPERATOR(pg_catalog.||) '-' OPERATOR(pg_catalog.||)
       CASE WHEN n OPERATOR(pg_catalog.<) 1000000 THEN pg_catalog.lpad(n::text, 6, '0') ELSE n::text END;
COMMENT ON FUNCTION @extschema@.invoice_number(text, bigint) IS
    'the n-th number of a series: series-NNNNNN (zero-padded to 6 digits, wider numbers in full)';

-- A draft about to become final: its lines must be rounded to the currency's
-- minor unit and make up subtotal, discount, tax and total exactly.
CREATE FUNCTION @extschema@.invoice_check_lines(inv @extschema@.invoice)
RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    e integer := @extschema@.currency_exponent(inv.currency);
    s record;
BEGIN
    IF e IS NULL THEN
        RAISE EXCEPTION 'invoice %: unknown currency "%"', inv.invoice_id, inv.currency USING ERRCODE = '22023';
    END IF;
    SELECT coalesce(sum(l.amount), 0) AS total,
           coalesce(sum(l.amount) FILTER (WHERE l.kind NOT IN ('discount', 'tax')), 0) AS subtotal,
           coalesce(sum(l.amount) FILTER (WHERE l.kind = 'discount'), 0) AS discount,
           coalesce(sum(l.amount) FILTER (WHERE l.kind = 'tax'), 0) AS tax,
           min(l.line_no) FILTER (WHERE l.amount <> round(l.amount, e)) AS unrounded
    INTO s
    FROM @extschema@.invoice_line l
    WHERE l.account_id = inv.account_id AND l.invoice_id = inv.invoice_id;
    IF s.unrounded IS NOT NULL THEN
        RAISE EXCEPTION 'invoice %: line % is not rounded to the minor unit of % (% decimals)',
            inv.invoice_id, s.unrounded, inv.currency, e USING ERRCODE = '23514';
    END IF;
    IF s.total <> inv.total THEN
        RAISE EXCEPTION 'invoice %: total % is not the sum of its lines %', inv.invoice_id, inv.total, s.total
            USING ERRCODE = '23514';
    END IF;
    IF s.subtotal <> inv.subtotal OR s.discount <> inv.discount OR s.tax <> inv.tax THEN
        RAISE EXCEPTION 'invoice %: subtotal/discount/tax %/%/% differ from its lines %/%/%', inv.invoice_id,
            inv.subtotal, inv.discount, inv.tax, s.subtotal, s.discount, s.tax USING ERRCODE = '23514';
    END IF;
END $$;
COMMENT ON FUNCTION @extschema@.invoice_check_lines(@extschema@.invoice) IS
    'internal: raise 23514 unless the invoice''s lines are rounded to the minor unit and sum exactly to its subtotal, discount, tax and total';

-------------------------------------------------------------------------------
-- Immutability triggers
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.invoice_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    v @extschema@.invoice;
    credited numeric;
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.status <> 'draft' THEN
            RAISE EXCEPTION 'an invoice is created as a draft, not %', NEW.status
                USING ERRCODE = '55000', HINT = 'Insert it as a draft, then call convbill.finalize_invoice.';
        END IF;
        RETURN NEW;
    END IF;
    IF OLD.status = 'draft' THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        IF NEW.status = 'void' THEN
            RAISE EXCEPTION 'invoice %: a draft cannot be voided', OLD.invoice_id
                USING ERRCODE = '55000', HINT = 'Discard the draft instead (convbill.discard_draft).';
        END IF;
        IF NEW.status = 'final' THEN
            PERFORM @extschema@.invoice_check_lines(NEW);
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' AND OLD.status = 'final' AND NEW.status = 'void' THEN
        v := NEW;
        v.status := OLD.status;
        IF v IS NOT DISTINCT FROM OLD THEN
            SELECT -coalesce(sum(c.total), 0) INTO credited
            FROM @extschema@.invoice c
            WHERE c.account_id = OLD.account_id AND c.credits_invoice_id = OLD.invoice_id
              AND c.kind = 'credit_note' AND c.status = 'final';
            IF credited >= OLD.total THEN
                RETURN NEW;
            END IF;
            RAISE EXCEPTION 'invoice % (%) cannot be voided: credit notes cover % of its total %',
                OLD.invoice_id, OLD.number, credited, OLD.total
                USING ERRCODE = '55000', HINT = 'Issue a credit note for the rest (convbill.credit_note).';
        END IF;
    END IF;
    RAISE EXCEPTION 'invoice % (%) is %: it cannot be %', OLD.invoice_id, OLD.number, OLD.status,
        CASE TG_OP WHEN 'DELETE' THEN 'deleted' ELSE 'changed' END
        USING ERRCODE = '55000', HINT = 'Correct a final invoice with a credit note (convbill.credit_note).';
END $$;
CREATE TRIGGER invoice_guard BEFORE INSERT OR UPDATE OR DELETE ON @extschema@.invoice
    FOR EACH ROW EXECUTE FUNCTION @extschema@.invoice_guard();

-- A charge on a final (or void) invoice is part of it, as its lines are: it
-- can be neither changed nor deleted (55000) — unbilled again, it would be
-- billed a second time; changed, its invoice would no longer be its charges.
-- A draft's charges are the bill run's and discard_draft's to move.  (Only
-- billed charges fire it: the bill run's UPDATE of unbilled ones does not.)
CREATE FUNCTION @extschema@.charge_billed_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    inv record;
BEGIN
    SELECT i.number, i.status INTO inv FROM @extschema@.invoice i
    WHERE i.invoice_id = OLD.invoice_id AND i.status <> 'draft';
    IF FOUND THEN
        RAISE EXCEPTION 'charge % of account % is on % invoice % (%): it cannot be %', OLD.charge_id, OLD.account_id,
            inv.status, OLD.invoice_id, inv.number, CASE TG_OP WHEN 'DELETE' THEN 'deleted' ELSE 'changed' END
            USING ERRCODE = '55000',
                  HINT = 'Correct an invoiced charge with a credit note (convbill.credit_note) or a new charge (convbill.add_charge).';
    END IF;
    RETURN CASE TG_OP WHEN 'DELETE' THEN OLD ELSE NEW END;
END $$;
COMMENT ON FUNCTION @extschema@.charge_billed_guard() IS
    'internal: refuse to change or delete a charge that a final or void invoice billed';
CREATE TRIGGER charge_billed_guard BEFORE UPDATE OR DELETE ON @extschema@.charge
    FOR EACH ROW WHEN (OLD.invoice_id IS NOT NULL)
    EXECUTE FUNCTION @extschema@.charge_billed_guard();

-- The accounts a payer's invoice of a period may have billed: the payer, its
-- sub-accounts now, and those the bill run closed the period for under this
-- payer (a sub-account detached since).
CREATE FUNCTION @extschema@.invoice_accounts(p_account_id bigint, p_period_start timestamptz)
RETURNS bigint[]
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RETURN (
        WITH RECURSIVE fam AS (
            SELECT p_account_id AS member
            UNION
            SELECT a.account_id FROM @extschema@.account a JOIN fam ON a.parent_id = fam.member
            WHERE a.bill_to_parent
        )
        SELECT array_agg(DISTINCT x.member)
        FROM (SELECT fam.member FROM fam
              UNION ALL
              SELECT cp.account_id FROM @extschema@.closed_period cp
              WHERE cp.invoiced_by = p_account_id AND cp.period_start = p_period_start) x);
END $$;
COMMENT ON FUNCTION @extschema@.invoice_accounts(bigint, timestamptz) IS
    'internal: the accounts whose charges a payer''s invoice of a period may bill (its family now, and those closed under it)';

-- A draft invoice deleted (discard_draft(), or its lines and then itself by
-- hand): what the bill run did for it is undone, so that the next run bills
-- the period again, with whatever was corrected meanwhile.  Its charges are
-- unbilled again, the period is reopened for the accounts the run closed it
-- for (a period closed by hand stays closed), and the money the run took
-- beyond the charges (debited: taxes, discounts, rounding) comes back as an
-- adjustment.  Recurring-fee charges the run made stay: the next run finds
-- those fees charged and bills them again.
CREATE FUNCTION @extschema@.invoice_draft_deleted() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    members bigint[] := @extschema@.invoice_accounts(OLD.account_id, OLD.period_start);
    r record;
BEGIN
    -- the charges, unbilled again; those of a sub-account that has changed
    -- payer since (detached, or moved to another parent) go to its payer
    -- now, with their money (as a change of payer moves unbilled charges:
    -- account_payer_change, 50_balance.sql)
    FOR r IN
        -- (a fee charged on the draft forgets its price: the draft is to be
        -- billed anew, at the catalog as corrected meanwhile; a fee period
        -- first charged on a final invoice keeps that one's)
        WITH back AS (
            UPDATE @extschema@.charge c SET invoice_id = NULL, fee_price = NULL, fee_months = NULL
            WHERE c.account_id = ANY (members) AND c.period_start <= OLD.period_start
              AND c.invoice_id = OLD.invoice_id
            RETURNING c.account_id, c.amount)
        SELECT x.account_id, x.payer, x.amount
        FROM (SELECT b.account_id, @extschema@.payer_of(b.account_id) AS payer, sum(b.amount) AS amount
              FROM back b GROUP BY b.account_id) x
        WHERE x.payer IS DISTINCT FROM OLD.account_id AND x.amount <> 0
        ORDER BY x.account_id
    LOOP
        PERFORM @extschema@.transfer_unbilled(r.account_id, OLD.account_id, r.payer, r.amount);
    END LOOP;
    -- (a sub-account that has moved to another payer since keeps its period
    -- closed: its new payer's periods are its own now, and its charges given
    -- back above join that payer's next invoice, as charges left in an
    -- invoiced period do; reopened, its late usage would land in a period
    -- the new payer may have invoiced already)
    DELETE FROM @extschema@.closed_period cp
    WHERE cp.invoiced_by = OLD.account_id AND cp.period_start = OLD.period_start AND NOT cp.by_hand
      AND @extschema@.payer_of(cp.account_id) = OLD.account_id;
    -- a period closed by hand before the run billed it stays closed, to bill
    UPDATE @extschema@.closed_period cp SET invoiced_by = NULL
    WHERE cp.invoiced_by = OLD.account_id AND cp.period_start = OLD.period_start AND cp.by_hand;
    -- (not by adjust_balance(), which refuses this wording to anyone else:
    -- account_statement leaves exactly these refunds out)
    IF OLD.debited <> 0 THEN
        PERFORM @extschema@.main_bucket_entry(OLD.account_id, 'adjustment', OLD.debited,
            format('draft invoice %s discarded: its taxes, discounts and rounding returned', OLD.invoice_id));
    END IF;
    RETURN NULL;
END $$;
COMMENT ON FUNCTION @extschema@.invoice_draft_deleted() IS
    'internal: undo what the bill run did for a draft invoice that is deleted (charges unbilled, period reopened, money returned)';
CREATE TRIGGER invoice_draft_deleted AFTER DELETE ON @extschema@.invoice
    FOR EACH ROW WHEN (OLD.kind = 'invoice' AND OLD.status = 'draft')
    EXECUTE FUNCTION @extschema@.invoice_draft_deleted();

-- Discard a draft invoice to bill its period again (after a correction of the
-- catalog, a rerate, a late adjustment): its lines and itself are deleted and
-- the trigger above undoes the bill run's work; the next run_billing bills the
-- period anew.  Final invoices are corrected by credit notes instead.
CREATE FUNCTION @extschema@.discard_draft(invoice_id bigint)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_invoice_id ALIAS FOR $1;
    v @extschema@.invoice;
    n integer;
BEGIN
    SELECT * INTO v FROM @extschema@.invoice i WHERE i.invoice_id = p_invoice_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'discard_draft: invoice % does not exist', p_invoice_id USING ERRCODE = 'P0002';
    END IF;
    -- the payer first (as the bill run, rating and sessions lock it), then the invoice
    PERFORM 1 FROM @extschema@.account a WHERE a.account_id = v.account_id FOR UPDATE;
    SELECT * INTO v FROM @extschema@.invoice i
    WHERE i.account_id = v.account_id AND i.invoice_id = p_invoice_id FOR UPDATE;
    IF v.status <> 'draft' THEN
        RAISE EXCEPTION 'discard_draft: invoice % (%) is %', p_invoice_id, v.number, v.status
            USING ERRCODE = '55000', HINT = 'Correct a final invoice with a credit note (convbill.credit_note).';
    END IF;
    -- an account that paid for itself when billed and has joined a parent
    -- since: its charges would go to the parent's next invoice, while the
    -- prepaid money that paid them stays with it (nothing there spends it)
    IF @extschema@.payer_of(v.account_id) IS DISTINCT FROM v.account_id THEN
        RAISE EXCEPTION 'discard_draft: invoice % is of account %, billed to its parent since', p_invoice_id, v.account_id
            USING ERRCODE = '55000',
                  HINT = 'Finalize it and correct it with a credit note, or detach the account (bill_to_parent = false) first.';
    END IF;
    -- a later period invoiced already took the balance as it was (prepaid):
    -- billing this period again after it would apply that money twice
    IF v.kind = 'invoice' AND EXISTS (SELECT 1 FROM @extschema@.invoice i
                                      WHERE i.account_id = v.account_id AND i.kind = 'invoice'
                                        AND i.period_start > v.period_start) THEN
        RAISE EXCEPTION 'discard_draft: invoice % is not the latest of account %: a later period is invoiced already',
            p_invoice_id, v.account_id
            USING ERRCODE = '55000', HINT = 'Discard the later drafts first (newest first), or correct a final invoice with a credit note.';
    END IF;
    SELECT count(*) INTO n FROM @extschema@.charge c
    WHERE c.account_id = ANY (@extschema@.invoice_accounts(v.account_id, v.period_start))
      AND c.period_start <= v.period_start AND c.invoice_id = p_invoice_id;
    DELETE FROM @extschema@.invoice_line l WHERE l.account_id = v.account_id AND l.invoice_id = p_invoice_id;
    DELETE FROM @extschema@.invoice i WHERE i.account_id = v.account_id AND i.invoice_id = p_invoice_id;
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@.discard_draft(bigint) IS
    'delete a draft invoice and its lines so that the next run_billing bills its period again: its charges unbilled, the period reopened, the money taken beyond the charges returned; returns how many charges it gave back';

-- Lines change only while their invoice is a draft.  The invoice row is locked
-- FOR SHARE so that a line cannot slip in while finalize_invoice sums them.
CREATE FUNCTION @extschema@.invoice_line_guard() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    i record;
BEGIN
    IF TG_OP = 'INSERT' THEN       -- statement level: new_lines
        SELECT x.invoice_id, x.number, x.status INTO i
        FROM (SELECT inv.invoice_id, inv.number, inv.status
              FROM @extschema@.invoice inv
              WHERE (inv.account_id, inv.invoice_id) IN (SELECT n.account_id, n.invoice_id FROM new_lines n)
              ORDER BY inv.account_id, inv.invoice_id
              FOR SHARE OF inv) x
        WHERE x.status <> 'draft'
        LIMIT 1;
    ELSE                           -- row level
        SELECT inv.invoice_id, inv.number, inv.status INTO i
        FROM @extschema@.invoice inv
        WHERE inv.account_id = OLD.account_id AND inv.invoice_id = OLD.invoice_id
        FOR SHARE;
        IF i.status = 'draft' AND TG_OP = 'UPDATE'
           AND (NEW.account_id, NEW.invoice_id) IS DISTINCT FROM (OLD.account_id, OLD.invoice_id) THEN
            SELECT inv.invoice_id, inv.number, inv.status INTO i
            FROM @extschema@.invoice inv
            WHERE inv.account_id = NEW.account_id AND inv.invoice_id = NEW.invoice_id
            FOR SHARE;
        END IF;
    END IF;
    IF i.status IS DISTINCT FROM 'draft' AND i.invoice_id IS NOT NULL THEN
        RAISE EXCEPTION 'invoice % (%) is %: its lines cannot be %', i.invoice_id, i.number, i.status,
            CASE TG_OP WHEN 'INSERT' THEN 'added to' WHEN 'DELETE' THEN 'deleted' ELSE 'changed' END
            USING ERRCODE = '55000', HINT = 'Correct a final invoice with a credit note (convbill.credit_note).';
    END IF;
    IF TG_OP = 'DELETE' THEN
        RETURN OLD;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER invoice_line_guard BEFORE UPDATE OR DELETE ON @extschema@.invoice_line
    FOR EACH ROW EXECUTE FUNCTION @extschema@.invoice_line_guard();
CREATE TRIGGER invoice_line_insert_guard AFTER INSERT ON @extschema@.invoice_line
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.invoice_line_guard();

-- TRUNCATE would take final invoices with it: refused while there are any.
CREATE FUNCTION @extschema@.invoice_no_truncate() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM @extschema@.invoice i WHERE i.status <> 'draft') THEN
        RAISE EXCEPTION 'TRUNCATE %: there are final invoices, which can never be deleted', TG_TABLE_NAME
            USING ERRCODE = '55000';
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER invoice_no_truncate BEFORE TRUNCATE ON @extschema@.invoice
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.invoice_no_truncate();
CREATE TRIGGER invoice_line_no_truncate BEFORE TRUNCATE ON @extschema@.invoice_line
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.invoice_no_truncate();

-- Payments and their allocations are part of the money history, like the ledger.
CREATE FUNCTION @extschema@.payment_append_only() RETURNS trigger
LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
BEGIN
    RAISE EXCEPTION '% is append-only: % is not allowed', TG_TABLE_NAME, TG_OP
        USING ERRCODE = '55000', HINT = 'Correct money with a credit note or convbill.adjust_balance.';
END $$;
CREATE TRIGGER payment_append_only BEFORE UPDATE OR DELETE ON @extschema@.payment
    FOR EACH ROW EXECUTE FUNCTION @extschema@.payment_append_only();
CREATE TRIGGER payment_no_truncate BEFORE TRUNCATE ON @extschema@.payment
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.payment_append_only();
CREATE TRIGGER payment_allocation_append_only BEFORE UPDATE OR DELETE ON @extschema@.payment_allocation
    FOR EACH ROW EXECUTE FUNCTION @extschema@.payment_append_only();
CREATE TRIGGER payment_allocation_no_truncate BEFORE TRUNCATE ON @extschema@.payment_allocation
    FOR EACH STATEMENT EXECUTE FUNCTION @extschema@.payment_append_only();

-------------------------------------------------------------------------------
-- finalize_invoice
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.finalize_invoice(invoice_id bigint)
RETURNS text
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_invoice_id ALIAS FOR $1;
    acc bigint := @extschema@.invoice_account(p_invoice_id, 'finalize_invoice');
    a @extschema@.account;
    inv @extschema@.invoice;
    n bigint;
    num text;
    issued timestamptz;
BEGIN
    -- the account first (as the bill run and payments lock it), then the invoice
    SELECT * INTO a FROM @extschema@.account WHERE account_id = acc FOR NO KEY UPDATE;
    SELECT * INTO inv FROM @extschema@.invoice
    WHERE account_id = acc AND invoice_id = p_invoice_id FOR UPDATE;
    IF inv.status = 'final' THEN
        RETURN inv.number;                  -- finalized before: the same number
    ELSIF inv.status = 'void' THEN
        RAISE EXCEPTION 'finalize_invoice: invoice % (%) is void', p_invoice_id, inv.number
            USING ERRCODE = '55000';
    END IF;
    IF inv.series !~ '^[A-Za-z0-9][A-Za-z0-9_/.-]{0,31}$' THEN
        RAISE EXCEPTION 'finalize_invoice: invoice %: series "%" must be 1 to 32 letters, digits, "_", "/", "." or "-"',
            p_invoice_id, inv.series USING ERRCODE = '22023';
    END IF;
    PERFORM @extschema@.invoice_check_lines(inv);
    INSERT INTO @extschema@.invoice_series AS s (series, last_number) VALUES (inv.series, 1)
    ON CONFLICT (series) DO UPDATE SET last_number = s.last_number + 1
    RETURNING s.last_number INTO n;
    num := @extschema@.invoice_number(inv.series, n);
    issued := coalesce(inv.issued_at, now());
    UPDATE @extschema@.invoice
    SET status = 'final', number = num, issued_at = issued,
        due_at = coalesce(inv.due_at,
                          ((issued AT TIME ZONE a.timezone) + make_interval(days => a.payment_terms))
                          AT TIME ZONE a.timezone),
        -- an invoice made by hand (not by the bill run: no last_payment_id)
        -- is paid by the payments recorded from now on; what came in before
        -- stays where it is (on the balance, for the next bill run's prepaid)
        last_payment_id = coalesce(inv.last_payment_id,
                                   CASE WHEN inv.kind = 'invoice'
                                        THEN coalesce((SELECT max(p.payment_id) FROM @extschema@.payment p
                                                       WHERE p.account_id = acc), 0) END)
    WHERE account_id = acc AND invoice_id = p_invoice_id;
    -- the money kept for it while it was a draft (of payments recorded after
    -- it was billed: what was paid before is in its prepaid already) is
    -- allocated to it now
    IF inv.kind = 'invoice' THEN
        PERFORM @extschema@.allocate_payments(acc);
    END IF;
    RETURN num;
END $$;
COMMENT ON FUNCTION @extschema@.finalize_invoice(bigint) IS
    'make a draft invoice final: checks its lines against its totals, gives it the next gap-free number of its series, sets issued_at (if unset) and due_at (issued + the account''s payment_terms days), then allocates the payments kept for it (allocate_payments); returns the number (again, for an invoice already final)';

-------------------------------------------------------------------------------
-- What is paid, credited and open per final invoice
-------------------------------------------------------------------------------
CREATE VIEW @extschema@.invoice_settlement AS
SELECT i.account_id, i.invoice_id, i.number, i.status, i.currency, i.issued_at, i.due_at,
       i.total, i.amount_due, p.paid, c.credited,
       greatest(i.amount_due - p.paid - c.credited, 0) AS open,
       i.period_start, i.last_payment_id
FROM @extschema@.invoice i
CROSS JOIN LATERAL (SELECT coalesce(sum(pa.amount), 0) AS paid
                    FROM @extschema@.payment_allocation pa
                    WHERE pa.account_id = i.account_id AND pa.invoice_id = i.invoice_id) p
CROSS JOIN LATERAL (SELECT -coalesce(sum(cn.total), 0) AS credited
                    FROM @extschema@.invoice cn
                    WHERE cn.account_id = i.account_id AND cn.credits_invoice_id = i.invoice_id
                      AND cn.kind = 'credit_note' AND cn.status = 'final') c
WHERE i.kind = 'invoice' AND i.status IN ('final', 'void');
COMMENT ON VIEW @extschema@.invoice_settlement IS
    'final and void invoices: payments allocated (paid), credit notes (credited) and open = amount_due - paid - credited, never below zero; with the period billed and last_payment_id (only later payments are allocated to it)';

-- Per payment: what it paid and what is left of it.  Money left is credit on
-- the balance (the next bill run applies it as prepaid) or kept for an older
-- draft until that is finalized (allocate_payments): with a draft open, look
-- here before telling a customer an invoice is unpaid.
CREATE VIEW @extschema@.payment_settlement AS
SELECT p.account_id, p.payment_id, p.reference, p.received_at, p.amount, a.allocated,
       p.amount - a.allocated AS unallocated,
       (SELECT count(*) FROM @extschema@.invoice d
        WHERE d.account_id = p.account_id AND d.kind = 'invoice' AND d.status = 'draft'
          AND d.last_payment_id < p.payment_id AND d.amount_due > 0) AS open_drafts
FROM @extschema@.payment p
CROSS JOIN LATERAL (SELECT coalesce(sum(pa.amount), 0) AS allocated
                    FROM @extschema@.payment_allocation pa
                    WHERE pa.account_id = p.account_id AND pa.payment_id = p.payment_id) a;
COMMENT ON VIEW @extschema@.payment_settlement IS
    'payments: allocated to invoices, unallocated (credit, or kept for an older draft until it is final), and how many drafts billed before the payment are open with money due (they may be holding it)';

-------------------------------------------------------------------------------
-- Allocation of payments to invoices
-------------------------------------------------------------------------------
-- One rule, whenever it runs: the payments, in the order they were recorded,
-- each pay the open invoices they may pay, oldest period first (invoices
-- without a period after those with one, by issue), as far as their money
-- goes, as if every draft were final already; only, what would go to a
-- draft is not allocated but kept for it until it is final.  So money
-- recorded while an older period's draft is open is not taken by a later
-- period's invoice that happened to be finalized first, and money beyond
-- what the drafts are due goes on to the final invoices after them.  A
-- payment may pay an invoice billed before it came in (payment_id >
-- invoice.last_payment_id): money that was on the balance when an invoice
-- was billed is in its prepaid already.
--
-- record_payment and finalize_invoice run it after their change (with the
-- account locked): it goes through every payment with money not allocated
-- yet from the oldest period again, so the money kept for a draft is
-- allocated to it once it is final, and the allocations do not depend on
-- the order the drafts are finalized in.  It only adds allocations (they
-- are append-only), each at most what is left of the payment and what is
-- open on the invoice (never more than its amount_due): no money is
-- allocated twice, and a payment pays an invoice once.  A credit note
-- lowers what is open; one on an invoice paid already leaves its money on
-- the balance, as credit.  Drafts made by hand (no last_payment_id) are not
-- kept for: finalize_invoice makes them payable from then on.
CREATE FUNCTION @extschema@.allocate_payments(p_account_id bigint)
RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    t record;
    pay record;
    ids bigint[] := '{}';
    lasts bigint[] := '{}';
    drafts boolean[] := '{}';
    opens numeric[] := '{}';
    k integer := 0;
    j integer;
    free numeric;
    amt numeric;
    n integer := 0;
BEGIN
    IF p_account_id IS NULL THEN
        RAISE EXCEPTION 'allocate_payments: account_id must not be NULL' USING ERRCODE = '22004';
    END IF;
    -- (the callers hold it already; a call by hand must not race them)
    PERFORM 1 FROM @extschema@.account a WHERE a.account_id = p_account_id FOR NO KEY UPDATE;
    -- what may be paid, oldest period first: final invoices still open (one
    -- made final without finalize_invoice has no last_payment_id: any
    -- payment), and the bill run's drafts with money due
    -- (a final invoice's open amount as invoice_settlement computes it)
    FOR t IN
        SELECT x.invoice_id, coalesce(x.last_payment_id, 0) AS last_payment_id, x.draft, x.open
        FROM (SELECT s.invoice_id, s.last_payment_id, false AS draft, s.open, s.period_start, s.issued_at
              FROM @extschema@.invoice_settlement s
              WHERE s.account_id = p_account_id AND s.status = 'final'
              UNION ALL
              SELECT d.invoice_id, d.last_payment_id, true, d.amount_due, d.period_start, d.issued_at
              FROM @extschema@.invoice d
              WHERE d.account_id = p_account_id AND d.kind = 'invoice' AND d.status = 'draft'
                AND d.last_payment_id IS NOT NULL) x
        WHERE x.open > 0
        ORDER BY x.period_start NULLS LAST, x.issued_at NULLS LAST, x.invoice_id
    LOOP
        k := k + 1;
        ids[k] := t.invoice_id;
        lasts[k] := t.last_payment_id;
        drafts[k] := t.draft;
        opens[k] := t.open;
    END LOOP;
    IF k = 0 THEN
        RETURN 0;
    END IF;
    -- the payments with money left, in the order they were recorded (none
    -- before the oldest last_payment_id can pay any of these)
    FOR pay IN
        SELECT p.payment_id, p.amount - coalesce(x.allocated, 0) AS free
        FROM @extschema@.payment p
        CROSS JOIN LATERAL (SELECT sum(pa.amount) AS allocated FROM @extschema@.payment_allocation pa
                            WHERE pa.account_id = p.account_id AND pa.payment_id = p.payment_id) x
        WHERE p.account_id = p_account_id
          AND p.payment_id > (SELECT min(l) FROM unnest(lasts) l)
          AND p.amount > coalesce(x.allocated, 0)
        ORDER BY p.payment_id
    LOOP
        free := pay.free;
        FOR j IN 1 .. k LOOP
            -- billed after the payment came in (in its prepaid), or paid
            CONTINUE WHEN pay.payment_id <= lasts[j] OR opens[j] = 0;
            amt := least(opens[j], free);
            -- a draft: kept for it (not allocated, and no later invoice and
            -- no later payment gets it); a final invoice: allocated.  (Money
            -- kept for a draft comes free again if the draft is deleted or
            -- changed by hand; a payment still pays an invoice once only,
            -- what it has left goes on to the next.)
            IF NOT drafts[j] THEN
                INSERT INTO @extschema@.payment_allocation (account_id, payment_id, invoice_id, amount)
                VALUES (p_account_id, pay.payment_id, ids[j], amt)
                ON CONFLICT DO NOTHING;
                CONTINUE WHEN NOT FOUND;
                n := n + 1;
            END IF;
            opens[j] := opens[j] - amt;
            free := free - amt;
            EXIT WHEN free = 0;
        END LOOP;
    END LOOP;
    RETURN n;
END $$;
COMMENT ON FUNCTION @extschema@.allocate_payments(bigint) IS
    'internal (record_payment, finalize_invoice): allocate the account''s payments with money left, in the order recorded, to the open invoices each may pay (billed before it came in), oldest period first, as if the drafts were final: what would go to a draft is kept for it until it is final; returns how many allocations it made';
COMMENT ON COLUMN @extschema@.invoice.last_payment_id IS
    'the payer''s latest payment when the invoice was billed (bill run) or, made by hand, finalized: only later payments are allocated to it (earlier money is in its prepaid or stays on the balance)';

-------------------------------------------------------------------------------
-- credit_note
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.credit_note(invoice_id bigint, amount numeric, reason text)
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_invoice_id ALIAS FOR $1;
    p_amount ALIAS FOR $2;
    p_reason ALIAS FOR $3;
    acc bigint := @extschema@.invoice_account(p_invoice_id, 'credit_note');
    a @extschema@.account;
    inv @extschema@.invoice;
    credited numeric;
    e integer;
    cn bigint;
    num text;
BEGIN
    IF p_amount IS NULL OR p_reason IS NULL THEN
        RAISE EXCEPTION 'credit_note: amount and reason must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF p_amount <= 0 OR p_amount = 'NaN' OR p_amount = 'Infinity' THEN
        RAISE EXCEPTION 'credit_note: amount must be a positive number, not %', p_amount USING ERRCODE = '22023';
    END IF;
    IF btrim(p_reason) = '' THEN
        RAISE EXCEPTION 'credit_note: reason must not be empty' USING ERRCODE = '22023';
    END IF;
    SELECT * INTO a FROM @extschema@.account WHERE account_id = acc FOR NO KEY UPDATE;
    SELECT * INTO inv FROM @extschema@.invoice
    WHERE account_id = acc AND invoice_id = p_invoice_id FOR UPDATE;
    IF inv.kind <> 'invoice' THEN
        RAISE EXCEPTION 'credit_note: % is a credit note; only invoices can be credited', inv.number
            USING ERRCODE = '22023';
    END IF;
    IF inv.status = 'draft' THEN
        RAISE EXCEPTION 'credit_note: invoice % is a draft', p_invoice_id
            USING ERRCODE = '55000', HINT = 'Change or delete the draft; only final invoices take credit notes.';
    ELSIF inv.status = 'void' THEN
        RAISE EXCEPTION 'credit_note: invoice % (%) is void: it is credited in full already', p_invoice_id, inv.number
            USING ERRCODE = '55000';
    END IF;
    e := @extschema@.currency_exponent(inv.currency);
    IF p_amount <> round(p_amount, e) THEN
        RAISE EXCEPTION 'credit_note: % has more decimals than % allows (%)', p_amount, inv.currency, e
            USING ERRCODE = '22023';
    END IF;
    SELECT -coalesce(sum(c.total), 0) INTO credited
    FROM @extschema@.invoice c
    WHERE c.account_id = acc AND c.credits_invoice_id = p_invoice_id
      AND c.kind = 'credit_note' AND c.status = 'final';
    IF p_amount > inv.total - credited THEN
        RAISE EXCEPTION 'credit_note: % exceeds what invoice % can still be credited: % (total %, credited %)',
            p_amount, inv.number, inv.total - credited, inv.total, credited USING ERRCODE = '22023';
    END IF;

    INSERT INTO @extschema@.invoice (account_id, kind, status, series, currency, subtotal, total, amount_due,
                                     credits_invoice_id, reason)
    VALUES (acc, 'credit_note', 'draft', 'CN', inv.currency, -p_amount, -p_amount, -p_amount,
            p_invoice_id, p_reason)
    RETURNING invoice_id INTO cn;
    INSERT INTO @extschema@.invoice_line (account_id, invoice_id, line_no, kind, description, amount,
                                          source_account_id)
    VALUES (acc, cn, 1, 'credit', 'Credit for invoice ' || inv.number || ': ' || p_reason, -p_amount, acc);
    num := @extschema@.finalize_invoice(cn);

    IF credited + p_amount = inv.total THEN
        UPDATE @extschema@.invoice SET status = 'void' WHERE account_id = acc AND invoice_id = p_invoice_id;
    END IF;

    PERFORM @extschema@.main_bucket_entry(acc, 'adjustment', p_amount, num);
    RETURN cn;
END $$;
COMMENT ON FUNCTION @extschema@.credit_note(bigint, numeric, text) IS
    'credit (part of) a final invoice: a final credit note (series CN, total = -amount, one credit line) whose amount goes back to the account''s money (ledger adjustment) and lowers what is open; credit notes for the whole total void the invoice; returns the credit note''s invoice_id';

-------------------------------------------------------------------------------
-- record_payment
-------------------------------------------------------------------------------
CREATE FUNCTION @extschema@.record_payment(account_id bigint, amount numeric, reference text,
                                           received_at timestamptz DEFAULT now())
RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp AS $$
#variable_conflict use_column
DECLARE
    p_account_id ALIAS FOR $1;
    p_amount ALIAS FOR $2;
    p_reference ALIAS FOR $3;
    p_received_at ALIAS FOR $4;
    a @extschema@.account;
    e integer;
    pid bigint;
    prev numeric;
BEGIN
    IF p_account_id IS NULL OR p_amount IS NULL OR p_reference IS NULL OR p_received_at IS NULL THEN
        RAISE EXCEPTION 'record_payment: account_id, amount, reference and received_at must not be NULL'
            USING ERRCODE = '22004';
    END IF;
    IF p_amount <= 0 OR p_amount = 'NaN' OR p_amount = 'Infinity' THEN
        RAISE EXCEPTION 'record_payment: amount must be a positive number, not %', p_amount USING ERRCODE = '22023';
    END IF;
    IF p_amount >= 1e15 THEN
        RAISE EXCEPTION 'record_payment: amount % is out of range (below 1e15)', p_amount USING ERRCODE = '22003';
    END IF;
    IF btrim(p_reference) = '' THEN
        RAISE EXCEPTION 'record_payment: reference must not be empty' USING ERRCODE = '22023';
    END IF;
    IF NOT isfinite(p_received_at) THEN
        RAISE EXCEPTION 'record_payment: received_at must be a finite time' USING ERRCODE = '22008';
    END IF;
    SELECT * INTO a FROM @extschema@.account WHERE account_id = p_account_id FOR NO KEY UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % does not exist', p_account_id USING ERRCODE = '23503';
    END IF;
    -- a retry (the account lock makes concurrent retries wait for the first);
    -- the same reference with another amount is another payment, not a retry:
    -- refused, never dropped
    SELECT payment_id, amount INTO pid, prev FROM @extschema@.payment
    WHERE account_id = p_account_id AND reference = p_reference;
    IF FOUND THEN
        IF prev <> p_amount THEN
            RAISE EXCEPTION 'record_payment: reference "%" of account % was used for % already, not %',
                p_reference, p_account_id, prev, p_amount USING ERRCODE = '23505';
        END IF;
        RETURN pid;
    END IF;
    IF a.bill_to_parent THEN
        RAISE EXCEPTION 'record_payment: account % is billed to its parent %', p_account_id, a.parent_id
            USING ERRCODE = '22023', HINT = 'Record the payment on the paying account (convbill.payer_of).';
    END IF;
    e := @extschema@.currency_exponent(a.currency);
    IF p_amount <> round(p_amount, e) THEN
        RAISE EXCEPTION 'record_payment: % has more decimals than % allows (%)', p_amount, a.currency, e
            USING ERRCODE = '22023';
    END IF;
    INSERT INTO @extschema@.payment (account_id, amount, currency, reference, received_at)
    VALUES (p_account_id, p_amount, a.currency, p_reference, p_received_at)
    ON CONFLICT (account_id, reference) DO NOTHING
    RETURNING payment_id INTO pid;
    IF pid IS NULL THEN
        SELECT payment_id INTO pid FROM @extschema@.payment
        WHERE account_id = p_account_id AND reference = p_reference;
        RETURN pid;
    END IF;

    PERFORM @extschema@.main_bucket_entry(p_account_id, 'payment', p_amount, p_reference);

    -- oldest open amount first, by the period it bills, not by when it was
    -- finalized: what an older draft is due is kept for it, not given to a
    -- later period's final invoice; what is left stays on the balance as
    -- credit
    PERFORM @extschema@.allocate_payments(p_account_id);
    RETURN pid;
END $$;
COMMENT ON FUNCTION @extschema@.record_payment(bigint, numeric, text, timestamptz) IS
    'record money received: credits the account''s main money bucket (ledger payment) and allocates it to its open final invoices, oldest period first (what an older draft is due is kept for it until it is final: allocate_payments); the rest stays as credit; idempotent on (account_id, reference): a retry returns the first payment_id (the same reference with another amount: 23505)';

-------------------------------------------------------------------------------
-- account_statement
-------------------------------------------------------------------------------
-- Money between the customer and the business: what was invoiced (debit)
-- and every money the customer gave or was given (credit) - payments,
-- top-ups, credit notes, balance corrections - and prepaid money that
-- expired unused (debit).  The prepaid an invoice applied is not a line of
-- its own: that money is on the statement already, as the top-up, payment or
-- credit it came from (listing it again counted it twice).
CREATE VIEW @extschema@.account_statement AS
SELECT d.account_id, d.at, d.kind, d.document, d.description, d.debit, d.credit,
       sum(coalesce(d.debit, 0) - coalesce(d.credit, 0))
           OVER (PARTITION BY d.account_id ORDER BY d.at, d.ord, d.id
                 ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS balance
FROM (
    SELECT i.account_id, i.issued_at AS at, 'invoice'::text AS kind, i.number AS document,
           CASE WHEN i.period_start IS NULL THEN 'Invoice'
                ELSE 'Invoice for ' || to_char(i.period_start AT TIME ZONE a.timezone, 'YYYY-MM-DD') || ' to '
                     || to_char((i.period_end AT TIME ZONE a.timezone) - interval '1 day', 'YYYY-MM-DD') END
           || CASE WHEN i.status = 'void' THEN ' (void)' ELSE '' END
           || CASE WHEN i.prepaid_applied <> 0 THEN ' (prepaid applied ' || i.prepaid_applied || ')' ELSE '' END
           AS description,
           i.total AS debit, NULL::numeric AS credit, 1 AS ord, i.invoice_id AS id
    FROM @extschema@.invoice i JOIN @extschema@.account a ON a.account_id = i.account_id
    WHERE i.kind = 'invoice' AND i.status IN ('final', 'void')
    UNION ALL
    SELECT c.account_id, c.issued_at, 'credit_note', c.number,
           'Credit note for ' || o.number || ': ' || c.reason,
           NULL, -c.total, 3, c.invoice_id
    FROM @extschema@.invoice c
    JOIN @extschema@.invoice o ON o.account_id = c.account_id AND o.invoice_id = c.credits_invoice_id
    WHERE c.kind = 'credit_note' AND c.status = 'final'
    UNION ALL
    SELECT p.account_id, p.received_at, 'payment', p.reference, 'Payment received',
           NULL, p.amount, 4, p.payment_id
    FROM @extschema@.payment p
    UNION ALL
    -- money buckets' top-ups, expiries and hand corrections (adjust_balance);
    -- not a credit note's money (its own line above) nor what a discarded
    -- draft gave back (its debit was never on the statement either)
    SELECT l.account_id, l.created_at,
           CASE l.kind WHEN 'top_up' THEN 'top_up' WHEN 'expiry' THEN 'expiry' ELSE 'adjustment' END,
           l.reference,
           CASE l.kind WHEN 'top_up' THEN 'Prepaid top-up' WHEN 'expiry' THEN 'Prepaid money expired'
                ELSE 'Balance correction: ' || l.reference END,
           CASE WHEN l.amount < 0 THEN -l.amount END, CASE WHEN l.amount > 0 THEN l.amount END, 5, l.entry_id
    FROM @extschema@.ledger l
    JOIN @extschema@.bucket b ON b.account_id = l.account_id AND b.bucket_id = l.bucket_id AND b.kind = 'money'
    WHERE l.amount <> 0
      AND (l.kind IN ('top_up', 'expiry')
           OR (l.kind = 'adjustment'
               AND l.reference NOT LIKE 'draft invoice % discarded: %'
               AND NOT EXISTS (SELECT 1 FROM @extschema@.invoice cn
                               WHERE cn.account_id = l.account_id AND cn.kind = 'credit_note'
                                 AND cn.number = l.reference)))
) d;
COMMENT ON VIEW @extschema@.account_statement IS
    'what an account was invoiced (final and void invoices: debit = total) and the money it gave or was given (payments, prepaid top-ups, credit notes, balance corrections: credit; prepaid money expired: debit), in time order with a running balance (positive = owed by the customer, negative = in credit); unbilled charges are not on it';
