/*
 * charge_batch.c — the sequential decision of charge_events().
 *
 * A batch of one-shot events is decided as charge_event() would decide them
 * one by one, in array order: each event is priced with the allowance units
 * and the money its account and payer have left after the events before it,
 * and is granted all or nothing:
 *
 *     bq       = billed_quantity(units)
 *     covered  = min(bq, allowance left)                  (allowance first)
 *     amount   = rate_billed(bq - covered, used_before)    (cycle scope: the
 *                                                           period's running total)
 *     granted  = amount <= money left
 *
 * and only a granted event takes its covered units from the allowance, adds
 * bq - covered to the cycle total and its amount to what the payer spent.
 * Events of different accounts share a payer's money (bill_to_parent), so the
 * state is kept per key, not per account: allowance per (account, service),
 * cycle total per (account, period, rate), money per payer.  SQL numbers the
 * keys 1..n and passes each key's starting value (allowance_available(),
 * usage_counter, money_available()) with every event; the first event of a key
 * takes it.
 *
 * The decision is an aggregate used as a window function over the batch in
 * array order (ORDER BY ord ROWS UNBOUNDED PRECEDING): the transition function
 * decides the current event and updates the state, the final function reads
 * the decision back without touching the state.  Prices are exactly what
 * session_cost() gives (same tariff evaluation, same rounding, same numeric
 * forms); money is compared and kept as numeric, like charge_event's
 * `amount > money_available(payer)`.
 *
 * Locking, rows and the ledger are SQL's (sql/ext/52_charge_events.sql).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "numeric_scaled.h"
#include "tariff.h"
#include "tariff_glue.h"

/*
 * Allocated with palloc (8-byte aligned), so 128-bit values are kept as
 * cb_i128 and loaded into registers to compute.
 */
typedef struct ChargeBatchState
{
	MemoryContext mcxt;			/* the aggregate's context: the state lives there */
	int			nallow;			/* capacity of allow[] (index = key) */
	cb_i128    *allow;			/* allowance units left per key (10^9) */
	bool	   *allow_set;
	int			nub;
	cb_i128    *ub;				/* cycle total per key (10^9) */
	bool	   *ub_set;
	int			nmoney;
	Numeric    *money;			/* money left per payer key; NULL = not seen yet */
	/* the decision of the last event */
	bool		granted;
	cb_i128		bq;
	cb_i128		covered;
	cb_i128		amount;
	int			round_decimals;
} ChargeBatchState;

/* Grow a per-key array to hold index `key` (1-based keys; index 0 unused). */
static void
grow(MemoryContext mcxt, int key, int *cap, void **vals, Size valsize, bool **set)
{
	int			newcap;

	if (key < *cap)
		return;
	newcap = Max(16, *cap);
	while (newcap <= key)
		newcap *= 2;
	if (*vals == NULL)
	{
		*vals = MemoryContextAllocZero(mcxt, newcap * valsize);
		if (set)
			*set = MemoryContextAllocZero(mcxt, newcap * sizeof(bool));
	}
	else
	{
		*vals = repalloc(*vals, newcap * valsize);
		memset((char *) *vals + *cap * valsize, 0, (newcap - *cap) * valsize);
		if (set)
		{
			*set = repalloc(*set, newcap * sizeof(bool));
			memset(*set + *cap, 0, (newcap - *cap) * sizeof(bool));
		}
	}
	*cap = newcap;
}

static int
key_arg(FunctionCallInfo fcinfo, int argno, const char *what)
{
	int32		k = PG_GETARG_INT32(argno);

	if (k < 1 || k > 100000000)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("charge_batch: %s key must be from 1 to 100000000, not %d", what, k)));
	return k;
}


PG_FUNCTION_INFO_V1(charge_batch_step);
/*
 * charge_batch_step(state, t, at, tz, units, allow_key, allowance, cycle_key,
 *                   used_before, payer_key, money) -> state
 *
 * cycle_key NULL: the tariff is not cycle-scoped (used_before 0).  The
 * starting values (allowance, used_before, money) are read for a key's first
 * event only.
 */
