-- Online-charging stress test: data and the "clients".
--
-- 50 accounts: 1 is the hot account every client hits (postpaid, kept near its
-- credit limit by top-ups from the traffic, paying for children 46 and 47);
-- 2..25 prepaid (credit_limit 0), 26..45 postpaid, 48 bills to 30, 5 bills to
-- 49 (a child with a lower id than its parent: lock order), 50 is suspended.
-- One plan: voice 60/60, sms, data on a cycle-scoped graduated tariff, plan
-- allowances, and granted allowance buckets of two priorities.
--
-- No money or allowance bucket expires during the run, on purpose: a grant
-- counts the money and allowance valid now, not what is still valid when the
-- grant lapses, so a hold on a top-up or allowance that expires before the
-- hold does is later debited from the main bucket, below -credit_limit
-- without any overuse.  That is an open problem of the grant decision, which
-- invariant 3 would flag; this test keeps to what should hold today.
--
-- The traffic (test/online/*.pgbench) calls the stress.* functions below.  Each
-- does one request and logs it with its answer in the same transaction, so the
-- log is exactly as durable as what the request did: after a crash both are
-- there or neither is, and the checks (check.sql) can compare them.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION convbill;
SET search_path = convbill, public;

INSERT INTO service VALUES ('voice', 'second'), ('data', 'MB'), ('sms', 'message');
INSERT INTO plan (code, name, currency, allowances)
VALUES ('S', 'Stress', 'EUR', '{"voice": 600, "sms": 5, "data": 200}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES
    ('S', 'voice', '{"price": "0.01", "increment": {"first": 60, "next": 60}}'),
    ('S', 'sms', '{"price": "0.09"}'),
    ('S', 'data', '{"model": "graduated", "scope": "cycle", "tiers": [{"up_to": 2000, "price": "0.004"}, {"up_to": null, "price": "0.002"}]}');

-- Billing day 1 or 15, whichever does not start a period (and end the plan
-- allowances) in the account's time zone during the next minutes.
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day, credit_limit)
SELECT g, 'STRESS-' || g, 'Account ' || g, 'EUR', tz,
       CASE WHEN extract(day FROM (now() + interval '15 minutes') AT TIME ZONE tz) = 1 THEN 15 ELSE 1 END,
       CASE WHEN g = 1 THEN 20 WHEN g BETWEEN 26 AND 45 THEN 5 * (g - 25) ELSE 0 END
FROM generate_series(1, 50) g,
     LATERAL (SELECT (ARRAY['UTC', 'Europe/Berlin', 'America/New_York'])[1 + g % 3] AS tz) z;
-- a child billed to its parent shares its parent's time zone and billing day
UPDATE account c SET parent_id = p.account_id, bill_to_parent = true, timezone = p.timezone, billing_day = p.billing_day
FROM account p WHERE (c.account_id, p.account_id) IN ((46, 1), (47, 1), (48, 30), (5, 49));
UPDATE account SET status = 'suspended' WHERE account_id = 50;
UPDATE account SET low_balance_threshold = 5 WHERE account_id IN (1, 2, 30);
SELECT count(subscribe(g, 'S', '2020-01-01')) FROM generate_series(1, 50) g;

SELECT count(top_up(1, 40, 'initial'));
SELECT count(top_up(g, 2 + g % 13, 'initial')) FROM generate_series(2, 25) g WHERE g <> 5;
SELECT count(top_up(g, 3, 'initial')) FROM generate_series(26, 45, 3) g;
SELECT count(grant_allowance(g, 'voice', 240, now() - interval '1 day', 'infinity', 1, 'bonus'))
FROM generate_series(10, 20) g;
SELECT count(grant_allowance(g, 'data', 300, now() - interval '1 day', now() + interval '1 year', -1, 'promo'))
FROM generate_series(15, 30) g;
SELECT count(grant_allowance(1, 'sms', 50, now() - interval '1 day', now() + interval '1 year', 0, 'hot-sms'));

-------------------------------------------------------------------------------
-- The clients' log
-------------------------------------------------------------------------------
CREATE SCHEMA stress;
SET search_path = stress, convbill, public;

-- every session request and its answer (request_no NULL: release)
CREATE TABLE stress.req (
    id          bigserial PRIMARY KEY,
    run         integer NOT NULL,
    client      integer NOT NULL,
    session_id  text NOT NULL,
    step        integer NOT NULL,           -- the client's order of requests in the session
    kind        text NOT NULL CHECK (kind IN ('reserve', 'update', 'commit', 'release')),
    request_no  integer,
    account_id  bigint NOT NULL,
    service     text NOT NULL,
    used        numeric,
    units       numeric,
    validity    interval,
    answer      convbill.grant NOT NULL,
    UNIQUE (session_id, step)
);
-- every charge_event sent (retries and concurrent duplicates included)
CREATE TABLE stress.ev (
    id          bigserial PRIMARY KEY,
    run         integer NOT NULL,
    client      integer NOT NULL,
    account_id  bigint NOT NULL,
    event_id    text NOT NULL,
    service     text NOT NULL,
    units       numeric NOT NULL,
    batch       boolean NOT NULL,
    answer      convbill.grant NOT NULL
);
CREATE INDEX ON stress.ev (account_id, event_id);
-- every top_up sent and the entry it returned
CREATE TABLE stress.tu (
    id          bigserial PRIMARY KEY,
    account_id  bigint NOT NULL,
    reference   text NOT NULL,
    amount      numeric NOT NULL,
    entry_id    bigint NOT NULL
);
-- explicit retransmissions: the answer expected (the first one), the answer
-- got, and whether anything of the accounts involved changed
CREATE TABLE stress.retx (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL,
    key         text NOT NULL,
    request_no  integer,
    expected    convbill.grant NOT NULL,
    got         convbill.grant NOT NULL,
    changed     boolean NOT NULL
);

CREATE FUNCTION stress.sid(p_run integer, p_client integer, p_seq integer) RETURNS text
LANGUAGE sql IMMUTABLE RETURN format('r%s-c%s-%s', p_run, p_client, p_seq);

-- Units a client reports: usually part of the grant, sometimes nothing,
-- rarely more than granted (overuse).
CREATE FUNCTION stress.usage(p_granted numeric) RETURNS numeric
LANGUAGE sql VOLATILE RETURN (
    SELECT CASE WHEN x < 0.10 THEN 0
                WHEN x < 0.13 THEN p_granted + 1 + floor(random() * 90)
                ELSE floor(random() * (p_granted + 1)) END
    FROM (SELECT random() AS x) r);

-- Units a client asks for.
CREATE FUNCTION stress.ask(p_service text) RETURNS numeric
LANGUAGE sql VOLATILE RETURN
    CASE WHEN p_service = 'voice' THEN (ARRAY[60, 90, 120, 180, 300, 600])[1 + floor(random() * 6)::int]
         ELSE 10 + floor(random() * 400) END;

-- CCR-INITIAL of session (run, client, seq) on an account; validity 2 s for
-- one session in ten (abandoned ones lapse during the run), or as given.
CREATE FUNCTION stress.open(p_run integer, p_client integer, p_seq integer, p_account bigint,
                            p_validity interval DEFAULT NULL) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    sid text := stress.sid(p_run, p_client, p_seq);
    svc text := CASE WHEN random() < 0.75 THEN 'voice' ELSE 'data' END;
    u numeric := stress.ask(svc);
    v interval := coalesce(p_validity, CASE WHEN random() < 0.1 THEN interval '2 seconds' ELSE interval '5 minutes' END);
    g convbill.grant;
BEGIN
    g := convbill.reserve(p_account, svc, sid, u, '{}', v);
    INSERT INTO stress.req (run, client, session_id, step, kind, request_no, account_id, service, units, validity, answer)
    VALUES (p_run, p_client, sid, 0, 'reserve', 0, p_account, svc, u, v, g);
    RETURN g.result;
END $$;

-- The next request of a session: an update, or (p_end) its end: commit (70%),
-- release (15%) or nothing (abandoned: it expires or stays open); p_commit:
-- a commit.
CREATE FUNCTION stress.step(p_session_id text, p_end boolean, p_commit boolean DEFAULT false)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    last stress.req;
    n integer;
    x float8 := CASE WHEN p_commit THEN 0 ELSE random() END;
    used numeric;
    u numeric;
    k text;
    g convbill.grant;
BEGIN
    SELECT * INTO last FROM stress.req WHERE session_id = p_session_id ORDER BY step DESC LIMIT 1;
    IF NOT FOUND THEN
        RETURN 'no session';            -- its reserve was lost in a crash
    END IF;
    IF last.kind IN ('commit', 'release') THEN
        RETURN 'finished';
    END IF;
    SELECT max(request_no) + 1 INTO n FROM stress.req WHERE session_id = p_session_id;
    used := stress.usage(coalesce((last.answer).granted, 0));
    IF NOT p_end THEN
        k := 'update';
        u := stress.ask(last.service);
        g := convbill.reserve_update(p_session_id, n, used, u);
    ELSIF x < 0.70 THEN
        k := 'commit';
        g := convbill.commit(p_session_id, n, used);
    ELSIF x < 0.85 THEN
        k := 'release';
        n := NULL;
        used := NULL;
        g := convbill.release(p_session_id);
    ELSE
        RETURN 'abandoned';
    END IF;
    INSERT INTO stress.req (run, client, session_id, step, kind, request_no, account_id, service, used, units, answer)
    VALUES (last.run, last.client, p_session_id, last.step + 1, k, n, last.account_id, last.service, used, u, g);
    RETURN g.result;
END $$;

CREATE FUNCTION stress.next(p_run integer, p_client integer, p_seq integer, p_end boolean DEFAULT false)
RETURNS text
LANGUAGE sql RETURN stress.step(stress.sid(p_run, p_client, p_seq), p_end);

-- What a retransmission must leave unchanged: the accounts' buckets, the
-- newest ledger entry and charge of the accounts (anything written would be
-- newer), their usage counters, the session with its answers, the event's
-- answer.  Callers lock the accounts, so nobody else changes them meanwhile.
CREATE FUNCTION stress.state(p_accounts bigint[], p_session_id text, p_event_id text) RETURNS text
LANGUAGE sql STABLE RETURN (
    SELECT concat_ws('|',
        (SELECT string_agg(b.bucket_id || ':' || b.balance, ',' ORDER BY b.account_id, b.bucket_id)
         FROM convbill.bucket b WHERE b.account_id = ANY (p_accounts)),
        (SELECT string_agg(u::text, ',' ORDER BY u.account_id, u.counter, u.period_start)
         FROM convbill.usage_counter u WHERE u.account_id = ANY (p_accounts)),
        (SELECT max(l.entry_id) FROM convbill.ledger l WHERE l.account_id = ANY (p_accounts)),
        (SELECT max(c.charge_id) FROM convbill.charge c WHERE c.account_id = ANY (p_accounts)),
        (SELECT string_agg(r::text, ',') FROM convbill.reservation r WHERE r.session_id = p_session_id),
        (SELECT count(*) FROM convbill.reservation_answer a
         WHERE a.account_id = ANY (p_accounts) AND a.session_id = p_session_id),
        (SELECT string_agg(e::text, ',' ORDER BY e.account_id) FROM convbill.event_answer e
         WHERE e.account_id = ANY (p_accounts) AND e.event_id = p_event_id)));

-- Send a logged session request again: the same answer (a release: the
-- session is closed), and nothing changed.  The accounts are locked first so
-- that nobody else (an expiry sweep) changes them between the two looks.
CREATE FUNCTION stress.resend(p_id bigint) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    q stress.req;
    payer bigint;
    before text;
    g convbill.grant;
    want convbill.grant;
BEGIN
    SELECT * INTO q FROM stress.req WHERE id = p_id;
    payer := convbill.payer_of(q.account_id);
    PERFORM convbill.lock_accounts(q.account_id, payer);
    before := stress.state(ARRAY[q.account_id, payer], q.session_id, NULL);
    want := q.answer;
    IF q.kind = 'reserve' THEN
        g := convbill.reserve(q.account_id, q.service, q.session_id, q.units, '{}', q.validity);
    ELSIF q.kind = 'update' THEN
        g := convbill.reserve_update(q.session_id, q.request_no, q.used, q.units);
    ELSIF q.kind = 'commit' THEN
        g := convbill.commit(q.session_id, q.request_no, q.used);
    ELSE
        g := convbill.release(q.session_id);
        want := ROW('denied', 'session_closed', 0, 0, 0, NULL)::convbill.grant;
    END IF;
    INSERT INTO stress.retx (kind, key, request_no, expected, got, changed)
    VALUES (q.kind, q.session_id, q.request_no, want, g, before IS DISTINCT FROM stress.state(ARRAY[q.account_id, payer], q.session_id, NULL));
    RETURN g.result;
END $$;

-- Retransmit the last request of session (run, client, seq), or any of them.
CREATE FUNCTION stress.retransmit(p_run integer, p_client integer, p_seq integer, p_which text)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    i bigint;
BEGIN
    SELECT id INTO i FROM stress.req WHERE session_id = stress.sid(p_run, p_client, p_seq)
    ORDER BY CASE WHEN p_which = 'last' THEN -step ELSE random() END LIMIT 1;
    IF NOT FOUND THEN
        RETURN 'no session';
    END IF;
    RETURN stress.resend(i);
END $$;

-- An event's payload follows from its id, so that the same id is always the
-- same event: a duplicate is a retransmission.
CREATE FUNCTION stress.event_payload(p_event integer, OUT service text, OUT units numeric)
LANGUAGE sql IMMUTABLE
BEGIN ATOMIC
    SELECT (ARRAY['sms', 'voice', 'data'])[1 + p_event % 3],
           CASE p_event % 3 WHEN 0 THEN 1 + p_event % 2 WHEN 1 THEN 30 * (p_event % 11) ELSE 1 + p_event % 97 END;
END;

CREATE FUNCTION stress.event(p_run integer, p_client integer, p_account bigint, p_event integer)
RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    p record := stress.event_payload(p_event);
    g convbill.grant;
BEGIN
    g := convbill.charge_event(p_account, p.service, 'e' || p_event, p.units);
    INSERT INTO stress.ev (run, client, account_id, event_id, service, units, batch, answer)
    VALUES (p_run, p_client, p_account, 'e' || p_event, p.service, p.units, false, g);
    RETURN g.result;
END $$;

-- A retried event, checked on the spot: same answer, nothing changed.
CREATE FUNCTION stress.event_again(p_account bigint, p_event integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    p record := stress.event_payload(p_event);
    payer bigint := convbill.payer_of(p_account);
    want convbill.grant;
    before text;
    g convbill.grant;
BEGIN
    PERFORM convbill.lock_accounts(p_account, payer);
    SELECT (e.answer).* INTO want FROM convbill.event_answer e WHERE e.account_id = p_account AND e.event_id = 'e' || p_event;
    IF NOT FOUND THEN
        RETURN 'new';
    END IF;
    before := stress.state(ARRAY[p_account, payer], NULL, 'e' || p_event);
    g := convbill.charge_event(p_account, p.service, 'e' || p_event, p.units);
    INSERT INTO stress.retx (kind, key, expected, got, changed)
    VALUES ('event', p_account || '/e' || p_event, want, g, before IS DISTINCT FROM stress.state(ARRAY[p_account, payer], NULL, 'e' || p_event));
    RETURN g.result;
END $$;

-- A batch of events (charge_events) on random accounts in random order,
-- the hot account among them most of the time.
CREATE FUNCTION stress.batch(p_run integer, p_client integer) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    evs convbill.event_request[];
    n integer := 0;
    r record;
BEGIN
    SELECT array_agg(ROW(x.acc, (stress.event_payload(x.ev)).service, 'e' || x.ev,
                         (stress.event_payload(x.ev)).units, NULL)::convbill.event_request)
    INTO evs
    FROM (SELECT CASE WHEN random() < 0.3 THEN 1 ELSE 2 + floor(random() * 49)::int END AS acc,
                 1 + floor(random() * 3000)::int AS ev
          FROM generate_series(1, 6)) x;
    FOR r IN SELECT * FROM convbill.charge_events(evs) LOOP
        INSERT INTO stress.ev (run, client, account_id, event_id, service, units, batch, answer)
        SELECT p_run, p_client, r.account_id, r.event_id, e.service, e.units, true,
               ROW(r.result, r.reason, r.granted, r.held, r.charged, r.expires_at)::convbill.grant
        FROM unnest(evs) e WHERE e.account_id = r.account_id AND e.event_id = r.event_id LIMIT 1;
        n := n + 1;
    END LOOP;
    RETURN n;
END $$;

-- A top-up; the reference comes from a small range, so some are retries.
CREATE FUNCTION stress.top_up(p_account bigint, p_ref integer) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    amt numeric := CASE WHEN p_account = 1 THEN 10 ELSE 1 + p_ref % 10 END;
    e bigint;
BEGIN
    e := convbill.top_up(p_account, amt, 'stress-' || p_ref);
    INSERT INTO stress.tu (account_id, reference, amount, entry_id) VALUES (p_account, 'stress-' || p_ref, amt, e);
    RETURN e;
END $$;

-- After the crash: the sessions of a run that the crash left open are
-- committed, and a sample of the logged requests and events is sent again
-- (the last ones before the crash among them): same answers, nothing changed.
CREATE FUNCTION stress.after_crash(p_run integer, p_sample integer) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    sid text;
    i bigint;
    v record;
    committed integer := 0;
    resent integer := 0;
    events integer := 0;
BEGIN
    FOR sid IN SELECT q.session_id FROM stress.req q WHERE q.run = p_run
               GROUP BY q.session_id HAVING NOT bool_or(q.kind IN ('commit', 'release')) LOOP
        PERFORM stress.step(sid, true, true);
        committed := committed + 1;
    END LOOP;
    FOR i IN (SELECT id FROM stress.req WHERE run = p_run ORDER BY id DESC LIMIT p_sample / 4)
             UNION (SELECT id FROM stress.req ORDER BY random() LIMIT p_sample) LOOP
        PERFORM stress.resend(i);
        resent := resent + 1;
    END LOOP;
    FOR v IN (SELECT account_id, event_id FROM stress.ev WHERE run = p_run ORDER BY id DESC LIMIT p_sample / 4)
             UNION (SELECT account_id, event_id FROM stress.ev ORDER BY random() LIMIT p_sample) LOOP
        PERFORM stress.event_again(v.account_id, substr(v.event_id, 2)::integer);
        events := events + 1;
    END LOOP;
    RETURN format('after the crash: %s open sessions committed, %s requests and %s events sent again',
                  committed, resent, events);
END $$;
