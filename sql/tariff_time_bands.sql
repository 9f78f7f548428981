-- tariff_time_bands: time-of-day/day-of-week pricing in the account's IANA
-- zone (SPEC §0 "Time", §1 time_bands).  A band matches when the event's local
-- weekday is in "days" and from <= local start time < to; the first matching
-- band prices the event with its own tariff, which replaces the top-level
-- pricing entirely; increment and rounding stay the top level's.
SET search_path = convbill, public;
SET TimeZone = 'UTC';

-- Calendar used below (checked against PostgreSQL's own calendar):
SELECT d, to_char(d, 'Dy') AS weekday
  FROM (VALUES ('2026-01-04'::date), ('2026-01-05'), ('2026-01-10'), ('2026-03-29'),
               ('2026-10-24'), ('2026-10-25'), ('1999-12-31'), ('2000-01-01'),
               ('2000-01-07'), ('1969-12-26'), ('1969-12-27')) v(d);

-------------------------------------------------------------------------------
-- 1. Peak / off-peak / night.  10 units: peak 0.20 -> 2.00, night 0.02 ->
--    0.20, otherwise the top level 0.10 -> 1.00.  The night band crosses
--    midnight, so it is written as two bands (22:00-24:00 and 00:00-06:00).
-------------------------------------------------------------------------------
CREATE TEMP TABLE tb (name text PRIMARY KEY, t tariff);
INSERT INTO tb VALUES ('pon', '{"price": "0.10", "time_bands": [
    {"name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "18:00", "tariff": {"price": "0.20"}},
    {"name": "night", "from": "22:00", "to": "24:00", "tariff": {"price": "0.02"}},
    {"name": "night", "from": "00:00", "to": "06:00", "tariff": {"price": "0.02"}}]}');

SELECT at, rate(t, 10, at, 'UTC') AS rate, expect, rate(t, 10, at, 'UTC') = expect AS ok
  FROM tb, (VALUES
    ('2026-01-05 07:59:59.999+00'::timestamptz, 1::numeric),  -- Mon, just before peak: top level
    ('2026-01-05 08:00:00+00', 2),            -- Mon 08:00:00 exactly: peak (from is inclusive)
    ('2026-01-05 12:00:00+00', 2),            -- Mon midday: peak
    ('2026-01-05 17:59:59.999999+00', 2),     -- last microsecond of peak
    ('2026-01-05 18:00:00+00', 1),            -- Mon 18:00: "to" is exclusive -> top level
    ('2026-01-05 21:59:59+00', 1),            -- before the night
    ('2026-01-05 22:00:00+00', 0.2),          -- night band 1
    ('2026-01-05 23:59:59.999999+00', 0.2),   -- still night: "to": "24:00" covers the last second
    ('2026-01-06 00:00:00+00', 0.2),          -- Tue 00:00: night band 2
    ('2026-01-06 05:59:59+00', 0.2),
    ('2026-01-06 06:00:00+00', 1),            -- Tue 06:00: top level
    ('2026-01-10 12:00:00+00', 1),            -- Sat midday: peak is weekdays only
    ('2026-01-10 23:00:00+00', 0.2)           -- Sat night: night bands have all days
  ) v(at, expect)
 WHERE name = 'pon' ORDER BY at;

-- The 2-argument rate() ignores time bands: always the top level (10 x 0.10).
SELECT rate(t, 10) AS rate, 1.000000 AS expect FROM tb WHERE name = 'pon';
-- quantity 0 costs 0 in any band
SELECT rate(t, 0, '2026-01-05 12:00+00', 'UTC') AS rate FROM tb WHERE name = 'pon';

-------------------------------------------------------------------------------
-- 2. The first matching band wins.  "lunch" (all days 12:00-14:00, 0.50)
--    overlaps "peak" (weekdays 08:00-18:00, 0.20); its position decides.
-------------------------------------------------------------------------------
SELECT order_, at, rate(t::tariff, 1, at, 'UTC') AS rate, expect, rate(t::tariff, 1, at, 'UTC') = expect AS ok
  FROM (VALUES
    ('peak first', '{"price": "0.10", "time_bands": [
        {"name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "18:00", "tariff": {"price": "0.20"}},
        {"name": "lunch", "from": "12:00", "to": "14:00", "tariff": {"price": "0.50"}}]}'),
    ('lunch first', '{"price": "0.10", "time_bands": [
        {"name": "lunch", "from": "12:00", "to": "14:00", "tariff": {"price": "0.50"}},
        {"name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "18:00", "tariff": {"price": "0.20"}}]}')
  ) o(order_, t)
  JOIN (VALUES
    ('peak first',  '2026-01-05 12:30+00'::timestamptz, 0.2::numeric),  -- Mon: both match, peak is first
    ('peak first',  '2026-01-10 12:30+00', 0.5),                        -- Sat: only lunch matches
    ('peak first',  '2026-01-05 10:00+00', 0.2),                        -- Mon 10:00: only peak
    ('lunch first', '2026-01-05 12:30+00', 0.5),                        -- Mon: both match, lunch is first
    ('lunch first', '2026-01-10 12:30+00', 0.5),
    ('lunch first', '2026-01-05 10:00+00', 0.2),
    ('lunch first', '2026-01-10 10:00+00', 0.1)                         -- Sat 10:00: no band -> top level
  ) v(order_, at, expect) USING (order_)
 ORDER BY order_ COLLATE "C", at;

-------------------------------------------------------------------------------
-- 3. A band's tariff replaces the top-level pricing entirely: a band that sets
--    only a price does not inherit the top level's setup_fee/minimum/maximum.
--    Top level: 0.10 + setup 1.00, minimum 2.00, maximum 5.00.
--    Band (weekdays 08-18): 0.20, nothing else; band 2 (Sat): volume tiers.
-------------------------------------------------------------------------------
INSERT INTO tb VALUES ('replace', '{"price": "0.10", "setup_fee": 1, "minimum": 2, "maximum": 5, "time_bands": [
    {"name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "18:00", "tariff": {"price": "0.20"}},
    {"name": "saturday", "days": ["sat"], "tariff": {"model": "volume", "setup_fee": "0.05",
       "tiers": [{"up_to": 10, "price": "0.30"}, {"up_to": null, "price": "0.01"}]}}]}');
SELECT at, q, rate(t, q, at, 'UTC') AS rate, expect, rate(t, q, at, 'UTC') = expect AS ok
  FROM tb, (VALUES
    ('2026-01-05 10:00+00'::timestamptz, 1::numeric, 0.2::numeric),  -- band: 1 x 0.20; no setup fee, no minimum
    ('2026-01-05 10:00+00', 100, 20),        -- band: 100 x 0.20; no maximum
    ('2026-01-05 20:00+00', 1, 2),           -- top: 0.10 + 1.00 = 1.10 -> minimum 2.00
    ('2026-01-05 20:00+00', 100, 5),         -- top: 10.00 + 1.00 = 11.00 -> maximum 5.00
    ('2026-01-05 20:00+00', 20, 3),          -- top: 2.00 + 1.00 = 3.00
    ('2026-01-10 10:00+00', 10, 3.05),       -- Sat band: volume 10 x 0.30 + its own setup 0.05
    ('2026-01-10 10:00+00', 11, 0.16)        -- Sat band: volume 11 x 0.01 + 0.05
  ) v(at, q, expect)
 WHERE name = 'replace' ORDER BY at, q;

-------------------------------------------------------------------------------
-- 4. Increment and rounding stay the top level's and apply to band pricing.
--    Top: 60/60 increment, 2 decimals rounding "up", 0.0011 per second.
--    Peak band: 0.0021 per second.
-------------------------------------------------------------------------------
INSERT INTO tb VALUES ('inc', '{"price": "0.0011", "increment": {"first": 60, "next": 60},
    "rounding": {"decimals": 2, "mode": "up"}, "time_bands": [
    {"name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "18:00", "tariff": {"price": "0.0021"}}]}');
SELECT at, q, rate(t, q, at, 'UTC') AS rate, expect, rate(t, q, at, 'UTC') = expect AS ok
  FROM tb, (VALUES
    ('2026-01-05 10:00+00'::timestamptz, 1::numeric, 0.13::numeric),  -- peak: 60 s x 0.0021 = 0.126 -> up 0.13
    ('2026-01-05 10:00+00', 61, 0.26),       -- peak: 120 s x 0.0021 = 0.252 -> up 0.26
    ('2026-01-05 20:00+00', 1, 0.07),        -- off-peak: 60 s x 0.0011 = 0.066 -> up 0.07
    ('2026-01-05 20:00+00', 61, 0.14)        -- off-peak: 120 s x 0.0011 = 0.132 -> up 0.14
  ) v(at, q, expect)
 WHERE name = 'inc' ORDER BY at, q;

-------------------------------------------------------------------------------
-- 5. The zone decides the local time.  The 'pon' tariff (peak weekdays 08-18
--    at 0.20, night 22-06 at 0.02, else 0.10), 10 units, the same instants:
-------------------------------------------------------------------------------
SELECT at, tz, (at AT TIME ZONE tz) AS local_time, rate(t, 10, at, tz) AS rate, expect,
       rate(t, 10, at, tz) = expect AS ok
  FROM tb, (VALUES
    -- 2026-01-05 07:30 UTC (Mon): Berlin CET (UTC+1) 08:30 peak; New York EST
    -- (UTC-5) 02:30 night; UTC 07:30 top level; Tokyo (UTC+9) 16:30 peak
    ('2026-01-05 07:30+00'::timestamptz, 'Europe/Berlin', 2::numeric),
    ('2026-01-05 07:30+00', 'America/New_York', 0.2),
    ('2026-01-05 07:30+00', 'UTC', 1),
    ('2026-01-05 07:30+00', 'Asia/Tokyo', 2),
    -- 2026-01-05 13:30 UTC: Berlin 14:30 peak; New York 08:30 peak; Tokyo 22:30 night
    ('2026-01-05 13:30+00', 'Europe/Berlin', 2),
    ('2026-01-05 13:30+00', 'America/New_York', 2),
    ('2026-01-05 13:30+00', 'Asia/Tokyo', 0.2),
    -- 2026-01-05 17:30 UTC: Berlin 18:30 off-peak; New York 12:30 peak
    ('2026-01-05 17:30+00', 'Europe/Berlin', 1),
    ('2026-01-05 17:30+00', 'America/New_York', 2)
  ) v(at, tz, expect)
 WHERE name = 'pon' ORDER BY at, tz COLLATE "C";

-- The session's TimeZone setting plays no part: only the tz argument counts.
SET TimeZone = 'Asia/Tokyo';
SELECT rate(t, 10, '2026-01-05 07:30+00', 'Europe/Berlin') AS berlin_peak,
       rate(t, 10, '2026-01-05 07:30+00', 'UTC') AS utc_top
  FROM tb WHERE name = 'pon';
SET TimeZone = 'UTC';

-------------------------------------------------------------------------------
-- 6. Daylight saving time in Europe/Berlin.  Sunday bands 01-02 (2.00),
--    02-03 (3.00), 03-04 (4.00), top level 1.00; quantity 1.
--    Spring, Sunday 2026-03-29: at 01:00 UTC, 02:00 CET becomes 03:00 CEST
--    (local 02:xx does not exist).  Autumn, Sunday 2026-10-25: at 01:00 UTC,
--    03:00 CEST becomes 02:00 CET (local 02:xx happens twice).
-------------------------------------------------------------------------------
INSERT INTO tb VALUES ('dst', '{"price": 1, "time_bands": [
    {"days": ["sun"], "from": "01:00", "to": "02:00", "tariff": {"price": 2}},
    {"days": ["sun"], "from": "02:00", "to": "03:00", "tariff": {"price": 3}},
    {"days": ["sun"], "from": "03:00", "to": "04:00", "tariff": {"price": 4}}]}');
SELECT at, (at AT TIME ZONE 'Europe/Berlin') AS berlin_time, rate(t, 1, at, 'Europe/Berlin') AS rate, expect,
       rate(t, 1, at, 'Europe/Berlin') = expect AS ok
  FROM tb, (VALUES
    ('2026-03-29 00:30+00'::timestamptz, 2::numeric),  -- 01:30 CET
    ('2026-03-29 00:59:59+00', 2),         -- 01:59:59 CET
    ('2026-03-29 01:00+00', 4),            -- 03:00 CEST (the clock jumps over 02:xx)
    ('2026-03-29 01:30+00', 4),            -- 03:30 CEST
    ('2026-03-29 02:30+00', 1),            -- 04:30 CEST: no band
    ('2026-10-24 23:30+00', 2),            -- Sat in UTC, but Sun 01:30 CEST in Berlin
    ('2026-10-25 00:30+00', 3),            -- 02:30 CEST (first time)
    ('2026-10-25 01:00+00', 3),            -- 02:00 CET (the clock goes back)
    ('2026-10-25 01:30+00', 3),            -- 02:30 CET (second time)
    ('2026-10-25 02:00+00', 4),            -- 03:00 CET
    ('2026-10-25 03:00+00', 1)             -- 04:00 CET: no band
  ) v(at, expect)
 WHERE name = 'dst' ORDER BY at;

-------------------------------------------------------------------------------
-- 7. Zones far from UTC: the local weekday differs from the UTC weekday.
--    Monday band 5.00, Sunday band 7.00, other days 1.00; quantity 1.
--    Pacific/Kiritimati is UTC+14; Pacific/Pago_Pago is UTC-11.
-------------------------------------------------------------------------------
INSERT INTO tb VALUES ('days', '{"price": 1, "time_bands": [
    {"name": "monday", "days": ["mon"], "tariff": {"price": 5}},
    {"name": "sunday", "days": ["sun"], "tariff": {"price": 7}}]}');
SELECT at, tz, (at AT TIME ZONE tz) AS local_time, rate(t, 1, at, tz) AS rate, expect,
       rate(t, 1, at, tz) = expect AS ok
  FROM tb, (VALUES
    ('2026-01-04 12:00+00'::timestamptz, 'UTC', 7::numeric),  -- Sun 12:00 UTC
    ('2026-01-04 12:00+00', 'Pacific/Kiritimati', 5),         -- Mon 02:00 local
    ('2026-01-04 09:59:59+00', 'Pacific/Kiritimati', 7),      -- Sun 23:59:59 local
    ('2026-01-04 10:00+00', 'Pacific/Kiritimati', 5),         -- Mon 00:00 local
    ('2026-01-05 05:00+00', 'UTC', 5),                        -- Mon 05:00 UTC
    ('2026-01-05 05:00+00', 'Pacific/Pago_Pago', 7),          -- Sun 18:00 local
    ('2026-01-05 10:59:59+00', 'Pacific/Pago_Pago', 7),       -- Sun 23:59:59 local
    ('2026-01-05 11:00+00', 'Pacific/Pago_Pago', 5),          -- Mon 00:00 local
    ('2026-01-06 10:59:59+00', 'Pacific/Pago_Pago', 5),       -- Mon 23:59:59 local
    ('2026-01-06 11:00+00', 'Pacific/Pago_Pago', 1)           -- Tue 00:00 local
  ) v(at, tz, expect)
 WHERE name = 'days' ORDER BY at, tz COLLATE "C";

-------------------------------------------------------------------------------
-- 8. Before 2000 and before 1970 (negative internal timestamps): fractional
--    seconds are truncated towards the past, never rounded to the next second.
--    Band: Fridays 23:00-24:00 at 2.00, else 1.00.
-------------------------------------------------------------------------------
INSERT INTO tb VALUES ('friday_late', '{"price": 1, "time_bands": [
    {"days": ["fri"], "from": "23:00", "to": "24:00", "tariff": {"price": 2}}]}');
SELECT at, rate(t, 1, at, 'UTC') AS rate, expect, rate(t, 1, at, 'UTC') = expect AS ok
  FROM tb, (VALUES
    ('1999-12-31 23:59:59.5+00'::timestamptz, 2::numeric),  -- Fri 23:59:59.5: still Friday
    ('2000-01-01 00:00:00+00', 1),                           -- Sat 00:00
    ('1969-12-26 23:59:59.999999+00', 2),                    -- a Friday before the Unix epoch
    ('1969-12-27 00:00:00+00', 1),                           -- Sat
    ('2000-01-07 23:00:00+00', 2)                            -- Fri after 2000
  ) v(at, expect)
 WHERE name = 'friday_late' ORDER BY at;

-------------------------------------------------------------------------------
-- 9. Many events against a stored (compressed) tariff with 24 hourly bands,
--    two such tariffs interleaved: the per-call-site tariff cache must follow
--    the row's tariff.  Band h covers h:00-(h+1):00 at (h+1) x unit price;
--    tariff 1 has unit price 1, tariff 2 unit price 10.
--    Per tariff, events at every hour of Monday 2026-01-05 UTC, 1 unit each:
--    sum = unit x (1 + 2 + ... + 24) = unit x 300.
-------------------------------------------------------------------------------
CREATE TEMP TABLE hourly (id int PRIMARY KEY, unit int, t tariff);
INSERT INTO hourly
SELECT id, unit, jsonb_build_object('price', 0, 'time_bands',
         (SELECT jsonb_agg(jsonb_build_object(
                   'name', 'h' || h,
                   'from', lpad(h::text, 2, '0') || ':00',
                   'to', lpad((h + 1)::text, 2, '0') || ':00',
                   'tariff', jsonb_build_object('price', (h + 1) * unit)) ORDER BY h)
            FROM generate_series(0, 23) h))::text::tariff
  FROM (VALUES (1, 1), (2, 10)) v(id, unit);
SELECT pg_column_size(t) < 6000 AS stored_compressed FROM hourly;  -- 24 bands x 240 bytes uncompressed
SELECT id, sum(r) AS total, 300 * unit AS expect, sum(r) = 300 * unit AS ok,
       count(*) FILTER (WHERE r <> (extract(hour FROM at) + 1) * unit) AS wrong_rows
  FROM (SELECT h.id, h.unit, e.at, rate(h.t, 1, e.at, 'UTC') AS r
          FROM generate_series('2026-01-05 00:30+00'::timestamptz, '2026-01-05 23:30+00', '1 hour') e(at)
         CROSS JOIN hourly h
         ORDER BY e.at, h.id) s
 GROUP BY id, unit ORDER BY id;

-- The zone is validated even for a tariff without bands; zone names are the
-- IANA names PostgreSQL knows (errors: see tariff_errors).
SELECT rate('{"price": 1}', 1, '2026-01-05 12:00+00', 'Europe/Berlin') AS no_bands;
