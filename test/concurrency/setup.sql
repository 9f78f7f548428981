-- Data for the parallel-rating test: 300 accounts, voice with an allowance and a
-- flat price, data on a cycle-scoped graduated tariff, 5% re-sent events, some
-- bad rows.  Totals per account are independent of the order events are rated
-- in, so a parallel run must match a serial one exactly.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE EXTENSION convbill;
SET search_path = convbill, public;
SELECT setseed(0.42);
INSERT INTO service VALUES ('voice', 'second'), ('data', 'MB'), ('sms', 'message');
INSERT INTO plan (code, name, currency, allowances) VALUES ('P', 'Plan', 'EUR', '{"voice": 3000, "sms": 20}');
INSERT INTO plan_rate (plan_code, service, tariff) VALUES
    ('P', 'voice', '{"price": "0.002", "increment": {"first": 60, "next": 1}}'),
    ('P', 'sms', '{"price": "0.09"}'),
    ('P', 'data', '{"model": "graduated", "scope": "cycle", "tiers": [{"up_to": 2000, "price": "0.01"}, {"up_to": null, "price": "0.004"}]}');
INSERT INTO account (account_id, external_ref, name, currency, timezone, billing_day)
SELECT g, 'ACC-' || g, 'Account ' || g, 'EUR',
       (ARRAY['UTC', 'Europe/Berlin', 'Pacific/Kiritimati', 'America/New_York'])[1 + g % 4], 1 + g % 28
FROM generate_series(1, 300) g;
SELECT count(subscribe(g, 'P', '2026-01-01')) FROM generate_series(1, 300) g;
SELECT ensure_usage_partitions('2026-10-01', 3);
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
SELECT 1 + (random() * 299)::int, 'src', 'e' || g,
       (ARRAY['voice', 'voice', 'data', 'sms'])[1 + (random() * 3)::int],
       round((random() * 400)::numeric, 1),
       timestamptz '2026-11-01' + random() * interval '40 days'
FROM generate_series(1, 20000) g;
-- re-sends of 5% of the events, and a few bad rows
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
SELECT account_id, source, external_id, service, quantity, started_at
FROM usage_event WHERE random() < 0.05;
INSERT INTO usage_event (account_id, source, external_id, service, quantity, started_at)
VALUES (999, 'src', 'bad1', 'voice', 1, '2026-11-02'), (1, 'src', 'bad2', 'voice', -1, '2026-11-02');
