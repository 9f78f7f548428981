/*
 * anomaly.c — the statistics of anomaly and fraud detection.
 *
 * usage_baseline(value [, periods]) is an aggregate: the robust baseline of a
 * series, its median and its median absolute deviation (MAD).  detect_anomalies()
 * (sql/ext/85_anomaly.sql) feeds it an account's daily totals of the last
 * convbill.anomaly_baseline_days days, once per day for every account and
 * service, and compares the last 24 hours with the result:
 *
 *     robust z = (observed - median) / (1.4826 x MAD)
 *
 * (1.4826 x MAD estimates the standard deviation of a normal series, but one
 * day of fraud, a holiday or a long call in the history moves neither the
 * median nor the MAD much, where it would move a mean and a variance a lot.)
 *
 * With `periods`, the series has that many values, and the values not given
 * are zeros: the days an account used nothing have no rows, and they count.
 *
 * The state is the values themselves (a day's total is one float8, so a
 * 28-day baseline is 224 bytes); the final function sorts them and takes the
 * medians, so the result does not depend on the order the rows came in.
 * Parallel aggregation: workers serialize their values into a bytea, the
 * leader deserializes and concatenates them (combine), and the final sort
 * makes the result the serial one, bit for bit.  The same serialization lets
 * a hash aggregate spill to disk.
 *
 * float8, not numeric: these are statistics about usage, never money or a
 * quantity that is billed.  Quantities stay exact numerics everywhere else;
 * a baseline rounded to 15 significant digits changes no decision.
 *
 * anomaly_settings() returns the detection settings (src/anomaly.h), typed.
 */
#include "postgres.h"

#include <math.h>

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "libpq/pqformat.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "anomaly.h"

/* The settings, defined as convbill.* in src/convbill.c. */
int			anomaly_baseline_days = 28;
int			anomaly_min_history = 7;
double		anomaly_spike_score = 6.0;
double		anomaly_spike_ratio = 4.0;
int			anomaly_spike_min_events = 20;
int			irsf_window = 60;
int			irsf_min_events = 5;
int			irsf_min_seconds = 3600;
int			velocity_window = 10;
double		velocity_factor = 10.0;
int			velocity_min_events = 30;

/* The most values (given or implied zeros) one baseline may hold. */
#define BASELINE_MAX_VALUES 10000000

/*
 * The transition state, in the aggregate's memory context.  It exists once
 * the group has a non-NULL value: a NULL state is an empty group (NULL).
 */
typedef struct BaselineState
{
	int32		periods;		/* values in the series, or -1: only those given */
	int32		n;				/* values given */
	int32		cap;			/* room in values[] */
	float8	   *values;
} BaselineState;

/* A new, empty state in the aggregate's memory context. */
static BaselineState *
new_state(MemoryContext aggctx, int32 periods, int32 cap)
{
	BaselineState *s = MemoryContextAllocZero(aggctx, sizeof(BaselineState));

	s->periods = periods;
	s->cap = Max(cap, 8);
	s->values = MemoryContextAlloc(aggctx, sizeof(float8) * s->cap);
	return s;
}

/* Room for `more` values (in the context the array was allocated in). */
static void
reserve(BaselineState *s, int32 more)
{
	int64		need = (int64) s->n + more;

	if (need > BASELINE_MAX_VALUES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("usage_baseline: a group may hold at most %d values", BASELINE_MAX_VALUES),
				 errhint("A baseline is meant for a series of daily or hourly totals.")));
	if (need > s->cap)
	{
		int64		cap = Max((int64) s->cap * 2, need);

		cap = Min(cap, BASELINE_MAX_VALUES);
		s->values = repalloc(s->values, sizeof(float8) * cap);
		s->cap = (int32) cap;
	}
}

/* Raises 22023 unless `periods` leaves room for n values. */
static void
check_room(int32 periods, int64 n)
{
	if (periods >= 0 && n > periods)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("usage_baseline: a group has more values (%lld) than periods (%d)",
						(long long) n, periods),
				 errhint("Aggregate one value per period, e.g. one daily total per day.")));
}

/* Raises 22023 unless two groups' periods agree. */
static void
check_same_periods(int32 a, int32 b)
{
	if (a != b)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("usage_baseline: periods must be the same for every row of a group, not %d and %d",
						Min(a, b), Max(a, b))));
}

/*
 * The shared transition: add `value` (argument 1) to the state, with the
 * group's `periods` (-1 when the aggregate has no such argument).
 */
