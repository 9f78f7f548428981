/*
 * reservation.c — the decision at the heart of online charging.
 *
 * A credit-control session has reported `used` units so far; `covered` of its
 * billed units came from allowances and `charged` money was debited for the
 * rest.  For a total quantity Q the session costs:
 *
 *     bq(Q)      = billed_quantity(Q)                  (increments, once)
 *     cov(Q)     = covered + min(allowance,            (allowance first, for the
 *                                bq(Q) - bq(used))      units not reported yet)
 *     money(Q)   = rate_billed(bq(Q) - cov(Q))         (the tariff, rounded once;
 *                                                       cycle scope after used_before)
 *
 * An allowance covers only the units reported while it is valid: units
 * already reported and charged stay charged, whatever allowance comes later
 * (as bulk rating covers an event only by the allowances valid at its time).
 *
 * and the next request of `requested` units needs money(used + g) - charged
 * of the money available.  grant_quantity() finds the largest g <= requested
 * the account can afford: all of it when it can, otherwise the largest total
 * that ends on an increment boundary (whole increments; whole units for a
 * tariff without increments), by binary search over the boundaries — the
 * price is monotone in the quantity, so no loop over units.  The search needs
 * O(log n) tariff evaluations, each O(tiers).
 *
 * session_cost() prices a total that was used (reserve_update, commit,
 * charge_event): what the session costs, however much was granted.  It is not
 * told what was reported before: its caller passes as `allowance` what may
 * cover the units of this report, at most bq(used) - bq(used before).
 *
 * Locking, rows and the ledger are SQL's (sql/ext/51_online.sql).
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/builtins.h"
#include "utils/numeric.h"

#include "numeric_scaled.h"
#include "tariff.h"
#include "tariff_glue.h"

typedef struct SessionCost
{
	cb_int128	bq;				/* billed quantity (10^9) */
	cb_int128	covered;		/* of which allowance units (10^9) */
	cb_int128	amount;			/* money, at the tariff's rounding decimals */
} SessionCost;

typedef struct Session
{
	const Tariff *t;
	TariffWhen	when;
	cb_int128	used_before;	/* cycle scope: billed units of the period before */
	cb_int128	covered;		/* allowance units already debited (10^9) */
	cb_int128	allowance;		/* allowance units available now (10^9) */
	cb_int128	billed_before;	/* billed units already reported (10^9): only
								 * units beyond them may take allowance */
} Session;

/* What a session of `total` units costs; false with err filled on overflow. */
static bool
session_price(const Session *s, cb_int128 total, SessionCost *out, TariffError *err)
{
	cb_int128	cover_max;
	cb_int128	fresh;

	if (!tariff_billed_quantity(s->t, total, &out->bq, err))
		return false;
	/* allowance covers only billed units not reported before */
	fresh = out->bq - s->billed_before;
	if (fresh < 0)
		fresh = 0;
	cover_max = s->covered + (s->allowance <= 0 ? 0 : s->allowance < fresh ? s->allowance : fresh);
	out->covered = out->bq < cover_max ? out->bq : cover_max;
	if (out->covered < s->covered)
		out->covered = s->covered;	/* never give back covered units */
	if (out->bq - out->covered <= 0)
	{
		out->amount = 0;
		return true;
	}
	return tariff_rate_billed(s->t, out->bq - out->covered, s->when, s->used_before,
							  &out->amount, err);
}

/* Does a session of `total` units need at most `money` (10^12) more than `charged`? */
static bool
affordable(const Session *s, cb_int128 total, cb_int128 charged12, cb_int128 money12,
		   SessionCost *cost)
{
	TariffError err;
	cb_int128	need;

	if (!session_price(s, total, cost, &err))
		return false;			/* beyond the supported range: not affordable */
	need = cost->amount * dec_pow10(MAX_ROUND_DECIMALS - s->t->round_decimals) - charged12;
	return need <= money12;
}

/* The k-th increment boundary: first + k*next, or k whole units. */
static cb_int128
boundary(const Tariff *t, cb_int128 k)
{
	if (t->flags & TARIFF_HAS_INCREMENT)
	{
		cb_int128	first = ((cb_int128) t->inc_first.hi << 64) | t->inc_first.lo;
		cb_int128	next = ((cb_int128) t->inc_next.hi << 64) | t->inc_next.lo;

		return first + k * next;
	}
	return (k + 1) * dec_pow10(QTY_DECIMALS);
}

/* The numeric argument scaled to 10^scale, rounded down (toward -infinity). */
static cb_int128
numeric_floor_scaled(Numeric num, int scale, const char *what)
{
	Numeric		tr = DatumGetNumeric(DirectFunctionCall2(numeric_trunc, NumericGetDatum(num),
														 Int32GetDatum(scale)));
	cb_int128	v = numeric_to_scaled(tr, scale, what);

	if (DatumGetBool(DirectFunctionCall2(numeric_lt, NumericGetDatum(num), NumericGetDatum(tr))))
		v -= 1;
	return v;
}


/* Arguments 0..5 shared by both functions: tariff, at, tz, used_before, covered, allowance. */
static void
session_args(FunctionCallInfo fcinfo, Session *s)
{
	for (int i = 0; i < 6; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("session pricing: argument %d must not be NULL", i + 1)));
	s->t = tariff_arg(fcinfo, 0);
	s->when = local_when(fcinfo, PG_GETARG_TIMESTAMPTZ(1), PG_GETARG_TEXT_PP(2));
	s->used_before = quantity_arg(fcinfo, 3, "used_before");
	s->covered = quantity_arg(fcinfo, 4, "covered");
	/* allowance available may be negative after an overuse; treat as none */
	s->allowance = numeric_to_scaled(PG_GETARG_NUMERIC(5), QTY_DECIMALS, "allowance");
	/* session_cost: the caller bounds `allowance` to this report's units */
	s->billed_before = 0;
}

