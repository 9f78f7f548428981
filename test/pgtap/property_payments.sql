-------------------------------------------------------------------------------
-- property_payments.sql — payments, allocations, credit notes and invoices
-- under a random sequence of billing operations.
--
-- Two universes of 5 accounts are set up identically (A: ids 9710001..,
-- B: 9720001..): an EUR account with tax, an EUR parent paying for an EUR
-- child (bill_to_parent; a discount), a JPY account billed in advance with
-- tax, and a JPY account with only one-time charges (billing day 15).
-- One seeded random stream of steps drives both, in lockstep:
--   bill        the clock moves a month on, run_billing(as_of) (or a re-run)
--   finalize    A: a random draft (the newest of its account, or any: out of
--               period order), or every draft of an account, newest first;
--               B (lazy) finalizes nothing here
--   discard     the newest invoice of an account, a draft: discard_draft in
--               both; or, in A only, a final / not-newest one (refused)
--   pay         record_payment: exact, partial, over, arbitrary amounts, too
--               many decimals (refused), on the child (refused)
--   retry       record_payment with an earlier reference: same amount (a
--               retry: same payment_id, no table changes) or another (23505)
--   credit      credit_note on a random invoice of A: full rest, partial, too
--               much (refused), on a draft or void one (refused); B first
--               finalizes that invoice if it is still a draft there
--   charge      add_charge one-time charges (EUR to 4 decimals, JPY to 2)
--   top_up      top_up into the main bucket or an expiring bucket, or on the
--               child (refused)
-- Expected refusals (55000, 22023, 23505) are counted; any other error fails.
-- After every step, for every universe (violations collected, one assertion
-- per invariant at the end; the family of the payer the step touched, and
-- every account after a bill run and every 10 steps):
--   1  per payment: allocated <= amount
--   2  per final/void invoice: allocated <= amount_due; allocated + credited
--      <= amount_due when it last got an allocation; invoice_settlement: paid,
--      credited and open = greatest(amount_due - paid - credited, 0) from the
--      base tables; void exactly when credit notes cover the total
--   3  nothing allocated to a draft or a credit note; every allocation from a
--      payment recorded after the invoice was billed (payment_id >
--      last_payment_id)
--   4  allocations are append-only: none changes or goes, none twice
--   5  the ledger sums to each bucket's balance; each payer's money = top-ups
--      + payments + credit notes - charges - what invoices debited
--   6  every invoice's lines are rounded to the minor unit and sum to its
--      total, subtotal, discount and tax; 0 <= prepaid_applied <= total;
--      charged = its charges; final invoices never change (but to void)
--   7  a retried record_payment returns the first payment_id, changes nothing
--   8  oldest period first: no payment gave money to an invoice while an older
--      final invoice it may pay (billed before it came in) is still open
--   9  twin: the same invoices (totals, prepaid, due) in A and B, the same
--      money, the same outcome of every step run in both, B's finals a subset
--      of A's, and the same allocations (payment reference, amount) to every
--      invoice final in both although A finalized eagerly in random order and
--      B only when a credit note needed it
-- At the end every draft is finalized, oldest first in A and newest first in B:
--   8  no open final invoice is older than an invoice that got money from a
--      payment with money left that may pay the older one; and no payment with
--      money left may pay an open final invoice at all (allocation complete)
--   9  allocations per (account, period) and per (account, period, payment)
--      equal in A and B
--
-- Reproducible: the seed is fixed; change it with  pg_prove --set seed=0.123 ...
-------------------------------------------------------------------------------
BEGIN;
SET LOCAL client_min_messages = warning;
SET LOCAL max_parallel_workers_per_gather = 0;	-- keep random() draws in one order
SET LOCAL jit = off;    -- a few hundred small check queries: compiling them would cost more than running them
\if :{?seed}
\else
\set seed 0.577215
\endif
\if :{?steps}
\else
\set steps 320
\endif

SELECT setseed(:seed) \gset
SELECT plan(25);

-------------------------------------------------------------------------------
-- Catalog and the two universes
-------------------------------------------------------------------------------
INSERT INTO convbill.plan (code, name, currency, recurring_fee, billing) VALUES
    ('PP-EUR', 'property_payments EUR', 'EUR', 29.99, 'arrears'),
    ('PP-EUR-KID', 'property_payments EUR child', 'EUR', 7.333333, 'arrears'),
    ('PP-JPY', 'property_payments JPY', 'JPY', 3333, 'advance');
INSERT INTO convbill.tax_rate (code, rate) VALUES ('PP-DE', 19), ('PP-JP', 10);

CREATE TEMP TABLE pp_u (u text PRIMARY KEY, base bigint NOT NULL);
INSERT INTO pp_u VALUES ('A', 9710000), ('B', 9720000);

