# tollgate: the two commands are `make run` and `make test`; the rest are their parts.
#
#   make run     install what is missing, build, start `tollgate serve` on the embedded default
#   make test    install what is missing, build (normal and ASan+UBSan), run every test
#   make build   build the release binary into build/
#   make format  rewrite sources with clang-format;  make format-check  verify only
#   make bench   tollgate vs nginx vs the mock upstream direct (bench/run.sh; QUICK=1 for a smoke run)

BUILD      ?= build
ASAN_BUILD ?= build-asan
JOBS       ?= $(shell nproc)
CONFIG     ?=
SOURCES     = $(shell git ls-files '*.c' '*.h' 2>/dev/null || find src tests -name '*.[ch]')

.PHONY: all deps test-deps build build-asan run test unit unit-asan e2e e2e-asan format format-check clean bench

all: build

deps:
	@sh scripts/deps.sh build

test-deps:
	@sh scripts/deps.sh test

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DTG_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

run: build
	./$(BUILD)/tollgate serve $(if $(CONFIG),--config $(CONFIG))

unit: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

unit-asan: build-asan
	cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS)

e2e: build test-deps
	cd tests/e2e && TOLLGATE_BIN=$(CURDIR)/$(BUILD)/tollgate node --test --test-concurrency=1 *.test.mjs

e2e-asan: build-asan test-deps
	cd tests/e2e && TOLLGATE_BIN=$(CURDIR)/$(ASAN_BUILD)/tollgate TOLLGATE_ASAN=1 \
		node --test --test-concurrency=1 *.test.mjs

test: test-deps format-check unit unit-asan e2e e2e-asan

format:
	clang-format -i $(SOURCES)

format-check: deps
	@clang-format --dry-run --Werror $(SOURCES)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

bench: build
	@sh scripts/deps.sh bench
	TOLLGATE_BIN=$(CURDIR)/$(BUILD)/tollgate bash bench/run.sh
