/*
 * allowance.c — allowance buckets consumed by a batch of rated events.
 *
 * Bulk rating (sql/ext/41_rate_pending.sql) covers each event's billed
 * quantity with the allowance buckets of its account and service that are
 * valid at the event, before anything is priced.  Within a batch an account's
 * events take units in event-time order, and each event takes from the
 * buckets in consumption order (priority, valid_until, bucket_id), skipping
 * buckets not valid at its time.  Buckets with different validity windows make
 * this a sequential walk rather than a running sum, so it is done here in one
 * pass over the batch sorted by (account, service, time, event).
 *
 * allowance_take(ev_account, ev_service, ev_idx, ev_at, ev_bq,
 *                b_account, b_unit, b_id, b_priority, b_from, b_until, b_avail)
 *   -> SETOF (idx bigint, bucket_id bigint, taken numeric)
 *
 * Arrays of the same length describe the events and the buckets, in any
 * order; the function sorts them.  b_avail is what rating may take from each
 * bucket (its balance less what open sessions hold).  One row per event and
 * bucket it took units from.  Quantities are exact (10^-9, QTY_DECIMALS); the
 * result depends on the arguments only (IMMUTABLE).  Locking, the bucket
 * update and the ledger are SQL's.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "numeric_scaled.h"

typedef struct AllowEvent
{
	int64		account;
	text	   *service;
	int64		idx;
	TimestampTz at;
	cb_int128	bq;
} AllowEvent;

typedef struct AllowBucket
{
	int64		account;
	text	   *unit;
	int64		id;
	int32		priority;
	TimestampTz from;
	TimestampTz until;
	cb_int128	avail;
} AllowBucket;

/* v / 10^scale as a numeric without trailing zeros (30, not 30.000000000). */
static Numeric
units_to_numeric(cb_int128 v, int scale)
{
	while (scale > 0 && v % 10 == 0)
	{
		v /= 10;
		scale--;
	}
	return scaled_to_numeric(v, scale);
}

static int
text_cmp(const text *a, const text *b)
{
	int			la = VARSIZE_ANY_EXHDR(a);
	int			lb = VARSIZE_ANY_EXHDR(b);
	int			c = memcmp(VARDATA_ANY(a), VARDATA_ANY(b), Min(la, lb));

	if (c != 0)
		return c;
	return (la > lb) - (la < lb);
}

static int
key_cmp(int64 a1, const text *s1, int64 a2, const text *s2)
{
	if (a1 != a2)
		return a1 < a2 ? -1 : 1;
	return text_cmp(s1, s2);
}

static int
event_cmp(const void *pa, const void *pb)
{
	const AllowEvent *a = pa;
	const AllowEvent *b = pb;
	int			c = key_cmp(a->account, a->service, b->account, b->service);

	if (c != 0)
		return c;
	if (a->at != b->at)
		return a->at < b->at ? -1 : 1;
	return (a->idx > b->idx) - (a->idx < b->idx);
}

static int
bucket_cmp(const void *pa, const void *pb)
{
	const AllowBucket *a = pa;
	const AllowBucket *b = pb;
	int			c = key_cmp(a->account, a->unit, b->account, b->unit);

	if (c != 0)
		return c;
	if (a->priority != b->priority)
		return a->priority < b->priority ? -1 : 1;
	if (a->until != b->until)
		return a->until < b->until ? -1 : 1;
	return (a->id > b->id) - (a->id < b->id);
}

/* Argument argno as Datums (no NULL element allowed); returns its length. */
static int
array_arg(FunctionCallInfo fcinfo, int argno, Oid elemtype, Datum **values)
{
	ArrayType  *a;
	int16		typlen;
	bool		typbyval;
	char		typalign;
	bool	   *nulls;
	int			n;

	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("allowance_take: argument %d must not be NULL", argno + 1)));
	a = PG_GETARG_ARRAYTYPE_P(argno);
	if (ARR_ELEMTYPE(a) != elemtype)
		elog(ERROR, "allowance_take: argument %d has the wrong element type", argno + 1);
	get_typlenbyvalalign(elemtype, &typlen, &typbyval, &typalign);
	deconstruct_array(a, elemtype, typlen, typbyval, typalign, values, &nulls, &n);
	for (int i = 0; i < n; i++)
		if (nulls[i])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("allowance_take: argument %d must not contain NULL", argno + 1)));
	return n;
}