Datum
charge_batch_step(PG_FUNCTION_ARGS)
{
	MemoryContext aggcontext;
	ChargeBatchState *st;
	const Tariff *t;
	TariffWhen	when;
	TariffError err;
	cb_int128	units,
				allowance,
				used_before = 0,
				cover_max;
	int			ak,
				ck = 0,
				pk;
	cb_int128	bq,
				covered,
				amount;
	Numeric		amount_num;

	if (!AggCheckCallContext(fcinfo, &aggcontext))
		elog(ERROR, "charge_batch_step called in non-aggregate context");
	for (int i = 1; i <= 10; i++)
		if (PG_ARGISNULL(i) && i != 7 && i != 8)
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("charge_batch: argument %d must not be NULL", i)));

	if (PG_ARGISNULL(0))
	{
		st = MemoryContextAllocZero(aggcontext, sizeof(ChargeBatchState));
		st->mcxt = aggcontext;
	}
	else
		st = (ChargeBatchState *) PG_GETARG_POINTER(0);

	t = tariff_arg(fcinfo, 1);
	when = local_when(fcinfo, PG_GETARG_TIMESTAMPTZ(2), PG_GETARG_TEXT_PP(3));
	units = quantity_arg(fcinfo, 4, "used");

	ak = key_arg(fcinfo, 5, "allowance");
	grow(st->mcxt, ak, &st->nallow, (void **) &st->allow, sizeof(cb_i128), &st->allow_set);
	if (!st->allow_set[ak])
	{
		/* allowance available may be negative after an overuse; treat as none */
		st->allow[ak] = i128_store(numeric_to_scaled(PG_GETARG_NUMERIC(6), QTY_DECIMALS, "allowance"));
		st->allow_set[ak] = true;
	}
	allowance = i128_load(st->allow[ak]);

	if (!PG_ARGISNULL(7))
	{
		ck = key_arg(fcinfo, 7, "cycle");
		grow(st->mcxt, ck, &st->nub, (void **) &st->ub, sizeof(cb_i128), &st->ub_set);
		if (!st->ub_set[ck])
		{
			st->ub[ck] = i128_store(quantity_arg(fcinfo, 8, "used_before"));
			st->ub_set[ck] = true;
		}
		used_before = i128_load(st->ub[ck]);
	}

	pk = key_arg(fcinfo, 9, "payer");
	grow(st->mcxt, pk, &st->nmoney, (void **) &st->money, sizeof(Numeric), NULL);
	if (st->money[pk] == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(st->mcxt);

		st->money[pk] = DatumGetNumericCopy(PG_GETARG_DATUM(10));
		MemoryContextSwitchTo(old);
	}

	/* the price, as session_price() in reservation.c with nothing covered yet */
	if (!tariff_billed_quantity(t, units, &bq, &err))
		tariff_raise(&err);
	cover_max = allowance > 0 ? allowance : 0;
	covered = bq < cover_max ? bq : cover_max;
	if (bq - covered <= 0)
		amount = 0;
	else if (!tariff_rate_billed(t, bq - covered, when, used_before, &amount, &err))
		tariff_raise(&err);
	st->bq = i128_store(bq);
	st->covered = i128_store(covered);
	st->amount = i128_store(amount);
	st->round_decimals = t->round_decimals;

	/* all or nothing: granted when the amount does not exceed the money left */
	amount_num = scaled_to_numeric(amount, st->round_decimals);
	st->granted = DatumGetBool(DirectFunctionCall2(numeric_le, NumericGetDatum(amount_num),
												   NumericGetDatum(st->money[pk])));
	if (st->granted)
	{
		MemoryContext old;
		Numeric		left;

		st->allow[ak] = i128_store(allowance - covered);
		if (ck > 0)
			st->ub[ck] = i128_store(used_before + (bq - covered));
		left = DatumGetNumeric(DirectFunctionCall2(numeric_sub, NumericGetDatum(st->money[pk]),
												   NumericGetDatum(amount_num)));
		old = MemoryContextSwitchTo(st->mcxt);
		pfree(st->money[pk]);
		st->money[pk] = DatumGetNumericCopy(NumericGetDatum(left));
		MemoryContextSwitchTo(old);
	}
	PG_RETURN_POINTER(st);
}

PG_FUNCTION_INFO_V1(charge_batch_final);
/*
 * charge_batch_final(state) -> (granted boolean, billed numeric, covered numeric, amount numeric)
 * The decision of the event last added; the state is left as it is.
 */
Datum
charge_batch_final(PG_FUNCTION_ARGS)
{
	ChargeBatchState *st;
	TupleDesc	tupdesc;
	Datum		values[4];
	bool		nulls[4] = {0};

	if (PG_ARGISNULL(0))
		PG_RETURN_NULL();
	st = (ChargeBatchState *) PG_GETARG_POINTER(0);
	/* the result's descriptor, once per call site (a batch calls this per event) */
	tupdesc = (TupleDesc) fcinfo->flinfo->fn_extra;
	if (tupdesc == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(fcinfo->flinfo->fn_mcxt);

		if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
			elog(ERROR, "return type must be a row type");
		tupdesc = BlessTupleDesc(CreateTupleDescCopy(tupdesc));
		fcinfo->flinfo->fn_extra = tupdesc;
		MemoryContextSwitchTo(old);
	}
	values[0] = BoolGetDatum(st->granted);
	values[1] = NumericGetDatum(scaled_to_numeric_trimmed(i128_load(st->bq), QTY_DECIMALS));
	values[2] = NumericGetDatum(scaled_to_numeric_trimmed(i128_load(st->covered), QTY_DECIMALS));
	values[3] = NumericGetDatum(scaled_to_numeric(i128_load(st->amount), st->round_decimals));
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}
