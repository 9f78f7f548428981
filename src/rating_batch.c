/*
 * rating_batch.c — bulk rating's two passes over a batch of claimed events,
 * in C: judging (each event's fate: reject reason, rate, billed quantity,
 * duplicate, open period; rate_batch_judge(), further below) and pricing
 * (allowances, cycle running totals, the price; rate_batch_price()).
 * rate_events() (sql/ext/41_rate_pending.sql) claims and locks, calls them
 * with the plan allowances granted in between, and writes the rows.
 *
 * The pricing pass.  The judged batch is in the session's temp table
 * convbill_work: each event's status, rate, billed quantity (bq) and open
 * period.  For the events with status 'billable':
 *
 *   1. allowances first: per (account, service), events in (at, idx) order,
 *      at = greatest(started_at, period_start), take units from the buckets
 *      valid at `at` in (priority, valid_until, bucket_id) order; what a
 *      bucket offers is its balance less the units open sessions hold
 *      (computed by SQL, below);
 *   2. cycle-scoped tariffs: per (account, period, rate), events in
 *      (started_at, idx) order, used_before = the usage_counter total plus
 *      the rest (bq - covered) of the events before it in the batch;
 *   3. the price: rate_billed(tariff, bq - covered, started_at in the
 *      account's zone, used_before) exactly as rate_billed_or_null() gives
 *      it: NULL when the charge is out of range (the event is rejected).
 *
 * rate_batch_price() -> SETOF (idx bigint, covered numeric, amount numeric,
 *                              take_bucket bigint[], take_units numeric[])
 *
 * one row per billable event; take_bucket/take_units (NULL when nothing was
 * covered) say which allowance buckets gave how many units.  covered has the
 * numeric form sum() of the taken units gives (each taken amount without
 * trailing zeros), amount the tariff's decimals.  The inputs are read with
 * SPI (narrow rows, a cursor for the events); locking, the rows written, the
 * ledger and the counters stay SQL's.
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "common/hashfn.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/numeric.h"
#include "utils/timestamp.h"
#include "utils/tuplestore.h"

#include "billing_period.h"
#include "local_time.h"
#include "numeric_scaled.h"
#include "tariff.h"
#include "tariff_glue.h"

/* One billable event (palloc'd arrays: 128-bit values kept as cb_i128). */
typedef struct PriceEvent
{
	int64		idx;
	int64		account;
	int32		svc;			/* interned service */
	int32		tz;				/* interned time zone */
	TimestampTz started;
	TimestampTz pstart;			/* the open period it is billed in */
	int64		rate_id;
	const Tariff *t;
	bool		cycle;
	cb_i128		bq;
	cb_i128		covered;
	cb_i128		used_before;
	int32		take0;			/* its first take in takes[] */
	int32		ntake;
	int32		cov_scale;		/* numeric scale of covered (as sum() gives it) */
} PriceEvent;

typedef struct PriceBucket
{
	int64		account;
	int32		svc;
	int32		priority;
	int64		id;
	TimestampTz from;
	TimestampTz until;
	cb_i128		avail;
} PriceBucket;

typedef struct PriceTake
{
	int64		bucket_id;
	cb_i128		units;
} PriceTake;

/* interned strings (services, zones, currencies): name -> small int */
typedef struct NameEntry
{
	char		name[NAMEDATALEN * 2];
	int32		id;
} NameEntry;

typedef struct Names
{
	HTAB	   *h;
	int32		n;
	int32		cap;
	const char **name;			/* id -> the entry's name */
} Names;

typedef struct RateEntry
{
	int64		rate_id;
	Tariff	   *t;
} RateEntry;

typedef struct CounterKey
{
	int64		account;
	TimestampTz pstart;
	int64		rate_id;
} CounterKey;

typedef struct CounterEntry
{
	CounterKey	key;
	cb_i128		used;
} CounterEntry;

typedef struct PriceState
{
	const char *schema;			/* quoted extension schema */
	Names		svc;
	Names		tz;
	pg_tz	  **tzs;				/* tz id -> the zone */
	int32		tzcap;
	HTAB	   *rates;
	HTAB	   *counters;
	PriceEvent *ev;
	int			nev;
	int			evcap;
	PriceBucket *bk;
	int			nbk;
	PriceTake  *takes;
	int			ntakes;
	int			takecap;
} PriceState;

static void
names_init(Names *n, const char *what, MemoryContext keep)
{
	HASHCTL		ctl;

	ctl.keysize = NAMEDATALEN * 2;
	ctl.entrysize = sizeof(NameEntry);
	ctl.hcxt = keep;
	n->h = hash_create(what, 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	n->n = 0;
	n->cap = 16;
	n->name = MemoryContextAlloc(keep, n->cap * sizeof(char *));
}

/* The id of a name (a service, a zone, a currency), interned on first sight. */
static int32
intern(Names *n, const char *name, bool *is_new)
{
	NameEntry  *e;
	bool		found;

	if (strlen(name) >= NAMEDATALEN * 2)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("rating: name \"%.40s...\" is too long", name)));
	e = hash_search(n->h, name, HASH_ENTER, &found);
	if (!found)
	{
		if (n->n == n->cap)
		{
			n->cap *= 2;
			n->name = repalloc(n->name, n->cap * sizeof(char *));
		}
		e->id = n->n++;
		n->name[e->id] = e->name;
	}
	if (is_new)
		*is_new = !found;
	return e->id;
}

