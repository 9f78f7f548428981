/*
 * rating_batch.c — bulk rating's pass over a batch of claimed events, in C.
 *
 * rate_events() (sql/ext/41_rate_pending.sql) claims pending events into the
 * session's temp table convbill_claim (idx 1..n, the zone of each call
 * resolved) and locks their accounts; rate_batch(n) then decides every
 * event and returns it with its decision, one row per event, for one SQL
 * statement to write the charges, the events, the buckets, the ledger and
 * the counters:
 *
 *   1. the reject reason, the first that applies: unknown_account,
 *      account_closed, missing_event_key, invalid_event_key (source or
 *      external_id longer than EVENT_KEY_MAX characters), invalid_time,
 *      invalid_quantity, unknown_service, no_tariff, currency_mismatch;
 *   2. the rate: among the account's subscriptions' plan rates of the
 *      service for the event's zone or any zone, valid at started_at (both
 *      the subscription and the rate), the most specific zone, then the
 *      latest valid_from, then the newest subscription; bq =
 *      billed_quantity(tariff, quantity); cycle = the tariff is cycle-scoped;
 *   3. duplicates: an acceptable event already charged, or a later copy of an
 *      acceptable one in the batch; an event under online charging's sources
 *      ('session', 'event') is a duplicate of that charge or is rejected
 *      (reserved_source);
 *   4. the open period of a billable event: the account's period containing
 *      started_at (its zone and billing day), or, when a closed period
 *      overlaps it, open_period() (late usage goes to the next open one);
 *      the plan allowances of those periods are granted
 *      (ensure_plan_allowances) before they are used;
 *   5-7. one walk (rate_walk) over the billable events, per (account,
 *      service) in (at, started_at, idx) order, at = greatest(started_at,
 *      period_start):
 *   5. allowances first: take units from the buckets valid at `at` in
 *      (priority, valid_until, bucket_id) order; what a bucket offers is its
 *      balance less the units open sessions hold, each session's set aside
 *      from the buckets valid now and still when its grant lapses, in that
 *      order (load_buckets);
 *   6. cycle-scoped tariffs: per (account, period, rate), events in
 *      (started_at, idx) order, used_before = the usage_counter total plus
 *      the rest (bq - covered) of the batch's charged events before it;
 *   7. the price: rate_billed(tariff, bq - covered, started_at in the
 *      account's zone, used_before) as rate_billed_or_null() gives it, NULL
 *      when out of range (SQL then rejects the event: out_of_range); such an
 *      event gives its allowance units back and adds nothing to used_before.
 *
 * The lookups are SQL run with SPI: the account, service and charge of every
 * event in one query (joins and an index probe per event), the candidate
 * rates of the batch's accounts, the closed periods, the buckets and the
 * counters of the batch's keys.  Numbers are exact scaled integers
 * (numeric_scaled.h); the numeric forms returned are those the SQL functions
 * give (billed_quantity(), sum() of the taken units, the tariff's decimals).
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "lib/stringinfo.h"
#include "mb/pg_wchar.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
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

/* One claimed event (palloc'd arrays: 128-bit values kept as cb_i128). */
typedef struct RateEvent
{
	int64		idx;
	int64		account;
	int32		svc;			/* interned service; -1: NULL */
	int32		zone;			/* interned destination zone; -1: none */
	int32		tz;				/* account's time zone; -1: no account */
	int32		cur;			/* account's currency; -1: no account */
	int32		billing_day;
	const char *key;			/* "source\0external_id\0"; NULL: either is missing */
	uint32		keyhash;
	bool		seen;
	bool		acc_found;
	bool		closed;
	bool		svc_found;
	bool		qty_ok;
	bool		time_ok;
	bool		key_long;		/* source or external_id over EVENT_KEY_MAX */
	bool		online_source;	/* source 'session' or 'event': online charging's */
	bool		already;
	bool		duplicate;
	bool		has_bq;
	bool		has_amount;
	TimestampTz started;
	const char *reason;			/* reject reason; NULL: acceptable */
	int64		rate_id;		/* 0: none */
	const Tariff *t;
	TimestampTz pstart;			/* the open period (billable events) */
	TimestampTz pend;
	cb_i128		q;				/* the quantity, when qty_ok */
	cb_i128		bq;
	cb_i128		covered;
	cb_i128		used_before;
	cb_i128		amount;
	int32		take0;			/* its first take in takes[] */
	int32		ntake;
	int32		cov_scale;		/* numeric scale of covered (as sum() gives it) */
} RateEvent;

typedef struct Bucket
{
	int64		account;
	int32		svc;
	int32		priority;
	int64		id;
	TimestampTz from;
	TimestampTz until;
	cb_i128		avail;
} Bucket;

typedef struct Take
{
	int64		bucket_id;
	cb_i128		units;
} Take;

/* what the charged events took from one bucket */
typedef struct DebitAgg
{
	int64		account;
	int64		bucket_id;
	int32		svc;
	int32		events;
	int32		scale;			/* numeric scale of taken (as sum() gives it) */
	int32		pad;
	cb_i128		taken;
} DebitAgg;

/* what the charged events add to one cycle counter */
typedef struct CountAgg
{
	int64		account;
	TimestampTz pstart;
	int64		rate_id;
	int32		scale;
	int32		pad;
	cb_i128		used;
} CountAgg;

/* an account's debits and counters, returned on one of its rows (rep_idx) */
typedef struct AccountOut
{
	int64		account;
	int64		rep_idx;
	int32		d0;
	int32		nd;
	int32		c0;
	int32		nc;
} AccountOut;

/* interned strings (services, zones, currencies): name -> small int */
/*
 * An event's source and external_id: at most 255 characters each (as a
 * session id), so that (account_id, source, external_id) always fits a
 * B-tree entry of charge_event_key (2704 bytes: 2 x 255 x 4 bytes + 8).
 */
#define EVENT_KEY_MAX 255
#define NAME_KEY_SIZE 256		/* bytes: 63 characters of up to 4 bytes fit */