static Datum
baseline_add(FunctionCallInfo fcinfo, int32 periods)
{
	MemoryContext aggctx;
	BaselineState *s;
	float8		v;

	if (!AggCheckCallContext(fcinfo, &aggctx))
		elog(ERROR, "usage_baseline_accum called in non-aggregate context");
	s = PG_ARGISNULL(0) ? NULL : (BaselineState *) PG_GETARG_POINTER(0);
	if (PG_ARGISNULL(1))
	{
		if (s == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(s);
	}
	v = PG_GETARG_FLOAT8(1);
	if (isnan(v) || isinf(v))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("usage_baseline: value must be a finite number, not %s",
						isnan(v) ? "NaN" : (v > 0 ? "Infinity" : "-Infinity"))));
	if (s == NULL)
		s = new_state(aggctx, periods, periods > 0 ? Min(periods, 1024) : 8);
	else
		check_same_periods(s->periods, periods);
	check_room(s->periods, (int64) s->n + 1);
	reserve(s, 1);
	s->values[s->n++] = v;
	PG_RETURN_POINTER(s);
}

PG_FUNCTION_INFO_V1(usage_baseline_accum);
/* usage_baseline_accum(state, value): add one value of a series. */
Datum
usage_baseline_accum(PG_FUNCTION_ARGS)
{
	return baseline_add(fcinfo, -1);
}

PG_FUNCTION_INFO_V1(usage_baseline_accum_periods);
/* usage_baseline_accum_periods(state, value, periods): add one value of a series of `periods` values. */
Datum
usage_baseline_accum_periods(PG_FUNCTION_ARGS)
{
	int32		periods;

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("usage_baseline: periods must not be NULL")));
	periods = PG_GETARG_INT32(2);
	if (periods < 1 || periods > BASELINE_MAX_VALUES)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("usage_baseline: periods must be between 1 and %d, not %d",
						BASELINE_MAX_VALUES, periods)));
	return baseline_add(fcinfo, periods);
}

/* The state argument `argno` of a support function (NULL: no value yet). */
static BaselineState *
state_arg(FunctionCallInfo fcinfo, int argno, const char *fn)
{
	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "%s called in non-aggregate context", fn);
	return PG_ARGISNULL(argno) ? NULL : (BaselineState *) PG_GETARG_POINTER(argno);
}

PG_FUNCTION_INFO_V1(usage_baseline_combine);
/* usage_baseline_combine(a, b): the values of both partial groups (parallel workers). */
Datum
usage_baseline_combine(PG_FUNCTION_ARGS)
{
	MemoryContext aggctx;
	BaselineState *a;
	BaselineState *b;

	if (!AggCheckCallContext(fcinfo, &aggctx))
		elog(ERROR, "usage_baseline_combine called in non-aggregate context");
	a = PG_ARGISNULL(0) ? NULL : (BaselineState *) PG_GETARG_POINTER(0);
	b = PG_ARGISNULL(1) ? NULL : (BaselineState *) PG_GETARG_POINTER(1);
	if (b == NULL)
	{
		if (a == NULL)
			PG_RETURN_NULL();
		PG_RETURN_POINTER(a);
	}
	if (a == NULL)
	{
		/* b may live in a shorter-lived context (a deserialized state): copy */
		a = new_state(aggctx, b->periods, b->n);
	}
	else
		check_same_periods(a->periods, b->periods);
	check_room(a->periods, (int64) a->n + b->n);
	reserve(a, b->n);
	memcpy(a->values + a->n, b->values, sizeof(float8) * b->n);
	a->n += b->n;
	PG_RETURN_POINTER(a);
}

PG_FUNCTION_INFO_V1(usage_baseline_serialize);
/* usage_baseline_serialize(state) -> bytea: periods, n, then the n values. */
Datum
usage_baseline_serialize(PG_FUNCTION_ARGS)
{
	BaselineState *s = state_arg(fcinfo, 0, "usage_baseline_serialize");
	StringInfoData buf;

	pq_begintypsend(&buf);
	enlargeStringInfo(&buf, 8 + sizeof(float8) * s->n);
	pq_sendint32(&buf, s->periods);
	pq_sendint32(&buf, s->n);
	for (int i = 0; i < s->n; i++)
		pq_sendfloat8(&buf, s->values[i]);
	PG_RETURN_BYTEA_P(pq_endtypsend(&buf));
}

