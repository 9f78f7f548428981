/*
 * tariff_glue.h — helpers shared by the SQL-callable functions that evaluate
 * tariffs (tariff_type.c, reservation.c).
 */
#ifndef CONVBILL_TARIFF_GLUE_H
#define CONVBILL_TARIFF_GLUE_H

#include "postgres.h"
#include "fmgr.h"
#include "utils/timestamp.h"

#include "tariff.h"

/* Raise a TariffError with its SQLSTATE. */
extern void tariff_raise(const TariffError *err) pg_attribute_noreturn();

/* A detoasted tariff of the current binary version (else ERROR). */
extern Tariff *tariff_check_version(Tariff *t);

/* Argument argno as a tariff ready to evaluate (detoasted once per call site). */
extern const Tariff *tariff_arg(FunctionCallInfo fcinfo, int argno);

/* Local weekday and second of day of ts in IANA zone tzname (cached per call site). */
extern TariffWhen local_when(FunctionCallInfo fcinfo, TimestampTz ts, text *tzname);

#endif