/* A time zone's id; its pg_tz is looked up once per pass. */
static int32
intern_zone(PriceState *st, const char *name, MemoryContext keep)
{
	bool		is_new;
	int32		id = intern(&st->tz, name, &is_new);

	if (is_new)
	{
		if (id >= st->tzcap)
		{
			int			cap = Max(16, st->tzcap * 2);

			st->tzs = st->tzs ? repalloc(st->tzs, cap * sizeof(pg_tz *))
				: MemoryContextAlloc(keep, cap * sizeof(pg_tz *));
			st->tzcap = cap;
		}
		st->tzs[id] = zone_lookup(name);
	}
	return id;
}

/* Column c of row r of the last SPI result; NULL is an internal error. */
static Datum
val(uint64 r, int c)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c, &isnull);

	if (isnull)
		elog(ERROR, "rate_batch_price: unexpected NULL in column %d", c);
	return d;
}

static void
run(const char *sql)
{
	if (SPI_execute(sql, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "rate_batch_price: query failed: %s", sql);
}

/* The tariffs of the rates `sql` returns (rate_id, tariff), copied into the pass's context. */
static void
load_rates(PriceState *st, MemoryContext keep, const char *sql)
{
	HASHCTL		ctl;

	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(RateEntry);
	ctl.hcxt = keep;
	st->rates = hash_create("rating rates", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	run(sql);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		int64		id = DatumGetInt64(val(r, 1));
		RateEntry  *e = hash_search(st->rates, &id, HASH_ENTER, NULL);
		MemoryContext old = MemoryContextSwitchTo(keep);

		e->t = (Tariff *) PG_DETOAST_DATUM_COPY(val(r, 2));
		(void) tariff_check_version(e->t);
		MemoryContextSwitchTo(old);
	}
}

/* The billable events (a cursor: the batch can be large). */
static void
load_events(PriceState *st, MemoryContext keep)
{
	StringInfoData q;
	SPIPlanPtr	plan;
	Portal		portal;
	MemoryContext tmp;

	initStringInfo(&q);
	appendStringInfoString(&q,
						   "SELECT w.idx, w.account_id, w.service, w.started_at, w.period_start, w.timezone, "
						   "       w.rate_id, w.bq, w.cycle "
						   "FROM pg_temp.convbill_work w WHERE w.status = 'billable'");
	plan = SPI_prepare(q.data, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "rate_batch_price: SPI_prepare failed");
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	tmp = AllocSetContextCreate(CurrentMemoryContext, "rating fetch", ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			MemoryContext old;
			PriceEvent *e;
			RateEntry  *re;
			int64		rate_id;
			bool		isnull;
			Datum		d;

			if (st->nev == st->evcap)
			{
				st->evcap = Max(1024, st->evcap * 2);
				st->ev = st->ev ? repalloc_huge(st->ev, (Size) st->evcap * sizeof(PriceEvent))
					: MemoryContextAllocHuge(keep, (Size) st->evcap * sizeof(PriceEvent));
			}
			e = &st->ev[st->nev++];
			memset(e, 0, sizeof(PriceEvent));
			old = MemoryContextSwitchTo(tmp);
			e->idx = DatumGetInt64(val(r, 1));
			e->account = DatumGetInt64(val(r, 2));
			e->svc = intern(&st->svc, TextDatumGetCString(val(r, 3)), NULL);
			e->started = DatumGetTimestampTz(val(r, 4));
			e->pstart = DatumGetTimestampTz(val(r, 5));
			e->tz = intern_zone(st, TextDatumGetCString(val(r, 6)), keep);
			rate_id = DatumGetInt64(val(r, 7));
			re = hash_search(st->rates, &rate_id, HASH_FIND, NULL);
			if (re == NULL)
				elog(ERROR, "rate_batch_price: rate %lld not found", (long long) rate_id);
			e->rate_id = rate_id;
			e->t = re->t;
			e->bq = i128_store(numeric_to_scaled(DatumGetNumeric(val(r, 8)), QTY_DECIMALS, "billed quantity"));
			d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 9, &isnull);
			e->cycle = !isnull && DatumGetBool(d);
			MemoryContextSwitchTo(old);
		}
		SPI_freetuptable(SPI_tuptable);
		MemoryContextReset(tmp);
	}
	SPI_cursor_close(portal);
}

/*
 * What rating may take from each allowance bucket of the batch's (account,
 * service) pairs: its balance less the units open sessions hold, those set
 * aside from the buckets valid now in consumption order (where the sessions'
 * debits will take them).
 */
static void
load_buckets(PriceState *st, MemoryContext keep)
{
	StringInfoData q;
	int			n = 0;

	initStringInfo(&q);
	appendStringInfo(&q,
					 "WITH keys AS ("
					 "    SELECT DISTINCT w.account_id, w.service FROM pg_temp.convbill_work w"
					 "    WHERE w.status = 'billable' AND w.bq > 0"
					 "), held AS ("
					 "    SELECT r.account_id, r.service, sum(r.held_units) AS units"
					 "    FROM keys k"
					 "    JOIN %s.reservation r ON r.account_id = k.account_id AND r.service = k.service"
					 "    WHERE r.status = 'open' AND r.expires_at > now() AND r.held_units > 0"
					 "    GROUP BY 1, 2"
					 "), buckets AS ("
					 "    SELECT b.account_id, b.unit, b.bucket_id, b.priority, b.valid_from, b.valid_until, b.balance,"
					 "           b.valid_from <= now() AND b.valid_until > now() AS valid_now,"
					 "           coalesce(h.units, 0) AS held,"
					 "           coalesce(sum(CASE WHEN b.valid_from <= now() AND b.valid_until > now() THEN b.balance END)"
					 "                    OVER (PARTITION BY b.account_id, b.unit ORDER BY b.priority, b.valid_until, b.bucket_id"
					 "                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before_now"
					 "    FROM keys k"
					 "    JOIN %s.bucket b ON b.account_id = k.account_id AND b.kind = 'allowance' AND b.unit = k.service"
					 "                    AND b.balance > 0"
					 "    LEFT JOIN held h ON h.account_id = k.account_id AND h.service = k.service"
					 ") "
					 "SELECT x.* FROM ("
					 "    SELECT x.account_id, x.unit, x.bucket_id, x.priority, x.valid_from, x.valid_until,"
					 "           trunc(x.balance - CASE WHEN x.valid_now THEN least(x.balance, greatest(x.held - x.before_now, 0))"
					 "                                  ELSE 0 END, 9) AS units"
					 "    FROM buckets x) x "
					 "WHERE x.units > 0",
					 st->schema, st->schema);
	run(q.data);
	st->bk = MemoryContextAllocHuge(keep, Max(1, SPI_processed) * sizeof(PriceBucket));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		PriceBucket *b = &st->bk[n++];

		b->account = DatumGetInt64(val(r, 1));
		b->svc = intern(&st->svc, TextDatumGetCString(val(r, 2)), NULL);
		b->id = DatumGetInt64(val(r, 3));
		b->priority = DatumGetInt32(val(r, 4));
		b->from = DatumGetTimestampTz(val(r, 5));
		b->until = DatumGetTimestampTz(val(r, 6));
		b->avail = i128_store(numeric_to_scaled(DatumGetNumeric(val(r, 7)), QTY_DECIMALS, "available units"));
	}
	st->nbk = n;
}

