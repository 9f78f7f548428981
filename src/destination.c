/*
 * destination.c — destination matching: zone_of(text), the longest-prefix match
 * of a dialled number's digits against convbill.destination.
 *
 * The prefixes are loaded once per backend into a hash table keyed by (length,
 * digits) packed in a uint64, so a lookup is at most one probe per prefix
 * length, longest first (never more than the longest prefix loaded): O(15)
 * probes whatever the table's size.  100,000 prefixes take about 2.5 MB.
 *
 * Invalidation: a statement trigger on convbill.destination calls
 * destination_changed(), which queues a relcache invalidation of the table.
 * PostgreSQL delivers it to every backend when the change commits (and to this
 * one at the end of the command), and our relcache callback drops the cache, so
 * the next zone_of() in any session sees the new catalogue.
 */
#include "postgres.h"

#include "access/xact.h"
#include "storage/proc.h"

#include "catalog/namespace.h"
#include "commands/trigger.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"
#include "utils/jsonb.h"
#include "utils/numeric.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#define MAX_PREFIX_DIGITS 15

typedef struct PrefixEntry
{
	uint64		key;			/* 0 = empty slot; else (len << 56) | digits */
	int32		zone;			/* index into zones[] */
} PrefixEntry;

typedef struct DestinationCache
{
	bool		valid;
	bool		parallel_load;	/* loaded with a parallel query's snapshot */
	MemoryContext mcxt;
	PrefixEntry *slots;
	uint64		mask;			/* number of slots - 1 (a power of two) */
	int			max_len;
	char	  **zones;
	int			nzones;
} DestinationCache;

static DestinationCache dest_cache;
static bool callback_registered = false;
static uint64 inval_generation = 0;	/* bumped by every invalidation */
static LocalTransactionId inval_lxid = InvalidLocalTransactionId;	/* the (sub)transaction */
static SubTransactionId inval_subxid = InvalidSubTransactionId;	/* that queued one already */
static Oid	destination_relid = InvalidOid;

/* Drop the cache when convbill.destination is invalidated (or everything is). */
static void
destination_relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == destination_relid)
	{
		dest_cache.valid = false;
		inval_generation++;
	}
}

static inline uint64
prefix_key(int len, uint64 digits)
{
	return ((uint64) len << 56) | digits;
}

static inline uint64
hash_key(uint64 k)
{
	k ^= k >> 33;
	k *= UINT64CONST(0xff51afd7ed558ccd);
	k ^= k >> 33;
	return k;
}

/* Insert or overwrite a prefix. */
static void
cache_put(uint64 key, int zone)
{
	uint64		i = hash_key(key) & dest_cache.mask;

	while (dest_cache.slots[i].key != 0 && dest_cache.slots[i].key != key)
		i = (i + 1) & dest_cache.mask;
	dest_cache.slots[i].key = key;
	dest_cache.slots[i].zone = zone;
}

static int
cache_get(uint64 key)
{
	uint64		i = hash_key(key) & dest_cache.mask;

	while (dest_cache.slots[i].key != 0)
	{
		if (dest_cache.slots[i].key == key)
			return dest_cache.slots[i].zone;
		i = (i + 1) & dest_cache.mask;
	}
	return -1;
}

