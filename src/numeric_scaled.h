/*
 * numeric_scaled.h — PostgreSQL numeric <-> exact 128-bit scaled integers.
 */
#ifndef CONVBILL_NUMERIC_SCALED_H
#define CONVBILL_NUMERIC_SCALED_H

#include "postgres.h"
#include "fmgr.h"
#include "utils/numeric.h"

#include "decimal.h"

/*
 * num x 10^scale as an integer; raises 22023 for NaN/Infinity or more than
 * `scale` decimal places and 22003 when out of range.  `what` names the argument
 * in messages ("quantity", "used_before").
 */
extern cb_int128 numeric_to_scaled(Numeric num, int scale, const char *what);

/* v / 10^scale as a numeric with display scale `scale`. */
extern Numeric scaled_to_numeric(cb_int128 v, int scale);

/* The fewest decimals that show v / 10^scale exactly (its trailing zeros dropped). */
extern int	scaled_trimmed_scale(cb_int128 v, int scale);

/* v / 10^scale as a numeric without trailing zeros (30, not 30.000000000). */
extern Numeric scaled_to_numeric_trimmed(cb_int128 v, int scale);

/* Argument argno as a non-negative quantity at 10^9 (NULL or negative: an error naming `what`). */
extern cb_int128 quantity_arg(FunctionCallInfo fcinfo, int argno, const char *what);

#endif
