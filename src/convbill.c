/*
 * convbill.c — module entry point: the magic block, settings and allocation
 * hooks the pure-C modules use inside the backend.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "anomaly.h"
#include "json_lite.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* convbill.realtime_rating: rate usage events as they are inserted. */
static bool realtime_rating = false;

/* Bill run settings, read by run_billing() through current_setting(). */
static bool finalize_invoices = false;
static bool invoice_empty_periods = false;

/* Leakage thresholds (minutes), read by the leakage view through current_setting(). */
static int	leakage_pending_age = 60;
static int	leakage_billing_grace = 1440;

/* How long job_run keeps a job's runs (minutes; 0: for ever), read by the jobs. */
static int	job_run_retention = 43200;

/* A job step's report (job_warn()), taken by the job's runner. */
static char *job_warning = NULL;

/* Pure-C modules allocate through these: palloc in the current memory context. */
void *
cb_malloc(size_t size)
{
	return palloc(size);
}

void
cb_free(void *p)
{
	pfree(p);
}

PG_FUNCTION_INFO_V1(realtime_rating_enabled);
/*
 * realtime_rating_enabled(): the convbill.realtime_rating setting.  Calling it
 * loads the module, so the setting is always the typed boolean, never an
 * untyped placeholder left by a SET before the module was loaded.
 */
Datum
realtime_rating_enabled(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(realtime_rating);
}

/*
 * The settings of detect_anomalies() (sql/ext/85_anomaly.sql); the variables
 * live in src/anomaly.c, which hands them to SQL through anomaly_settings().
 */
static void
define_anomaly_settings(void)
{
	DefineCustomIntVariable("convbill.anomaly_baseline_days",
							"Days of daily totals in an account's usage baseline (7 to 366).",
							"detect_anomalies() recomputes the baselines once a day from the days before the last 24 hours.",
							&anomaly_baseline_days,
							28, 7, 366,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("convbill.anomaly_min_history",
							"Days of history an account needs before its own baseline is trusted (1 to 366).",
							"Below it there are no spike alerts, and velocity alerts use convbill.velocity_min_events alone.",
							&anomaly_min_history,
							7, 1, 366,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("convbill.anomaly_spike_score",
							 "Robust z-score of the last 24 hours' usage above which a spike is raised (1 to 1000).",
							 "z = (observed - level) / (1.4826 x MAD) of the account's daily events, or of its log daily quantity, of the service.",
							 &anomaly_spike_score,
							 6.0, 1.0, 1000.0,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomRealVariable("convbill.anomaly_spike_ratio",
							 "A spike is also at least this many times the account's usual level (1 to 1000).",
							 NULL,
							 &anomaly_spike_ratio,
							 4.0, 1.0, 1000.0,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("convbill.anomaly_spike_min_events",
							"A spike has at least this many events of the service more than expected in 24 hours (1 to 1000000).",
							"The materiality floor: a few long calls or big downloads are not a spike.",
							&anomaly_spike_min_events,
							20, 1, 1000000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("convbill.irsf_window",
							"Window in which traffic to high-risk zones (convbill.risk_zone) is counted (1min to 1d).",
							NULL,
							&irsf_window,
							60, 1, 1440,
							PGC_USERSET, GUC_UNIT_MIN, NULL, NULL, NULL);
	DefineCustomIntVariable("convbill.irsf_min_events",
							"Events to high-risk zones within convbill.irsf_window that raise an irsf alert (1 to 1000000).",
							NULL,
							&irsf_min_events,
							5, 1, 1000000,
							PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("convbill.irsf_min_seconds",
							"Seconds of calls to high-risk zones within convbill.irsf_window that raise an irsf alert (1s to 30d).",
							"Counts the quantity of services whose unit is 'second'.",
							&irsf_min_seconds,
							3600, 1, 2592000,
							PGC_USERSET, GUC_UNIT_S, NULL, NULL, NULL);
	DefineCustomIntVariable("convbill.velocity_window",
							"Window in which an account's events of a service are counted for velocity alerts (1min to 1d).",
							NULL,
							&velocity_window,
							10, 1, 1440,
							PGC_USERSET, GUC_UNIT_MIN, NULL, NULL, NULL);
	DefineCustomRealVariable("convbill.velocity_factor",
							 "A velocity alert needs this many times the account's usual busiest window of a day (1 to 1000000).",
							 NULL,
							 &velocity_factor,
							 10.0, 1.0, 1000000.0,
							 PGC_USERSET, 0, NULL, NULL, NULL);
	DefineCustomIntVariable("convbill.velocity_min_events",
							"A velocity alert needs at least this many events within convbill.velocity_window (2 to 1000000).",
							NULL,
							&velocity_min_events,
							30, 2, 1000000,
							PGC_USERSET, 0, NULL, NULL, NULL);
}

/* Load-time setup: define the settings and reserve the convbill.* namespace. */
void
_PG_init(void)
{
	DefineCustomBoolVariable("convbill.realtime_rating",
							 "Rates usage events on insert instead of waiting for rate_pending().",
							 "Off by default: bulk rating with rate_pending() is much faster per event.",
							 &realtime_rating,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("convbill.finalize_invoices",
							 "run_billing() finalizes (numbers) the invoices it creates.",
							 "Off by default: the bill run leaves drafts for review; finalize_invoice() numbers them.",
							 &finalize_invoices,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("convbill.invoice_empty_periods",
							 "run_billing() also invoices periods with nothing to bill.",
							 "Off by default: an account with no charges and no fees in a period gets no invoice.",
							 &invoice_empty_periods,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomIntVariable("convbill.leakage_pending_age",
							"The leakage view reports usage events still pending this long after they were received.",
							"A duration (60min, 2h, 1d); the rate job normally rates events within a minute.",
							&leakage_pending_age,
							60, 0, 525600,
							PGC_USERSET,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);
	DefineCustomIntVariable("convbill.leakage_billing_grace",
							"The leakage view reports charges of periods that ended this long ago and have no invoice.",
							"A duration (1d, 36h); the bill job invoices a period within the hour after it ends.",
							&leakage_billing_grace,
							1440, 0, 525600,
							PGC_USERSET,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);
	DefineCustomIntVariable("convbill.job_run_retention",
							"Runs of a job older than this are deleted from convbill.job_run when the job runs again.",
							"A duration (30d, 12h); 0 keeps every run.",
							&job_run_retention,
							43200, 0, 52560000,
							PGC_SUSET,
							GUC_UNIT_MIN,
							NULL, NULL, NULL);
	/* not a setting: where job_warn() leaves a step's report for its job run */
	DefineCustomStringVariable("convbill.job_warning",
							   "Internal: the last report of a job step (job_warn()), taken by the job's runner.",
							   NULL,
							   &job_warning,
							   "",
							   PGC_USERSET,
							   GUC_NO_SHOW_ALL | GUC_NOT_IN_SAMPLE | GUC_NO_RESET_ALL,
							   NULL, NULL, NULL);
	define_anomaly_settings();
	MarkGUCPrefixReserved("convbill");
}
