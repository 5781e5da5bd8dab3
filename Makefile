# hedge - top-level entry points. `make test` and `make run` do all the set-up
# on a fresh Debian 12 machine as root: missing packages, configure, build.
BUILD      ?= build
ASAN_BUILD ?= build-asan
ANALYZE_BUILD ?= build-analyze
PYTHON     ?= /usr/bin/python3
PYTEST     ?= $(PYTHON) -m pytest
PYTEST_ARGS ?=

.PHONY: all deps build asan-build test unit pytest asan-test test-quick run bench clean fuzz guest-kernel \
	analyze format format-check

all: build

deps:
	@./scripts/install-deps

$(BUILD)/build.ninja:
	meson setup $(BUILD) >/dev/null

$(ASAN_BUILD)/build.ninja:
	meson setup $(ASAN_BUILD) -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug >/dev/null

build: deps $(BUILD)/build.ninja
	@ninja -C $(BUILD) >/dev/null || ninja -C $(BUILD)

asan-build: deps $(ASAN_BUILD)/build.ninja
	@ninja -C $(ASAN_BUILD) >/dev/null || ninja -C $(ASAN_BUILD)

unit: build
	meson test -C $(BUILD) --suite unit --print-errorlogs

pytest: build
	HEDGE_BUILD=$(abspath $(BUILD)) $(PYTEST) -q tests $(PYTEST_ARGS)

# The whole suite once more against the ASan+UBSan build: any report fails the run.
asan-test: asan-build
	meson test -C $(ASAN_BUILD) --suite unit --print-errorlogs
	HEDGE_BUILD=$(abspath $(ASAN_BUILD)) HEDGE_SANITIZED=1 $(PYTEST) -q tests $(PYTEST_ARGS)

test: unit pytest asan-test

test-quick: unit pytest

# The VM guest kernel (Debian's cloud kernel, unpacked, not installed) where the tests and bench look.
guest-kernel: deps
	./scripts/fetch-guest-kernel $(BUILD)/guest-kernel

# The demo: one workload under each isolation level, then the edge node: hedged
# in the foreground with its embedded defaults and an uplink to a local "cloud"
# broker, a sensor, a filter function, the cloud cut and restored (Ctrl-C ends it).
run: build
	./scripts/demo $(BUILD)
	./scripts/demo-edge $(BUILD)

bench: build
	./bench/start
	./bench/daemon

# Every libFuzzer target for a bounded time (FUZZ_SECONDS per target); any crash fails.
FUZZ_SECONDS ?= 60
fuzz: build
	./scripts/fuzz-mqtt $(FUZZ_SECONDS)
	./scripts/fuzz-image $(FUZZ_SECONDS)
	./scripts/fuzz-mqtt-client $(FUZZ_SECONDS)

# clang's static analyzer over everything the build compiles: zero findings or it fails.
analyze: deps
	./scripts/analyze $(ANALYZE_BUILD)

# The C sources .clang-format covers. format-check names the files that differ; format rewrites them.
FORMAT_FILES = $(shell find src tests/unit fuzz -name '*.[ch]' | sort) $(wildcard bench/*.c)

format-check: deps
	@bad=0; for f in $(FORMAT_FILES); do \
		clang-format --style=file "$$f" | cmp -s "$$f" - || { echo "$$f"; bad=1; }; \
	done; \
	if [ $$bad = 1 ]; then echo "format-check: the files above differ from .clang-format (make format)" >&2; exit 1; fi

format: deps
	clang-format -i --style=file $(FORMAT_FILES)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(ANALYZE_BUILD) build-fuzz