static void
same_length(int n, int m, int argno)
{
	if (n != m)
		ereport(ERROR,
				(errcode(ERRCODE_ARRAY_SUBSCRIPT_ERROR),
				 errmsg("allowance_take: argument %d has %d elements, expected %d", argno + 1, m, n)));
}

PG_FUNCTION_INFO_V1(allowance_take);
Datum
allowance_take(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Datum	   *d[12];
	int			ne,
				nb;
	AllowEvent *ev;
	AllowBucket *bk;
	int			b0 = 0;

	InitMaterializedSRF(fcinfo, 0);

	ne = array_arg(fcinfo, 0, INT8OID, &d[0]);
	same_length(ne, array_arg(fcinfo, 1, TEXTOID, &d[1]), 1);
	same_length(ne, array_arg(fcinfo, 2, INT8OID, &d[2]), 2);
	same_length(ne, array_arg(fcinfo, 3, TIMESTAMPTZOID, &d[3]), 3);
	same_length(ne, array_arg(fcinfo, 4, NUMERICOID, &d[4]), 4);
	nb = array_arg(fcinfo, 5, INT8OID, &d[5]);
	same_length(nb, array_arg(fcinfo, 6, TEXTOID, &d[6]), 6);
	same_length(nb, array_arg(fcinfo, 7, INT8OID, &d[7]), 7);
	same_length(nb, array_arg(fcinfo, 8, INT4OID, &d[8]), 8);
	same_length(nb, array_arg(fcinfo, 9, TIMESTAMPTZOID, &d[9]), 9);
	same_length(nb, array_arg(fcinfo, 10, TIMESTAMPTZOID, &d[10]), 10);
	same_length(nb, array_arg(fcinfo, 11, NUMERICOID, &d[11]), 11);

	if (ne == 0 || nb == 0)
		PG_RETURN_NULL();

	/* cb_int128 members need 16-byte alignment; palloc gives MAXALIGN (8) */
	ev = (AllowEvent *) TYPEALIGN(16, palloc(sizeof(AllowEvent) * ne + 16));
	for (int i = 0; i < ne; i++)
	{
		ev[i].account = DatumGetInt64(d[0][i]);
		ev[i].service = DatumGetTextPP(d[1][i]);
		ev[i].idx = DatumGetInt64(d[2][i]);
		ev[i].at = DatumGetTimestampTz(d[3][i]);
		ev[i].bq = numeric_to_scaled(DatumGetNumeric(d[4][i]), QTY_DECIMALS, "billed quantity");
	}
	bk = (AllowBucket *) TYPEALIGN(16, palloc(sizeof(AllowBucket) * nb + 16));
	for (int i = 0; i < nb; i++)
	{
		bk[i].account = DatumGetInt64(d[5][i]);
		bk[i].unit = DatumGetTextPP(d[6][i]);
		bk[i].id = DatumGetInt64(d[7][i]);
		bk[i].priority = DatumGetInt32(d[8][i]);
		bk[i].from = DatumGetTimestampTz(d[9][i]);
		bk[i].until = DatumGetTimestampTz(d[10][i]);
		bk[i].avail = numeric_to_scaled(DatumGetNumeric(d[11][i]), QTY_DECIMALS, "available units");
	}
	qsort(ev, ne, sizeof(AllowEvent), event_cmp);
	qsort(bk, nb, sizeof(AllowBucket), bucket_cmp);

	/* one walk: events and buckets in key order; per event its key's buckets */
	for (int i = 0; i < ne; i++)
	{
		AllowEvent *e = &ev[i];
		cb_int128	need = e->bq;
		int			b;

		while (b0 < nb && key_cmp(bk[b0].account, bk[b0].unit, e->account, e->service) < 0)
			b0++;
		for (b = b0; need > 0 && b < nb
			 && key_cmp(bk[b].account, bk[b].unit, e->account, e->service) == 0; b++)
		{
			AllowBucket *x = &bk[b];
			cb_int128	take;
			Datum		values[3];
			bool		nulls[3] = {false, false, false};

			if (x->avail <= 0 || e->at < x->from || e->at >= x->until)
				continue;
			take = need < x->avail ? need : x->avail;
			x->avail -= take;
			need -= take;
			values[0] = Int64GetDatum(e->idx);
			values[1] = Int64GetDatum(x->id);
			values[2] = NumericGetDatum(units_to_numeric(take, QTY_DECIMALS));
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		}
	}
	PG_RETURN_NULL();
}
