/*
 * tariff_eval.c — tariff evaluation: increments, the pricing models (flat,
 * graduated and volume tier math, package, percentage), setup fee, minimum and
 * maximum, time-band selection, cycle scope, and the one rounding of a charge.
 *
 * Exact integer arithmetic throughout (decimal.h): a quantity (10^9) times a
 * price (10^12) is an amount at 10^21, summed without loss and rounded once to
 * the tariff's decimals.  Every multiplication and addition is overflow-checked.
 * Cost is O(number of tiers) per event.  Pure C: no backend calls.
 */
#include "tariff.h"

#include <stdio.h>
#include <string.h>

/* Scale a fixed amount (10^12) to a computed amount (10^21). */
#define AMOUNT_FROM_FIXED(v, out) dec_mul((v), dec_pow10(QTY_DECIMALS), (out))

static bool
overflow(TariffError *err)
{
	err->kind = TARIFF_ERR_OVERFLOW;
	snprintf(err->msg, sizeof(err->msg), "tariff evaluation overflows the supported range");
	return false;
}

/* Increments: q = 0 -> 0; q <= first -> first; else first + ceil((q-first)/next)*next. */
bool
tariff_billed_quantity(const Tariff *t, cb_int128 q, cb_int128 *bq, TariffError *err)
{
	cb_int128	first,
				next,
				steps;

	if (q < 0)
	{
		err->kind = TARIFF_ERR_INVALID;
		snprintf(err->msg, sizeof(err->msg), "quantity must not be negative");
		return false;
	}
	if (q == 0 || !(t->flags & TARIFF_HAS_INCREMENT))
	{
		*bq = q;
		return true;
	}
	first = i128_load(t->inc_first);
	next = i128_load(t->inc_next);
	if (q <= first)
	{
		*bq = first;
		return true;
	}
	steps = dec_ceil_div(q - first, next);
	if (!dec_mul(steps, next, &steps) || !dec_add(first, steps, bq))
		return overflow(err);
	return true;
}

/*
 * Model price of bq units (10^9) plus tier flat fees, at 10^21.  No setup fee,
 * no clamping, no rounding.
 */
static bool
model_price(const Tariff *t, const TariffPricing *p, cb_int128 bq, cb_int128 *out)
{
	cb_int128	cost = 0,
				x;

	if (bq == 0)
	{
		*out = 0;
		return true;
	}
	switch ((TariffModel) p->model)
	{
		case MODEL_FLAT:
			if (!dec_mul(bq, i128_load(p->price), &cost))
				return false;
			break;

		case MODEL_GRADUATED:
			{
				const TariffTier *tiers = tariff_tiers(t, p);
				cb_int128	lower = 0;

				/* tier i holds the units in (up_to(i-1), up_to(i)] */
				for (int i = 0; i < p->ntiers && bq > lower; i++)
				{
					cb_int128	upper = tiers[i].unbounded ? bq : i128_load(tiers[i].up_to);
					cb_int128	units = (bq < upper ? bq : upper) - lower;

					if (!dec_mul(units, i128_load(tiers[i].price), &x) ||
						!dec_add(cost, x, &cost) ||
						!AMOUNT_FROM_FIXED(i128_load(tiers[i].flat), &x) ||
						!dec_add(cost, x, &cost))
						return false;
					lower = upper;
				}
				break;
			}

		case MODEL_VOLUME:
			{
				const TariffTier *tiers = tariff_tiers(t, p);
				int			i = 0;

				/* the first tier with bq <= up_to prices every unit */
				while (!tiers[i].unbounded && bq > i128_load(tiers[i].up_to))
					i++;
				if (!dec_mul(bq, i128_load(tiers[i].price), &cost) ||
					!AMOUNT_FROM_FIXED(i128_load(tiers[i].flat), &x) ||
					!dec_add(cost, x, &cost))
					return false;
				break;
			}

		case MODEL_PACKAGE:
			{
				cb_int128	free_units = i128_load(p->pkg_free);

				if (bq > free_units)
				{
					/* whole blocks of `size` units: a count, so price 10^12 -> 10^21 */
					cb_int128	blocks = dec_ceil_div(bq - free_units, i128_load(p->pkg_size));

					if (!dec_mul(blocks, i128_load(p->pkg_price), &cost) ||
						!dec_mul(cost, dec_pow10(QTY_DECIMALS), &cost))
						return false;
				}
				break;
			}

		case MODEL_PERCENTAGE:
			/* q x R/100 + fixed; pct_rate is R at 10^10 = R/100 at 10^12 */
			if (!dec_mul(bq, i128_load(p->pct_rate), &cost) ||
				!AMOUNT_FROM_FIXED(i128_load(p->pct_fixed), &x) ||
				!dec_add(cost, x, &cost))
				return false;
			break;
	}
	*out = cost;
	return true;
}

