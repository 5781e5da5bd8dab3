# hedge - top-level entry points. `make test` and `make run` do all the set-up
# on a fresh Debian 12 machine as root: missing packages, configure, build.
BUILD      ?= build
ASAN_BUILD ?= build-asan
PYTHON     ?= /usr/bin/python3
PYTEST     ?= $(PYTHON) -m pytest
PYTEST_ARGS ?=

.PHONY: all deps build asan-build test unit pytest asan-test test-quick run bench clean fuzz

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

run: build
	./scripts/demo $(BUILD)

bench: build
	./bench/start

# libFuzzer on the MQTT packet decoder for a bounded time (FUZZ_SECONDS); any crash fails.
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 60
fuzz: deps $(BUILD)/build.ninja
	@mkdir -p $(FUZZ_BUILD)/broker-corpus
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE \
		-Isrc/broker -Isrc/lib -I$(BUILD) src/broker/fuzz_packet.c src/broker/packet.c src/lib/util.c \
		src/lib/error.c -o $(FUZZ_BUILD)/fuzz_packet
	$(FUZZ_BUILD)/fuzz_packet -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
		$(FUZZ_BUILD)/broker-corpus tests/fuzz/broker-corpus
	@mkdir -p $(FUZZ_BUILD)/client-corpus
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -D_GNU_SOURCE \
		-Isrc/uplink -Isrc/broker -Isrc/lib -I$(BUILD) src/uplink/fuzz_client.c src/uplink/mqtt_client.c \
		src/broker/packet.c src/lib/util.c src/lib/error.c -lssl -lcrypto -o $(FUZZ_BUILD)/fuzz_client
	$(FUZZ_BUILD)/fuzz_client -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
		$(FUZZ_BUILD)/client-corpus

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
