# supair_dist build. `make` builds build/bin/*, `make check` runs every test
# (installing missing Debian packages first), `make asan` runs the tests under
# AddressSanitizer + UBSan, `make bench` prints the benchmark tables, `make demo`
# is the README's run command.
#
# Code generation: ARCH (default x86-64-v3 = AVX2+FMA, any x86 server since
# 2013) keeps the binaries runnable on every node of a cluster. Build with
# `make ARCH=native` for the machine you are on, or ARCH=x86-64 for old CPUs.
# OpenBLAS picks its own kernels at run time whatever ARCH is.

ARCH     ?= x86-64-v3
BUILD    ?= build
OPT      ?= -O3
SANITIZE ?=

CC       = mpicc
PKGS     = hdf5 sndfile samplerate zlib
BLAS_CFLAGS = $(shell pkg-config --cflags openblas 2>/dev/null)
BLAS_LIBS   = $(shell pkg-config --libs openblas 2>/dev/null || echo -lopenblas)
CFLAGS   = -std=c11 -D_GNU_SOURCE $(OPT) -g -march=$(ARCH) -fopenmp \
           -Wall -Wextra -Werror -Wno-unknown-pragmas \
           -Iinclude $(shell pkg-config --cflags $(PKGS)) $(BLAS_CFLAGS) $(SANITIZE)
LDLIBS   = $(shell pkg-config --libs $(PKGS)) $(BLAS_LIBS) -lm
LDFLAGS  = -fopenmp $(SANITIZE)

LIB_SRC   = $(sort $(wildcard src/core/*.c src/nn/*.c src/spn/*.c src/models/*.c \
                              src/data/*.c src/dist/*.c src/io/*.c src/train/*.c))
APP_SRC   = $(sort $(wildcard src/apps/*.c))
TEST_SRC  = $(sort $(wildcard tests/unit/test_*.c))
TESTLIB_SRC = $(sort $(filter-out $(TEST_SRC),$(wildcard tests/unit/*.c)))
BENCH_SRC = $(sort $(wildcard bench/bench_*.c))
MPITEST_SRC = $(sort $(wildcard tests/mpi/*.c))

LIB       = $(BUILD)/lib/libsupair.a
LIB_OBJ   = $(LIB_SRC:%.c=$(BUILD)/obj/%.o)
APPS      = $(APP_SRC:src/apps/%.c=$(BUILD)/bin/%)
TESTS     = $(TEST_SRC:tests/unit/%.c=$(BUILD)/tests/%)
TESTLIB_OBJ = $(TESTLIB_SRC:%.c=$(BUILD)/obj/%.o)
BENCHES   = $(BENCH_SRC:bench/%.c=$(BUILD)/bench/%)
MPITESTS  = $(MPITEST_SRC:tests/mpi/%.c=$(BUILD)/tests-mpi/%)

.PHONY: all deps check check-unit asan bench demo clean tests
.DEFAULT_GOAL := all
# Keep object files of tests and apps (make would delete them as intermediates).
.SECONDARY:

all: $(APPS)
tests: $(TESTS) $(MPITESTS) $(APPS)

# Installs the Debian packages when any is missing (idempotent, quick when all there).
deps:
	@scripts/install-deps.sh

$(BUILD)/obj/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@ && ar rcs $@ $^

$(BUILD)/bin/%: $(BUILD)/obj/src/apps/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/tests/%: $(BUILD)/obj/tests/unit/%.o $(TESTLIB_OBJ) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(TESTLIB_OBJ) $(LIB) $(LDLIBS) -lcunit -o $@

# MPI test programs (tests/mpi/*.c), driven by the tests/mpi/*.sh scripts.
$(BUILD)/tests-mpi/%: $(BUILD)/obj/tests/mpi/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $< $(LIB) $(LDLIBS) -o $@

# The README's test command. Dependencies first (a fresh machine has none),
# then the build, then every suite: CUnit units, MPI tests, end-to-end tests.
check: deps
	@$(MAKE) --no-print-directory tests
	@BUILD=$(BUILD) scripts/run-tests.sh

check-unit: deps
	@$(MAKE) --no-print-directory tests
	@BUILD=$(BUILD) scripts/run-tests.sh unit

asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan OPT=-O1 \
	  SANITIZE="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" tests
	@BUILD=build-asan SANITIZED=1 scripts/run-tests.sh

bench: deps
	@$(MAKE) --no-print-directory $(BENCHES) $(APPS)
	@BUILD=$(BUILD) scripts/run-bench.sh

demo: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) scripts/demo.sh

clean:
	rm -rf build build-asan

-include $(LIB_OBJ:.o=.d) $(TESTLIB_OBJ:.o=.d) $(APP_SRC:%.c=$(BUILD)/obj/%.d) \
         $(TEST_SRC:%.c=$(BUILD)/obj/%.d) $(BENCH_SRC:%.c=$(BUILD)/obj/%.d) \
         $(MPITEST_SRC:%.c=$(BUILD)/obj/%.d)