/* The cycle counters (usage_counter 'rate:<id>') of the batch's cycle keys. */
static void
load_counters(PriceState *st, MemoryContext keep)
{
	StringInfoData q;
	HASHCTL		ctl;

	ctl.keysize = sizeof(CounterKey);
	ctl.entrysize = sizeof(CounterEntry);
	ctl.hcxt = keep;
	st->counters = hash_create("rating counters", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);

	initStringInfo(&q);
	appendStringInfo(&q,
					 "SELECT k.account_id, k.period_start, k.rate_id, rc.used "
					 "FROM (SELECT DISTINCT w.account_id, w.period_start, w.rate_id FROM pg_temp.convbill_work w"
					 "      WHERE w.status = 'billable' AND w.cycle) k "
					 "JOIN %s.usage_counter rc ON rc.account_id = k.account_id AND rc.period_start = k.period_start"
					 "                        AND rc.counter = 'rate:' || k.rate_id",
					 st->schema);
	run(q.data);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		CounterKey	k;
		CounterEntry *e;

		memset(&k, 0, sizeof(k));
		k.account = DatumGetInt64(val(r, 1));
		k.pstart = DatumGetTimestampTz(val(r, 2));
		k.rate_id = DatumGetInt64(val(r, 3));
		e = hash_search(st->counters, &k, HASH_ENTER, NULL);
		e->used = i128_store(numeric_to_scaled(DatumGetNumeric(val(r, 4)), QTY_DECIMALS, "used_before"));
	}
}

static TimestampTz
allow_at(const PriceEvent *e)
{
	return e->started > e->pstart ? e->started : e->pstart;
}

static int
cmp_i64(int64 a, int64 b)
{
	return (a > b) - (a < b);
}

/* allowance order: (account, service, at, idx) */
static int
allow_cmp(const void *pa, const void *pb)
{
	const PriceEvent *a = *(PriceEvent *const *) pa;
	const PriceEvent *b = *(PriceEvent *const *) pb;
	int			c;

	if ((c = cmp_i64(a->account, b->account)) != 0 || (c = cmp_i64(a->svc, b->svc)) != 0
		|| (c = cmp_i64(allow_at(a), allow_at(b))) != 0)
		return c;
	return cmp_i64(a->idx, b->idx);
}

/* consumption order: (account, service, priority, valid_until, bucket_id) */
static int
bucket_cmp(const void *pa, const void *pb)
{
	const PriceBucket *a = pa;
	const PriceBucket *b = pb;
	int			c;

	if ((c = cmp_i64(a->account, b->account)) != 0 || (c = cmp_i64(a->svc, b->svc)) != 0
		|| (c = cmp_i64(a->priority, b->priority)) != 0 || (c = cmp_i64(a->until, b->until)) != 0)
		return c;
	return cmp_i64(a->id, b->id);
}

/* cycle order: (account, period, rate, started_at, idx) */
static int
cycle_cmp(const void *pa, const void *pb)
{
	const PriceEvent *a = *(PriceEvent *const *) pa;
	const PriceEvent *b = *(PriceEvent *const *) pb;
	int			c;

	if ((c = cmp_i64(a->account, b->account)) != 0 || (c = cmp_i64(a->pstart, b->pstart)) != 0
		|| (c = cmp_i64(a->rate_id, b->rate_id)) != 0 || (c = cmp_i64(a->started, b->started)) != 0)
		return c;
	return cmp_i64(a->idx, b->idx);
}

static bool
same_allow_key(const PriceEvent *e, const PriceBucket *b)
{
	return e->account == b->account && e->svc == b->svc;
}

/* trailing zeros of v at 10^-QTY_DECIMALS: the scale of v's shortest form */
static int
short_scale(cb_int128 v)
{
	int			scale = QTY_DECIMALS;

	while (scale > 0 && v % 10 == 0)
	{
		v /= 10;
		scale--;
	}
	return scale;
}

static Numeric
qty_numeric(cb_int128 v, int scale)
{
	return scaled_to_numeric(v / dec_pow10(QTY_DECIMALS - scale), scale);
}

