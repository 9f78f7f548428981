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

/* Load-time setup: reserve the convbill.* settings namespace. */
void
_PG_init(void)
{
	MarkGUCPrefixReserved("convbill");
}
