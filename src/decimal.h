/*
 * decimal.h — exact fixed-point decimals on 128-bit integers (pure C).
 *
 * convbill never uses binary floating point for money.  Inside C every quantity,
 * price and amount is a signed 128-bit integer scaled by a power of ten:
 *
 *   quantities (units, bytes, seconds)  scale 10^9   (QTY_DECIMALS)
 *   prices per unit and fixed amounts   scale 10^12  (PRICE_DECIMALS)
 *   computed amounts (qty x price)      scale 10^21  (AMOUNT_DECIMALS)
 *
 * so a quantity times a price is exact, and the only rounding is the one the
 * tariff asks for.  Every operation checks overflow and reports it.
 *
 * This file and the other pure-C modules (json_lite, currency, tariff_parse,
 * tariff_format, tariff_eval) make no backend calls: they are compiled into the
 * libFuzzer harness as they are.
 */
#ifndef CONVBILL_DECIMAL_H
#define CONVBILL_DECIMAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef __int128 cb_int128;

#define QTY_DECIMALS	9
#define PRICE_DECIMALS	12
#define AMOUNT_DECIMALS (QTY_DECIMALS + PRICE_DECIMALS)
#define MAX_ROUND_DECIMALS 12

/* A 128-bit value stored with 8-byte alignment (for on-disk structs). */
typedef struct cb_i128
{
	uint64_t	lo;
	int64_t		hi;
} cb_i128;

static inline cb_int128
i128_load(cb_i128 v)
{
	return (cb_int128) (((unsigned __int128) (uint64_t) v.hi << 64) | v.lo);
}

static inline cb_i128
i128_store(cb_int128 v)
{
	cb_i128		r;

	r.lo = (uint64_t) v;
	r.hi = (int64_t) (v >> 64);
	return r;
}

/* 10^n for 0 <= n <= 38 */
extern cb_int128 dec_pow10(int n);

/* Checked arithmetic: return false on overflow. */
static inline bool
dec_add(cb_int128 a, cb_int128 b, cb_int128 *r)
{
	return !__builtin_add_overflow(a, b, r);
}

static inline bool
dec_sub(cb_int128 a, cb_int128 b, cb_int128 *r)
{
	return !__builtin_sub_overflow(a, b, r);
}

static inline bool
dec_mul(cb_int128 a, cb_int128 b, cb_int128 *r)
{
	return !__builtin_mul_overflow(a, b, r);
}

/* Parse results. */
typedef enum DecParseResult
{
	DEC_OK = 0,
	DEC_SYNTAX,					/* not a decimal number */
	DEC_TOO_PRECISE,			/* more decimal places than the scale holds */
	DEC_OVERFLOW				/* does not fit */
} DecParseResult;

/*
 * Parse a decimal literal ("-12.5", "0.0006", "1e3", "65000") of len bytes into
 * an integer scaled by 10^scale.  Exact: fails with DEC_TOO_PRECISE rather than
 * rounding.
 */
extern DecParseResult dec_parse(const char *s, size_t len, int scale, cb_int128 *out);

/*
 * Format v (scaled by 10^scale) in plain decimal notation without trailing
 * fractional zeros into buf (at least DEC_BUFLEN bytes).  Returns length.
 */
#define DEC_BUFLEN 64
extern int	dec_format(cb_int128 v, int scale, char *buf);

/* Rounding modes of a tariff. */
typedef enum RoundMode
{
	ROUND_HALF_UP = 0,			/* halves away from zero */
	ROUND_HALF_EVEN = 1,		/* banker's rounding */
	ROUND_UP = 2,				/* away from zero */
	ROUND_DOWN = 3				/* toward zero (truncate) */
} RoundMode;

/* Round v at scale from_scale to to_scale (<= from_scale) with mode. */
extern cb_int128 dec_round(cb_int128 v, int from_scale, int to_scale, RoundMode mode);

/* Ceiling division of non-negative a by positive b. */
static inline cb_int128
dec_ceil_div(cb_int128 a, cb_int128 b)
{
	return a / b + (a % b != 0 ? 1 : 0);
}

#endif