/* 1. allowances: one walk over events and buckets in key order */
static void
take_allowances(PriceState *st, PriceEvent **order, int n)
{
	int			b0 = 0;

	qsort(st->bk, st->nbk, sizeof(PriceBucket), bucket_cmp);
	qsort(order, n, sizeof(PriceEvent *), allow_cmp);
	for (int i = 0; i < n; i++)
	{
		PriceEvent *e = order[i];
		cb_int128	need = i128_load(e->bq);
		cb_int128	covered = 0;

		e->take0 = st->ntakes;
		if (need <= 0)
			continue;
		while (b0 < st->nbk && (st->bk[b0].account < e->account
								|| (st->bk[b0].account == e->account && st->bk[b0].svc < e->svc)))
			b0++;
		for (int b = b0; need > 0 && b < st->nbk && same_allow_key(e, &st->bk[b]); b++)
		{
			PriceBucket *x = &st->bk[b];
			cb_int128	avail = i128_load(x->avail);
			TimestampTz at = allow_at(e);
			cb_int128	take;
			PriceTake  *t;

			if (avail <= 0 || at < x->from || at >= x->until)
				continue;
			take = need < avail ? need : avail;
			x->avail = i128_store(avail - take);
			need -= take;
			covered += take;
			if (st->ntakes == st->takecap)
			{
				st->takecap = Max(1024, st->takecap * 2);
				st->takes = st->takes ? repalloc_huge(st->takes, (Size) st->takecap * sizeof(PriceTake))
					: palloc_extended((Size) st->takecap * sizeof(PriceTake), MCXT_ALLOC_HUGE);
			}
			t = &st->takes[st->ntakes++];
			t->bucket_id = x->id;
			t->units = i128_store(take);
			e->ntake++;
			e->cov_scale = Max(e->cov_scale, short_scale(take));
		}
		e->covered = i128_store(covered);
	}
}

/* 2. cycle running totals */
static void
cycle_totals(PriceState *st, PriceEvent **order, int n)
{
	int			m = 0;

	for (int i = 0; i < n; i++)
		if (order[i]->cycle)
			order[m++] = order[i];
	qsort(order, m, sizeof(PriceEvent *), cycle_cmp);
	for (int i = 0; i < m;)
	{
		PriceEvent *first = order[i];
		CounterKey	k;
		CounterEntry *ce;
		cb_int128	used;
		int			j;

		memset(&k, 0, sizeof(k));
		k.account = first->account;
		k.pstart = first->pstart;
		k.rate_id = first->rate_id;
		ce = hash_search(st->counters, &k, HASH_FIND, NULL);
		used = ce ? i128_load(ce->used) : 0;
		for (j = i; j < m && order[j]->account == first->account && order[j]->pstart == first->pstart
			 && order[j]->rate_id == first->rate_id; j++)
		{
			PriceEvent *e = order[j];

			e->used_before = i128_store(used);
			used += i128_load(e->bq) - i128_load(e->covered);
		}
		i = j;
	}
}

