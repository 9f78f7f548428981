# convbill — PGXS build, plus the project's two commands:
#   make demo   run the main job end to end on a private throwaway cluster
#   make test   build and run every test (pg_regress, pgTAP, a bounded fuzz run)
# and the long ones: make bench, make fuzz.

EXTENSION   = convbill
EXTVERSION  = 0.1
MODULE_big  = convbill

# One C file per concern (see README "Layout").
PURE_SRCS   = src/decimal.c src/json_lite.c src/currency.c src/tariff_parse.c \
              src/tariff_format.c src/tariff_eval.c
GLUE_SRCS   = src/convbill.c src/numeric_scaled.c src/tariff_type.c src/catalog.c \
              src/destination.c src/billing_period.c src/local_time.c src/reservation.c src/invoice_math.c src/charge_batch.c src/rating_batch.c src/anomaly.c
OBJS        = $(PURE_SRCS:.c=.o) $(GLUE_SRCS:.c=.o)

# The versioned install script is built from the per-domain sources in sql/ext/.
EXT_SQL     = $(sort $(wildcard sql/ext/*.sql))
DATA_built  = sql/$(EXTENSION)--$(EXTVERSION).sql
DATA        = $(wildcard sql/$(EXTENSION)--*--*.sql)

# pg_regress: sql/NAME.sql against expected/NAME.out, one file per concern.
REGRESS      = tariff_io tariff_errors tariff_models tariff_increments_rounding \
               tariff_time_bands tariff_cycle \
               catalog_destination catalog_accounts rating online invoice_math invoice_lifecycle bill_run jobs analytics anomaly security migration api_names
REGRESS_OPTS = --load-extension=$(EXTENSION)

EXTRA_CLEAN = test/fuzz/tariff_fuzz results regression.diffs regression.out

PG_CONFIG ?= $(firstword $(wildcard /usr/lib/postgresql/15/bin/pg_config) pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)
ifneq ($(PGXS),)
include $(PGXS)
endif

PG_CPPFLAGS += -I$(srcdir)/src

sql/$(EXTENSION)--$(EXTVERSION).sql: $(EXT_SQL)
	cat $^ > $@

.PHONY: test demo bench fuzz fuzz-build

test:
	test/run.sh test

demo:
	test/run.sh demo

bench:
	test/run.sh bench

fuzz:
	test/run.sh fuzz

# libFuzzer harness over the pure-C tariff parser, formatter and evaluator.
FUZZ_CC ?= clang
test/fuzz/tariff_fuzz: test/fuzz/tariff_fuzz.c $(PURE_SRCS) $(wildcard src/*.h)
	$(FUZZ_CC) -g -O1 -DCONVBILL_STANDALONE -Isrc -fsanitize=fuzzer,address,undefined \
		-fno-sanitize-recover=all -o $@ test/fuzz/tariff_fuzz.c $(PURE_SRCS)

fuzz-build: test/fuzz/tariff_fuzz