PG_FUNCTION_INFO_V1(usage_baseline_deserialize);
/* usage_baseline_deserialize(bytea, internal) -> state, in the current memory context. */
Datum
usage_baseline_deserialize(PG_FUNCTION_ARGS)
{
	bytea	   *b;
	StringInfoData buf;
	BaselineState *s;
	int32		periods;
	int32		n;

	if (!AggCheckCallContext(fcinfo, NULL))
		elog(ERROR, "usage_baseline_deserialize called in non-aggregate context");
	b = PG_GETARG_BYTEA_PP(0);
	initStringInfo(&buf);
	appendBinaryStringInfo(&buf, VARDATA_ANY(b), VARSIZE_ANY_EXHDR(b));
	periods = pq_getmsgint(&buf, 4);
	n = pq_getmsgint(&buf, 4);
	if (n < 0 || n > BASELINE_MAX_VALUES)
		elog(ERROR, "usage_baseline_deserialize: corrupt state (%d values)", n);
	s = new_state(CurrentMemoryContext, periods, n);
	for (int i = 0; i < n; i++)
		s->values[i] = pq_getmsgfloat8(&buf);
	s->n = n;
	pq_getmsgend(&buf);
	pfree(buf.data);
	PG_RETURN_POINTER(s);
}

/* qsort comparator for float8 (the values are finite). */
static int
cmp_float8(const void *a, const void *b)
{
	float8		x = *(const float8 *) a;
	float8		y = *(const float8 *) b;

	return (x > y) - (x < y);
}

/* The median of the n > 0 values of a sorted array. */
static float8
sorted_median(const float8 *v, int32 n)
{
	return (n % 2 == 1) ? v[n / 2] : v[n / 2 - 1] / 2 + v[n / 2] / 2;
}

PG_FUNCTION_INFO_V1(usage_baseline_final);
/*
 * usage_baseline_final(state) -> robust_baseline (samples, median, mad): the
 * series is the values given and, up to `periods`, zeros.
 */
Datum
usage_baseline_final(PG_FUNCTION_ARGS)
{
	BaselineState *s = state_arg(fcinfo, 0, "usage_baseline_final");
	TupleDesc	tupdesc;
	int32		total;
	float8	   *v;
	float8		median;
	float8		mad;
	Datum		values[3];
	bool		nulls[3] = {false, false, false};

	if (s == NULL)
		PG_RETURN_NULL();
	/* the blessed row type, once per call site */
	tupdesc = (TupleDesc) fcinfo->flinfo->fn_extra;
	if (tupdesc == NULL)
	{
		MemoryContext old;

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "usage_baseline_final must return a composite type");
		old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);
		tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		MemoryContextSwitchTo(old);
		fcinfo->flinfo->fn_extra = tupdesc;
	}

	/* the series: the values, then the zeros of the periods not given */
	total = s->periods >= 0 ? s->periods : s->n;
	Assert(total >= s->n && total > 0);
	v = palloc(sizeof(float8) * total);
	memcpy(v, s->values, sizeof(float8) * s->n);
	for (int32 i = s->n; i < total; i++)
		v[i] = 0;
	qsort(v, total, sizeof(float8), cmp_float8);
	median = sorted_median(v, total);
	for (int32 i = 0; i < total; i++)
		v[i] = fabs(v[i] - median);
	qsort(v, total, sizeof(float8), cmp_float8);
	mad = sorted_median(v, total);
	pfree(v);

	values[0] = Int32GetDatum(total);
	values[1] = Float8GetDatum(median);
	values[2] = Float8GetDatum(mad);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* minutes as an interval */
static Datum
minutes_interval(int minutes)
{
	Interval   *iv = palloc0(sizeof(Interval));

	iv->time = (int64) minutes * USECS_PER_MINUTE;
	return IntervalPGetDatum(iv);
}

PG_FUNCTION_INFO_V1(anomaly_settings);
/*
 * anomaly_settings(): the convbill.anomaly_*, irsf_* and velocity_* settings,
 * typed.  Calling it loads the module, so the values are the defined
 * settings, never untyped placeholders.
 */
Datum
anomaly_settings(PG_FUNCTION_ARGS)
{
	TupleDesc	tupdesc;
	Datum		values[11];
	bool		nulls[11] = {0};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "anomaly_settings must return a composite type");
	if (tupdesc->natts != lengthof(values))
		elog(ERROR, "anomaly_settings must return %d columns, not %d",
			 (int) lengthof(values), tupdesc->natts);
	tupdesc = BlessTupleDesc(tupdesc);
	values[0] = Int32GetDatum(anomaly_baseline_days);
	values[1] = Int32GetDatum(anomaly_min_history);
	values[2] = Float8GetDatum(anomaly_spike_score);
	values[3] = Float8GetDatum(anomaly_spike_ratio);
	values[4] = Int32GetDatum(anomaly_spike_min_events);
	values[5] = minutes_interval(irsf_window);
	values[6] = Int32GetDatum(irsf_min_events);
	values[7] = Int32GetDatum(irsf_min_seconds);
	values[8] = minutes_interval(velocity_window);
	values[9] = Float8GetDatum(velocity_factor);
	values[10] = Int32GetDatum(velocity_min_events);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