PG_FUNCTION_INFO_V1(rate_batch_price);
Datum
rate_batch_price(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext pass;
	MemoryContext old;
	PriceState	st;
	PriceEvent **order;
	Oid			nsp;
	MemoryContext row;

	InitMaterializedSRF(fcinfo, 0);

	pass = AllocSetContextCreate(CurrentMemoryContext, "rate_batch_price", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(pass);
	memset(&st, 0, sizeof(st));
	nsp = get_func_namespace(fcinfo->flinfo->fn_oid);
	st.schema = quote_identifier(get_namespace_name(nsp));
	names_init(&st.svc, "rating services", pass);
	names_init(&st.tz, "rating zones", pass);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "rate_batch_price: SPI_connect failed");
	load_rates(&st, pass,
			   psprintf("SELECT r.rate_id, r.tariff FROM %s.plan_rate r "
						"WHERE r.rate_id IN (SELECT w.rate_id FROM pg_temp.convbill_work w "
						"                    WHERE w.status = 'billable')", st.schema));
	load_events(&st, pass);
	if (st.nev > 0)
	{
		load_buckets(&st, pass);
		load_counters(&st, pass);
	}
	SPI_finish();

	MemoryContextSwitchTo(pass);
	order = palloc_extended(Max(1, st.nev) * sizeof(PriceEvent *), MCXT_ALLOC_HUGE);
	for (int i = 0; i < st.nev; i++)
		order[i] = &st.ev[i];
	take_allowances(&st, order, st.nev);
	cycle_totals(&st, order, st.nev);

	/* 3. the price of each event, and its row */
	row = AllocSetContextCreate(pass, "rating row", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(row);
	for (int i = 0; i < st.nev; i++)
	{
		PriceEvent *e = &st.ev[i];
		cb_int128	rest = i128_load(e->bq) - i128_load(e->covered);
		cb_int128	amount;
		TariffError err;
		struct pg_tm *tm = local_tm(e->started, st.tzs[e->tz]);
		TariffWhen	when;
		Datum		values[5];
		bool		nulls[5] = {false, false, false, false, false};

		when.dow = tm->tm_wday;
		when.sec_of_day = tm->tm_hour * 3600 + tm->tm_min * 60 + tm->tm_sec;
		values[0] = Int64GetDatum(e->idx);
		values[1] = NumericGetDatum(qty_numeric(i128_load(e->covered), e->cov_scale));
		if (tariff_rate_billed(e->t, rest, when, i128_load(e->used_before), &amount, &err))
			values[2] = NumericGetDatum(scaled_to_numeric(amount, e->t->round_decimals));
		else if (err.kind == TARIFF_ERR_OVERFLOW)
			nulls[2] = true;	/* out of range: the event is rejected */
		else
			tariff_raise(&err);
		if (e->ntake == 0)
			nulls[3] = nulls[4] = true;
		else
		{
			Datum	   *ids = palloc(e->ntake * sizeof(Datum));
			Datum	   *units = palloc(e->ntake * sizeof(Datum));

			for (int k = 0; k < e->ntake; k++)
			{
				cb_int128	u = i128_load(st.takes[e->take0 + k].units);

				ids[k] = Int64GetDatum(st.takes[e->take0 + k].bucket_id);
				units[k] = NumericGetDatum(qty_numeric(u, short_scale(u)));
			}
			values[3] = PointerGetDatum(construct_array(ids, e->ntake, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
			values[4] = PointerGetDatum(construct_array(units, e->ntake, NUMERICOID, -1, false, TYPALIGN_INT));
		}
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		MemoryContextReset(row);
		if (i % 1024 == 1023)
			CHECK_FOR_INTERRUPTS();
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(pass);
	PG_RETURN_NULL();
}

/*
 * ---------------------------------------------------------------------------
 * The judging pass: every claimed event's fate.
 *
 * rate_batch_judge() -> SETOF (idx bigint, currency text, timezone text,
 *     rate_id bigint, bq numeric, cycle boolean, period_start timestamptz,
 *     period_end timestamptz, status text, reject_reason text)
 *
 * over pg_temp.convbill_claim (the claimed events, their zone resolved), one
 * row per event:
 *   - the reject reason, first that applies: unknown_account, account_closed,
 *     missing_event_key, invalid_time, invalid_quantity, unknown_service,
 *     no_tariff, currency_mismatch;
 *   - the rate: among the account's subscriptions' plan rates of the service
 *     for the event's zone or any zone, valid at started_at (subscription and
 *     rate), the most specific zone, then the latest valid_from, then the
 *     newest subscription;
 *   - bq = billed_quantity(tariff, quantity), cycle = the tariff is
 *     cycle-scoped;
 *   - a duplicate: an acceptable event already charged, or a later copy of an
 *     acceptable one in the batch;
 *   - the open period of a billable event: the account's period containing
 *     started_at (its zone and billing day), or, when a closed period overlaps
 *     it, open_period() (late usage goes to the next open period).
 * The account, service and charge lookups are one SQL query (joins and an
 * index probe per event); the rest is this pass.
 * ---------------------------------------------------------------------------
 */

typedef struct JudgeEvent
{
	int64		idx;
	int64		account;
	int32		svc;			/* interned service; -1: NULL */
	int32		zone;			/* interned zone; -1: none */
	int32		tz;				/* account's zone; -1: no account */
	int32		cur;			/* account's currency; -1: no account */
	int32		billing_day;
	int32		key_off;		/* "source\0external_id\0" in the key arena; -1: missing */
	uint32		keyhash;
	bool		acc_found;
	bool		closed;
	bool		svc_found;
	bool		qty_ok;
	bool		time_ok;
	bool		already;
	bool		duplicate;
	TimestampTz started;
	const char *reason;			/* reject reason; NULL: acceptable */
	int64		rate_id;		/* 0: none */
	const Tariff *t;
	cb_i128		q;				/* the quantity, when qty_ok */
	TimestampTz pstart;			/* the open period (billable events) */
	TimestampTz pend;
} JudgeEvent;

typedef struct Candidate
{
	int64		account;
	TimestampTz sub_start;
	TimestampTz sub_end;
	int64		rate_id;
	int32		svc;
	int32		zone;			/* -1: any zone */
	TimestampTz valid_from;
	TimestampTz valid_until;
	int32		plan_cur;
} Candidate;

typedef struct AccountRange
{
	int64		account;
	int32		first;
	int32		count;
} AccountRange;

typedef struct PeriodKey
{
	int64		account;
	TimestampTz start;
} PeriodKey;

typedef struct PeriodEntry
{
	PeriodKey	key;
	TimestampTz end;
	TimestampTz open_start;
	TimestampTz open_end;
} PeriodEntry;

typedef struct JudgeState
{
	PriceState	p;				/* names, zones, rates */
	Names		zone;			/* destination zones */
	Names		cur;
	JudgeEvent *ev;
	int			nev;
	int			evcap;
	StringInfoData keys;		/* event keys arena */
	Candidate  *cand;
	int			ncand;
	HTAB	   *ranges;			/* account -> its candidates */
} JudgeState;

static const char *
text_or_null(uint64 r, int c, bool *isnull)
{
	Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c, isnull);

	return *isnull ? NULL : TextDatumGetCString(d);
}

static bool
bool_col(uint64 r, int c)
{
	bool		isnull;
	Datum		d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, c, &isnull);

	return !isnull && DatumGetBool(d);
}

/* The claimed events with their account, service and charge lookups. */
static void
judge_load_events(JudgeState *js, MemoryContext keep)
{
	PriceState *st = &js->p;
	char	   *sql;
	SPIPlanPtr	plan;
	Portal		portal;
	MemoryContext tmp;

	sql = psprintf("SELECT c.idx, c.account_id, c.source, c.external_id, c.service, c.started_at, c.zone, c.quantity,"
				   "       a.account_id IS NOT NULL, a.currency, a.timezone, a.billing_day, a.status = 'closed',"
				   "       s.code IS NOT NULL,"
				   "       CASE WHEN c.quantity IS NULL OR c.quantity = 'NaN' OR c.quantity IN ('Infinity', '-Infinity') THEN false"
				   "            ELSE c.quantity >= 0 AND c.quantity < 1e20 AND c.quantity = round(c.quantity, 9) END,"
				   "       coalesce(c.started_at >= '1900-01-01' AND c.started_at < '3000-01-01', false),"
				   /* an index probe per event, never a scan of the charge history */
				   "       EXISTS (SELECT 1 FROM %s.charge x WHERE x.account_id = c.account_id"
				   "                  AND x.source = c.source AND x.external_id = c.external_id) "
				   "FROM pg_temp.convbill_claim c "
				   "LEFT JOIN %s.account a ON a.account_id = c.account_id "
				   "LEFT JOIN %s.service s ON s.code = c.service",
				   st->schema, st->schema, st->schema);
	plan = SPI_prepare(sql, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "rate_batch_judge: SPI_prepare failed");
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	tmp = AllocSetContextCreate(CurrentMemoryContext, "rating fetch", ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			MemoryContext old;
			JudgeEvent *e;
			bool		isnull,
						n2,
						n3;
			const char *s1,
					   *s2,
					   *s;
			Datum		d;

			if (js->nev == js->evcap)
			{
				js->evcap = Max(1024, js->evcap * 2);
				js->ev = js->ev ? repalloc_huge(js->ev, (Size) js->evcap * sizeof(JudgeEvent))
					: MemoryContextAllocHuge(keep, (Size) js->evcap * sizeof(JudgeEvent));
			}
			e = &js->ev[js->nev++];
			memset(e, 0, sizeof(JudgeEvent));
			old = MemoryContextSwitchTo(tmp);
			e->idx = DatumGetInt64(val(r, 1));
			d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 2, &isnull);
			e->account = isnull ? 0 : DatumGetInt64(d);
			s1 = text_or_null(r, 3, &n2);
			s2 = text_or_null(r, 4, &n3);
			e->key_off = -1;
			if (!n2 && !n3)
			{
				MemoryContextSwitchTo(keep);
				e->key_off = js->keys.len;
				appendBinaryStringInfo(&js->keys, s1, strlen(s1) + 1);
				appendBinaryStringInfo(&js->keys, s2, strlen(s2) + 1);
				e->keyhash = hash_bytes((const unsigned char *) js->keys.data + e->key_off,
										js->keys.len - e->key_off);
				MemoryContextSwitchTo(tmp);
			}
			s = text_or_null(r, 5, &isnull);
			e->svc = isnull ? -1 : intern(&st->svc, s, NULL);
			d = SPI_getbinval(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 6, &isnull);
			e->started = isnull ? 0 : DatumGetTimestampTz(d);
			s = text_or_null(r, 7, &isnull);
			e->zone = isnull ? -1 : intern(&js->zone, s, NULL);
			e->acc_found = bool_col(r, 9);
			e->tz = e->cur = -1;
			if (e->acc_found)
			{
				e->cur = intern(&js->cur, text_or_null(r, 10, &isnull), NULL);
				e->tz = intern_zone(st, text_or_null(r, 11, &isnull), keep);
				e->billing_day = DatumGetInt32(val(r, 12));
				e->closed = bool_col(r, 13);
			}
			e->svc_found = bool_col(r, 14);
			e->qty_ok = bool_col(r, 15);
			e->time_ok = bool_col(r, 16);
			e->already = bool_col(r, 17);
			if (e->qty_ok)
				e->q = i128_store(numeric_to_scaled(DatumGetNumeric(val(r, 8)), QTY_DECIMALS, "quantity"));
			MemoryContextSwitchTo(old);
		}
		SPI_freetuptable(SPI_tuptable);
		MemoryContextReset(tmp);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(tmp);
}

/* The plan rates of the batch's accounts' subscriptions, grouped by account. */
static void
judge_load_candidates(JudgeState *js, MemoryContext keep)
{
	PriceState *st = &js->p;
	HASHCTL		ctl;
	bool		isnull;

	run(psprintf("SELECT s.account_id, s.started_at, coalesce(s.ended_at, 'infinity'), r.rate_id, r.service, r.zone,"
				 "       r.valid_from, r.valid_until, p.currency "
				 "FROM %s.subscription s "
				 "JOIN %s.plan p ON p.code = s.plan_code "
				 "JOIN %s.plan_rate r ON r.plan_code = s.plan_code "
				 "WHERE s.account_id IN (SELECT c.account_id FROM pg_temp.convbill_claim c) "
				 "ORDER BY s.account_id",
				 st->schema, st->schema, st->schema));
	ctl.keysize = sizeof(int64);
	ctl.entrysize = sizeof(AccountRange);
	ctl.hcxt = keep;
	js->ranges = hash_create("rating accounts", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	js->cand = MemoryContextAllocHuge(keep, Max(1, SPI_processed) * sizeof(Candidate));
	js->ncand = 0;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		Candidate  *c = &js->cand[js->ncand];
		AccountRange *ar;
		bool		found;
		const char *z;

		c->account = DatumGetInt64(val(r, 1));
		c->sub_start = DatumGetTimestampTz(val(r, 2));
		c->sub_end = DatumGetTimestampTz(val(r, 3));
		c->rate_id = DatumGetInt64(val(r, 4));
		c->svc = intern(&st->svc, TextDatumGetCString(val(r, 5)), NULL);
		z = text_or_null(r, 6, &isnull);
		c->zone = isnull ? -1 : intern(&js->zone, z, NULL);
		c->valid_from = DatumGetTimestampTz(val(r, 7));
		c->valid_until = DatumGetTimestampTz(val(r, 8));
		c->plan_cur = intern(&js->cur, TextDatumGetCString(val(r, 9)), NULL);
		ar = hash_search(js->ranges, &c->account, HASH_ENTER, &found);
		if (!found)
		{
			ar->first = js->ncand;
			ar->count = 0;
		}
		ar->count++;
		js->ncand++;
	}
	load_rates(st, keep,
			   psprintf("SELECT r.rate_id, r.tariff FROM %s.plan_rate r "
						"WHERE r.plan_code IN (SELECT s.plan_code FROM %s.subscription s "
						"                      WHERE s.account_id IN (SELECT c.account_id FROM pg_temp.convbill_claim c))",
						st->schema, st->schema));
}

/* The rate of an event: the best candidate valid at its time, or NULL. */
static const Candidate *
resolve(JudgeState *js, const JudgeEvent *e)
{
	AccountRange *ar = hash_search(js->ranges, &e->account, HASH_FIND, NULL);
	const Candidate *best = NULL;

	if (ar == NULL)
		return NULL;
	for (int i = ar->first; i < ar->first + ar->count; i++)
	{
		const Candidate *c = &js->cand[i];
		TimestampTz vf = Max(c->sub_start, c->valid_from);
		TimestampTz vu = Min(c->sub_end, c->valid_until);

		if (c->svc != e->svc || (c->zone != -1 && c->zone != e->zone))
			continue;
		if (e->started < vf || e->started >= vu)
			continue;
		if (best == NULL)
			best = c;
		else if ((c->zone != -1) != (best->zone != -1))
			best = c->zone != -1 ? c : best;
		else if (c->valid_from != best->valid_from)
			best = c->valid_from > best->valid_from ? c : best;
		else if (c->sub_start != best->sub_start)
			best = c->sub_start > best->sub_start ? c : best;
		else if (c->rate_id < best->rate_id)
			best = c;
	}
	return best;
}

static JudgeState *dup_js;		/* for dup_cmp (qsort has no argument) */

/* (account, key, idx): copies of one event next to each other, first first */
static int
dup_cmp(const void *pa, const void *pb)
{
	const JudgeEvent *a = *(JudgeEvent *const *) pa;
	const JudgeEvent *b = *(JudgeEvent *const *) pb;
	int			c;

	if ((c = cmp_i64(a->account, b->account)) != 0 || (c = cmp_i64(a->keyhash, b->keyhash)) != 0)
		return c;
	if (a->key_off != b->key_off)
	{
		const char *ka = dup_js->keys.data + a->key_off;
		const char *kb = dup_js->keys.data + b->key_off;

		if ((c = strcmp(ka, kb)) != 0)
			return c;
		if ((c = strcmp(ka + strlen(ka) + 1, kb + strlen(kb) + 1)) != 0)
			return c;
	}
	return cmp_i64(a->idx, b->idx);
}

static bool
same_key(JudgeState *js, const JudgeEvent *a, const JudgeEvent *b)
{
	const char *ka,
			   *kb;

	if (a->account != b->account || a->keyhash != b->keyhash)
		return false;
	ka = js->keys.data + a->key_off;
	kb = js->keys.data + b->key_off;
	return strcmp(ka, kb) == 0 && strcmp(ka + strlen(ka) + 1, kb + strlen(kb) + 1) == 0;
}

/* The open period of every billable (account, own period): closed ones pushed on by open_period(). */
static void
judge_open_periods(JudgeState *js, MemoryContext keep)
{
	PriceState *st = &js->p;
	HASHCTL		ctl;
	HTAB	   *periods;
	HASH_SEQ_STATUS seq;
	PeriodEntry *pe;
	long		n;
	Datum	   *a,
			   *s,
			   *e;
	int			i = 0;
	Oid			argtypes[3] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		args[3];

	ctl.keysize = sizeof(PeriodKey);
	ctl.entrysize = sizeof(PeriodEntry);
	ctl.hcxt = keep;
	periods = hash_create("rating periods", 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	for (int k = 0; k < js->nev; k++)
	{
		JudgeEvent *ev = &js->ev[k];
		PeriodKey	key;
		bool		found;

		if (ev->reason != NULL || ev->duplicate)
			continue;
		memset(&key, 0, sizeof(key));
		key.account = ev->account;
		billing_period_bounds(ev->started, st->tzs[ev->tz], ev->billing_day, &key.start, &ev->pend);
		pe = hash_search(periods, &key, HASH_ENTER, &found);
		if (!found)
		{
			pe->end = ev->pend;
			pe->open_start = key.start;
			pe->open_end = ev->pend;
		}
		ev->pstart = key.start;
	}
	n = hash_get_num_entries(periods);
	if (n == 0)
		return;
	a = palloc(n * sizeof(Datum));
	s = palloc(n * sizeof(Datum));
	e = palloc(n * sizeof(Datum));
	hash_seq_init(&seq, periods);
	while ((pe = hash_seq_search(&seq)) != NULL)
	{
		a[i] = Int64GetDatum(pe->key.account);
		s[i] = TimestampTzGetDatum(pe->key.start);
		e[i] = TimestampTzGetDatum(pe->end);
		i++;
	}
	args[0] = PointerGetDatum(construct_array(a, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[1] = PointerGetDatum(construct_array(s, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	args[2] = PointerGetDatum(construct_array(e, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
	/* checked once per pair; open_period() only where a closed period overlaps */
	if (SPI_execute_with_args(psprintf("SELECT x.a, x.s, lower(x.p), upper(x.p) "
									   "FROM (SELECT k.a, k.s, %s.open_period(k.a, k.s) AS p "
									   "      FROM unnest($1, $2, $3) AS k(a, s, e) "
									   "      WHERE EXISTS (SELECT 1 FROM %s.closed_period cp "
									   "                    WHERE cp.account_id = k.a AND cp.period_start < k.e"
									   "                      AND cp.period_end > k.s)) x",
									   st->schema, st->schema),
							  3, argtypes, args, NULL, false, 0) != SPI_OK_SELECT)
		elog(ERROR, "rate_batch_judge: the open periods query failed");
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		PeriodKey	key;

		memset(&key, 0, sizeof(key));
		key.account = DatumGetInt64(val(r, 1));
		key.start = DatumGetTimestampTz(val(r, 2));
		pe = hash_search(periods, &key, HASH_FIND, NULL);
		if (pe == NULL)
			elog(ERROR, "rate_batch_judge: unexpected period");
		pe->open_start = DatumGetTimestampTz(val(r, 3));
		pe->open_end = DatumGetTimestampTz(val(r, 4));
	}
	for (int k = 0; k < js->nev; k++)
	{
		JudgeEvent *ev = &js->ev[k];
		PeriodKey	key;

		if (ev->reason != NULL || ev->duplicate)
			continue;
		memset(&key, 0, sizeof(key));
		key.account = ev->account;
		key.start = ev->pstart;
		pe = hash_search(periods, &key, HASH_FIND, NULL);
		ev->pstart = pe->open_start;
		ev->pend = pe->open_end;
	}
}

PG_FUNCTION_INFO_V1(rate_batch_judge);
Datum
rate_batch_judge(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext pass;
	MemoryContext old;
	JudgeState	js;
	JudgeEvent **order;
	int			m = 0;
	MemoryContext row;

	InitMaterializedSRF(fcinfo, 0);

	pass = AllocSetContextCreate(CurrentMemoryContext, "rate_batch_judge", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(pass);
	memset(&js, 0, sizeof(js));
	js.p.schema = quote_identifier(get_namespace_name(get_func_namespace(fcinfo->flinfo->fn_oid)));
	names_init(&js.p.svc, "rating services", pass);
	names_init(&js.p.tz, "rating zones", pass);
	names_init(&js.zone, "rating destination zones", pass);
	names_init(&js.cur, "rating currencies", pass);
	initStringInfo(&js.keys);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "rate_batch_judge: SPI_connect failed");
	judge_load_events(&js, pass);
	judge_load_candidates(&js, pass);

	/* rejects, rates, billed quantities */
	MemoryContextSwitchTo(pass);
	for (int i = 0; i < js.nev; i++)
	{
		JudgeEvent *e = &js.ev[i];
		const Candidate *c = NULL;

		if (e->acc_found && e->svc_found && e->time_ok)
			c = resolve(&js, e);
		if (c != NULL)
		{
			RateEntry  *re = hash_search(js.p.rates, &c->rate_id, HASH_FIND, NULL);

			if (re == NULL)
				elog(ERROR, "rate_batch_judge: rate %lld not found", (long long) c->rate_id);
			e->rate_id = c->rate_id;
			e->t = re->t;
		}
		if (!e->acc_found)
			e->reason = "unknown_account";
		else if (e->closed)
			e->reason = "account_closed";
		else if (e->key_off < 0)
			e->reason = "missing_event_key";
		else if (!e->time_ok)
			e->reason = "invalid_time";
		else if (!e->qty_ok)
			e->reason = "invalid_quantity";
		else if (!e->svc_found)
			e->reason = "unknown_service";
		else if (c == NULL)
			e->reason = "no_tariff";
		else if (strcmp(e->t->currency[0] != '\0' ? e->t->currency : js.cur.name[c->plan_cur],
						js.cur.name[e->cur]) != 0)
			e->reason = "currency_mismatch";
	}

	/* duplicates among the acceptable events */
	order = palloc_extended(Max(1, js.nev) * sizeof(JudgeEvent *), MCXT_ALLOC_HUGE);
	for (int i = 0; i < js.nev; i++)
		if (js.ev[i].reason == NULL)
			order[m++] = &js.ev[i];
	dup_js = &js;
	qsort(order, m, sizeof(JudgeEvent *), dup_cmp);
	for (int i = 0; i < m; i++)
		order[i]->duplicate = order[i]->already || (i > 0 && same_key(&js, order[i - 1], order[i]));

	judge_open_periods(&js, pass);
	SPI_finish();

	row = AllocSetContextCreate(pass, "rating row", ALLOCSET_SMALL_SIZES);
	MemoryContextSwitchTo(row);
	for (int i = 0; i < js.nev; i++)
	{
		JudgeEvent *e = &js.ev[i];
		Datum		values[10];
		bool		nulls[10];

		memset(nulls, true, sizeof(nulls));
		values[0] = Int64GetDatum(e->idx);
		nulls[0] = false;
		if (e->acc_found)
		{
			values[1] = CStringGetTextDatum(js.cur.name[e->cur]);
			values[2] = CStringGetTextDatum(js.p.tz.name[e->tz]);
			nulls[1] = nulls[2] = false;
		}
		if (e->t != NULL)
		{
			values[3] = Int64GetDatum(e->rate_id);
			values[5] = BoolGetDatum(e->t->scope == SCOPE_CYCLE);
			nulls[3] = nulls[5] = false;
			if (e->qty_ok)
			{
				cb_int128	bq;
				TariffError err;

				if (!tariff_billed_quantity(e->t, i128_load(e->q), &bq, &err))
					tariff_raise(&err);
				values[4] = NumericGetDatum(qty_numeric(bq, short_scale(bq)));
				nulls[4] = false;
			}
		}
		if (e->reason != NULL)
		{
			values[8] = CStringGetTextDatum("rejected");
			values[9] = CStringGetTextDatum(e->reason);
			nulls[9] = false;
		}
		else if (e->duplicate)
			values[8] = CStringGetTextDatum("duplicate");
		else
		{
			values[6] = TimestampTzGetDatum(e->pstart);
			values[7] = TimestampTzGetDatum(e->pend);
			nulls[6] = nulls[7] = false;
			values[8] = CStringGetTextDatum("billable");
		}
		nulls[8] = false;
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
		MemoryContextReset(row);
		if (i % 1024 == 1023)
			CHECK_FOR_INTERRUPTS();
	}
	MemoryContextSwitchTo(old);
	MemoryContextDelete(pass);
	PG_RETURN_NULL();
}