static Datum
cost_tuple(FunctionCallInfo fcinfo, const Session *s, int natts, Datum *values)
{
	TupleDesc	tupdesc;
	bool		nulls[8] = {0};

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	tupdesc = BlessTupleDesc(tupdesc);
	Assert(tupdesc->natts == natts);
	return HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls));
}

PG_FUNCTION_INFO_V1(session_cost);
/*
 * session_cost(t, at, tz, used_before, covered, allowance, total)
 *   -> (billed numeric, covered numeric, amount numeric)
 */
Datum
session_cost(PG_FUNCTION_ARGS)
{
	Session		s;
	SessionCost c;
	TariffError err;
	cb_int128	total;
	Datum		values[3];

	session_args(fcinfo, &s);
	total = quantity_arg(fcinfo, 6, "used");
	if (!session_price(&s, total, &c, &err))
		tariff_raise(&err);
	values[0] = NumericGetDatum(scaled_to_numeric_trimmed(c.bq, QTY_DECIMALS));
	values[1] = NumericGetDatum(scaled_to_numeric_trimmed(c.covered, QTY_DECIMALS));
	values[2] = NumericGetDatum(scaled_to_numeric(c.amount, s.t->round_decimals));
	return cost_tuple(fcinfo, &s, 3, values);
}

PG_FUNCTION_INFO_V1(grant_quantity);
/*
 * grant_quantity(t, at, tz, used_before, covered, allowance, used, charged,
 *                requested, money)
 *   -> (granted numeric, covered numeric, amount numeric)
 *
 * used: units the session has reported (and paid for: `charged`; `covered`
 * of their billed units from allowances); requested: units asked for now;
 * money: what the payer can still spend.  covered and amount are the cost of
 * used + granted, the allowance covering only the billed units beyond
 * bq(used): the caller holds what they exceed the session's covered units
 * and charged money by.
 */
Datum
grant_quantity(PG_FUNCTION_ARGS)
{
	Session		s;
	SessionCost c;
	cb_int128	used,
				requested,
				charged12,
				money12,
				target,
				granted = 0;
	Datum		values[3];

	session_args(fcinfo, &s);
	used = quantity_arg(fcinfo, 6, "used");
	for (int i = 7; i < 10; i++)
		if (PG_ARGISNULL(i))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("grant_quantity: argument %d must not be NULL", i + 1)));
	charged12 = numeric_to_scaled(PG_GETARG_NUMERIC(7), MAX_ROUND_DECIMALS, "charged");
	requested = quantity_arg(fcinfo, 8, "units");

	/*
	 * Units below 10^20 (as every request takes them: check_units) and money
	 * charged not negative: then used + requested, the increment boundaries
	 * searched below and the money needed all stay far inside 128 bits (a
	 * wrapped sum would make the search below run for ever)
	 */
	if (used >= dec_pow10(20 + QTY_DECIMALS) || requested >= dec_pow10(20 + QTY_DECIMALS))
		ereport(ERROR,
				(errcode(ERRCODE_NUMERIC_VALUE_OUT_OF_RANGE),
				 errmsg("grant_quantity: used and units must be below 1e20")));
	if (charged12 < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("grant_quantity: charged must not be negative")));
	/* allowance covers the granted units only, never the `used` ones again */
	{
		TariffError err;

		if (!tariff_billed_quantity(s.t, used, &s.billed_before, &err))
			tariff_raise(&err);
	}
	money12 = numeric_floor_scaled(PG_GETARG_NUMERIC(9), MAX_ROUND_DECIMALS, "money available");

	target = used + requested;
	if (requested > 0 && affordable(&s, target, charged12, money12, &c))
		granted = requested;
	else if (requested > 0)
	{
		/* boundaries b(k) with used < b(k) < target: find the largest affordable */
		cb_int128	lo = 0,
					hi;

		/* smallest k with b(k) > used, by doubling then bisection */
		hi = 1;
		while (boundary(s.t, hi) <= used)
		{
			CHECK_FOR_INTERRUPTS();
			hi *= 2;
		}
		while (lo < hi)
		{
			cb_int128	mid = lo + (hi - lo) / 2;

			if (boundary(s.t, mid) > used)
				hi = mid;
			else
				lo = mid + 1;
		}
		/* lo: first boundary past used; now the last affordable one below target */
		if (boundary(s.t, lo) < target && affordable(&s, boundary(s.t, lo), charged12, money12, &c))
		{
			cb_int128	good = lo,
						bad;

			/* last k with b(k) < target */
			bad = lo + 1;
			while (boundary(s.t, bad) < target)
			{
				CHECK_FOR_INTERRUPTS();
				bad = good + (bad - good) * 2;
			}
			/* invariant: good affordable and < target; bad is unaffordable or >= target */
			while (bad - good > 1)
			{
				cb_int128	mid = good + (bad - good) / 2;

				if (boundary(s.t, mid) < target && affordable(&s, boundary(s.t, mid), charged12, money12, &c))
					good = mid;
				else
					bad = mid;
			}
			granted = boundary(s.t, good) - used;
		}
	}

	{
		TariffError err;

		if (!session_price(&s, used + granted, &c, &err))
			tariff_raise(&err);
	}
	values[0] = NumericGetDatum(scaled_to_numeric_trimmed(granted, QTY_DECIMALS));
	values[1] = NumericGetDatum(scaled_to_numeric_trimmed(c.covered, QTY_DECIMALS));
	values[2] = NumericGetDatum(scaled_to_numeric(c.amount, s.t->round_decimals));
	return cost_tuple(fcinfo, &s, 3, values);
}
