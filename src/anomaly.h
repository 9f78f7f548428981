/*
 * anomaly.h — the settings of anomaly and fraud detection (src/anomaly.c).
 *
 * The variables live in anomaly.c; src/convbill.c defines them as the
 * convbill.* settings in _PG_init (the one place that owns the prefix).
 */
#ifndef CONVBILL_ANOMALY_H
#define CONVBILL_ANOMALY_H

/* Baseline: days of daily totals, and the history an account needs. */
extern int	anomaly_baseline_days;		/* convbill.anomaly_baseline_days */
extern int	anomaly_min_history;		/* convbill.anomaly_min_history, days */

/* Spikes: the last 24 hours against the account's own daily baseline. */
extern double anomaly_spike_score;		/* convbill.anomaly_spike_score */
extern double anomaly_spike_ratio;		/* convbill.anomaly_spike_ratio */
extern int	anomaly_spike_min_events;	/* convbill.anomaly_spike_min_events */

/* IRSF: traffic to high-risk zones within a short window. */
extern int	irsf_window;				/* convbill.irsf_window, minutes */
extern int	irsf_min_events;			/* convbill.irsf_min_events */
extern int	irsf_min_seconds;			/* convbill.irsf_min_seconds */

/* Velocity: events within a short window against the account's usual peak. */
extern int	velocity_window;			/* convbill.velocity_window, minutes */
extern double velocity_factor;			/* convbill.velocity_factor */
extern int	velocity_min_events;		/* convbill.velocity_min_events */

#endif
