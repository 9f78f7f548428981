/*
 * currency.h — ISO 4217 currency codes and their minor units (pure C).
 */
#ifndef CONVBILL_CURRENCY_H
#define CONVBILL_CURRENCY_H

/*
 * Minor-unit exponent of an ISO 4217 code (EUR 2, JPY 0, KWD 3), or -1 when the
 * code is not an active ISO 4217 currency.  code need not be NUL-terminated.
 */
extern int	currency_exponent(const char *code, int len);

#endif
