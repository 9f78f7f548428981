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
	MarkGUCPrefixReserved("convbill");
}