CREATE FUNCTION pg_temp.pp_universe(base bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO convbill.account (account_id, external_ref, name, currency, billing_day, tax_code)
    VALUES (base + 1, 'PP-' || (base + 1), 'pp EUR taxed', 'EUR', 1, 'PP-DE'),
           (base + 2, 'PP-' || (base + 2), 'pp EUR parent', 'EUR', 1, 'PP-DE'),
           (base + 3, 'PP-' || (base + 3), 'pp EUR child', 'EUR', 1, NULL),
           (base + 4, 'PP-' || (base + 4), 'pp JPY advance', 'JPY', 1, 'PP-JP'),
           (base + 5, 'PP-' || (base + 5), 'pp JPY one-time', 'JPY', 15, NULL);
    UPDATE convbill.account SET parent_id = base + 2, bill_to_parent = true WHERE account_id = base + 3;
    PERFORM convbill.subscribe(base + 1, 'PP-EUR', '2023-01-10 00:00+00');
    PERFORM convbill.subscribe(base + 2, 'PP-EUR', '2023-01-01 00:00+00');
    PERFORM convbill.subscribe(base + 3, 'PP-EUR-KID', '2023-02-20 00:00+00', 2);
    PERFORM convbill.subscribe(base + 4, 'PP-JPY', '2023-01-17 00:00+00');
    INSERT INTO convbill.discount (account_id, percent, max_periods) VALUES (base + 2, 10, 6);
END $$;
SELECT count(pg_temp.pp_universe(base)) AS universes FROM (SELECT base FROM pp_u ORDER BY u) u \gset

-- the accounts of each universe: idx 1..5, payer idx
CREATE TEMP TABLE pp_acct AS
SELECT u.u, u.base + i AS account_id, i AS idx, u.base + CASE WHEN i = 3 THEN 2 ELSE i END AS payer,
       CASE WHEN i = 3 THEN 2 ELSE i END AS pidx
FROM pp_u u, generate_series(1, 5) i;
-- the accounts pp_check looks at: every account, or after a step that touched
-- one payer, its family (pp.pidx; a view, not a table rewritten every step)
SELECT set_config('pp.pidx', '', true) \gset
CREATE TEMP VIEW pp_scope AS
SELECT * FROM pp_acct WHERE current_setting('pp.pidx') IN ('', pidx::text);

-------------------------------------------------------------------------------
-- Harness state
-------------------------------------------------------------------------------
CREATE TEMP TABLE pp_clock (at timestamptz NOT NULL);
INSERT INTO pp_clock VALUES ('2023-01-01 00:00+00');
CREATE TEMP TABLE pp_log (step int, op text, u text, state text, detail text);
CREATE TEMP TABLE pp_violation (step int, inv text, detail text);
CREATE TEMP TABLE pp_feature (step int, feature text);
CREATE TEMP TABLE pp_pay (ref text PRIMARY KEY, idx int, amount numeric, pid_a bigint, pid_b bigint);
CREATE TEMP TABLE pp_topup (u text, account_id bigint, amount numeric);
CREATE TEMP TABLE pp_alloc_seen (u text, account_id bigint, payment_id bigint, invoice_id bigint, amount numeric,
                                 step int, PRIMARY KEY (account_id, payment_id, invoice_id));
CREATE TEMP TABLE pp_final_seen (account_id bigint, invoice_id bigint, h text, PRIMARY KEY (account_id, invoice_id));

-- run a statement; (state 'ok', its result) or (SQLSTATE, message)
CREATE FUNCTION pg_temp.pp_try(q text, OUT state text, OUT res text) LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE q INTO res;
    state := 'ok';
EXCEPTION WHEN others THEN
    state := SQLSTATE;
    res := SQLERRM;
END $$;

CREATE FUNCTION pg_temp.pp_rint(lo int, hi int) RETURNS int
LANGUAGE sql VOLATILE AS $$ SELECT lo + floor(random() * (hi - lo + 1))::int $$;

CREATE FUNCTION pg_temp.pp_base(p_u text) RETURNS bigint
LANGUAGE sql STABLE AS $$ SELECT base FROM pp_u WHERE u = p_u $$;

-- a logged call in one universe
CREATE FUNCTION pg_temp.pp_call(p_step int, p_op text, p_u text, q text, OUT state text, OUT res text)
LANGUAGE plpgsql AS $$
BEGIN
    SELECT t.state, t.res INTO state, res FROM pg_temp.pp_try(q) t;
    INSERT INTO pp_log VALUES (p_step, p_op, p_u, state, left(res, 300));
    IF state NOT IN ('ok', '55000', '22023', '23505') THEN
        INSERT INTO pp_violation VALUES (p_step, '0 unexpected error', format('%s %s: %s %s (%s)', p_op, p_u, state, res, q));
    END IF;
END $$;

-- the same call in both universes (q has %1$s for the universe's base); the
-- outcomes must agree
CREATE FUNCTION pg_temp.pp_both(p_step int, p_op text, q text, OUT state text, OUT res_a text, OUT res_b text)
LANGUAGE plpgsql AS $$
DECLARE
    sb text;
BEGIN
    SELECT c.state, c.res INTO state, res_a FROM pg_temp.pp_call(p_step, p_op, 'A', format(q, pg_temp.pp_base('A'))) c;
    SELECT c.state, c.res INTO sb, res_b FROM pg_temp.pp_call(p_step, p_op, 'B', format(q, pg_temp.pp_base('B'))) c;
    IF sb IS DISTINCT FROM state THEN
        INSERT INTO pp_violation VALUES (p_step, '9 twin outcome', format('%s: A %s (%s), B %s (%s)', p_op, state, res_a, sb, res_b));
    END IF;
END $$;

-- everything of a universe's accounts, as one hash (for the retry check)
CREATE FUNCTION pg_temp.pp_hash(p_u text) RETURNS text LANGUAGE sql AS $$
    WITH a AS (SELECT account_id FROM pp_acct WHERE u = p_u)
    SELECT md5(concat_ws('#',
        (SELECT string_agg(x::text, '|' ORDER BY x.payment_id) FROM convbill.payment x WHERE x.account_id IN (SELECT * FROM a)),
        (SELECT string_agg(x::text, '|' ORDER BY x.payment_id, x.invoice_id) FROM convbill.payment_allocation x WHERE x.account_id IN (SELECT * FROM a)),
        (SELECT string_agg(x::text, '|' ORDER BY x.entry_id) FROM convbill.ledger x WHERE x.account_id IN (SELECT * FROM a)),
        (SELECT string_agg(x::text, '|' ORDER BY x.bucket_id) FROM convbill.bucket x WHERE x.account_id IN (SELECT * FROM a)),
        (SELECT string_agg(x::text, '|' ORDER BY x.invoice_id) FROM convbill.invoice x WHERE x.account_id IN (SELECT * FROM a)),
        (SELECT string_agg(x::text, '|' ORDER BY x.invoice_id, x.line_no) FROM convbill.invoice_line x WHERE x.account_id IN (SELECT * FROM a)),
        (SELECT string_agg(x::text, '|' ORDER BY x.charge_id) FROM convbill.charge x WHERE x.account_id IN (SELECT * FROM a)),
        (SELECT string_agg(x::text, '|' ORDER BY x.series) FROM convbill.invoice_series x),
        (SELECT string_agg(x::text, '|' ORDER BY x.account_id) FROM convbill.account x WHERE x.account_id IN (SELECT * FROM a))))
$$;

-- a universe's invoices of kind 'invoice', keyed by (idx, period_start)
CREATE FUNCTION pg_temp.pp_inv(p_u text)
RETURNS TABLE (idx int, period_start timestamptz, invoice_id bigint, status text, total numeric,
               prepaid_applied numeric, amount_due numeric, last_payment_id bigint, nlines bigint)
LANGUAGE sql STABLE AS $$
    SELECT a.idx, i.period_start, i.invoice_id, i.status, i.total, i.prepaid_applied, i.amount_due, i.last_payment_id,
           (SELECT count(*) FROM convbill.invoice_line l WHERE l.account_id = i.account_id AND l.invoice_id = i.invoice_id)
    FROM convbill.invoice i JOIN pp_acct a ON a.account_id = i.account_id AND a.u = p_u
    WHERE i.kind = 'invoice'
$$;

-- allocations of a universe, keyed by (idx, period_start, payment reference)
CREATE FUNCTION pg_temp.pp_alloc(p_u text)
RETURNS TABLE (idx int, period_start timestamptz, ref text, amount numeric, status text)
LANGUAGE sql STABLE AS $$
    SELECT a.idx, i.period_start, p.reference, pa.amount, i.status
    FROM convbill.payment_allocation pa
    JOIN pp_acct a ON a.account_id = pa.account_id AND a.u = p_u
    JOIN convbill.payment p ON p.account_id = pa.account_id AND p.payment_id = pa.payment_id
    JOIN convbill.invoice i ON i.account_id = pa.account_id AND i.invoice_id = pa.invoice_id
$$;

-- money left on each payment of a universe
CREATE FUNCTION pg_temp.pp_free(p_u text)
RETURNS TABLE (account_id bigint, payment_id bigint, reference text, free numeric)
LANGUAGE sql STABLE AS $$
    SELECT p.account_id, p.payment_id, p.reference,
           p.amount - coalesce((SELECT sum(pa.amount) FROM convbill.payment_allocation pa
                                WHERE pa.account_id = p.account_id AND pa.payment_id = p.payment_id), 0)
    FROM convbill.payment p JOIN pp_scope a ON a.account_id = p.account_id AND a.u = p_u
$$;

-- paid and credited per final/void invoice of kind invoice, from the base tables
CREATE FUNCTION pg_temp.pp_settle(p_u text)
RETURNS TABLE (account_id bigint, invoice_id bigint, period_start timestamptz, status text, total numeric,
               amount_due numeric, last_payment_id bigint, paid numeric, credited numeric)
LANGUAGE sql STABLE AS $$
    SELECT i.account_id, i.invoice_id, i.period_start, i.status, i.total, i.amount_due, i.last_payment_id,
           coalesce((SELECT sum(pa.amount) FROM convbill.payment_allocation pa
                     WHERE pa.account_id = i.account_id AND pa.invoice_id = i.invoice_id), 0),
           coalesce((SELECT -sum(c.total) FROM convbill.invoice c
                     WHERE c.account_id = i.account_id AND c.credits_invoice_id = i.invoice_id
                       AND c.kind = 'credit_note' AND c.status = 'final'), 0)
    FROM convbill.invoice i JOIN pp_scope a ON a.account_id = i.account_id AND a.u = p_u
    WHERE i.kind = 'invoice' AND i.status IN ('final', 'void')
$$;

-------------------------------------------------------------------------------
-- The invariants, checked after every step
--
-- (enable_nestloop off for the checks only: the tables grow from empty inside
-- this one transaction, and nested loops planned for "empty" tables go
-- quadratic as they fill; the code under test keeps its own plans)
-------------------------------------------------------------------------------
CREATE FUNCTION pg_temp.pp_check_u(p_step int, v_u text) RETURNS void LANGUAGE plpgsql
SET enable_nestloop = off AS $$
BEGIN
        -- 1. per payment: allocated <= amount
        INSERT INTO pp_violation
        SELECT p_step, '1 payment over-allocated', format('%s payment %s: amount %s, allocated %s', v_u, f.reference, p.amount, p.amount - f.free)
        FROM pg_temp.pp_free(v_u) f JOIN convbill.payment p USING (account_id, payment_id)
        WHERE f.free < 0;

        -- 2. per final invoice: paid <= due; paid + credited <= due when it last got money;
        --    the settlement view agrees with the base tables; void = credited in full
        INSERT INTO pp_violation
        WITH s AS MATERIALIZED (SELECT * FROM pg_temp.pp_settle(v_u)),
             v AS MATERIALIZED (SELECT v.* FROM convbill.invoice_settlement v
                                WHERE v.account_id IN (SELECT account_id FROM pp_scope WHERE u = v_u))
        SELECT p_step, '2 settlement',
               format('%s invoice %s (%s, %s): total %s, due %s, paid %s, credited %s; view paid %s credited %s open %s; new money %s',
                      v_u, s.invoice_id, s.period_start, s.status, s.total, s.amount_due, s.paid, s.credited,
                      v.paid, v.credited, v.open, n.new_money)
        FROM s LEFT JOIN v ON v.account_id = s.account_id AND v.invoice_id = s.invoice_id
        LEFT JOIN LATERAL (SELECT sum(pa.amount) AS new_money FROM convbill.payment_allocation pa
                           WHERE pa.account_id = s.account_id AND pa.invoice_id = s.invoice_id
                             AND NOT EXISTS (SELECT 1 FROM pp_alloc_seen x
                                             WHERE x.account_id = pa.account_id AND x.payment_id = pa.payment_id
                                               AND x.invoice_id = pa.invoice_id)) n ON true
        WHERE s.paid > s.amount_due
           OR (n.new_money IS NOT NULL AND s.paid + s.credited > s.amount_due)
           OR v.invoice_id IS NULL
           OR v.paid <> s.paid OR v.credited <> s.credited
           OR v.open <> greatest(s.amount_due - s.paid - s.credited, 0) OR v.open < 0
           OR (s.status = 'void') <> (s.credited = s.total AND s.total > 0)
           OR s.credited > s.total;

        -- 3. allocations only to final invoices billed before the payment came in
        INSERT INTO pp_violation
        SELECT p_step, '3 allocation target',
               format('%s payment %s -> invoice %s (%s %s, last_payment_id %s): %s', v_u, pa.payment_id, pa.invoice_id,
                      i.kind, i.status, i.last_payment_id, pa.amount)
        FROM convbill.payment_allocation pa
        JOIN pp_scope a ON a.account_id = pa.account_id AND a.u = v_u
        JOIN convbill.invoice i ON i.account_id = pa.account_id AND i.invoice_id = pa.invoice_id
        WHERE i.kind <> 'invoice' OR i.status = 'draft'
           OR i.last_payment_id IS NULL OR pa.payment_id <= i.last_payment_id;

        -- 8. oldest period first: no payment gave money to an invoice while an
        --    older final invoice it may pay is still open (open never grows, so
        --    it was open then; had it been a draft, the money was kept for it)
        INSERT INTO pp_violation
        SELECT p_step, '8 oldest first',
               format('%s payment %s paid invoice %s (%s) %s, but invoice %s (%s, last_payment_id %s) is open: %s',
                      v_u, pa.payment_id, y.invoice_id, y.period_start, pa.amount, x.invoice_id, x.period_start,
                      x.last_payment_id, x.amount_due - x.paid - x.credited)
        FROM convbill.payment_allocation pa
        JOIN pp_scope a ON a.account_id = pa.account_id AND a.u = v_u
        JOIN convbill.invoice y ON y.account_id = pa.account_id AND y.invoice_id = pa.invoice_id
        JOIN pg_temp.pp_settle(v_u) x ON x.account_id = pa.account_id
        WHERE x.status = 'final' AND x.amount_due - x.paid - x.credited > 0
          AND x.period_start < y.period_start AND pa.payment_id > x.last_payment_id;

        -- 4. allocations append-only, never twice
        INSERT INTO pp_violation
        SELECT p_step, '4 allocation changed',
               format('%s payment %s -> invoice %s: was %s (step %s), now %s', v_u, x.payment_id, x.invoice_id,
                      x.amount, x.step, pa.amount)
        FROM pp_alloc_seen x
        LEFT JOIN convbill.payment_allocation pa USING (account_id, payment_id, invoice_id)
        WHERE x.u = v_u AND x.account_id IN (SELECT account_id FROM pp_scope) AND pa.amount IS DISTINCT FROM x.amount;
        INSERT INTO pp_violation
        SELECT p_step, '4 allocation changed', format('%s payment %s -> invoice %s allocated %s times', v_u, pa.payment_id, pa.invoice_id, count(*))
        FROM convbill.payment_allocation pa JOIN pp_scope a ON a.account_id = pa.account_id AND a.u = v_u
        GROUP BY pa.payment_id, pa.invoice_id HAVING count(*) > 1;
        INSERT INTO pp_alloc_seen
        SELECT v_u, pa.account_id, pa.payment_id, pa.invoice_id, pa.amount, p_step
        FROM convbill.payment_allocation pa JOIN pp_scope a ON a.account_id = pa.account_id AND a.u = v_u
        ON CONFLICT DO NOTHING;

        -- 5. the ledger sums to every bucket; money = top-ups + payments +
        --    credit notes - charges - what invoices debited beyond them
        INSERT INTO pp_violation
        SELECT p_step, '5 ledger', format('%s bucket %s of %s: balance %s, ledger %s', v_u, b.bucket_id, b.account_id, b.balance, l.s)
        FROM convbill.bucket b JOIN pp_scope a ON a.account_id = b.account_id AND a.u = v_u
        CROSS JOIN LATERAL (SELECT coalesce(sum(l.amount), 0) AS s FROM convbill.ledger l
                            WHERE l.account_id = b.account_id AND l.bucket_id = b.bucket_id) l
        WHERE l.s <> b.balance;
        INSERT INTO pp_violation
        SELECT p_step, '5 ledger', format('%s payer %s: money %s, expected %s (top-ups %s, payments %s, credits %s, charges %s, debited %s)',
                                          v_u, m.payer, m.money, m.t + m.p + m.c - m.ch - m.d, m.t, m.p, m.c, m.ch, m.d)
        FROM (SELECT a.account_id AS payer,
                     (SELECT coalesce(sum(b.balance), 0) FROM convbill.bucket b WHERE b.account_id = a.account_id AND b.kind = 'money') AS money,
                     (SELECT coalesce(sum(t.amount), 0) FROM pp_topup t WHERE t.account_id = a.account_id) AS t,
                     (SELECT coalesce(sum(p.amount), 0) FROM convbill.payment p WHERE p.account_id = a.account_id) AS p,
                     (SELECT coalesce(-sum(c.total), 0) FROM convbill.invoice c
                      WHERE c.account_id = a.account_id AND c.kind = 'credit_note' AND c.status = 'final') AS c,
                     (SELECT coalesce(sum(ch.amount), 0) FROM convbill.charge ch JOIN pp_acct f ON f.account_id = ch.account_id
                      WHERE f.payer = a.account_id) AS ch,
                     (SELECT coalesce(sum(i.debited), 0) FROM convbill.invoice i
                      WHERE i.account_id = a.account_id AND i.kind = 'invoice') AS d
              FROM pp_scope a WHERE a.u = v_u AND a.payer = a.account_id) m
        WHERE m.money <> m.t + m.p + m.c - m.ch - m.d;

        -- 6. lines make up the totals, rounded; prepaid within the total; charged = its charges
        INSERT INTO pp_violation
        SELECT p_step, '6 invoice totals',
               format('%s invoice %s (%s %s %s): total %s subtotal %s discount %s tax %s prepaid %s charged %s; lines %s/%s/%s/%s unrounded %s; charges %s',
                      v_u, i.invoice_id, i.kind, i.status, i.currency, i.total, i.subtotal, i.discount, i.tax, i.prepaid_applied,
                      i.charged, l.total, l.subtotal, l.discount, l.tax, l.unrounded, ch.s)
        FROM convbill.invoice i JOIN pp_scope a ON a.account_id = i.account_id AND a.u = v_u
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(l.amount), 0) AS total,
                   coalesce(sum(l.amount) FILTER (WHERE l.kind NOT IN ('discount', 'tax')), 0) AS subtotal,
                   coalesce(sum(l.amount) FILTER (WHERE l.kind = 'discount'), 0) AS discount,
                   coalesce(sum(l.amount) FILTER (WHERE l.kind = 'tax'), 0) AS tax,
                   count(*) FILTER (WHERE l.amount <> round(l.amount, convbill.currency_exponent(i.currency))) AS unrounded
            FROM convbill.invoice_line l WHERE l.account_id = i.account_id AND l.invoice_id = i.invoice_id) l
        CROSS JOIN LATERAL (
            SELECT coalesce(sum(c.amount), 0) AS s FROM convbill.charge c JOIN pp_acct f ON f.account_id = c.account_id
            WHERE f.payer = i.account_id AND c.invoice_id = i.invoice_id) ch
        WHERE l.total <> i.total OR l.subtotal <> i.subtotal OR l.discount <> i.discount OR l.tax <> i.tax
           OR l.unrounded > 0 OR i.total <> i.subtotal + i.discount + i.tax OR i.discount > 0 OR i.tax < 0
           OR i.amount_due <> i.total - i.prepaid_applied
           OR (i.kind = 'invoice' AND (i.prepaid_applied < 0 OR i.prepaid_applied > greatest(i.total, 0)
                                       OR i.prepaid_applied <> round(i.prepaid_applied, convbill.currency_exponent(i.currency))
                                       OR i.charged <> ch.s));
        -- final invoices never change (but to void), nor their lines
        INSERT INTO pp_violation
        SELECT p_step, '6 final invoice changed', format('%s invoice %s changed or gone (now %s)', v_u, x.invoice_id, i.status)
        FROM pp_final_seen x JOIN pp_scope a ON a.account_id = x.account_id AND a.u = v_u
        LEFT JOIN convbill.invoice i ON i.account_id = x.account_id AND i.invoice_id = x.invoice_id
        LEFT JOIN LATERAL (SELECT md5((i.account_id, i.invoice_id, i.kind, i.period_start, i.number, i.total, i.subtotal,
                                       i.discount, i.tax, i.prepaid_applied, i.amount_due, i.issued_at, i.due_at,
                                       i.last_payment_id, i.credits_invoice_id)::text
                                      || (SELECT string_agg(l::text, '|' ORDER BY l.line_no) FROM convbill.invoice_line l
                                          WHERE l.account_id = i.account_id AND l.invoice_id = i.invoice_id)) AS h) h ON true
        WHERE i.invoice_id IS NULL OR i.status = 'draft' OR h.h IS DISTINCT FROM x.h;
        INSERT INTO pp_final_seen
        SELECT i.account_id, i.invoice_id,
               md5((i.account_id, i.invoice_id, i.kind, i.period_start, i.number, i.total, i.subtotal,
                    i.discount, i.tax, i.prepaid_applied, i.amount_due, i.issued_at, i.due_at,
                    i.last_payment_id, i.credits_invoice_id)::text
                   || (SELECT string_agg(l::text, '|' ORDER BY l.line_no) FROM convbill.invoice_line l
                       WHERE l.account_id = i.account_id AND l.invoice_id = i.invoice_id))
        FROM convbill.invoice i JOIN pp_scope a ON a.account_id = i.account_id AND a.u = v_u
        WHERE i.status <> 'draft'
        ON CONFLICT DO NOTHING;
