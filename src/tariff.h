/*
 * tariff.h — the binary tariff and its pure-C API.
 *
 * A tariff is parsed and validated once, from JSON, into the flat structure below;
 * it is stored in that form (a varlena: the first field is the length word) and
 * evaluated in place, so rating never re-parses JSON.  All numbers are exact
 * scaled integers (decimal.h).  Layout:
 *
 *   Tariff header (incl. the top-level TariffPricing)
 *   TariffBand[nbands]           each with its own TariffPricing
 *   TariffTier[...]              tiers of every pricing, referenced by offset
 *
 * The structure is built zeroed and normalised, so equal tariffs are equal bytes.
 */
#ifndef CONVBILL_TARIFF_H
#define CONVBILL_TARIFF_H

#include "decimal.h"

#define TARIFF_VERSION		1
#define TARIFF_MAX_TIERS	64	/* per pricing (top level or band) */
#define TARIFF_MAX_BANDS	32
#define TARIFF_MAX_TEXT		63	/* bytes of a band name or unit */

typedef enum TariffModel
{
	MODEL_FLAT = 0,
	MODEL_GRADUATED,
	MODEL_VOLUME,
	MODEL_PACKAGE,
	MODEL_PERCENTAGE
} TariffModel;

typedef enum TariffScope
{
	SCOPE_EVENT = 0,
	SCOPE_CYCLE = 1
} TariffScope;

/* TariffPricing.flags */
#define PRICING_HAS_MIN		0x01
#define PRICING_HAS_MAX		0x02

/* Tariff.flags */
#define TARIFF_HAS_INCREMENT 0x01

typedef struct TariffTier
{
	cb_i128		up_to;			/* quantity (10^9); unused when unbounded */
	cb_i128		price;			/* per unit (10^12) */
	cb_i128		flat;			/* amount once per tier reached (10^12) */
	int32_t		unbounded;		/* "up_to": null */
	int32_t		pad;
} TariffTier;

typedef struct TariffPricing
{
	int32_t		model;			/* TariffModel */
	int32_t		flags;			/* PRICING_HAS_* */
	int32_t		ntiers;
	int32_t		tier_off;		/* byte offset of its first TariffTier */
	cb_i128		price;			/* flat: per unit (10^12) */
	cb_i128		setup_fee;		/* amount (10^12) */
	cb_i128		minimum;		/* amount (10^12) */
	cb_i128		maximum;		/* amount (10^12) */
	cb_i128		pkg_size;		/* quantity (10^9) */
	cb_i128		pkg_free;		/* quantity (10^9) */
	cb_i128		pkg_price;		/* per block (10^12) */
	cb_i128		pct_rate;		/* percent (10^10), i.e. a fraction at 10^12 */
	cb_i128		pct_fixed;		/* amount (10^12) */
} TariffPricing;

typedef struct TariffBand
{
	int32_t		days;			/* bit d set: local weekday d (0 = Sunday) */
	int32_t		from_sec;		/* local time of day, inclusive */
	int32_t		to_sec;			/* exclusive; 86400 = "24:00" */
	int32_t		pad;
	char		name[TARIFF_MAX_TEXT + 1];
	TariffPricing pricing;
} TariffBand;

typedef struct Tariff
{
	int32_t		vl_len_;		/* varlena header (do not touch directly) */
	int32_t		version;
	int32_t		scope;			/* TariffScope */
	int32_t		round_decimals;
	int32_t		round_mode;		/* RoundMode */
	int32_t		flags;			/* TARIFF_HAS_* */
	int32_t		nbands;
	int32_t		band_off;		/* byte offset of TariffBand[0] */
	char		currency[4];	/* "" when not set */
	char		unit[TARIFF_MAX_TEXT + 1];	/* "" when not set */
	int32_t		pad;
	cb_i128		inc_first;		/* quantity (10^9) */
	cb_i128		inc_next;		/* quantity (10^9) */
	TariffPricing top;
} Tariff;

static inline const TariffTier *
tariff_tiers(const Tariff *t, const TariffPricing *p)
{
	return (const TariffTier *) ((const char *) t + p->tier_off);
}

static inline const TariffBand *
tariff_bands(const Tariff *t)
{
	return (const TariffBand *) ((const char *) t + t->band_off);
}

/* Error classes, mapped to SQLSTATEs by the glue. */
typedef enum TariffErrorKind
{
	TARIFF_OK = 0,
	TARIFF_ERR_SYNTAX,			/* 22P02 invalid_text_representation */
	TARIFF_ERR_INVALID,			/* 22023 invalid_parameter_value */
	TARIFF_ERR_OVERFLOW			/* 22003 numeric_value_out_of_range */
} TariffErrorKind;

typedef struct TariffError
{
	TariffErrorKind kind;
	char		msg[256];
} TariffError;

/*
 * Parse and validate JSON text; returns a cb_malloc'ed Tariff whose vl_len_ holds
 * its total size in bytes (the glue turns it into a varlena header), or NULL with
 * err filled.
 */
extern Tariff *tariff_parse(const char *json, size_t len, TariffError *err);

/* Canonical JSON of a tariff; cb_malloc'ed, NUL-terminated. */
extern char *tariff_format(const Tariff *t);

/*
 * billed_quantity: increments applied to q (10^9).  Returns false on a negative
 * quantity or an overflow (err filled).
 */
extern bool tariff_billed_quantity(const Tariff *t, cb_int128 q, cb_int128 *bq,
								   TariffError *err);

/*
 * When an event happened, in the account's zone: local weekday (0 = Sunday) and
 * second of the local day.  TARIFF_NO_TIME prices with the top-level pricing.
 */
typedef struct TariffWhen
{
	int			dow;
	int			sec_of_day;
} TariffWhen;

#define TARIFF_NO_TIME ((TariffWhen) {-1, -1})

/*
 * Rate one event of quantity q (10^9) happening at `when`, after used_before
 * billed units of the period (cycle scope only).  The result is at scale
 * 10^round_decimals (the tariff's rounding).  Returns false with err filled on
 * bad input or overflow.
 */
extern bool tariff_rate(const Tariff *t, cb_int128 q, TariffWhen when,
						cb_int128 used_before, cb_int128 *charge, TariffError *err);

/*
 * The same for a quantity that is already billed (increments applied), such as
 * the part of an event that allowances did not cover: increments are not
 * applied twice.
 */
extern bool tariff_rate_billed(const Tariff *t, cb_int128 bq, TariffWhen when,
							   cb_int128 used_before, cb_int128 *charge, TariffError *err);

/* The pricing (top level or a band's) that prices an event at `when`. */
extern const TariffPricing *tariff_pricing_at(const Tariff *t, TariffWhen when);

#endif