/* Clamp a cost (10^21) to the pricing's [minimum, maximum]. */
static bool
clamp(const TariffPricing *p, cb_int128 *cost)
{
	cb_int128	bound;

	if (p->flags & PRICING_HAS_MIN)
	{
		if (!AMOUNT_FROM_FIXED(i128_load(p->minimum), &bound))
			return false;
		if (*cost < bound)
			*cost = bound;
	}
	if (p->flags & PRICING_HAS_MAX)
	{
		if (!AMOUNT_FROM_FIXED(i128_load(p->maximum), &bound))
			return false;
		if (*cost > bound)
			*cost = bound;
	}
	return true;
}

/* P(x): the rounded price of a period total of x billed units (cycle scope). */
static bool
period_price(const Tariff *t, cb_int128 x, cb_int128 *out)
{
	cb_int128	cost;

	if (x == 0)
	{
		*out = 0;
		return true;
	}
	if (!model_price(t, &t->top, x, &cost) || !clamp(&t->top, &cost))
		return false;
	*out = dec_round(cost, AMOUNT_DECIMALS, t->round_decimals, (RoundMode) t->round_mode);
	return true;
}

/* The pricing that applies at `when`: the first matching band, else the top level. */
const TariffPricing *
tariff_pricing_at(const Tariff *t, TariffWhen when)
{
	if (t->nbands > 0 && when.dow >= 0)
	{
		const TariffBand *bands = tariff_bands(t);

		for (int i = 0; i < t->nbands; i++)
			if ((bands[i].days & (1 << when.dow)) &&
				bands[i].from_sec <= when.sec_of_day && when.sec_of_day < bands[i].to_sec)
				return &bands[i].pricing;
	}
	return &t->top;
}

/* Rate one event; see tariff.h. */
bool
tariff_rate(const Tariff *t, cb_int128 q, TariffWhen when, cb_int128 used_before,
			cb_int128 *charge, TariffError *err)
{
	cb_int128	bq;

	if (!tariff_billed_quantity(t, q, &bq, err))
		return false;
	return tariff_rate_billed(t, bq, when, used_before, charge, err);
}

/* Rate an already billed quantity (increments applied); see tariff.h. */
bool
tariff_rate_billed(const Tariff *t, cb_int128 bq, TariffWhen when, cb_int128 used_before,
				   cb_int128 *charge, TariffError *err)
{
	cb_int128	cost,
				x;

	if (bq < 0)
	{
		err->kind = TARIFF_ERR_INVALID;
		snprintf(err->msg, sizeof(err->msg), "billed quantity must not be negative");
		return false;
	}
	if (bq == 0)
	{
		*charge = 0;
		return true;
	}

	if (t->scope == SCOPE_CYCLE)
	{
		cb_int128	before,
					after,
					setup,
					total;

		if (used_before < 0)
		{
			err->kind = TARIFF_ERR_INVALID;
			snprintf(err->msg, sizeof(err->msg), "used_before must not be negative");
			return false;
		}
		/* P(used_before + bq) - P(used_before), plus the setup fee per event */
		if (!dec_add(used_before, bq, &total) ||
			!period_price(t, used_before, &before) ||
			!period_price(t, total, &after) ||
			!AMOUNT_FROM_FIXED(i128_load(t->top.setup_fee), &setup))
			return overflow(err);
		setup = dec_round(setup, AMOUNT_DECIMALS, t->round_decimals, (RoundMode) t->round_mode);
		if (!dec_sub(after, before, &x) || !dec_add(x, setup, charge))
			return overflow(err);
		return true;
	}

	{
		const TariffPricing *p = tariff_pricing_at(t, when);

		if (!model_price(t, p, bq, &cost) ||
			!AMOUNT_FROM_FIXED(i128_load(p->setup_fee), &x) ||
			!dec_add(cost, x, &cost) ||
			!clamp(p, &cost))
			return overflow(err);
		*charge = dec_round(cost, AMOUNT_DECIMALS, t->round_decimals, (RoundMode) t->round_mode);
	}
	return true;
}