END $$;

CREATE FUNCTION pg_temp.pp_check(p_step int, p_pidx int DEFAULT NULL) RETURNS void LANGUAGE plpgsql
SET enable_nestloop = off AS $$
BEGIN
    PERFORM set_config('pp.pidx', coalesce(p_pidx::text, ''), true);
    PERFORM pg_temp.pp_check_u(p_step, u) FROM pp_u ORDER BY u;

    -- 9. the twins: the same invoices and money; B's finals are A's; the same
    --    allocations to every invoice final in both
    INSERT INTO pp_violation
    SELECT p_step, '9 twin invoices',
           format('idx %s period %s: A %s %s total %s prepaid %s due %s lines %s / B %s %s total %s prepaid %s due %s lines %s',
                  coalesce(a.idx, b.idx), coalesce(a.period_start, b.period_start),
                  a.invoice_id, a.status, a.total, a.prepaid_applied, a.amount_due, a.nlines,
                  b.invoice_id, b.status, b.total, b.prepaid_applied, b.amount_due, b.nlines)
    FROM pg_temp.pp_inv('A') a FULL JOIN pg_temp.pp_inv('B') b USING (idx, period_start)
    WHERE coalesce(a.idx, b.idx) IN (SELECT idx FROM pp_scope)
      AND (a.invoice_id IS NULL OR b.invoice_id IS NULL
           OR (a.total, a.prepaid_applied, a.amount_due, a.nlines) IS DISTINCT FROM (b.total, b.prepaid_applied, b.amount_due, b.nlines)
           OR (b.status <> 'draft' AND a.status = 'draft') OR (b.status = 'void') <> (a.status = 'void'));
    INSERT INTO pp_violation
    SELECT p_step, '9 twin money', format('idx %s: A %s, B %s', a.idx, ma.m, mb.m)
    FROM pp_scope a JOIN pp_acct b ON b.idx = a.idx AND b.u = 'B'
    CROSS JOIN LATERAL (SELECT coalesce(sum(x.balance), 0) AS m FROM convbill.bucket x WHERE x.account_id = a.account_id AND x.kind = 'money') ma
    CROSS JOIN LATERAL (SELECT coalesce(sum(x.balance), 0) AS m FROM convbill.bucket x WHERE x.account_id = b.account_id AND x.kind = 'money') mb
    WHERE a.u = 'A' AND ma.m <> mb.m;
    -- (one aggregation per (account, period) over both universes' invoices
    -- and allocations: no join whose plan could go quadratic)
    INSERT INTO pp_violation
    SELECT p_step, '9 twin allocations',
           format('idx %s period %s: A %s, B %s', x.idx, x.period_start,
                  coalesce(string_agg(x.ref || ' ' || x.amount, ', ' ORDER BY x.ref) FILTER (WHERE x.u = 'A' AND x.ref IS NOT NULL), '-'),
                  coalesce(string_agg(x.ref || ' ' || x.amount, ', ' ORDER BY x.ref) FILTER (WHERE x.u = 'B' AND x.ref IS NOT NULL), '-'))
    FROM (SELECT 'A' AS u, i.idx, i.period_start, i.status, NULL::text AS ref, NULL::numeric AS amount FROM pg_temp.pp_inv('A') i
          UNION ALL
          SELECT 'B', i.idx, i.period_start, i.status, NULL, NULL FROM pg_temp.pp_inv('B') i
          UNION ALL
          SELECT 'A', a.idx, a.period_start, NULL, a.ref, a.amount FROM pg_temp.pp_alloc('A') a
          UNION ALL
          SELECT 'B', a.idx, a.period_start, NULL, a.ref, a.amount FROM pg_temp.pp_alloc('B') a) x
    WHERE x.idx IN (SELECT idx FROM pp_scope)
    GROUP BY x.idx, x.period_start
    HAVING count(*) FILTER (WHERE x.status IN ('final', 'void')) = 2
       AND (string_agg(x.ref || ' ' || x.amount, ', ' ORDER BY x.ref) FILTER (WHERE x.u = 'A' AND x.ref IS NOT NULL))
           IS DISTINCT FROM
           (string_agg(x.ref || ' ' || x.amount, ', ' ORDER BY x.ref) FILTER (WHERE x.u = 'B' AND x.ref IS NOT NULL));
