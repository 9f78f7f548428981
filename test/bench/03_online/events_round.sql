-- one round of events.sql (:r): timed, then checked
CALL bench03_events(:r, :batches, 1000, NULL) \gset ev_
CALL bench03_baseline(:r, :batches, 1000, NULL) \gset bl_
CALL bench03_floor(:r, :batches, 1000, NULL) \gset fl_
INSERT INTO bench03_result VALUES
    ('charge_events', 'floor: the rows alone, bare, x baseline (context)', :r, :fl_ms / :bl_ms),
    ('charge_events', 'events/s, batches of 1,000', :r, :events / (:ev_ms / 1000)),
    ('charge_events', 'rows/s, INSERT ... SELECT of 1,000', :r, :events / (:bl_ms / 1000)),
    ('charge_events', 'x baseline (target <= 3)', :r, :ev_ms / :bl_ms);
SELECT pg_temp.bench03_check(answers = :events AND granted = :events AND charges = :events,
                             format('charge_events round %s: %s events, %s answers, %s granted, %s charges',
                                    :r, :events, answers, granted, charges))
FROM (SELECT count(*) AS answers,
             count(*) FILTER (WHERE (answer).result = 'granted' AND charge_id IS NOT NULL) AS granted,
             (SELECT count(*) FROM convbill.charge
              WHERE source = 'event' AND external_id LIKE 'r' || :r || '-%') AS charges
      FROM convbill.event_answer WHERE event_id LIKE 'r' || :r || '-%') x;
