# quern — plain Makefile.  `make` builds build/quernd and build/quern.
# `make SANITIZE=address,undefined BUILD=build-asan` builds the sanitized tree.

CC       ?= cc
BUILD    ?= build
SANITIZE ?=
OPT      ?= -O2

PKGS     := libmicrohttpd jansson sqlite3 libcrypto libcurl libseccomp libpq
WARN     := -Wall -Wextra -Werror -Wformat=2 -Wstrict-prototypes \
            -Wmissing-prototypes -Wvla -Wshadow -Wno-unused-parameter
CFLAGS   := -std=c11 -D_GNU_SOURCE $(OPT) -g -pthread $(WARN) \
            $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm -pthread
# quernd's allocator: jemalloc (Debian libjemalloc2).  Measured beside
# glibc's malloc on the same workloads (BENCHMARKS.md): ~40 % less server CPU,
# twice the batch-create and drain rates, no more peak RSS.  Sanitized builds
# keep the sanitizer's own allocator.
MALLOC   := -ljemalloc
ifneq ($(SANITIZE),)
CFLAGS   += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS  += -fsanitize=$(SANITIZE)
MALLOC   :=
endif

# Every src/*.c but the two programs' mains goes into one static library.
MAINS    := src/quernd.c src/cli.c src/quern_init.c
LIBSRC   := $(filter-out $(MAINS),$(wildcard src/*.c))
LIBOBJ   := $(LIBSRC:src/%.c=$(BUILD)/obj/%.o)
WEBFILES := $(sort $(wildcard web/*))
UNITSRC  := $(wildcard tests/unit/test_*.c)
UNITBIN  := $(UNITSRC:tests/unit/%.c=$(BUILD)/tests/%)
# libFuzzer targets (tests/fuzz/README.md): built with clang into build-fuzz/.
FUZZSRC  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZBIN  := $(FUZZSRC:tests/fuzz/%.c=build-fuzz/fuzz/%)
FUZZ_RUNS ?= 100000

.PHONY: all man deps run test test-unit test-schema-ajv test-integration test-integration-pg test-asan test-fuzz \
        fuzz fuzz-build bench clean

all: $(BUILD)/quernd $(BUILD)/quern $(BUILD)/quern-init

$(BUILD)/obj/%.o: src/%.c $(wildcard src/*.h) | $(BUILD)/obj
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj $(BUILD)/tests $(BUILD)/fuzz:
	mkdir -p $@

# The dashboard's files are embedded in the binary (web_assets.c is generated).
$(BUILD)/obj/web_assets.c: $(WEBFILES) scripts/embed.sh | $(BUILD)/obj
	sh scripts/embed.sh $(WEBFILES) > $@
$(BUILD)/obj/web_assets.o: $(BUILD)/obj/web_assets.c
	$(CC) $(CFLAGS) -Isrc -c $< -o $@

$(BUILD)/libquern.a: $(LIBOBJ) $(BUILD)/obj/web_assets.o
	rm -f $@ && ar rcs $@ $^

$(BUILD)/quernd: $(BUILD)/obj/quernd.o $(BUILD)/libquern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS) $(MALLOC)

$(BUILD)/quern: $(BUILD)/obj/cli.o $(BUILD)/libquern.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

# The sandbox's PID 1, without libc: static, no dynamic loader, no cpuid
# probing (every run pays its start).  Never sanitized: there is no runtime.
$(BUILD)/quern-init: src/quern_init.c | $(BUILD)/obj
	$(CC) -std=c11 -O2 -g -DQUERN_INIT_NOLIBC -static -nostdlib -fno-stack-protector \
	    -fno-builtin $(WARN) -o $@ $<

$(BUILD)/tests/%: tests/unit/%.c $(wildcard tests/unit/*.h) $(BUILD)/libquern.a | $(BUILD)/tests
	$(CC) $(CFLAGS) -iquote src $(LDFLAGS) -o $@ $< $(BUILD)/libquern.a $(LDLIBS)

$(BUILD)/fuzz/%: tests/fuzz/%.c $(BUILD)/libquern.a | $(BUILD)/fuzz
	$(CC) $(CFLAGS) -iquote src -fsanitize=fuzzer $(LDFLAGS) -o $@ $< $(BUILD)/libquern.a $(LDLIBS)

# Manual pages, generated from the programs' own option tables.
man: man/quern.1 man/quernd.8
man/quern.1: $(BUILD)/quern
	mkdir -p man && $(BUILD)/quern man > $@
man/quernd.8: $(BUILD)/quernd
	mkdir -p man && $(BUILD)/quernd --man > $@

deps:
	@sh scripts/deps.sh

run: deps all
	@sh scripts/run.sh

test: deps
	$(MAKE) all $(UNITBIN)
	$(MAKE) test-unit test-integration test-integration-pg
	$(MAKE) test-asan
	$(MAKE) test-fuzz

test-unit: $(UNITBIN)
	@python3 tests/runner.py --unit $(UNITBIN)
	@$(MAKE) --no-print-directory test-schema-ajv

# test_jsonschema_ajv reads a checked-in table of ajv's verdicts; this checks
# the table against ajv itself (installed into tests/openapi/ by make deps).
test-schema-ajv:
	@if command -v node >/dev/null 2>&1 && [ -d tests/openapi/node_modules/ajv ]; then \
	    node tests/schema/ajv_cases.mjs --check tests/unit/jsonschema_ajv_cases.jsonl; \
	else echo "test-schema-ajv: skipped (no node, or no ajv in tests/openapi: make deps)"; fi

test-integration: all
	@QUERN_BUILD=$(BUILD) python3 tests/runner.py --integration tests/integration

# The same integration suite against a private PostgreSQL cluster.
test-integration-pg: all
	@QUERN_BUILD=$(BUILD) sh tests/run-pg.sh

test-asan:
	$(MAKE) BUILD=build-asan SANITIZE=address,undefined OPT=-O1 all \
	    $(UNITSRC:tests/unit/%.c=build-asan/tests/%)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    python3 tests/runner.py --unit $(UNITSRC:tests/unit/%.c=build-asan/tests/%)
	ASAN_OPTIONS=detect_leaks=1:handle_abort=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	    QUERN_BUILD=build-asan QUERN_ASAN=1 python3 tests/runner.py --integration tests/integration

# Every fuzz target from its seed corpus, a fixed number of inputs and a fixed
# seed (so a run repeats), under ASan and UBSan.  `make fuzz FUZZ_TIME=600`
# runs each for that many seconds instead and keeps what it finds new.
fuzz-build:
	$(MAKE) BUILD=build-fuzz CC=clang SANITIZE=fuzzer-no-link,address,undefined OPT=-O1 $(FUZZBIN)

test-fuzz: fuzz-build
	@sh tests/fuzz/run.sh runs $(FUZZ_RUNS) $(FUZZBIN)

fuzz: fuzz-build
	@sh tests/fuzz/run.sh time $(or $(FUZZ_TIME),60) $(FUZZBIN)

bench: deps all
	@sh bench/run.sh

clean:
	rm -rf build build-asan build-fuzz