END $$;

-------------------------------------------------------------------------------
-- One random step
-------------------------------------------------------------------------------
-- returns the payer (idx) whose family the step touched; NULL: any or all
CREATE FUNCTION pg_temp.pp_step(p_step int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
    r float8 := random();
    v_clock timestamptz;
    v_idx int;
    v_acc bigint;
    v_e int;
    v_amt numeric;
    v_ref text;
    v_state text;
    v_res text;
    v_res_b text;
    v_inv record;
    v_b record;
    v_keys int[];
    v_ids bigint[];
    v_id bigint;
    v_touch int;                -- the payer idx the step touched
    k int;
    h0 text;
    h1 text;
    v_pay record;
BEGIN
    PERFORM set_config('pp.pidx', '', true);
    SELECT at INTO v_clock FROM pp_clock;
    IF r < 0.12 THEN
        ---------------------------------------------------------------- bill
        IF random() < 0.85 THEN
            v_clock := v_clock + interval '1 month';
            UPDATE pp_clock SET at = v_clock;
            INSERT INTO pp_feature VALUES (p_step, 'bill');
        ELSE
            INSERT INTO pp_feature VALUES (p_step, 'bill re-run');
        END IF;
        SELECT c.state, c.res INTO v_state, v_res
        FROM pg_temp.pp_call(p_step, 'bill', '*', format('SELECT convbill.run_billing(%L)', v_clock)) c;
        IF v_state <> 'ok' THEN
            INSERT INTO pp_violation VALUES (p_step, '0 unexpected error', 'run_billing: ' || v_res);
        END IF;

    ELSIF r < 0.21 THEN
        ---------------------------------------------------------------- finalize (A only)
        SELECT array_agg(i.invoice_id ORDER BY i.idx, i.period_start),
               array_agg(i.idx ORDER BY i.idx, i.period_start)
        INTO v_ids, v_keys
        FROM pg_temp.pp_inv('A') i WHERE i.status = 'draft';
        IF v_ids IS NULL THEN
            RETURN NULL;
        END IF;
        k := pg_temp.pp_rint(1, cardinality(v_ids));
        v_id := v_ids[k];
        IF random() < 0.4 THEN      -- the newest draft of that account
            SELECT i.invoice_id INTO v_id FROM pg_temp.pp_inv('A') i
            WHERE i.status = 'draft' AND i.idx = v_keys[k] ORDER BY i.period_start DESC LIMIT 1;
        END IF;
        IF random() < 0.2 THEN      -- every draft of that account, newest first
            FOR v_inv IN SELECT * FROM pg_temp.pp_inv('A') i WHERE i.status = 'draft' AND i.idx = v_keys[k]
                         ORDER BY i.period_start DESC LOOP
                SELECT c.state INTO v_state FROM pg_temp.pp_call(p_step, 'finalize', 'A',
                    format('SELECT convbill.finalize_invoice(%s)', v_inv.invoice_id)) c;
                IF v_state <> 'ok' THEN
                    INSERT INTO pp_violation VALUES (p_step, '0 unexpected error', 'finalize of a draft refused: ' || v_state);
                END IF;
            END LOOP;
            INSERT INTO pp_feature VALUES (p_step, 'finalize account newest first');
            RETURN v_keys[k];
        END IF;
        SELECT * INTO v_inv FROM pg_temp.pp_inv('A') i WHERE i.invoice_id = v_id;
        IF EXISTS (SELECT 1 FROM pg_temp.pp_inv('A') i WHERE i.idx = v_inv.idx AND i.status = 'draft'
                   AND i.period_start < v_inv.period_start) THEN
            INSERT INTO pp_feature VALUES (p_step, 'finalize out of order');
        END IF;
        SELECT c.state INTO v_state FROM pg_temp.pp_call(p_step, 'finalize', 'A',
            format('SELECT convbill.finalize_invoice(%s)', v_inv.invoice_id)) c;
        v_touch := v_inv.idx;
        IF v_state = 'ok' THEN
            INSERT INTO pp_feature VALUES (p_step, 'finalize');
        ELSE
            INSERT INTO pp_violation VALUES (p_step, '0 unexpected error', 'finalize of a draft refused: ' || v_state);
        END IF;

    ELSIF r < 0.26 THEN
        ---------------------------------------------------------------- discard
        v_idx := (ARRAY[1, 2, 4, 5])[pg_temp.pp_rint(1, 4)];
        v_touch := v_idx;
        SELECT * INTO v_inv FROM pg_temp.pp_inv('A') i WHERE i.idx = v_idx ORDER BY i.period_start DESC LIMIT 1;
        IF v_inv.invoice_id IS NULL THEN
            RETURN NULL;
        END IF;
        IF v_inv.status = 'draft' AND random() < 0.8 THEN
            SELECT * INTO v_b FROM pg_temp.pp_inv('B') i WHERE i.idx = v_idx AND i.period_start = v_inv.period_start;
            SELECT c.state, c.res_a, c.res_b INTO v_state, v_res, v_res_b FROM pg_temp.pp_both(p_step, 'discard',
                format('SELECT convbill.discard_draft(CASE %%1$s WHEN %s THEN %s ELSE %s END)',
                       pg_temp.pp_base('A'), v_inv.invoice_id, v_b.invoice_id)) c;
            IF v_state = 'ok' THEN
                INSERT INTO pp_feature VALUES (p_step, 'discard');
            ELSE
                INSERT INTO pp_violation VALUES (p_step, '0 unexpected error', 'discard of the newest draft refused: ' || v_res);
            END IF;
        ELSE
            -- A only: an older invoice, or the newest when it is final (refused)
            SELECT i.invoice_id INTO v_id FROM pg_temp.pp_inv('A') i
            WHERE i.idx = v_idx AND (i.status <> 'draft' OR i.period_start < v_inv.period_start)
            ORDER BY i.period_start DESC LIMIT 1;
            IF v_id IS NULL THEN
                RETURN NULL;
            END IF;
            SELECT c.state INTO v_state FROM pg_temp.pp_call(p_step, 'discard refused', 'A',
                format('SELECT convbill.discard_draft(%s)', v_id)) c;
            IF v_state <> '55000' THEN
                INSERT INTO pp_violation VALUES (p_step, '0 unexpected error', 'discard of a final or older invoice: ' || v_state);
            END IF;
        END IF;

    ELSIF r < 0.53 THEN
        ---------------------------------------------------------------- pay
        v_idx := (ARRAY[1, 2, 4, 5, 1, 2, 4, 5, 3])[pg_temp.pp_rint(1, 9)];
        v_touch := CASE WHEN v_idx = 3 THEN 2 ELSE v_idx END;
        v_e := CASE WHEN v_idx IN (4, 5) THEN 0 ELSE 2 END;
        -- an amount due of one of the account's latest invoices (draft or final)
        SELECT i.amount_due INTO v_amt FROM pg_temp.pp_inv('A') i
        WHERE i.idx = CASE WHEN v_idx = 3 THEN 2 ELSE v_idx END AND i.amount_due > 0
        ORDER BY i.period_start DESC OFFSET pg_temp.pp_rint(0, 3) LIMIT 1;
        r := random();
        IF v_amt IS NULL OR r < 0.10 THEN
            v_amt := round((random() * CASE v_e WHEN 0 THEN 3000 ELSE 30 END)::numeric, v_e);
            INSERT INTO pp_feature VALUES (p_step, 'pay arbitrary');
        ELSIF r < 0.45 THEN
            INSERT INTO pp_feature VALUES (p_step, 'pay exact');
        ELSIF r < 0.80 THEN
            v_amt := round(v_amt * (0.1 + 0.8 * random())::numeric, v_e);
            INSERT INTO pp_feature VALUES (p_step, 'pay partial');
        ELSE
            v_amt := v_amt + round((random() * CASE v_e WHEN 0 THEN 2000 ELSE 20 END)::numeric, v_e);
            INSERT INTO pp_feature VALUES (p_step, 'pay over');
        END IF;
        IF v_amt <= 0 THEN
            v_amt := CASE v_e WHEN 0 THEN 1 ELSE 0.01 END;
        END IF;
        IF random() < 0.04 THEN
            v_amt := v_amt + 0.001;      -- more decimals than the currency: refused
        END IF;
        v_ref := 'pp-pay-' || p_step;
        SELECT c.state, c.res_a, c.res_b INTO v_state, v_res, v_res_b FROM pg_temp.pp_both(p_step, 'pay',
            format('SELECT convbill.record_payment(%%1$s + %s, %s, %L, %L)', v_idx, v_amt, v_ref,
                   v_clock + random() * interval '28 days')) c;
        IF v_state = 'ok' THEN
            INSERT INTO pp_pay VALUES (v_ref, v_idx, v_amt, v_res::bigint, v_res_b::bigint);
            -- money kept for a draft: the payment has money left and an older draft it may pay
            IF EXISTS (SELECT 1 FROM pg_temp.pp_free('A') f JOIN pg_temp.pp_inv('A') i ON i.idx = v_idx
                       WHERE f.payment_id = v_res::bigint AND f.free > 0 AND i.status = 'draft'
                         AND i.last_payment_id < f.payment_id
                         AND EXISTS (SELECT 1 FROM pg_temp.pp_inv('A') j
                                     WHERE j.idx = v_idx AND j.status <> 'draft' AND j.period_start > i.period_start)) THEN
                INSERT INTO pp_feature VALUES (p_step, 'payment kept for an older draft');
            END IF;
        ELSIF v_state = '22023' THEN
            INSERT INTO pp_feature VALUES (p_step, CASE WHEN v_idx = 3 THEN 'pay child refused' ELSE 'pay decimals refused' END);
        END IF;

    ELSIF r < 0.60 THEN
        ---------------------------------------------------------------- retry
        SELECT * INTO v_pay FROM pp_pay ORDER BY ref OFFSET pg_temp.pp_rint(0, greatest((SELECT count(*) FROM pp_pay)::int - 1, 0)) LIMIT 1;
        IF v_pay.ref IS NULL THEN
            RETURN NULL;
        END IF;
        v_touch := v_pay.idx;
        IF random() < 0.75 THEN
            h0 := pg_temp.pp_hash('A') || pg_temp.pp_hash('B');
            SELECT c.state, c.res_a, c.res_b INTO v_state, v_res, v_res_b FROM pg_temp.pp_both(p_step, 'retry',
                format('SELECT convbill.record_payment(%%1$s + %s, %s, %L, %L)', v_pay.idx, v_pay.amount, v_pay.ref,
                       v_clock + interval '29 days')) c;
            h1 := pg_temp.pp_hash('A') || pg_temp.pp_hash('B');
            IF v_state <> 'ok' OR v_res::bigint IS DISTINCT FROM v_pay.pid_a OR v_res_b::bigint IS DISTINCT FROM v_pay.pid_b
               OR h0 <> h1 THEN
                INSERT INTO pp_violation VALUES (p_step, '7 retry', format('retry of %s (%s): %s, ids A %s/%s B %s/%s, tables %s',
                    v_pay.ref, v_pay.amount, v_state, v_res, v_pay.pid_a, v_res_b, v_pay.pid_b,
                    CASE WHEN h0 = h1 THEN 'unchanged' ELSE 'CHANGED' END));
            END IF;
            INSERT INTO pp_feature VALUES (p_step, 'retry');
        ELSE
            SELECT c.state INTO v_state FROM pg_temp.pp_both(p_step, 'retry other amount',
                format('SELECT convbill.record_payment(%%1$s + %s, %s, %L)', v_pay.idx,
                       v_pay.amount + CASE WHEN v_pay.idx IN (4, 5) THEN 1 ELSE 0.01 END, v_pay.ref)) c;
            IF v_state <> '23505' THEN
                INSERT INTO pp_violation VALUES (p_step, '7 retry', format('reference %s reused for another amount: %s', v_pay.ref, v_state));
            END IF;
            INSERT INTO pp_feature VALUES (p_step, 'retry other amount refused');
        END IF;

    ELSIF r < 0.72 THEN
        ---------------------------------------------------------------- credit note
        -- mostly a final or void invoice; sometimes a draft (refused)
        k := CASE WHEN random() < 0.12 THEN 1 ELSE 0 END;
        SELECT array_agg(i.invoice_id ORDER BY i.idx, i.period_start) INTO v_ids
        FROM pg_temp.pp_inv('A') i WHERE (i.status = 'draft') = (k = 1);
        IF v_ids IS NULL THEN
            RETURN NULL;
        END IF;
        v_id := v_ids[pg_temp.pp_rint(1, cardinality(v_ids))];
        SELECT * INTO v_inv FROM pg_temp.pp_inv('A') i WHERE i.invoice_id = v_id;
        v_touch := v_inv.idx;
        IF v_inv.status <> 'void' OR random() < 0.3 THEN
            v_e := CASE WHEN v_inv.idx IN (4, 5) THEN 0 ELSE 2 END;
            SELECT v_inv.total - coalesce(-sum(c.total), 0) INTO v_amt FROM convbill.invoice c
            WHERE c.account_id = pg_temp.pp_base('A') + v_inv.idx AND c.credits_invoice_id = v_inv.invoice_id AND c.status = 'final';
            r := random();
            IF r < 0.4 THEN
                INSERT INTO pp_feature VALUES (p_step, 'credit full rest');
            ELSIF r < 0.8 THEN
                v_amt := round(v_amt * (0.05 + 0.9 * random())::numeric, v_e);
                INSERT INTO pp_feature VALUES (p_step, 'credit partial');
            ELSE
                v_amt := v_amt + CASE v_e WHEN 0 THEN 1 ELSE 0.01 END;
                INSERT INTO pp_feature VALUES (p_step, 'credit too much');
            END IF;
            IF v_amt <= 0 THEN
                v_amt := CASE v_e WHEN 0 THEN 1 ELSE 0.01 END;
            END IF;
            SELECT c.state, c.res INTO v_state, v_res FROM pg_temp.pp_call(p_step, 'credit', 'A',
                format('SELECT convbill.credit_note(%s, %s, %L)', v_inv.invoice_id, v_amt, 'step ' || p_step)) c;
            IF v_state = 'ok' THEN
                -- B: the same credit note, its invoice finalized first if still a draft
                SELECT * INTO v_b FROM pg_temp.pp_inv('B') i WHERE i.idx = v_inv.idx AND i.period_start = v_inv.period_start;
                IF v_b.status = 'draft' THEN
                    SELECT c.state INTO v_state FROM pg_temp.pp_call(p_step, 'finalize', 'B',
                        format('SELECT convbill.finalize_invoice(%s)', v_b.invoice_id)) c;
                    INSERT INTO pp_feature VALUES (p_step, 'B finalizes late');
                    -- B's invariants between its finalizing and the credit note
                    PERFORM pg_temp.pp_check_u(p_step, 'B');
                END IF;
                SELECT c.state, c.res INTO v_state, v_res_b FROM pg_temp.pp_call(p_step, 'credit', 'B',
                    format('SELECT convbill.credit_note(%s, %s, %L)', v_b.invoice_id, v_amt, 'step ' || p_step)) c;
                IF v_state <> 'ok' THEN
                    INSERT INTO pp_violation VALUES (p_step, '9 twin outcome', format('credit note: A ok, B %s', v_res_b));
                END IF;
                INSERT INTO pp_feature VALUES (p_step, 'credit');
                IF EXISTS (SELECT 1 FROM convbill.invoice i WHERE i.account_id = pg_temp.pp_base('A') + v_inv.idx
                           AND i.invoice_id = v_inv.invoice_id AND i.status = 'void') THEN
                    INSERT INTO pp_feature VALUES (p_step, 'credit voids');
                END IF;
            ELSE
                INSERT INTO pp_feature VALUES (p_step, 'credit refused ' || v_state);
            END IF;
        END IF;

    ELSIF r < 0.93 THEN
        ---------------------------------------------------------------- one-time charge
        v_idx := pg_temp.pp_rint(1, 5);
        v_touch := CASE WHEN v_idx = 3 THEN 2 ELSE v_idx END;
        v_amt := round((random() * CASE WHEN v_idx IN (4, 5) THEN 4000 ELSE 40 END)::numeric,
                       pg_temp.pp_rint(0, CASE WHEN v_idx IN (4, 5) THEN 2 ELSE 4 END));
        IF v_amt = 0 THEN
            v_amt := 1;
        END IF;
        SELECT c.state INTO v_state FROM pg_temp.pp_both(p_step, 'charge',
            format('SELECT convbill.add_charge(%%1$s + %s, %s, %L, ''one_time'', %L, %L)', v_idx, v_amt,
                   'one-time ' || p_step, v_clock + random() * interval '28 days', 'pp-chg-' || p_step)) c;
        IF v_state <> 'ok' THEN
            INSERT INTO pp_violation VALUES (p_step, '0 unexpected error', 'add_charge refused: ' || v_state);
        END IF;
        INSERT INTO pp_feature VALUES (p_step, 'charge');

    ELSE
        ---------------------------------------------------------------- top-up
        v_idx := (ARRAY[1, 2, 4, 5, 3])[pg_temp.pp_rint(1, 5)];
        v_touch := CASE WHEN v_idx = 3 THEN 2 ELSE v_idx END;
        v_amt := round((random() * CASE WHEN v_idx IN (4, 5) THEN 3000 ELSE 30 END)::numeric,
                       CASE WHEN v_idx IN (4, 5) THEN 0 ELSE 2 END) + CASE WHEN v_idx IN (4, 5) THEN 1 ELSE 0.01 END;
        SELECT c.state INTO v_state FROM pg_temp.pp_both(p_step, 'top_up',
            format('SELECT convbill.top_up(%%1$s + %s, %s, %L, %L)', v_idx, v_amt, 'pp-top-' || p_step,
                   CASE WHEN random() < 0.3 THEN now() + interval '5 years' ELSE 'infinity' END)) c;
        IF v_state = 'ok' THEN
            INSERT INTO pp_topup SELECT u, account_id, v_amt FROM pp_acct WHERE idx = v_idx;
            INSERT INTO pp_feature VALUES (p_step, 'top_up');
        ELSIF v_state = '22023' AND v_idx = 3 THEN
            INSERT INTO pp_feature VALUES (p_step, 'top_up child refused');
        ELSE
            INSERT INTO pp_violation VALUES (p_step, '0 unexpected error', 'top_up: ' || v_state);
        END IF;
    END IF;
    RETURN v_touch;
END $$;

-- every step, then the invariants: of the family it touched, and of every
-- account after a bill run and every 10 steps
CREATE FUNCTION pg_temp.pp_run(n int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_touch int;
BEGIN
    FOR s IN 1 .. n LOOP
        v_touch := pg_temp.pp_step(s);
        PERFORM pg_temp.pp_check(s, CASE WHEN s % 10 <> 0 THEN v_touch END);
    END LOOP;
END $$;

SELECT pg_temp.pp_run(:steps) \gset

-------------------------------------------------------------------------------
-- The end: every draft finalized, A oldest first, B newest first
-------------------------------------------------------------------------------
SELECT count(pg_temp.pp_call(:steps + 1, 'finalize', 'A', format('SELECT convbill.finalize_invoice(%s)', invoice_id))) AS final_a
FROM (SELECT invoice_id FROM pg_temp.pp_inv('A') WHERE status = 'draft' ORDER BY period_start, idx) d \gset
SELECT count(pg_temp.pp_call(:steps + 1, 'finalize', 'B', format('SELECT convbill.finalize_invoice(%s)', invoice_id))) AS final_b
FROM (SELECT invoice_id FROM pg_temp.pp_inv('B') WHERE status = 'draft' ORDER BY period_start DESC, idx DESC) d \gset
SELECT pg_temp.pp_check(:steps + 1) \gset

-------------------------------------------------------------------------------
-- Assertions
-------------------------------------------------------------------------------
-- the random run covers what it claims
SELECT is(
    (SELECT array_agg(f ORDER BY f) FROM unnest(ARRAY[
        'bill', 'bill re-run', 'finalize', 'finalize out of order', 'finalize account newest first', 'discard', 'pay exact', 'pay partial', 'pay over',
        'pay arbitrary', 'pay child refused', 'pay decimals refused', 'payment kept for an older draft', 'retry',
        'retry other amount refused', 'credit', 'credit partial', 'credit full rest', 'credit voids', 'credit too much',
        'credit refused 22023', 'credit refused 55000', 'B finalizes late', 'charge', 'top_up', 'top_up child refused']) f
     WHERE (SELECT count(*) FROM pp_feature x WHERE x.feature = f) < CASE f WHEN 'bill' THEN 15 WHEN 'pay exact' THEN 5
                                                                            WHEN 'finalize' THEN 12 WHEN 'credit' THEN 5 ELSE 1 END),
    NULL,
    format('the random run covers bill runs, finalizing out of order, discards, exact/partial/over payments, money kept for drafts, retries, credit notes and refusals (%s steps)', :steps));

SELECT is((SELECT count(*) FROM pp_log WHERE op = 'bill' AND CASE WHEN state = 'ok' THEN detail::int > 0 END) >= 15, true,
          format('%s invoices billed in %s bill runs; drafts left for the end: %s in A, %s in B',
                 (SELECT sum(CASE WHEN state = 'ok' THEN detail::int END) FROM pp_log WHERE op = 'bill'),
                 (SELECT count(*) FROM pp_log WHERE op = 'bill'), :final_a, :final_b));

SELECT is((SELECT array_agg(DISTINCT state ORDER BY state) FROM pp_log WHERE state <> 'ok'),
          ARRAY['22023', '23505', '55000'],
          format('refusals are the expected ones only: %s',
                 (SELECT string_agg(state || ' x' || n, ', ' ORDER BY state)
                  FROM (SELECT state, count(*) n FROM pp_log WHERE state <> 'ok' GROUP BY state) s)));

-- the invariants, one assertion each
SELECT is((SELECT count(*) FROM pp_violation WHERE inv = x.inv), 0::bigint, x.what)
FROM (VALUES
    (1, '0 unexpected error', 'no step failed unexpectedly (only counted refusals)'),
    (2, '1 payment over-allocated', '1: per payment, the sum of its allocations <= its amount'),
    (3, '2 settlement', '2: per final invoice, paid <= due, paid + credited <= due when last paid, settlement open = due - paid - credited, void = credited in full'),
    (4, '3 allocation target', '3: nothing allocated to a draft or credit note, nor from a payment recorded before the invoice was billed'),
    (5, '4 allocation changed', '4: allocations are append-only, one per (payment, invoice)'),
    (6, '5 ledger', '5: the ledger sums to each bucket; money = top-ups + payments + credits - charges - invoice debits'),
    (7, '6 invoice totals', '6: every invoice''s lines are rounded and sum to total, subtotal, discount and tax; prepaid within total; charged = its charges'),
    (8, '6 final invoice changed', '6: a final invoice and its lines never change (but to void)'),
    (9, '7 retry', '7: a retried record_payment returns the same payment_id and changes no table; another amount is refused'),
    (10, '9 twin outcome', '9: every step run in both universes has the same outcome'),
    (11, '9 twin invoices', '9: the twins bill the same invoices (totals, prepaid, due); B final only where A is'),
    (12, '9 twin money', '9: the twins hold the same money'),
    (13, '9 twin allocations', '9: the same allocations to every invoice final in both, after every step (eager vs lazy finalizing)'),
    (14, '8 oldest first', '8: after every step, no payment paid a newer invoice while an older final one it may pay is still open')
) x(ord, inv, what)
ORDER BY x.ord;

-- 8. at the end: allocation is complete, oldest period first
SELECT is((SELECT count(*) FROM pg_temp.pp_inv(u) WHERE status = 'draft'), 0::bigint,
          format('%s: every draft is final at the end', u))
FROM pp_u ORDER BY u;

SET LOCAL enable_nestloop = off;     -- (as in pp_check)
-- (snapshots, so that the end's queries do not re-evaluate the view per row)
CREATE TEMP TABLE pp_end_free AS SELECT u, f.* FROM pp_u, pg_temp.pp_free(u) f;
CREATE TEMP TABLE pp_end_open AS
SELECT u, s.account_id, s.invoice_id, s.period_start, s.last_payment_id, s.amount_due - s.paid - s.credited AS open
FROM pp_u, pg_temp.pp_settle(u) s;
CREATE TEMP TABLE pp_end_alloc AS
SELECT a.u, pa.account_id, pa.payment_id, y.period_start
FROM convbill.payment_allocation pa JOIN pp_acct a ON a.account_id = pa.account_id
JOIN convbill.invoice y ON y.account_id = pa.account_id AND y.invoice_id = pa.invoice_id;
ANALYZE pp_end_free, pp_end_open, pp_end_alloc;

SELECT is(
    (SELECT count(*)
     FROM pp_end_free f
     JOIN pp_end_alloc y ON y.account_id = f.account_id AND y.payment_id = f.payment_id
     JOIN pp_end_open x ON x.account_id = f.account_id
     WHERE f.u = u.u AND f.free > 0 AND x.open > 0 AND x.period_start < y.period_start AND f.payment_id > x.last_payment_id),
    0::bigint,
    format('8 %s: no open final invoice is older than one paid by a payment with money left that may pay it', u.u))
FROM pp_u u ORDER BY u.u;

SELECT is(
    (SELECT count(*)
     FROM pp_end_free f
     JOIN pp_end_open x ON x.account_id = f.account_id
     WHERE f.u = u.u AND f.free > 0 AND x.open > 0 AND f.payment_id > x.last_payment_id),
    0::bigint,
    format('8 %s: no payment with money left may pay an open final invoice (%s payments, %s with money left, %s allocations, %s invoices open)',
           u.u, (SELECT count(*) FROM pp_end_free f WHERE f.u = u.u), (SELECT count(*) FROM pp_end_free f WHERE f.u = u.u AND f.free > 0),
           (SELECT count(*) FROM pp_end_alloc y WHERE y.u = u.u), (SELECT count(*) FROM pp_end_open x WHERE x.u = u.u AND x.open > 0)))
FROM pp_u u ORDER BY u.u;

-- 9. at the end: the same allocations per (account, period) and per payment
SELECT is(
    (SELECT count(*) FROM
        (SELECT idx, period_start, sum(amount) AS s FROM pg_temp.pp_alloc('A') GROUP BY 1, 2) a
        FULL JOIN (SELECT idx, period_start, sum(amount) AS s FROM pg_temp.pp_alloc('B') GROUP BY 1, 2) b USING (idx, period_start)
     WHERE a.s IS DISTINCT FROM b.s),
    0::bigint,
    format('9: allocations per (account, period) do not depend on when and in which order drafts were finalized (%s periods paid)',
           (SELECT count(DISTINCT (idx, period_start)) FROM pg_temp.pp_alloc('A'))));

SELECT is(
    (SELECT count(*) FROM pg_temp.pp_alloc('A') a FULL JOIN pg_temp.pp_alloc('B') b USING (idx, period_start, ref)
     WHERE a.amount IS DISTINCT FROM b.amount),
    0::bigint,
    format('9: allocations per (account, period, payment) are the same in both universes (%s allocations)',
           (SELECT count(*) FROM pg_temp.pp_alloc('A'))));

-- the first violations of each invariant, to reproduce by hand
SELECT diag(format('seed %s: step %s: %s: %s', :'seed', step, inv, detail))
FROM (SELECT DISTINCT ON (inv) * FROM pp_violation ORDER BY inv, step) v
ORDER BY inv;

SELECT * FROM finish();
ROLLBACK;
