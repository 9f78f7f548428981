/*
 * convbill.c — module entry point: the magic block, settings and allocation
 * hooks the pure-C modules use inside the backend.
 */
#include "postgres.h"

#include "fmgr.h"
#include "utils/guc.h"

#include "json_lite.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

/* convbill.realtime_rating: rate usage events as they are inserted. */
static bool realtime_rating = false;

/* Bill run settings, read by run_billing() through current_setting(). */
static bool finalize_invoices = false;
static bool invoice_empty_periods = false;

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
	MarkGUCPrefixReserved("convbill");
}