/* Load every prefix of convbill.destination into the backend's cache. */
static void
destination_load(void)
{
	Oid			nsp = get_namespace_oid("convbill", false);
	uint64		generation = inval_generation;
	SPIPlanPtr	plan;
	uint64		nrows;
	uint64		nslots = 16;
	MemoryContext old;

	destination_relid = get_relname_relid("destination", nsp);
	if (!callback_registered)
	{
		CacheRegisterRelcacheCallback(destination_relcache_callback, (Datum) 0);
		callback_registered = true;
	}
	if (dest_cache.mcxt == NULL)
		dest_cache.mcxt = AllocSetContextCreate(TopMemoryContext, "convbill destination cache",
												ALLOCSET_DEFAULT_SIZES);
	else
		MemoryContextReset(dest_cache.mcxt);
	dest_cache.slots = NULL;
	dest_cache.zones = NULL;
	dest_cache.nzones = 0;
	dest_cache.max_len = 0;

	/*
	 * Read with the latest snapshot, not the statement's: the cache outlives
	 * this statement and transaction, so it must hold the newest committed
	 * catalogue (plus this transaction's own changes).
	 */
	SPI_connect();
	plan = SPI_prepare("SELECT prefix, zone FROM convbill.destination ORDER BY zone", 0, NULL);
	/*
	 * (A parallel query may not take a new snapshot: there the leader and
	 * its workers read with the query's, and the cache they build serves
	 * that query only: the next call outside parallel mode loads again.)
	 */
	if (plan == NULL ||
		SPI_execute_snapshot(plan, NULL, NULL,
							 IsInParallelMode() ? GetActiveSnapshot() : GetLatestSnapshot(),
							 InvalidSnapshot, true, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read convbill.destination");
	nrows = SPI_processed;
	while (nslots < nrows * 2)
		nslots *= 2;

	old = MemoryContextSwitchTo(dest_cache.mcxt);
	dest_cache.slots = palloc0(sizeof(PrefixEntry) * nslots);
	dest_cache.mask = nslots - 1;
	dest_cache.zones = palloc(sizeof(char *) * (nrows + 1));
	for (uint64 r = 0; r < nrows; r++)
	{
		HeapTuple	tup = SPI_tuptable->vals[r];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		char	   *prefix = SPI_getvalue(tup, desc, 1);
		char	   *zone = SPI_getvalue(tup, desc, 2);
		int			len = (int) strlen(prefix);
		uint64		digits = 0;

		/* the table's CHECK constraint guarantees 1..15 digits */
		for (int k = 0; k < len; k++)
			digits = digits * 10 + (uint64) (prefix[k] - '0');
		if (dest_cache.nzones == 0 || strcmp(dest_cache.zones[dest_cache.nzones - 1], zone) != 0)
			dest_cache.zones[dest_cache.nzones++] = pstrdup(zone);
		cache_put(prefix_key(len, digits), dest_cache.nzones - 1);
		if (len > dest_cache.max_len)
			dest_cache.max_len = len;
	}
	MemoryContextSwitchTo(old);
	SPI_finish();
	/* an invalidation that arrived while loading means the load may be stale */
	dest_cache.valid = (generation == inval_generation);
	dest_cache.parallel_load = IsInParallelMode();
}

/* The zone of the longest prefix matching the digits of s[0..n), or -1. */
static int
match_zone(const char *s, int n)
{
	uint64		partial[MAX_PREFIX_DIGITS + 1];
	int			len = 0;

	if (!dest_cache.valid || (dest_cache.parallel_load && !IsInParallelMode()))
		destination_load();

	/* digits only: "+49 (151) 555-01" -> 4915155501; up to the longest prefix */
	partial[0] = 0;
	for (int i = 0; i < n && len < dest_cache.max_len; i++)
		if (s[i] >= '0' && s[i] <= '9')
		{
			partial[len + 1] = partial[len] * 10 + (uint64) (s[i] - '0');
			len++;
		}
	for (; len > 0; len--)
	{
		int			z = cache_get(prefix_key(len, partial[len]));

		if (z >= 0)
			return z;
	}
	return -1;
}

/* Return zone z's name as text, or SQL NULL when nothing matched (z < 0). */
#define RETURN_ZONE(z) \
	do { \
		int			zone_ = (z); \
		\
		if (zone_ < 0) \
			PG_RETURN_NULL(); \
		PG_RETURN_TEXT_P(cstring_to_text(dest_cache.zones[zone_])); \
	} while (0)

PG_FUNCTION_INFO_V1(zone_of);
/* zone_of(number text): the zone of the longest matching prefix, or NULL. */
Datum
zone_of(PG_FUNCTION_ARGS)
{
	text	   *number = PG_GETARG_TEXT_PP(0);

	RETURN_ZONE(match_zone(VARDATA_ANY(number), VARSIZE_ANY_EXHDR(number)));
}

PG_FUNCTION_INFO_V1(event_zone);
/*
 * event_zone(attrs jsonb): the zone of attrs' "destination" when it is a JSON
 * string ("+49 30 1234") or number (4930123456, its digits as attrs ->>
 * gives them), else NULL.
 */
Datum
event_zone(PG_FUNCTION_ARGS)
{
	Jsonb	   *attrs = PG_GETARG_JSONB_P(0);
	JsonbValue	v;
	const char *s;
	int			n;

	if (!JB_ROOT_IS_OBJECT(attrs) ||
		getKeyJsonValueFromContainer(&attrs->root, "destination", strlen("destination"), &v) == NULL)
		PG_RETURN_NULL();
	if (v.type == jbvString)
	{
		s = v.val.string.val;
		n = v.val.string.len;
	}
	else if (v.type == jbvNumeric)
	{
		s = DatumGetCString(DirectFunctionCall1(numeric_out, NumericGetDatum(v.val.numeric)));
		n = strlen(s);
	}
	else
		PG_RETURN_NULL();
	RETURN_ZONE(match_zone(s, n));
}

PG_FUNCTION_INFO_V1(destination_changed);
/* Statement trigger on convbill.destination: invalidate every backend's cache. */
Datum
destination_changed(PG_FUNCTION_ARGS)
{
	TriggerData *trigdata = (TriggerData *) fcinfo->context;

	if (!CALLED_AS_TRIGGER(fcinfo))
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("destination_changed() must be called as a trigger")));
	/*
	 * One invalidation per (sub)transaction is enough: a row trigger fires
	 * for every row, and outside one command (the logical replication apply
	 * worker advances the command counter after every change) PostgreSQL
	 * does not merge the messages, which would flood the shared queue.  A
	 * subtransaction's messages go with its abort, so the mark is kept per
	 * subtransaction (their ids are not reused within a transaction).
	 */
	if (inval_lxid != MyProc->lxid || inval_subxid != GetCurrentSubTransactionId())
	{
		CacheInvalidateRelcacheByRelid(RelationGetRelid(trigdata->tg_relation));
		inval_lxid = MyProc->lxid;
		inval_subxid = GetCurrentSubTransactionId();
	}
	dest_cache.valid = false;
	inval_generation++;
	return PointerGetDatum(NULL);
}