typedef struct NameEntry
{
	char		name[NAME_KEY_SIZE];
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

typedef struct CounterKey
{
	int64		account;
	TimestampTz pstart;
	int64		rate_id;
} CounterKey;

/* an event's (account, service, zone) for rate resolution */
typedef struct RateKey
{
	int64		account;
	int32		svc;
	int32		zone;			/* -1: none */
} RateKey;

typedef struct CounterEntry
{
	CounterKey	key;
	cb_i128		used;
} CounterEntry;

typedef struct Batch
{
	MemoryContext keep;			/* the pass's data */
	const char *schema;			/* quoted extension schema */
	Names		svc;
	Names		zone;
	Names		tz;
	Names		cur;
	pg_tz	  **tzs;			/* tz id -> the zone */
	int32		tzcap;
	RateEvent  *ev;				/* ev[idx - 1] */
	int64		nev;
	MemoryContext keys;			/* the events' keys */
	Candidate  *cand;
	int			ncand;
	HTAB	   *ranges;			/* account -> its candidates */
	HTAB	   *rates;			/* rate_id -> tariff */
	HTAB	   *counters;
	Bucket	   *bk;
	int			nbk;
	Take	   *takes;
	int			ntakes;
	int			takecap;
	DebitAgg   *debits;			/* sorted by (account, bucket) */
	int			ndebits;
	CountAgg   *counts;			/* sorted by (account, period, rate) */
	int			ncounts;
	HTAB	   *outs;			/* account -> AccountOut */
} Batch;

static void
names_init(Names *n, const char *what, MemoryContext keep)
{
	HASHCTL		ctl;

	ctl.keysize = NAME_KEY_SIZE;
	ctl.entrysize = sizeof(NameEntry);
	ctl.hcxt = keep;
	n->h = hash_create(what, 64, &ctl, HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
	n->n = 0;
	n->cap = 16;
	n->name = MemoryContextAlloc(keep, n->cap * sizeof(char *));
}

/*
 * The id of a name (a service, a zone, a currency), interned on first sight;
 * -2 for a name too long to be one of the catalog's (it matches nothing).
 */
static int32
intern(Names *n, const char *name, bool *is_new)
{
	NameEntry  *e;
	bool		found;

	if (is_new)
		*is_new = false;
	if (strlen(name) >= NAME_KEY_SIZE)
		return -2;
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

/* The id of a name that must have one (an account's currency or zone). */
static int32
intern_known(Names *n, const char *name, bool *is_new)
{
	int32		id = intern(n, name, is_new);

	if (id < 0)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("rating: name \"%s...\" is too long",
						pnstrdup(name, pg_mbcliplen(name, strlen(name), 40)))));
	return id;
}

/* A time zone's id; its pg_tz is looked up once per pass. */
static int32
intern_zone(Batch *b, const char *name)
{
	bool		is_new;
	int32		id = intern_known(&b->tz, name, &is_new);

	if (is_new)
	{
		if (id >= b->tzcap)
		{
			int			cap = Max(16, b->tzcap * 2);

			b->tzs = b->tzs ? repalloc(b->tzs, cap * sizeof(pg_tz *))
				: MemoryContextAlloc(b->keep, cap * sizeof(pg_tz *));
			b->tzcap = cap;
		}
		b->tzs[id] = zone_lookup(name);
	}
	return id;
}

/* A hash table of fixed-size (binary) keys in cxt. */
static HTAB *
blob_table(const char *what, Size keysize, Size entrysize, MemoryContext cxt)
{
	HASHCTL		ctl;

	ctl.keysize = keysize;
	ctl.entrysize = entrysize;
	ctl.hcxt = cxt;
	return hash_create(what, 1024, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
}

/*
 * The row of the last SPI result that col() read last, deformed once: a
 * row with text columns is walked from its start for each column
 * SPI_getbinval() reads past them (the event rows have seventeen).  Every
 * new SPI result forgets it (new_result()), so a row never outlives its
 * result here.
 */
#define ROW_MAX_COLS 32
static SPITupleTable *row_table;
static uint64 row_no;
static Datum row_values[ROW_MAX_COLS];
static bool row_nulls[ROW_MAX_COLS];

static void
new_result(void)
{
	row_table = NULL;
}

/* Column c (from 1) of row r of the last SPI result. */
static Datum
col(uint64 r, int c, bool *isnull)
{
	if (row_table != SPI_tuptable || row_no != r)
	{
		if (SPI_tuptable->tupdesc->natts > ROW_MAX_COLS)
			elog(ERROR, "rate_batch: a query returned more than %d columns", ROW_MAX_COLS);
		heap_deform_tuple(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, row_values, row_nulls);
		row_table = SPI_tuptable;
		row_no = r;
	}
	if (c < 1 || c > SPI_tuptable->tupdesc->natts)
		elog(ERROR, "rate_batch: no column %d", c);
	*isnull = row_nulls[c - 1];
	return row_values[c - 1];
}

/* Column c of row r of the last SPI result; NULL is an internal error. */
static Datum
val(uint64 r, int c)
{
	bool		isnull;
	Datum		d = col(r, c, &isnull);

	if (isnull)
		elog(ERROR, "rate_batch: unexpected NULL in column %d", c);
	return d;
}

static const char *
text_or_null(uint64 r, int c, bool *isnull)
{
	Datum		d = col(r, c, isnull);

	return *isnull ? NULL : TextDatumGetCString(d);
}

static bool
bool_col(uint64 r, int c)
{
	bool		isnull;
	Datum		d = col(r, c, &isnull);

	return !isnull && DatumGetBool(d);
}

/*
 * Run a query.  read_only: in the snapshot of the statement that called
 * rate_batch(), like the event cursor (the catalog and the closed periods
 * as of then, all in one snapshot); otherwise in a new one (the buckets and
 * counters after the plan allowances were granted; the account locks keep
 * them from changing under the pass).
 */
static void
run(const char *sql, int nargs, Oid *types, Datum *args, bool read_only)
{
	new_result();
	if (SPI_execute_with_args(sql, nargs, types, args, NULL, read_only, 0) != SPI_OK_SELECT)
		elog(ERROR, "rate_batch: query failed: %s", sql);
}

static Datum
int8_array(Datum *v, int n)
{
	return PointerGetDatum(construct_array(v, n, INT8OID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

static Datum
timestamptz_array(Datum *v, int n)
{
	return PointerGetDatum(construct_array(v, n, TIMESTAMPTZOID, 8, FLOAT8PASSBYVAL, TYPALIGN_DOUBLE));
}

static int
cmp_i64(int64 a, int64 b)
{
	return (a > b) - (a < b);
}

/* the scale of v's shortest form (v at 10^-QTY_DECIMALS) */
static int
short_scale(cb_int128 v)
{
	return scaled_trimmed_scale(v, QTY_DECIMALS);
}

static Numeric
qty_numeric(cb_int128 v, int scale)
{
	return scaled_to_numeric(v / dec_pow10(QTY_DECIMALS - scale), scale);
}

static bool
billable(const RateEvent *e)
{
	return e->reason == NULL && !e->duplicate;
}

/*
 * 0. The claimed events with their account, service and charge lookups,
 * each at ev[idx - 1].
 */
static void
load_events(Batch *b)
{
	char	   *sql;
	SPIPlanPtr	plan;
	Portal		portal;
	MemoryContext tmp;

	sql = psprintf("SELECT c.idx, c.account_id, c.source, c.external_id, c.service, c.started_at, c.zone,"
				   "       c.quantity, a.account_id IS NOT NULL, a.currency, a.timezone, a.billing_day,"
				   "       (a.status = 'closed' AND coalesce(a.closed_at <= c.started_at, true))"
				   "        OR coalesce(pc.closed_at <= c.started_at, false),"
				   "       s.code IS NOT NULL,"
				   "       CASE WHEN c.quantity IS NULL OR c.quantity = 'NaN' OR c.quantity IN ('Infinity', '-Infinity')"
				   "            THEN false"
				   "            ELSE c.quantity >= 0 AND c.quantity < 1e20 AND c.quantity = round(c.quantity, 9) END,"
				   "       coalesce(c.started_at >= '1900-01-01' AND c.started_at < '3000-01-01', false),"
				   "       charged.found IS NOT NULL "
				   "FROM pg_temp.convbill_claim c "
				   "LEFT JOIN %s.account a ON a.account_id = c.account_id "
				   "LEFT JOIN %s.service s ON s.code = c.service "
	/*
	 * the closing of the payer of an account billed to its parent: its
	 * events from then on are refused too, as online requests are (the
	 * lookup is skipped for the usual account, which pays for itself)
	 */
				   "LEFT JOIN LATERAL (SELECT py.closed_at FROM %s.account py"
				   "                   WHERE a.bill_to_parent AND py.account_id = %s.payer_of(a.account_id)"
				   "                     AND py.status = 'closed') pc ON true "
	/*
	 * an index probe per event, never a scan of the charge history (an
	 * EXISTS here may become a hashed subplan: every charge ever, read and
	 * hashed for each batch)
	 */
				   "LEFT JOIN LATERAL (SELECT 1 AS found FROM %s.charge x"
				   "                   WHERE x.account_id = c.account_id AND x.source = c.source"
				   "                     AND x.external_id = c.external_id LIMIT 1) charged ON true",
				   b->schema, b->schema, b->schema, b->schema, b->schema);
	plan = SPI_prepare(sql, 0, NULL);
	if (plan == NULL)
		elog(ERROR, "rate_batch: SPI_prepare failed");
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	tmp = AllocSetContextCreate(CurrentMemoryContext, "rating fetch", ALLOCSET_DEFAULT_SIZES);
	for (;;)
	{
		new_result();
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			MemoryContext old = MemoryContextSwitchTo(tmp);
			int64		idx = DatumGetInt64(val(r, 1));
			RateEvent  *e;
			bool		isnull,
						n3,
						n4;
			const char *s3,
					   *s4,
					   *s;
			Datum		d;

			if (idx < 1 || idx > b->nev || b->ev[idx - 1].seen)
				elog(ERROR, "rate_batch: the claimed events must be numbered 1 to %lld once each",
					 (long long) b->nev);
			e = &b->ev[idx - 1];
			e->seen = true;
			e->idx = idx;
			d = col(r, 2, &isnull);
			e->account = isnull ? 0 : DatumGetInt64(d);
			s3 = text_or_null(r, 3, &n3);
			s4 = text_or_null(r, 4, &n4);
			/*
			 * a key longer than EVENT_KEY_MAX characters is rejected
			 * (invalid_event_key): charge_event_key could not hold it, and
			 * one such event would fail every batch that claims it
			 */
			if (!n3 && !n4 &&
				((strlen(s3) > EVENT_KEY_MAX && pg_mbstrlen(s3) > EVENT_KEY_MAX) ||
				 (strlen(s4) > EVENT_KEY_MAX && pg_mbstrlen(s4) > EVENT_KEY_MAX)))
				e->key_long = true;
			else if (!n3 && !n4)
			{
				size_t		l3 = strlen(s3) + 1;
				size_t		l4 = strlen(s4) + 1;
				char	   *k = MemoryContextAllocHuge(b->keys, l3 + l4);

				e->online_source = strcmp(s3, "session") == 0 || strcmp(s3, "event") == 0;
				memcpy(k, s3, l3);
				memcpy(k + l3, s4, l4);
				e->key = k;
				e->keyhash = hash_bytes((const unsigned char *) k, l3 + l4);
			}
			e->svc_found = bool_col(r, 14);
			/* an unknown service is rejected (unknown_service): no id needed */
			s = text_or_null(r, 5, &isnull);
			e->svc = (isnull || !e->svc_found) ? -1 : intern_known(&b->svc, s, NULL);
			d = col(r, 6, &isnull);
			e->started = isnull ? 0 : DatumGetTimestampTz(d);
			s = text_or_null(r, 7, &isnull);
			e->zone = isnull ? -1 : intern(&b->zone, s, NULL);
			e->acc_found = bool_col(r, 9);
			e->tz = e->cur = -1;
			if (e->acc_found)
			{
				e->cur = intern_known(&b->cur, TextDatumGetCString(val(r, 10)), NULL);
				e->tz = intern_zone(b, TextDatumGetCString(val(r, 11)));
				e->billing_day = DatumGetInt32(val(r, 12));
				e->closed = bool_col(r, 13);
			}
			e->qty_ok = bool_col(r, 15);
			e->time_ok = bool_col(r, 16);
			e->already = bool_col(r, 17);
			if (e->qty_ok)
				e->q = i128_store(numeric_to_scaled(DatumGetNumeric(val(r, 8)), QTY_DECIMALS, "quantity"));
			MemoryContextSwitchTo(old);
		}
		new_result();
		SPI_freetuptable(SPI_tuptable);
		MemoryContextReset(tmp);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(tmp);
	for (int64 i = 0; i < b->nev; i++)
		if (!b->ev[i].seen)
			elog(ERROR, "rate_batch: event %lld of %lld is missing", (long long) i + 1, (long long) b->nev);
}

/*
 * The candidate rates of the batch's (account, service, zone) keys — the
 * plan rates of the account's subscriptions for the service, of the zone or
 * of any zone — grouped by account, with their tariffs (one query: the same
 * snapshot for both).
 */
static void
load_candidates(Batch *b)
{
	bool		isnull;
	HTAB	   *keys;
	HASH_SEQ_STATUS seq;
	RateKey    *kp;
	long		n;
	int			i = 0;
	Datum	   *ka,
			   *ks,
			   *kz;
	bool	   *kzn;
	int			dims[1];
	int			lbs[1];
	Oid			types[3] = {INT8ARRAYOID, TEXTARRAYOID, TEXTARRAYOID};
	Datum		args[3];

	b->rates = blob_table("rating rates", sizeof(int64), sizeof(RateEntry), b->keep);
	b->ranges = blob_table("rating accounts", sizeof(int64), sizeof(AccountRange), b->keep);

	/* the keys: the events a rate is resolved for (see judge()) */
	keys = blob_table("rating rate keys", sizeof(RateKey), sizeof(RateKey), CurrentMemoryContext);
	for (int64 i = 0; i < b->nev; i++)
	{
		RateEvent  *e = &b->ev[i];
		RateKey		k;

		if (!(e->acc_found && e->svc_found && e->time_ok))
			continue;
		memset(&k, 0, sizeof(k));
		k.account = e->account;
		k.svc = e->svc;
		k.zone = e->zone;
		(void) hash_search(keys, &k, HASH_ENTER, NULL);
	}
	n = hash_get_num_entries(keys);
	ka = palloc(Max(1, n) * sizeof(Datum));
	ks = palloc(Max(1, n) * sizeof(Datum));
	kz = palloc(Max(1, n) * sizeof(Datum));
	kzn = palloc(Max(1, n) * sizeof(bool));
	hash_seq_init(&seq, keys);
	while ((kp = hash_seq_search(&seq)) != NULL)
	{
		ka[i] = Int64GetDatum(kp->account);
		ks[i] = CStringGetTextDatum(b->svc.name[kp->svc]);
		kzn[i] = kp->zone < 0;
		kz[i] = kzn[i] ? (Datum) 0 : CStringGetTextDatum(b->zone.name[kp->zone]);
		i++;
	}
	hash_destroy(keys);
	args[0] = int8_array(ka, n);
	args[1] = PointerGetDatum(construct_array(ks, n, TEXTOID, -1, false, TYPALIGN_INT));
	dims[0] = n;
	lbs[0] = 1;
	args[2] = PointerGetDatum(construct_md_array(kz, kzn, 1, dims, lbs, TEXTOID, -1, false, TYPALIGN_INT));
	run(psprintf("SELECT x.account_id, x.started_at, x.ended_at, x.rate_id, x.service, x.zone, x.valid_from,"
				 "       x.valid_until, x.currency, r.tariff "
				 "FROM (SELECT DISTINCT k.account_id, s.subscription_id, s.started_at,"
				 "             coalesce(s.ended_at, 'infinity') AS ended_at, r.rate_id, r.service, r.zone,"
				 "             r.valid_from, r.valid_until, p.currency"
				 "      FROM unnest($1, $2, $3) AS k(account_id, service, zone)"
				 "      JOIN %s.subscription s ON s.account_id = k.account_id"
				 "      JOIN %s.plan p ON p.code = s.plan_code"
				 "      JOIN %s.plan_rate r ON r.plan_code = s.plan_code AND r.service = k.service"
				 "                          AND (r.zone IS NULL OR r.zone = k.zone)) x "
				 "JOIN %s.plan_rate r ON r.rate_id = x.rate_id "
				 "ORDER BY x.account_id",
				 b->schema, b->schema, b->schema, b->schema), 3, types, args, true);
	b->cand = MemoryContextAllocHuge(b->keep, Max(1, SPI_processed) * sizeof(Candidate));
	b->ncand = 0;
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		Candidate  *c = &b->cand[b->ncand];
		AccountRange *ar;
		RateEntry  *re;
		bool		found;
		const char *z;

		c->account = DatumGetInt64(val(r, 1));
		c->sub_start = DatumGetTimestampTz(val(r, 2));
		c->sub_end = DatumGetTimestampTz(val(r, 3));
		c->rate_id = DatumGetInt64(val(r, 4));
		c->svc = intern(&b->svc, TextDatumGetCString(val(r, 5)), NULL);
		z = text_or_null(r, 6, &isnull);
		c->zone = isnull ? -1 : intern(&b->zone, z, NULL);
		c->valid_from = DatumGetTimestampTz(val(r, 7));
		c->valid_until = DatumGetTimestampTz(val(r, 8));
		c->plan_cur = intern_known(&b->cur, TextDatumGetCString(val(r, 9)), NULL);
		re = hash_search(b->rates, &c->rate_id, HASH_ENTER, &found);
		if (!found)
		{
			MemoryContext old = MemoryContextSwitchTo(b->keep);

			re->t = tariff_check_version((Tariff *) PG_DETOAST_DATUM_COPY(val(r, 10)));
			MemoryContextSwitchTo(old);
		}
		ar = hash_search(b->ranges, &c->account, HASH_ENTER, &found);
		if (!found)
		{
			ar->first = b->ncand;
			ar->count = 0;
		}
		ar->count++;
		b->ncand++;
	}
	new_result();
	SPI_freetuptable(SPI_tuptable);
}

/* The rate of an event: the best candidate valid at its time, or NULL. */
static const Candidate *
resolve(Batch *b, const RateEvent *e)
{
	AccountRange *ar = hash_search(b->ranges, &e->account, HASH_FIND, NULL);
	const Candidate *best = NULL;

	if (ar == NULL)
		return NULL;
	for (int i = ar->first; i < ar->first + ar->count; i++)
	{
		const Candidate *c = &b->cand[i];
		TimestampTz vf = Max(c->sub_start, c->valid_from);
		TimestampTz vu = Min(c->sub_end, c->valid_until);

		if (c->svc != e->svc || (c->zone != -1 && (c->zone != e->zone || c->zone < 0)))
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

/* 1 and 2. Rejects, rates, billed quantities. */
static void
judge(Batch *b)
{
	for (int64 i = 0; i < b->nev; i++)
	{
		RateEvent  *e = &b->ev[i];
		const Candidate *c = NULL;

		if (e->acc_found && e->svc_found && e->time_ok)
			c = resolve(b, e);
		if (c != NULL)
		{
			RateEntry  *re = hash_search(b->rates, &c->rate_id, HASH_FIND, NULL);

			if (re == NULL)
				elog(ERROR, "rate_batch: rate %lld not found", (long long) c->rate_id);
			e->rate_id = c->rate_id;
			e->t = re->t;
			if (e->qty_ok)
			{
				cb_int128	bq;
				TariffError err;

				if (!tariff_billed_quantity(e->t, i128_load(e->q), &bq, &err))
					tariff_raise(&err);
				e->bq = i128_store(bq);
				e->has_bq = true;
			}
		}
		if (!e->acc_found)
			e->reason = "unknown_account";
		else if (e->closed)
			e->reason = "account_closed";
		else if (e->key == NULL)
			e->reason = e->key_long ? "invalid_event_key" : "missing_event_key";
		else if (!e->time_ok)
			e->reason = "invalid_time";
		else if (!e->qty_ok)
			e->reason = "invalid_quantity";
		else if (!e->svc_found)
			e->reason = "unknown_service";
		else if (c == NULL)
			e->reason = "no_tariff";
		else if (strcmp(e->t->currency[0] != '\0' ? e->t->currency : b->cur.name[c->plan_cur],
						b->cur.name[e->cur]) != 0)
			e->reason = "currency_mismatch";
	}
}

static Batch *dup_batch;		/* for dup_cmp (qsort has no argument) */

/* (account, key, idx): copies of one event next to each other, first first */
static int
dup_cmp(const void *pa, const void *pb)
{
	const RateEvent *a = *(RateEvent *const *) pa;
	const RateEvent *b = *(RateEvent *const *) pb;
	int			c;

	if ((c = cmp_i64(a->account, b->account)) != 0 || (c = cmp_i64(a->keyhash, b->keyhash)) != 0)
		return c;
	if (a->key != b->key)
	{
		const char *ka = a->key;
		const char *kb = b->key;

		if ((c = strcmp(ka, kb)) != 0)
			return c;
		if ((c = strcmp(ka + strlen(ka) + 1, kb + strlen(kb) + 1)) != 0)
			return c;
	}
	return cmp_i64(a->idx, b->idx);
}

static bool
same_key(Batch *b, const RateEvent *x, const RateEvent *y)
{
	const char *kx,
			   *ky;

	if (x->account != y->account || x->keyhash != y->keyhash)
		return false;
	kx = x->key;
	ky = y->key;
	return strcmp(kx, ky) == 0 && strcmp(kx + strlen(kx) + 1, ky + strlen(ky) + 1) == 0;
}

/* 3. Duplicates among the acceptable events. */
static void
find_duplicates(Batch *b, RateEvent **order)
{
	int64		m = 0;

	for (int64 i = 0; i < b->nev; i++)
		if (b->ev[i].reason == NULL)
			order[m++] = &b->ev[i];
	dup_batch = b;
	qsort(order, m, sizeof(RateEvent *), dup_cmp);
	for (int64 i = 0; i < m; i++)
	{
		RateEvent  *e = order[i];

		/*
		 * the sources online charging writes its charges under: an event
		 * under one is the same event as the charge of that id (a session's
		 * or one-shot event's record delivered again), else it is refused —
		 * it would share their keys, and a 'session' charge is one its
		 * session debited already
		 */
		if (e->online_source)
		{
			if (e->already)
				e->duplicate = true;
			else
				e->reason = "reserved_source";
			continue;
		}
		e->duplicate = e->already || (i > 0 && same_key(b, order[i - 1], e));
	}
}

/*
 * 4. The open period of every billable (account, own period), closed ones
 * pushed on by open_period(); then the plan allowances of those periods.
 */
static void
open_periods(Batch *b)
{
	HTAB	   *periods;
	HASH_SEQ_STATUS seq;
	PeriodEntry *pe;
	long		n;
	Datum	   *a,
			   *s,
			   *e;
	int			i = 0;
	Oid			types[3] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		args[3];

	periods = blob_table("rating periods", sizeof(PeriodKey), sizeof(PeriodEntry), b->keep);
	for (int64 k = 0; k < b->nev; k++)
	{
		RateEvent  *ev = &b->ev[k];
		PeriodKey	key;
		bool		found;

		if (!billable(ev))
			continue;
		memset(&key, 0, sizeof(key));
		key.account = ev->account;
		billing_period_bounds(ev->started, b->tzs[ev->tz], ev->billing_day, &key.start, &ev->pend);
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
	args[0] = int8_array(a, n);
	args[1] = timestamptz_array(s, n);
	args[2] = timestamptz_array(e, n);
	/* checked once per pair; open_period() only where a closed period overlaps */
	run(psprintf("SELECT x.a, x.s, lower(x.p), upper(x.p) "
				 "FROM (SELECT k.a, k.s, %s.open_period(k.a, k.s) AS p "
				 "      FROM unnest($1, $2, $3) AS k(a, s, e) "
				 "      WHERE EXISTS (SELECT 1 FROM %s.closed_period cp "
				 "                    WHERE cp.account_id = k.a AND cp.period_start < k.e"
				 "                      AND cp.period_end > k.s)) x",
				 b->schema, b->schema), 3, types, args, true);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		PeriodKey	key;

		memset(&key, 0, sizeof(key));
		key.account = DatumGetInt64(val(r, 1));
		key.start = DatumGetTimestampTz(val(r, 2));
		pe = hash_search(periods, &key, HASH_FIND, NULL);
		if (pe == NULL)
			elog(ERROR, "rate_batch: unexpected period");
		pe->open_start = DatumGetTimestampTz(val(r, 3));
		pe->open_end = DatumGetTimestampTz(val(r, 4));
	}

	/* the events' open periods */
	for (int64 k = 0; k < b->nev; k++)
	{
		RateEvent  *ev = &b->ev[k];
		PeriodKey	key;

		if (!billable(ev))
			continue;
		memset(&key, 0, sizeof(key));
		key.account = ev->account;
		key.start = ev->pstart;
		pe = hash_search(periods, &key, HASH_FIND, NULL);
		if (pe == NULL)
			elog(ERROR, "rate_batch: period not found");
		ev->pstart = pe->open_start;
		ev->pend = pe->open_end;
	}
	hash_destroy(periods);
}

static int64
open_start_of(const RateEvent *e)
{
	return e->pstart;
}

static int64
service_of(const RateEvent *e)
{
	return e->svc;
}

/*
 * The distinct (account, key(event)) pairs of the billable events (only
 * those with a positive billed quantity when positive_bq): how many, and
 * the accounts and keys as arrays.
 */
static long
billable_pairs(Batch *b, bool positive_bq, int64 (*keyf) (const RateEvent *),
			   Datum **accounts, int64 **keys)
{
	HTAB	   *pairs;
	HASH_SEQ_STATUS seq;
	PeriodKey  *pk;
	long		n;
	int			i = 0;

	pairs = blob_table("rating pairs", sizeof(PeriodKey), sizeof(PeriodKey), CurrentMemoryContext);
	for (int64 k = 0; k < b->nev; k++)
	{
		RateEvent  *ev = &b->ev[k];
		PeriodKey	key;

		if (!billable(ev) || (positive_bq && i128_load(ev->bq) <= 0))
			continue;
		memset(&key, 0, sizeof(key));
		key.account = ev->account;
		key.start = keyf(ev);
		(void) hash_search(pairs, &key, HASH_ENTER, NULL);
	}
	n = hash_get_num_entries(pairs);
	*accounts = palloc(Max(1, n) * sizeof(Datum));
	*keys = palloc(Max(1, n) * sizeof(int64));
	hash_seq_init(&seq, pairs);
	while ((pk = hash_seq_search(&seq)) != NULL)
	{
		(*accounts)[i] = Int64GetDatum(pk->account);
		(*keys)[i] = pk->start;
		i++;
	}
	hash_destroy(pairs);
	return n;
}

/* The plan allowances of every (account, open period) the batch bills in. */
static void
grant_plan_allowances(Batch *b)
{
	Datum	   *a;
	int64	   *starts;
	Datum	   *s;
	long		n = billable_pairs(b, false, open_start_of, &a, &starts);
	Oid			types[2] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID};
	Datum		args[2];

	if (n == 0)
		return;
	s = palloc(n * sizeof(Datum));
	for (long i = 0; i < n; i++)
		s[i] = TimestampTzGetDatum(starts[i]);
	args[0] = int8_array(a, n);
	args[1] = timestamptz_array(s, n);
	run(psprintf("SELECT %s.ensure_plan_allowances($1, $2)", b->schema), 2, types, args, false);
}

/* consumption order: (account, service, priority, valid_until, bucket_id) */
static int
bucket_cmp(const void *pa, const void *pb)
{
	const Bucket *a = pa;
	const Bucket *b = pb;
	int			c;

	if ((c = cmp_i64(a->account, b->account)) != 0 || (c = cmp_i64(a->svc, b->svc)) != 0
		|| (c = cmp_i64(a->priority, b->priority)) != 0 || (c = cmp_i64(a->until, b->until)) != 0)
		return c;
	return cmp_i64(a->id, b->id);
}

/* the first of the (sorted) buckets of (account, svc) or after it */
static int
first_bucket(const Batch *b, int64 account, int32 svc)
{
	int			lo = 0,
				hi = b->nbk;

	while (lo < hi)
	{
		int			mid = lo + (hi - lo) / 2;
		const Bucket *x = &b->bk[mid];

		if (x->account < account || (x->account == account && x->svc < svc))
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/*
 * Set aside `held` units of a session that lasts until `until` from the
 * buckets of (account, svc) starting at k0 that are valid now and still at
 * `until` (all valid now: DT_NOBEGIN), in consumption order; returns
 * what is left.
 */
static cb_int128
set_aside(Batch *b, int k0, int64 account, int32 svc, TimestampTz now, TimestampTz until, cb_int128 held)
{
	for (int k = k0; held > 0 && k < b->nbk && b->bk[k].account == account && b->bk[k].svc == svc; k++)
	{
		Bucket	   *x = &b->bk[k];
		cb_int128	avail = i128_load(x->avail);
		cb_int128	take;

		if (avail <= 0 || x->from > now || x->until <= now || x->until < until)
			continue;
		take = held < avail ? held : avail;
		x->avail = i128_store(avail - take);
		held -= take;
	}
	return held;
}

/*
 * What rating may take from each allowance bucket of the billable events'
 * (account, service) pairs, sorted in consumption order: its balance less
 * the units open sessions hold.  Each session's held units are set aside
 * from the buckets that back them, those reserve()/reserve_update() counted
 * for it: valid now and still valid when the session's grant lapses
 * (allowance_available(account, service, now(), expires_at): valid_from <=
 * now < valid_until, valid_until >= expires_at), in consumption order.  The
 * sessions of an (account, service) go latest expiry first: the buckets that
 * can back a session are those that can back every session lapsing later,
 * and more, so the sessions with the fewest buckets to draw on draw first.
 * Held units those buckets no longer cover (another charge took units a
 * session counted on) are set aside from the other buckets valid now, as
 * far as they go: units of a session are never given to rating.  Online
 * requests and one-shot events set holds aside by the same rule in SQL
 * (allowance_takes(), sql/ext/50_balance.sql): change both together.
 */
static void
load_buckets(Batch *b)
{
	Datum	   *a;
	int64	   *svcs;
	Datum	   *u;
	long		n = billable_pairs(b, true, service_of, &a, &svcs);
	Oid			types[2] = {INT8ARRAYOID, TEXTARRAYOID};
	Datum		args[2];
	TimestampTz now = GetCurrentTransactionStartTimestamp();	/* now() */

	b->nbk = 0;
	if (n == 0)
		return;
	u = palloc(n * sizeof(Datum));
	for (long i = 0; i < n; i++)
		u[i] = CStringGetTextDatum(b->svc.name[svcs[i]]);
	args[0] = int8_array(a, n);
	args[1] = PointerGetDatum(construct_array(u, n, TEXTOID, -1, false, TYPALIGN_INT));
	run(psprintf("SELECT b.account_id, b.unit, b.bucket_id, b.priority, b.valid_from, b.valid_until,"
				 "       trunc(b.balance, 9) "
				 "FROM unnest($1, $2) AS k(account_id, service)"
				 "JOIN %s.bucket b ON b.account_id = k.account_id AND b.kind = 'allowance'"
				 "                AND b.unit = k.service AND b.balance > 0",
				 b->schema), 2, types, args, false);
	b->bk = MemoryContextAllocHuge(b->keep, Max(1, SPI_processed) * sizeof(Bucket));
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		Bucket	   *x = &b->bk[b->nbk++];

		x->account = DatumGetInt64(val(r, 1));
		x->svc = intern(&b->svc, TextDatumGetCString(val(r, 2)), NULL);
		x->id = DatumGetInt64(val(r, 3));
		x->priority = DatumGetInt32(val(r, 4));
		x->from = DatumGetTimestampTz(val(r, 5));
		x->until = DatumGetTimestampTz(val(r, 6));
		x->avail = i128_store(numeric_to_scaled(DatumGetNumeric(val(r, 7)), QTY_DECIMALS, "available units"));
	}
	new_result();
	SPI_freetuptable(SPI_tuptable);
	qsort(b->bk, b->nbk, sizeof(Bucket), bucket_cmp);

	/*
	 * the open sessions' holds (as allowance_available counts them: open,
	 * not expired), latest expiry first; held units rounded up to the units'
	 * 9 decimals
	 */
	run(psprintf("SELECT r.account_id, r.service, r.expires_at,"
				 "       round(ceil(r.held_units * 1000000000) / 1000000000, 9) "
				 "FROM unnest($1, $2) AS k(account_id, service)"
				 "JOIN %s.reservation r ON r.account_id = k.account_id AND r.service = k.service "
				 "WHERE r.status = 'open' AND r.expires_at > now() AND r.held_units > 0 "
				 "ORDER BY r.account_id, r.service, r.expires_at DESC, r.session_id",
				 b->schema), 2, types, args, false);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		int64		account = DatumGetInt64(val(r, 1));
		int32		svc = intern(&b->svc, TextDatumGetCString(val(r, 2)), NULL);
		TimestampTz until = DatumGetTimestampTz(val(r, 3));
		cb_int128	held = numeric_to_scaled(DatumGetNumeric(val(r, 4)), QTY_DECIMALS, "held units");
		int			k0 = first_bucket(b, account, svc);

		held = set_aside(b, k0, account, svc, now, until, held);
		if (held > 0)
			(void) set_aside(b, k0, account, svc, now, DT_NOBEGIN, held);
	}
	new_result();
	SPI_freetuptable(SPI_tuptable);
}

/* The cycle counters (usage_counter 'rate:<id>') of the billable events' cycle keys. */
static void
load_counters(Batch *b)
{
	HASH_SEQ_STATUS seq;
	CounterEntry *ce;
	long		n;
	Datum	   *a,
			   *s,
			   *r_;
	int			i = 0;
	Oid			types[3] = {INT8ARRAYOID, TIMESTAMPTZARRAYOID, INT8ARRAYOID};
	Datum		args[3];

	b->counters = blob_table("rating counters", sizeof(CounterKey), sizeof(CounterEntry), b->keep);
	for (int64 k = 0; k < b->nev; k++)
	{
		RateEvent  *ev = &b->ev[k];
		CounterKey	key;
		bool		found;

		if (!billable(ev) || !(ev->t->scope == SCOPE_CYCLE))
			continue;
		memset(&key, 0, sizeof(key));
		key.account = ev->account;
		key.pstart = ev->pstart;
		key.rate_id = ev->rate_id;
		ce = hash_search(b->counters, &key, HASH_ENTER, &found);
		if (!found)
			ce->used = i128_store(0);
	}
	n = hash_get_num_entries(b->counters);
	if (n == 0)
		return;
	a = palloc(n * sizeof(Datum));
	s = palloc(n * sizeof(Datum));
	r_ = palloc(n * sizeof(Datum));
	hash_seq_init(&seq, b->counters);
	while ((ce = hash_seq_search(&seq)) != NULL)
	{
		a[i] = Int64GetDatum(ce->key.account);
		s[i] = TimestampTzGetDatum(ce->key.pstart);
		r_[i] = Int64GetDatum(ce->key.rate_id);
		i++;
	}
	args[0] = int8_array(a, n);
	args[1] = timestamptz_array(s, n);
	args[2] = int8_array(r_, n);
	run(psprintf("SELECT k.a, k.s, k.r, rc.used "
				 "FROM unnest($1, $2, $3) AS k(a, s, r) "
				 "JOIN %s.usage_counter rc ON rc.account_id = k.a AND rc.period_start = k.s"
				 "                        AND rc.counter = 'rate:' || k.r",
				 b->schema), 3, types, args, false);
	for (uint64 r = 0; r < SPI_processed; r++)
	{
		CounterKey	key;

		memset(&key, 0, sizeof(key));
		key.account = DatumGetInt64(val(r, 1));
		key.pstart = DatumGetTimestampTz(val(r, 2));
		key.rate_id = DatumGetInt64(val(r, 3));
		ce = hash_search(b->counters, &key, HASH_FIND, NULL);
		if (ce == NULL)
			elog(ERROR, "rate_batch: unexpected counter");
		ce->used = i128_store(numeric_to_scaled(DatumGetNumeric(val(r, 4)), QTY_DECIMALS, "used_before"));
	}
}

static TimestampTz
allow_at(const RateEvent *e)
{
	return e->started > e->pstart ? e->started : e->pstart;
}

/*
 * rating order: (account, service, at, started_at, idx).  For allowances
 * that is event-time order, at = greatest(started_at, period_start), ties by
 * claim order (idx: the claim's (account, started_at) order, except that the
 * events a small batch was topped up with, after skipping candidates another
 * rater held, come after the rest); for the cycle totals,
 * whose keys (account, period, rate) lie within one (account, service) and
 * whose periods are disjoint, it is (started_at, idx) order.
 */
static int
walk_cmp(const void *pa, const void *pb)
{
	const RateEvent *a = *(RateEvent *const *) pa;
	const RateEvent *b = *(RateEvent *const *) pb;
	int			c;

	if ((c = cmp_i64(a->account, b->account)) != 0 || (c = cmp_i64(a->svc, b->svc)) != 0
		|| (c = cmp_i64(allow_at(a), allow_at(b))) != 0 || (c = cmp_i64(a->started, b->started)) != 0)
		return c;
	return cmp_i64(a->idx, b->idx);
}

/*
 * 5-7. One walk over the billable events in rating order and the buckets in
 * consumption order: each event takes allowance units from the buckets
 * valid at `at`, gets its cycle running total (used_before: the counter plus
 * the rest, bq - covered, of the charged events before it) and its price.
 * An event whose price is out of range (has_amount false; SQL rejects it:
 * out_of_range) gives its units back and adds nothing to the running total,
 * so the events after it are rated as if it had not been there.
 */
static void
rate_walk(Batch *b, RateEvent **order)
{
	int64		n = 0;
	int			b0 = 0;
	CounterEntry *ce = NULL;	/* the counter of the last cycle event */

	for (int64 i = 0; i < b->nev; i++)
		if (billable(&b->ev[i]))
			order[n++] = &b->ev[i];
	qsort(order, n, sizeof(RateEvent *), walk_cmp);
	for (int64 i = 0; i < n; i++)
	{
		RateEvent  *e = order[i];
		cb_int128	need = i128_load(e->bq);
		cb_int128	covered = 0;
		cb_int128	used = 0;
		cb_int128	amount;
		TimestampTz at = allow_at(e);
		bool		cycle = e->t->scope == SCOPE_CYCLE;
		TariffError err;
		struct pg_tm *tm;
		TariffWhen	when;

		/* allowances */
		e->take0 = b->ntakes;
		while (b0 < b->nbk && (b->bk[b0].account < e->account
							   || (b->bk[b0].account == e->account && b->bk[b0].svc < e->svc)))
			b0++;
		for (int k = b0; need > 0 && k < b->nbk && b->bk[k].account == e->account
			 && b->bk[k].svc == e->svc; k++)
		{
			Bucket	   *x = &b->bk[k];
			cb_int128	avail = i128_load(x->avail);
			cb_int128	take;
			Take	   *t;

			if (avail <= 0 || at < x->from || at >= x->until)
				continue;
			take = need < avail ? need : avail;
			x->avail = i128_store(avail - take);
			need -= take;
			covered += take;
			if (b->ntakes == b->takecap)
			{
				b->takecap = Max(1024, b->takecap * 2);
				b->takes = b->takes ? repalloc_huge(b->takes, (Size) b->takecap * sizeof(Take))
					: MemoryContextAllocHuge(b->keep, (Size) b->takecap * sizeof(Take));
			}
			t = &b->takes[b->ntakes++];
			t->bucket_id = x->id;
			t->units = i128_store(take);
			e->ntake++;
			e->cov_scale = Max(e->cov_scale, short_scale(take));
		}
		e->covered = i128_store(covered);

		/* the cycle running total (ce: the counter of this key, kept running) */
		if (cycle)
		{
			if (ce == NULL || ce->key.account != e->account || ce->key.pstart != e->pstart
				|| ce->key.rate_id != e->rate_id)
			{
				CounterKey	k;

				memset(&k, 0, sizeof(k));
				k.account = e->account;
				k.pstart = e->pstart;
				k.rate_id = e->rate_id;
				ce = hash_search(b->counters, &k, HASH_FIND, NULL);
				if (ce == NULL)
					elog(ERROR, "rate_batch: missing counter");
			}
			used = i128_load(ce->used);
			e->used_before = i128_store(used);
		}

		/* the price */
		tm = local_tm(e->started, b->tzs[e->tz]);
		when.dow = tm->tm_wday;
		when.sec_of_day = tm->tm_hour * 3600 + tm->tm_min * 60 + tm->tm_sec;
		if (tariff_rate_billed(e->t, i128_load(e->bq) - covered, when, used, &amount, &err))
		{
			e->amount = i128_store(amount);
			e->has_amount = true;
			if (cycle)
				ce->used = i128_store(used + i128_load(e->bq) - covered);
		}
		else if (err.kind != TARIFF_ERR_OVERFLOW)
			tariff_raise(&err);
		else if (e->ntake > 0)
		{
			/* out of range: its takes back to their buckets (in b0's range, in order) */
			int			j = 0;

			for (int k = b0; j < e->ntake; k++)
			{
				Take	   *t = &b->takes[e->take0 + j];

				Assert(k < b->nbk && b->bk[k].account == e->account && b->bk[k].svc == e->svc);
				if (b->bk[k].id != t->bucket_id)
					continue;
				b->bk[k].avail = i128_store(i128_load(b->bk[k].avail) + i128_load(t->units));
				j++;
			}
			b->ntakes = e->take0;
			e->ntake = 0;
			e->cov_scale = 0;
			e->covered = i128_store(0);
		}
	}
}

static int
debit_cmp(const void *pa, const void *pb)
{
	const DebitAgg *a = pa;
	const DebitAgg *b = pb;
	int			c;

	if ((c = cmp_i64(a->account, b->account)) != 0)
		return c;
	return cmp_i64(a->bucket_id, b->bucket_id);
}

static int
count_cmp(const void *pa, const void *pb)
{
	const CountAgg *a = pa;
	const CountAgg *b = pb;
	int			c;

	if ((c = cmp_i64(a->account, b->account)) != 0 || (c = cmp_i64(a->pstart, b->pstart)) != 0)
		return c;
	return cmp_i64(a->rate_id, b->rate_id);
}

static AccountOut *
account_out(Batch *b, const RateEvent *e)
{
	bool		found;
	AccountOut *ao = hash_search(b->outs, &e->account, HASH_ENTER, &found);

	if (!found)
	{
		ao->rep_idx = e->idx;
		ao->d0 = ao->nd = ao->c0 = ao->nc = 0;
	}
	else if (e->idx < ao->rep_idx)
		ao->rep_idx = e->idx;
	return ao;
}

/*
 * What the charged events (those with a price) take from each bucket and add
 * to each cycle counter, per account: the bucket debits with their ledger
 * entries and the counters are written from these (one row per bucket or
 * counter), each account's on one of its rows.
 */
static void
aggregate(Batch *b)
{
	HTAB	   *dh,
			   *ch;
	HASH_SEQ_STATUS seq;
	DebitAgg   *d;
	CountAgg   *c;
	typedef struct
	{
		int64		account;
		int64		bucket_id;
	} DKey;

	b->outs = blob_table("rating accounts out", sizeof(int64), sizeof(AccountOut), b->keep);
	dh = blob_table("rating debits", sizeof(DKey), sizeof(DebitAgg), CurrentMemoryContext);
	ch = blob_table("rating counts", sizeof(CounterKey), sizeof(CountAgg), CurrentMemoryContext);

	for (int64 i = 0; i < b->nev; i++)
	{
		RateEvent  *e = &b->ev[i];
		bool		found;

		if (!billable(e) || !e->has_amount)
			continue;
		for (int k = 0; k < e->ntake; k++)
		{
			Take	   *t = &b->takes[e->take0 + k];
			DKey		key;

			memset(&key, 0, sizeof(key));
			key.account = e->account;
			key.bucket_id = t->bucket_id;
			d = hash_search(dh, &key, HASH_ENTER, &found);
			if (!found)
			{
				d->svc = e->svc;
				d->events = 0;
				d->scale = 0;
				d->taken = i128_store(0);
			}
			d->events++;
			d->scale = Max(d->scale, short_scale(i128_load(t->units)));
			d->taken = i128_store(i128_load(d->taken) + i128_load(t->units));
			(void) account_out(b, e);
		}
		if (e->t->scope == SCOPE_CYCLE)
		{
			CounterKey	key;
			cb_int128	bq = i128_load(e->bq);

			memset(&key, 0, sizeof(key));
			key.account = e->account;
			key.pstart = e->pstart;
			key.rate_id = e->rate_id;
			c = hash_search(ch, &key, HASH_ENTER, &found);
			if (!found)
			{
				c->scale = 0;
				c->used = i128_store(0);
			}
			/* rest = bq - covered, in the numeric form their difference has */
			c->scale = Max(c->scale, Max(short_scale(bq), e->cov_scale));
			c->used = i128_store(i128_load(c->used) + bq - i128_load(e->covered));
			(void) account_out(b, e);
		}
	}

	b->debits = MemoryContextAllocHuge(b->keep, Max(1, hash_get_num_entries(dh)) * sizeof(DebitAgg));
	hash_seq_init(&seq, dh);
	while ((d = hash_seq_search(&seq)) != NULL)
		b->debits[b->ndebits++] = *d;
	b->counts = MemoryContextAllocHuge(b->keep, Max(1, hash_get_num_entries(ch)) * sizeof(CountAgg));
	hash_seq_init(&seq, ch);
	while ((c = hash_seq_search(&seq)) != NULL)
		b->counts[b->ncounts++] = *c;
	qsort(b->debits, b->ndebits, sizeof(DebitAgg), debit_cmp);
	qsort(b->counts, b->ncounts, sizeof(CountAgg), count_cmp);
	for (int i = 0; i < b->ndebits; i++)
	{
		AccountOut *ao = hash_search(b->outs, &b->debits[i].account, HASH_FIND, NULL);

		if (ao->nd++ == 0)
			ao->d0 = i;
	}
	for (int i = 0; i < b->ncounts; i++)
	{
		AccountOut *ao = hash_search(b->outs, &b->counts[i].account, HASH_FIND, NULL);

		if (ao->nc++ == 0)
			ao->c0 = i;
	}
	hash_destroy(dh);
	hash_destroy(ch);
}

#define RATE_BATCH_COLS 28
/* events per batch: ~200 bytes each in memory, plus their keys */
#define RATE_BATCH_MAX 1000000

/* An account's debits and counters, on its representative row. */
static void
emit_account(Batch *b, const RateEvent *e, Datum *values, bool *nulls)
{
	AccountOut *ao = hash_search(b->outs, &e->account, HASH_FIND, NULL);

	if (ao == NULL || ao->rep_idx != e->idx)
		return;
	if (ao->nd > 0)
	{
		Datum	   *ids = palloc(ao->nd * sizeof(Datum));
		Datum	   *units = palloc(ao->nd * sizeof(Datum));
		Datum	   *taken = palloc(ao->nd * sizeof(Datum));
		Datum	   *events = palloc(ao->nd * sizeof(Datum));

		for (int k = 0; k < ao->nd; k++)
		{
			DebitAgg   *d = &b->debits[ao->d0 + k];

			ids[k] = Int64GetDatum(d->bucket_id);
			units[k] = CStringGetTextDatum(b->svc.name[d->svc]);
			taken[k] = NumericGetDatum(qty_numeric(i128_load(d->taken), d->scale));
			events[k] = Int32GetDatum(d->events);
		}
		values[21] = int8_array(ids, ao->nd);
		values[22] = PointerGetDatum(construct_array(units, ao->nd, TEXTOID, -1, false, TYPALIGN_INT));
		values[23] = PointerGetDatum(construct_array(taken, ao->nd, NUMERICOID, -1, false, TYPALIGN_INT));
		values[24] = PointerGetDatum(construct_array(events, ao->nd, INT4OID, 4, true, TYPALIGN_INT));
		nulls[21] = nulls[22] = nulls[23] = nulls[24] = false;
	}
	if (ao->nc > 0)
	{
		Datum	   *ps = palloc(ao->nc * sizeof(Datum));
		Datum	   *rates = palloc(ao->nc * sizeof(Datum));
		Datum	   *used = palloc(ao->nc * sizeof(Datum));

		for (int k = 0; k < ao->nc; k++)
		{
			CountAgg   *c = &b->counts[ao->c0 + k];

			ps[k] = TimestampTzGetDatum(c->pstart);
			rates[k] = Int64GetDatum(c->rate_id);
			used[k] = NumericGetDatum(qty_numeric(i128_load(c->used), c->scale));
		}
		values[25] = timestamptz_array(ps, ao->nc);
		values[26] = int8_array(rates, ao->nc);
		values[27] = PointerGetDatum(construct_array(used, ao->nc, NUMERICOID, -1, false, TYPALIGN_INT));
		nulls[25] = nulls[26] = nulls[27] = false;
	}
}

/*
 * The rows: the claimed events (a second cursor over convbill_claim, its
 * columns passed through) with their decisions.
 */
static void
emit(Batch *b, ReturnSetInfo *rsinfo)
{
	SPIPlanPtr	plan;
	Portal		portal;
	MemoryContext row = AllocSetContextCreate(CurrentMemoryContext, "rating row", ALLOCSET_SMALL_SIZES);
	Datum		zero = NumericGetDatum(int64_to_numeric(0));

	plan = SPI_prepare("SELECT c.idx, c.part, c.tid, c.account_id, c.source, c.external_id, c.service, c.zone,"
					   "       c.quantity, c.started_at "
					   "FROM pg_temp.convbill_claim c", 0, NULL);
	if (plan == NULL)
		elog(ERROR, "rate_batch: SPI_prepare failed");
	portal = SPI_cursor_open(NULL, plan, NULL, NULL, true);
	for (;;)
	{
		new_result();
		SPI_cursor_fetch(portal, true, 10000);
		if (SPI_processed == 0)
			break;
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			MemoryContext old = MemoryContextSwitchTo(row);
			Datum		values[RATE_BATCH_COLS];
			bool		nulls[RATE_BATCH_COLS];
			int64		idx = DatumGetInt64(val(r, 1));
			RateEvent  *e;

			if (idx < 1 || idx > b->nev)
				elog(ERROR, "rate_batch: event %lld out of range", (long long) idx);
			e = &b->ev[idx - 1];
			memset(nulls, true, sizeof(nulls));
			/* idx .. started_at as claimed */
			for (int c = 0; c < 10; c++)
				values[c] = col(r, c + 1, &nulls[c]);
			if (e->acc_found)
			{
				values[10] = CStringGetTextDatum(b->cur.name[e->cur]);
				values[11] = CStringGetTextDatum(b->tz.name[e->tz]);
				nulls[10] = nulls[11] = false;
			}
			if (e->t != NULL)
			{
				values[12] = Int64GetDatum(e->rate_id);
				values[14] = BoolGetDatum(e->t->scope == SCOPE_CYCLE);
				nulls[12] = nulls[14] = false;
				if (e->has_bq)
				{
					cb_int128	bq = i128_load(e->bq);

					values[13] = NumericGetDatum(scaled_to_numeric_trimmed(bq, QTY_DECIMALS));
					nulls[13] = false;
				}
			}
			values[19] = zero;	/* covered */
			nulls[19] = false;
			if (e->reason != NULL)
			{
				values[17] = CStringGetTextDatum("rejected");
				values[18] = CStringGetTextDatum(e->reason);
				nulls[18] = false;
			}
			else if (e->duplicate)
				values[17] = CStringGetTextDatum("duplicate");
			else
			{
				values[15] = TimestampTzGetDatum(e->pstart);
				values[16] = TimestampTzGetDatum(e->pend);
				nulls[15] = nulls[16] = false;
				values[17] = CStringGetTextDatum("billable");
				values[19] = NumericGetDatum(qty_numeric(i128_load(e->covered), e->cov_scale));
				if (e->has_amount)
				{
					values[20] = NumericGetDatum(scaled_to_numeric(i128_load(e->amount), e->t->round_decimals));
					nulls[20] = false;
				}
				if (e->has_amount)
					emit_account(b, e, values, nulls);
			}
			nulls[17] = false;
			tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
			MemoryContextSwitchTo(old);
			MemoryContextReset(row);
		}
		new_result();
		SPI_freetuptable(SPI_tuptable);
		CHECK_FOR_INTERRUPTS();
	}
	SPI_cursor_close(portal);
	MemoryContextDelete(row);
}

PG_FUNCTION_INFO_V1(rate_batch);
/*
 * rate_batch(n bigint) -> SETOF (idx, part, tid, account_id, source,
 *     external_id, service, zone, quantity, started_at, currency, timezone,
 *     rate_id, bq, cycle, period_start, period_end, status, reject_reason,
 *     covered, amount, debit_bucket, debit_unit, debit_taken, debit_events,
 *     counter_period, counter_rate, counter_used)
 * over the n events of pg_temp.convbill_claim (numbered 1..n by idx); the
 * debit_* and counter_* arrays, on one row per account, are what its charged
 * events take from each allowance bucket (and how many events) and add to
 * each cycle counter.
 */
Datum
rate_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	int64		n = PG_GETARG_INT64(0);
	MemoryContext pass;
	MemoryContext old;
	Batch		b;
	RateEvent **order;

	InitMaterializedSRF(fcinfo, 0);
	if (rsinfo->setDesc->natts != RATE_BATCH_COLS)
		elog(ERROR, "rate_batch: the result must have %d columns", RATE_BATCH_COLS);
	if (n < 0 || n > RATE_BATCH_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("rate_batch: n must be from 0 to %d, not %lld", RATE_BATCH_MAX, (long long) n)));

	pass = AllocSetContextCreate(CurrentMemoryContext, "rate_batch", ALLOCSET_DEFAULT_SIZES);
	old = MemoryContextSwitchTo(pass);
	memset(&b, 0, sizeof(b));
	b.keep = pass;
	b.schema = quote_identifier(get_namespace_name(get_func_namespace(fcinfo->flinfo->fn_oid)));
	names_init(&b.svc, "rating services", pass);
	names_init(&b.zone, "rating destination zones", pass);
	names_init(&b.tz, "rating time zones", pass);
	names_init(&b.cur, "rating currencies", pass);
	b.keys = AllocSetContextCreate(pass, "rating event keys", ALLOCSET_DEFAULT_SIZES);
	b.nev = n;
	b.ev = MemoryContextAllocHuge(pass, Max(1, n) * sizeof(RateEvent));
	memset(b.ev, 0, Max(1, n) * sizeof(RateEvent));
	order = MemoryContextAllocHuge(pass, Max(1, n) * sizeof(RateEvent *));

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "rate_batch: SPI_connect failed");
	load_events(&b);
	load_candidates(&b);
	MemoryContextSwitchTo(pass);
	judge(&b);
	find_duplicates(&b, order);
	open_periods(&b);
	MemoryContextSwitchTo(pass);
	grant_plan_allowances(&b);
	MemoryContextSwitchTo(pass);
	load_buckets(&b);
	load_counters(&b);
	MemoryContextSwitchTo(pass);
	rate_walk(&b, order);
	aggregate(&b);
	emit(&b, rsinfo);
	SPI_finish();

	MemoryContextSwitchTo(old);
	MemoryContextDelete(pass);
	PG_RETURN_NULL();
}
